//! `get_session()` on requests and responses.

use actix_web::{
    dev::{ServiceRequest, ServiceResponse},
    HttpMessage, HttpRequest,
};

use crate::Session;

/// Gets the [`Session`] of a request outside a handler's arguments: in a guard, another
/// middleware or an error handler.
///
/// The handle is not loaded unless something in this request loaded it already; call
/// [`Session::load`] before reading or writing. Without a
/// [`SessionMiddleware`](crate::SessionMiddleware) around the route, loading fails with
/// [`SessionError::MissingMiddleware`](crate::SessionError::MissingMiddleware).
pub trait SessionExt {
    /// The session of this request.
    fn get_session(&self) -> Session;
}

fn from_extensions(message: &impl HttpMessage) -> Session {
    message
        .extensions()
        .get::<Session>()
        .cloned()
        .unwrap_or_else(Session::detached)
}

impl SessionExt for HttpRequest {
    fn get_session(&self) -> Session {
        from_extensions(self)
    }
}

impl SessionExt for ServiceRequest {
    fn get_session(&self) -> Session {
        from_extensions(self)
    }
}

impl<B> SessionExt for ServiceResponse<B> {
    fn get_session(&self) -> Session {
        from_extensions(self.request())
    }
}

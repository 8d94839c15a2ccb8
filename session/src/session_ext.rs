//! `get_session()` on requests and responses.

use actix_web::{
    dev::{ServiceRequest, ServiceResponse},
    guard::GuardContext,
    HttpMessage, HttpRequest,
};

use crate::Session;

/// Gets the [`Session`] of a request outside a handler's arguments: in another middleware
/// or an error handler.
///
/// The handle is not loaded unless something in this request loaded it already; call
/// [`Session::load`] before reading or writing. Without a
/// [`SessionMiddleware`](crate::SessionMiddleware) around the route, loading fails with
/// [`SessionError::MissingMiddleware`](crate::SessionError::MissingMiddleware).
///
/// # Not in a guard
///
/// Guards are synchronous, and the session is loaded lazily, with an `.await`: a guard can
/// get the handle but not load it, so its reads fail with
/// [`SessionError::NotLoaded`](crate::SessionError::NotLoaded). To decide by the session
/// which requests reach a route (only logged-in users under `/account`, say), load it in a
/// middleware inside the [`SessionMiddleware`](crate::SessionMiddleware), which the handler's
/// extractors then share (one store round-trip):
///
/// ```
/// use actix_kv_session::{storage::MemoryStore, Session, SessionExt, SessionMiddleware};
/// use actix_web::{
///     body::MessageBody,
///     dev::{ServiceRequest, ServiceResponse},
///     http::StatusCode,
///     middleware::{from_fn, Next},
///     test, web, App, Error, HttpResponse,
/// };
///
/// async fn require_login(
///     req: ServiceRequest,
///     next: Next<impl MessageBody + 'static>,
/// ) -> Result<ServiceResponse<impl MessageBody>, Error> {
///     let session = req.get_session();
///     session.load().await?;
///     if session.contains_key("user")? {
///         Ok(next.call(req).await?.map_into_left_body())
///     } else {
///         let refused = HttpResponse::Unauthorized().finish();
///         Ok(req.into_response(refused).map_into_right_body())
///     }
/// }
///
/// async fn account(session: Session) -> actix_web::Result<String> {
///     Ok(format!("hello {}", session.get::<String>("user")?.unwrap_or_default()))
/// }
///
/// # actix_web::rt::System::new().block_on(async {
/// let app = test::init_service(
///     App::new()
///         .service(
///             web::scope("/account")
///                 .wrap(from_fn(require_login))
///                 .route("", web::get().to(account)),
///         )
///         // Registered last, so it runs first and puts the session in the request.
///         .wrap(SessionMiddleware::new(MemoryStore::default())),
/// )
/// .await;
/// let res = test::call_service(&app, test::TestRequest::get().uri("/account").to_request()).await;
/// assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
/// # });
/// ```
pub trait SessionExt {
    /// The session of this request.
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, SessionExt, SessionMiddleware};
    /// use actix_web::{test, web, App, HttpRequest};
    ///
    /// async fn whoami(req: HttpRequest) -> actix_web::Result<String> {
    ///     let session = req.get_session();
    ///     session.load().await?; // no extractor asked for the session: load it
    ///     Ok(session.get::<String>("user")?.unwrap_or_else(|| "stranger".to_owned()))
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let app = test::init_service(
    ///     App::new()
    ///         .wrap(SessionMiddleware::new(MemoryStore::default()))
    ///         .route("/", web::get().to(whoami)),
    /// )
    /// .await;
    /// let req = test::TestRequest::get().uri("/").to_request();
    /// assert_eq!(test::call_and_read_body(&app, req).await, "stranger");
    /// # });
    /// ```
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

/// In a guard the handle can be read only if a middleware loaded it (guards cannot wait for
/// a load), as [`compat::load_session`](crate::compat::load_session) does.
impl SessionExt for GuardContext<'_> {
    fn get_session(&self) -> Session {
        self.req_data()
            .get::<Session>()
            .cloned()
            .unwrap_or_else(Session::detached)
    }
}

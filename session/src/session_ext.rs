//! `get_session()` on requests and responses, and how a request reaches its session.

use std::{
    cell::{Cell, OnceCell, Ref},
    sync::Arc,
};

use actix_web::{
    dev::{Extensions, ServiceRequest, ServiceResponse},
    guard::GuardContext,
    http::header::HeaderMap,
    HttpMessage, HttpRequest,
};

use crate::{session::LoadSession, Session};

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

impl SessionExt for HttpRequest {
    fn get_session(&self) -> Session {
        SessionSlot::session_of(self)
    }
}

impl SessionExt for ServiceRequest {
    fn get_session(&self) -> Session {
        SessionSlot::session_of(self)
    }
}

impl<B> SessionExt for ServiceResponse<B> {
    fn get_session(&self) -> Session {
        SessionSlot::session_of(self.request())
    }
}

/// In a guard the handle can be read only if a middleware loaded it (guards cannot wait for
/// a load), as [`compat::load_session`](crate::compat::load_session) does.
impl SessionExt for GuardContext<'_> {
    fn get_session(&self) -> Session {
        SessionSlot::session_of(self)
    }
}

/// What a request offers the session lookup: its extensions and its headers.
trait RequestParts {
    fn extensions(&self) -> Ref<'_, Extensions>;
    fn headers(&self) -> &HeaderMap;
}

impl RequestParts for HttpRequest {
    fn extensions(&self) -> Ref<'_, Extensions> {
        HttpMessage::extensions(self)
    }
    fn headers(&self) -> &HeaderMap {
        HttpRequest::headers(self)
    }
}

impl RequestParts for ServiceRequest {
    fn extensions(&self) -> Ref<'_, Extensions> {
        HttpMessage::extensions(self)
    }
    fn headers(&self) -> &HeaderMap {
        ServiceRequest::headers(self)
    }
}

impl RequestParts for GuardContext<'_> {
    fn extensions(&self) -> Ref<'_, Extensions> {
        self.req_data()
    }
    fn headers(&self) -> &HeaderMap {
        &self.head().headers
    }
}

/// Where a request finds its session, made at the session's first use: the requests that
/// never use it pay for neither the session's state nor its cookie read.
///
/// The middleware puts a slot in each request's extensions when the request enters it; the
/// first handle asked for ([`Session`] extractor, [`SessionExt::get_session`], a guard)
/// makes the session in the slot, through a shared borrow of the extensions, so asking
/// while the app holds `req.extensions()` works as it always did. After the handler the
/// middleware ends what the slot holds, and marks it finished: a handle asked for
/// afterwards is one the middleware is done with.
///
/// Nesting, as before: a middleware that finds another middleware's slot keeps it inside its
/// own and puts it back once it is done, so the innermost middleware's session is the one
/// the handler gets, whatever touched the outer one earlier, and the outer middleware
/// finds its own even when the inner one never finished; the same middleware wrapped twice
/// (its clones share their state) shares one slot, ended by the outermost, so a middleware
/// between the two may still write after the inner one returns. The middleware ends the slot
/// of the request its response carries: an inner middleware that answers with another
/// `HttpRequest` than the one it was given leaves the session unsaved.
///
/// Making the session, reading the cookie and inserting a handle on every request, as the
/// middleware did before, cost the memory store's `/noop` route, which does not use its
/// session, 21,861 instructions against bare actix-web's 20,241; with the slot, 20,961
/// against 20,233 (callgrind, `bench/callgrind.py --kinds bare,ours-memory`). The slot's
/// own part, its allocation and the probes of the extensions, is about 410 of those 728.
/// Reaching the session through a data container of the middleware's
/// (`ServiceRequest::add_data_container`) instead cost 250 less, but panicked in a
/// resource with a middleware that keeps a clone of the request around ours, and making
/// the session at its first use then needed `extensions_mut`, which panics while the app
/// holds `req.extensions()`.
pub(crate) struct SessionSlot {
    loader: Arc<dyn LoadSession>,
    session: OnceCell<Session>,
    finished: Cell<bool>,
    /// The slot of another middleware further out, which this one displaced: put back when
    /// this middleware is done, or found here by the outer middleware when this one never
    /// finished (its service failed, or its future was dropped).
    outer: Option<Box<SessionSlot>>,
}

/// What a middleware found in the request when it entered.
pub(crate) enum Entered {
    /// Its own slot is the request's (another middleware's is kept inside it): this
    /// middleware ends it.
    Own,
    /// The slot of the same middleware wrapped further out, which ends it.
    Outer,
}

impl SessionSlot {
    /// Gives `req` a slot for `loader`'s session.
    pub(crate) fn enter(req: &ServiceRequest, loader: &Arc<dyn LoadSession>) -> Entered {
        let mut extensions = HttpMessage::extensions_mut(req);
        let slot = Self {
            loader: Arc::clone(loader),
            session: OnceCell::new(),
            finished: Cell::new(false),
            outer: None,
        };
        // One probe of the map in the common case, where the request has no slot yet.
        match extensions.insert(slot) {
            None => Entered::Own,
            Some(outer) if Arc::ptr_eq(&outer.loader, loader) => {
                extensions.insert(outer);
                Entered::Outer
            }
            Some(other) => {
                if let Some(mut slot) = extensions.remove::<Self>() {
                    slot.outer = Some(Box::new(other));
                    extensions.insert(slot);
                }
                Entered::Own
            }
        }
    }

    /// After the handler: the session this middleware (whose state `own` points to) is to
    /// end, if the request made it. Its slot is finished, and the slot it displaced put
    /// back. Slots of inner middlewares that never finished (their service failed and
    /// something between turned the error into a response, or dropped their future) are
    /// dropped unended: ending one here would save another middleware's session with this
    /// one's store and cookie.
    pub(crate) fn leave(req: &HttpRequest, own: *const ()) -> Option<Session> {
        let is_own = |slot: &Self| std::ptr::eq(Arc::as_ptr(&slot.loader).cast::<()>(), own);
        {
            // The common case, under a shared borrow: the slot stays, finished, for handles
            // asked for later.
            let extensions = HttpMessage::extensions(req);
            let top = extensions.get::<Self>()?;
            if is_own(top) && top.outer.is_none() {
                top.finished.set(true);
                return top.session.get().cloned();
            }
            // Not in the chain (the response carries another request's extensions): leave
            // them as they were.
            let mut chain = Some(top);
            while let Some(slot) = chain.filter(|slot| !is_own(slot)) {
                chain = slot.outer.as_deref();
            }
            chain?;
        }
        // Unwind to this middleware's slot, and put back the one it displaced.
        let mut extensions = HttpMessage::extensions_mut(req);
        let mut slot = extensions.remove::<Self>()?;
        while !is_own(&slot) {
            // In the chain: checked above, under the shared borrow.
            slot = *slot.outer.take()?;
        }
        slot.finished.set(true);
        let session = slot.session.get().cloned();
        if let Some(outer) = slot.outer.take() {
            extensions.insert(*outer);
        }
        session
    }

    /// The request's session: the one its slot holds, or one made now; a detached handle
    /// when no middleware wraps the request.
    fn session_of(req: &impl RequestParts) -> Session {
        let extensions = req.extensions();
        let Some(slot) = extensions.get::<Self>() else {
            return Session::detached();
        };
        slot.session
            .get_or_init(|| {
                if slot.finished.get() {
                    Session::ended(&slot.loader)
                } else {
                    Session::start(&slot.loader, req.headers())
                }
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use actix_web::{
        body::MessageBody,
        cookie::Cookie,
        dev::{ServiceRequest, ServiceResponse},
        guard,
        http::header::{HeaderName, HeaderValue, SET_COOKIE},
        middleware::{from_fn, Next},
        test, web, App, HttpMessage, HttpRequest,
    };

    use crate::{storage::MemoryStore, Session, SessionError, SessionExt, SessionMiddleware};

    async fn count(session: Session) -> actix_web::Result<String> {
        let n = session.get::<u32>("n")?.unwrap_or(0) + 1;
        session.insert("n", n)?;
        Ok(n.to_string())
    }

    #[actix_web::test]
    async fn a_request_that_never_uses_its_session_makes_none() {
        async fn untouched(req: HttpRequest) -> String {
            req.extensions().get::<Session>().is_some().to_string()
        }
        let app = test::init_service(
            App::new()
                .wrap(SessionMiddleware::new(MemoryStore::default()))
                .route("/", web::get().to(untouched)),
        )
        .await;
        let cookie = Cookie::new("session", "0123456789abcdef0123456789abcdef");
        let req = test::TestRequest::get()
            .uri("/")
            .cookie(cookie)
            .to_request();
        let res = test::call_service(&app, req).await;
        assert!(res.headers().get(SET_COOKIE).is_none());
        assert_eq!(test::read_body(res).await, "false");
    }

    #[actix_web::test]
    async fn a_handle_asked_for_after_the_middleware_is_done_cannot_load() {
        /// Wraps the session middleware: it runs after the save.
        async fn after(
            req: ServiceRequest,
            next: Next<impl MessageBody + 'static>,
        ) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
            let mut res = next.call(req).await?;
            let session = res.get_session();
            let refused = matches!(session.load().await, Err(SessionError::NotLoaded));
            res.headers_mut().insert(
                HeaderName::from_static("x-refused"),
                HeaderValue::from_static(if refused { "yes" } else { "no" }),
            );
            Ok(res)
        }
        let app = test::init_service(
            App::new()
                .wrap(SessionMiddleware::new(MemoryStore::default()))
                .wrap(from_fn(after))
                .route("/used", web::get().to(count))
                .route("/unused", web::get().to(|| async { "" })),
        )
        .await;
        for uri in ["/used", "/unused"] {
            let res =
                test::call_service(&app, test::TestRequest::get().uri(uri).to_request()).await;
            assert_eq!(res.headers().get("x-refused").unwrap(), "yes", "{uri}");
        }
    }

    #[actix_web::test]
    async fn a_guard_and_the_handler_share_one_session() {
        let app = test::init_service(
            App::new()
                .wrap(SessionMiddleware::new(MemoryStore::default()))
                .route(
                    "/",
                    web::get()
                        .guard(guard::fn_guard(|ctx| !ctx.get_session().is_loaded()))
                        .to(count),
                ),
        )
        .await;
        let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
        let cookie = res.response().cookies().next().unwrap().into_owned();
        assert_eq!(test::read_body(res).await, "1");
        let req = test::TestRequest::get()
            .uri("/")
            .cookie(cookie)
            .to_request();
        assert_eq!(test::call_and_read_body(&app, req).await, "2");
    }

    #[actix_web::test]
    async fn a_middleware_wrapped_twice_saves_once() {
        let middleware = SessionMiddleware::new(MemoryStore::default());
        let app = test::init_service(
            App::new().wrap(middleware.clone()).service(
                web::scope("/inner")
                    .wrap(middleware)
                    .route("", web::get().to(count)),
            ),
        )
        .await;
        let res =
            test::call_service(&app, test::TestRequest::get().uri("/inner").to_request()).await;
        assert_eq!(res.headers().get_all(SET_COOKIE).count(), 1);
        let cookie = res.response().cookies().next().unwrap().into_owned();
        let req = test::TestRequest::get()
            .uri("/inner")
            .cookie(cookie)
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(res.headers().get_all(SET_COOKIE).count(), 1);
        assert_eq!(test::read_body(res).await, "2");
    }

    fn named(name: &str) -> SessionMiddleware<MemoryStore> {
        SessionMiddleware::builder(MemoryStore::default())
            .cookie_name(name)
            .secure(false)
            .build()
    }

    fn cookie_names<B>(res: &ServiceResponse<B>) -> Vec<String> {
        res.response()
            .cookies()
            .map(|cookie| cookie.name().to_owned())
            .collect()
    }

    /// Two visits of one browser to `uri`: the bodies, and the names of the cookies the first
    /// was sent.
    macro_rules! visit_twice {
        ($app:expr, $uri:expr) => {{
            let res =
                test::call_service($app, test::TestRequest::get().uri($uri).to_request()).await;
            let names = cookie_names(&res);
            let cookies: Vec<Cookie<'static>> = res
                .response()
                .cookies()
                .map(|cookie| cookie.into_owned())
                .collect();
            let first = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
            let mut req = test::TestRequest::get().uri($uri);
            for cookie in cookies {
                req = req.cookie(cookie);
            }
            let second = test::call_and_read_body($app, req.to_request()).await;
            let second = String::from_utf8(second.to_vec()).unwrap();
            (vec![first, second], names)
        }};
    }

    #[actix_web::test]
    async fn the_inner_middleware_s_session_wins_though_the_outer_one_was_used_first() {
        // `compat::load_session` loads the App-level session before routing reaches the
        // scope's own middleware: the handler must still get the scope's session.
        let app = test::init_service(
            App::new()
                .service(
                    web::scope("/b")
                        .wrap(named("b"))
                        .route("", web::get().to(count)),
                )
                .wrap(from_fn(crate::compat::load_session))
                .wrap(named("a")),
        )
        .await;
        let (bodies, names) = visit_twice!(&app, "/b");
        assert_eq!(names, ["b"]);
        assert_eq!(bodies, ["1", "2"]);

        // A guard on the scope asks for the session before the scope's middleware runs.
        let app = test::init_service(
            App::new()
                .service(
                    web::scope("/b")
                        .guard(guard::fn_guard(|ctx| !ctx.get_session().is_loaded()))
                        .wrap(named("b"))
                        .route("", web::get().to(count)),
                )
                .wrap(named("a")),
        )
        .await;
        let (bodies, names) = visit_twice!(&app, "/b");
        assert_eq!(names, ["b"]);
        assert_eq!(bodies, ["1", "2"]);
    }

    /// Between two session middlewares: loads the session it finds, and writes to it after
    /// the inner one is done (`between`, counted).
    async fn between(
        req: ServiceRequest,
        next: Next<impl MessageBody + 'static>,
    ) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
        let session = req.get_session();
        session.load().await?;
        let res = next.call(req).await?;
        let seen = session.get::<u32>("between")?.unwrap_or(0) + 1;
        session.insert("between", seen)?;
        Ok(res)
    }

    async fn read_between(session: Session) -> actix_web::Result<String> {
        Ok(session.get::<u32>("between")?.unwrap_or(0).to_string())
    }

    #[actix_web::test]
    async fn the_outer_middleware_gets_its_session_back_after_the_inner_one() {
        let app = test::init_service(
            App::new()
                .service(
                    web::scope("/b")
                        .wrap(named("b"))
                        .route("", web::get().to(count)),
                )
                .route("/between", web::get().to(read_between))
                .wrap(from_fn(between))
                .wrap(named("a")),
        )
        .await;
        let res = test::call_service(&app, test::TestRequest::get().uri("/b").to_request()).await;
        let mut names = cookie_names(&res);
        names.sort();
        assert_eq!(names, ["a", "b"]);
        let a = res
            .response()
            .cookies()
            .find(|cookie| cookie.name() == "a")
            .unwrap()
            .into_owned();
        let req = test::TestRequest::get()
            .uri("/between")
            .cookie(a)
            .to_request();
        // `between` wrote once for `/b`, and writes again for this request after the
        // handler has read it.
        assert_eq!(test::call_and_read_body(&app, req).await, "1");
    }

    #[actix_web::test]
    async fn a_middleware_between_two_copies_of_one_middleware_writes_after_the_inner_returns() {
        let middleware = named("session");
        let app = test::init_service(
            App::new()
                .service(
                    web::scope("/in")
                        .wrap(middleware.clone())
                        .route("", web::get().to(count)),
                )
                .route("/between", web::get().to(read_between))
                .wrap(from_fn(between))
                .wrap(middleware),
        )
        .await;
        let res = test::call_service(&app, test::TestRequest::get().uri("/in").to_request()).await;
        assert_eq!(res.status(), 200);
        assert_eq!(cookie_names(&res), ["session"]);
        let cookie = res.response().cookies().next().unwrap().into_owned();
        assert_eq!(test::read_body(res).await, "1");
        let req = test::TestRequest::get()
            .uri("/between")
            .cookie(cookie)
            .to_request();
        assert_eq!(test::call_and_read_body(&app, req).await, "1");
    }

    /// Keeps a clone of the request across the call of the service it wraps.
    async fn keeps_a_clone(
        req: ServiceRequest,
        next: Next<impl MessageBody + 'static>,
    ) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
        let clone = req.request().clone();
        let res = next.call(req).await?;
        assert!(!clone.path().is_empty());
        Ok(res)
    }

    #[actix_web::test]
    async fn a_middleware_holding_a_clone_of_the_request_around_ours_is_fine() {
        // On one resource, with no routing between the two, and with ours on the route.
        let app = test::init_service(
            App::new()
                .service(
                    web::resource("/resource")
                        .wrap(named("session"))
                        .wrap(from_fn(keeps_a_clone))
                        .route(web::get().to(count)),
                )
                .service(
                    web::resource("/route")
                        .wrap(from_fn(keeps_a_clone))
                        .route(web::get().to(count).wrap(named("session"))),
                ),
        )
        .await;
        for uri in ["/resource", "/route"] {
            let (bodies, names) = visit_twice!(&app, uri);
            assert_eq!(names, ["session"], "{uri}");
            assert_eq!(bodies, ["1", "2"], "{uri}");
        }
    }

    #[actix_web::test]
    async fn the_session_is_reachable_while_the_app_holds_the_request_s_extensions() {
        struct User;
        async fn handler(req: HttpRequest) -> actix_web::Result<String> {
            let (user, session) = {
                let extensions = req.extensions();
                let session = req.get_session();
                (extensions.get::<User>().is_some(), session)
            };
            session.load().await?;
            Ok(format!("{user} {}", session.is_loaded()))
        }
        let app = test::init_service(
            App::new().wrap(named("session")).route(
                "/",
                web::get()
                    .guard(guard::fn_guard(|ctx| {
                        let data = ctx.req_data();
                        let session = ctx.get_session();
                        data.get::<User>().is_none() && !session.is_loaded()
                    }))
                    .to(handler),
            ),
        )
        .await;
        let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
        assert_eq!(res.status(), 200);
        assert_eq!(test::read_body(res).await, "false true");
    }

    /// The keys of the session, sorted.
    async fn keys(session: Session) -> actix_web::Result<String> {
        let mut keys = session.keys()?;
        keys.sort();
        Ok(keys.join(","))
    }

    /// Between two session middlewares: answers 408 when the inner service takes too long
    /// (dropping its future), and turns its errors into responses.
    async fn answers_for_it(
        req: ServiceRequest,
        next: Next<impl MessageBody + 'static>,
    ) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
        let http = req.request().clone();
        let limit = std::time::Duration::from_millis(50);
        match actix_web::rt::time::timeout(limit, next.call(req)).await {
            Ok(Ok(res)) => Ok(res.map_into_boxed_body()),
            Ok(Err(err)) => Ok(ServiceResponse::from_err(err, http)),
            Err(_) => Ok(ServiceResponse::new(
                http,
                actix_web::HttpResponse::RequestTimeout().finish(),
            )),
        }
    }

    /// Inside the inner middleware: writes its session, then fails.
    async fn fails(
        req: ServiceRequest,
        _: Next<impl MessageBody + 'static>,
    ) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
        let session = req.get_session();
        session.load().await?;
        session.insert("inner", true)?;
        Err::<ServiceResponse, _>(actix_web::error::ErrorForbidden("no"))
    }

    #[actix_web::test]
    async fn the_outer_middleware_saves_its_own_session_when_the_inner_one_never_finishes() {
        /// Between the two: writes the outer session, then calls on.
        async fn writes_outer(
            req: ServiceRequest,
            next: Next<impl MessageBody + 'static>,
        ) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
            let session = req.get_session();
            session.load().await?;
            session.insert("outer", true)?;
            next.call(req).await
        }
        async fn slow(session: Session) -> actix_web::Result<&'static str> {
            session.insert("inner", true)?;
            actix_web::rt::time::sleep(std::time::Duration::from_millis(500)).await;
            Ok("late")
        }
        let outer = named("a");
        let inner = named("b");
        // On resources: a middleware that keeps a clone of the request across a router
        // makes actix-web's routing panic. The last `wrap` is the outermost.
        let app = test::init_service(
            App::new()
                .service(
                    web::resource("/fails")
                        .wrap(from_fn(fails))
                        .wrap(inner.clone())
                        .wrap(from_fn(answers_for_it))
                        .wrap(from_fn(writes_outer))
                        .wrap(outer.clone())
                        .to(count),
                )
                .service(
                    web::resource("/slow")
                        .wrap(inner)
                        .wrap(from_fn(answers_for_it))
                        .wrap(from_fn(writes_outer))
                        .wrap(outer.clone())
                        .to(slow),
                )
                .service(web::resource("/keys").wrap(outer).to(keys)),
        )
        .await;
        for (uri, status) in [("/fails", 403), ("/slow", 408)] {
            let res =
                test::call_service(&app, test::TestRequest::get().uri(uri).to_request()).await;
            assert_eq!(res.status(), status, "{uri}");
            assert_eq!(cookie_names(&res), ["a"], "{uri}");
            let a = res.response().cookies().next().unwrap().into_owned();
            let req = test::TestRequest::get().uri("/keys").cookie(a).to_request();
            // The outer session holds its own write, and nothing of the inner one's.
            assert_eq!(test::call_and_read_body(&app, req).await, "outer", "{uri}");
        }
    }

    #[actix_web::test]
    async fn an_inner_middleware_s_session_is_never_saved_by_an_outer_one() {
        // On one resource: a middleware that keeps a clone of the request across a router
        // makes actix-web's routing panic.
        let app = test::init_service(
            App::new().service(
                web::resource("/b")
                    .wrap(from_fn(fails))
                    .wrap(named("b"))
                    .wrap(from_fn(answers_for_it))
                    .wrap(named("a"))
                    .route(web::get().to(count)),
            ),
        )
        .await;
        let res = test::call_service(&app, test::TestRequest::get().uri("/b").to_request()).await;
        assert_eq!(res.status(), 403);
        // The outer middleware's session was never used; the inner one's failed.
        assert_eq!(cookie_names(&res), Vec::<String>::new());
    }
}

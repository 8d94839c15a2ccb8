// Handlers as an actix-session user writes them. `actix_session_api.rs` compiles this file
// twice, once under `use actix_session::…` and once under `use actix_kv_session::compat::…`:
// nothing here may name either crate.

async fn counter(session: Session) -> Result<String, Error> {
    if let Some(count) = session.get::<i32>("counter")? {
        session.insert("counter", count + 1)?;
    } else {
        session.insert("counter", 1)?;
    }
    Ok(session.get::<i32>("counter")?.unwrap_or(0).to_string())
}

#[derive(serde::Deserialize)]
struct Credentials {
    user: String,
}

fn remember(session: &Session, user: &str) -> Result<(), SessionInsertError> {
    session.insert("user_id", user)?;
    session.insert("roles", vec!["reader".to_owned()])
}

async fn login(session: Session, form: web::Form<Credentials>) -> Result<HttpResponse, Error> {
    session.renew();
    remember(&session, &form.user)?;
    let renewed = session.status() == SessionStatus::Renewed;
    Ok(HttpResponse::Ok().body(format!("welcome {} renewed={renewed}", form.user)))
}

async fn whoami(req: HttpRequest) -> Result<String, Error> {
    let user: Option<String> = req.get_session().get("user_id")?;
    user.ok_or_else(|| actix_web::error::ErrorUnauthorized("log in first"))
}

fn logged_in(ctx: &GuardContext<'_>) -> bool {
    ctx.get_session().contains_key("user_id")
}

async fn private() -> &'static str {
    "private"
}

async fn keys(session: Session) -> String {
    let mut keys: Vec<String> = session.entries().keys().cloned().collect();
    keys.sort();
    keys.join(",")
}

async fn has(session: Session, key: web::Path<String>) -> String {
    session.contains_key(&key).to_string()
}

async fn set_flash(session: Session) -> Result<&'static str, SessionInsertError> {
    session.insert("flash", "saved")?;
    session.insert("bad_flash", 7)?;
    Ok("set")
}

async fn take_flash(session: Session) -> String {
    let flash = match session.remove_as::<String>("flash") {
        Some(Ok(message)) => message,
        Some(Err(json)) => format!("not a string: {json}"),
        None => "none".to_owned(),
    };
    let bad = match session.remove_as::<String>("bad_flash") {
        Some(Ok(message)) => message,
        Some(Err(json)) => format!("not a string: {json}"),
        None => "none".to_owned(),
    };
    let raw = session.remove("roles").unwrap_or_default();
    format!("{flash} | {bad} | {raw}")
}

async fn visit(session: Session) -> Result<String, Error> {
    session.update_or("visits", 1_u32, |n: u32| n + 1)?;
    session.update("missing", |n: u32| n + 1)?;
    let visits: Option<u32> = session.get("visits")?;
    Ok(visits.unwrap_or(0).to_string())
}

async fn reset(session: Session) -> &'static str {
    session.clear();
    "cleared"
}

async fn logout(session: Session) -> HttpResponse {
    session.purge();
    HttpResponse::Ok().body(format!("bye purged={}", session.status() == SessionStatus::Purged))
}

async fn get_error(session: Session) -> Result<String, SessionGetError> {
    Ok(session.get::<u32>("user_id")?.unwrap_or(0).to_string())
}

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/counter", web::get().to(counter))
        .route("/login", web::post().to(login))
        .route("/whoami", web::get().to(whoami))
        .route("/private", web::get().guard(guard::fn_guard(logged_in)).to(private))
        .route("/private", web::get().to(HttpResponse::Forbidden))
        .route("/keys", web::get().to(keys))
        .route("/has/{key}", web::get().to(has))
        .route("/flash", web::post().to(set_flash))
        .route("/flash", web::get().to(take_flash))
        .route("/visit", web::get().to(visit))
        .route("/reset", web::post().to(reset))
        .route("/logout", web::post().to(logout))
        .route("/get-error", web::get().to(get_error));
}

use actix_kv_session::SessionData;

#[derive(SessionData)]
enum Auth {
    User(String),
    Guest,
}

fn main() {}

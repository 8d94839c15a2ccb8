use actix_kv_session::SessionData;

#[derive(SessionData)]
struct Nothing;

fn main() {}

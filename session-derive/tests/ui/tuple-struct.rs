use actix_kv_session::SessionData;

#[derive(SessionData)]
struct UserId(u64);

fn main() {}

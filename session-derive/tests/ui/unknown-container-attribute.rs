use actix_kv_session::SessionData;

#[derive(SessionData)]
#[session(key = "auth")]
struct Auth {
    user_id: u64,
}

fn main() {}

use actix_kv_session::SessionData;

#[derive(SessionData)]
struct Auth {
    user_id: u64,
    #[session(key = "user_id")]
    other_id: u64,
}

fn main() {}

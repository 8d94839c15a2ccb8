use actix_kv_session::SessionData;

#[derive(SessionData)]
struct Auth {
    #[session(key = "a", key = "b")]
    user_id: u64,
}

fn main() {}

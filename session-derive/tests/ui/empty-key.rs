use actix_kv_session::SessionData;

#[derive(SessionData)]
struct Auth {
    #[session(key = "")]
    user_id: u64,
}

fn main() {}

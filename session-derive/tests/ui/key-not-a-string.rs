use actix_kv_session::SessionData;

#[derive(SessionData)]
struct Auth {
    #[session(key = 42)]
    user_id: u64,
}

fn main() {}

use actix_kv_session::SessionData;

#[derive(SessionData)]
struct Auth {
    user_id: u64,
    #[session(skip, key = "scratch")]
    scratch: u8,
}

fn main() {}

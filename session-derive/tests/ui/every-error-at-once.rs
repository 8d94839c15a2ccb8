use actix_kv_session::SessionData;

#[derive(SessionData)]
#[session(prefx = "typo.")]
struct Auth {
    #[session(key = "id")]
    user_id: u64,
    #[session(key = "id")]
    account_id: u64,
    #[session(skip, key = "x")]
    scratch: u8,
    #[session(defualt)]
    visits: u32,
}

fn main() {}

use actix_kv_session::SessionData;

#[derive(SessionData)]
#[session(prefix = "auth.", rename_all = "camelCase")]
struct Auth {
    user_id: u64,
    #[session(key = "userId")]
    legacy_id: u64,
}

fn main() {}

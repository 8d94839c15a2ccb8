use actix_kv_session::SessionData;

#[derive(SessionData)]
#[session(rename_all = "camel")]
struct Auth {
    user_id: u64,
}

fn main() {}

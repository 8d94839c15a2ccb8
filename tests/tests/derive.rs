//! `#[derive(SessionData)]` and `Typed<T>`: keys, defaults, rejections, schema changes,
//! write-back, and use next to the untyped API (on the memory store; every store runs the
//! typed case of the middleware suite too).

use actix_kv_session::{
    storage::{MemoryStore, SessionStore},
    Session, SessionData, SessionId, SessionMiddleware, Typed, TypedError,
};
use actix_web::{http::StatusCode, test, web, App, HttpResponse};
use tests::{
    app::{Counter, Profile},
    init_app,
    stores::{Fault, FaultyStore},
    suite::{get, post},
};

async fn seeded(store: &MemoryStore, pairs: &[(&str, &str)]) -> SessionId {
    tests::seed(store, pairs).await
}

#[derive(SessionData)]
#[session(rename_all = "camelCase")]
struct Renamed {
    user_id: u32,
    #[session(key = "explicit_key")]
    last_seen: u32,
    #[session(default)]
    r#type: u8,
}

#[derive(SessionData)]
#[session(prefix = "wizard.", rename_all = "SCREAMING-KEBAB-CASE")]
struct Prefixed {
    step_count: u8,
    #[session(key = "done")]
    finished: bool,
}

#[derive(SessionData, Debug, PartialEq)]
struct Wrapper<T> {
    inner: T,
    maybe: Option<T>,
}

fn three() -> u32 {
    3
}

#[derive(SessionData, Debug, PartialEq)]
struct WithDefaultFn {
    #[session(default = "three")]
    n: u32,
    #[session(default)]
    list: Vec<u8>,
    #[session(skip)]
    local: Vec<u8>,
}

#[::core::prelude::v1::test]
fn keys_follow_names_renames_and_prefixes() {
    assert_eq!(Renamed::KEYS, ["userId", "explicit_key", "type"]);
    assert_eq!(Prefixed::KEYS, ["wizard.STEP-COUNT", "wizard.done"]);
    assert_eq!(Profile::KEYS, ["user", "visits", "theme"]);
    assert_eq!(Wrapper::<u8>::KEYS, ["inner", "maybe"]);
}

#[actix_web::test]
async fn a_missing_required_field_is_a_rejection_the_app_can_map() {
    async fn strict(profile: Typed<Profile>) -> String {
        profile.name.clone()
    }
    async fn mapped(profile: Result<Typed<Profile>, TypedError>) -> HttpResponse {
        match profile {
            Ok(profile) => HttpResponse::Ok().body(profile.name.clone()),
            Err(TypedError::Missing { key }) => {
                HttpResponse::Unauthorized().body(format!("no {key}"))
            }
            Err(other) => HttpResponse::InternalServerError().body(other.to_string()),
        }
    }
    let app = test::init_service(
        App::new()
            .wrap(SessionMiddleware::new(MemoryStore::default()))
            .route("/strict", web::get().to(strict))
            .route("/mapped", web::get().to(mapped))
            .configure(tests::app::routes),
    )
    .await;
    let rejected = get(&app, "/strict", None).await;
    assert_eq!(
        (rejected.status, rejected.body.as_str()),
        (StatusCode::BAD_REQUEST, "Bad Request")
    );
    let mapped_reply = get(&app, "/mapped", None).await;
    assert_eq!(
        (mapped_reply.status, mapped_reply.body.as_str()),
        (StatusCode::UNAUTHORIZED, "no user")
    );
    assert_eq!(post(&app, "/typed/visit", None).await.body, "anonymous");
    let id = post(&app, "/login/bob", None).await.id();
    assert_eq!(get(&app, "/mapped", Some(id.as_str())).await.body, "bob");
}

#[actix_web::test]
async fn values_that_no_longer_fit_fall_back_for_default_and_option_fields() {
    let store = MemoryStore::default();
    let app = init_app!(SessionMiddleware::new(store.clone()));
    // Another version of the app stored `visits` as text and `theme` as a number.
    let id = seeded(
        &store,
        &[("user", "\"ann\""), ("visits", "\"many\""), ("theme", "7")],
    )
    .await;
    let unchanged = store.load(&id).await.unwrap().unwrap();
    // Reading falls back to the defaults, and writes nothing back.
    let read = get(&app, "/typed/profile", Some(id.as_str())).await;
    assert_eq!(
        (read.status, read.body.as_str()),
        (
            StatusCode::OK,
            "Profile { name: \"ann\", visits: 0, theme: None, scratch: 0 }"
        )
    );
    assert_eq!(store.load(&id).await.unwrap().unwrap(), unchanged);
    // A field the handler changes is written; the one it left alone stays as it was.
    let reply = post(&app, "/typed/visit", Some(id.as_str())).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "ann 1")
    );
    let record = store.load(&id).await.unwrap().unwrap();
    assert_eq!(record["visits"], "1", "the handler changed this one");
    assert_eq!(
        record["theme"], "7",
        "an untouched field was healed over: {record:?}"
    );

    // A required field that no longer fits is a rejection, every time, never a 500.
    let id = seeded(&store, &[("user", "42")]).await;
    for _ in 0..2 {
        let reply = post(&app, "/typed/visit", Some(id.as_str())).await;
        assert_eq!(
            reply.body, "anonymous",
            "Option<Typed<T>> treats it as absent"
        );
        assert_eq!(
            get(&app, "/typed/profile", Some(id.as_str())).await.status,
            StatusCode::BAD_REQUEST
        );
    }
}

#[actix_web::test]
async fn fields_left_alone_are_not_rewritten_even_if_stored_differently() {
    let store = MemoryStore::default();
    let app = init_app!(SessionMiddleware::new(store.clone()));
    // JSON as another writer formatted it: the same value, other text.
    let id = seeded(&store, &[("user", "\"ann\""), ("visits", " 5 ")]).await;
    assert_eq!(
        post(&app, "/typed/theme-slow/dark", Some(id.as_str()))
            .await
            .status,
        StatusCode::OK
    );
    let record = store.load(&id).await.unwrap().unwrap();
    assert_eq!(record["visits"], " 5 ", "an unchanged field was rewritten");
    assert_eq!(record["theme"], "\"dark\"");
    assert_eq!(
        get(&app, "/typed/profile", Some(id.as_str())).await.body,
        "Profile { name: \"ann\", visits: 5, theme: Some(\"dark\"), scratch: 0 }"
    );
}

#[actix_web::test]
async fn typed_and_untyped_views_share_one_load_and_one_save() {
    async fn both(session: Session, mut counter: Typed<Counter>) -> actix_web::Result<String> {
        counter.count += 10;
        session.insert("other", true)?;
        Ok(counter.count.to_string())
    }
    let store = MemoryStore::default();
    let app = test::init_service(
        App::new()
            .wrap(SessionMiddleware::new(store.clone()))
            .route("/both", web::get().to(both))
            .configure(tests::app::routes),
    )
    .await;
    let id = get(&app, "/counter", None).await.id();
    assert_eq!(get(&app, "/both", Some(id.as_str())).await.body, "11");
    let record = store.load(&id).await.unwrap().unwrap();
    assert_eq!(
        (record["foo"].as_str(), record["other"].as_str()),
        ("11", "true")
    );
}

#[actix_web::test]
async fn generic_structs_default_functions_and_the_session_helpers() {
    async fn write(session: Session) -> actix_web::Result<&'static str> {
        session.insert_typed(&Wrapper {
            inner: 5_u16,
            maybe: None,
        })?;
        session.insert_typed(&WithDefaultFn {
            n: 9,
            list: vec![1],
            local: vec![2],
        })?;
        Ok("ok")
    }
    async fn read(session: Session) -> Result<String, TypedError> {
        let wrapper: Wrapper<u16> = session.get_typed()?;
        let with_default: WithDefaultFn = session.get_typed()?;
        Ok(format!("{wrapper:?} {with_default:?}"))
    }
    async fn fresh(session: Session) -> Result<String, TypedError> {
        Ok(format!("{:?}", session.get_typed::<WithDefaultFn>()?))
    }
    let store = MemoryStore::default();
    let app = test::init_service(
        App::new()
            .wrap(SessionMiddleware::new(store.clone()))
            .route("/write", web::get().to(write))
            .route("/read", web::get().to(read))
            .route("/fresh", web::get().to(fresh)),
    )
    .await;
    assert_eq!(
        get(&app, "/fresh", None).await.body,
        "WithDefaultFn { n: 3, list: [], local: [] }"
    );
    let id = get(&app, "/write", None).await.id();
    let record = store.load(&id).await.unwrap().unwrap();
    assert!(
        !record.contains_key("maybe") && !record.contains_key("local"),
        "{record:?}"
    );
    assert_eq!(
        get(&app, "/read", Some(id.as_str())).await.body,
        "Wrapper { inner: 5, maybe: None } WithDefaultFn { n: 9, list: [1], local: [] }"
    );
}

#[actix_web::test]
async fn a_value_that_cannot_be_written_back_is_a_500_and_saves_nothing() {
    #[derive(SessionData)]
    struct Bad {
        #[session(default)]
        map: std::collections::HashMap<(u8, u8), u8>,
    }
    async fn bad(session: Session, mut typed: Typed<Bad>) -> actix_web::Result<&'static str> {
        session.insert("fine", 1)?;
        typed.map.insert((1, 2), 3);
        Ok("handler finished")
    }
    let store = MemoryStore::default();
    let app = test::init_service(
        App::new()
            .wrap(SessionMiddleware::new(store.clone()))
            .route("/bad", web::get().to(bad)),
    )
    .await;
    let reply = get(&app, "/bad", None).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
    );
    assert!(reply.cookie.is_none());
    store.run_pending_tasks();
    assert_eq!(store.session_count(), 0);
}

#[actix_web::test]
async fn dropping_the_view_writes_back_and_a_copy_from_get_typed_is_not_saved() {
    async fn copy(mut counter: Typed<Counter>) -> Result<String, TypedError> {
        counter.count += 1;
        let session = counter.session().clone();
        drop(counter);
        let mut copy: Counter = session.get_typed()?;
        copy.count += 100;
        Ok(copy.count.to_string())
    }
    let store = MemoryStore::default();
    let app = test::init_service(
        App::new()
            .wrap(SessionMiddleware::new(store.clone()))
            .route("/copy", web::get().to(copy))
            .configure(tests::app::routes),
    )
    .await;
    let id = get(&app, "/counter", None).await.id();
    let reply = get(&app, "/copy", Some(id.as_str())).await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "102"));
    assert_eq!(store.load(&id).await.unwrap().unwrap()["foo"], "2");
}

#[actix_web::test]
async fn a_store_failure_is_a_503_even_behind_an_option() {
    let store = FaultyStore::new(MemoryStore::default());
    let app = init_app!(SessionMiddleware::new(store.clone()));
    let id = post(&app, "/login/ann", None).await.id();
    store.set(Fault::Down);
    let reply = post(&app, "/typed/visit", Some(id.as_str())).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable"),
        "an outage must not read as a logged-out user"
    );
    store.set(Fault::None);
    assert_eq!(
        post(&app, "/typed/visit", Some(id.as_str())).await.body,
        "ann 1"
    );
}

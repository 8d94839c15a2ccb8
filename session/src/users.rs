//! Sessions bound to a user, for "your devices" pages and "log out everywhere".
//!
//! A session is bound with [`Session::set_user`](crate::Session::set_user): the user id is
//! kept in its record (a bookkeeping key). Each user has an index: a record in the same store,
//! under an id derived from the user id, whose keys are the user's session ids. It is kept
//! with the store's own operations (the contract every store passes), so every store, ours or
//! yours, has it, with the store's atomicity: concurrent log-ins of one user each add their
//! key, and none is lost.
//!
//! The order of operations keeps the index a superset of the user's live sessions: an id is
//! added to the index before the session is written under it (log-in, renew), and removed
//! only after the session is gone. "Log out everywhere" ends every session the index names,
//! leaving the moved marker at each id (requests in flight on it get 409 and cannot bring it
//! back) or, where a log-in has indexed an id but not written it yet, a placeholder that makes
//! that write fail; then it reads the index again until no new id appears.
//!
//! The index outlives its sessions: its TTL is the latest end any of its sessions was given
//! when it was indexed (twice the session's TTL), and a session's entry is refreshed when half
//! its TTL has passed since the last time, with the session's next write or TTL extension.
//! Ids whose end passed are dropped from the index with the user's next log-in.
//!
//! The index's id starts with `;u`, which no session cookie can carry (`;` separates cookies
//! in a `Cookie` header, and cookie ids are hexadecimal): a visitor can neither load nor purge
//! an index.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::{
    error::StoreError,
    lifetime,
    storage::{ChangeSet, ConflictPolicy, KeyChange, SaveOutcome, SessionMap, SessionStore},
    SessionId,
};

/// The bookkeeping key of a session's user.
pub(crate) const USER: &str = "\0user";
/// When the session's index entry was last written, in Unix milliseconds.
pub(crate) const INDEXED: &str = "\0indexed";
/// When the session was last written, in Unix milliseconds (for "last seen").
pub(crate) const SEEN: &str = "\0seen";

/// How many times "log out everywhere" reads the index again for ids added meanwhile.
const PURGE_PASSES: usize = 4;

/// The id of `user`'s index.
pub(crate) fn index_id(user: &str) -> SessionId {
    let digest = Sha256::new()
        .chain_update(b"actix-kv-session user index\0")
        .chain_update(user.as_bytes())
        .finalize();
    SessionId::derived(b'u', &digest)
}

/// The user a session's bookkeeping names, if any.
pub(crate) fn user_of(meta: &SessionMap) -> Option<String> {
    serde_json::from_str(meta.get(USER)?).ok()
}

/// Whether a bound session's index entry is due for a refresh at `now`: half its TTL has
/// passed since it was written.
pub(crate) fn refresh_due(meta: &SessionMap, ttl: Duration, now: u64) -> bool {
    lifetime::number(meta, INDEXED).is_none_or(|at| {
        now.saturating_sub(at) >= u64::try_from(ttl.as_millis() / 2).unwrap_or(u64::MAX)
    })
}

/// One of a user's sessions, as [`Session::user_sessions`](crate::Session::user_sessions)
/// lists them.
///
/// ```
/// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware};
/// use actix_web::{test, web, App};
///
/// /// The "your devices" page.
/// async fn devices(session: Session) -> actix_web::Result<String> {
///     let lines: Vec<String> = session
///         .user_sessions()
///         .await?
///         .iter()
///         .map(|device| {
///             // The app's data, keys to JSON texts.
///             let agent: String = device.data.get("agent")
///                 .and_then(|json| serde_json::from_str(json).ok())
///                 .unwrap_or_default();
///             let this = if device.current { " (this one)" } else { "" };
///             format!("{agent}{this}")
///         })
///         .collect();
///     Ok(lines.join("\n"))
/// }
///
/// async fn log_in(session: Session, agent: String) -> actix_web::Result<&'static str> {
///     session.renew()?;
///     session.set_user("alice")?;
///     session.insert("agent", agent)?;
///     Ok("welcome")
/// }
///
/// # actix_web::rt::System::new().block_on(async {
/// let app = test::init_service(
///     App::new()
///         .wrap(SessionMiddleware::new(MemoryStore::default()))
///         .route("/login", web::post().to(log_in))
///         .route("/devices", web::get().to(devices)),
/// )
/// .await;
/// let mut cookies = Vec::new();
/// for agent in ["phone", "laptop"] {
///     let req = test::TestRequest::post().uri("/login").set_payload(agent).to_request();
///     let res = test::call_service(&app, req).await;
///     cookies.push(res.response().cookies().next().unwrap().into_owned());
/// }
///
/// let req = test::TestRequest::get().uri("/devices").cookie(cookies[0].clone()).to_request();
/// let page = test::call_and_read_body(&app, req).await;
/// let mut lines: Vec<&str> = std::str::from_utf8(&page).unwrap().lines().collect();
/// lines.sort(); // most recently seen first: these two may share a millisecond
/// assert_eq!(lines, ["laptop", "phone (this one)"]);
/// # });
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UserSession {
    /// A stable, non-secret handle of the session (a hash of its id): to tell sessions
    /// apart on a page, never a credential.
    pub handle: String,
    /// Whether it is the session of the request that listed them.
    pub current: bool,
    /// When it began, if known: when it was bound to the user (the log-in); with an
    /// absolute timeout, the time that timeout counts from (the session's creation or last
    /// renew, as at a log-in that renews).
    pub created: Option<SystemTime>,
    /// When it was last saved or had its TTL extended, if known.
    pub last_seen: Option<SystemTime>,
    /// Its data, as the app stored it (a user agent, say), keys to JSON texts.
    pub data: SessionMap,
}

fn time_of(meta: &SessionMap, key: &str) -> Option<SystemTime> {
    lifetime::number(meta, key).map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
}

/// A session's handle: the first 16 hex digits of the SHA-256 of its id.
pub(crate) fn handle_of(id: &SessionId) -> String {
    use std::fmt::Write as _;
    let digest = Sha256::digest(id.as_str().as_bytes());
    digest[..8]
        .iter()
        .fold(String::with_capacity(16), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// The index of `user`: session id → the Unix milliseconds until which the entry must last.
async fn entries<S: SessionStore + ?Sized>(
    store: &S,
    user: &str,
) -> Result<Vec<(SessionId, u64)>, StoreError> {
    let index = store.load(&index_id(user)).await?.unwrap_or_default();
    Ok(index
        .iter()
        .filter_map(|(id, until)| Some((SessionId::parse(id)?, until.parse().ok()?)))
        .collect())
}

/// A change set on an index: last write wins, and the index lives until `until` (Unix
/// milliseconds) or at least a second.
fn index_changes(changes: Vec<KeyChange>, until: u64, now: u64) -> ChangeSet {
    let ttl = Duration::from_millis(until.saturating_sub(now)).max(Duration::from_secs(1));
    ChangeSet::new(changes, ConflictPolicy::LastWriteWins, ttl)
}

/// Adds (or refreshes) session `id` in `user`'s index, to last at least twice `ttl` from
/// `now`.
pub(crate) async fn add<S: SessionStore + ?Sized>(
    store: &S,
    user: &str,
    id: &SessionId,
    ttl: Duration,
    now: u64,
) -> Result<(), StoreError> {
    let own_until = now.saturating_add(u64::try_from(ttl.as_millis() * 2).unwrap_or(u64::MAX));
    let index = index_id(user);
    for _ in 0..3 {
        let current = entries(store, user).await?;
        // The index lives as long as the longest-lived entry needs; entries past their end
        // (their session expired) leave it on the way.
        let until = current
            .iter()
            .map(|&(_, until)| until)
            .fold(own_until, u64::max);
        let mut list: Vec<KeyChange> = current
            .iter()
            .filter(|&&(other, until)| until < now && other != *id)
            .map(|(other, _)| KeyChange::new(other.as_str().to_owned(), None, None))
            .collect();
        list.push(KeyChange::new(
            id.as_str().to_owned(),
            Some(own_until.to_string()),
            None,
        ));
        let changes = index_changes(list, until, now);
        if store.update(&index, &changes).await? == SaveOutcome::Saved {
            return Ok(());
        }
        // No index yet (or it expired): make it.
        let record: SessionMap = [(id.as_str().to_owned(), own_until.to_string())].into();
        match store.create(&index, &record, changes.ttl()).await {
            Ok(()) => return Ok(()),
            // Another log-in created it meanwhile: add to it.
            Err(StoreError::IdInUse) => {}
            Err(err) => return Err(err),
        }
    }
    Err(StoreError::Contended(3))
}

/// Removes `ids` from `user`'s index.
pub(crate) async fn remove<S: SessionStore + ?Sized>(
    store: &S,
    user: &str,
    ids: &[SessionId],
    now: u64,
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let until = entries(store, user)
        .await?
        .iter()
        .map(|&(_, until)| until)
        .max()
        .unwrap_or(now);
    let changes = ids
        .iter()
        .map(|id| KeyChange::new(id.as_str().to_owned(), None, None))
        .collect();
    store
        .update(&index_id(user), &index_changes(changes, until, now))
        .await?;
    Ok(())
}

/// `user`'s live sessions. An id whose session is not there is skipped but left in the
/// index: a log-in may be between indexing it and writing it. (Entries leave the index when
/// their end passed, with the next log-in, or when purged.)
pub(crate) async fn list<S: SessionStore + ?Sized>(
    store: &S,
    user: &str,
    current: Option<&SessionId>,
) -> Result<Vec<UserSession>, StoreError> {
    let mut live = Vec::new();
    for (id, _) in entries(store, user).await? {
        let record = match store.load(&id).await {
            Ok(record) => record,
            Err(StoreError::Corrupt(_)) => None,
            Err(err) => return Err(err),
        };
        let Some(mut data) = record else {
            continue;
        };
        let meta = lifetime::split(&mut data);
        if user_of(&meta).as_deref() != Some(user) {
            continue;
        }
        live.push(UserSession {
            handle: handle_of(&id),
            current: current == Some(&id),
            created: time_of(&meta, lifetime::CREATED),
            last_seen: time_of(&meta, SEEN),
            data,
        });
    }
    live.sort_by_key(|s| std::cmp::Reverse(s.last_seen));
    Ok(live)
}

/// Deletes every session of `user` but `except`; returns how many were deleted. Reads the
/// index again after each pass, for sessions indexed meanwhile (a log-in racing with it).
pub(crate) async fn purge<S: SessionStore + ?Sized>(
    store: &S,
    user: &str,
    except: Option<&SessionId>,
) -> Result<usize, StoreError> {
    let mut deleted = 0;
    for _ in 0..PURGE_PASSES {
        let ids: Vec<SessionId> = entries(store, user)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| Some(id) != except)
            .collect();
        if ids.is_empty() {
            return Ok(deleted);
        }
        for id in &ids {
            deleted += usize::from(end(store, id).await?);
        }
        remove(store, user, &ids, lifetime::now()).await?;
    }
    Ok(deleted)
}

/// How long the placeholder at a purged id that held nothing yet lasts: longer than a
/// log-in takes between indexing an id and writing its session.
const PLACEHOLDER_TTL: Duration = Duration::from_secs(60);
/// The bookkeeping key of that placeholder.
const PURGED: &str = "\0purged";

/// Ends the session at `id` so that nothing can be written under the id for a while: a
/// session there is renewed away (leaving the moved marker, so that requests in flight on
/// it get 409 and a late create fails) and its copy deleted; where nothing is stored yet (a
/// log-in between indexing the id and writing it), a placeholder is created, so that the
/// log-in's write fails instead of living on unindexed.
///
/// Whether a session (or a log-in about to write one) was ended there: not for an id that
/// holds a moved marker (renewed away, its session at an id the index also names).
async fn end<S: SessionStore + ?Sized>(store: &S, id: &SessionId) -> Result<bool, StoreError> {
    for _ in 0..3 {
        let away = SessionId::generate();
        let nothing = ChangeSet::new(
            Vec::new(),
            ConflictPolicy::LastWriteWins,
            Duration::from_secs(1),
        );
        match store.renew(id, &away, &nothing).await? {
            SaveOutcome::Saved => {
                store.delete(&away).await?;
                return Ok(true);
            }
            // Renewed away already (the live session is at an id the index also names), or
            // emptied: nothing left to end here.
            SaveOutcome::Moved | SaveOutcome::Emptied => return Ok(false),
            _ => {
                let placeholder: SessionMap = [(PURGED.to_owned(), "true".to_owned())].into();
                match store.create(id, &placeholder, PLACEHOLDER_TTL).await {
                    Ok(()) => return Ok(true),
                    // A session was written meanwhile: end it.
                    Err(StoreError::IdInUse) => {}
                    Err(err) => return Err(err),
                }
            }
        }
    }
    // Something the store cannot read sits there: delete it.
    store.delete(id).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_id_can_never_come_from_a_cookie() {
        let id = index_id("alice");
        assert!(id.as_str().starts_with(";u"));
        assert_eq!(id.as_str().len(), SessionId::LEN);
        assert_eq!(SessionId::parse(id.as_str()), None);
        assert_ne!(index_id("alice"), index_id("bob"));
        assert_eq!(index_id("alice"), id, "stable");
    }

    #[test]
    fn handles_are_short_hashes() {
        let id = SessionId::generate();
        let handle = handle_of(&id);
        assert_eq!(handle.len(), 16);
        assert!(!id.as_str().contains(&handle));
    }
}

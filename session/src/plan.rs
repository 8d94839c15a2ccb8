//! The save plan: what the end of a request does to the store and to the cookie, decided
//! from the session's state alone, so that every rule can be tested without a store.
//!
//! The cookie rule it keeps: a response sets or removes the session cookie only when this
//! request created, renewed, emptied or purged the session, or extended a persistent
//! cookie's session. A request whose id turned out unknown, gone or moved sends no
//! `Set-Cookie` at all, so a late response can never overwrite the cookie that a concurrent
//! renew (a log-in) has just set.

use crate::{
    config::TtlExtension,
    session::{CookieState, Loaded},
    storage::{KeyChange, SaveOutcome},
    SessionId,
};

/// What to do at the end of a request that used its session.
#[derive(Debug)]
pub(crate) struct SavePlan {
    /// A record to delete first: the session was purged.
    pub(crate) delete: Option<SessionId>,
    pub(crate) write: Write,
    /// The request asked for the session to be purged.
    purged: bool,
    /// The request carried a session cookie, which a removal must clear.
    had_cookie: bool,
}

/// The store write of a [`SavePlan`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Write {
    /// Nothing to write.
    Nothing,
    /// Extend the TTL of this record (read-only request, [`TtlExtension::OnEveryRequest`]).
    Touch(SessionId),
    /// Store a new session under a fresh id.
    Create(Vec<KeyChange>),
    /// Apply the changes to this record.
    Update(SessionId, Vec<KeyChange>),
    /// Move this record to a fresh id, applying the changes.
    Renew(SessionId, Vec<KeyChange>),
}

/// What the store answered to the plan's write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// No write was planned.
    Nothing,
    /// A touch: whether the record was there (and is extended).
    Touched(bool),
    /// A create, update or renew, with the id written to (the fresh id for a create or a
    /// renew).
    Saved(SessionId, SaveOutcome),
}

/// What the response does with the cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CookieAction {
    /// No `Set-Cookie`.
    Keep,
    /// Set the cookie to this id.
    Set(SessionId),
    /// Tell the browser to drop the cookie.
    Remove,
}

/// Why the request is answered 409 with nothing of it applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Under the strict policy, a changed key was changed by another request.
    Conflict,
    /// The session was renewed by another request since this one loaded it.
    Moved,
}

impl SavePlan {
    /// The plan for a session as the handler left it.
    pub(crate) fn new(cookie: CookieState, loaded: Loaded, ttl_extension: TtlExtension) -> Self {
        let purged = loaded.is_purged();
        let (record, renew, delete) = (loaded.record, loaded.renew, loaded.purge);
        let changes = loaded.into_changes();
        let write = match record {
            None if changes.is_empty() => Write::Nothing,
            None => Write::Create(changes),
            Some(id) if renew => Write::Renew(id, changes),
            Some(id) if !changes.is_empty() => Write::Update(id, changes),
            Some(id) if ttl_extension == TtlExtension::OnEveryRequest => Write::Touch(id),
            Some(_) => Write::Nothing,
        };
        Self {
            delete,
            write,
            purged,
            had_cookie: cookie != CookieState::Absent,
        }
    }

    /// What the response does with the cookie once the write answered `written`.
    /// `browser_session`: the cookie has no Max-Age, so extending the session does not
    /// re-send it.
    pub(crate) fn cookie(
        &self,
        written: Written,
        browser_session: bool,
    ) -> Result<CookieAction, Refusal> {
        let ended = if self.had_cookie {
            CookieAction::Remove
        } else {
            CookieAction::Keep
        };
        let extended = |id| {
            if browser_session {
                CookieAction::Keep
            } else {
                CookieAction::Set(id)
            }
        };
        let renewed_or_created = matches!(self.write, Write::Create(_) | Write::Renew(..));
        let emptied_a_record = matches!(self.write, Write::Update(..) | Write::Renew(..));
        Ok(match written {
            Written::Touched(true) => match self.write {
                Write::Touch(id) => extended(id),
                _ => CookieAction::Keep,
            },
            Written::Saved(id, SaveOutcome::Saved) if renewed_or_created => CookieAction::Set(id),
            Written::Saved(id, SaveOutcome::Saved) => extended(id),
            Written::Saved(_, SaveOutcome::Conflict) => return Err(Refusal::Conflict),
            Written::Saved(_, SaveOutcome::Moved) => return Err(Refusal::Moved),
            // This request's changes emptied the stored session.
            Written::Saved(_, SaveOutcome::Emptied) if emptied_a_record => ended,
            _ if self.purged => ended,
            // Nothing written, the session gone or expired meanwhile (its changes are dropped:
            // no resurrection), or it was never there: leave the cookie to whoever set it.
            _ => CookieAction::Keep,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SessionMap;

    fn id() -> SessionId {
        SessionId::generate()
    }

    fn loaded(record: Option<SessionId>, data: &[(&str, &str)]) -> Loaded {
        let data: SessionMap = data
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Loaded::for_tests(record, data)
    }

    fn plan(cookie: CookieState, loaded: Loaded) -> SavePlan {
        SavePlan::new(cookie, loaded, TtlExtension::OnChange)
    }

    #[test]
    fn a_read_only_request_writes_nothing_and_sends_no_cookie() {
        let old = id();
        for (cookie, record) in [
            (CookieState::Valid(old), Some(old)),
            // The id was unknown: a fresh, empty session that stays empty.
            (CookieState::Valid(old), None),
            (CookieState::Invalid, None),
            (CookieState::Absent, None),
        ] {
            let plan = plan(cookie, loaded(record, &[("a", "1")]));
            assert_eq!(plan.write, Write::Nothing);
            assert_eq!(plan.cookie(Written::Nothing, false), Ok(CookieAction::Keep));
        }
    }

    #[test]
    fn an_update_that_finds_the_session_gone_or_moved_sends_no_cookie() {
        let old = id();
        let mut session = loaded(Some(old), &[("a", "1")]);
        session.set_for_tests("a", "2");
        let plan = plan(CookieState::Valid(old), session);
        assert!(matches!(plan.write, Write::Update(..)));
        let answer = |outcome| plan.cookie(Written::Saved(old, outcome), false);
        assert_eq!(answer(SaveOutcome::Saved), Ok(CookieAction::Set(old)));
        assert_eq!(answer(SaveOutcome::Gone), Ok(CookieAction::Keep));
        assert_eq!(answer(SaveOutcome::Emptied), Ok(CookieAction::Remove));
        assert_eq!(answer(SaveOutcome::Moved), Err(Refusal::Moved));
        assert_eq!(answer(SaveOutcome::Conflict), Err(Refusal::Conflict));
        assert_eq!(
            plan.cookie(Written::Saved(old, SaveOutcome::Saved), true),
            Ok(CookieAction::Keep),
            "a browser-session cookie needs no new expiry"
        );
    }

    #[test]
    fn a_touch_re_sends_the_cookie_only_if_the_session_is_still_there() {
        let old = id();
        let plan = SavePlan::new(
            CookieState::Valid(old),
            loaded(Some(old), &[("a", "1")]),
            TtlExtension::OnEveryRequest,
        );
        assert_eq!(plan.write, Write::Touch(old));
        assert_eq!(
            plan.cookie(Written::Touched(true), false),
            Ok(CookieAction::Set(old))
        );
        assert_eq!(
            plan.cookie(Written::Touched(false), false),
            Ok(CookieAction::Keep)
        );
    }

    #[test]
    fn create_and_renew_set_the_new_id() {
        let (old, new) = (id(), id());
        let mut fresh = loaded(None, &[]);
        fresh.set_for_tests("a", "1");
        let plan = plan(CookieState::Valid(old), fresh);
        assert!(matches!(plan.write, Write::Create(_)));
        assert_eq!(
            plan.cookie(Written::Saved(new, SaveOutcome::Saved), true),
            Ok(CookieAction::Set(new)),
            "a new id is always sent, browser-session cookie or not"
        );
        let mut renewed = loaded(Some(old), &[("a", "1")]);
        renewed.renew = true;
        let plan = self::plan(CookieState::Valid(old), renewed);
        assert_eq!(plan.write, Write::Renew(old, Vec::new()));
        assert_eq!(
            plan.cookie(Written::Saved(new, SaveOutcome::Saved), false),
            Ok(CookieAction::Set(new))
        );
        assert_eq!(
            plan.cookie(Written::Saved(new, SaveOutcome::Gone), false),
            Ok(CookieAction::Keep)
        );
        assert_eq!(
            plan.cookie(Written::Saved(new, SaveOutcome::Moved), false),
            Err(Refusal::Moved),
            "the second of two concurrent renews"
        );
    }

    #[test]
    fn a_purge_removes_the_cookie_the_request_carried() {
        let old = id();
        let plan = plan(CookieState::Valid(old), Loaded::purged(Some(old)));
        assert_eq!((plan.delete, &plan.write), (Some(old), &Write::Nothing));
        assert_eq!(
            plan.cookie(Written::Nothing, false),
            Ok(CookieAction::Remove)
        );
        let plan = self::plan(CookieState::Absent, Loaded::purged(None));
        assert_eq!(plan.cookie(Written::Nothing, false), Ok(CookieAction::Keep));
    }
}

//! The save plan: what the end of a request does to the store and to the cookie, decided
//! from the session's state alone, so that every rule can be tested without a store. The
//! middleware only executes it.
//!
//! The cookie rule it keeps: a response sets or removes the session cookie only when this
//! request created, renewed, emptied or purged the session, or extended a persistent
//! cookie's session. A request whose id turned out unknown, gone or moved sends no
//! `Set-Cookie` at all, so a late response can never overwrite the cookie that a concurrent
//! renew (a log-in) has just set.

use std::time::Duration;

use crate::{
    signing::SignedCookie,
    storage::{KeyChange, SaveOutcome, SessionMap},
    SessionId,
};

/// What a request left of its session, as the plan needs it.
// Independent facts about one request, each read once by `SavePlan::new`: no state machine
// hides among them.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Default)]
pub(crate) struct Ended {
    /// The id of the stored record the session was loaded from; `None` for a session not
    /// stored yet (new, unknown id, or purged in this request).
    pub(crate) record: Option<SessionId>,
    /// The session's data as the handler left it.
    pub(crate) data: SessionMap,
    /// The keys whose value changed, with the value seen at load.
    pub(crate) changes: Vec<KeyChange>,
    /// `renew` was called on a stored session.
    pub(crate) renew: bool,
    /// `purge` was called.
    pub(crate) purged: bool,
    /// The record `purge` deletes: the cookie's id, if it was one.
    pub(crate) purge: Option<SessionId>,
    /// The request carried a session cookie, which a removal must clear.
    pub(crate) had_cookie: bool,
    /// A read-only request extends the TTL with a touch
    /// ([`TtlExtension::OnEveryRequest`](crate::TtlExtension::OnEveryRequest), unthrottled).
    pub(crate) touch: bool,
    /// The session's own TTL, if it has one ([`Session::set_ttl`](crate::Session::set_ttl)).
    pub(crate) ttl: Option<Duration>,
    /// The session's own cookie kind, if it has one.
    pub(crate) browser_session: Option<bool>,
    /// The user whose index must name the session before it is written.
    pub(crate) index_user: Option<String>,
    /// The only changes are the middleware's bookkeeping: a refused write is no conflict.
    pub(crate) bookkeeping_only: bool,
    /// This request changed the session's own TTL or cookie kind: a response that keeps
    /// the session re-sends its cookie, even a browser-session one.
    pub(crate) cookie_changed: bool,
}

/// What to do at the end of a request that used its session.
#[derive(Debug)]
pub(crate) struct SavePlan {
    /// A record to delete first: the session was purged.
    pub(crate) delete: Option<SessionId>,
    pub(crate) write: Write,
    pub(crate) cookie: CookieRule,
    /// The session's own TTL, in place of the middleware's, if it has one.
    pub(crate) ttl: Option<Duration>,
    /// The session's own cookie kind, in place of the middleware's, if it has one.
    pub(crate) browser_session: Option<bool>,
    /// The user whose index must name the session before it is written (and, after a
    /// renew, no longer its old id).
    pub(crate) index_user: Option<String>,
    /// The request's signed cookie, verified with the signing key: set again as it is.
    /// Boxed: the plan moves into the save's future, and unsigned sessions would carry 60
    /// bytes of nothing through every move (callgrind: +230 instructions on the memory
    /// store's `/counter` unboxed).
    pub(crate) current_signature: Option<Box<SignedCookie>>,
}

/// The store write of a [`SavePlan`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Write {
    /// Nothing to write.
    Nothing,
    /// Extend the TTL of this record (read-only request, [`TtlExtension::OnEveryRequest`](crate::TtlExtension::OnEveryRequest)).
    Touch(SessionId),
    /// Store a new session, with this data, under a fresh id.
    Create(SessionMap),
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
    /// A touch of this id: whether the record was there (and is extended).
    Touched(SessionId, bool),
    /// A new session, stored under this id.
    Created(SessionId),
    /// An update of this id.
    Updated(SessionId, SaveOutcome),
    /// A renew, to this new id.
    Renewed(SessionId, SaveOutcome),
}

/// How the response's cookie follows from what was written.
// Four independent facts about the request, read together by `apply`.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct CookieRule {
    purged: bool,
    had_cookie: bool,
    /// Re-send the cookie on any successful save (its attributes changed).
    resend: bool,
    /// The write carried only bookkeeping (an extension that records its time): a session
    /// found moved or changed is left alone, as a touch that finds it gone is, never a 409
    /// for a request that only read.
    bookkeeping_only: bool,
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
    pub(crate) fn new(ended: Ended) -> Self {
        let write = match ended.record {
            None if ended.data.is_empty() => Write::Nothing,
            None => Write::Create(ended.data),
            Some(id) if ended.renew => Write::Renew(id, ended.changes),
            Some(id) if !ended.changes.is_empty() => Write::Update(id, ended.changes),
            Some(id) if ended.touch => Write::Touch(id),
            Some(_) => Write::Nothing,
        };
        Self {
            delete: ended.purge.filter(|_| ended.purged),
            write,
            cookie: CookieRule {
                purged: ended.purged,
                had_cookie: ended.had_cookie,
                resend: ended.cookie_changed,
                bookkeeping_only: ended.bookkeeping_only,
            },
            ttl: ended.ttl,
            browser_session: ended.browser_session,
            current_signature: None,
            index_user: ended.index_user,
        }
    }
}

impl CookieRule {
    /// What the response does with the cookie once the write answered `written`.
    /// `browser_session`: the cookie has no Max-Age, so extending the session does not
    /// re-send it.
    pub(crate) fn apply(
        self,
        written: Written,
        browser_session: bool,
    ) -> Result<CookieAction, Refusal> {
        let ended = if self.had_cookie {
            CookieAction::Remove
        } else {
            CookieAction::Keep
        };
        let extended = |id| {
            if browser_session && !self.resend {
                CookieAction::Keep
            } else {
                CookieAction::Set(id)
            }
        };
        if self.bookkeeping_only
            && matches!(
                written,
                Written::Updated(_, SaveOutcome::Moved | SaveOutcome::Conflict)
            )
        {
            return Ok(CookieAction::Keep);
        }
        Ok(match written {
            Written::Created(id) | Written::Renewed(id, SaveOutcome::Saved) => {
                CookieAction::Set(id)
            }
            Written::Touched(id, true) | Written::Updated(id, SaveOutcome::Saved) => extended(id),
            Written::Updated(_, SaveOutcome::Conflict)
            | Written::Renewed(_, SaveOutcome::Conflict) => return Err(Refusal::Conflict),
            Written::Updated(_, SaveOutcome::Moved) | Written::Renewed(_, SaveOutcome::Moved) => {
                return Err(Refusal::Moved)
            }
            // This request's changes emptied the stored session.
            Written::Updated(_, SaveOutcome::Emptied)
            | Written::Renewed(_, SaveOutcome::Emptied) => ended,
            _ if self.purged => ended,
            // Nothing written, or the session gone or expired meanwhile (its changes are
            // dropped: no resurrection): leave the cookie to whoever set it.
            _ => CookieAction::Keep,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> SessionId {
        SessionId::generate()
    }

    fn change() -> Vec<KeyChange> {
        vec![KeyChange::new(
            "a".into(),
            Some("2".into()),
            Some("1".into()),
        )]
    }

    fn plan(ended: Ended) -> SavePlan {
        SavePlan::new(ended)
    }

    #[test]
    fn a_read_only_request_writes_nothing_and_sends_no_cookie() {
        let old = id();
        for (record, had_cookie) in [(Some(old), true), (None, true), (None, false)] {
            let plan = plan(Ended {
                record,
                had_cookie,
                ..Ended::default()
            });
            assert_eq!(plan.write, Write::Nothing);
            assert_eq!(
                plan.cookie.apply(Written::Nothing, false),
                Ok(CookieAction::Keep)
            );
        }
    }

    #[test]
    fn an_update_that_finds_the_session_gone_or_moved_sends_no_cookie() {
        let old = id();
        let plan = plan(Ended {
            record: Some(old),
            changes: change(),
            had_cookie: true,
            ..Ended::default()
        });
        assert_eq!(plan.write, Write::Update(old, change()));
        let answer = |outcome| plan.cookie.apply(Written::Updated(old, outcome), false);
        assert_eq!(answer(SaveOutcome::Saved), Ok(CookieAction::Set(old)));
        assert_eq!(answer(SaveOutcome::Gone), Ok(CookieAction::Keep));
        assert_eq!(answer(SaveOutcome::Emptied), Ok(CookieAction::Remove));
        assert_eq!(answer(SaveOutcome::Moved), Err(Refusal::Moved));
        assert_eq!(answer(SaveOutcome::Conflict), Err(Refusal::Conflict));
        assert_eq!(
            plan.cookie
                .apply(Written::Updated(old, SaveOutcome::Saved), true),
            Ok(CookieAction::Keep),
            "a browser-session cookie needs no new expiry"
        );
    }

    #[test]
    fn a_touch_re_sends_the_cookie_only_if_the_session_is_still_there() {
        let old = id();
        let plan = SavePlan::new(Ended {
            record: Some(old),
            had_cookie: true,
            touch: true,
            ..Ended::default()
        });
        assert_eq!(plan.write, Write::Touch(old));
        let answer = |alive| plan.cookie.apply(Written::Touched(old, alive), false);
        assert_eq!(answer(true), Ok(CookieAction::Set(old)));
        assert_eq!(answer(false), Ok(CookieAction::Keep));
    }

    #[test]
    fn a_changed_cookie_kind_is_sent_even_for_a_browser_session_cookie() {
        let old = id();
        let plan = plan(Ended {
            record: Some(old),
            changes: change(),
            had_cookie: true,
            browser_session: Some(true),
            cookie_changed: true,
            ..Ended::default()
        });
        assert_eq!(
            plan.cookie
                .apply(Written::Updated(old, SaveOutcome::Saved), true),
            Ok(CookieAction::Set(old))
        );
    }

    #[test]
    fn a_bookkeeping_write_that_finds_the_session_moved_is_no_conflict() {
        let old = id();
        let plan = plan(Ended {
            record: Some(old),
            changes: vec![KeyChange::new("\0extended".into(), Some("2".into()), None)],
            had_cookie: true,
            bookkeeping_only: true,
            ..Ended::default()
        });
        let answer = |outcome| plan.cookie.apply(Written::Updated(old, outcome), false);
        assert_eq!(answer(SaveOutcome::Moved), Ok(CookieAction::Keep));
        assert_eq!(answer(SaveOutcome::Gone), Ok(CookieAction::Keep));
        assert_eq!(answer(SaveOutcome::Saved), Ok(CookieAction::Set(old)));
    }

    #[test]
    fn create_and_renew_set_the_new_id() {
        let (old, new) = (id(), id());
        let data: SessionMap = [("a".to_owned(), "1".to_owned())].into_iter().collect();
        let plan = plan(Ended {
            data: data.clone(),
            had_cookie: true,
            ..Ended::default()
        });
        assert_eq!(plan.write, Write::Create(data));
        assert_eq!(
            plan.cookie.apply(Written::Created(new), true),
            Ok(CookieAction::Set(new)),
            "a new id is always sent, browser-session cookie or not"
        );
        let plan = self::plan(Ended {
            record: Some(old),
            renew: true,
            had_cookie: true,
            ..Ended::default()
        });
        assert_eq!(plan.write, Write::Renew(old, Vec::new()));
        let answer = |outcome| plan.cookie.apply(Written::Renewed(new, outcome), false);
        assert_eq!(answer(SaveOutcome::Saved), Ok(CookieAction::Set(new)));
        assert_eq!(answer(SaveOutcome::Gone), Ok(CookieAction::Keep));
        assert_eq!(
            answer(SaveOutcome::Moved),
            Err(Refusal::Moved),
            "the second of two concurrent renews"
        );
    }

    #[test]
    fn a_purge_removes_the_cookie_the_request_carried() {
        let old = id();
        let plan = plan(Ended {
            purged: true,
            purge: Some(old),
            had_cookie: true,
            ..Ended::default()
        });
        assert_eq!((plan.delete, &plan.write), (Some(old), &Write::Nothing));
        assert_eq!(
            plan.cookie.apply(Written::Nothing, false),
            Ok(CookieAction::Remove)
        );
        let plan = self::plan(Ended {
            purged: true,
            ..Ended::default()
        });
        assert_eq!(
            plan.cookie.apply(Written::Nothing, false),
            Ok(CookieAction::Keep)
        );
    }
}

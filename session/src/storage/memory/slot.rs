//! One stored session of the memory store: its keys and values behind their own lock, its
//! deadline, and where it stands (alive, moved by a renew, dead).

use std::{
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Mutex, MutexGuard, PoisonError,
    },
    time::{Duration, Instant},
};

use crate::storage::{ChangeSet, Record, SessionMap};

/// A stored session.
///
/// Saves change it in place, under its lock, without writing to the cache that holds it:
/// see [`MemoryStore`](super::MemoryStore) for why.
pub(super) struct Slot {
    state: Mutex<State>,
    /// The time to live of the last write, in milliseconds, for the cache's own expiry.
    ttl_ms: AtomicU64,
    /// The session's weight (see [`Weigher`](super::Weigher)), set under the lock by every
    /// write, so that the last write's weight is the one kept.
    weight: AtomicU32,
    /// The weight the cache counts for this slot: `weight` as it was when the slot was last
    /// written to the cache (the cache's weigher reads this).
    counted: AtomicU32,
}

struct State {
    fields: Fields,
    /// The session (or the marker of a moved one) is gone after this instant.
    deadline: Instant,
    life: Life,
}

/// Where a slot stands. Only [`Slot`]'s methods change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Alive,
    /// Renewed to another id: the slot is the marker that makes late updates answer
    /// `Moved`; it holds no data.
    Moved,
    /// Deleted (purged, emptied, evicted): a request still holding the slot must not write
    /// to it.
    Dead,
}

/// A slot, as an operation finds it.
pub(super) enum Found<'a> {
    /// Alive: its state, locked.
    Alive(Alive<'a>),
    /// The marker of a renewed session, within its time to live.
    Moved,
    /// Dead or past its deadline.
    Gone,
}

impl Slot {
    pub(super) fn new(fields: Fields, ttl: Duration, weight: u32) -> Self {
        Self {
            state: Mutex::new(State {
                fields,
                deadline: Instant::now() + ttl,
                life: Life::Alive,
            }),
            ttl_ms: AtomicU64::new(as_millis(ttl)),
            weight: AtomicU32::new(weight),
            counted: AtomicU32::new(weight),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The slot's state, for an operation on the session.
    pub(super) fn find(&self) -> Found<'_> {
        let state = self.lock();
        if state.deadline <= Instant::now() {
            return Found::Gone;
        }
        match state.life {
            Life::Alive => Found::Alive(Alive { slot: self, state }),
            Life::Moved => Found::Moved,
            Life::Dead => Found::Gone,
        }
    }

    /// Marks the slot dead, whatever it was: deleted, evicted or expired.
    pub(super) fn kill(&self) {
        self.lock().life = Life::Dead;
    }

    pub(super) fn is_dead(&self) -> bool {
        self.lock().life == Life::Dead
    }

    /// The time to live the cache's expiry gives the slot.
    pub(super) fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms.load(Ordering::Relaxed))
    }

    /// Records the slot's weight; says whether it moved far from what the cache counts
    /// (grew past it, or fell under half of it), so the slot must be written to the cache
    /// again.
    fn set_weight(&self, weight: u32) -> bool {
        self.weight.store(weight, Ordering::Relaxed);
        let counted = self.counted.load(Ordering::Relaxed);
        weight > counted || weight < counted / 2
    }

    /// The weight the cache counts: the latest recorded one, as of now. Call it right
    /// before writing the slot to the cache.
    pub(super) fn count_latest_weight(&self) {
        self.counted
            .store(self.weight.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// The weight the cache's weigher sees.
    pub(super) fn counted_weight(&self) -> u32 {
        self.counted.load(Ordering::Relaxed)
    }
}

/// An alive slot, locked.
pub(super) struct Alive<'a> {
    slot: &'a Slot,
    state: MutexGuard<'a, State>,
}

impl Alive<'_> {
    pub(super) fn fields(&self) -> &Fields {
        &self.state.fields
    }

    /// Applies `changes`; `false` when they left no key, and the slot is dead now.
    pub(super) fn apply(&mut self, changes: &ChangeSet) -> bool {
        changes.apply_to(&mut self.state.fields);
        if self.state.fields.is_empty() {
            self.state.life = Life::Dead;
            return false;
        }
        true
    }

    /// Moves the deadline `ttl` from now. True when `ttl` is longer than the last one: the
    /// slot must then be written to the cache again, whose expiry was set from the last one.
    pub(super) fn extend(&mut self, ttl: Duration) -> bool {
        self.state.deadline = Instant::now() + ttl;
        let ttl = as_millis(ttl);
        self.slot.ttl_ms.swap(ttl, Ordering::Relaxed) < ttl
    }

    /// Records the weight of the fields as they are now (see [`Slot::set_weight`]).
    pub(super) fn weigh(&self, weigh: impl Fn(&Fields) -> u32) -> bool {
        self.slot.set_weight(weigh(&self.state.fields))
    }

    /// Turns the slot into the marker of a session renewed away, living `ttl` and weighing
    /// `weight`; returns what [`Slot::revive`] needs to undo it.
    pub(super) fn into_marker(mut self, ttl: Duration, weight: u32) -> Revival {
        let revival = Revival {
            deadline: self.state.deadline,
            ttl_ms: self.slot.ttl_ms.load(Ordering::Relaxed),
            weight: self.slot.weight.load(Ordering::Relaxed),
            fields: std::mem::take(&mut self.state.fields),
        };
        self.state.life = Life::Moved;
        self.extend(ttl);
        self.slot.set_weight(weight);
        revival
    }
}

/// A session as it was before [`Alive::into_marker`].
pub(super) struct Revival {
    pub(super) fields: Fields,
    deadline: Instant,
    ttl_ms: u64,
    weight: u32,
}

impl Slot {
    /// Undoes [`Alive::into_marker`]: the renew could not store the session under its new
    /// id, and nothing of it may remain.
    pub(super) fn revive(&self, revival: Revival) {
        let mut state = self.lock();
        state.fields = revival.fields;
        state.deadline = revival.deadline;
        state.life = Life::Alive;
        self.ttl_ms.store(revival.ttl_ms, Ordering::Relaxed);
        self.set_weight(revival.weight);
    }
}

fn as_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

/// A session's keys and values, kept compact: most sessions hold a few small keys, and a
/// list costs a fraction of a hash map's table (for one key, about 100 bytes against about
/// 300).
#[derive(Clone, Default)]
pub(super) struct Fields(Vec<(String, String)>);

impl Fields {
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn from_map(map: &SessionMap) -> Self {
        let mut fields = Vec::with_capacity(map.len());
        fields.extend(map.iter().map(|(k, v)| (k.clone(), v.clone())));
        Self(fields)
    }

    pub(super) fn to_map(&self) -> SessionMap {
        let mut map = SessionMap::with_capacity(self.0.len());
        map.extend(self.0.iter().map(|(k, v)| (k.clone(), v.clone())));
        map
    }

    /// The session's size as the size limit counts it: its keys and JSON values.
    pub(super) fn size(&self) -> usize {
        self.0.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// The size once `changes` are applied (an upper bound if a change set names a key
    /// twice).
    pub(super) fn size_after(&self, changes: &ChangeSet) -> usize {
        let mut size = self.size();
        for change in changes.changes() {
            if let Some(old) = self.get(change.key()) {
                size = size.saturating_sub(change.key().len() + old.len());
            }
            if let Some(new) = change.value() {
                size = size.saturating_add(change.key().len() + new.len());
            }
        }
        size
    }

    /// The heap memory the fields hold, allocator rounding included (16 bytes per block).
    pub(super) fn heap_bytes(&self) -> usize {
        const PER_BLOCK: usize = 16;
        let list = self.0.capacity() * std::mem::size_of::<(String, String)>() + PER_BLOCK;
        let strings: usize = self
            .0
            .iter()
            .map(|(k, v)| k.capacity() + v.capacity() + 2 * PER_BLOCK)
            .sum();
        list + strings
    }
}

impl Record for Fields {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn set(&mut self, key: &str, value: &str) {
        if let Some((_, stored)) = self.0.iter_mut().find(|(k, _)| k == key) {
            // Overwrite in place: the stored buffer usually fits the new value.
            value.clone_into(stored);
        } else {
            self.0.reserve_exact(1);
            self.0.push((key.to_owned(), value.to_owned()));
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(at) = self.0.iter().position(|(k, _)| k == key) {
            self.0.swap_remove(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{ConflictPolicy, KeyChange};

    fn changes(list: &[(&str, Option<&str>)]) -> ChangeSet {
        let list = list
            .iter()
            .map(|(k, v)| KeyChange::new((*k).into(), v.map(Into::into), None))
            .collect();
        ChangeSet::new(list, ConflictPolicy::LastWriteWins, Duration::from_secs(60))
    }

    #[test]
    fn a_slot_goes_from_alive_to_moved_or_dead_and_back_only_by_revive() {
        let slot = Slot::new(Fields::default(), Duration::from_secs(60), 1);
        let Found::Alive(mut alive) = slot.find() else {
            panic!("a new slot is alive")
        };
        assert!(alive.apply(&changes(&[("a", Some("1"))])));
        let revival = alive.into_marker(Duration::from_millis(1), 1);
        assert!(matches!(slot.find(), Found::Moved));
        slot.revive(revival);
        assert_eq!(slot.ttl(), Duration::from_secs(60), "its own TTL back");
        let Found::Alive(mut alive) = slot.find() else {
            panic!("revived")
        };
        assert_eq!(alive.fields().get("a"), Some("1"));
        assert!(!alive.apply(&changes(&[("a", None)])), "emptied");
        drop(alive);
        assert!(matches!(slot.find(), Found::Gone));
        assert!(slot.is_dead());
    }

    #[test]
    fn a_slot_past_its_deadline_is_gone() {
        let slot = Slot::new(Fields::default(), Duration::ZERO, 1);
        assert!(matches!(slot.find(), Found::Gone));
    }

    #[test]
    fn sizes_count_keys_and_values_and_never_underflow() {
        let mut fields = Fields::default();
        changes(&[("ab", Some("123"))]).apply_to(&mut fields);
        assert_eq!(fields.size(), 5);
        let twice = changes(&[("ab", None), ("ab", None), ("ab", None)]);
        assert_eq!(fields.size_after(&twice), 0);
        assert_eq!(
            fields.size_after(&changes(&[("ab", Some("1")), ("c", Some("22"))])),
            6
        );
    }
}

//! One shard of the memory store: its sessions by id, in least recently used order, with
//! the expired ones swept out bit by bit.

use std::collections::HashMap;

use super::{fields::Fields, Hasher};
use crate::id::PackedId;

/// No slot: past either end of the recency list.
const NONE: u32 = u32::MAX;

/// How many slots each new session sweeps for expired sessions: more than one, so the
/// sweep laps the shard faster than new sessions fill it.
const SWEEP_STEP: usize = 2;

/// Sessions by id, each in one slot of a list, the slots chained from the most to the least
/// recently used.
///
/// A session costs its slot (56 bytes), its id and slot number in the index (24 bytes, in a
/// table kept between 7/16 and 7/8 full: 52 bytes a session at a million sessions in 64
/// shards) and its record's heap block (32 bytes for one small key).
pub(super) struct Shard {
    index: HashMap<PackedId, u32, Hasher>,
    slots: Vec<Option<Entry>>,
    /// Slots emptied by removals, to be filled first.
    free: Vec<u32>,
    newest: u32,
    oldest: u32,
    /// The next slot the sweep looks at.
    sweep_at: usize,
}

/// A stored session, or the marker of a renewed one.
pub(super) struct Entry {
    pub(super) fields: Fields,
    /// Gone from this instant on, in microseconds since the store was built.
    pub(super) deadline: u64,
    newer: u32,
    older: u32,
    /// What the session counts against the store's bound (see
    /// [`Weigher`](super::Weigher)).
    pub(super) weight: u32,
    id: PackedId,
    /// The marker of a renewed session: no data, and updates answer `Moved`.
    pub(super) moved: bool,
}

impl Entry {
    pub(super) fn new(id: PackedId, fields: Fields, deadline: u64, weight: u32) -> Self {
        Self {
            fields,
            deadline,
            newer: NONE,
            older: NONE,
            weight,
            id,
            moved: false,
        }
    }
}

impl Shard {
    pub(super) fn new(hasher: Hasher) -> Self {
        Self {
            index: HashMap::with_hasher(hasher),
            slots: Vec::new(),
            free: Vec::new(),
            newest: NONE,
            oldest: NONE,
            sweep_at: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// The slot of `id`, unless it is missing or expired at `now`; an expired one is
    /// removed, and its weight returned as the second item.
    pub(super) fn find(&mut self, id: &PackedId, now: u64) -> (Option<u32>, u32) {
        let Some(&slot) = self.index.get(id) else {
            return (None, 0);
        };
        if self.entry(slot).deadline <= now {
            return (None, self.remove(slot).weight);
        }
        (Some(slot), 0)
    }

    pub(super) fn entry(&self, slot: u32) -> &Entry {
        self.slots[slot as usize]
            .as_ref()
            .expect("the index and the recency list name only filled slots")
    }

    pub(super) fn entry_mut(&mut self, slot: u32) -> &mut Entry {
        self.slots[slot as usize]
            .as_mut()
            .expect("the index and the recency list name only filled slots")
    }

    /// Stores a session as the most recently used; `id` must not be stored yet.
    pub(super) fn insert(&mut self, entry: Entry) -> u32 {
        let id = entry.id;
        let slot = if let Some(slot) = self.free.pop() {
            self.slots[slot as usize] = Some(entry);
            slot
        } else {
            let slot = u32::try_from(self.slots.len()).expect("fewer than 2^32 sessions a shard");
            self.slots.push(Some(entry));
            slot
        };
        self.index.insert(id, slot);
        self.link_newest(slot);
        slot
    }

    pub(super) fn remove(&mut self, slot: u32) -> Entry {
        self.unlink(slot);
        let entry = self.slots[slot as usize]
            .take()
            .expect("the index and the recency list name only filled slots");
        self.index.remove(&entry.id);
        self.free.push(slot);
        entry
    }

    /// Makes the session the most recently used.
    pub(super) fn touch(&mut self, slot: u32) {
        if self.newest != slot {
            self.unlink(slot);
            self.link_newest(slot);
        }
    }

    /// The least recently used session.
    pub(super) fn oldest(&self) -> Option<u32> {
        (self.oldest != NONE).then_some(self.oldest)
    }

    /// The least recently used session, unless it is `keep`.
    pub(super) fn oldest_but(&self, keep: u32) -> Option<u32> {
        (self.oldest != NONE && self.oldest != keep).then_some(self.oldest)
    }

    /// Removes the expired sessions among the next `slots` slots (all of them for
    /// `usize::MAX`); returns their weight.
    pub(super) fn sweep(&mut self, now: u64, slots: usize) -> u64 {
        let mut freed = 0;
        for _ in 0..slots.min(self.slots.len()) {
            if self.sweep_at >= self.slots.len() {
                self.sweep_at = 0;
            }
            let slot = self.sweep_at;
            self.sweep_at += 1;
            if self.slots[slot]
                .as_ref()
                .is_some_and(|entry| entry.deadline <= now)
            {
                let slot = u32::try_from(slot).expect("slot numbers fit in u32");
                freed += u64::from(self.remove(slot).weight);
            }
        }
        freed
    }

    /// Removes the expired sessions a new one comes across (see [`SWEEP_STEP`]).
    pub(super) fn sweep_step(&mut self, now: u64) -> u64 {
        self.sweep(now, SWEEP_STEP)
    }

    fn link_newest(&mut self, slot: u32) {
        let old_newest = self.newest;
        {
            let entry = self.entry_mut(slot);
            entry.newer = NONE;
            entry.older = old_newest;
        }
        if old_newest == NONE {
            self.oldest = slot;
        } else {
            self.entry_mut(old_newest).newer = slot;
        }
        self.newest = slot;
    }

    fn unlink(&mut self, slot: u32) {
        let (newer, older) = {
            let entry = self.entry(slot);
            (entry.newer, entry.older)
        };
        if newer == NONE {
            self.newest = older;
        } else {
            self.entry_mut(newer).older = older;
        }
        if older == NONE {
            self.oldest = newer;
        } else {
            self.entry_mut(older).newer = newer;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SessionId;

    fn add(shard: &mut Shard, deadline: u64) -> (PackedId, u32) {
        let id = PackedId::from(&SessionId::generate());
        let slot = shard.insert(Entry::new(id, Fields::default(), deadline, 1));
        (id, slot)
    }

    /// The order the recency list gives, oldest first, checked against its links both ways.
    fn order(shard: &Shard) -> Vec<u32> {
        let mut forward = Vec::new();
        let mut at = shard.oldest;
        while at != NONE {
            forward.push(at);
            at = shard.entry(at).newer;
        }
        let mut backward = Vec::new();
        let mut at = shard.newest;
        while at != NONE {
            backward.push(at);
            at = shard.entry(at).older;
        }
        backward.reverse();
        assert_eq!(forward, backward, "the links disagree");
        assert_eq!(forward.len(), shard.len());
        forward
    }

    #[test]
    fn a_slot_and_an_index_entry_take_the_bytes_the_docs_say() {
        assert_eq!(std::mem::size_of::<Option<Entry>>(), 56);
        assert_eq!(std::mem::size_of::<(PackedId, u32)>(), 24);
    }

    #[test]
    fn sessions_are_kept_from_least_to_most_recently_used() {
        let mut shard = Shard::new(Hasher::default());
        let (_, a) = add(&mut shard, 10);
        let (_, b) = add(&mut shard, 10);
        let (c_id, c) = add(&mut shard, 10);
        assert_eq!(order(&shard), [a, b, c]);
        shard.touch(a);
        assert_eq!(order(&shard), [b, c, a]);
        assert_eq!(shard.oldest_but(c), Some(b));
        assert_eq!(shard.oldest_but(b), None, "the one to keep is not offered");
        shard.remove(c);
        assert_eq!(order(&shard), [b, a]);
        assert_eq!(shard.find(&c_id, 0), (None, 0));
        let (_, d) = add(&mut shard, 10);
        assert_eq!(d, c, "a freed slot is filled again");
        assert_eq!(order(&shard), [b, a, d]);
        shard.remove(b);
        shard.remove(a);
        shard.remove(d);
        assert!(order(&shard).is_empty());
        assert_eq!(shard.oldest_but(NONE), None);
    }

    #[test]
    fn expired_sessions_are_found_gone_and_swept() {
        let mut shard = Shard::new(Hasher::default());
        let (early, _) = add(&mut shard, 5);
        let (late, late_slot) = add(&mut shard, 50);
        assert_eq!(shard.find(&early, 4).0.map(|_| ()), Some(()));
        assert_eq!(shard.find(&early, 5), (None, 1), "removed, weight returned");
        assert_eq!(shard.len(), 1);
        for _ in 0..10 {
            add(&mut shard, 20);
        }
        assert_eq!(shard.sweep(20, usize::MAX), 10);
        assert_eq!(order(&shard), [late_slot]);
        assert_eq!(shard.find(&late, 20), (Some(late_slot), 0));
    }

    #[test]
    fn new_sessions_sweep_the_shard_as_they_come() {
        let mut shard = Shard::new(Hasher::default());
        for _ in 0..100 {
            add(&mut shard, 5);
        }
        let mut freed = 0;
        for _ in 0..100 {
            freed += shard.sweep_step(10);
            add(&mut shard, 50);
        }
        assert_eq!(freed, 100, "every expired session swept");
        assert_eq!(shard.len(), 100);
    }
}

//! A session's keys and values in one string: the memory store's compact record.

use std::ops::Range;

use crate::storage::{ChangeSet, Record, SessionMap};

/// A session's keys and values, in one allocation: each pair as
/// `<key length>:<key><value length>:<value>`, the lengths in decimal, in no particular
/// order.
///
/// A one-key session (`foo` = `1`) takes one 32-byte heap block where a list of
/// `(String, String)` took four blocks of 128 bytes in all (the list's and one per string).
/// The lengths are text so that the record stays a `str`: a key or value read from it is a
/// slice, with no UTF-8 check.
#[derive(Clone, Default)]
pub(super) struct Fields(Box<str>);

/// Where one pair sits in a record's text.
struct Pair {
    /// The pair, from the first digit of its key's length to the end of its value.
    whole: Range<usize>,
    key: Range<usize>,
    value: Range<usize>,
}

impl Fields {
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn from_map(map: &SessionMap) -> Self {
        let len = map
            .iter()
            .map(|(k, v)| encoded_len(k) + encoded_len(v))
            .sum();
        let mut text = String::with_capacity(len);
        for (key, value) in map {
            push_pair(&mut text, key, value);
        }
        Self(text.into_boxed_str())
    }

    pub(super) fn to_map(&self) -> SessionMap {
        let mut map = SessionMap::with_capacity(self.spans().count());
        map.extend(
            self.pairs()
                .map(|(key, value)| (key.to_owned(), value.to_owned())),
        );
        map
    }

    /// The session's size as the size limit counts it: its keys and JSON values.
    pub(super) fn size(&self) -> usize {
        self.pairs().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// At least the session's size: the length of its text, where the keys and values are
    /// with their lengths.
    pub(super) fn size_bound(&self) -> usize {
        self.0.len()
    }

    /// The size once `changes` are applied; of a key named twice, the last change counts,
    /// as when they are applied.
    pub(super) fn size_after(&self, changes: &ChangeSet) -> usize {
        let mut size = self.size();
        let changes = changes.changes();
        for (i, change) in changes.iter().enumerate() {
            if changes[i + 1..]
                .iter()
                .any(|later| later.key() == change.key())
            {
                continue;
            }
            if let Some(old) = self.get(change.key()) {
                size = size.saturating_sub(change.key().len() + old.len());
            }
            if let Some(new) = change.value() {
                size = size.saturating_add(change.key().len() + new.len());
            }
        }
        size
    }

    /// The heap memory the record holds, as the allocator counts it: glibc's malloc hands out
    /// blocks of 16 bytes, 32 at least, 8 of them its own header.
    pub(super) fn heap_bytes(&self) -> usize {
        match self.0.len() {
            0 => 0,
            len => (len + 8).next_multiple_of(16).max(32),
        }
    }

    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        let text = &*self.0;
        self.spans()
            .map(move |pair| (&text[pair.key], &text[pair.value]))
    }

    fn spans(&self) -> impl Iterator<Item = Pair> + '_ {
        let mut at = 0;
        std::iter::from_fn(move || {
            let pair = self.pair_at(at)?;
            at = pair.whole.end;
            Some(pair)
        })
    }

    fn find(&self, key: &str) -> Option<Pair> {
        let text = self.0.as_bytes();
        self.spans()
            .find(|pair| pair.key.len() == key.len() && text[pair.key.clone()] == *key.as_bytes())
    }

    fn pair_at(&self, at: usize) -> Option<Pair> {
        let key = self.item_at(at)?;
        let value = self.item_at(key.end)?;
        Some(Pair {
            whole: at..value.end,
            key,
            value,
        })
    }

    /// The item (key or value) whose length starts at `at`; `None` at the end of the text.
    fn item_at(&self, at: usize) -> Option<Range<usize>> {
        let text = self.0.as_bytes();
        let mut len = 0usize;
        for (i, &byte) in text.get(at..)?.iter().enumerate() {
            if byte == b':' {
                let start = at + i + 1;
                let end = start.checked_add(len)?;
                return (end <= text.len()).then_some(start..end);
            }
            // A digit: the text is the record's own.
            len = len
                .wrapping_mul(10)
                .wrapping_add(usize::from(byte.wrapping_sub(b'0')));
        }
        None
    }

    /// Edits the text as a `String`, then keeps it without spare capacity.
    fn edit(&mut self, edit: impl FnOnce(&mut String)) {
        let mut text = std::mem::take(&mut self.0).into_string();
        edit(&mut text);
        self.0 = text.into_boxed_str();
    }
}

/// Appends a pair, growing the text to fit exactly.
fn push_pair(text: &mut String, key: &str, value: &str) {
    text.reserve_exact(encoded_len(key) + encoded_len(value));
    push_item(text, key);
    push_item(text, value);
}

/// The length of `item` once written: its length's digits, a colon, itself.
fn encoded_len(item: &str) -> usize {
    let digits = item.len().checked_ilog10().unwrap_or(0) + 1;
    digits as usize + 1 + item.len()
}

/// Appends a key or a value, growing the text to fit exactly.
fn push_item(text: &mut String, item: &str) {
    text.reserve_exact(encoded_len(item));
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut len = item.len();
    loop {
        start -= 1;
        // A digit: `len % 10` is below 10.
        digits[start] = b'0' + u8::try_from(len % 10).unwrap_or_default();
        len /= 10;
        if len == 0 {
            break;
        }
    }
    text.extend(digits[start..].iter().map(|&d| char::from(d)));
    text.push(':');
    text.push_str(item);
}

impl Record for Fields {
    fn get(&self, key: &str) -> Option<&str> {
        self.find(key).map(|pair| &self.0[pair.value])
    }

    fn set(&mut self, key: &str, value: &str) {
        match self.find(key) {
            // The last pair: its value is the end of the text. A key set with a value of
            // another length moves there, so a counter is usually there.
            Some(pair) if pair.whole.end == self.0.len() => self.edit(|text| {
                if pair.value.len() == value.len() {
                    text.truncate(pair.value.start);
                    text.push_str(value);
                } else {
                    text.truncate(pair.key.end);
                    push_item(text, value);
                }
            }),
            // Overwrite in place.
            Some(pair) if pair.value.len() == value.len() => {
                self.edit(|text| text.replace_range(pair.value, value));
            }
            Some(pair) => self.edit(|text| {
                text.replace_range(pair.whole, "");
                push_pair(text, key, value);
            }),
            None => self.edit(|text| push_pair(text, key, value)),
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(pair) = self.find(key) {
            self.edit(|text| text.replace_range(pair.whole, ""));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::storage::{ConflictPolicy, KeyChange};

    fn changes(list: &[(&str, Option<&str>)]) -> ChangeSet {
        let list = list
            .iter()
            .map(|(k, v)| KeyChange::new((*k).into(), v.map(Into::into), None))
            .collect();
        ChangeSet::new(list, ConflictPolicy::LastWriteWins, Duration::from_secs(60))
    }

    fn map(pairs: &[(&str, &str)]) -> SessionMap {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_record_keeps_any_keys_and_values() {
        let tricky = map(&[
            ("", "\"\""),
            ("1:a", "10:x"),
            ("ключ", "\"значение\""),
            ("long", &format!("\"{}\"", "y".repeat(300))),
        ]);
        let fields = Fields::from_map(&tricky);
        assert_eq!(fields.to_map(), tricky);
        assert_eq!(fields.get("1:a"), Some("10:x"));
        assert_eq!(fields.get("1"), None);
        assert_eq!(fields.get("ключ"), Some("\"значение\""));
    }

    #[test]
    fn changes_set_overwrite_and_remove_keys() {
        let mut fields = Fields::from_map(&map(&[("a", "1"), ("b", "2")]));
        changes(&[("a", Some("9")), ("b", Some("10")), ("c", Some("[]"))]).apply_to(&mut fields);
        assert_eq!(
            fields.to_map(),
            map(&[("a", "9"), ("b", "10"), ("c", "[]")])
        );
        changes(&[("b", None), ("absent", None)]).apply_to(&mut fields);
        assert_eq!(fields.to_map(), map(&[("a", "9"), ("c", "[]")]));
        changes(&[("a", None), ("c", None)]).apply_to(&mut fields);
        assert!(fields.is_empty());
        assert_eq!(fields.heap_bytes(), 0);
    }

    #[test]
    fn a_one_key_session_takes_one_small_block() {
        let fields = Fields::from_map(&map(&[("foo", "1")]));
        assert_eq!(&*fields.0, "3:foo1:1");
        assert_eq!(fields.heap_bytes(), 32);
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

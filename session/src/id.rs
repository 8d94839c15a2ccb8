//! Session ids: generation and strict parsing.

use std::fmt;

/// Length of a session id in characters: a UUID in simple form.
const ID_LEN: usize = 32;

/// A session id: 32 lowercase hexadecimal characters, a random UUID v4 in simple form.
///
/// This is the form `sanic_session` issues (`uuid.uuid4().hex`), so sessions written by a
/// Python app can be read by this crate and the other way round.
///
/// A `SessionId` can only be made by [`SessionId::generate`] or by a successful
/// [`SessionId::parse`], so anything holding one holds a value that is safe to put in a
/// store key: no whitespace, no control characters, fixed length.
///
/// ```
/// use actix_kv_session::SessionId;
///
/// let id = SessionId::generate();
/// assert_eq!(SessionId::parse(&id.to_string()), Some(id));
/// // Ids are bearer credentials: `Debug` prints only their first characters.
/// assert!(!format!("{id:?}").contains(id.as_str()));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId([u8; ID_LEN]);

impl SessionId {
    /// The length of an id, in characters (and bytes).
    ///
    /// ```
    /// use actix_kv_session::SessionId;
    ///
    /// assert_eq!(SessionId::generate().as_str().len(), SessionId::LEN);
    /// ```
    pub const LEN: usize = ID_LEN;

    /// Makes a fresh random id (UUID v4, 122 random bits from the operating system's
    /// generator).
    ///
    /// ```
    /// use actix_kv_session::SessionId;
    ///
    /// let id = SessionId::generate();
    /// assert_ne!(id, SessionId::generate());
    /// assert_eq!(&id.as_str()[12..13], "4"); // the UUID version
    /// ```
    #[must_use]
    pub fn generate() -> Self {
        let mut buf = [0u8; ID_LEN];
        uuid::Uuid::new_v4().simple().encode_lower(&mut buf);
        Self(buf)
    }

    /// Parses an id as it comes from a cookie.
    ///
    /// Only exactly 32 characters from `0-9a-f` are accepted: no uppercase, no
    /// surrounding whitespace, no quoting. Everything else is `None`, and the caller treats
    /// it as if no cookie had been sent.
    ///
    /// ```
    /// use actix_kv_session::SessionId;
    ///
    /// assert!(SessionId::parse("0123456789abcdef0123456789abcdef").is_some());
    /// assert!(SessionId::parse("0123456789ABCDEF0123456789ABCDEF").is_none());
    /// assert!(SessionId::parse(" 0123456789abcdef0123456789abcdef").is_none());
    /// assert!(SessionId::parse("../../etc/passwd").is_none());
    /// ```
    #[must_use]
    pub fn parse(value: &str) -> Option<Self> {
        Self::parse_bytes(value.as_bytes())
    }

    /// An id for the library's own records (a user's index), derived from `digest`: `;`,
    /// then `tag`, then 30 hex digits of the digest. No cookie can carry it: `;` separates
    /// cookies in a `Cookie` header, so neither [`parse`](Self::parse) (hex digits only) nor
    /// a library that takes any cookie value as an id (`sanic_session`, sharing the store
    /// during a migration) can be made to read it.
    pub(crate) fn derived(tag: u8, digest: &[u8]) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        debug_assert!(tag.is_ascii_lowercase());
        let mut buf = [tag; ID_LEN];
        buf[0] = b';';
        for (i, slot) in buf[2..].iter_mut().enumerate() {
            let byte = digest.get(i / 2).copied().unwrap_or_default();
            let nibble = if i % 2 == 0 { byte >> 4 } else { byte & 0xf };
            *slot = HEX[usize::from(nibble)];
        }
        Self(buf)
    }

    /// [`SessionId::parse`] on raw bytes, as they come in a header.
    pub(crate) fn parse_bytes(bytes: &[u8]) -> Option<Self> {
        let buf: [u8; ID_LEN] = bytes.try_into().ok()?;
        // Branch-free per byte, so the check runs on whole vectors.
        let valid = buf.iter().fold(true, |ok, &b| {
            ok & ((b.wrapping_sub(b'0') < 10) | (b.wrapping_sub(b'a') < 6))
        });
        valid.then_some(Self(buf))
    }

    /// The id as text.
    ///
    /// ```
    /// use actix_kv_session::SessionId;
    ///
    /// let id = SessionId::parse("0123456789abcdef0123456789abcdef").unwrap();
    /// let key = format!("session:{}", id.as_str());
    /// assert_eq!(key, "session:0123456789abcdef0123456789abcdef");
    /// ```
    ///
    /// # Panics
    ///
    /// Never: the only ways to make a `SessionId` store ASCII lowercase letters and
    /// digits.
    #[must_use]
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("session ids hold only ASCII letters and digits")
    }
}

/// A [`SessionId`] in 17 bytes instead of 32, as the memory store keys its sessions: the
/// hexadecimal digits as bytes, two to a byte, and a first byte that tells the forms apart
/// (0 for a parsed or generated id, the tag for a [derived](SessionId::derived) one, whose
/// `;` and tag are not digits). Two ids pack alike only if they are equal.
#[cfg(feature = "memory")]
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct PackedId([u8; 17]);

#[cfg(feature = "memory")]
impl std::hash::Hash for PackedId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As two words, not as a slice of bytes: a fast hasher takes a word at once.
        let [tag, digits @ ..] = self.0;
        state.write_u128(u128::from_le_bytes(digits));
        state.write_u8(tag);
    }
}

#[cfg(feature = "memory")]
impl From<&SessionId> for PackedId {
    fn from(id: &SessionId) -> Self {
        /// The value of a hex digit: `0-9` are 0x30-0x39 and `a-f` are 0x61-0x66, so the low
        /// four bits are the value, less 9 for letters (bit 6 set). Branch-free, so it runs
        /// on whole vectors; the `;` and tag of a derived id give some byte, the same for
        /// every id with that tag.
        fn nibble(c: u8) -> u8 {
            (c & 0xf) + 9 * (c >> 6)
        }
        let mut packed = [0u8; 17];
        packed[0] = if id.0[0] == b';' { id.0[1] } else { 0 };
        for (byte, pair) in packed[1..].iter_mut().zip(id.0.chunks_exact(2)) {
            *byte = (nibble(pair[0]) << 4) | nibble(pair[1]);
        }
        Self(packed)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Ids are bearer credentials: keep them out of logs that print debug output.
        write!(f, "SessionId({}…)", &self.as_str()[..6])
    }
}

impl AsRef<str> for SessionId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::SessionId;

    #[test]
    fn generated_ids_are_uuid_v4_simple() {
        let id = SessionId::generate();
        let s = id.as_str();
        assert_eq!(s.len(), 32);
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(&s[12..13], "4", "version nibble");
        assert!(
            matches!(&s[16..17], "8" | "9" | "a" | "b"),
            "variant nibble"
        );
        assert_eq!(SessionId::parse(s), Some(id));
        assert_ne!(SessionId::generate(), id);
    }

    #[test]
    fn parse_rejects_anything_but_32_lowercase_hex() {
        let good = "0123456789abcdef0123456789abcdef";
        assert!(SessionId::parse(good).is_some());
        for bad in [
            "",
            "../x",
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            " 0123456789abcdef0123456789abcdef",
            "0123456789abcdef 123456789abcdef",
            "0123456789abcdef\r\n23456789abcdef",
            "0123456789abcdeg0123456789abcdef",
            "\"0123456789abcdef0123456789abcde\"",
            "é123456789abcdef0123456789abcde",
        ] {
            assert!(SessionId::parse(bad).is_none(), "{bad:?} was accepted");
        }
        assert!(SessionId::parse(&"a".repeat(1000)).is_none());
    }

    #[cfg(feature = "memory")]
    #[test]
    fn packed_ids_differ_when_ids_differ() {
        use super::PackedId;

        let hex = |s: &str| PackedId::from(&SessionId::parse(s).unwrap());
        let a = "0123456789abcdef0123456789abcdef";
        assert!(hex(a) == hex(a));
        // Every digit counts, whichever half of its byte it lands in.
        for at in 0..32 {
            let mut other = a.as_bytes().to_vec();
            other[at] = if other[at] == b'f' { b'0' } else { b'f' };
            assert!(
                hex(a) != hex(std::str::from_utf8(&other).unwrap()),
                "digit {at}"
            );
        }
        // A derived id never packs as a parsed one, nor as one with another tag, even when
        // their digits agree.
        let digest = [0xab; 15];
        let derived = PackedId::from(&SessionId::derived(b'u', &digest));
        assert!(derived == PackedId::from(&SessionId::derived(b'u', &digest)));
        assert!(derived != PackedId::from(&SessionId::derived(b'v', &digest)));
        assert!(derived != hex("ababababababababababababababab00"));
        assert!(derived != hex("00abababababababababababababab00"));
        assert!(derived != hex("00ababababababababababababababab"));
    }

    #[test]
    fn debug_does_not_print_the_whole_id() {
        let id = SessionId::parse("0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(format!("{id:?}"), "SessionId(012345…)");
    }
}

//! Signed session cookies: the cookie carries the id and an HMAC-SHA256 of it,
//! `ID.SIGNATURE` (the signature in unpadded base64url), so that a forged or altered cookie
//! is refused before the store is asked, and an id that leaks without its signature (from
//! a log line, a store dump) is useless. Keys rotate: the first of a list signs, any
//! verifies.

use std::fmt;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::SessionId;

type HmacSha256 = Hmac<Sha256>;

/// The length of a signature in the cookie: 32 bytes in unpadded base64url.
const SIGNATURE_LEN: usize = 43;

/// A key that signs session cookies: see
/// [`SessionMiddlewareBuilder::signing_keys`](crate::SessionMiddlewareBuilder::signing_keys).
///
/// Make it from at least 32 random bytes kept secret, the same in every instance of the app
/// (from a secret store or an environment variable); [`generate`](Self::generate) makes one
/// for tests or a single process whose sessions may end with it.
///
/// ```
/// use actix_kv_session::SigningKey;
///
/// let key = SigningKey::from_bytes(&[7; 32]).expect("32 bytes or more");
/// assert!(SigningKey::from_bytes(b"too short").is_err());
/// ```
#[derive(Clone)]
pub struct SigningKey {
    mac: HmacSha256,
}

/// Why bytes cannot be a [`SigningKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a session signing key needs at least 32 bytes, got {0}")]
pub struct SigningKeyError(usize);

impl SigningKey {
    /// The fewest bytes a key may have: HMAC-SHA256's output size.
    pub const MIN_LEN: usize = 32;

    /// A key from `bytes`, which must be at least [`MIN_LEN`](Self::MIN_LEN) long.
    ///
    /// # Errors
    ///
    /// [`SigningKeyError`] for fewer bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SigningKeyError> {
        if bytes.len() < Self::MIN_LEN {
            return Err(SigningKeyError(bytes.len()));
        }
        let mac = HmacSha256::new_from_slice(bytes).map_err(|_| SigningKeyError(bytes.len()))?;
        Ok(Self { mac })
    }

    /// A random key (64 bytes from the operating system's generator). Sessions signed with
    /// it end with the process: for tests and single-process development.
    #[must_use]
    pub fn generate() -> Self {
        let mut bytes = Vec::with_capacity(64);
        for _ in 0..4 {
            bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        }
        Self::from_bytes(&bytes).unwrap_or_else(|_| unreachable!("64 bytes"))
    }

    fn mac_of(&self, id: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(id);
        mac
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

/// The keys of a middleware: the first signs, any verifies.
#[derive(Clone)]
pub(crate) struct Signer {
    keys: Vec<SigningKey>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Signer {
    /// The signer of `keys`; `None` for no key.
    pub(crate) fn new(keys: Vec<SigningKey>) -> Option<Self> {
        (!keys.is_empty()).then_some(Self { keys })
    }

    /// The cookie value for `id`: `ID.SIGNATURE`, signed with the first key.
    pub(crate) fn value(&self, id: &SessionId) -> String {
        let tag = self.keys[0].mac_of(id.as_str().as_bytes()).finalize();
        let mut value = String::with_capacity(SessionId::LEN + 1 + SIGNATURE_LEN);
        value.push_str(id.as_str());
        value.push('.');
        URL_SAFE_NO_PAD.encode_string(tag.into_bytes(), &mut value);
        value
    }

    /// The id a cookie value carries, if its signature is one of the keys' over it (checked
    /// in constant time); `None` for anything else.
    pub(crate) fn verify(&self, value: &[u8]) -> Option<SessionId> {
        let dot = value.iter().position(|&b| b == b'.')?;
        let (id, signature) = (&value[..dot], &value[dot + 1..]);
        if signature.len() != SIGNATURE_LEN {
            return None;
        }
        let id = SessionId::parse_bytes(id)?;
        let tag = URL_SAFE_NO_PAD.decode(signature).ok()?;
        self.keys
            .iter()
            .any(|key| {
                key.mac_of(id.as_str().as_bytes())
                    .verify_slice(&tag)
                    .is_ok()
            })
            .then_some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SigningKey {
        SigningKey::from_bytes(&[byte; 32]).unwrap()
    }

    #[test]
    fn a_signed_value_verifies_and_nothing_else_does() {
        let signer = Signer::new(vec![key(1)]).unwrap();
        let id = SessionId::generate();
        let value = signer.value(&id);
        assert_eq!(value.len(), SessionId::LEN + 1 + SIGNATURE_LEN);
        assert_eq!(signer.verify(value.as_bytes()), Some(id));

        let other = SessionId::generate();
        let signature = &value[SessionId::LEN..];
        let forged = format!("{other}{signature}");
        assert_eq!(signer.verify(forged.as_bytes()), None, "another id");
        let mut altered = value.clone().into_bytes();
        let last = altered.len() - 2;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(signer.verify(&altered), None, "an altered signature");
        for bad in [
            id.as_str().to_owned(),
            format!("{id}."),
            format!("{id}.{}", "A".repeat(44)),
        ] {
            assert_eq!(signer.verify(bad.as_bytes()), None, "{bad}");
        }
        let stranger = Signer::new(vec![key(2)]).unwrap();
        assert_eq!(stranger.verify(value.as_bytes()), None, "another key");
    }

    #[test]
    fn the_first_key_signs_and_any_verifies() {
        let old = Signer::new(vec![key(1)]).unwrap();
        let rotated = Signer::new(vec![key(2), key(1)]).unwrap();
        let id = SessionId::generate();
        assert_eq!(rotated.verify(old.value(&id).as_bytes()), Some(id));
        let resigned = rotated.value(&id);
        assert_ne!(resigned, old.value(&id));
        assert_eq!(old.verify(resigned.as_bytes()), None);
        assert_eq!(
            Signer::new(vec![key(2)])
                .unwrap()
                .verify(resigned.as_bytes()),
            Some(id)
        );
    }

    #[test]
    fn short_keys_are_refused_and_keys_do_not_print() {
        assert_eq!(
            SigningKey::from_bytes(&[0; 31]).unwrap_err(),
            SigningKeyError(31)
        );
        assert_eq!(format!("{:?}", key(1)), "SigningKey(..)");
        assert!(Signer::new(Vec::new()).is_none());
        let _ = SigningKey::generate();
    }
}

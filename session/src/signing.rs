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

/// The length of a signed cookie's value, `ID.SIGNATURE`.
pub(crate) const SIGNED_VALUE_LEN: usize = SessionId::LEN + 1 + SIGNATURE_LEN;

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
///
/// ```
/// use actix_kv_session::{SigningKey, SigningKeyError};
///
/// let err: SigningKeyError = SigningKey::from_bytes(b"too short").unwrap_err();
/// assert_eq!(err.to_string(), "a session signing key needs at least 32 bytes, got 9");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a session signing key needs at least 32 bytes, got {0}")]
pub struct SigningKeyError(usize);

impl SigningKey {
    /// The fewest bytes a key may have: HMAC-SHA256's output size.
    ///
    /// ```
    /// use actix_kv_session::SigningKey;
    ///
    /// assert!(SigningKey::from_bytes(&[7; SigningKey::MIN_LEN]).is_ok());
    /// assert!(SigningKey::from_bytes(&[7; SigningKey::MIN_LEN - 1]).is_err());
    /// ```
    pub const MIN_LEN: usize = 32;

    /// A key from `bytes`, which must be at least [`MIN_LEN`](Self::MIN_LEN) long.
    ///
    /// # Errors
    ///
    /// [`SigningKeyError`] for fewer bytes.
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, SessionMiddleware, SigningKey};
    ///
    /// # fn secret_store(_: &str) -> Vec<u8> { vec![42; 64] }
    /// // The same secret in every instance of the app.
    /// let key = SigningKey::from_bytes(&secret_store("session-key"))?;
    /// let middleware = SessionMiddleware::builder(MemoryStore::default())
    ///     .signing_keys([key])
    ///     .build();
    /// # Ok::<(), actix_kv_session::SigningKeyError>(())
    /// ```
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SigningKeyError> {
        if bytes.len() < Self::MIN_LEN {
            return Err(SigningKeyError(bytes.len()));
        }
        let mac = HmacSha256::new_from_slice(bytes).map_err(|_| SigningKeyError(bytes.len()))?;
        Ok(Self { mac })
    }

    /// A random key (64 bytes from four UUIDs v4: 488 random bits from the operating
    /// system's generator). Sessions signed with it end with the process: for tests and
    /// single-process development.
    ///
    /// ```
    /// use actix_kv_session::{storage::MemoryStore, Session, SessionMiddleware, SigningKey};
    /// use actix_web::{test, web, App};
    ///
    /// async fn index(session: Session) -> actix_web::Result<&'static str> {
    ///     session.insert("seen", true)?;
    ///     Ok("hello")
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let middleware = SessionMiddleware::builder(MemoryStore::default())
    ///     .signing_keys([SigningKey::generate()])
    ///     .build();
    /// let app = test::init_service(App::new().wrap(middleware).route("/", web::get().to(index)))
    ///     .await;
    /// let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
    /// let cookie = res.response().cookies().next().unwrap();
    /// // `ID.SIGNATURE`: the id, a dot, the HMAC in 43 characters of base64url.
    /// assert_eq!(cookie.value().len(), 32 + 1 + 43);
    /// # });
    /// ```
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
    #[cfg(test)]
    pub(crate) fn value(&self, id: &SessionId) -> String {
        self.value_reusing(id, None)
    }

    /// Which key signed `cookie`'s id (its index: 0 is the one that signs), if one did
    /// (checked in constant time).
    pub(crate) fn verify(&self, cookie: &SignedCookie) -> Option<usize> {
        let tag = URL_SAFE_NO_PAD.decode(cookie.signature).ok()?;
        self.keys.iter().position(|key| {
            key.mac_of(cookie.id.as_str().as_bytes())
                .verify_slice(&tag)
                .is_ok()
        })
    }

    /// The cookie value for `id`, reusing `current` (the request's cookie, verified with
    /// the first key) when it is for the same id: HMAC is deterministic, so signing again
    /// would give the same bytes. Saves one HMAC on every response that re-sends the cookie
    /// of a session it did not renew.
    pub(crate) fn value_reusing(&self, id: &SessionId, current: Option<&SignedCookie>) -> String {
        let mut value = String::with_capacity(SIGNED_VALUE_LEN);
        self.write_value(id, current, &mut value);
        value
    }

    /// Appends [`value_reusing`](Self::value_reusing)'s value to `out`: a `Set-Cookie`
    /// header is built in one buffer.
    pub(crate) fn write_value(
        &self,
        id: &SessionId,
        current: Option<&SignedCookie>,
        out: &mut String,
    ) {
        out.push_str(id.as_str());
        out.push('.');
        match current {
            Some(cookie) if cookie.id == *id => {
                out.extend(cookie.signature.iter().map(|&b| char::from(b)));
            }
            _ => {
                let tag = self.keys[0].mac_of(id.as_str().as_bytes()).finalize();
                URL_SAFE_NO_PAD.encode_string(tag.into_bytes(), out);
            }
        }
    }
}

/// A signed cookie's value split into its id and signature, before the signature is
/// checked: reading the cookie is a byte scan on every request, and the HMAC runs only for
/// requests that use their session (see [`Signer::verify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SignedCookie {
    pub(crate) id: SessionId,
    signature: [u8; SIGNATURE_LEN],
}

impl SignedCookie {
    /// `ID.SIGNATURE` split, if the value has that shape.
    pub(crate) fn parse(value: &[u8]) -> Option<Self> {
        let (id, rest) = value.split_at_checked(SessionId::LEN)?;
        let signature = rest.strip_prefix(b".")?.try_into().ok()?;
        Some(Self {
            id: SessionId::parse_bytes(id)?,
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SigningKey {
        SigningKey::from_bytes(&[byte; 32]).unwrap()
    }

    impl Signer {
        /// The id of a cookie value whose signature verifies.
        fn check(&self, value: &[u8]) -> Option<SessionId> {
            let cookie = SignedCookie::parse(value)?;
            self.verify(&cookie).map(|_| cookie.id)
        }
    }

    #[test]
    fn a_signed_value_verifies_and_nothing_else_does() {
        let signer = Signer::new(vec![key(1)]).unwrap();
        let id = SessionId::generate();
        let value = signer.value(&id);
        assert_eq!(value.len(), SessionId::LEN + 1 + SIGNATURE_LEN);
        assert_eq!(signer.check(value.as_bytes()), Some(id));

        let other = SessionId::generate();
        let signature = &value[SessionId::LEN..];
        let forged = format!("{other}{signature}");
        assert_eq!(signer.check(forged.as_bytes()), None, "another id");
        let mut altered = value.clone().into_bytes();
        let last = altered.len() - 2;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(signer.check(&altered), None, "an altered signature");
        for bad in [
            id.as_str().to_owned(),
            format!("{id}."),
            format!("{id}.{}", "A".repeat(44)),
        ] {
            assert_eq!(signer.check(bad.as_bytes()), None, "{bad}");
        }
        let stranger = Signer::new(vec![key(2)]).unwrap();
        assert_eq!(stranger.check(value.as_bytes()), None, "another key");
    }

    #[test]
    fn the_first_key_signs_and_any_verifies() {
        let old = Signer::new(vec![key(1)]).unwrap();
        let rotated = Signer::new(vec![key(2), key(1)]).unwrap();
        let id = SessionId::generate();
        assert_eq!(rotated.check(old.value(&id).as_bytes()), Some(id));
        let resigned = rotated.value(&id);
        assert_ne!(resigned, old.value(&id));
        assert_eq!(old.check(resigned.as_bytes()), None);
        assert_eq!(
            Signer::new(vec![key(2)])
                .unwrap()
                .check(resigned.as_bytes()),
            Some(id)
        );
    }

    #[test]
    fn a_verified_signature_is_reused_for_its_id_only() {
        let signer = Signer::new(vec![key(1), key(2)]).unwrap();
        let id = SessionId::generate();
        let value = signer.value(&id);
        let cookie = SignedCookie::parse(value.as_bytes()).unwrap();
        assert_eq!(signer.verify(&cookie), Some(0));
        assert_eq!(signer.value_reusing(&id, Some(&cookie)), value);
        let other = SessionId::generate();
        assert_eq!(
            signer.value_reusing(&other, Some(&cookie)),
            signer.value(&other)
        );
        let old = Signer::new(vec![key(2)]).unwrap().value(&id);
        let old = SignedCookie::parse(old.as_bytes()).unwrap();
        assert_eq!(signer.verify(&old), Some(1), "the old key");
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

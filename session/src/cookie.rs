//! The session cookie on the wire: read from a request's `Cookie` headers, and the
//! `Set-Cookie` headers that set or remove it. Both run on hot paths, so both are cheaper
//! than doing the same with actix-web's `Cookie` type; the tests below check the template
//! against what that type renders, and the scan against the cases browsers send.

use actix_web::http::header::{HeaderMap, HeaderValue, InvalidHeaderValue, COOKIE};

use crate::{
    config::SessionConfig,
    session::CookieState,
    signing::{SignedCookie, Signer, SIGNED_VALUE_LEN},
    SessionId,
};

/// The session cookie's value in the request, checked: the first cookie with our name
/// decides, as browsers send the most specific one first. The value must be the id exactly
/// as this middleware sets it (no quotes, no percent-encoding).
///
/// A scan over the header's bytes that looks only at our cookie, run when a request first
/// uses its session: parsing each `name=value` pair with actix-web's `Cookie::parse` instead
/// cost about 1,100 more instructions per request (callgrind, `bench/callgrind.py`: the
/// `/noop` route of the memory store, when the cookie was read on every request: 21,751 with
/// the scan, 22,893 with the parser). The pairs are split with `memchr`, which looks at many
/// bytes at a time: 289 instructions for the `/counter` of the memory store, 461 with a
/// byte-by-byte split (callgrind, per function). (actix-web's `HttpRequest::cookies` also
/// gives up on the whole header when any one cookie in it is malformed.)
///
/// With a `signer`, the value must have the shape `ID.SIGNATURE`
/// ([`CookieState::Signed`], its signature checked when the session is used): anything else
/// is [`CookieState::Invalid`], and never reaches the store.
pub(crate) fn read_session_cookie(
    headers: &HeaderMap,
    name: &str,
    signer: Option<&Signer>,
) -> CookieState {
    let Some(value) = cookie_value(headers, name) else {
        return CookieState::Absent;
    };
    match signer {
        None => SessionId::parse_bytes(value).map(CookieState::Valid),
        // The signature is checked when the session is used.
        Some(_) => SignedCookie::parse(value).map(CookieState::Signed),
    }
    .unwrap_or(CookieState::Invalid)
}

/// The value of the first cookie named `name` in the request's `Cookie` headers.
pub(crate) fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    let name = name.as_bytes();
    headers
        .get_all(COOKIE)
        .find_map(|header| pair_value(header.as_bytes(), name))
}

/// The value of the first `name=value` pair of one `Cookie` header, blanks around the name
/// and the value ignored.
fn pair_value<'h>(header: &'h [u8], name: &[u8]) -> Option<&'h [u8]> {
    let mut rest = header;
    loop {
        let (pair, next) = match memchr::memchr(b';', rest) {
            Some(end) => (&rest[..end], Some(&rest[end + 1..])),
            None => (rest, None),
        };
        if let Some(value) = pair
            .trim_ascii_start()
            .strip_prefix(name)
            .and_then(|after| after.trim_ascii_start().strip_prefix(b"="))
        {
            return Some(value.trim_ascii());
        }
        rest = next?;
    }
}

/// The `Set-Cookie` headers of a middleware, rendered from its settings once, when it is
/// built: a session cookie is a head, the id, and a tail; the removal never changes.
///
/// Rendering actix-web's `Cookie` for each response instead costs about 3,400 more
/// instructions on a request that sets the cookie (callgrind, `bench/callgrind.py`: the
/// memory store's `/counter`, which sets it on every request: 31,874 with the template,
/// 35,270 rendering), 11% of the request. The
/// template is made from that same `Cookie`, and checked to be a valid header when the
/// middleware is built; the id adds only hex digits.
#[derive(Debug)]
pub(crate) struct SetCookie {
    head: String,
    tail: String,
    removal: HeaderValue,
    signer: Option<Signer>,
}

impl SetCookie {
    /// The headers for `config`; a message naming the problem if they are not valid
    /// headers.
    pub(crate) fn new(config: &SessionConfig) -> Result<Self, String> {
        let placeholder = SessionId::generate();
        let rendered = config.session_cookie(&placeholder).to_string();
        let (head, tail) = rendered
            .split_once(placeholder.as_str())
            .ok_or_else(|| format!("the session cookie {rendered:?} does not hold its id"))?;
        let header = |text: &str| {
            HeaderValue::try_from(text)
                .map_err(|_| format!("the session cookie {text:?} is not a valid header"))
        };
        header(&rendered)?;
        let removal = header(&config.removal_cookie().to_string())?;
        Ok(Self {
            head: head.to_owned(),
            tail: tail.to_owned(),
            removal,
            signer: config.signer.clone(),
        })
    }

    /// The cookie's value for `id`: the id, or `ID.SIGNATURE` when cookies are signed (the
    /// request's own verified signature, `current`, when it is for `id`).
    pub(crate) fn value(&self, id: &SessionId, current: Option<&SignedCookie>) -> String {
        match &self.signer {
            None => id.as_str().to_owned(),
            Some(signer) => signer.value_reusing(id, current),
        }
    }

    /// The header that sets the cookie to `id`.
    ///
    /// Built in a buffer of exactly its length: `Bytes` then takes the buffer as it is,
    /// where a larger one costs it an allocation of its own (callgrind, `bench/callgrind.py`:
    /// 167 instructions of the memory store's `/counter`, 32,069 to 31,902).
    ///
    /// # Errors
    ///
    /// Never in practice: the template was checked when the middleware was built. The
    /// middleware answers 500 if it ever happens.
    pub(crate) fn set(
        &self,
        id: &SessionId,
        current: Option<&SignedCookie>,
    ) -> Result<HeaderValue, InvalidHeaderValue> {
        let value_len = match self.signer {
            None => SessionId::LEN,
            Some(_) => SIGNED_VALUE_LEN,
        };
        let mut header = String::with_capacity(self.head.len() + value_len + self.tail.len());
        header.push_str(&self.head);
        match &self.signer {
            None => header.push_str(id.as_str()),
            Some(signer) => signer.write_value(id, current, &mut header),
        }
        header.push_str(&self.tail);
        debug_assert_eq!(header.len(), header.capacity());
        HeaderValue::try_from(header)
    }

    /// The header that removes the cookie.
    pub(crate) fn removal(&self) -> HeaderValue {
        self.removal.clone()
    }
}

#[cfg(test)]
mod tests {
    use actix_web::{
        cookie::SameSite,
        http::header::{HeaderName, HeaderValue},
    };

    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(
                HeaderName::from_static("cookie"),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn reads_our_cookie_among_others() {
        let id = SessionId::parse(ID).unwrap();
        for header in [
            vec![format!("a=1; session={ID}; b=2")],
            vec!["a=1".to_owned(), format!("session={ID}")],
            vec![format!("  session = {ID} ;x")],
            vec![format!("junk; =x; session={ID}")],
            vec![format!("x=session={ID}; session={ID}")],
            vec![format!("a=1;session={ID};b=2")],
            vec!["a=1; b=2".to_owned(), format!("c=3; session={ID}")],
        ] {
            let header: Vec<&str> = header.iter().map(String::as_str).collect();
            assert_eq!(
                read_session_cookie(&headers(&header), "session", None),
                CookieState::Valid(id),
                "{header:?}"
            );
        }
        assert_eq!(
            read_session_cookie(&headers(&["sessionx=1; xsession=2"]), "session", None),
            CookieState::Absent
        );
        assert_eq!(
            read_session_cookie(&headers(&[]), "session", None),
            CookieState::Absent
        );
        let first = format!("session={ID}; session=ffffffffffffffffffffffffffffffff");
        assert_eq!(
            read_session_cookie(&headers(&[&first]), "session", None),
            CookieState::Valid(id),
            "the first one decides"
        );
    }

    #[test]
    fn malformed_values_are_invalid() {
        for value in [
            "",
            "../x",
            "ABCDEF0123456789ABCDEF0123456789",
            "\"x\"",
            "%0D%0A",
            &format!("\"{ID}\""),
            &format!("{}%61", &ID[..31]),
            &format!("{} {}", &ID[..16], &ID[16..]),
        ] {
            let got =
                read_session_cookie(&headers(&[&format!("session={value}")]), "session", None);
            assert_eq!(got, CookieState::Invalid, "{value:?}");
        }
    }

    #[test]
    fn the_template_renders_what_actix_web_renders() {
        let configs = [
            SessionConfig::default(),
            SessionConfig {
                cookie_name: "__Host-s".into(),
                browser_session: true,
                same_site: SameSite::Strict,
                ..SessionConfig::default()
            },
            SessionConfig {
                domain: Some("example.com".into()),
                path: "/app".into(),
                http_only: false,
                secure: false,
                ..SessionConfig::default()
            },
            SessionConfig {
                signer: Signer::new(vec![crate::SigningKey::generate()]),
                ..SessionConfig::default()
            },
        ];
        for config in configs {
            let headers = SetCookie::new(&config).unwrap();
            let id = SessionId::generate();
            // `set` checks, in debug builds, that its buffer was exactly the header's length.
            let value = headers.value(&id, None);
            assert_eq!(
                headers.set(&id, None).unwrap(),
                config
                    .cookie_with(value, config.ttl, config.browser_session)
                    .to_string()
                    .as_str()
            );
            assert_eq!(
                headers.removal(),
                config.removal_cookie().to_string().as_str()
            );
        }
    }
}

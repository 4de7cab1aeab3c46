//! Whose a page version is, and whether it may be kept at all.
//!
//! A delta is only as private as its base: the size of user B's page encoded against user A's
//! says how much of B's page A's holds (a guessed token that matches A's encodes shorter). So a
//! request that carries credentials has versions of its own: the edge keys them by URL and a
//! keyed hash of those credentials ([`UserKeys`]), and tells the origin ([`Versions`]) so that
//! both ends apply the same rules to what the response says ([`keep`]):
//!
//! * `Cache-Control: no-store` is kept by neither end (not stored, never a base), unless the
//!   operator opted the host in;
//! * `private`, or a `Set-Cookie`, makes a response one user's: kept only under a user's key;
//! * anything else is kept under the request's key: the user's, or the URL's for everyone.

use pingora_http::{RequestHeader, ResponseHeader};
use ring::hmac;

use crate::http_util::header_str;

/// Where a request's version lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One version per URL, for every request without credentials (and for paths the operator
    /// declared the same for everyone).
    Shared,
    /// One version per URL and user.
    User,
}

/// What the edge tells the origin about a request's versions (`railproxy-versions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    pub scope: Scope,
    /// The operator opted this host into keeping `no-store` responses.
    pub keep_no_store: bool,
}

impl Default for Versions {
    /// What an edge that says nothing gets: shared versions, `no-store` honoured.
    fn default() -> Self {
        Versions { scope: Scope::Shared, keep_no_store: false }
    }
}

/// What becomes of a response that could be a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Kept under the URL's key, for everyone.
    Anonymous,
    /// Kept under the user's key.
    PerUser,
    /// Kept nowhere, and never a base.
    Refused(&'static str),
}

impl Keep {
    /// The `class` label of `railproxy_versions_stored_total` and `railproxy_deltas_total`.
    pub fn class(self) -> &'static str {
        match self {
            Keep::Anonymous => "anonymous",
            Keep::PerUser => "per_user",
            Keep::Refused(_) => "refused",
        }
    }

    pub fn stores(self) -> bool {
        !matches!(self, Keep::Refused(_))
    }
}

/// Whether the `Cache-Control` of `resp` has `directive` (case-insensitive, with or without an
/// argument: `private="Set-Cookie"` is `private`).
pub fn has_directive(resp: &ResponseHeader, directive: &str) -> bool {
    crate::http_util::list_items(&resp.headers, http::header::CACHE_CONTROL)
        .any(|d| d.split('=').next().unwrap_or("").trim().eq_ignore_ascii_case(directive))
}

/// What becomes of `resp`, a response to a request with `versions`.
pub fn keep(versions: Versions, resp: &ResponseHeader) -> Keep {
    if has_directive(resp, "no-store") && !versions.keep_no_store {
        return Keep::Refused("no-store");
    }
    let personal = has_directive(resp, "private") || resp.headers.contains_key(http::header::SET_COOKIE);
    match versions.scope {
        Scope::User => Keep::PerUser,
        Scope::Shared if personal => Keep::Refused("private"),
        Scope::Shared => Keep::Anonymous,
    }
}

/// The edge's keyed hash of a request's credentials.
pub struct UserKeys {
    key: hmac::Key,
    /// Request headers that carry credentials besides Cookie and Authorization (lower case).
    headers: Vec<http::HeaderName>,
}

impl std::fmt::Debug for UserKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret is never printed.
        f.debug_struct("UserKeys").field("headers", &self.headers).finish_non_exhaustive()
    }
}

impl UserKeys {
    /// With a secret of this process's own: keys are not comparable across edges or restarts,
    /// and mean nothing to anyone who reads a log or a store.
    pub fn new(headers: &[http::HeaderName]) -> Self {
        let secret: [u8; 32] = rand::random();
        UserKeys { key: hmac::Key::new(hmac::HMAC_SHA256, &secret), headers: headers.to_vec() }
    }

    /// The user a request is from, as 128 bits of HMAC-SHA-256 in hex, or None for a request
    /// without credentials. `cookies`: the cookies that identify a user (empty: every cookie).
    pub fn user(&self, req: &RequestHeader, cookies: &[String]) -> Option<String> {
        let mut parts: Vec<Vec<u8>> = Vec::new();
        let named = |name: &str| cookies.is_empty() || cookies.iter().any(|c| c == name);
        for value in req.headers.get_all(http::header::COOKIE) {
            for pair in value.as_bytes().split(|b| *b == b';') {
                let pair = pair.trim_ascii();
                let name = pair.split(|b| *b == b'=').next().unwrap_or_default();
                if !pair.is_empty() && named(&String::from_utf8_lossy(name)) {
                    parts.push([b"cookie\0".as_slice(), pair].concat());
                }
            }
        }
        for name in std::iter::once(&http::header::AUTHORIZATION).chain(&self.headers) {
            for value in req.headers.get_all(name) {
                parts.push([name.as_str().as_bytes(), b"\0", value.as_bytes()].concat());
            }
        }
        if parts.is_empty() {
            return None;
        }
        // Browsers may send the same cookies in another order.
        parts.sort();
        let mut ctx = hmac::Context::with_key(&self.key);
        for p in &parts {
            ctx.update(&(p.len() as u64).to_be_bytes());
            ctx.update(p);
        }
        let tag = ctx.sign();
        Some(tag.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// `railproxy-versions` as written: `shared` or `user`, then `, no-store` when opted in.
pub fn header_value(v: Versions) -> &'static str {
    match (v.scope, v.keep_no_store) {
        (Scope::Shared, false) => "shared",
        (Scope::Shared, true) => "shared, no-store",
        (Scope::User, false) => "user",
        (Scope::User, true) => "user, no-store",
    }
}

/// `railproxy-versions` as read; absent or unknown tokens mean the defaults.
pub fn parse_header(value: Option<&http::HeaderValue>) -> Versions {
    let mut v = Versions::default();
    for token in header_str(value).unwrap_or_default().split(',').map(str::trim) {
        match token {
            "user" => v.scope = Scope::User,
            "no-store" => v.keep_no_store = true,
            _ => {}
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    const SHARED: Versions = Versions { scope: Scope::Shared, keep_no_store: false };
    const USER: Versions = Versions { scope: Scope::User, keep_no_store: false };

    #[test]
    fn what_the_response_says_decides_where_it_is_kept() {
        let plain = resp(&[("cache-control", "max-age=0")]);
        assert_eq!(keep(SHARED, &plain), Keep::Anonymous);
        assert_eq!(keep(USER, &plain), Keep::PerUser);
        for cc in ["no-store", "private, NO-STORE", "max-age=0,no-store"] {
            let r = resp(&[("cache-control", cc)]);
            assert_eq!(keep(SHARED, &r), Keep::Refused("no-store"), "{cc}");
            assert_eq!(keep(USER, &r), Keep::Refused("no-store"), "{cc}");
            assert!(keep(Versions { keep_no_store: true, ..USER }, &r).stores(), "{cc}, opted in");
        }
        for personal in [resp(&[("cache-control", "private")]), resp(&[("Cache-Control", "Private=\"x\"")])] {
            assert_eq!(keep(SHARED, &personal), Keep::Refused("private"));
            assert_eq!(keep(USER, &personal), Keep::PerUser);
        }
        let login = resp(&[("set-cookie", "session=abc; HttpOnly")]);
        assert_eq!(keep(SHARED, &login), Keep::Refused("private"), "a response that sets a cookie is one user's");
        assert_eq!(keep(USER, &login), Keep::PerUser);
        assert_eq!(keep(SHARED, &resp(&[("cache-control", "no-storage, privately")])), Keep::Anonymous);
    }

    #[test]
    fn users_are_told_apart_by_their_credentials_only() {
        let keys = UserKeys::new(&[http::HeaderName::from_static("x-api-key")]);
        let all: &[String] = &[];
        assert_eq!(keys.user(&req(&[("accept", "text/html")]), all), None);
        let a = keys.user(&req(&[("cookie", "session=a; theme=dark")]), all).unwrap();
        assert_eq!(a.len(), 32);
        assert_eq!(keys.user(&req(&[("cookie", "theme=dark;session=a")]), all).as_ref(), Some(&a), "order");
        assert_ne!(keys.user(&req(&[("cookie", "session=b; theme=dark")]), all).as_ref(), Some(&a));
        assert!(keys.user(&req(&[("authorization", "Bearer t")]), all).is_some());
        assert!(keys.user(&req(&[("x-api-key", "k")]), all).is_some());
        assert_ne!(
            keys.user(&req(&[("authorization", "Bearer t")]), all),
            keys.user(&req(&[("x-api-key", "Bearer t")]), all),
            "the header a value came in is part of the key"
        );
        // Only the named cookies identify a user: analytics cookies neither split the key nor
        // make a request personal.
        let session = &["session".to_string()][..];
        let a2 = keys.user(&req(&[("cookie", "session=a; _ga=1")]), session);
        assert_eq!(a2, keys.user(&req(&[("cookie", "_ga=2; session=a")]), session));
        assert_eq!(keys.user(&req(&[("cookie", "_ga=1")]), session), None);
        // Another process's secret: other keys.
        let other = UserKeys::new(&[]);
        assert_ne!(other.user(&req(&[("cookie", "session=a; theme=dark")]), all), Some(a));
        assert!(!format!("{keys:?}").contains("key:"), "the secret is not printed");
    }

    #[test]
    fn the_header_round_trips_and_defaults_to_shared() {
        for scope in [Scope::Shared, Scope::User] {
            for keep_no_store in [false, true] {
                let v = Versions { scope, keep_no_store };
                let value = http::HeaderValue::from_static(header_value(v));
                assert_eq!(parse_header(Some(&value)), v);
            }
        }
        assert_eq!(parse_header(None), Versions::default());
    }
}

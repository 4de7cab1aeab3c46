//! Deltas to browsers: RFC 9842 on the last mile.
//!
//! A page the edge sends is offered to the browser as a dictionary (`Use-As-Dictionary`), and
//! kept here under the SHA-256 of exactly the bytes sent; a browser that offers it back
//! (`Available-Dictionary`, with `dcz` in `Accept-Encoding`) gets the next page as `dcz`
//! against it (the client compression module encodes). The rules that keep this safe:
//!
//! * A dictionary is found by its hash only, within the host and the user the request is (the
//!   tunnel's rule for versions: see `crate::versions`); a browser's `Dictionary-ID` or URL is
//!   never trusted. Its bytes are hashed again before use: a wrong hash fails the page load
//!   outright in Chromium, with no fallback.
//! * Never offered: `no-store` pages, a personal page to a request with no credentials (it
//!   would be kept as everyone's), paths the operator excepted, anything not a whole text 200.
//! * A personal page is answered with `dcz` only to a same-origin or direct navigation
//!   (`Sec-Fetch-Site`), so a cross-site page cannot make a user's browser fetch it with
//!   attacker-chosen input and time its size (the compression-oracle reasoning in the README).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use delta::store::{MemoryStore, VersionStore as _};
use delta::{Version, VersionId};
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};

use super::client_compression::compresses;
use crate::config::client_dictionaries::ClientDictionaries;
use crate::http_util::{accepts, content_length, header_str, list_items, vary_on};
use crate::metrics;
use crate::versions::{self, Scope, Versions};

/// RFC 9842 §2.1.
pub const USE_AS_DICTIONARY: &str = "use-as-dictionary";
/// RFC 9842 §2.2.
const AVAILABLE_DICTIONARY: &str = "available-dictionary";
const SEC_FETCH_SITE: &str = "sec-fetch-site";

/// The store key of a dictionary: the host, the hash, and whose page it is. URL keys are the
/// host followed by a request target, which starts with `/`: none is ever one of these.
pub fn key(host: &str, user: Option<&str>, id: &VersionId) -> String {
    match user {
        Some(user) => format!("{host} dictionary={} user={user}", id.to_hex()),
        None => format!("{host} dictionary={}", id.to_hex()),
    }
}

/// What a browser's request offers: the hash in `Available-Dictionary`, if it also accepts
/// `dcz` (a hash alone asks for nothing: `dcb` is not made here).
pub fn offered(req: &RequestHeader) -> Option<VersionId> {
    if !accepts(header_str(req.headers.get(http::header::ACCEPT_ENCODING)), "dcz") {
        return None;
    }
    VersionId::parse_sf(req.headers.get(AVAILABLE_DICTIONARY)?.as_bytes()).ok()
}

/// A same-origin navigation, or one the user made (typed, bookmarked): `Sec-Fetch-Site` says
/// `same-origin` or `none`. A request without it (not a current browser) is neither.
pub fn same_origin_or_direct(req: &RequestHeader) -> bool {
    header_str(req.headers.get(SEC_FETCH_SITE))
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("same-origin") || v.trim().eq_ignore_ascii_case("none"))
}

/// The stored dictionary `id` if its bytes still hash to it; `Err(())` when they do not (the
/// caller drops it).
pub fn checked(held: Option<Version>, id: &VersionId) -> Result<Option<Version>, ()> {
    match held {
        None => Ok(None),
        Some(v) if VersionId::of(&v.body) == *id && v.id == *id => Ok(Some(v)),
        Some(_) => Err(()),
    }
}

/// Whether `resp`, the answer to a GET, is a page a browser may keep as a dictionary and get
/// deltas against: a whole 200 of a text type in the clear, no larger than `max_body`, that
/// the tunnel's rules would keep as a version for this request, and not `no-store`.
pub fn eligible(resp: &ResponseHeader, versions: Versions, max_body: u64) -> bool {
    // What the client compression module would code (so that an offered page can always be
    // answered with dcz), as a whole 200.
    resp.status == http::StatusCode::OK
        && compresses(resp)
        && content_length(resp).is_none_or(|n| n <= max_body)
        && !versions::has_directive(resp, "no-store")
        && versions::keep(versions, resp).stores()
}

/// The `match` of a page's own URL: its path as a URLPattern (RFC 9842 §2.1.1), special
/// characters escaped; without a search part it covers the path with any query.
fn url_pattern(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 8);
    for c in path.chars() {
        if matches!(c, '*' | ':' | '(' | ')' | '{' | '}' | '?' | '+' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// An RFC 8941 string of `s`, which is visible ASCII (a URL path is).
fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars().filter(|c| c.is_ascii_graphic() || *c == ' ') {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Marks `resp` as a dictionary for pages at `path`: `Use-As-Dictionary`, a `Vary` that names
/// what the body depends on, and a lifetime in the browser (see [`lifetime`]).
pub fn offer(resp: &mut ResponseHeader, path: &str, scope: Scope, settings: &ClientDictionaries) -> Result<()> {
    let id = match scope {
        Scope::Shared => "shared",
        Scope::User => "user",
    };
    let value = format!("match={}, match-dest=(\"document\"), id=\"{id}\"", sf_string(&url_pattern(path)));
    resp.insert_header(USE_AS_DICTIONARY, value)?;
    vary(resp)?;
    lifetime(resp, settings.lifetime, scope == Scope::User)
}

/// Adds `Accept-Encoding` and `Available-Dictionary` to `Vary` (RFC 9842 §6.2) where missing.
fn vary(resp: &mut ResponseHeader) -> Result<()> {
    vary_on(resp, &["accept-encoding", AVAILABLE_DICTIONARY])
}

/// Cache-Control directives of `resp`, each as written.
fn directives(resp: &ResponseHeader) -> Vec<String> {
    list_items(&resp.headers, http::header::CACHE_CONTROL).map(str::to_string).collect()
}

fn name_of(directive: &str) -> String {
    directive.split('=').next().unwrap_or("").trim().to_ascii_lowercase()
}

fn seconds(directives: &[String], name: &str) -> Option<u64> {
    directives
        .iter()
        .find(|d| name_of(d) == name)
        .and_then(|d| d.split_once('='))
        .and_then(|(_, v)| v.trim().trim_matches('"').parse().ok())
}

/// A browser keeps a dictionary while its response is fresh or may be used stale (RFC 9842
/// §2.1.3; Chromium: freshness + `stale-while-revalidate` − age). A page the origin lets be
/// fresh for a while keeps its own lifetime. One it would have kept for no time (`no-cache`,
/// `max-age=0`, nothing said) becomes `private, max-age=0, stale-while-revalidate=LIFETIME`:
/// a browser still asks for it on every navigation (it never uses a stale navigation response
/// while revalidating, checked in Chromium by `browser_deltas.rs`), and no shared cache keeps
/// it. A personal page is always `private`.
pub fn lifetime(resp: &mut ResponseHeader, lifetime: Duration, personal: bool) -> Result<()> {
    let mut d = directives(resp);
    let fresh = !d.iter().any(|d| name_of(d) == "no-cache") && seconds(&d, "max-age").is_some_and(|s| s > 0);
    if !fresh {
        d.retain(|d| {
            !matches!(
                name_of(d).as_str(),
                "no-cache"
                    | "max-age"
                    | "s-maxage"
                    | "must-revalidate"
                    | "proxy-revalidate"
                    | "public"
                    | "private"
                    | "stale-while-revalidate"
            )
        });
        d.splice(0..0, ["private".to_string(), "max-age=0".to_string()]);
        d.push(format!("stale-while-revalidate={}", lifetime.as_secs()));
    } else if personal && !d.iter().any(|d| name_of(d) == "private") {
        d.retain(|d| !matches!(name_of(d).as_str(), "public" | "s-maxage"));
        d.insert(0, "private".to_string());
    } else {
        return Ok(());
    }
    resp.insert_header(http::header::CACHE_CONTROL, d.join(", "))
}

/// The body of a page offered as a dictionary, gathered as it goes to the browser (pieces of
/// the same buffers: no copy until the end, and none if it came in one piece).
pub struct Capture {
    /// The store key without the hash: host and user.
    host: String,
    user: Option<String>,
    pieces: Vec<Bytes>,
    len: usize,
    limit: usize,
}

impl Capture {
    pub fn new(host: &str, user: Option<String>, limit: u64) -> Self {
        Capture {
            host: host.to_string(),
            user,
            pieces: Vec::new(),
            len: 0,
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
        }
    }

    /// Takes a piece of the body; at its end, the page to keep and its key. A body past the
    /// limit is not kept (the browser keeps it, and will offer a hash the edge does not hold).
    pub fn push(&mut self, piece: Option<&Bytes>, end: bool) -> Option<(String, Version)> {
        if let Some(p) = piece.filter(|p| !p.is_empty()) {
            self.len = self.len.saturating_add(p.len());
            if self.len <= self.limit {
                self.pieces.push(p.clone());
            } else {
                self.pieces.clear();
            }
        }
        if !end || self.len > self.limit {
            return None;
        }
        let body = match self.pieces.len() {
            1 => self.pieces.pop().expect("one piece"),
            _ => {
                let mut all = BytesMut::with_capacity(self.len);
                for p in self.pieces.drain(..) {
                    all.extend_from_slice(&p);
                }
                all.freeze()
            }
        };
        let version = Version::new(body);
        Some((key(&self.host, self.user.as_deref(), &version.id), version))
    }
}

/// A GET's part in browser dictionaries, from its request to the end of its response.
pub struct Browser {
    host: String,
    user: Option<String>,
    settings: ClientDictionaries,
    /// The dictionary the browser offered, held and checked.
    dictionary: Option<Version>,
    /// What became of the browser's offer: `hit` (held), `unknown`, `corrupt`, `refused`
    /// (not for this request), `none` (nothing offered); for `delta.report_header`.
    pub asked: &'static str,
    capture: Option<Capture>,
}

impl Browser {
    /// For a GET to a host with `settings`: looks up the dictionary its browser offers, in the
    /// host's and `user`'s scope. None when the path is excepted or a range is asked.
    pub fn start(
        req: &RequestHeader,
        host: &str,
        user: Option<String>,
        settings: &ClientDictionaries,
        store: &MemoryStore<String>,
    ) -> Option<Self> {
        let offer = offered(req);
        if !settings.covers(req.uri.path()) || req.headers.contains_key(http::header::RANGE) {
            if offer.is_some() {
                metrics::CLIENT_DELTAS.with_label_values(&["miss"]).inc();
            }
            return None;
        }
        let mut b = Browser {
            host: host.to_string(),
            user,
            settings: settings.clone(),
            dictionary: None,
            asked: "none",
            capture: None,
        };
        let Some(id) = offer else {
            return Some(b);
        };
        if b.user.is_some() && !same_origin_or_direct(req) {
            metrics::CLIENT_DELTAS.with_label_values(&["miss"]).inc();
            b.asked = "refused";
            return Some(b);
        }
        let key = key(host, b.user.as_deref(), &id);
        match checked(store.get_now(&key), &id) {
            Ok(Some(v)) => {
                b.dictionary = Some(v);
                b.asked = "hit";
            }
            Ok(None) => {
                metrics::CLIENT_DELTAS.with_label_values(&["unknown"]).inc();
                b.asked = "unknown";
            }
            Err(()) => {
                // The hash is not logged: a user's page's hash names the user as a cookie would.
                log::warn!("a browser dictionary of {host} no longer hashes to its name (memory corruption?): dropped");
                store.remove(&key);
                metrics::CLIENT_DELTAS.with_label_values(&["corrupt"]).inc();
                b.asked = "corrupt";
            }
        }
        Some(b)
    }

    /// The response's header is in: offers it as a dictionary if it may be one, and returns
    /// the dictionary to answer against (the module counts the hit, or the miss if the body
    /// turns out not to be coded).
    pub fn respond(
        &mut self,
        resp: &mut ResponseHeader,
        path: &str,
        versions: Versions,
        max_body: u64,
    ) -> Result<Option<Version>> {
        if !eligible(resp, versions, max_body) {
            if self.dictionary.take().is_some() {
                metrics::CLIENT_DELTAS.with_label_values(&["miss"]).inc();
            }
            // A 304 says what the 200 it confirms would have said (RFC 9110 §15.4.5).
            if resp.status == http::StatusCode::NOT_MODIFIED {
                vary(resp)?;
            }
            return Ok(None);
        }
        offer(resp, path, versions.scope, &self.settings)?;
        let scope = match versions.scope {
            Scope::Shared => "shared",
            Scope::User => "user",
        };
        metrics::CLIENT_DICTIONARY_OFFERS.with_label_values(&[scope]).inc();
        self.capture = Some(Capture::new(&self.host, self.user.clone(), max_body));
        Ok(self.dictionary.take())
    }

    /// A piece of the body on its way to the browser; the page to keep once it is whole.
    pub fn body(&mut self, piece: Option<&Bytes>, end: bool) -> Option<(String, Version)> {
        self.capture.as_mut()?.push(piece, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn cache_control(r: &ResponseHeader) -> &str {
        header_str(r.headers.get(http::header::CACHE_CONTROL)).unwrap_or("")
    }

    const SHARED: Versions = Versions { scope: Scope::Shared, keep_no_store: false };

    #[test]
    fn only_whole_text_pages_that_may_be_kept_are_offered() {
        let html = [("content-type", "text/html")];
        assert!(eligible(&response(&html), SHARED, 1 << 20));
        assert!(!eligible(&response(&[("content-type", "image/png")]), SHARED, 1 << 20));
        assert!(!eligible(&response(&[html[0], ("cache-control", "no-store")]), SHARED, 1 << 20));
        // Opting a host into keeping no-store versions does not make them dictionaries.
        let keep_no_store = Versions { keep_no_store: true, ..SHARED };
        assert!(!eligible(&response(&[html[0], ("cache-control", "no-store")]), keep_no_store, 1 << 20));
        assert!(!eligible(&response(&[html[0], ("cache-control", "private")]), SHARED, 1 << 20));
        assert!(!eligible(&response(&[html[0], ("set-cookie", "s=1")]), SHARED, 1 << 20));
        let user = Versions { scope: Scope::User, keep_no_store: false };
        assert!(eligible(&response(&[html[0], ("cache-control", "private")]), user, 1 << 20));
        assert!(!eligible(&response(&[html[0], ("content-encoding", "gzip")]), SHARED, 1 << 20));
        assert!(!eligible(&response(&[html[0], ("content-length", "5000")]), SHARED, 4000));
        let mut not_found = response(&html);
        not_found.set_status(404).unwrap();
        assert!(!eligible(&not_found, SHARED, 1 << 20));
    }

    #[test]
    fn the_offer_covers_the_page_and_says_what_it_varies_on() {
        let settings = ClientDictionaries { lifetime: Duration::from_secs(600), except: Vec::new() };
        let mut r = response(&[("content-type", "text/html"), ("vary", "Accept-Encoding")]);
        offer(&mut r, "/shop/item:1(a)*", Scope::Shared, &settings).unwrap();
        assert_eq!(
            header_str(r.headers.get(USE_AS_DICTIONARY)).unwrap(),
            r#"match="/shop/item\\:1\\(a\\)\\*", match-dest=("document"), id="shared""#
        );
        let vary: Vec<&str> = r.headers.get_all("vary").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(vary, ["Accept-Encoding", "available-dictionary"]);
        assert_eq!(cache_control(&r), "private, max-age=0, stale-while-revalidate=600");
    }

    #[test]
    fn a_page_kept_for_no_time_gets_a_lifetime_and_a_fresh_one_keeps_its_own() {
        let life = Duration::from_secs(300);
        for cc in ["no-cache", "max-age=0", "public, max-age=0, must-revalidate", "no-cache, max-age=60"] {
            let mut r = response(&[("cache-control", cc)]);
            lifetime(&mut r, life, false).unwrap();
            assert_eq!(cache_control(&r), "private, max-age=0, stale-while-revalidate=300", "{cc}");
        }
        let mut none = response(&[]);
        lifetime(&mut none, life, false).unwrap();
        assert_eq!(cache_control(&none), "private, max-age=0, stale-while-revalidate=300");
        let mut fresh = response(&[("cache-control", "public, max-age=60")]);
        lifetime(&mut fresh, life, false).unwrap();
        assert_eq!(cache_control(&fresh), "public, max-age=60");
        lifetime(&mut fresh, life, true).unwrap();
        assert_eq!(cache_control(&fresh), "private, max-age=60");
        let mut kept = response(&[("cache-control", "max-age=0, immutable")]);
        lifetime(&mut kept, life, false).unwrap();
        assert_eq!(cache_control(&kept), "private, max-age=0, immutable, stale-while-revalidate=300");
    }

    #[test]
    fn a_browser_offers_a_hash_only_with_dcz() {
        let id = VersionId::of(b"page");
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("available-dictionary", id.to_sf()).unwrap();
        assert_eq!(offered(&req), None);
        req.insert_header("accept-encoding", "gzip, br, zstd, dcb, dcz").unwrap();
        assert_eq!(offered(&req), Some(id));
        req.insert_header("available-dictionary", ":bm90IDMyIGJ5dGVz:").unwrap();
        assert_eq!(offered(&req), None);
        assert!(!same_origin_or_direct(&req));
        for (site, ok) in [("same-origin", true), ("none", true), ("same-site", false), ("cross-site", false)] {
            req.insert_header("sec-fetch-site", site).unwrap();
            assert_eq!(same_origin_or_direct(&req), ok, "{site}");
        }
    }

    #[test]
    fn a_dictionary_is_used_only_if_its_bytes_hash_to_its_name() {
        let v = Version::new(Bytes::from_static(b"the page"));
        assert_eq!(checked(Some(v.clone()), &v.id), Ok(Some(v.clone())));
        assert_eq!(checked(None, &v.id), Ok(None));
        let flipped = Version { id: v.id, body: Bytes::from_static(b"the pagf") };
        assert_eq!(checked(Some(flipped), &v.id), Err(()));
    }

    #[test]
    fn a_304_varies_as_the_page_it_confirms() {
        let settings = ClientDictionaries { lifetime: Duration::from_secs(600), except: Vec::new() };
        let store = MemoryStore::new(1 << 20);
        let req = RequestHeader::build("GET", b"/page", None).unwrap();
        let mut b = Browser::start(&req, "example.com", None, &settings, &store).unwrap();
        let mut r = ResponseHeader::build(304, None).unwrap();
        assert_eq!(b.respond(&mut r, "/page", SHARED, 1 << 20).unwrap(), None);
        let vary: Vec<&str> = r.headers.get_all("vary").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(vary, ["accept-encoding", "available-dictionary"]);
        assert!(r.headers.get(USE_AS_DICTIONARY).is_none());
    }

    #[test]
    fn the_page_is_kept_under_the_hash_of_what_was_sent() {
        let mut c = Capture::new("example.com", Some("u1".into()), 100);
        assert!(c.push(Some(&Bytes::from_static(b"<html>")), false).is_none());
        let (key, v) = c.push(Some(&Bytes::from_static(b"</html>")), true).unwrap();
        assert_eq!(&v.body[..], b"<html></html>");
        assert_eq!(key, format!("example.com dictionary={} user=u1", VersionId::of(b"<html></html>").to_hex()));
        let mut big = Capture::new("example.com", None, 10);
        assert!(big.push(Some(&Bytes::from_static(b"0123456789ab")), true).is_none());
    }
}

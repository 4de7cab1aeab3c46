//! Deltas to browsers (RFC 9842 on the last mile): a real Chromium navigates through edge and
//! origin and gets `dcz` against the page it saw before, decoded byte-exactly; a plain HTTP
//! client plays the hostile and odd cases (made-up hashes, another user's hash, cross-site
//! navigations, no-store, excepted paths, a corrupted store).
//!
//! The Chromium tests skip, saying why, on a machine without `chromium` (`make test` installs
//! it).

use bytes::Bytes;
use delta::codec::DecodeOptions;
use delta::corpus::{self, VersionSet};
use delta::{Version, VersionId, testing};
use http::Method;
use integration::chromium::{self, Browser};
use integration::{Http, Knobs, Stack};

/// 127.0.0.1 offers dictionaries, except under `/cycle/generated-700k`; localhost does not.
fn knobs() -> Knobs {
    Knobs {
        corpus: true,
        fault_injection: true,
        edge_route_extra: vec![(
            "127.0.0.1".into(),
            "    client_dictionaries:\n      lifetime: 5m\n      except: [/cycle/generated-700k]\n".into(),
        )],
        ..Knobs::default()
    }
}

fn skip() -> bool {
    match chromium::unavailable() {
        Some(why) => {
            eprintln!("SKIPPED: {why}");
            true
        }
        None => false,
    }
}

fn sets() -> Vec<VersionSet> {
    let mut sets: Vec<VersionSet> = testing::generated_sets().into_iter().take(2).collect();
    match integration::corpus() {
        Some(dir) => {
            eprintln!("real corpus {} included", dir.display());
            sets.extend(corpus::load_version_sets(&dir).expect("corpus").into_iter().take(3));
        }
        None => eprintln!("no ../shared/corpus/dev: generated versions only"),
    }
    sets
}

/// Three navigations to a page that changes on every request: the second and third offer the
/// page before (the SHA-256 of exactly what Chromium got), get `dcz` against it, and show the
/// newest version byte for byte; the same navigations to a host without dictionaries give
/// Chromium's best coding (br) for comparison.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_gets_each_next_version_as_a_delta_against_the_one_it_holds() {
    if skip() {
        return;
    }
    let stack = Stack::start(knobs()).await;
    let mut browser = Browser::start().await.expect("chromium starts");
    for set in sets() {
        let mut sizes = Vec::new();
        for (host, dictionaries) in [("127.0.0.1", true), ("localhost", false)] {
            let url = format!("http://{host}:{}/cycle/{}?browser-{host}", stack.edge_addr.port(), set.name);
            let mut held: Option<VersionId> = None;
            let mut wire = Vec::new();
            // The fourth only shows what Chromium holds after the third.
            for (i, expected) in set.versions.iter().take(4).enumerate() {
                let nav = browser.navigate(&url).await.expect("navigation");
                assert_eq!(nav.failed, None, "{} nav {i}: the page loads", set.name);
                assert_eq!(nav.status, 200);
                // DevTools hands text bodies over as decoded text: compared byte for byte when the
                // page is UTF-8. Either way the next navigation's `Available-Dictionary` is the
                // SHA-256 of exactly the bytes Chromium decoded, checked below.
                if let Ok(text) = std::str::from_utf8(expected) {
                    // As text, less the byte order mark a decoder consumes.
                    let expected = text.strip_prefix('\u{feff}').unwrap_or(text).as_bytes();
                    let at = nav.body.iter().zip(expected.iter()).position(|(a, b)| a != b);
                    assert!(
                        nav.body == expected,
                        "{} nav {i} via {host}: the newest version, byte for byte ({} bytes against {}, first difference at {at:?}: {:?})",
                        set.name,
                        nav.body.len(),
                        expected.len(),
                        at.map(|a| String::from_utf8_lossy(
                            &nav.body[a.saturating_sub(20)..(a + 40).min(nav.body.len())]
                        )
                        .to_string())
                    );
                }
                let offered = nav.request("available-dictionary").map(|v| VersionId::parse_sf(v.as_bytes()).unwrap());
                let encoding = nav.response("content-encoding").unwrap_or("identity").to_string();
                if dictionaries {
                    assert!(nav.response("use-as-dictionary").is_some(), "{} nav {i}: offered", set.name);
                    assert!(nav.response("vary").is_some_and(|v| v.contains("available-dictionary")));
                    assert_eq!(offered, held, "{} nav {i}: the browser offers the page it got before", set.name);
                    assert_eq!(encoding, if i == 0 { "br" } else { "dcz" }, "{} nav {i}", set.name);
                    assert!(nav.response("cache-control").is_some_and(|v| v.contains("stale-while-revalidate")));
                } else {
                    assert!(nav.response("use-as-dictionary").is_none());
                    assert_eq!(offered, None);
                    assert_eq!(encoding, "br");
                }
                held = Some(VersionId::of(expected));
                wire.push(nav.encoded_length);
            }
            sizes.push(wire);
        }
        let (dcz, br) = (&sizes[0], &sizes[1]);
        eprintln!(
            "{}: bytes on the wire per navigation (headers included), dcz {dcz:?} against br {br:?}: {:.1} % of br",
            set.name,
            100.0 * (dcz[1] + dcz[2]) as f64 / (br[1] + br[2]) as f64
        );
        assert!(dcz[1] + dcz[2] < (br[1] + br[2]) / 2, "{}: deltas are much smaller than br", set.name);
    }
    let m = stack.edge_metrics().await;
    assert!(m.sum("railproxy_client_deltas_total", &[("result", "hit")]) >= 4.0);
    assert!(m.sum("railproxy_client_dictionary_offers_total", &[("scope", "shared")]) >= 6.0);
    let (raw, wire) = (
        m.sum("railproxy_client_delta_bytes_total", &[("kind", "raw")]),
        m.sum("railproxy_client_delta_bytes_total", &[("kind", "wire")]),
    );
    assert!(wire > 0.0 && wire * 10.0 < raw, "dcz bytes {wire} for {raw} bytes of pages");
    browser.close().await;
}

/// A browser offering a page the edge no longer holds (the edge was upgraded: a new process,
/// an empty store) gets a full body, and the page loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_offering_a_page_the_edge_forgot_gets_a_full_body() {
    if skip() {
        return;
    }
    let mut stack = Stack::start(knobs()).await;
    let mut browser = Browser::start().await.expect("chromium starts");
    let versions = &testing::generated_sets()[1].versions;
    let url = format!("http://127.0.0.1:{}/cycle/generated-100k?forgotten", stack.edge_addr.port());
    let first = browser.navigate(&url).await.expect("navigation");
    assert!(first.body == versions[0]);
    stack.upgrade_edge().await;
    let second = browser.navigate(&url).await.expect("navigation");
    assert_eq!(second.failed, None);
    assert_eq!(second.request("available-dictionary"), Some(VersionId::of(&versions[0]).to_sf().as_str()));
    assert_eq!(second.response("content-encoding"), Some("br"));
    assert!(second.body == versions[1]);
    // And it offers the new page next time, which this edge holds.
    let third = browser.navigate(&url).await.expect("navigation");
    assert_eq!(third.response("content-encoding"), Some("dcz"));
    assert!(third.body == versions[2]);
    let m = stack.edge_metrics().await;
    assert_eq!(m.sum("railproxy_client_deltas_total", &[("result", "unknown")]), 1.0);
    browser.close().await;
}

fn dcz_headers<'a>(hash: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![("accept-encoding", "gzip, br, zstd, dcb, dcz"), ("available-dictionary", hash)];
    h.extend_from_slice(extra);
    h
}

fn decode(base: &[u8], body: &Bytes) -> Vec<u8> {
    delta::codec::decode_with(&Version::new(base.to_vec()), body, DecodeOptions::default()).expect("a valid dcz body")
}

/// A made-up hash, and a hash the edge held but whose bytes were corrupted in memory: full
/// bodies (a `dcz` against the wrong bytes would fail the page in a browser).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_corrupted_dictionaries_get_full_bodies() {
    let stack = Stack::start(knobs()).await;
    let http = Http::h1();
    let versions = &testing::generated_sets()[1].versions;
    let url = stack.url("/cycle/generated-100k?hostile");
    let made_up = VersionId::of(b"no such page").to_sf();
    let r = http.get(&url, &[("accept-encoding", "dcz"), ("available-dictionary", &made_up)]).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), None, "dcz only: the page as it is");
    assert!(r.body == versions[0]);
    let held = VersionId::of(&versions[0]).to_sf();
    let r = http.get(&url, &dcz_headers(&held, &[])).await.unwrap();
    assert_eq!(r.header("content-encoding"), Some("dcz"));
    assert!(decode(&versions[0], &r.body) == versions[1]);
    // Not a byte sequence, the wrong length, no dcz accepted: no dictionary at all.
    for (ad, ae) in [(":bm90IDMyIGJ5dGVz:", "dcz, br"), ("\"text\"", "dcz, br"), (held.as_str(), "br")] {
        let r = http.get(&url, &[("accept-encoding", ae), ("available-dictionary", ad)]).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding"), Some("br"), "{ad} with {ae}");
    }
    // Every page the edge holds now has a flipped byte under its old hash.
    let corrupt = format!("http://{}/debug/corrupt-store", stack.edge_admin);
    assert_eq!(http.send(Method::POST, &corrupt, &[], Bytes::new()).await.unwrap().status, 200);
    let last = VersionId::of(&versions[4]).to_sf();
    // Another query of the same path (which the dictionary's match covers): its tunnel version
    // was not stored, so only the dictionary's corruption is at play (a corrupted tunnel
    // base is `end_to_end.rs`'s).
    let other = stack.url("/cycle/generated-100k?hostile-again");
    let r = http.get(&other, &dcz_headers(&last, &[])).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("br"), "never a delta against bytes that fail their hash");
    let m = stack.edge_metrics().await;
    assert_eq!(m.sum("railproxy_client_deltas_total", &[("result", "corrupt")]), 1.0);
    assert!(m.sum("railproxy_client_deltas_total", &[("result", "unknown")]) >= 1.0);
}

/// A request for version 1 of a personal page, as `cookie`, offering `hash`, from `site`.
async fn ask(http: &Http, url: &str, cookie: &str, hash: &str, site: &str) -> integration::Resp {
    let headers = dcz_headers(hash, &[("cookie", cookie), ("x-version", "1"), ("sec-fetch-site", site)]);
    http.get(url, &headers).await.unwrap()
}

/// Two users on one personalised URL: each gets deltas against their own page only; another
/// user's hash is unknown to them; a cross-site navigation gets no delta; dcz answers to
/// credentialed requests are private.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_get_deltas_against_their_own_pages_only() {
    let stack = Stack::start(knobs()).await;
    let http = Http::h1();
    let url = stack.url("/personal/generated-10k");
    let page = |who: &str, v: usize| {
        let mut p = testing::generated_sets()[0].versions[v].clone();
        p.extend_from_slice(format!("<!-- for {who} -->\n").as_bytes());
        p
    };
    for who in ["session=alice", "session=bob"] {
        let r = http.get(&url, &[("cookie", who), ("x-version", "0")]).await.unwrap();
        assert!(r.body == page(who, 0));
        assert!(r.header("use-as-dictionary").is_some_and(|v| v.contains("id=\"user\"")));
        assert!(r.header("cache-control").is_some_and(|v| v.starts_with("private")));
    }
    let alice0 = VersionId::of(&page("session=alice", 0)).to_sf();
    let bob0 = VersionId::of(&page("session=bob", 0)).to_sf();
    let r = ask(&http, &url, "session=alice", &alice0, "same-origin").await;
    assert_eq!(r.header("content-encoding"), Some("dcz"));
    assert!(r.header("cache-control").is_some_and(|v| v.starts_with("private")));
    assert!(decode(&page("session=alice", 0), &r.body) == page("session=alice", 1));
    let r = ask(&http, &url, "session=bob", &bob0, "none").await;
    assert_eq!(r.header("content-encoding"), Some("dcz"));
    assert!(decode(&page("session=bob", 0), &r.body) == page("session=bob", 1));
    // Alice's page is no dictionary for Bob, even knowing its hash.
    let r = ask(&http, &url, "session=bob", &alice0, "same-origin").await;
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert!(r.body.len() > 1000);
    // A cross-site (or same-site) navigation to a personal page: no delta, whatever is held.
    let alice1 = VersionId::of(&page("session=alice", 1)).to_sf();
    for site in ["cross-site", "same-site"] {
        let r = ask(&http, &url, "session=alice", &alice1, site).await;
        assert_eq!(r.header("content-encoding"), Some("br"), "{site}");
    }
}

/// `no-store` pages, a personal page to a request without credentials, and excepted paths are
/// never offered nor answered with a delta; a host without `client_dictionaries` never is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_that_must_not_be_dictionaries_are_not() {
    let stack = Stack::start(knobs()).await;
    let http = Http::h1();
    let ae = ("accept-encoding", "gzip, br, zstd, dcz");
    let never = [
        (stack.url("/personal/generated-10k"), vec![("x-cc", "no-store")]),
        (stack.url("/personal/generated-10k"), vec![("x-cc", "private")]),
        (stack.url("/cycle/generated-700k?x"), vec![]),
        (stack.url("/status/404"), vec![]),
        (stack.url("/binary/5000"), vec![]),
        (format!("http://localhost:{}/cycle/generated-100k?x", stack.edge_addr.port()), vec![]),
    ];
    for (url, extra) in &never {
        let mut h = vec![ae];
        h.extend(extra.iter().copied());
        let r = http.get(url, &h).await.unwrap();
        assert!(r.header("use-as-dictionary").is_none(), "{url} {extra:?}: not offered");
        // Offered back anyway (a browser with an old dictionary, or a forged header): no dcz.
        let hash = VersionId::of(&r.body).to_sf();
        h.push(("available-dictionary", &hash));
        let r = http.get(url, &h).await.unwrap();
        assert_ne!(r.header("content-encoding"), Some("dcz"), "{url} {extra:?}");
    }
    let m = stack.edge_metrics().await;
    assert_eq!(m.sum("railproxy_client_dictionary_offers_total", &[]), 0.0);
    assert_eq!(m.sum("railproxy_client_deltas_total", &[("result", "hit")]), 0.0);
}

/// With `delta.report_header`, operators see how a body crossed the tunnel and reached the
/// client; without it (the default), nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_header_says_how_the_body_travelled() {
    let stack = Stack::start(Knobs { edge_delta_extra: "  report_header: true\n".into(), ..knobs() }).await;
    let http = Http::h1();
    let versions = &testing::generated_sets()[1].versions;
    let url = stack.url("/cycle/generated-100k?report");
    let r = http.get(&url, &[("accept-encoding", "gzip")]).await.unwrap();
    assert_eq!(r.header("railproxy-delta"), Some("tunnel=zstd; base=none; dictionary=none; client=gzip"));
    let held = VersionId::of(&versions[0]).to_sf();
    let r = http.get(&url, &dcz_headers(&held, &[])).await.unwrap();
    assert_eq!(r.header("railproxy-delta"), Some("tunnel=dcz; base=hit; dictionary=hit; client=dcz"));
    let plain = Stack::start(knobs()).await;
    let r = http.get(&plain.url("/cycle/generated-100k?report"), &[]).await.unwrap();
    assert_eq!(r.header("railproxy-delta"), None);
    // Without client compression or dictionaries anywhere, the header still comes.
    let bare = Knobs {
        edge_delta_extra: "  report_header: true\n".into(),
        edge_extra: "client_compression: 0\n".into(),
        ..Knobs::default()
    };
    let bare = Stack::start(bare).await;
    let r = http.get(&bare.url("/cycle/generated-100k?report"), &[("accept-encoding", "gzip")]).await.unwrap();
    assert_eq!(r.header("railproxy-delta"), Some("tunnel=zstd; base=none; dictionary=none; client=identity"));
}

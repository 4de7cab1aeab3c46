//! Personalised pages: a user's page is only ever a delta against that user's own earlier page,
//! what a response says not to keep is kept at neither end, and versions expire.

use std::time::{Duration, Instant};

use delta::Version;
use delta::corpus::VersionSet;
use delta::testing;
use integration::{Http, Knobs, Metrics, Redis, Stack};

const PAGE: &str = "/personal/generated-100k";
const SMALL: &str = "/personal/generated-10k";

fn set(name: &str) -> VersionSet {
    testing::generated_sets().into_iter().find(|s| s.name == name).expect("generated set")
}

/// What the backend answers for version `n` of `versions` to a request with `cookie`.
fn page(versions: &VersionSet, n: usize, cookie: Option<&str>) -> Vec<u8> {
    let mut body = versions.versions[n].to_vec();
    body.extend_from_slice(format!("<!-- for {} -->\n", cookie.unwrap_or("anonymous")).as_bytes());
    body
}

/// The first 12 hex digits of a body's version id, as the access log names a base.
fn id(body: &[u8]) -> String {
    Version::new(body.to_vec()).id.to_hex()[..12].to_string()
}

/// GETs `path` (host `host`) as version `n` with `cookie` and `x-cc: cc`; asserts the client got
/// exactly the backend's page, and returns it.
async fn get(stack: &Stack, host: &str, path: &str, n: usize, cookie: Option<&str>, cc: Option<&str>) -> Vec<u8> {
    let versions = set(path.rsplit('/').next().unwrap());
    let n_str = n.to_string();
    let mut headers = vec![("x-version", n_str.as_str()), ("host", host)];
    headers.extend(cookie.map(|c| ("cookie", c)));
    headers.extend(cc.map(|c| ("x-cc", c)));
    let r = Http::h1().get(&stack.url(path), &headers).await.expect("a response");
    assert_eq!(r.status, 200, "{path} v{n} for {cookie:?}");
    let want = page(&versions, n, cookie);
    assert!(r.body == want[..], "{path} v{n} for {cookie:?}: not the backend's bytes");
    want
}

/// The base of each delta the origin made for `path` on `host`, in order (`no`: sent in full),
/// from its access log; waits until it holds `n` such lines.
async fn bases(stack: &Stack, host: &str, path: &str, n: usize) -> Vec<String> {
    let needle = format!("\"GET {host}{path}\" ");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = stack.origins[0].proc.as_ref().expect("origin running").log();
        let found: Vec<String> = log
            .lines()
            .filter(|l| l.contains(" access: ") && l.contains(&needle))
            .map(|l| l.split(" base=").nth(1).and_then(|b| b.split(' ').next()).unwrap_or("?").to_string())
            .collect();
        if found.len() >= n || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn count(m: &Metrics, name: &str, mode: &str, class: &str) -> f64 {
    m.sum(name, &[("mode", mode), ("class", class)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_gets_deltas_against_their_own_pages_only() {
    let stack = Stack::start(Knobs {
        access_log: true,
        // The session cookie identifies a user; an analytics cookie neither splits nor makes a key.
        edge_extra: "credentials:\n  cookies: [session]\n".into(),
        edge_route_extra: vec![("127.0.0.1".into(), format!("    shared_bases: [{SMALL}]\n"))],
        ..Knobs::default()
    })
    .await;
    let h = "127.0.0.1";
    let alice = get(&stack, h, PAGE, 0, Some("session=alice; _ga=1"), None).await;
    let bob = get(&stack, h, PAGE, 1, Some("session=bob"), None).await;
    let alice2 = get(&stack, h, PAGE, 2, Some("_ga=2; session=alice"), None).await;
    get(&stack, h, PAGE, 3, Some("session=bob"), None).await;
    let anonymous = get(&stack, h, PAGE, 4, None, None).await;
    get(&stack, h, PAGE, 5, Some("_ga=3"), None).await;
    get(&stack, h, PAGE, 6, Some("session=alice"), Some("private")).await;
    let got = bases(&stack, h, PAGE, 7).await;
    println!("bases the origin used, request by request: {got:?}");
    assert_eq!(
        got,
        [
            "no".to_string(),
            // Bob's first page: with versions per URL, this would be a delta against Alice's.
            "no".to_string(),
            id(&alice),
            id(&bob),
            // Anonymous requests share the URL's versions, as do analytics-only cookies.
            "no".to_string(),
            id(&anonymous),
            // A private page is kept under its user's key, and made from that user's base.
            id(&alice2),
        ]
    );
    // A path the operator declared the same for everyone: Bob's page is made from Alice's.
    let shared = get(&stack, h, SMALL, 0, Some("session=alice"), None).await;
    get(&stack, h, SMALL, 1, Some("session=bob"), None).await;
    assert_eq!(bases(&stack, h, SMALL, 2).await, ["no".to_string(), id(&shared)]);
    let m = stack.origin_metrics().await;
    let e = stack.edge_metrics().await;
    for (m, mode) in [(&m, "origin"), (&e, "edge")] {
        let deltas = |class| count(m, "railproxy_deltas_total", mode, class);
        let stored = |class| count(m, "railproxy_versions_stored_total", mode, class);
        assert_eq!((deltas("per_user"), deltas("anonymous")), (3.0, 2.0), "{mode}: deltas by class");
        assert_eq!((stored("per_user"), stored("anonymous"), stored("refused")), (5.0, 4.0, 0.0), "{mode}: versions");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_response_says_not_to_keep_is_kept_nowhere() {
    let stack = Stack::start(Knobs {
        access_log: true,
        edge_route_extra: vec![("localhost".into(), "    store_no_store: true\n".into())],
        ..Knobs::default()
    })
    .await;
    let entries = |m: &Metrics| m.sum("railproxy_store_entries", &[]);
    let held = async || (entries(&stack.edge_metrics().await), entries(&stack.origin_metrics().await));
    let h = "127.0.0.1";
    let before = held().await;
    for (cookie, cc) in [(None, "no-store"), (Some("session=a"), "no-store"), (None, "private"), (None, "x, private")] {
        for n in 0..2 {
            get(&stack, h, SMALL, n, cookie, Some(cc)).await;
        }
        assert_eq!(held().await, before, "{cc} for {cookie:?}: nothing kept at either end");
    }
    assert!(bases(&stack, h, SMALL, 8).await.iter().all(|b| b == "no"), "never a base either");
    let refused = |m: &Metrics, mode| count(m, "railproxy_versions_stored_total", mode, "refused");
    assert_eq!(refused(&stack.edge_metrics().await, "edge"), 8.0);
    assert_eq!(refused(&stack.origin_metrics().await, "origin"), 8.0);

    // A page that was kept, then says no-store: what was kept of it goes too.
    get(&stack, h, PAGE, 0, None, None).await;
    let kept = held().await;
    assert_eq!(kept, (before.0 + 1.0, before.1 + 1.0));
    get(&stack, h, PAGE, 1, None, Some("no-store")).await;
    assert_eq!(held().await.0, before.0, "the edge dropped the URL's version");

    // A host opted in keeps no-store pages, and makes deltas from them.
    let first = get(&stack, "localhost", SMALL, 0, None, Some("no-store")).await;
    get(&stack, "localhost", SMALL, 1, None, Some("no-store")).await;
    assert_eq!(bases(&stack, "localhost", SMALL, 2).await, ["no".to_string(), id(&first)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_expire_after_version_ttl_at_both_ends() {
    let ttl = "  version_ttl: 1s\n";
    let stack = Stack::start(Knobs {
        access_log: true,
        edge_delta_extra: ttl.into(),
        origin_delta_extra: ttl.into(),
        ..Knobs::default()
    })
    .await;
    let entries = |m: &Metrics| m.sum("railproxy_store_entries", &[]);
    let stored = Instant::now();
    get(&stack, "127.0.0.1", PAGE, 0, None, None).await;
    // Both stores drop it by themselves, without another request for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (e, o) = (stack.edge_metrics().await, stack.origin_metrics().await);
        if entries(&e) == 0.0 && entries(&o) == 0.0 {
            println!("both stores empty {:?} after the version was stored (version_ttl 1s)", stored.elapsed());
            assert!(e.sum("railproxy_store_expired_total", &[]) >= 1.0);
            assert!(o.sum("railproxy_store_expired_total", &[]) >= 1.0);
            break;
        }
        assert!(Instant::now() < deadline, "still held after 10 s: edge {} origin {}", entries(&e), entries(&o));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stored.elapsed() >= Duration::from_secs(1), "expired before its ttl");
    get(&stack, "127.0.0.1", PAGE, 1, None, None).await;
    assert_eq!(bases(&stack, "127.0.0.1", PAGE, 2).await, ["no", "no"], "an expired version is no base");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_store_speaks_tls_with_a_client_certificate_and_auth_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let certs = integration::stack::make_certs(dir.path());
    let password = "correct horse battery staple";
    let redis = Redis::start_tls(dir.path(), &certs, password);
    let password_file = dir.path().join("redis.password");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let c = certs.display();
    let stack = Stack::start(Knobs {
        store: Some(redis.url()),
        origin_delta_extra: format!(
            "  store_tls:\n    ca: {c}/ca.pem\n    cert: {c}/edge.pem\n    key: {c}/edge.key\n  \
             store_password_file: {}\n",
            password_file.display()
        ),
        ..Knobs::default()
    })
    .await;
    // The listener connects to Redis in the background: the first pages may go without it.
    let puts = async || {
        Metrics::settled(stack.origin_admin)
            .await
            .sum("railproxy_store_operations_total", &[("op", "put"), ("result", "ok")])
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    while puts().await == 0.0 {
        assert!(
            Instant::now() < deadline,
            "nothing stored in Redis over TLS:\n{}",
            stack.origins[0].proc.as_ref().unwrap().log()
        );
        get(&stack, "127.0.0.1", PAGE, n % 30, None, None).await;
        n += 1;
    }
    let keys = redis.cli(&["KEYS", "railproxy:v:*"]);
    let key = keys.lines().next().expect("a version in Redis").to_string();
    let ttl: u64 = redis.cli(&["TTL", &key]).parse().unwrap();
    assert!((1..=600).contains(&ttl), "a version expires with delta.version_ttl (10 min): TTL {ttl}");
    // Versions come back from Redis as bases.
    let before =
        stack.origin_metrics().await.sum("railproxy_store_operations_total", &[("op", "get"), ("result", "hit")]);
    get(&stack, "127.0.0.1", PAGE, 29, None, None).await;
    let after =
        stack.origin_metrics().await.sum("railproxy_store_operations_total", &[("op", "get"), ("result", "hit")]);
    assert_eq!(after, before + 1.0, "the base came from Redis");
    // No-store pages add nothing to Redis: after them, one page that may be kept, and once
    // its write is done (writes go in order on one connection), one key more.
    let size: u64 = redis.cli(&["DBSIZE"]).parse().unwrap();
    for n in 0..3 {
        get(&stack, "127.0.0.1", SMALL, n, None, Some("no-store")).await;
    }
    let written = puts().await;
    get(&stack, "127.0.0.1", SMALL, 3, None, None).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while puts().await == written {
        assert!(Instant::now() < deadline, "the page that may be kept was not written");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(redis.cli(&["DBSIZE"]).parse::<u64>().unwrap(), size + 1, "no-store pages were written to Redis");
    let log = stack.origins[0].proc.as_ref().unwrap().log();
    assert!(!log.contains(password), "the password is in the origin's log");
}

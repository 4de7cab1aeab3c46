//! The tunnel is mutual TLS 1.3 on the private CA: the origin refuses any peer without an edge
//! certificate from its CA and with a name it lists, the edge refuses an origin with the wrong
//! CA, name or TLS version, and both reread their certificates on SIGHUP without dropping the
//! tunnel connections they have.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use integration::fake_origin::{FakeOrigin, tunnel_response};
use integration::process::{bin, free_port};
use integration::stack::{edge_yaml, make_certs, start_proxy};
use integration::tls_client::{Knock, knock, knock_from, not_after, plain};
use integration::{Http, Knobs, Metrics, Stack};

const ORIGIN_NAME: &str = "origin.railproxy.internal";

fn railproxy(args: &[&str]) {
    let out = std::process::Command::new(bin("railproxy")).args(args).output().expect("railproxy runs");
    assert!(out.status.success(), "railproxy {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `railproxy certs issue` from the stack's CA.
fn issue(certs: &Path, role: &str, names: &[&str], days: u32, out: &Path) -> (PathBuf, PathBuf) {
    let days = days.to_string();
    let mut args = vec![
        "certs",
        "issue",
        "--ca",
        certs.to_str().unwrap(),
        "--role",
        role,
        "--days",
        &days,
        "--out",
        out.to_str().unwrap(),
    ];
    for n in names {
        args.extend(["--name", n]);
    }
    railproxy(&args);
    (out.join(format!("{}.pem", names[0])), out.join(format!("{}.key", names[0])))
}

fn der(pem: &Path) -> Vec<u8> {
    let mut r = std::io::BufReader::new(std::fs::File::open(pem).unwrap());
    rustls_pemfile::certs(&mut r).next().unwrap().unwrap().to_vec()
}

async fn wait_metric(admin: std::net::SocketAddr, name: &str, labels: &[(&str, &str)], at_least: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = Metrics::scrape(admin).await.sum(name, labels);
        if v >= at_least || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_refuses_every_peer_but_an_edge_from_its_ca_with_a_listed_name() {
    let stack = Stack::start(Knobs::default()).await;
    let dir = stack.dir.path();
    let certs = dir.join("certs");
    let ca = certs.join("ca.pem");
    let (edge_cert, edge_key) = (certs.join("edge.pem"), certs.join("edge.key"));
    // Another CA's edge certificate, with the right name.
    railproxy(&["certs", "--out", dir.join("other").to_str().unwrap()]);
    let (other_cert, other_key) = (dir.join("other/edge.pem"), dir.join("other/edge.key"));
    // The right CA, a name the origin does not list.
    let (stranger_cert, stranger_key) = issue(&certs, "edge", &["stranger.example"], 730, &dir.join("stranger"));
    // The right CA and name, but a server (origin) certificate: not for client authentication.
    let (server_cert, server_key) =
        issue(&certs, "origin", &["edge.railproxy.internal"], 730, &dir.join("server-usage"));

    let path = "/cache/60/knock";
    let origin = stack.origin_addr;
    fn tls<'a>(ca: &'a Path, client: Option<(&'a Path, &'a Path)>, tls12: bool) -> Knock<'a> {
        Knock { ca, client, tls12, server_name: ORIGIN_NAME }
    }
    let refused = [
        ("no client certificate", tls(&ca, None, false)),
        ("client certificate from another CA", tls(&ca, Some((&other_cert, &other_key)), false)),
        ("client certificate with a name not in client_names", tls(&ca, Some((&stranger_cert, &stranger_key)), false)),
        ("server certificate used as a client certificate", tls(&ca, Some((&server_cert, &server_key)), false)),
        ("TLS 1.2 with the right client certificate", tls(&ca, Some((&edge_cert, &edge_key)), true)),
    ];
    for (what, k) in refused {
        let a = knock(origin, k, "127.0.0.1", path).await;
        eprintln!("{what}: handshake {:?}, then {} ({} bytes)", a.handshake, a.read_end, a.response.len());
        assert!(!a.served(), "{what}: the origin answered HTTP");
        assert!(a.response.is_empty(), "{what}: the origin sent bytes: {:?}", String::from_utf8_lossy(&a.response));
    }
    // Plain HTTP and HTTP/2 cleartext on the tunnel port: no HTTP answer either.
    for (what, bytes) in [
        ("plain HTTP/1.1", format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").into_bytes()),
        ("h2c prior knowledge", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()),
    ] {
        let back = plain(origin, &bytes).await;
        eprintln!("{what}: {} bytes back: {:?}", back.len(), String::from_utf8_lossy(&back[..back.len().min(40)]));
        assert!(!back.starts_with(b"HTTP/"), "{what}: the origin answered HTTP");
    }
    assert_eq!(stack.backend.hits("60/knock").await, 0, "a refused peer reached the backend");
    // The control: the edge's own certificate is served, and only its request reached the backend.
    let ok = knock(origin, tls(&ca, Some((&edge_cert, &edge_key)), false), "127.0.0.1", path).await;
    assert!(ok.served(), "the edge certificate was refused: {ok:?}");
    assert_eq!(stack.backend.hits("60/knock").await, 1);
    let m = stack.origin_metrics().await;
    let failures = |r: &str| m.sum("railproxy_tunnel_auth_failures_total", &[("reason", r)]);
    eprintln!("origin refusals: ca {}, name {}, tls12 {}", failures("ca"), failures("name"), failures("tls12"));
    assert!(failures("ca") >= 2.0, "other CA and wrong key usage are counted");
    assert_eq!(failures("name"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_allow_closes_connections_from_other_addresses_before_tls() {
    // The edge connects from 127.0.0.1; 127.0.0.2 (loopback too) is a stranger holding the
    // edge's own certificate: only its address keeps it out.
    let stack =
        Stack::start(Knobs { origin_tunnel_extra: "  allow: [127.0.0.1/32]\n".into(), ..Knobs::default() }).await;
    let certs = stack.dir.path().join("certs");
    let (ca, cert, key) = (certs.join("ca.pem"), certs.join("edge.pem"), certs.join("edge.key"));
    let k = Knock { ca: &ca, client: Some((&cert, &key)), tls12: false, server_name: ORIGIN_NAME };
    let outside = knock_from("127.0.0.2".parse().unwrap(), stack.origin_addr, k, "127.0.0.1").await;
    eprintln!("from 127.0.0.2: handshake {:?}, then {}", outside.handshake, outside.read_end);
    assert!(outside.handshake.is_err(), "a client outside tunnel.allow completed a TLS handshake");
    assert!(outside.server_cert.is_none(), "the origin showed its certificate outside tunnel.allow");
    let m = stack.origin_metrics().await;
    assert_eq!(m.sum("railproxy_tunnel_auth_failures_total", &[("reason", "address")]), 1.0);
    assert_eq!(m.sum("railproxy_tunnel_auth_failures_total", &[]), 1.0, "refused before TLS, not in it");

    let inside = knock_from("127.0.0.1".parse().unwrap(), stack.origin_addr, k, "127.0.0.1").await;
    assert!(inside.served(), "a client inside tunnel.allow was refused: {inside:?}");
    // And the edge, inside the list, is served as ever, byte-exact.
    let http = Http::h1();
    let through = http.get(&stack.url("/pages/generated-10k"), &[]).await.expect("through the edge");
    let direct = http.get(&format!("http://{}/pages/generated-10k", stack.backend.addr), &[]).await.unwrap();
    assert_eq!(through.status, 200);
    assert!(through.body == direct.body, "the page through the edge differs from the backend's");
}

type YamlEdit = Box<dyn Fn(String) -> String>;

/// An edge (real process) in front of a scripted TLS origin, with its YAML edited by `edit`.
async fn edge_against(fake: &FakeOrigin, dir: &Path, edit: impl Fn(String) -> String) -> (u16, String) {
    let port = free_port;
    let (addr, admin): (std::net::SocketAddr, std::net::SocketAddr) =
        (([127, 0, 0, 1], port()).into(), ([127, 0, 0, 1], port()).into());
    let yaml = edit(edge_yaml(dir, &Knobs::default(), addr, admin, &[fake.addr], fake.addr));
    let name = format!("edge-{}", addr.port());
    let _edge = start_proxy(dir, &name, "edge", &yaml, admin).await.expect("edge starts");
    let r = Http::h1().get(&format!("http://{addr}/pages/x"), &[]).await.expect("edge answers");
    let m = Metrics::settled(admin).await;
    let tls12 = m.sum("railproxy_tunnel_auth_failures_total", &[("reason", "tls12")]);
    (r.status.as_u16(), format!("{} (tls12 refusals {tls12})", String::from_utf8_lossy(&r.body).trim()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_refuses_an_origin_with_the_wrong_ca_name_or_tls_version() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    railproxy(&["certs", "--out", dir.path().join("other").to_str().unwrap()]);
    let script = || -> integration::fake_origin::Script {
        Box::new(|_, _| tunnel_response(None, &[], b"hello from the origin\n".to_vec()))
    };
    let good = FakeOrigin::start(&certs, script()).await;
    let tls12 = FakeOrigin::start_with(&certs, &[&rustls::version::TLS12], script()).await;
    let other_ca = dir.path().join("other/ca.pem");
    let cases: Vec<(&str, &FakeOrigin, YamlEdit, u16)> = vec![
        ("the right CA, name and TLS 1.3", &good, Box::new(|y| y), 200),
        (
            "an origin certificate without the configured server_name",
            &good,
            Box::new(|y: String| y.replace("tunnel:\n", "tunnel:\n  server_name: other-origin.example\n")),
            502,
        ),
        (
            "an origin certificate from a CA the edge does not pin",
            &good,
            Box::new(move |y: String| {
                y.replace(&format!("ca: {}", certs.join("ca.pem").display()), &format!("ca: {}", other_ca.display()))
            }),
            502,
        ),
        ("an origin that speaks TLS 1.2 only", &tls12, Box::new(|y| y), 502),
    ];
    for (what, fake, edit, want) in cases {
        let (status, body) = edge_against(fake, dir.path(), edit).await;
        eprintln!("{what}: {status} {body}");
        assert_eq!(status, want, "{what}: {body}");
    }
    assert_eq!(good.requests().len(), 1, "only the control request reached the origin");
    assert!(tls12.requests().is_empty(), "a request crossed over TLS 1.2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_on_sighup_and_tunnel_connections_stay_up() {
    let stack = Stack::start(Knobs::default()).await;
    let certs = stack.dir.path().join("certs");
    let (ca, edge_cert, edge_key) = (certs.join("ca.pem"), certs.join("edge.pem"), certs.join("edge.key"));
    let k = Knock { ca: &ca, client: Some((&edge_cert, &edge_key)), tls12: false, server_name: ORIGIN_NAME };
    let http = Http::h1();
    let page = |i: usize| (stack.url("/pages/generated-10k"), i.to_string());
    let (url, v) = page(0);
    assert_eq!(http.get(&url, &[("x-version", &v)]).await.unwrap().status, 200);
    let before = knock(stack.origin_addr, k, "127.0.0.1", "/").await;
    assert!(before.served());
    assert_eq!(before.server_cert.as_deref(), Some(&der(&certs.join("origin.pem"))[..]));
    // Both sides publish when the certificate they use expires.
    let expiry_of = |admin, cert| async move {
        Metrics::scrape(admin).await.sum("railproxy_tls_certificate_expiry_timestamp_seconds", &[("cert", cert)]) as i64
    };
    let expiry = |admin| expiry_of(admin, "tunnel");
    assert_eq!(expiry(stack.origin_admin).await, not_after(&certs.join("origin.pem")));
    assert_eq!(expiry(stack.edge_admin).await, not_after(&edge_cert));
    for admin in [stack.origin_admin, stack.edge_admin] {
        assert_eq!(expiry_of(admin, "ca").await, not_after(&ca), "the CA's expiry");
    }

    // Rotate: a new origin certificate from the same CA (valid 100 days, not the first one's 730)
    // replaces the files, then SIGHUP.
    let (new_cert, new_key) =
        issue(&certs, "origin", &[ORIGIN_NAME, "localhost", "127.0.0.1"], 100, &stack.dir.path().join("new"));
    std::fs::copy(&new_cert, certs.join("origin.pem")).unwrap();
    std::fs::copy(&new_key, certs.join("origin.key")).unwrap();
    let origin_admin = stack.origin_admin;
    stack.origins[0].proc.as_ref().unwrap().signal("HUP");
    let ok = wait_metric(origin_admin, "railproxy_tls_reloads_total", &[("result", "ok")], 1.0).await;
    assert_eq!(ok, 1.0, "the origin did not reload on SIGHUP");
    let after = knock(stack.origin_addr, k, "127.0.0.1", "/").await;
    assert!(after.served());
    assert_eq!(after.server_cert.as_deref(), Some(&der(&new_cert)[..]), "new handshakes get the new certificate");
    assert_eq!(expiry(origin_admin).await, not_after(&new_cert), "the expiry of the certificate now in use");
    // Every connection so far: the edge's (requests and probes) and the two knocks.
    let connections = stack.origin_metrics().await.sum("railproxy_tunnel_connections_total", &[("mode", "origin")]);
    // The edge's tunnel connection was not dropped: the next requests reuse it.
    for i in 1..4 {
        let (url, v) = page(i);
        assert_eq!(http.get(&url, &[("x-version", &v)]).await.unwrap().status, 200);
    }
    let m = stack.origin_metrics().await;
    assert_eq!(m.sum("railproxy_tunnel_connections_total", &[("mode", "origin")]), connections, "reconnected");

    // A broken file: the reload is refused, the certificate in use stays, the process serves on.
    std::fs::write(certs.join("origin.pem"), "not a certificate\n").unwrap();
    stack.origins[0].proc.as_ref().unwrap().signal("HUP");
    let failed = wait_metric(origin_admin, "railproxy_tls_reloads_total", &[("result", "error")], 1.0).await;
    assert_eq!(failed, 1.0);
    let still = knock(stack.origin_addr, k, "127.0.0.1", "/").await;
    assert!(still.served());
    assert_eq!(still.server_cert.as_deref(), Some(&der(&new_cert)[..]));
    assert_eq!(expiry(origin_admin).await, not_after(&new_cert), "a refused reload changed the expiry");

    // CA rotation: a file with both the old and a new CA lets edges of either in.
    std::fs::copy(&new_cert, certs.join("origin.pem")).unwrap();
    let next = stack.dir.path().join("next-ca");
    railproxy(&["certs", "--out", next.to_str().unwrap()]);
    let next_edge = (next.join("edge.pem"), next.join("edge.key"));
    let k_next = Knock { client: Some((&next_edge.0, &next_edge.1)), ..k };
    assert!(!knock(stack.origin_addr, k_next, "127.0.0.1", "/").await.served(), "the new CA is trusted too early");
    let bundle = std::fs::read_to_string(&ca).unwrap() + &std::fs::read_to_string(next.join("ca.pem")).unwrap();
    std::fs::write(&ca, bundle).unwrap();
    stack.origins[0].proc.as_ref().unwrap().signal("HUP");
    assert_eq!(wait_metric(origin_admin, "railproxy_tls_reloads_total", &[("result", "ok")], 2.0).await, 2.0);
    assert!(knock(stack.origin_addr, k_next, "127.0.0.1", "/").await.served(), "an edge of the new CA");
    // The bundle's first certificate is the old CA.
    let earliest = not_after(&next.join("ca.pem")).min(not_after(&ca));
    assert_eq!(expiry_of(origin_admin, "ca").await, earliest, "the first CA of the bundle to expire");
    assert!(knock(stack.origin_addr, k, "127.0.0.1", "/").await.served(), "an edge of the old CA");

    // The edge rereads its CA and client certificate the same way.
    stack.edge.signal("HUP");
    let edge_ok = wait_metric(stack.edge_admin, "railproxy_tls_reloads_total", &[("result", "ok")], 1.0).await;
    assert_eq!(edge_ok, 1.0, "the edge did not reload on SIGHUP");
    let (url, v) = page(4);
    assert_eq!(http.get(&url, &[("x-version", &v)]).await.unwrap().status, 200);
    // A client key that is not the certificate's is refused at reload, not used in handshakes.
    let edge_key_before = std::fs::read(&edge_key).unwrap();
    std::fs::copy(certs.join("origin.key"), &edge_key).unwrap();
    stack.edge.signal("HUP");
    let refused = wait_metric(stack.edge_admin, "railproxy_tls_reloads_total", &[("result", "error")], 1.0).await;
    assert_eq!(refused, 1.0, "the edge took a key that is not its certificate's");
    std::fs::write(&edge_key, edge_key_before).unwrap();
    // And it serves on with the pair it had.
    let (url, v) = page(5);
    assert_eq!(http.get(&url, &[("x-version", &v)]).await.unwrap().status, 200);
}

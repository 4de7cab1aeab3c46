//! Backends and hosts as operators configure them: DNS names (from the hosts file and from a DNS
//! server on loopback whose answers change), `https://` and `h2c://` backends, gRPC through the
//! tunnel, wildcard and default hosts, path routes, weights, least-requests, and `/ready`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use integration::Http;
use integration::dns::Dns;
use integration::named::Named;
use integration::process::{railproxy, text};
use integration::stack::{Knobs, Stack};

/// GET `path` on the edge as host `host`: status and body.
async fn get(stack: &Stack, host: &str, path: &str) -> (u16, String) {
    let r = Http::h1().get(&stack.url(path), &[("host", host)]).await.expect("a response");
    (r.status.as_u16(), String::from_utf8_lossy(&r.body).into_owned())
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A stack whose origins serve `hosts` (YAML, indented two spaces) and resolve names with `dns`,
/// and whose edge sends `edge_hosts` to them.
async fn stack_with(hosts: String, edge_hosts: &[&str], origin_extra: String) -> Stack {
    Stack::start(Knobs {
        origin_hosts: hosts,
        edge_origins: edge_hosts.iter().map(|h| h.to_string()).collect(),
        origin_extra,
        ..Knobs::default()
    })
    .await
}

fn dns_section(dns: &Dns) -> String {
    format!("dns:\n  servers: [{}]\n  min_ttl: 1s\n  max_ttl: 5m\n  retry: 500ms\n", dns.addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_schemes_reach_their_backends() {
    let dns = Dns::start().await;
    dns.set("app.test", &[Ipv4Addr::LOCALHOST], 60);
    // The name in the origin certificate `make_certs` issues: the https backend presents it.
    dns.set("origin.railproxy.internal", &[Ipv4Addr::LOCALHOST], 60);
    let certs = tempfile::tempdir().unwrap();
    let c = integration::stack::make_certs(certs.path());
    let plain = Named::start("plain", any_port(), None).await;
    let h2 = Named::start("h2c", any_port(), None).await;
    let pair = (c.join("origin.pem"), c.join("origin.key"));
    let tls = Named::start("tls", any_port(), Some((&pair.0, &pair.1))).await;
    let untrusted = Named::start("untrusted", any_port(), Some((&pair.0, &pair.1))).await;
    let hosts = format!(
        "  plain.test:\n    backends: [app.test:{p}]\n\
         \x20 http.test:\n    backends: [\"http://app.test:{p}\"]\n\
         \x20 local.test:\n    backends: [localhost:{p}]\n\
         \x20 h2c.test:\n    backends: [\"h2c://app.test:{h}\"]\n\
         \x20 tls.test:\n    backends: [\"https://origin.railproxy.internal:{t}\"]\n    tls:\n      ca: {ca}\n\
         \x20 untrusted.test:\n    backends: [\"https://origin.railproxy.internal:{u}\"]\n\
         \x20 pooled.test:\n    backends: [\"https://origin.railproxy.internal:{t}\"]\n",
        p = plain.addr.port(),
        h = h2.addr.port(),
        t = tls.addr.port(),
        u = untrusted.addr.port(),
        ca = c.join("ca.pem").display(),
    );
    let edge_hosts = ["plain.test", "http.test", "local.test", "h2c.test", "tls.test", "untrusted.test", "pooled.test"];
    let stack = Stack::start(Knobs {
        origin_hosts: hosts,
        edge_origins: edge_hosts.iter().map(|h| h.to_string()).collect(),
        origin_extra: dns_section(&dns),
        // The edge names its origin listener too (resolved from the hosts file).
        listener_host: Some("localhost".into()),
        ..Knobs::default()
    })
    .await;
    assert_eq!(get(&stack, "plain.test", "/a").await, (200, "plain HTTP/1.1 /a\n".into()));
    assert_eq!(get(&stack, "http.test", "/b").await, (200, "plain HTTP/1.1 /b\n".into()));
    assert_eq!(get(&stack, "local.test", "/c").await, (200, "plain HTTP/1.1 /c\n".into()));
    assert_eq!(get(&stack, "h2c.test", "/d").await, (200, "h2c HTTP/2.0 /d\n".into()), "h2c: prior knowledge");
    assert_eq!(get(&stack, "tls.test", "/e").await, (200, "tls HTTP/2.0 /e\n".into()), "https: ALPN h2, verified");
    // Verified against the system roots, which do not hold the private CA: refused.
    let (status, body) = get(&stack, "untrusted.test", "/f").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(untrusted.hits(), 0, "the refused handshake never carried a request");
    // Nor does a host without the CA ride on the connection another host verified with it.
    let (status, body) = get(&stack, "pooled.test", "/g").await;
    assert_eq!((status, tls.hits()), (502, 1), "{body}");
    let m = stack.origin_metrics().await;
    assert!(m.sum("railproxy_dns_lookups_total", &[("result", "ok")]) >= 2.0, "names were looked up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_is_looked_up_again_when_its_answer_expires_or_its_address_fails() {
    let dns = Dns::start().await;
    dns.set("app.test", &[Ipv4Addr::LOCALHOST], 1);
    let first = Named::start("first", any_port(), None).await;
    let port = first.addr.port();
    // The same port on another loopback address: only DNS tells them apart.
    let second = Named::start("second", SocketAddr::from(([127, 0, 0, 2], port)), None).await;
    let hosts = format!("  app.test:\n    backends: [app.test:{port}]\n");
    let stack = stack_with(hosts, &["app.test"], dns_section(&dns)).await;
    assert_eq!(get(&stack, "app.test", "/").await.1, "first HTTP/1.1 /\n");

    // A TTL of 1 s: the new answer is used within a few seconds.
    dns.set("app.test", &[Ipv4Addr::new(127, 0, 0, 2)], 300);
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(&stack, "app.test", "/").await;
        if body.starts_with("second") {
            break;
        }
        assert!(Instant::now() < until && status == 200, "still {status} {body} after 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Now held for 5 minutes (max_ttl). The name moves back and the old address dies: the
    // failure, not the TTL, has it looked up again.
    dns.set("app.test", &[Ipv4Addr::LOCALHOST], 300);
    drop(second);
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(&stack, "app.test", "/").await;
        if status == 200 && body.starts_with("first") {
            break;
        }
        assert!(Instant::now() < until, "still {status} {body} 10 s after the address died");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dns.queries() >= 3, "{} queries", dns.queries());
}

fn origin_file(dir: &std::path::Path, hosts: &str, dns: &Dns) -> std::path::PathBuf {
    let c = dir.join("certs");
    if !c.exists() {
        integration::stack::make_certs(dir);
    }
    let yaml = format!(
        "mode: origin\nadmin:\n  listen: 127.0.0.1:1\ntunnel:\n  listen: [127.0.0.1:2]\n  cert: {c}/origin.pem\n  \
         key: {c}/origin.key\n  client_ca: {c}/ca.pem\nhosts:\n{hosts}{dns}",
        c = c.display(),
        dns = dns_section(dns),
    );
    let file = dir.join("origin.yaml");
    std::fs::write(&file, yaml).unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_lists_every_problem_and_names_that_do_not_resolve() {
    let dns = Dns::start().await;
    dns.set("app.test", &[Ipv4Addr::LOCALHOST], 60);
    let dir = tempfile::tempdir().unwrap();
    let bad = origin_file(
        dir.path(),
        "  a.test:\n    backends: [nowhere.test:80, \"ftp://app.test:21\"]\n  \"*.\":\n    backends: [app.test:80]\n  \
         b.test:\n    routes:\n      - { path: api/, backends: [app.test:80] }\n",
        &dns,
    );
    let check = |file: &std::path::Path| {
        let dir = file.parent().unwrap().to_path_buf();
        async move { tokio::task::spawn_blocking(move || railproxy(&dir, &["check", "-c", "origin.yaml"])).await.unwrap() }
    };
    let out = check(&bad).await;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(64), "{said}");
    for expected in ["not a backend scheme", "not a host name", "must start with /"] {
        assert!(said.contains(expected), "{expected:?} missing from:\n{said}");
    }
    // The file's other problems are listed; names resolve once the file is otherwise sound.
    let unresolved = origin_file(dir.path(), "  a.test:\n    backends: [nowhere.test:80, app.test:80]\n", &dns);
    let out = check(&unresolved).await;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(64), "{said}");
    assert!(said.contains("hosts.a.test.backends") && said.contains("nowhere.test does not resolve"), "{said}");
    let optional = origin_file(
        dir.path(),
        "  a.test:\n    backends: [{address: nowhere.test:80, optional: true}, app.test:80]\n",
        &dns,
    );
    let out = check(&optional).await;
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_default_and_path_routes_pick_the_most_specific() {
    let [exact, wild, api, deflt] = [
        Named::start("exact", any_port(), None).await,
        Named::start("wild", any_port(), None).await,
        Named::start("api", any_port(), None).await,
        Named::start("default", any_port(), None).await,
    ];
    let hosts = format!(
        "  a.wild.test:\n    backends: [{e}]\n\
         \x20 \"*.wild.test\":\n    backends: [{w}]\n    routes:\n      - {{ path: /api/, backends: [{a}] }}\n\
         \x20 default:\n    backends: [{d}]\n\
         \x20 routes.test:\n    routes:\n      - {{ path: /api/, backends: [{a}] }}\n",
        e = exact.addr,
        w = wild.addr,
        a = api.addr,
        d = deflt.addr,
    );
    let stack = stack_with(hosts, &["*.wild.test", "default", "routes.test"], String::new()).await;
    for (host, path, want) in [
        ("a.wild.test", "/x", "exact"),
        ("a.wild.test", "/api/x", "exact"),
        ("b.wild.test", "/x", "wild"),
        ("c.d.wild.test", "/x", "wild"),
        ("b.wild.test", "/api/v1", "api"),
        ("b.wild.test", "/apix", "wild"),
        ("wild.test", "/x", "default"),
        ("other.example.org", "/x", "default"),
    ] {
        let (status, body) = get(&stack, host, path).await;
        assert_eq!((status, body.split(' ').next().unwrap()), (200, want), "{host}{path}: {body}");
    }
    // A host served only by routes: its other paths are nobody's.
    assert_eq!(get(&stack, "routes.test", "/api/x").await.1, "api HTTP/1.1 /api/x\n");
    let (status, body) = get(&stack, "routes.test", "/other").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no route"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_share_requests_and_least_requests_avoids_a_busy_backend() {
    let [heavy, light] = [Named::start("heavy", any_port(), None).await, Named::start("light", any_port(), None).await];
    let hosts = format!(
        "  w.test:\n    backends: [{{address: \"{h}\", weight: 3}}, \"{l}\"]\n",
        h = heavy.addr,
        l = light.addr
    );
    let stack = stack_with(hosts, &["w.test"], String::new()).await;
    for _ in 0..40 {
        assert_eq!(get(&stack, "w.test", "/").await.0, 200);
    }
    let (h, l) = (heavy.hits(), light.hits());
    assert!((25..=35).contains(&h) && h + l == 40, "weight 3 to 1: {h} and {l}");
    drop(stack);

    let [busy, idle] = [Named::start("busy", any_port(), None).await, Named::start("idle", any_port(), None).await];
    let hosts = format!("  lr.test:\n    backends: [\"{}\", \"{}\"]\n", busy.addr, idle.addr);
    let stack = Stack::start(Knobs {
        origin_hosts: hosts,
        edge_origins: vec!["lr.test".into()],
        origin_backend_extra: "  balance: least_requests\n".into(),
        ..Knobs::default()
    })
    .await;
    let url = stack.url("/slow");
    let slow = tokio::spawn(async move { Http::h1().get(&url, &[("host", "lr.test")]).await.map(|r| r.body) });
    // Once the slow request is at one backend, every other request goes to the other.
    let until = Instant::now() + Duration::from_secs(5);
    while busy.hits() + idle.hits() == 0 {
        assert!(Instant::now() < until, "the slow request never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (slow_one, other) = if busy.hits() == 1 { (&busy, &idle) } else { (&idle, &busy) };
    for _ in 0..10 {
        assert_eq!(get(&stack, "lr.test", "/fast").await.0, 200);
    }
    assert_eq!((slow_one.hits(), other.hits()), (1, 10), "fast requests avoided the busy backend");
    assert!(slow.await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_says_which_hosts_have_no_upstream_up() {
    let up = Named::start("up", any_port(), None).await;
    let dead = integration::process::free_loopback();
    let hosts = format!("  up.test:\n    backends: [\"{}\"]\n  down.test:\n    backends: [\"{dead}\"]\n", up.addr);
    let mut stack = stack_with(hosts, &["up.test"], String::new()).await;
    let http = Http::h1();
    let ready = |admin: SocketAddr| {
        let http = http.clone();
        async move { http.get(&format!("http://{admin}/ready"), &[]).await.expect("admin answers") }
    };
    // The origin: liveness yes, readiness no, and it says which host lacks a backend.
    let until = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = ready(stack.origin_admin).await;
        if r.status.as_u16() == 503 || Instant::now() > until {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert_eq!(r.status.as_u16(), 503, "{body}");
    assert!(body.contains("hosts.down.test") && !body.contains("hosts.up.test"), "{body}");
    let health = http.get(&format!("http://{}/health", stack.origin_admin), &[]).await.unwrap();
    assert_eq!(health.status.as_u16(), 200, "liveness is not readiness");
    // The edge: ready while its origin listener is up, not once it is gone.
    assert_eq!(ready(stack.edge_admin).await.status.as_u16(), 200);
    stack.kill_origin(0);
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let r = ready(stack.edge_admin).await;
        if r.status.as_u16() == 503 {
            assert!(String::from_utf8_lossy(&r.body).contains("no origin listener is up"));
            break;
        }
        assert!(Instant::now() < until, "the edge still ready 10 s after its only origin died");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

mod grpc {
    use super::*;
    use tonic_health::pb::health_check_response::ServingStatus as Wire;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_server::HealthServer};
    use tonic_health::server::HealthReporter;

    async fn grpc_backend() -> (SocketAddr, HealthReporter, tokio::task::JoinHandle<()>) {
        let (reporter, service): (HealthReporter, HealthServer<_>) = tonic_health::server::health_reporter();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let _ = tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming).await;
        });
        (addr, reporter, task)
    }

    fn req(service: &str) -> HealthCheckRequest {
        HealthCheckRequest { service: service.into() }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grpc_unary_and_streaming_calls_cross_with_their_trailers() {
        let (backend, reporter, task) = grpc_backend().await;
        let hosts = format!("  grpc.test:\n    backends: [\"h2c://{backend}\"]\n");
        let stack = stack_with(hosts, &["grpc.test"], String::new()).await;
        // HTTP/2 with prior knowledge to the edge, as grpc.test.
        let channel = tonic::transport::Endpoint::from_shared(stack.url(""))
            .unwrap()
            .origin("http://grpc.test".parse().unwrap())
            .connect()
            .await
            .expect("the edge takes h2c");
        let mut client = HealthClient::new(channel);

        // Unary: the answer, and a status that travels in the trailers (grpc-status: 5).
        let ok = client.check(req("")).await.expect("unary call").into_inner();
        assert_eq!(ok.status, Wire::Serving as i32);
        let missing = client.check(req("no.such.Service")).await.expect_err("an unknown service");
        assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");

        // Server streaming: each status change arrives as it happens.
        reporter.set_service_status("shop.Cart", tonic_health::ServingStatus::NotServing).await;
        let mut watch = client.watch(req("shop.Cart")).await.expect("streaming call").into_inner();
        let first = tokio::time::timeout(Duration::from_secs(5), watch.message()).await.unwrap().unwrap().unwrap();
        assert_eq!(first.status, Wire::NotServing as i32);
        reporter.set_service_status("shop.Cart", tonic_health::ServingStatus::Serving).await;
        let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .expect("the change streams through, not at the end")
            .unwrap()
            .unwrap();
        assert_eq!(next.status, Wire::Serving as i32);
        drop(watch);
        task.abort();
        let m = stack.origin_metrics().await;
        let coded = ["dcz", "zstd"].map(|e| m.sum("railproxy_delta_raw_bytes_total", &[("encoding", e)]));
        assert_eq!(coded, [0.0, 0.0], "gRPC is never delta-coded or compressed on the tunnel");
        assert!(m.sum("railproxy_delta_raw_bytes_total", &[("encoding", "identity")]) > 0.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_follows_its_listener_name_to_a_new_address() {
    let dns = Dns::start().await;
    dns.set("listeners.test", &[Ipv4Addr::LOCALHOST], 1);
    let mut stack = Stack::start(Knobs {
        listener_host: Some("listeners.test".into()),
        edge_extra: dns_section(&dns),
        ..Knobs::default()
    })
    .await;
    assert_eq!(get(&stack, "localhost", "/health").await.0, 200);
    // A second origin listener on the same port of another loopback address, found only by
    // the name's new answer.
    let port = stack.origin_addr.port();
    let admin = integration::process::free_loopback();
    let yaml = stack.origins[0]
        .yaml
        .replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.2:{port}"))
        .replace(&stack.origin_admin.to_string(), &admin.to_string())
        .replace("origin-upgrade.sock", "origin2-upgrade.sock")
        .replace("origin.pid", "origin2.pid");
    let _moved = integration::stack::start_proxy(stack.dir.path(), "moved", "origin", &yaml, admin)
        .await
        .expect("the second origin listener starts");
    stack.kill_origin(0);
    dns.set("listeners.test", &[Ipv4Addr::new(127, 0, 0, 2)], 1);
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = get(&stack, "localhost", "/health").await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < until, "still {status} {body} 15 s after the name moved");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = Http::h1().get(&format!("http://{}/ready", stack.edge_admin), &[]).await.unwrap();
    assert_eq!(r.status.as_u16(), 200, "{}", String::from_utf8_lossy(&r.body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_fallback_by_name_is_looked_up_when_used() {
    let dns = Dns::start().await;
    dns.set("listeners.test", &[Ipv4Addr::LOCALHOST], 1);
    let mut stack = Stack::start(Knobs {
        listener_host: Some("listeners.test".into()),
        fallback: "direct".into(),
        edge_extra: dns_section(&dns),
        ..Knobs::default()
    })
    .await;
    stack.kill_origin(0);
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let m = stack.edge_metrics().await;
        let (status, _) = get(&stack, "localhost", "/health").await;
        if status == 200 && m.sum("railproxy_fallbacks_total", &[("kind", "direct")]) > 0.0 {
            break;
        }
        assert!(Instant::now() < until, "no direct answer 10 s after the origin died");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The name moves where nothing listens: the fallback follows it, and says why it fails.
    dns.set("listeners.test", &[Ipv4Addr::new(127, 0, 0, 3)], 1);
    let until = Instant::now() + Duration::from_secs(10);
    while get(&stack, "localhost", "/health").await.0 == 200 {
        assert!(Instant::now() < until, "the direct fallback never looked its name up again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

//! Origins that dial out (`tunnel.dial`): no inbound port at the origin, lanes held to the
//! edge's connector listener, only a tunnel's own certificate admitted, a replica drained
//! without losing a request, an edge restart survived. (The other families run over dial-out
//! too, with `RAILPROXY_TEST_TUNNEL=dial-out`: see the Makefile's `test-dial-out`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use delta::testing;
use integration::client::get_versions_byte_exact;
use integration::metrics::Metrics;
use integration::process::{railproxy, text};
use integration::stack::{TUNNEL, start_proxy};
use integration::tls_client::{Knock, knock_with};
use integration::{Http, Knobs, Stack};

fn dialling(k: Knobs) -> Knobs {
    Knobs { dial_out: true, ..k }
}

/// The TCP ports process `pid` listens on.
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // State 0A is LISTEN.
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                let port = f[1].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
                ports.extend(port);
            }
        }
    }
    ports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_dials_out_listens_nowhere_and_serves_deltas_byte_exact() {
    let stack = Stack::start(dialling(Knobs::default())).await;
    let origin = stack.origins[0].proc.as_ref().expect("origin").pid();
    assert_eq!(
        listening_ports(origin),
        vec![stack.origin_admin.port()],
        "the origin listens on its admin port and nothing else"
    );
    let versions = &testing::generated_sets()[1].versions;
    let n = get_versions_byte_exact(&Http::h1(), &stack.url("/pages/generated-100k"), versions, 1000).await;
    let m = stack.edge_metrics().await;
    let dcz = m.sum("railproxy_delta_wire_bytes_total", &[("encoding", "dcz")]);
    let raw = m.sum("railproxy_delta_raw_bytes_total", &[("encoding", "dcz")]);
    assert!(dcz > 0.0 && dcz * 10.0 < raw, "deltas cross: {dcz} wire bytes for {raw}");
    assert_eq!(m.sum("railproxy_dialout_lanes", &[("tunnel", TUNNEL)]), 4.0);
    // The lanes' connections pool: a handful, not one per request.
    let opened = m.sum("railproxy_tunnel_connections_total", &[("mode", "edge")]);
    assert!((1.0..=4.0).contains(&opened), "{opened} tunnel connections for {n} requests");
    // The origin's side: four request lanes and four WebSocket lanes dialled once each, the
    // four request lanes held.
    let o = stack.origin_metrics().await;
    assert_eq!(o.sum("railproxy_dialout_dials_total", &[("result", "ok")]), 8.0);
    assert_eq!(o.sum("railproxy_dialout_dials_total", &[("result", "error")]), 0.0);
    assert_eq!(o.sum("railproxy_dialout_connected_lanes", &[]), 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_lane_the_edge_waits_then_answers_502_naming_the_tunnel_and_a_late_lane_serves() {
    let mut stack = Stack::start(dialling(Knobs::default())).await;
    stack.kill_origin(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Metrics::scrape(stack.edge_admin).await.sum("railproxy_dialout_lanes", &[]) > 0.0 {
        assert!(Instant::now() < deadline, "the killed origin's lanes are still held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let r = Http::h1().get(&stack.url("/pages/generated-10k"), &[]).await.expect("GET");
    let waited = started.elapsed();
    let body = String::from_utf8_lossy(&r.body).to_string();
    assert_eq!(r.status, 502, "{body}");
    assert!(body.contains(&format!("no origin of tunnel {TUNNEL} is connected")), "{body}");
    assert!(!body.contains("127.0.0.1:"), "the answer names no address: {body}");
    assert!(waited >= Duration::from_millis(1900) && waited < Duration::from_secs(4), "waited {waited:?} (wait: 2s)");
    let ready = Http::h1().get(&format!("http://{}/ready", stack.edge_admin), &[]).await.expect("ready");
    assert_eq!(ready.status, 503);
    assert!(String::from_utf8_lossy(&ready.body).contains(&format!("connectors.tunnels.{TUNNEL}: no origin")));
    // What RailproxyTunnelNoLane alerts on.
    let up = |m: Metrics| m.sum("railproxy_dialout_tunnel_up", &[("tunnel", TUNNEL)]);
    assert_eq!(up(Metrics::scrape(stack.edge_admin).await), 0.0);
    // A request waiting for a lane is served by the first one that arrives.
    let url = stack.url("/pages/generated-10k");
    let waiting = tokio::spawn(async move { Http::h1().get(&url, &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack.restart_origin(0).await;
    let r = waiting.await.expect("task").expect("GET");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.body == testing::generated_sets()[0].versions[0][..]);
    assert_eq!(up(Metrics::scrape(stack.edge_admin).await), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_configured_tunnels_certificate_gets_a_lane() {
    let stack = Stack::start(dialling(Knobs::default())).await;
    let certs = stack.dir.path().join("certs");
    // Another CA's tunnel certificate for the same name, and this CA's for another tunnel.
    let other = stack.dir.path().join("other");
    let o = railproxy(stack.dir.path(), &["certs", "--out", other.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let o = railproxy(
        stack.dir.path(),
        &[
            "certs",
            "issue",
            "--ca",
            certs.to_str().unwrap(),
            "--role",
            "tunnel",
            "--name",
            "intruder",
            "--out",
            certs.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let ca = certs.join("ca.pem");
    let pair = |dir: &std::path::Path, stem: &str| (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}.key")));
    let (edge, intruder, foreign) =
        (pair(&certs, "edge"), pair(&certs, "tunnel-intruder"), pair(&other, "tunnel-demo"));
    let cases: [(&str, Option<(&std::path::Path, &std::path::Path)>); 4] = [
        ("no client certificate", None),
        ("an edge's certificate of the same CA", Some((&edge.0, &edge.1))),
        ("a tunnel not configured here", Some((&intruder.0, &intruder.1))),
        ("the right tunnel name from another CA", Some((&foreign.0, &foreign.1))),
    ];
    let hello = "RPXL\u{1}\u{0}\u{5}rogue";
    for (what, client) in cases {
        let k = Knock { ca: &ca, client, tls12: false, server_name: "connector.railproxy.internal" };
        let a = knock_with(stack.origin_addr, k, hello).await;
        assert!(a.response.is_empty(), "{what}: answered {:?}", String::from_utf8_lossy(&a.response));
        // The lane count is the origin's four, and requests keep being served.
        let m = Metrics::scrape(stack.edge_admin).await;
        assert_eq!(m.sum("railproxy_dialout_lanes", &[]), 4.0, "{what}: a lane was admitted");
        let r = Http::h1().get(&stack.url("/pages/generated-10k"), &[]).await.expect("GET");
        assert_eq!(r.status, 200, "{what}");
    }
    let m = Metrics::scrape(stack.edge_admin).await;
    // The origin's four request lanes and four WebSocket lanes.
    assert_eq!(m.sum("railproxy_dialout_registrations_total", &[("result", "registered")]), 8.0);
    let refused = m.sum("railproxy_dialout_registrations_total", &[]) - 8.0;
    assert_eq!(refused, 4.0, "every knock counted as refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_half_open_connections_cost_connected_tunnels_nothing() {
    let stack = Stack::start(dialling(Knobs::default())).await;
    // 1,000 connections that never say a word, from one address: most are closed unread (16 may
    // handshake at once per address), the rest time out; the tunnel's lanes serve throughout.
    let mut idle = Vec::new();
    for _ in 0..1000 {
        if let Ok(s) = tokio::net::TcpStream::connect(stack.origin_addr).await {
            idle.push(s);
        }
    }
    let http = Http::h1();
    for _ in 0..50 {
        let r = http.get(&stack.url("/pages/generated-10k"), &[]).await.expect("GET beside idle connections");
        assert_eq!(r.status, 200);
    }
    let m = Metrics::scrape(stack.edge_admin).await;
    assert!(m.sum("railproxy_dialout_registrations_total", &[("result", "busy")]) > 900.0);
    drop(idle);
}

/// Clients fetching versions of one page until `stop`; every answer checked.
fn load(
    stack: &Stack,
    clients: usize,
    stop: &Arc<AtomicBool>,
    ok: &Arc<AtomicU64>,
    failed: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let versions: Arc<Vec<Bytes>> =
        Arc::new(testing::generated_sets()[0].versions.iter().map(|v| Bytes::from(v.clone())).collect());
    (0..clients)
        .map(|c| {
            let (url, versions, stop, ok, failed) =
                (stack.url("/pages/generated-10k"), versions.clone(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                let http = Http::h1();
                let mut i = c;
                while !stop.load(Ordering::Relaxed) {
                    let v = i % versions.len();
                    i += 1;
                    match http.get(&url, &[("x-version", &v.to_string())]).await {
                        Ok(r) if r.status == 200 && r.body == versions[v] => ok.fetch_add(1, Ordering::Relaxed),
                        other => {
                            eprintln!(
                                "failed: {:?}",
                                other.map(|r| (r.status, String::from_utf8_lossy(&r.body).to_string()))
                            );
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_two_replicas_under_load_loses_no_request() {
    let mut stack = Stack::start(dialling(Knobs { origins: 2, ..Knobs::default() })).await;
    let (stop, ok, failed) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients = load(&stack, 8, &stop, &ok, &failed);
    // The first replica stopped (SIGTERM) and started again; the second upgraded in place (a
    // new process with --upgrade, then SIGQUIT to the old one).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut old = stack.origins[0].proc.take().expect("replica");
    old.signal("TERM");
    assert!(old.wait_exit(Duration::from_secs(10)).is_some(), "replica 0 did not exit:\n{}", old.log());
    stack.restart_origin(0).await;
    stack.wait_lanes(8).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.upgrade_origin(1).await;
    stack.wait_lanes(8).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("rolling restart: {ok} GETs answered, {failed} failed");
    assert!(ok > 200, "only {ok} requests");
    assert_eq!(failed, 0, "requests failed during the rolling restart");
    // Both replicas took requests again after it.
    for o in &stack.origins {
        let m = Metrics::settled(o.admin).await;
        assert!(m.sum("railproxy_requests_total", &[("mode", "origin")]) > 0.0, "{} took no request", o.admin);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_costs_only_what_was_in_flight_on_it() {
    let mut stack = Stack::start(dialling(Knobs { origins: 2, ..Knobs::default() })).await;
    let (stop, ok, failed) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients = load(&stack, 8, &stop, &ok, &failed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.kill_origin(0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("replica killed: {ok} GETs answered, {failed} failed");
    // A GET whose stream the kill cut before its response began is sent again on the other
    // replica's lanes; one cut mid-body cannot be: at most the 8 in flight fail.
    assert!(failed <= 8, "{failed} GETs failed when a replica was killed");
    assert!(ok > 200);
}

/// Twenty origin processes of one lane each lose their edge: killed, down 3 s, started again.
/// Each lane redials on its own full-jitter backoff, so they come back spread out, not as a
/// herd at the instant the port opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_edge_gets_its_lanes_back_without_a_herd() {
    const ORIGINS: usize = 20;
    let mut stack = Stack::start(dialling(Knobs { origins: ORIGINS, lanes: 1, threads: 1, ..Knobs::default() })).await;
    let yaml = std::fs::read_to_string(stack.dir.path().join("edge1.yaml")).expect("edge yaml");
    stack.edge.signal("KILL");
    stack.edge.wait_exit(Duration::from_secs(5));
    // Down long enough that every lane has failed a dial or two.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let started = Instant::now();
    stack.edge =
        start_proxy(stack.dir.path(), "edge-again", "edge", &yaml, stack.edge_admin).await.expect("edge restarts");
    let mut back: Vec<Duration> = Vec::new();
    let deadline = started + Duration::from_secs(40);
    while back.len() < ORIGINS {
        let held = Metrics::scrape(stack.edge_admin).await.sum("railproxy_dialout_lanes", &[]) as usize;
        while back.len() < held {
            back.push(started.elapsed());
        }
        assert!(Instant::now() < deadline, "{} of {ORIGINS} lanes back after 40 s", back.len());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The most lanes that came back within any 100 ms: a herd puts them all in one.
    let burst = back.iter().map(|t| back.iter().filter(|u| **u >= *t && **u < *t + Duration::from_millis(100)).count());
    let burst = burst.max().unwrap_or(0);
    let ms = |d: Duration| d.as_millis();
    eprintln!(
        "{ORIGINS} lanes back after the edge's restart: first {} ms, p50 {} ms, last {} ms; at most {burst} \
         within 100 ms; all: {:?}",
        ms(back[0]),
        ms(back[ORIGINS / 2]),
        ms(back[ORIGINS - 1]),
        back.iter().map(|d| ms(*d)).collect::<Vec<_>>()
    );
    // Within the backoff's bound (reconnect_cap 30 s), and spread out.
    assert!(back[ORIGINS - 1] < Duration::from_secs(31), "{back:?}");
    assert!(burst <= ORIGINS / 2, "{burst} of {ORIGINS} lanes came back within 100 ms: {back:?}");
    let r = Http::h1().get(&stack.url("/pages/generated-10k"), &[]).await.expect("GET");
    assert_eq!(r.status, 200);
}

#[test]
fn a_host_routed_to_a_tunnel_must_be_one_it_may_serve() {
    let dir = tempfile::tempdir().unwrap();
    let certs = integration::stack::make_certs(dir.path());
    let file = dir.path().join("e.yaml");
    let c = certs.display();
    std::fs::write(
        &file,
        format!(
            "mode: edge\nlisten: [127.0.0.1:0]\nadmin: {{listen: 127.0.0.1:0}}\nconnectors:\n  listen: [127.0.0.1:0]\n  ca: {c}/ca.pem\n  cert: {c}/connector.pem\n  key: {c}/connector.key\n  tunnels:\n    shop: {{hosts: [shop.example]}}\n    Bad_Name: {{hosts: [x.example]}}\norigins:\n  blog.example: {{tunnel: shop}}\n  x.example: {{tunnel: nope}}\n  y.example: {{tunnel: shop, listeners: [127.0.0.1:2408]}}\n  z.example: {{listeners: [127.0.0.1:2408]}}\n"
        ),
    )
    .unwrap();
    let o = railproxy(dir.path(), &["check", "-c", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    let out = text(&o);
    for expected in [
        "origins.blog.example.tunnel: tunnel \"shop\" may not serve blog.example (connectors.tunnels.shop.hosts)",
        "origins.x.example.tunnel: no tunnel \"nope\" in connectors.tunnels",
        "origins.y.example.listeners: a host is served by listeners or by a tunnel, not both",
        "connectors.tunnels.Bad_Name: \"Bad_Name\" is not a tunnel name",
        // z.example is reached by its listeners: the tunnel's client certificate is needed.
        "tunnel.ca: required",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    let origin = dir.path().join("o.yaml");
    std::fs::write(
        &origin,
        format!(
            "mode: origin\nadmin: {{listen: 127.0.0.1:0}}\ntunnel:\n  dial: [127.0.0.1:2409]\n  listen: [127.0.0.1:2408]\n  lanes: 0\n  allow: [127.0.0.1/32]\n  cert: {c}/tunnel-demo.pem\n  key: {c}/tunnel-demo.key\n  replica: \"a b\"\nhosts: {{a: {{backends: [127.0.0.1:1]}}}}\n"
        ),
    )
    .unwrap();
    let o = railproxy(dir.path(), &["check", "-c", origin.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    let out = text(&o);
    for expected in [
        "tunnel.ca: required",
        "tunnel.lanes: must be from 1 to 64",
        "tunnel.replica: \"a b\"",
        "tunnel.listen: an origin listens or dials out (dial), not both",
        "tunnel.allow: locks a listening origin to its edges; one that dials out (dial) has no port to lock",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_cross_as_streams_of_the_lanes_the_origin_dialled() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    let stack = Stack::start(dialling(Knobs::default())).await;
    let url = format!("ws://{}/ws", stack.edge_addr);
    let mut sockets = Vec::new();
    for i in 0..50 {
        let (mut ws, resp) = tokio_tungstenite::connect_async(url.as_str()).await.expect("handshake");
        assert_eq!(resp.status(), 101);
        let msg = Message::text(format!("socket {i} through a lane the origin dialled"));
        ws.send(msg.clone()).await.expect("send");
        let back = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("echo in time");
        assert_eq!(back.expect("a frame").expect("a message"), msg);
        sockets.push(ws);
    }
    // Fifty sockets, and not one connection more than the origin dialled at its start: four
    // request lanes and four socket lanes.
    let o = stack.origin_metrics().await;
    assert_eq!(o.sum("railproxy_dialout_dials_total", &[("result", "ok")]), 8.0);
    assert_eq!(o.sum("railproxy_dialout_connected_lanes", &[]), 4.0, "socket lanes are not request lanes");
    let r = Http::h1().get(&stack.url("/pages/generated-10k"), &[]).await.expect("GET");
    assert_eq!(r.status, 200);
}

/// CPU time (clock ticks, user + system) of each of `pid`'s threads whose name starts with
/// `prefix` (Pingora names a service's threads after it, cut to 15 bytes).
fn thread_ticks(pid: u32, prefix: &str) -> Vec<u64> {
    let mut ticks = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("its threads").flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // After the name's closing parenthesis: state is field 3, utime 14, stime 15.
        let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, r)| r).split_whitespace().collect();
        let field = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        ticks.push(field(14) + field(15));
    }
    ticks
}

/// A dialling origin serves its lanes on `server.threads` workers, as a listening origin does
/// (a background service gets one thread unless told otherwise), and the edge's connector
/// listener likewise; under load both of the origin's workers serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialling_origin_serves_on_every_worker_thread() {
    let stack = Stack::start(dialling(Knobs { threads: 2, ..Knobs::default() })).await;
    let origin = stack.origins[0].proc.as_ref().expect("origin").pid();
    let (stop, ok, failed) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let before = thread_ticks(origin, "BG dial-out");
    let served = || thread_ticks(origin, "BG dial-out").iter().zip(&before).map(|(a, b)| a - b).collect::<Vec<_>>();
    let clients = load(&stack, 16, &stop, &ok, &failed);
    // Until each worker has run for a few ticks (10 ms each) more, 20 s at most.
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until && !served().iter().all(|t| *t >= 5) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let served = served();
    eprintln!("dial-out workers' CPU ticks under load: {served:?}, {} requests", ok.load(Ordering::Relaxed));
    assert_eq!(before.len(), 2, "the origin's dial-out lanes run on {} threads, not server.threads", before.len());
    assert!(served.iter().all(|t| *t >= 5), "each worker serves (CPU ticks {served:?})");
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    let connector = thread_ticks(stack.edge.pid(), "BG connector");
    assert_eq!(connector.len(), 2, "the edge's connector listener runs on {} threads", connector.len());
}

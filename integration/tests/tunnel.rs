//! The tunnel as a transport that holds up: one client's request body can never take down the
//! connection other clients' requests share.

use std::time::{Duration, Instant};

use integration::{Http, Knobs, Stack};

/// Uploads of one-byte chunks beside GETs, with the origin's windows at h2's defaults: its
/// budget for small DATA frames is then 32 KB of framing overhead per connection, which ~130
/// unread one-byte frames use up. `edge_extra` says how the edge holds bodies.
async fn one_byte_chunk_flood(edge_extra: &str) {
    let knobs = Knobs {
        origin_tunnel_extra: "  stream_window: 64K\n  connection_window: 64K\n".into(),
        edge_extra: edge_extra.into(),
        ..Knobs::default()
    };
    let stack = Stack::start(knobs).await;
    let f = integration::flood::run(stack.edge_addr, Duration::from_secs(3)).await;
    println!("{f:?}");
    assert_eq!(f.uploads_failed, 0, "uploads of one-byte chunks failed");
    assert!(f.uploads >= 10, "only {} uploads in 3 s", f.uploads);
    assert!(f.gets >= 200, "only {} GETs in 3 s", f.gets);
    assert!(f.gets_failed * 1000 <= f.gets + f.gets_failed, "{f:?}: more than 0.1 % of GETs failed");
    let m = stack.edge_metrics().await;
    assert_eq!(m.sum("railproxy_failovers_total", &[]), 0.0, "a listener was marked down");
}

/// Buffered (the default), a body crosses as one piece.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_byte_chunk_uploads_do_not_take_the_tunnel_down_for_others() {
    one_byte_chunk_flood("").await;
}

/// Streamed (buffering off), only the edge's joining of small pieces keeps the shared
/// connection up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_one_byte_chunk_uploads_are_joined() {
    one_byte_chunk_flood("limits:\n  request_buffering: false\n").await;
}

/// Lanes start dialled: before any client request, the edge's probes opened every lane's
/// connection, through the pool requests use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lane_is_dialled_and_warm_before_the_first_request() {
    let stack = Stack::start(Knobs { lanes: 3, ..Knobs::default() }).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let accepted = loop {
        let m = stack.origin_metrics().await;
        let n = m.sum("railproxy_tunnel_connections_total", &[("mode", "origin")]);
        if n >= 3.0 || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(accepted, 3.0, "tunnel connections before any request");
    let edge = stack.edge_metrics().await;
    assert_eq!(edge.sum("railproxy_tunnel_lanes_serving", &[("listener", &stack.origin_addr.to_string())]), 3.0);
    // Requests then use those connections: no new one for a burst of them.
    let url = stack.url("/text/5000");
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move { Http::h1().get(&url, &[]).await.map(|r| r.status) }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 200);
    }
    let m = stack.origin_metrics().await;
    assert!(m.sum("railproxy_tunnel_connections_total", &[("mode", "origin")]) <= 4.0, "requests dialled their own");
}

/// The edge's failover settings of these tests, with a backoff long enough that only panic
/// routing can explain a prompt answer.
fn slow_backoff(edge_yaml: &str) -> String {
    edge_yaml.replace("backoff_base: 200ms", "backoff_base: 20s").replace("backoff_cap: 1s", "backoff_cap: 60s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_started_before_its_origin_serves_as_soon_as_the_origin_does() {
    use integration::process::free_loopback;
    use integration::stack::{edge_yaml, make_certs, origin_yaml, start_proxy};
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let knobs = Knobs::default();
    let backend = integration::Backend::start(dir.path(), "backend", None);
    let (origin_addr, origin_admin, edge_addr, edge_admin) =
        (free_loopback(), free_loopback(), free_loopback(), free_loopback());
    let ey = slow_backoff(&edge_yaml(dir.path(), &knobs, edge_addr, edge_admin, &[origin_addr], backend.addr));
    let _edge = start_proxy(dir.path(), "edge", "edge", &ey, edge_admin).await.expect("edge starts");
    let url = format!("http://{edge_addr}/text/3000");
    // No origin yet: the fallback answers, after a try.
    let r = Http::h1().get(&url, &[]).await.unwrap();
    assert_eq!(r.status, 502);
    // Probes retire every lane (three failures in a row each); the backoff is then 0-20 s.
    let lanes_serving = || async {
        integration::Metrics::scrape(edge_admin)
            .await
            .sum("railproxy_tunnel_lanes_serving", &[("listener", &origin_addr.to_string())])
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while lanes_serving().await > 0.0 {
        assert!(Instant::now() < deadline, "lanes still serving with no origin");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let oy = origin_yaml(dir.path(), &knobs, origin_addr, origin_admin, &[backend.addr], free_loopback());
    let _origin = start_proxy(dir.path(), "origin", "origin", &oy, origin_admin).await.expect("origin starts");
    // The origin is up: the very next request is served, though every lane is still retired.
    let started = Instant::now();
    let r = Http::h1().get(&url, &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let direct = Http::h1().get(&format!("http://{}/text/3000", backend.addr), &[]).await.unwrap();
    assert!(r.body == direct.body, "not the backend's bytes");
    println!("first request after the origin came up: 200 in {:?}", started.elapsed());
    assert!(lanes_serving().await >= 1.0, "the lane that got through serves again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_started_before_its_backend_serves_as_soon_as_the_backend_does() {
    use integration::process::free_loopback;
    use integration::stack::{edge_yaml, make_certs, origin_yaml, start_proxy};
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let knobs = Knobs::default();
    let backend_addr = free_loopback();
    let (origin_addr, origin_admin, edge_addr, edge_admin) =
        (free_loopback(), free_loopback(), free_loopback(), free_loopback());
    // Checked once at start (the backend is down then), next in a minute.
    let oy = origin_yaml(dir.path(), &knobs, origin_addr, origin_admin, &[backend_addr], free_loopback())
        .replace("backend:\n", "backend:\n  health_interval: 60s\n");
    let _origin = start_proxy(dir.path(), "origin", "origin", &oy, origin_admin).await.expect("origin starts");
    let ey = edge_yaml(dir.path(), &knobs, edge_addr, edge_admin, &[origin_addr], backend_addr);
    let _edge = start_proxy(dir.path(), "edge", "edge", &ey, edge_admin).await.expect("edge starts");
    let url = format!("http://{edge_addr}/text/3000");
    let r = Http::h1().get(&url, &[]).await.unwrap();
    assert_eq!(r.status, 502, "no backend yet");
    let backend = integration::Backend::start_at(dir.path(), "backend", backend_addr);
    let r = Http::h1().get(&url, &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let direct = Http::h1().get(&format!("http://{}/text/3000", backend.addr), &[]).await.unwrap();
    assert!(r.body == direct.body, "not the backend's bytes");
}

/// The congestion control of each established TCP socket on this host with `port` at one end:
/// (local port, peer port, algorithm), as `ss` reports them.
fn congestion_controls(port: u16) -> Vec<(u16, u16, String)> {
    let filter = format!("( sport = :{port} or dport = :{port} )");
    let out = std::process::Command::new("ss").args(["-tinH", "state", "established", &filter]).output().expect("ss");
    let text = String::from_utf8_lossy(&out.stdout);
    let port_of = |a: &str| a.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let mut found = Vec::new();
    let mut lines = text.lines();
    while let (Some(socket), Some(info)) = (lines.next(), lines.next()) {
        let cols: Vec<&str> = socket.split_whitespace().collect();
        let algorithm = info.split_whitespace().next().unwrap_or_default().to_string();
        found.push((port_of(cols[2]), port_of(cols[3]), algorithm));
    }
    found
}

/// `tunnel.congestion_control` in both modes: the edge sets it on the sockets it dials, the
/// origin on the ones it accepts (which carry the bodies of responses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_end_sets_the_congestion_control_of_its_tunnel_sockets() {
    // reno is in every kernel and no distribution's default, so only the settings explain it.
    let default = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control").unwrap_or_default();
    assert_ne!(default.trim(), "reno", "this test needs a host whose default is not reno");
    let knobs = Knobs {
        lanes: 2,
        origin_tunnel_extra: "  congestion_control: reno\n".into(),
        edge_tunnel_extra: "  congestion_control: reno\n".into(),
        ..Knobs::default()
    };
    let stack = Stack::start(knobs).await;
    assert_eq!(Http::h1().get(&stack.url("/text/5000"), &[]).await.unwrap().status, 200);
    let port = stack.origin_addr.port();
    let sockets = congestion_controls(port);
    let origin_side: Vec<_> = sockets.iter().filter(|s| s.0 == port).collect();
    let edge_side: Vec<_> = sockets.iter().filter(|s| s.1 == port).collect();
    assert!(origin_side.len() >= 2 && edge_side.len() >= 2, "the lanes' sockets: {sockets:?}");
    for (_, _, algorithm) in origin_side.iter().chain(&edge_side) {
        assert_eq!(algorithm, "reno", "a tunnel socket not set: {sockets:?}");
    }
}

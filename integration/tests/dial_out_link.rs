//! Dial-out across the emulated link (`integration::link`): the origin and its backend in a
//! network namespace that nothing can connect into (every inbound SYN dropped, as a firewall
//! that drops every inbound packet does), reaching the edge only through the lanes it dialled;
//! and a silent black hole on that path, noticed by both ends and survived. Skipped, saying
//! why, where the machine cannot make network namespaces or TUN devices (not root).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use delta::testing;
use integration::client::get_versions_byte_exact;
use integration::link::{Link, Profile};
use integration::metrics::Metrics;
use integration::process::{Proc, bin, free_loopback, free_port};
use integration::stack::{TUNNEL, edge_yaml, make_certs, origin_yaml, start_proxy};
use integration::{Backend, Http, Knobs};

const LANES: usize = 4;
/// The lanes an origin dials for WebSockets beside its request lanes.
const SOCKET_LANES: usize = 4;

/// The edge here (its connector listener on the link's near address), origin and backend
/// beyond the link, the origin dialling out.
struct FarOrigin {
    edge: SocketAddr,
    edge_admin: SocketAddr,
    connector: SocketAddr,
    // Dropped in this order: processes first, then the link, then the folder.
    origin: Proc,
    _edge: Proc,
    _backend: Backend,
    link: Link,
    _dir: tempfile::TempDir,
}

async fn start(what: &str, refuse_inbound: bool, origin_tunnel_extra: &str) -> Option<FarOrigin> {
    // A short, fast path: what is tested is who may connect to whom, and silence on it.
    let link = match Link::start(Profile::new(Duration::from_millis(20), 100.0, 0.0)).await {
        Ok(l) => l,
        Err(why) => {
            println!("skipped: {what} needs an emulated link, which this machine cannot make: {why}");
            return None;
        }
    };
    link.refuse_inbound(refuse_inbound);
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let knobs = Knobs {
        dial_out: true,
        lanes: LANES,
        origin_tunnel_extra: origin_tunnel_extra.to_string(),
        ..Knobs::default()
    };
    let backend = Backend::start_with(dir.path(), "backend", link.command(&bin("railproxy-testbackend")));
    let connector = SocketAddr::from((link.near, free_port()));
    let (edge, edge_admin) = (free_loopback(), free_loopback());
    let ey = edge_yaml(dir.path(), &knobs, edge, edge_admin, &[connector], backend.addr);
    let edge_proc = start_proxy(dir.path(), "edge", "edge", &ey, edge_admin).await.expect("edge starts");
    // The origin's admin listener is on its namespace's loopback: nothing here reaches the
    // origin, so its readiness is read from the lanes the edge holds.
    let origin_admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let oy = origin_yaml(dir.path(), &knobs, connector, origin_admin, &[backend.addr], free_loopback());
    let file = dir.path().join("origin.yaml");
    std::fs::write(&file, oy).unwrap();
    let mut cmd = link.command(&knobs.railproxy());
    cmd.args(["--mode", "origin", "-c"]).arg(&file).env("RAILPROXY_LOG", "info,access=off");
    let origin = Proc::spawn("origin", cmd, dir.path(), false);
    let stack = FarOrigin { edge, edge_admin, connector, origin, _edge: edge_proc, _backend: backend, link, _dir: dir };
    let held = stack.wait_lanes(|n| n == LANES, Duration::from_secs(20)).await;
    assert!(held.is_some(), "the origin's lanes never reached the edge:\n{}", stack.origin.log());
    Some(stack)
}

impl FarOrigin {
    async fn lanes(&self) -> usize {
        Metrics::scrape(self.edge_admin).await.sum("railproxy_dialout_lanes", &[("tunnel", TUNNEL)]) as usize
    }

    /// Waits until the edge's lane count satisfies `done`; how long that took.
    async fn wait_lanes(&self, done: impl Fn(usize) -> bool, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if done(self.lanes().await) {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Tunnel connections the origin holds to the edge, as its namespace's kernel lists them.
    fn origin_connections(&self) -> usize {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.link.ns, "ss", "-tnH", "state", "established"])
            .arg(format!("dst {}", self.connector))
            .output()
            .expect("ss runs");
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()).count()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.edge)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_nothing_can_connect_to_serves_deltas_over_the_lanes_it_dialled() {
    let Some(stack) = start("an unreachable origin", true, "").await else { return };
    // Nothing gets in: a connection towards the origin's side hangs (no RST, no answer).
    let knock = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect(SocketAddr::from((stack.link.far, free_port()))),
    )
    .await;
    assert!(knock.is_err(), "a connection into the origin's namespace got an answer: {knock:?}");
    assert!(stack.link.drops.filtered.load(std::sync::atomic::Ordering::Relaxed) >= 1, "no SYN was dropped");

    let versions = &testing::generated_sets()[1].versions;
    let n = get_versions_byte_exact(&Http::h1(), &stack.url("/pages/generated-100k"), versions, 1000).await;
    let m = Metrics::scrape(stack.edge_admin).await;
    let dcz = m.sum("railproxy_delta_wire_bytes_total", &[("encoding", "dcz")]);
    let raw = m.sum("railproxy_delta_raw_bytes_total", &[("encoding", "dcz")]);
    eprintln!("{n} GETs byte-exact from an origin no one can connect to; deltas: {dcz} wire bytes for {raw}");
    assert!(dcz > 0.0 && dcz * 10.0 < raw, "deltas cross: {dcz} wire bytes for {raw}");
    assert_eq!(stack.lanes().await, LANES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_black_hole_is_noticed_by_both_ends_and_served_again_when_it_lifts() {
    // A lower reconnect cap than the default 30 s keeps the test short; the bound checked
    // below follows from it.
    let cap = Duration::from_secs(10);
    let Some(stack) = start("a black hole on the path", true, "  reconnect_cap: 10s\n").await else { return };
    let http = Http::h1();
    let page = |r: &integration::client::Resp| r.status == 200 && r.body.len() > 1000;
    assert!(page(&http.get(&stack.url("/pages/generated-10k"), &[]).await.expect("GET")));
    assert_eq!(stack.origin_connections(), LANES + SOCKET_LANES);

    let hole = Instant::now();
    stack.link.black_hole(true);
    // The edge: its PINGs go unanswered (ping_interval 5 s, 5 s for the answer).
    let edge_noticed = stack.wait_lanes(|n| n == 0, Duration::from_secs(30)).await.expect("the edge noticed");
    // A request meanwhile waits connectors.wait (2 s), then is told which tunnel is missing.
    let r = http.get(&stack.url("/pages/generated-10k"), &[]).await.expect("an answer");
    let body = String::from_utf8_lossy(&r.body).to_string();
    assert_eq!(r.status, 502, "{body}");
    assert!(body.contains(&format!("no origin of tunnel {TUNNEL} is connected")), "{body}");
    // The origin: its sent bytes (PONGs, keepalive probes) stay unacknowledged for dead_after
    // (10 s), and its lanes end.
    let mut origin_noticed = None;
    while hole.elapsed() < Duration::from_secs(40) {
        if stack.origin_connections() == 0 {
            origin_noticed = Some(hole.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let origin_noticed = origin_noticed.expect("the origin noticed within 40 s");
    eprintln!("black hole: the edge dropped its lanes after {edge_noticed:?}, the origin after {origin_noticed:?}");
    assert!(edge_noticed <= Duration::from_secs(15), "the edge took {edge_noticed:?} (bound 15 s)");
    assert!(origin_noticed <= Duration::from_secs(15), "the origin took {origin_noticed:?} (dead_after 10 s)");

    // Sixty seconds of silence in all, then the path carries again.
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(hole.elapsed())).await;
    stack.link.black_hole(false);
    let lifted = Instant::now();
    // A dial under way when the hole lifts gets through on its SYN's next retry, or fails at
    // its 10 s connect timeout; the next waits at most the reconnect cap.
    let bound = cap + Duration::from_secs(12);
    let mut served = None;
    while lifted.elapsed() < bound + Duration::from_secs(10) {
        if let Ok(r) = http.get(&stack.url("/pages/generated-10k"), &[]).await
            && page(&r)
        {
            served = Some(lifted.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let served = served.expect("served again after the hole lifted");
    let all_back = stack.wait_lanes(|n| n == LANES, bound * 2).await;
    eprintln!("hole lifted: served again after {served:?}, all {LANES} lanes back after {all_back:?} more");
    assert!(served <= bound, "served again only {served:?} after the hole lifted (bound {bound:?})");
    assert!(all_back.is_some(), "not every lane came back");
}

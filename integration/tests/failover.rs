//! Redundant origin listeners: one dies under load and nothing fails before its response started;
//! it comes back after its probes; with every listener down, the fallback answers.
//!
//! What a hard kill may cut: Pingora writes the client's response header when the tunnel's
//! HEADERS frame arrives, and a response whose header went out cannot be sent again. The origin
//! sends HEADERS when the backend's header arrives, before the body is encoded, so the responses
//! in that window on the killed listener are cut mid-body (0 to ~30 of 200 here, by timing).
//! They are cut when the tunnel dies and only then: the test checks that every cut reached its
//! client between the kill and shortly after the edge marked the listener down, so a cut while
//! the surviving listener carries the load, or after the restart, fails it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use delta::testing;
use integration::{Http, Knobs, Metrics, Stack};

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    /// The request failed before any response arrived: the edge should have retried it.
    failed_before: AtomicU64,
    wrong: AtomicU64,
    /// When each response that had started failed mid-body (the listener died mid-stream)
    /// reached its client.
    cut_at: std::sync::Mutex<Vec<Instant>>,
    /// The first few failures as the client saw them, for the report when the test fails.
    seen: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn failed_before(&self, what: String) {
        self.saw(what);
        self.failed_before.fetch_add(1, Ordering::Relaxed);
    }

    fn cut(&self, what: String) {
        self.saw(what);
        self.cut_at.lock().unwrap().push(Instant::now());
    }

    fn saw(&self, what: String) {
        let mut seen = self.seen.lock().unwrap();
        if seen.len() < 5 {
            seen.push(what);
        }
    }
}

async fn poll_until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within {limit:?}");
}

fn listener_up(m: &Metrics, addr: std::net::SocketAddr) -> f64 {
    m.sum("railproxy_listener_up", &[("listener", &addr.to_string())])
}

const CLIENTS: u64 = 200;
/// How long after the edge marked the dead listener down its cut responses may still reach
/// their clients: the edge fails them all on the same connection error. They arrived 14-33 ms
/// after the kill in local runs; a busy CI machine gets a generous margin.
const CUT_GRACE: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_listener_killed_under_load_fails_nothing_before_a_response_and_comes_back() {
    let mut stack = Stack::start(Knobs { origins: 2, threads: 2, ..Knobs::default() }).await;
    let versions: Arc<Vec<Bytes>> =
        Arc::new(testing::generated_sets()[1].versions.iter().map(|v| Bytes::from(v.clone())).collect());
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (url, versions, tally, stop) =
            (stack.url("/pages/generated-100k"), versions.clone(), tally.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let http = Http::h1();
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let v = (i % versions.len() as u64) as usize;
                i += 7;
                match http.get(&url, &[("x-version", &v.to_string())]).await {
                    Ok(r) if r.status == 200 && r.body == versions[v] => {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) if r.status == 200 => {
                        tally.wrong.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => tally.failed_before(format!("status {}", r.status)),
                    Err(e) if e.starts_with("reading body") => tally.cut(e),
                    Err(e) => tally.failed_before(e),
                }
            }
        }));
    }
    let progress = |n: u64| {
        let tally = tally.clone();
        async move || tally.ok.load(Ordering::Relaxed) >= n
    };
    poll_until("load running", Duration::from_secs(30), progress(500)).await;
    let dead = stack.origins[1].addr;
    let killed = Instant::now();
    stack.kill_origin(1);
    let admin = stack.edge_admin;
    let down = poll_until("listener marked down", Duration::from_secs(10), async || {
        listener_up(&Metrics::scrape(admin).await, dead) == 0.0
    })
    .await;
    let marked_down = Instant::now();
    let after_kill = tally.ok.load(Ordering::Relaxed);
    poll_until("load continues on the other listener", Duration::from_secs(30), progress(after_kill + 2000)).await;
    let restarted = Instant::now();
    stack.restart_origin(1).await;
    let up = poll_until("listener up again", Duration::from_secs(20), async || {
        listener_up(&Metrics::scrape(admin).await, dead) == 1.0
    })
    .await;
    let back_admin = stack.origins[1].admin;
    poll_until("restarted listener serves requests", Duration::from_secs(20), async || {
        Metrics::scrape(back_admin).await.sum("railproxy_requests_total", &[("mode", "origin")]) > 50.0
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let (ok, before, streaming, wrong) = (
        tally.ok.load(Ordering::Relaxed),
        tally.failed_before.load(Ordering::Relaxed),
        tally.cut_at.lock().unwrap().len() as u64,
        tally.wrong.load(Ordering::Relaxed),
    );
    let m = stack.edge_metrics().await;
    eprintln!("connections refused by limits: {}", m.sum("railproxy_limit_refusals_total", &[]));
    eprintln!(
        "listener kill under load: {} requests sent, {ok} ok, {before} failed before a response, {streaming} failed \
         mid-response, {wrong} wrong; detected down {:?} after the kill, back up {:?} after the restart \
         ({:?} kill to up); {} retried on the other listener",
        ok + before + streaming + wrong,
        down,
        up,
        restarted.duration_since(killed) + up,
        m.sum("railproxy_retries_total", &[])
    );
    eprintln!("first failures: {:?}", tally.seen.lock().unwrap());
    let cut_at: Vec<Duration> =
        tally.cut_at.lock().unwrap().iter().map(|t| t.saturating_duration_since(killed)).collect();
    eprintln!("mid-body failures, time after the kill: {cut_at:?}");
    assert_eq!(wrong, 0, "wrong bytes served");
    assert_eq!(before, 0, "requests failed before their response although another listener was up");
    // Only the killed listener's share of the clients can have been in flight on it.
    assert!(streaming < CLIENTS / 2, "{streaming} responses failed mid-stream");
    let window = marked_down.duration_since(killed) + CUT_GRACE;
    assert!(
        cut_at.iter().all(|t| *t > Duration::ZERO && *t <= window),
        "a response was cut outside the moment the listener died (kill to {window:?} after): {cut_at:?}"
    );
    assert!(m.sum("railproxy_failovers_total", &[("listener", &dead.to_string())]) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_down_with_fallback_direct_still_serves() {
    let mut stack = Stack::start(Knobs { fallback: "direct".into(), ..Knobs::default() }).await;
    let versions = &testing::generated_sets()[0].versions;
    stack.kill_origin(0);
    for (i, v) in versions.iter().take(5).enumerate() {
        let r = Http::h1().get(&stack.url("/pages/generated-10k"), &[("x-version", &i.to_string())]).await.unwrap();
        assert_eq!(r.status, 200);
        assert!(r.body == v[..], "version {i} via the direct fallback differs");
    }
    let m = stack.edge_metrics().await;
    assert!(m.sum("railproxy_fallbacks_total", &[("kind", "direct")]) >= 5.0);
    assert_eq!(m.sum("railproxy_delta_wire_bytes_total", &[("encoding", "dcz")]), 0.0, "no tunnel, no deltas");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_down_with_fallback_error_gives_a_fast_502() {
    let mut stack = Stack::start(Knobs { origins: 2, fallback: "error".into(), ..Knobs::default() }).await;
    stack.kill_origin(0);
    stack.kill_origin(1);
    for _ in 0..3 {
        let start = Instant::now();
        let r = Http::h1().get(&stack.url("/pages/generated-10k"), &[]).await.unwrap();
        let took = start.elapsed();
        assert_eq!(r.status, 502);
        assert!(took < Duration::from_secs(1), "502 took {took:?}");
        assert!(String::from_utf8_lossy(&r.body).contains("no origin listener for 127.0.0.1 is up"), "{:?}", r.body);
    }
    let m = stack.edge_metrics().await;
    assert!(m.sum("railproxy_fallbacks_total", &[("kind", "error")]) >= 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_skips_a_dead_backend() {
    let mut stack = Stack::start(Knobs { extra_backends: 2, ..Knobs::default() }).await;
    let dead = stack.extra[0].addr;
    stack.extra[0].proc.signal("KILL");
    stack.extra[0].proc.wait_exit(Duration::from_secs(5));
    let mut served_by = std::collections::HashMap::<String, usize>::new();
    for _ in 0..40 {
        let r = Http::h1().get(&stack.url("/pages/generated-10k"), &[("host", "test.example")]).await.unwrap();
        assert_eq!(r.status, 200, "{:?}", r.body);
        *served_by.entry(r.header("x-backend").unwrap().to_string()).or_default() += 1;
    }
    assert!(!served_by.contains_key(&dead.to_string()));
    assert_eq!(served_by.len(), 2, "the two live backends share the load: {served_by:?}");
}

//! Zero-downtime upgrades: a new process takes the listening sockets over (`--upgrade`, then
//! SIGQUIT to the old one) while clients keep sending; no request fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use delta::testing;
use integration::{Http, Knobs, Stack};

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    /// Requests sent again because the kept-alive connection closed under them.
    resent: AtomicU64,
}

/// Clients that, as browsers do, send an idempotent request again (on a fresh connection, up to
/// twice) when the kept-alive connection it went out on was closed or reset before any response:
/// a server closing an idle connection as the next request arrives leaves that request's bytes
/// unread, hence a reset.
fn load(stack: &Stack, clients: u64, stop: &Arc<AtomicBool>, tally: &Arc<Tally>) -> Vec<tokio::task::JoinHandle<()>> {
    let versions: Arc<Vec<Bytes>> =
        Arc::new(testing::generated_sets()[0].versions.iter().map(|v| Bytes::from(v.clone())).collect());
    (0..clients)
        .map(|c| {
            let (url, versions, stop, tally) =
                (stack.url("/pages/generated-10k"), versions.clone(), stop.clone(), tally.clone());
            tokio::spawn(async move {
                let mut http = Http::h1();
                let mut i = c as usize;
                while !stop.load(Ordering::Relaxed) {
                    let v = i % versions.len();
                    i += 1;
                    let header = v.to_string();
                    let mut result = http.get(&url, &[("x-version", &header)]).await;
                    for _ in 0..2 {
                        match &result {
                            Err(e) if closed_under_it(e) => {
                                // On a fresh connection, not another pooled one to the same process.
                                tally.resent.fetch_add(1, Ordering::Relaxed);
                                http = Http::h1();
                                result = http.get(&url, &[("x-version", &header)]).await;
                            }
                            _ => break,
                        }
                    }
                    match result {
                        Ok(r) if r.status == 200 && r.body == versions[v] => tally.ok.fetch_add(1, Ordering::Relaxed),
                        Ok(r) => {
                            eprintln!("failed: status {}: {}", r.status, String::from_utf8_lossy(&r.body));
                            tally.failed.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => {
                            eprintln!("failed: {e}");
                            tally.failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect()
}

/// The connection was closed or reset before any response came.
fn closed_under_it(e: &str) -> bool {
    ["IncompleteMessage", "connection closed", "Canceled", "ConnectionReset", "BrokenPipe"]
        .iter()
        .any(|s| e.contains(s))
}

async fn progressed(tally: &Tally, from: u64, by: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while tally.ok.load(Ordering::Relaxed) < from + by {
        assert!(std::time::Instant::now() < deadline, "load stalled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn upgrade_under_load(mode: &str) {
    let knobs = Knobs::default();
    let dial_out = knobs.dial_out;
    let mut stack = Stack::start(knobs).await;
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let clients = load(&stack, 32, &stop, &tally);
    progressed(&tally, 0, 200).await;
    for round in 1..=5 {
        let before = tally.ok.load(Ordering::Relaxed);
        if mode == "edge" {
            stack.upgrade_edge().await;
        } else {
            stack.upgrade_origin(0).await;
        }
        // The new process serves.
        progressed(&tally, before, 200).await;
        eprintln!("{mode} upgrade {round}: done, {} ok so far", tally.ok.load(Ordering::Relaxed));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let (ok, failed, resent) =
        (tally.ok.load(Ordering::Relaxed), tally.failed.load(Ordering::Relaxed), tally.resent.load(Ordering::Relaxed));
    eprintln!(
        "{mode}: 5 upgrades under load: {} requests, {ok} ok, {failed} failed, {resent} resent after a closed keep-alive connection",
        ok + failed
    );
    assert_eq!(failed, 0);
    if dial_out && mode == "edge" {
        // The new edge listens for lanes before the old one stops (SO_REUSEPORT): the lanes
        // the old one ends are dialled again at once, never refused (a refusal puts the origin
        // into backoff, and requests on the new edge wait for a lane).
        let o = stack.origin_metrics().await;
        assert_eq!(o.sum("railproxy_dialout_dials_total", &[("result", "error")]), 0.0, "refused or failed dials");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_upgrades_five_times_under_load_without_a_failed_request() {
    upgrade_under_load("edge").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_upgrades_five_times_under_load_without_a_failed_request() {
    upgrade_under_load("origin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_requests_in_flight_finish() {
    let mut stack = Stack::start(Knobs::default()).await;
    // max-age=0: not cacheable, so it goes through the tunnel; the backend answers after 700 ms.
    let url = stack.url("/cache/0/slow?delay=700");
    let in_flight = tokio::spawn(async move { Http::h1().get(&url, &[]).await });
    // Once the backend has the request, it is in flight through both proxies.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if stack.backend.hits("0/slow").await == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "request never reached the backend");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stopping = std::time::Instant::now();
    stack.edge.signal("TERM");
    let r = in_flight.await.unwrap().expect("the request in flight completes");
    assert_eq!(r.status, 200);
    assert!(r.body.len() > 10_000);
    // grace_period 1s + graceful_shutdown_timeout 1s in the test configuration.
    let exited = stack.edge.wait_exit(Duration::from_secs(10));
    assert!(exited.is_some(), "edge did not exit after SIGTERM");
    eprintln!("SIGTERM: request in flight completed, edge exited {:?} after the signal", stopping.elapsed());
}

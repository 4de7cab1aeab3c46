//! What is measured on each path: one page at a time; clients side by side as steady load (long
//! enough for a p99 where the link allows it, and every percentile printed with the number of
//! requests it is from); a 2 MB download after idle gaps; a 2 MB upload; and what the tunnel did
//! meanwhile (connections opened, probes late or failed).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use integration::{Http, Metrics};

use super::paths::Running;

/// Clients side by side.
pub const CLIENTS: usize = 16;
/// Steady load runs until this many requests are done and `STEADY_MIN` has passed, or until
/// `STEADY_MAX`, whichever comes first (a thin link cannot carry a thousand 190 KB pages in a
/// bench's time: its percentiles say how few they are from).
pub const STEADY_REQUESTS: usize = 1000;
pub const STEADY_MIN: Duration = Duration::from_secs(15);
pub const STEADY_MAX: Duration = Duration::from_secs(180);
/// Pages fetched one at a time.
pub const SEQUENTIAL: usize = 20;
/// A body that is no delta: not compressible, crosses whole.
pub const NON_DELTA: usize = 200_000;
pub const BIG: usize = 2_000_000;
/// Idle time before each 2 MB download: longer than any retransmission timeout here, so a
/// connection's congestion window may restart (cubic, `tcp_slow_start_after_idle`).
pub const IDLE_GAP: Duration = Duration::from_secs(1);
pub const IDLE_GAPS: usize = 5;
pub const SEQUENCE_GAP: Duration = Duration::from_millis(100);

/// A client that waits as long as a thin link needs (16 pages of 190 KB sharing 2 Mbit/s take
/// more than the tests' 30 s).
pub fn client() -> Http {
    let mut http = Http::h1();
    http.timeout = Duration::from_secs(300);
    http
}

/// Seconds for one GET of `url` to its last byte, if it answered 200 with `expected`'s bytes.
pub async fn fetch(http: &Http, url: &str, expected: Option<&[u8]>) -> Result<f64, String> {
    let started = Instant::now();
    let r = http.get(url, &[]).await?;
    let secs = started.elapsed().as_secs_f64();
    if r.status != 200 {
        return Err(format!("{url}: {}", r.status));
    }
    if expected.is_some_and(|want| r.body != want) {
        return Err(format!("{url}: not the backend's bytes"));
    }
    Ok(secs)
}

/// Times to the last byte, and how many.
#[derive(Debug, Default, Clone)]
pub struct Times {
    pub secs: Vec<f64>,
    pub failed: usize,
}

impl Times {
    /// The q-quantile in ms (NaN with no sample).
    pub fn ms(&self, q: f64) -> f64 {
        if self.secs.is_empty() {
            return f64::NAN;
        }
        let mut v = self.secs.clone();
        v.sort_by(f64::total_cmp);
        v[((v.len() as f64 * q) as usize).min(v.len() - 1)] * 1e3
    }

    pub fn n(&self) -> usize {
        self.secs.len()
    }

    /// One fetch's outcome: its time, or a failure.
    pub fn record(&mut self, answer: &Result<f64, String>) {
        match answer {
            Ok(s) => self.secs.push(*s),
            Err(_) => self.failed += 1,
        }
    }
}

/// How long a steady phase runs.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    /// `STEADY_REQUESTS` and `STEADY_MIN`, or `STEADY_MAX`.
    Enough,
    For(Duration),
}

/// How long the body that is no delta is fetched before its steady phase. Connections that
/// carried small deltas until then come to it with bbr's estimate of their share from those
/// (tens of kbit/s): on a full, lossy bottleneck the lowest took about a minute to reach their
/// share, while nginx's, which carried 190 KB pages, were there. Its figures are given apart.
pub const SWITCH: Duration = Duration::from_secs(60);

/// A steady phase: times, pages per second, and the link's bytes per page.
#[derive(Debug, Default, Clone)]
pub struct Steady {
    pub times: Times,
    pub rate: f64,
    pub link_bytes: f64,
    /// The part of `link_bytes` the origins' side sent.
    pub link_bytes_down: f64,
}

/// The page versions `/cycle/PAGE?q` serves, in turn, from its first request on.
pub struct Turns {
    pub versions: Arc<Vec<Vec<u8>>>,
    next: std::collections::HashMap<String, usize>,
}

impl Turns {
    pub fn new(versions: Vec<Vec<u8>>) -> Self {
        Turns { versions: Arc::new(versions), next: Default::default() }
    }

    /// The version the next request for `query` gets, counting it.
    pub fn take(&mut self, query: &str) -> Vec<u8> {
        let n = self.next.entry(query.to_string()).or_default();
        *n += 1;
        self.versions[(*n - 1) % self.versions.len()].clone()
    }
}

/// `CLIENTS` clients back to back until the steady phase ends: client `c` asks `url(c)` and
/// checks the answer against `expected(c, k)` for its `k`-th request.
pub async fn steady<U, E>(run: &Running, url: U, expected: E, until: Until) -> Steady
where
    U: Fn(usize) -> String + Send + Sync + 'static,
    E: Fn(usize, usize) -> Option<Bytes> + Send + Sync + 'static,
{
    let (url, expected) = (Arc::new(url), Arc::new(expected));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let carried = || run.link.drops.carried.load(Ordering::Relaxed);
    let carried_down = || run.link.drops.carried_from_far.load(Ordering::Relaxed);
    let dropped = || (run.link.drops.queue.load(Ordering::Relaxed), run.link.drops.loss.load(Ordering::Relaxed));
    let before = carried();
    let before_down = carried_down();
    let dropped_before = dropped();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (url, expected, stop, done) = (url.clone(), expected.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let http = client();
            let mut times = Times::default();
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                let want = expected(c, k);
                let answer = fetch(&http, &url(c), want.as_deref()).await;
                if let Err(e) = &answer {
                    eprintln!("    {e}");
                }
                times.record(&answer);
                k += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            times
        }));
    }
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let elapsed = started.elapsed();
        let enough = match until {
            Until::Enough => {
                (elapsed >= STEADY_MIN && done.load(Ordering::Relaxed) >= STEADY_REQUESTS) || elapsed >= STEADY_MAX
            }
            Until::For(d) => elapsed >= d,
        };
        if enough {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut times = Times::default();
    for t in tasks {
        let t = t.await.expect("client");
        times.secs.extend(t.secs);
        times.failed += t.failed;
    }
    let seconds = started.elapsed().as_secs_f64();
    let pages = times.n().max(1) as f64;
    // For whoever reads the log: the tail of a phase is mostly its losses.
    let (queue, loss) = dropped();
    eprintln!(
        "    steady: {} pages in {seconds:.1} s, mean {:.0} ms, p90 / p95 / max {:.0} / {:.0} / {:.0} ms; link drops: {} at the full queue, {} at random; link bytes/page {:.0} from the origins' side, {:.0} to it",
        times.n(),
        times.secs.iter().sum::<f64>() * 1e3 / pages,
        times.ms(0.9),
        times.ms(0.95),
        times.ms(1.0),
        queue - dropped_before.0,
        loss - dropped_before.1,
        (carried_down() - before_down) as f64 / pages,
        ((carried() - before) - (carried_down() - before_down)) as f64 / pages,
    );
    Steady {
        rate: times.n() as f64 / seconds,
        link_bytes: (carried() - before) as f64 / pages,
        link_bytes_down: (carried_down() - before_down) as f64 / pages,
        times,
    }
}

/// One page at a time, `SEQUENTIAL` times: times, and the link's bytes per page.
pub async fn sequential(run: &Running, url: &str, turns: &mut Turns, query: &str) -> (Times, f64) {
    let http = client();
    let carried = || run.link.drops.carried.load(Ordering::Relaxed);
    let before = carried();
    let mut times = Times::default();
    for _ in 0..SEQUENTIAL {
        let want = turns.take(query);
        times.record(&fetch(&http, url, Some(&want)).await);
    }
    let pages = times.n().max(1) as f64;
    (times, (carried() - before) as f64 / pages)
}

/// A small page, `IDLE_GAP` of nothing, then a 2 MB download, `IDLE_GAPS` times.
pub async fn downloads_after_idle(run: &Running) -> Times {
    big_downloads(run, IDLE_GAP, Some(&format!("http://{}/text/10000", run.edge))).await
}

/// 2 MB downloads one after another, `SEQUENCE_GAP` apart (less than any retransmission
/// timeout, so a connection that carried the last one keeps its window): the first warms up,
/// the next `IDLE_GAPS` are timed. Where a path spreads a sequence over connections, each one
/// lands on a connection that sat idle for a few transfers, in slow start again under cubic.
pub async fn downloads_in_sequence(run: &Running) -> Times {
    let _ = fetch(&client(), &format!("http://{}/binary/{BIG}", run.edge), None).await;
    big_downloads(run, SEQUENCE_GAP, None).await
}

/// `IDLE_GAPS` timed 2 MB downloads, each after `gap` of nothing, and after `lead` when given
/// (fetched before the gap, not timed).
async fn big_downloads(run: &Running, gap: Duration, lead: Option<&str>) -> Times {
    let http = client();
    let url = format!("http://{}/binary/{BIG}", run.edge);
    let mut times = Times::default();
    for _ in 0..IDLE_GAPS {
        if let Some(lead) = lead {
            let _ = fetch(&http, lead, None).await;
        }
        tokio::time::sleep(gap).await;
        times.record(&fetch(&http, &url, None).await);
    }
    times
}

/// Seconds for a 2 MB upload to a sink.
pub async fn upload(run: &Running) -> f64 {
    let body = Bytes::from((0..BIG as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect::<Vec<_>>());
    let started = Instant::now();
    let r = client().send(Method::POST, &format!("http://{}/sink", run.edge), &[], body).await.expect("upload");
    assert!(r.status == 200 && r.body == format!("{BIG}\n").as_bytes(), "the upload arrived whole");
    started.elapsed().as_secs_f64()
}

/// What the tunnel did during a phase (railproxy only): connections opened, probes late and
/// failed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Churn {
    pub connections: f64,
    pub late: f64,
    pub failed: f64,
}

impl Churn {
    pub async fn read(run: &Running) -> Option<Churn> {
        let m = Metrics::scrape(run.edge_admin?).await;
        Some(Churn {
            connections: m.sum("railproxy_tunnel_connections_total", &[("mode", "edge")]),
            late: m.sum("railproxy_tunnel_probes_total", &[("result", "late")]),
            failed: m.sum("railproxy_tunnel_probes_total", &[("result", "failed")]),
        })
    }

    pub fn since(self, before: Churn) -> Churn {
        Churn {
            connections: self.connections - before.connections,
            late: self.late - before.late,
            failed: self.failed - before.failed,
        }
    }

    pub fn cell(c: Option<Churn>) -> String {
        c.map_or_else(|| "–".into(), |c| format!("{:.0} / {:.0} / {:.0}", c.connections, c.late, c.failed))
    }
}

//! Origin listeners as the edge sees them, each reached over several lanes: persistent tunnel
//! connections (`tunnel.lanes`), each its own Pingora pool (the peer's `group_key`), kept warm by
//! probes sent over them.
//!
//! * A lane is **serving** or **retired**. A connection-level failure on a lane (connect or TLS
//!   failure, reset, GOAWAY) retires that lane alone; so do `failover.probe_failures` probes in a
//!   row that fail on it. A retired lane is probed again after a backoff with full jitter, and
//!   serves again once a probe, or a request, gets through on it.
//! * A **listener is down** only while none of its lanes serves. Even then requests are not
//!   refused unseen: a request that finds every listener of its host down still tries one lane
//!   (panic routing, as Envoy's) before the host's fallback answers, so an edge started a moment
//!   before its origin serves as soon as the origin does.
//! * Requests go, per host, round robin over the listeners that serve, and within a listener to
//!   the serving lane with the fewest requests in flight.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use rand::Rng as _;

use crate::config::upstream::HostPort;
use crate::resolve::Names;

use crate::config::EdgeConfig;
use crate::config::edge::FailoverSettings;
use crate::config::origin::Balance;
use crate::hosts::{self, HostPattern};
use crate::metrics;

/// One tunnel connection's worth of state (Pingora may open more than one connection for a lane
/// when `tunnel.max_streams` are in flight on it).
#[derive(Debug)]
pub struct Lane {
    /// Its Pingora pool: the `group_key` of its peers.
    pub index: usize,
    serving: AtomicBool,
    /// Serving: probes failed in a row. Retired: failed probes since, which set the backoff.
    failures: AtomicU32,
    next_probe: Mutex<Instant>,
    in_flight: AtomicUsize,
    /// Body bytes moved by requests on this lane, either way: what says it is alive while a
    /// probe queued behind bulk data is late.
    progress: AtomicU64,
    /// The descriptor of the lane's latest tunnel connection (-1: none yet), whose TCP counters
    /// say whether bytes move on it.
    socket: AtomicI32,
    /// `progress()` when the prober last looked at the lane.
    progress_seen: AtomicU64,
    /// When a request last took this lane (ms since `EPOCH`): the most recently used lane has
    /// the congestion window of a connection in use; one idle for longer than a retransmission
    /// timeout is back to slow start (Linux's `tcp_slow_start_after_idle`).
    last_used: AtomicU64,
    /// Held from `upstream_peer` until the tunnel stream is acquired. Pingora takes a pooled
    /// HTTP/2 connection out of its pool while it opens a stream, so concurrent requests would
    /// otherwise miss it and dial more connections (measured: 14 of 40 bursts of 100 requests
    /// opened extra connections without the lock, 0 of 40 with it). Requests wait for each
    /// other's stream (microseconds) or handshake.
    pub acquire: Arc<tokio::sync::Mutex<()>>,
}

impl Lane {
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }

    /// `bytes` of a body moved on this lane (a response's, or a request's).
    pub fn moved(&self, bytes: u64) {
        self.progress.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The lane's progress, to tell later whether bytes moved meanwhile: body bytes its requests
    /// moved, and what its connection's TCP socket moved, received or acknowledged (finer: a
    /// body piece reaches the proxy only once its whole HTTP/2 frame has crossed, a second or
    /// more on a thin link).
    pub fn progress(&self) -> u64 {
        let fd = self.socket.load(Ordering::Relaxed);
        let tcp = if fd >= 0 { crate::sockets::tcp_bytes_moved(fd).unwrap_or(0) } else { 0 };
        self.progress.load(Ordering::Relaxed).wrapping_add(tcp)
    }

    /// A tunnel connection of this lane is up on descriptor `fd`.
    pub fn connected_on(&self, fd: i32) {
        self.socket.store(fd, Ordering::Relaxed);
    }
}

/// [`Listener::progress`]: a lane's counter and its listener's.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    lane: u64,
    listener: u64,
}

/// What `Lane::last_used` counts from.
static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

pub(super) fn now_ms() -> u64 {
    u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One origin listener and its lanes.
#[derive(Debug)]
pub struct Listener {
    pub addr: SocketAddr,
    /// The configured name this address came from, when it was a name.
    pub name: Option<String>,
    pub server_name: String,
    pub lanes: Vec<Lane>,
    /// Whether the listener was up when last looked at, for its metric and log lines.
    up: AtomicBool,
}

impl Listener {
    pub fn is_up(&self) -> bool {
        self.lanes.iter().any(Lane::is_serving)
    }

    fn label(&self) -> String {
        self.addr.to_string()
    }

    fn in_flight(&self) -> usize {
        self.lanes.iter().map(|l| l.in_flight.load(Ordering::Relaxed)).sum()
    }

    /// The progress counters of `lane` and of the whole listener (every lane), to tell later
    /// what moved while a probe of `lane` waited.
    pub fn progress(&self, lane: usize) -> Progress {
        Progress {
            lane: self.lanes[lane].progress(),
            listener: self.lanes.iter().fold(0, |sum, l| sum.wrapping_add(l.progress())),
        }
    }

    /// The serving lane with the fewest requests in flight; of those, the one used most
    /// recently. Requests one after another thus stay on one lane, whose connection keeps its
    /// congestion window; requests side by side spread over the lanes. (Ties used to go to a
    /// lane at random: a sequential 2 MB download then landed on a lane idle for several
    /// transfers, back in slow start, and took 1.5× nginx's time on a 150 ms link.)
    fn least_busy(&self) -> Option<usize> {
        (0..self.lanes.len()).filter(|&i| self.lanes[i].is_serving()).min_by_key(|&i| {
            let lane = &self.lanes[i];
            (lane.in_flight.load(Ordering::Relaxed), std::cmp::Reverse(lane.last_used.load(Ordering::Relaxed)))
        })
    }

    /// Publishes a change between up (some lane serves) and down.
    fn publish(&self, why: &str) {
        let up = self.is_up();
        let lanes = self.lanes.iter().filter(|l| l.is_serving()).count();
        metrics::LANES_SERVING.with_label_values(&[&self.label()]).set(lanes as i64);
        if self.up.swap(up, Ordering::Relaxed) == up {
            return;
        }
        metrics::LISTENER_UP.with_label_values(&[&self.label()]).set(i64::from(up));
        if up {
            log::info!("origin listener {} is up again", self.addr);
        } else {
            metrics::FAILOVERS.with_label_values(&[&self.label()]).inc();
            log::warn!(
                "origin listener {} marked down, none of its {} lanes serves: {why}",
                self.addr,
                self.lanes.len()
            );
        }
    }
}

/// A request's hold on a lane: counted in flight until dropped.
#[derive(Debug)]
pub struct LaneUse {
    pub listener: Arc<Listener>,
    pub lane: usize,
    /// Counted in the lane's requests in flight (a probe is not: a lane with a probe waiting on
    /// it is not busier for the next request).
    counted: bool,
}

impl LaneUse {
    fn new(listener: Arc<Listener>, lane: usize) -> Self {
        listener.lanes[lane].in_flight.fetch_add(1, Ordering::Relaxed);
        LaneUse { listener, lane, counted: true }
    }

    /// As [`LaneUse::new`], for a request (not a probe): the lane is now the most recently used.
    fn for_request(listener: Arc<Listener>, lane: usize) -> Self {
        listener.lanes[lane].last_used.store(now_ms(), Ordering::Relaxed);
        LaneUse::new(listener, lane)
    }

    /// `bytes` of a body moved on this lane.
    pub fn moved(&self, bytes: u64) {
        self.listener.lanes[self.lane].moved(bytes);
    }

    /// This use got a tunnel connection on descriptor `fd`.
    pub fn connected_on(&self, fd: i32) {
        self.listener.lanes[self.lane].connected_on(fd);
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.addr
    }
}

impl Drop for LaneUse {
    fn drop(&mut self) {
        if self.counted {
            self.listener.lanes[self.lane].in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The listeners of one `origins:` key.
#[derive(Debug)]
struct Route {
    pattern: HostPattern,
    names: Vec<HostPort>,
    server_name: String,
    list: ArcSwap<Vec<Arc<Listener>>>,
    next: AtomicUsize,
}

/// The listeners of every host, shared by the proxy and the prober.
#[derive(Debug)]
pub struct Listeners {
    routes: Vec<Route>,
    all: ArcSwap<Vec<Arc<Listener>>>,
    settings: FailoverSettings,
    balance: Balance,
    lanes: usize,
    /// Looks names up again; `None` where the configuration names none (and in unit tests).
    names: Option<Arc<Names>>,
}

impl Listeners {
    pub fn new(config: &EdgeConfig, names: Option<Arc<Names>>) -> Self {
        let mut all: Vec<Arc<Listener>> = Vec::new();
        let mut routes = Vec::new();
        // Hosts served by tunnels that dial out have no listeners (see `connectors`).
        for route in config.origins.iter().filter(|r| r.tunnel.is_none()) {
            let named: Vec<(SocketAddr, Option<String>)> = route.listeners.iter().map(|a| (*a, None)).collect();
            let list = Self::listeners_for(&named, &route.server_name, config.tunnel.lanes, &mut all);
            routes.push(Route {
                pattern: route.pattern.clone(),
                names: route.listener_names.clone(),
                server_name: route.server_name.clone(),
                list: ArcSwap::from_pointee(list),
                next: AtomicUsize::new(0),
            });
        }
        Listeners {
            routes,
            all: ArcSwap::from_pointee(all),
            settings: config.failover.clone(),
            balance: config.tunnel.balance,
            lanes: config.tunnel.lanes,
            names,
        }
    }

    /// The listener of each address: the one in `all` (a listener serving several hosts is one
    /// listener, with one health state), else a new one, added to `all`.
    fn listeners_for(
        addrs: &[(SocketAddr, Option<String>)],
        server_name: &str,
        lanes: usize,
        all: &mut Vec<Arc<Listener>>,
    ) -> Vec<Arc<Listener>> {
        let mut list = Vec::new();
        for (addr, name) in addrs {
            let l = match all.iter().find(|l| l.addr == *addr && l.server_name == server_name) {
                Some(l) => l.clone(),
                None => {
                    let l = Arc::new(Listener {
                        addr: *addr,
                        name: name.clone(),
                        server_name: server_name.to_string(),
                        lanes: (0..lanes).map(Lane::new).collect(),
                        up: AtomicBool::new(true),
                    });
                    metrics::LISTENER_UP.with_label_values(&[&l.label()]).set(1);
                    metrics::LANES_SERVING.with_label_values(&[&l.label()]).set(l.lanes.len() as i64);
                    // From zero, so that increase() sees the first failover.
                    metrics::FAILOVERS.with_label_values(&[&l.label()]);
                    all.push(l.clone());
                    l
                }
            };
            if !list.iter().any(|x: &Arc<Listener>| Arc::ptr_eq(x, &l)) {
                list.push(l);
            }
        }
        list
    }

    /// Looks the listeners' names up again (each when its answer is due) and, where a name now
    /// stands for other addresses, serves the new ones (dialled by the prober like any) and
    /// drops the ones it no longer has once no host uses them.
    pub async fn refresh(&self) {
        let Some(names) = &self.names else { return };
        let mut changed = false;
        let mut all: Vec<Arc<Listener>> = self.all.load().as_ref().clone();
        for route in self.routes.iter().filter(|r| r.names.iter().any(|n| n.literal().is_none())) {
            let mut addrs: Vec<(SocketAddr, Option<String>)> = Vec::new();
            for n in &route.names {
                let name = n.literal().is_none().then(|| n.host.clone());
                match names.addresses(n).await {
                    Ok(found) => addrs.extend(found.into_iter().map(|a| (a, name.clone()))),
                    // Not answered now: what it stood for stays.
                    Err(_) => addrs
                        .extend(route.list.load().iter().filter(|l| l.name == name).map(|l| (l.addr, name.clone()))),
                }
            }
            let now: Vec<SocketAddr> = route.list.load().iter().map(|l| l.addr).collect();
            let wanted: Vec<SocketAddr> = addrs.iter().map(|(a, _)| *a).collect();
            if addrs.is_empty() || now == wanted {
                continue;
            }
            log::info!("origin listeners of {} are now {wanted:?} (were {now:?})", route.pattern);
            let list = Self::listeners_for(&addrs, &route.server_name, self.lanes, &mut all);
            route.list.store(Arc::new(list));
            changed = true;
        }
        if changed {
            let used = |l: &Arc<Listener>| self.routes.iter().any(|r| r.list.load().iter().any(|x| Arc::ptr_eq(x, l)));
            all.retain(|l| {
                let keep = used(l);
                if !keep {
                    for m in [&*metrics::LISTENER_UP, &*metrics::LANES_SERVING] {
                        let _ = m.remove_label_values(&[&l.label()]);
                    }
                }
                keep
            });
            self.all.store(Arc::new(all));
        }
    }

    /// Refreshes the listeners' names every second (see [`Listeners::refresh`]).
    pub fn resolver(self: &Arc<Self>) -> ListenerNames {
        ListenerNames(self.clone())
    }

    /// Ready when every host has a listener that is up; otherwise why not, per host.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let down: Vec<String> = self
            .routes
            .iter()
            .filter(|r| !r.list.load().iter().any(|l| l.is_up()))
            .map(|r| {
                let addrs: Vec<String> = r.list.load().iter().map(|l| l.addr.to_string()).collect();
                format!("origins.{}: no origin listener is up ({})", r.pattern, addrs.join(", "))
            })
            .collect();
        if down.is_empty() { Ok(()) } else { Err(down) }
    }

    /// A lane for a request to `host`: the next listener (round robin) that serves and is not in
    /// `tried`, on its least busy lane. When none serves, a lane of one of them anyway if this is
    /// the request's first attempt (panic routing); else `None`, and the fallback answers.
    pub fn pick(&self, host: &str, tried: &[SocketAddr], first_attempt: bool) -> Option<LaneUse> {
        let route = hosts::best(self.routes.iter().map(|r| (&r.pattern, r)), host)?;
        let (list, next) = (route.list.load(), &route.next);
        if list.is_empty() {
            return None;
        }
        let start = next.fetch_add(1, Ordering::Relaxed);
        let order = (0..list.len()).map(|i| &list[(start + i) % list.len()]);
        let mut usable = order.clone().filter(|l| !tried.contains(&l.addr)).filter_map(|l| Some((l, l.least_busy()?)));
        let chosen = match self.balance {
            // The next listener in turn that serves.
            Balance::RoundRobin => usable.next(),
            // The one with the fewest requests in flight over all its lanes (ties in turn).
            Balance::LeastRequests => usable.min_by_key(|(l, _)| l.in_flight()),
        };
        if let Some((l, lane)) = chosen {
            return Some(LaneUse::for_request(l.clone(), lane));
        }
        if !first_attempt {
            return None;
        }
        let l = order.clone().next()?;
        let lane = rand::thread_rng().gen_range(0..l.lanes.len());
        log::debug!("no origin listener of {host} serves: trying {} lane {lane} anyway", l.addr);
        Some(LaneUse::for_request(l.clone(), lane))
    }

    /// A lane named by a probe (not counted in its requests in flight).
    pub fn lane(&self, addr: SocketAddr, lane: usize) -> Option<LaneUse> {
        let all = self.all.load();
        let l = all.iter().find(|l| l.addr == addr && lane < l.lanes.len())?;
        Some(LaneUse { listener: l.clone(), lane, counted: false })
    }

    /// A connection-level failure on a lane: it stops taking requests until a probe (or a
    /// request) gets through on it. The listener goes down only with its last lane.
    pub fn retire(&self, used: &LaneUse, why: &str) {
        self.retire_lane(&used.listener, used.lane, why);
    }

    fn retire_lane(&self, l: &Listener, lane: usize, why: &str) {
        let state = &l.lanes[lane];
        if state.serving.swap(false, Ordering::Relaxed) {
            state.failures.store(0, Ordering::Relaxed);
            *state.next_probe.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now() + self.backoff(0);
            log::warn!("origin listener {} lane {lane}: retired: {why}", l.addr);
            l.publish(why);
        }
        // The name may have moved: asked again soon.
        if let (Some(names), Some(name)) = (&self.names, &l.name) {
            names.failed(name);
        }
    }

    /// A request's tunnel connection on a lane came up: the lane serves (again).
    pub fn connected(&self, used: &LaneUse) {
        self.serve(&used.listener, used.lane, Instant::now());
    }

    fn serve(&self, l: &Listener, lane: usize, now: Instant) {
        let state = &l.lanes[lane];
        state.failures.store(0, Ordering::Relaxed);
        if !state.serving.swap(true, Ordering::Relaxed) {
            log::info!("origin listener {} lane {lane}: serving again", l.addr);
            *state.next_probe.lock().unwrap_or_else(|p| p.into_inner()) = now + self.settings.probe_interval;
            l.publish("");
        }
    }

    /// Full jitter: uniform in [0, min(cap, base × 2^failures)].
    fn backoff(&self, failures: u32) -> Duration {
        let s = &self.settings;
        let ceiling = s.backoff_base.saturating_mul(1u32 << failures.min(16)).min(s.backoff_cap);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX).max(1);
        Duration::from_nanos(rand::thread_rng().gen_range(0..nanos))
    }

    /// Every lane whose probe is due at `now`, as (listener, lane). A serving lane whose
    /// requests moved bytes since the prober last looked is alive: it is not probed (a probe
    /// would only queue behind their data), counted as `busy`.
    pub(super) fn due(&self, now: Instant) -> Vec<(Arc<Listener>, usize)> {
        let mut due = Vec::new();
        for l in self.all.load().iter() {
            for lane in &l.lanes {
                let mut next = lane.next_probe.lock().unwrap_or_else(|p| p.into_inner());
                if *next > now {
                    continue;
                }
                let progress = lane.progress();
                let moved = lane.progress_seen.swap(progress, Ordering::Relaxed) != progress;
                if lane.is_serving() && moved && lane.in_flight.load(Ordering::Relaxed) > 0 {
                    metrics::PROBES.with_label_values(&["busy"]).inc();
                    *next = now + self.settings.probe_interval;
                    continue;
                }
                due.push((l.clone(), lane.index));
            }
        }
        due
    }

    /// What a probe of `lane` found. `before` is the progress when the probe was sent. A probe
    /// that failed while bytes moved on its lane was queued behind them; one that failed on a
    /// lane with nothing in flight while the listener's other lanes moved bytes waited behind
    /// theirs at the path's bottleneck (a thin link's queue, where a dropped probe waits for a
    /// retransmission timeout). Either is a late answer, not a dead lane: neither a success nor
    /// a failure. A lane carrying requests must show progress of its own.
    pub(super) fn probe_result(&self, l: &Listener, lane: usize, result: &Result<(), String>, before: Progress) {
        let now = Instant::now();
        let state = &l.lanes[lane];
        let set_next = |at: Instant| *state.next_probe.lock().unwrap_or_else(|p| p.into_inner()) = at;
        let after = l.progress(lane);
        let idle = state.in_flight.load(Ordering::Relaxed) == 0;
        let moving = after.lane != before.lane || (idle && after.listener != before.listener);
        match result {
            Ok(()) => {
                metrics::PROBES.with_label_values(&["ok"]).inc();
                self.serve(l, lane, now);
                set_next(now + self.settings.probe_interval);
            }
            Err(why) if state.is_serving() && moving => {
                metrics::PROBES.with_label_values(&["late"]).inc();
                log::debug!("origin listener {} lane {lane}: probe late behind moving bytes: {why}", l.addr);
                set_next(now + self.settings.probe_interval);
            }
            Err(why) if state.is_serving() => {
                metrics::PROBES.with_label_values(&["failed"]).inc();
                let n = state.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= self.settings.probe_failures {
                    self.retire_lane(l, lane, &format!("{n} probes failed in a row, the last: {why}"));
                } else {
                    log::debug!("origin listener {} lane {lane}: probe {n} failed: {why}", l.addr);
                    set_next(now + self.settings.probe_interval);
                }
            }
            Err(why) => {
                metrics::PROBES.with_label_values(&["failed"]).inc();
                log::debug!("origin listener {} lane {lane}: still retired: {why}", l.addr);
                let n = state.failures.fetch_add(1, Ordering::Relaxed) + 1;
                set_next(now + self.backoff(n));
            }
        }
    }
}

impl Lane {
    fn new(index: usize) -> Self {
        Lane {
            index,
            serving: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            next_probe: Mutex::new(Instant::now()),
            in_flight: AtomicUsize::new(0),
            progress: AtomicU64::new(0),
            socket: AtomicI32::new(-1),
            progress_seen: AtomicU64::new(0),
            last_used: AtomicU64::new(0),
            acquire: Arc::default(),
        }
    }
}

/// Looks the origin listeners' names up again as their answers age.
pub struct ListenerNames(Arc<Listeners>);

#[async_trait]
impl BackgroundService for ListenerNames {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let named = self.0.routes.iter().any(|r| r.names.iter().any(|n| n.literal().is_none()));
        if self.0.names.is_none() || !named {
            return;
        }
        loop {
            self.0.refresh().await;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listeners(lanes: usize) -> Listeners {
        listeners_balanced(lanes, "round_robin")
    }

    fn listeners_balanced(lanes: usize, balance: &str) -> Listeners {
        let yaml = format!(
            "mode: edge\nlisten: [127.0.0.1:1]\nadmin: {{listen: 127.0.0.1:2}}\n\
             tunnel: {{ca: /dev/null, cert: /dev/null, key: /dev/null, lanes: {lanes}, balance: {balance}}}\n\
             origins:\n  a: {{listeners: [127.0.0.1:10, 127.0.0.1:11]}}\n  b: {{listeners: [127.0.0.1:11]}}\n\
             failover: {{backoff_base: 1s, backoff_cap: 30s, probe_failures: 3}}\n"
        );
        let crate::config::Config::Edge(c) = crate::config::Config::parse(&yaml).unwrap() else { unreachable!() };
        Listeners::new(&c, None)
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn backoff_is_full_jitter_below_an_exponential_cap() {
        let l = listeners(1);
        for failures in 0..10u32 {
            let ceiling = Duration::from_secs(1).saturating_mul(1 << failures).min(Duration::from_secs(30));
            let samples: Vec<Duration> = (0..200).map(|_| l.backoff(failures)).collect();
            assert!(samples.iter().all(|d| *d <= ceiling), "failures {failures}");
            // Full jitter: spread over the whole range, not bunched at the top.
            assert!(samples.iter().any(|d| *d < ceiling / 4), "failures {failures}");
        }
    }

    #[test]
    fn least_requests_goes_to_the_listener_with_fewer_in_flight() {
        let l = listeners_balanced(2, "least_requests");
        // Requests in flight (a probe's `lane()` is not counted).
        let hold = |l: &Listeners, at: &str, lane: usize| {
            let listener = l.all.load().iter().find(|x| x.addr == addr(at)).unwrap().clone();
            LaneUse::for_request(listener, lane)
        };
        let held: Vec<LaneUse> = (0..3).map(|_| hold(&l, "127.0.0.1:10", 0)).collect();
        assert!((0..6).all(|_| l.pick("a", &[], true).unwrap().addr() == addr("127.0.0.1:11")));
        drop(held);
        let eleven: Vec<LaneUse> = (0..2).map(|_| hold(&l, "127.0.0.1:11", 1)).collect();
        assert_eq!(l.pick("a", &[], true).unwrap().addr(), addr("127.0.0.1:10"));
        drop(eleven);
        // Round robin, for contrast, alternates whatever is in flight.
        let rr = listeners(2);
        let _held = hold(&rr, "127.0.0.1:10", 0);
        let picks: Vec<SocketAddr> = (0..4).map(|_| rr.pick("a", &[], true).unwrap().addr()).collect();
        assert!(picks.contains(&addr("127.0.0.1:10")));
    }

    #[test]
    fn round_robin_over_listeners_and_shared_health() {
        let l = listeners(1);
        let a: Vec<SocketAddr> = (0..4).map(|_| l.pick("a", &[], true).unwrap().addr()).collect();
        assert_eq!(a[0], a[2]);
        assert_ne!(a[0], a[1]);
        let eleven = l.pick("b", &[], true).unwrap();
        l.retire(&eleven, "test");
        // One listener, one health state, whichever host it serves.
        assert!((0..4).all(|_| l.pick("a", &[], true).unwrap().addr() != addr("127.0.0.1:11")));
        assert!(l.pick("a", &[addr("127.0.0.1:10")], false).is_none(), "tried listeners are skipped");
    }

    #[test]
    fn a_lane_failure_retires_the_lane_not_the_listener() {
        let l = listeners(4);
        let first = l.pick("b", &[], true).unwrap();
        let retired = first.lane;
        l.retire(&first, "GOAWAY");
        drop(first);
        let listener = &l.all.load()[1].clone();
        assert!(listener.is_up(), "three lanes still serve");
        for _ in 0..20 {
            assert_ne!(l.pick("b", &[], true).unwrap().lane, retired, "a retired lane takes no requests");
        }
        for lane in 0..4 {
            l.retire(&LaneUse::new(listener.clone(), lane), "connect refused");
        }
        assert!(!listener.is_up(), "down with its last lane");
    }

    #[test]
    fn requests_spread_over_lanes_by_load() {
        let l = listeners(4);
        // Held requests: each new one goes to a lane with none in flight.
        let held: Vec<LaneUse> = (0..4).map(|_| l.pick("b", &[], true).unwrap()).collect();
        let mut lanes: Vec<usize> = held.iter().map(|u| u.lane).collect();
        lanes.sort_unstable();
        assert_eq!(lanes, [0, 1, 2, 3]);
        drop(held);
        assert!(l.all.load()[1].lanes.iter().all(|lane| lane.in_flight.load(Ordering::Relaxed) == 0));
    }

    #[test]
    fn with_every_listener_down_a_request_still_tries_one() {
        let l = listeners(2);
        for listener in l.all.load().iter() {
            for lane in 0..2 {
                l.retire(&LaneUse::new(listener.clone(), lane), "refused");
            }
        }
        let panic = l.pick("a", &[], true).expect("panic routing: one try");
        assert!(l.pick("a", &[panic.addr()], false).is_none(), "then the fallback");
        l.connected(&panic);
        assert!(panic.listener.is_up(), "a connection that came up brings the lane back");
    }

    #[test]
    fn probes_retire_a_lane_after_failures_in_a_row() {
        let l = listeners(1);
        let listener = l.all.load()[0].clone();
        let err = Err("no answer".to_string());
        l.probe_result(&listener, 0, &err, Progress::default());
        l.probe_result(&listener, 0, &Ok(()), Progress::default());
        l.probe_result(&listener, 0, &err, Progress::default());
        l.probe_result(&listener, 0, &err, Progress::default());
        assert!(listener.is_up(), "two failures in a row, after a success, leave it serving");
        l.probe_result(&listener, 0, &err, Progress::default());
        assert!(!listener.is_up(), "the third retires it");
        l.probe_result(&listener, 0, &Ok(()), Progress::default());
        assert!(listener.is_up());
    }

    #[test]
    fn a_probe_late_behind_moving_bytes_is_no_failure() {
        let l = listeners(1);
        let listener = l.all.load()[0].clone();
        let err = Err("no answer within 1s".to_string());
        for _ in 0..10 {
            // Bytes moved on the lane while the probe waited: late, not dead.
            let before = listener.progress(0);
            listener.lanes[0].moved(65536);
            l.probe_result(&listener, 0, &err, before);
        }
        assert!(listener.is_up(), "a busy lane was retired for late probes");
        for _ in 0..3 {
            let before = listener.progress(0);
            l.probe_result(&listener, 0, &err, before);
        }
        assert!(!listener.is_up(), "no progress and no answer: the lane is dead");
    }

    #[test]
    fn an_idle_lanes_probe_behind_its_siblings_bytes_is_late() {
        let l = listeners(2);
        let listener = l.all.load()[0].clone();
        let err = Err("no answer within 1s".to_string());
        for _ in 0..10 {
            // Lane 0 carries nothing; lane 1 moves bytes across the same path meanwhile.
            let before = listener.progress(0);
            listener.lanes[1].moved(65536);
            l.probe_result(&listener, 0, &err, before);
        }
        assert!(listener.lanes[0].is_serving(), "an idle lane was retired while its path was busy");
        // A lane carrying a request must move bytes of its own: its siblings' say nothing of it.
        let held = LaneUse::for_request(listener.clone(), 0);
        for _ in 0..3 {
            let before = listener.progress(0);
            listener.lanes[1].moved(65536);
            l.probe_result(&listener, 0, &err, before);
        }
        assert!(!listener.lanes[0].is_serving(), "a lane whose request moved nothing was kept");
        drop(held);
    }

    #[test]
    fn a_lane_whose_requests_move_bytes_is_not_probed() {
        let l = listeners(1);
        let listener = l.all.load().iter().find(|x| x.addr == addr("127.0.0.1:11")).unwrap().clone();
        let lane_of_b = |due: Vec<(Arc<Listener>, usize)>| due.iter().any(|(x, _)| x.addr == addr("127.0.0.1:11"));
        let now = Instant::now();
        assert!(lane_of_b(l.due(now)), "an idle lane is probed");
        let held = l.pick("b", &[], true).unwrap();
        listener.lanes[0].moved(4096);
        let later = now + Duration::from_secs(60);
        assert!(!lane_of_b(l.due(later)), "a lane moving bytes for a request was probed");
        // Still in flight, nothing moved since: it may be hung, so it is probed.
        let later = later + Duration::from_secs(60);
        assert!(lane_of_b(l.due(later)), "a request's lane with nothing moving was not probed");
        drop(held);
    }

    #[test]
    fn requests_one_after_another_stay_on_the_lane_used_last() {
        let l = listeners(4);
        let first = l.pick("b", &[], true).unwrap().lane;
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(2));
            assert_eq!(l.pick("b", &[], true).unwrap().lane, first, "a sequential request changed lanes");
        }
        // Side by side they spread, the busy lane last.
        let held = l.pick("b", &[], true).unwrap();
        assert_eq!(held.lane, first);
        assert_ne!(l.pick("b", &[], true).unwrap().lane, first);
    }
}

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
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng as _;

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
}

impl Lane {
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }
}

/// One origin listener and its lanes.
#[derive(Debug)]
pub struct Listener {
    pub addr: SocketAddr,
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

    /// The serving lane with the fewest requests in flight; ties go to a lane chosen at random,
    /// so that quiet lanes are used too and stay warm.
    fn least_busy(&self) -> Option<usize> {
        let start = rand::thread_rng().gen_range(0..self.lanes.len());
        (0..self.lanes.len())
            .map(|i| (start + i) % self.lanes.len())
            .filter(|&i| self.lanes[i].is_serving())
            .min_by_key(|&i| self.lanes[i].in_flight.load(Ordering::Relaxed))
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
}

impl LaneUse {
    fn new(listener: Arc<Listener>, lane: usize) -> Self {
        listener.lanes[lane].in_flight.fetch_add(1, Ordering::Relaxed);
        LaneUse { listener, lane }
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.addr
    }
}

impl Drop for LaneUse {
    fn drop(&mut self) {
        self.listener.lanes[self.lane].in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The listeners of every host, shared by the proxy and the prober.
#[derive(Debug)]
pub struct Listeners {
    by_host: Vec<(HostPattern, Vec<Arc<Listener>>, AtomicUsize)>,
    all: Vec<Arc<Listener>>,
    settings: FailoverSettings,
    balance: Balance,
}

impl Listeners {
    pub fn new(config: &EdgeConfig) -> Self {
        let mut all: Vec<Arc<Listener>> = Vec::new();
        let mut by_host = Vec::new();
        for route in &config.origins {
            let mut list = Vec::new();
            for addr in &route.listeners {
                // A listener serving several hosts is one listener, with one health state.
                let l = match all.iter().find(|l| l.addr == *addr) {
                    Some(l) => l.clone(),
                    None => {
                        let l = Arc::new(Listener {
                            addr: *addr,
                            server_name: route.server_name.clone(),
                            lanes: (0..config.tunnel.lanes).map(Lane::new).collect(),
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
                list.push(l);
            }
            by_host.push((route.pattern.clone(), list, AtomicUsize::new(0)));
        }
        Listeners { by_host, all, settings: config.failover.clone(), balance: config.tunnel.balance }
    }

    /// Ready when every host has a listener that is up; otherwise why not, per host.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let down: Vec<String> = self
            .by_host
            .iter()
            .filter(|(_, list, _)| !list.iter().any(|l| l.is_up()))
            .map(|(pattern, list, _)| {
                let addrs: Vec<String> = list.iter().map(|l| l.addr.to_string()).collect();
                format!("origins.{pattern}: no origin listener is up ({})", addrs.join(", "))
            })
            .collect();
        if down.is_empty() { Ok(()) } else { Err(down) }
    }

    /// A lane for a request to `host`: the next listener (round robin) that serves and is not in
    /// `tried`, on its least busy lane. When none serves, a lane of one of them anyway if this is
    /// the request's first attempt (panic routing); else `None`, and the fallback answers.
    pub fn pick(&self, host: &str, tried: &[SocketAddr], first_attempt: bool) -> Option<LaneUse> {
        let (_, list, next) = hosts::best(self.by_host.iter().map(|e| (&e.0, e)), host)?;
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
            return Some(LaneUse::new(l.clone(), lane));
        }
        if !first_attempt {
            return None;
        }
        let l = order.clone().next()?;
        let lane = rand::thread_rng().gen_range(0..l.lanes.len());
        log::debug!("no origin listener of {host} serves: trying {} lane {lane} anyway", l.addr);
        Some(LaneUse::new(l.clone(), lane))
    }

    /// A lane named by a probe.
    pub fn lane(&self, addr: SocketAddr, lane: usize) -> Option<LaneUse> {
        let l = self.all.iter().find(|l| l.addr == addr && lane < l.lanes.len())?;
        Some(LaneUse::new(l.clone(), lane))
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

    /// Every lane whose probe is due at `now`, as (listener, lane).
    pub(super) fn due(&self, now: Instant) -> Vec<(Arc<Listener>, usize)> {
        let mut due = Vec::new();
        for l in &self.all {
            for lane in &l.lanes {
                if *lane.next_probe.lock().unwrap_or_else(|p| p.into_inner()) <= now {
                    due.push((l.clone(), lane.index));
                }
            }
        }
        due
    }

    pub(super) fn probe_result(&self, l: &Listener, lane: usize, result: &Result<(), String>) {
        let now = Instant::now();
        let state = &l.lanes[lane];
        let set_next = |at: Instant| *state.next_probe.lock().unwrap_or_else(|p| p.into_inner()) = at;
        match result {
            Ok(()) => {
                self.serve(l, lane, now);
                set_next(now + self.settings.probe_interval);
            }
            Err(why) if state.is_serving() => {
                let n = state.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= self.settings.probe_failures {
                    self.retire_lane(l, lane, &format!("{n} probes failed in a row, the last: {why}"));
                } else {
                    log::debug!("origin listener {} lane {lane}: probe {n} failed: {why}", l.addr);
                    set_next(now + self.settings.probe_interval);
                }
            }
            Err(why) => {
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listeners(lanes: usize) -> Listeners {
        let yaml = format!(
            "mode: edge\nlisten: [127.0.0.1:1]\nadmin: {{listen: 127.0.0.1:2}}\n\
             tunnel: {{ca: /dev/null, cert: /dev/null, key: /dev/null, lanes: {lanes}}}\n\
             origins:\n  a: {{listeners: [127.0.0.1:10, 127.0.0.1:11]}}\n  b: {{listeners: [127.0.0.1:11]}}\n\
             failover: {{backoff_base: 1s, backoff_cap: 30s, probe_failures: 3}}\n"
        );
        let crate::config::Config::Edge(c) = crate::config::Config::parse(&yaml).unwrap() else { unreachable!() };
        Listeners::new(&c)
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
        let listener = &l.all[1];
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
        assert!(l.all[1].lanes.iter().all(|lane| lane.in_flight.load(Ordering::Relaxed) == 0));
    }

    #[test]
    fn with_every_listener_down_a_request_still_tries_one() {
        let l = listeners(2);
        for listener in l.all.clone() {
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
        let listener = l.all[0].clone();
        let err = Err("no answer".to_string());
        l.probe_result(&listener, 0, &err);
        l.probe_result(&listener, 0, &Ok(()));
        l.probe_result(&listener, 0, &err);
        l.probe_result(&listener, 0, &err);
        assert!(listener.is_up(), "two failures in a row, after a success, leave it serving");
        l.probe_result(&listener, 0, &err);
        assert!(!listener.is_up(), "the third retires it");
        l.probe_result(&listener, 0, &Ok(()));
        assert!(listener.is_up());
    }
}

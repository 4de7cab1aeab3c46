//! Origin listeners as the edge sees them: up or down, chosen round robin among those up, marked
//! down by failures on the tunnel and brought back by probes sent over the tunnel, with
//! exponential backoff and full jitter while they stay down.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng as _;

use crate::config::EdgeConfig;
use crate::config::edge::FailoverSettings;
use crate::metrics;

/// One origin listener.
#[derive(Debug)]
pub struct Listener {
    pub addr: SocketAddr,
    pub server_name: String,
    up: AtomicBool,
    /// Consecutive failed probes while down; sets the backoff.
    failures: AtomicU32,
    next_probe: Mutex<Instant>,
}

impl Listener {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn set(&self, up: bool) {
        metrics::LISTENER_UP.with_label_values(&[&self.addr.to_string()]).set(i64::from(up));
        self.up.store(up, Ordering::Relaxed);
    }
}

/// The listeners of every host, shared by the proxy and the prober.
#[derive(Debug)]
pub struct Listeners {
    by_host: HashMap<String, (Vec<Arc<Listener>>, AtomicUsize)>,
    all: Vec<Arc<Listener>>,
    settings: FailoverSettings,
}

impl Listeners {
    pub fn new(config: &EdgeConfig) -> Self {
        let mut all: Vec<Arc<Listener>> = Vec::new();
        let mut by_host = HashMap::new();
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
                            up: AtomicBool::new(true),
                            failures: AtomicU32::new(0),
                            next_probe: Mutex::new(Instant::now()),
                        });
                        l.set(true);
                        // From zero, so that increase() sees the first failover.
                        metrics::FAILOVERS.with_label_values(&[&addr.to_string()]);
                        all.push(l.clone());
                        l
                    }
                };
                list.push(l);
            }
            by_host.insert(route.host.clone(), (list, AtomicUsize::new(0)));
        }
        Listeners { by_host, all, settings: config.failover.clone() }
    }

    /// The next listener for `host` that is up and not in `tried`, round robin.
    pub fn pick(&self, host: &str, tried: &[SocketAddr]) -> Option<Arc<Listener>> {
        let (list, next) = self.by_host.get(host)?;
        let start = next.fetch_add(1, Ordering::Relaxed);
        (0..list.len())
            .map(|i| &list[(start + i) % list.len()])
            .find(|l| l.is_up() && !tried.contains(&l.addr))
            .cloned()
    }

    /// A failure on the tunnel to `addr`: stop sending it requests until a probe succeeds.
    pub fn mark_down(&self, addr: SocketAddr, why: &str) {
        let Some(l) = self.all.iter().find(|l| l.addr == addr) else { return };
        if l.up.swap(false, Ordering::Relaxed) {
            metrics::LISTENER_UP.with_label_values(&[&addr.to_string()]).set(0);
            metrics::FAILOVERS.with_label_values(&[&addr.to_string()]).inc();
            l.failures.store(0, Ordering::Relaxed);
            *l.next_probe.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now() + self.backoff(0);
            log::warn!("origin listener {addr} marked down: {why}");
        }
    }

    /// Full jitter: uniform in [0, min(cap, base × 2^failures)].
    fn backoff(&self, failures: u32) -> Duration {
        let s = &self.settings;
        let ceiling = s.backoff_base.saturating_mul(1u32 << failures.min(16)).min(s.backoff_cap);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX).max(1);
        Duration::from_nanos(rand::thread_rng().gen_range(0..nanos))
    }

    /// The listeners whose probe is due at `now`.
    pub(super) fn due(&self, now: Instant) -> impl Iterator<Item = &Arc<Listener>> {
        self.all.iter().filter(move |l| *l.next_probe.lock().unwrap_or_else(|p| p.into_inner()) <= now)
    }

    pub(super) fn probe_result(&self, l: &Listener, result: &Result<(), String>) {
        let now = Instant::now();
        match result {
            Ok(()) => {
                if !l.is_up() {
                    log::info!("origin listener {} is up again", l.addr);
                }
                l.failures.store(0, Ordering::Relaxed);
                l.set(true);
                *l.next_probe.lock().unwrap_or_else(|p| p.into_inner()) = now + self.settings.probe_interval;
            }
            Err(why) if l.is_up() => self.mark_down(l.addr, &format!("health probe failed: {why}")),
            Err(why) => {
                log::debug!("origin listener {}: still down: {why}", l.addr);
                let n = l.failures.fetch_add(1, Ordering::Relaxed) + 1;
                *l.next_probe.lock().unwrap_or_else(|p| p.into_inner()) = now + self.backoff(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listeners() -> Listeners {
        let yaml = "mode: edge\nlisten: [127.0.0.1:1]\nadmin: {listen: 127.0.0.1:2}\ntunnel: {ca: /dev/null, cert: /dev/null, key: /dev/null}\n\
                    origins:\n  a: {listeners: [127.0.0.1:10, 127.0.0.1:11]}\n  b: {listeners: [127.0.0.1:11]}\n\
                    failover: {backoff_base: 1s, backoff_cap: 30s}\n";
        let crate::config::Config::Edge(c) = crate::config::Config::parse(yaml).unwrap() else { unreachable!() };
        Listeners::new(&c)
    }

    #[test]
    fn backoff_is_full_jitter_below_an_exponential_cap() {
        let l = listeners();
        for failures in 0..10u32 {
            let ceiling = Duration::from_secs(1).saturating_mul(1 << failures).min(Duration::from_secs(30));
            let samples: Vec<Duration> = (0..200).map(|_| l.backoff(failures)).collect();
            assert!(samples.iter().all(|d| *d <= ceiling), "failures {failures}");
            // Full jitter: spread over the whole range, not bunched at the top.
            assert!(samples.iter().any(|d| *d < ceiling / 4), "failures {failures}");
        }
    }

    #[test]
    fn round_robin_over_listeners_up_and_shared_health() {
        let l = listeners();
        let a: Vec<SocketAddr> = (0..4).map(|_| l.pick("a", &[]).unwrap().addr).collect();
        assert_eq!(a[0], a[2]);
        assert_ne!(a[0], a[1]);
        let eleven: SocketAddr = "127.0.0.1:11".parse().unwrap();
        l.mark_down(eleven, "test");
        // One listener, one health state, whichever host it serves.
        assert!(l.pick("b", &[]).is_none());
        assert!((0..4).all(|_| l.pick("a", &[]).unwrap().addr != eleven));
        let ten: SocketAddr = "127.0.0.1:10".parse().unwrap();
        assert!(l.pick("a", &[ten]).is_none(), "tried listeners are skipped");
    }
}

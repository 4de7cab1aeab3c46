//! Names of backends and listeners, resolved at start and again as their answers age.
//!
//! Each name keeps its last good answer until the TTL says to ask again (bounded by
//! `dns.min_ttl`/`dns.max_ttl`), or sooner when one of its addresses failed (`dns.retry`). A
//! lookup that fails keeps the last good answer: a name server that is down for a minute should
//! not take healthy backends out of rotation (nginx's `resolver` does the same).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver, TokioResolver};

use crate::config::upstream::{DnsSettings, HostPort};
use crate::metrics;

struct Answer {
    addrs: Vec<IpAddr>,
    /// When to ask again.
    due: Instant,
}

/// Resolves names for one process; shared by every host's backends.
pub struct Names {
    resolver: TokioResolver,
    settings: DnsSettings,
    answers: Mutex<HashMap<String, Answer>>,
}

impl std::fmt::Debug for Names {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Names").field("settings", &self.settings).finish()
    }
}

impl Names {
    pub fn new(settings: &DnsSettings) -> anyhow::Result<Self> {
        let mut builder = if settings.servers.is_empty() {
            match Resolver::builder_tokio() {
                Ok(b) => b,
                // A process whose names are all in the hosts file (or that has none) must not
                // fail to start over a resolv.conf it cannot read.
                Err(e) => {
                    log::warn!(
                        "the system's DNS configuration cannot be read ({e}): names resolve from the hosts file only"
                    );
                    Resolver::builder_with_config(
                        ResolverConfig::from_parts(None, vec![], vec![]),
                        TokioRuntimeProvider::default(),
                    )
                }
            }
        } else {
            let servers = settings
                .servers
                .iter()
                .map(|s| {
                    let mut ns = NameServerConfig::udp_and_tcp(s.ip());
                    for c in &mut ns.connections {
                        c.port = s.port();
                    }
                    ns
                })
                .collect();
            Resolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], servers),
                TokioRuntimeProvider::default(),
            )
        };
        let opts = builder.options_mut();
        // The answers are kept here, with their own bounds; the resolver's cache would only
        // hide a changed answer after a failure.
        opts.cache_size = 0;
        opts.use_hosts_file = ResolveHosts::Always;
        opts.timeout = Duration::from_secs(2);
        opts.attempts = 2;
        let resolver = builder.build().map_err(|e| anyhow::anyhow!("starting the DNS resolver: {e}"))?;
        Ok(Names { resolver, settings: settings.clone(), answers: Mutex::new(HashMap::new()) })
    }

    /// The addresses of `at` now: at once for an IP literal or an answer still fresh, else
    /// after a lookup. Err only when the name never resolved.
    pub async fn addresses(&self, at: &HostPort) -> Result<Vec<SocketAddr>, String> {
        if let Some(a) = at.literal() {
            return Ok(vec![a]);
        }
        let now = Instant::now();
        let with_port = |ips: &[IpAddr]| ips.iter().map(|ip| SocketAddr::new(*ip, at.port)).collect();
        let held = {
            let answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
            answers.get(&at.host).map(|a| (a.addrs.clone(), a.due <= now))
        };
        match held {
            Some((addrs, false)) => return Ok(with_port(&addrs)),
            Some((addrs, true)) => {
                if let Some(fresh) = self.lookup(&at.host).await {
                    return Ok(with_port(&fresh));
                }
                return Ok(with_port(&addrs));
            }
            None => {}
        }
        match self.lookup(&at.host).await {
            Some(addrs) => Ok(with_port(&addrs)),
            None => Err(format!("{} does not resolve", at.host)),
        }
    }

    /// Asks the name servers (or the hosts file); keeps the answer, or schedules a retry.
    async fn lookup(&self, name: &str) -> Option<Vec<IpAddr>> {
        let s = &self.settings;
        let result = self.resolver.lookup_ip(format!("{}.", name.trim_end_matches('.'))).await;
        let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match result {
            Ok(lookup) => {
                let mut addrs: Vec<IpAddr> = lookup.iter().collect();
                addrs.sort();
                addrs.dedup();
                if addrs.is_empty() {
                    metrics::DNS_LOOKUPS.with_label_values(&["empty"]).inc();
                    return self.keep_trying(&mut answers, name, now);
                }
                let ttl = lookup.valid_until().saturating_duration_since(now).clamp(s.min_ttl, s.max_ttl);
                metrics::DNS_LOOKUPS.with_label_values(&["ok"]).inc();
                answers.insert(name.to_string(), Answer { addrs: addrs.clone(), due: now + ttl });
                Some(addrs)
            }
            Err(e) => {
                log::warn!("resolving {name}: {e}");
                metrics::DNS_LOOKUPS.with_label_values(&["failed"]).inc();
                self.keep_trying(&mut answers, name, now)
            }
        }
    }

    fn keep_trying(&self, answers: &mut HashMap<String, Answer>, name: &str, now: Instant) -> Option<Vec<IpAddr>> {
        if let Some(a) = answers.get_mut(name) {
            a.due = now + self.settings.retry;
        }
        None
    }

    /// One of the name's addresses failed: ask again soon (it may have moved).
    pub fn failed(&self, host: &str) {
        let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = answers.get_mut(host) {
            a.due = a.due.min(Instant::now() + self.settings.retry);
        }
    }

    /// The addresses of every entry, in order, without repeats (outside any runtime).
    pub fn resolve_all_blocking(settings: &DnsSettings, all: &[HostPort]) -> Result<Vec<SocketAddr>, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("starting a runtime to resolve names: {e}"))?;
        rt.block_on(async {
            let names = Names::new(settings).map_err(|e| format!("{e:#}"))?;
            let mut out: Vec<SocketAddr> = Vec::new();
            for at in all {
                for a in names.addresses(at).await? {
                    if !out.contains(&a) {
                        out.push(a);
                    }
                }
            }
            Ok(out)
        })
    }

    /// Resolves each name once, outside any runtime (for `check` and start-up); the problems.
    pub fn check_blocking(settings: &DnsSettings, names: &[(String, HostPort)]) -> Vec<(String, String)> {
        let to_ask: Vec<&(String, HostPort)> = names.iter().filter(|(_, at)| at.literal().is_none()).collect();
        if to_ask.is_empty() {
            return Vec::new();
        }
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => return vec![(String::new(), format!("starting a runtime to resolve names: {e}"))],
        };
        rt.block_on(async {
            let names = match Names::new(settings) {
                Ok(n) => n,
                Err(e) => return vec![("dns".to_string(), format!("{e:#}"))],
            };
            let mut problems = Vec::new();
            for (key, at) in to_ask {
                if let Err(e) = names.addresses(at).await {
                    problems.push((key.clone(), format!("{e} (mark it optional: true if it may not resolve yet)")));
                }
            }
            problems
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_need_no_lookup_and_localhost_resolves_from_the_hosts_file() {
        let names = Names::new(&DnsSettings::default()).unwrap();
        let lit = HostPort::parse("127.0.0.1:80").unwrap();
        assert_eq!(names.addresses(&lit).await.unwrap(), vec!["127.0.0.1:80".parse().unwrap()]);
        let local = HostPort::parse("localhost:81").unwrap();
        let got = names.addresses(&local).await.unwrap();
        assert!(got.iter().all(|a| a.ip().is_loopback() && a.port() == 81) && !got.is_empty(), "{got:?}");
    }
}

//! The origin's backends: per host (exact, wildcard or default) and per path route, a pool of
//! addresses discovered from the configured names, health-checked, and balanced by round robin
//! or fewest requests in flight; each reached over HTTP/1.1, TLS (h2 or http/1.1 by ALPN) or
//! h2c as its scheme says.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::listeners::ALPN;
use pingora_core::protocols::l4::socket::SocketAddr as L4Addr;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::ServiceReadyNotifier;
use pingora_core::services::background::BackgroundService;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::utils::tls::{CertKey, WrappedX509, parse_x509};
use pingora_error::Result;
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backend, Backends, LoadBalancer};

use crate::config::origin::{BackendSettings, Balance, HostRoute};
use crate::config::upstream::{BackendSpec, BackendTls, Scheme};
use crate::hosts::{self, HostPattern};
use crate::resolve::Names;

type Balancer = LoadBalancer<RoundRobin>;

/// TLS material for one host's `https://` backends, loaded once.
#[derive(Clone, Default)]
struct PeerTls {
    ca: Option<Arc<[WrappedX509]>>,
    client: Option<Arc<CertKey>>,
    /// Pingora pools TLS connections by address, SNI and client certificate, not by the CAs
    /// that verified them: hosts that trust differently keep their connections apart.
    group: u64,
}

impl PeerTls {
    fn load(tls: &BackendTls) -> anyhow::Result<Self> {
        let ca = match &tls.ca {
            None => None,
            Some(path) => {
                let cas = crate::tls::ca_certs(path)?;
                Some(cas.into_iter().map(|c| WrappedX509::new(c.to_vec(), parse_x509)).collect::<Vec<_>>().into())
            }
        };
        let client = match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => {
                let (chain, key_der) = crate::tls::certs_and_key(cert, key)?;
                let secret = key_der.secret_der().to_vec();
                let chain = crate::tls::certified(chain, key_der, cert, key)?.cert.iter().map(|c| c.to_vec()).collect();
                Some(Arc::new(CertKey::new(chain, secret)))
            }
            _ => None,
        };
        let group = {
            use std::hash::{Hash as _, Hasher as _};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (&tls.ca, &tls.cert).hash(&mut h);
            h.finish()
        };
        Ok(PeerTls { ca, client, group })
    }
}

/// The addresses configured names stand for, as the load balancer's discovery.
struct Discovery {
    specs: Vec<Arc<BackendSpec>>,
    names: Arc<Names>,
}

#[async_trait]
impl ServiceDiscovery for Discovery {
    async fn discover(&self) -> Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let mut found = BTreeSet::new();
        for spec in &self.specs {
            // A name that does not resolve (an optional one, or one whose server is down since
            // start without an earlier answer) adds nothing; the others still serve.
            let Ok(addrs) = self.names.addresses(&spec.at).await else { continue };
            for addr in addrs {
                let mut b = Backend { addr: L4Addr::Inet(addr), weight: spec.weight, ext: Default::default() };
                b.ext.insert(spec.clone());
                found.insert(b);
            }
        }
        Ok((found, HashMap::new()))
    }
}

/// TCP connect, or `GET health_path` over the backend's own scheme.
struct Check {
    tcp: TcpHealthCheck,
    http: HashMap<(Scheme, String), HttpHealthCheck>,
}

impl Check {
    fn new(settings: &BackendSettings, host_header: &str, specs: &[Arc<BackendSpec>], tls: &PeerTls) -> Self {
        let mut tcp = TcpHealthCheck::default();
        tcp.peer_template.options.connection_timeout = Some(settings.connect_timeout);
        let mut http = HashMap::new();
        if let Some(path) = &settings.health_path {
            for spec in specs {
                let tls_on = spec.scheme == Scheme::Https;
                let mut hc = HttpHealthCheck::new(host_header, tls_on);
                if let Ok(uri) = path.parse() {
                    hc.req.set_uri(uri);
                }
                let t = &mut hc.peer_template;
                t.options.connection_timeout = Some(settings.connect_timeout);
                if tls_on {
                    t.sni = spec.at.host.clone();
                    t.options.ca = tls.ca.clone();
                    t.client_cert_key = tls.client.clone();
                }
                t.options.alpn = alpn(spec.scheme, false);
                http.insert((spec.scheme, spec.at.host.clone()), hc);
            }
        }
        Check { tcp, http }
    }
}

#[async_trait]
impl HealthCheck for Check {
    async fn check(&self, target: &Backend) -> Result<()> {
        let spec = target.ext.get::<Arc<BackendSpec>>();
        match spec.and_then(|s| self.http.get(&(s.scheme, s.at.host.clone()))) {
            Some(http) => http.check(target).await,
            None => self.tcp.check(target).await,
        }
    }

    fn health_threshold(&self, success: bool) -> usize {
        // Two failed checks in a row take a backend out (one may be a burst's full accept
        // queue); one good one brings it back. Requests that cannot connect skip it at once
        // anyway, and try it still when nothing else is up.
        if success { 1 } else { 2 }
    }
}

fn alpn(scheme: Scheme, websocket: bool) -> ALPN {
    match (scheme, websocket) {
        // Upgrades to backends are HTTP/1.1, as backends take WebSockets.
        (_, true) | (Scheme::Http, _) => ALPN::H1,
        (Scheme::Https, false) => ALPN::H2H1,
        (Scheme::H2c, false) => ALPN::H2,
    }
}

/// One list of backends (a host's own, or a path route's).
pub struct Pool {
    /// `hosts.<pattern>` or `hosts.<pattern>.routes[<prefix>]`, for errors and `/ready`.
    pub name: String,
    lb: Arc<Balancer>,
    balance: Balance,
    tls: PeerTls,
    in_flight: Mutex<HashMap<SocketAddr, usize>>,
    turn: AtomicUsize,
    names: Arc<Names>,
    /// Connects in flight per address (`backend.max_connects`).
    connecting: Mutex<HashMap<SocketAddr, Arc<tokio::sync::Semaphore>>>,
    max_connects: usize,
}

/// A request's turn to connect to a backend (see [`Pool::connect_slot`]): released when dropped,
/// once the connection is up or has failed.
pub type ConnectSlot = tokio::sync::OwnedSemaphorePermit;

/// A request's hold on a backend, for least-requests balancing: released when dropped.
pub struct InFlight {
    pool: Arc<Pool>,
    addr: SocketAddr,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut m = self.pool.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.addr) {
            *n = n.saturating_sub(1);
        }
    }
}

impl Pool {
    fn new(
        name: String,
        specs: &[BackendSpec],
        tls: &PeerTls,
        host_header: &str,
        s: &BackendSettings,
        names: &Arc<Names>,
    ) -> Arc<Self> {
        let specs: Vec<Arc<BackendSpec>> = specs.iter().cloned().map(Arc::new).collect();
        let check = Check::new(s, host_header, &specs, tls);
        let discovery = Discovery { specs, names: names.clone() };
        let mut lb = Balancer::from_backends(Backends::new(Box::new(discovery)));
        lb.set_health_check(Box::new(check));
        lb.health_check_frequency = Some(s.health_interval);
        // Discovery asks the resolver each second; it answers from its own record until the
        // name's TTL (bounded by dns.min_ttl/max_ttl) or a failure says to look again.
        lb.update_frequency = Some(Duration::from_secs(1));
        Arc::new(Pool {
            name,
            lb: Arc::new(lb),
            balance: s.balance,
            tls: tls.clone(),
            in_flight: Mutex::new(HashMap::new()),
            turn: AtomicUsize::new(0),
            names: names.clone(),
            connecting: Mutex::new(HashMap::new()),
            max_connects: s.max_connects,
        })
    }

    /// A turn to connect to `backend`, waiting up to `wait` for one: at most `max_connects`
    /// connects to one address are in flight. A burst of requests that all need new connections
    /// would otherwise send a backend as many SYNs at once; beyond its accept queue they are
    /// dropped, sent again only a second later (the connect times out first), and the retries
    /// come back as one wave again. Taken for a pooled connection too (it is released at once).
    pub async fn connect_slot(&self, backend: &Backend, wait: Duration) -> Option<ConnectSlot> {
        let slots = {
            let mut m = self.connecting.lock().unwrap_or_else(|p| p.into_inner());
            m.entry(inet(backend)).or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.max_connects))).clone()
        };
        tokio::time::timeout(wait, slots.acquire_owned()).await.ok()?.ok()
    }

    /// A backend for a request that could not connect to those in `tried`: a healthy one not
    /// tried yet; else any not tried yet (panic routing: a backend marked down may have come up
    /// since its last check, and one that exists is better tried than a 502); else, once every
    /// one was tried and `again` allows it, any again, healthy ones first. A connect that timed
    /// out under a burst (the backend's accept queue full) is no proof the backend is gone, and
    /// a new connect is a new chance: the only backend of a host is tried until the request's
    /// connect attempts run out (see `connect_attempts`), never skipped.
    pub fn select(self: &Arc<Self>, tried: &[SocketAddr], again: bool) -> Option<(Backend, InFlight)> {
        let all = self.lb.backends().get_backend();
        let candidates: Vec<&Backend> = all.iter().filter(|b| b.addr.as_inet().is_some()).collect();
        let ready = |b: &&&Backend| self.lb.backends().ready(b);
        let untried: Vec<&Backend> = candidates.iter().filter(|b| !tried.contains(&inet(b))).copied().collect();
        let healthy: Vec<&Backend> = untried.iter().filter(ready).copied().collect();
        let pick = if !healthy.is_empty() {
            healthy
        } else if !untried.is_empty() {
            untried
        } else if again {
            let ready_ones: Vec<&Backend> = candidates.iter().filter(ready).copied().collect();
            if ready_ones.is_empty() { candidates } else { ready_ones }
        } else {
            Vec::new()
        };
        let chosen = match (self.balance, pick.len()) {
            (_, 0) => return None,
            (Balance::RoundRobin, _) => {
                let healthy_set = pick.iter().map(|b| inet(b)).collect::<Vec<_>>();
                self.lb
                    .select_with(b"", 256, |b, _| healthy_set.contains(&inet(b)))
                    .or_else(|| pick.first().map(|b| (*b).clone()))?
            }
            (Balance::LeastRequests, n) => {
                let m = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
                let load = |b: &Backend| m.get(&inet(b)).copied().unwrap_or(0);
                // Fewest in flight per weight (compared crosswise, no division); ties in turn.
                let start = self.turn.fetch_add(1, Ordering::Relaxed) % n;
                let mut best = pick[start];
                for b in pick.iter().cycle().skip(start + 1).take(n - 1) {
                    if load(b) * best.weight < load(best) * b.weight {
                        best = b;
                    }
                }
                best.clone()
            }
        };
        let addr = inet(&chosen);
        *self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).entry(addr).or_default() += 1;
        Some((chosen, InFlight { pool: self.clone(), addr }))
    }

    /// The peer for a backend this pool chose.
    pub fn peer(&self, backend: &Backend, websocket: bool) -> HttpPeer {
        let spec = backend.ext.get::<Arc<BackendSpec>>().cloned();
        let scheme = spec.as_ref().map_or(Scheme::Http, |s| s.scheme);
        let sni = match (scheme, &spec) {
            (Scheme::Https, Some(s)) => s.at.host.clone(),
            _ => String::new(),
        };
        let mut peer = HttpPeer::new(backend.addr.clone(), scheme == Scheme::Https, sni);
        peer.options.alpn = alpn(scheme, websocket);
        if scheme == Scheme::Https {
            peer.options.ca = self.tls.ca.clone();
            peer.client_cert_key = self.tls.client.clone();
            peer.group_key = self.tls.group;
        }
        peer
    }

    /// An address failed to connect: its name is looked up again soon.
    pub fn failed(&self, backend: &Backend) {
        if let Some(spec) = backend.ext.get::<Arc<BackendSpec>>() {
            self.names.failed(&spec.at.host);
        }
    }

    /// Addresses known, and how many of them pass their health check.
    pub fn health(&self) -> (usize, usize) {
        let all = self.lb.backends().get_backend();
        (all.len(), all.iter().filter(|b| self.lb.backends().ready(b)).count())
    }
}

fn inet(b: &Backend) -> SocketAddr {
    b.addr.as_inet().copied().unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
}

struct HostPools {
    pattern: HostPattern,
    own: Option<Arc<Pool>>,
    routes: Vec<(String, Arc<Pool>)>,
}

/// Every host's pools.
pub struct Upstreams {
    hosts: Vec<HostPools>,
}

impl Upstreams {
    pub fn new(routes: &[HostRoute], settings: &BackendSettings, names: &Arc<Names>) -> anyhow::Result<Self> {
        let mut hosts = Vec::new();
        for route in routes {
            let tls = PeerTls::load(&route.tls).map_err(|e| anyhow::anyhow!("hosts.{}.tls: {e:#}", route.pattern))?;
            let host_header = match &route.pattern {
                HostPattern::Exact(name) => name.clone(),
                _ => String::new(),
            };
            let pool = |name: String, specs: &[BackendSpec]| {
                // A wildcard or default host has no one name to ask health for: the backend's own.
                let header = if host_header.is_empty() { specs[0].at.host.clone() } else { host_header.clone() };
                Pool::new(name, specs, &tls, &header, settings, names)
            };
            let own = (!route.backends.is_empty()).then(|| pool(format!("hosts.{}", route.pattern), &route.backends));
            let routes = route
                .routes
                .iter()
                .filter(|r| !r.backends.is_empty())
                .map(|r| (r.prefix.clone(), pool(format!("hosts.{}.routes[{}]", route.pattern, r.prefix), &r.backends)))
                .collect();
            hosts.push(HostPools { pattern: route.pattern.clone(), own, routes });
        }
        Ok(Upstreams { hosts })
    }

    /// Whether any configured host takes `host`.
    pub fn serves(&self, host: &str) -> bool {
        hosts::best(self.hosts.iter().map(|h| (&h.pattern, ())), host).is_some()
    }

    /// The pool for a request: its host's best pattern, then the longest route prefix.
    pub fn pool(&self, host: &str, path: &str) -> Option<&Arc<Pool>> {
        let h = hosts::best(self.hosts.iter().map(|h| (&h.pattern, h)), host)?;
        hosts::longest_prefix(h.routes.iter().map(|(p, pool)| (p.as_str(), pool)), path).or(h.own.as_ref())
    }

    fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.hosts.iter().flat_map(|h| h.own.iter().chain(h.routes.iter().map(|(_, p)| p)))
    }

    /// Ready when every pool has a backend that passes its health check; otherwise why not.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let down: Vec<String> = self
            .pools()
            .filter_map(|p| match p.health() {
                (_, up) if up > 0 => None,
                (0, _) => Some(format!("{}: no backend address (names not resolved)", p.name)),
                (n, _) => Some(format!("{}: none of {n} backend addresses passes its health check", p.name)),
            })
            .collect();
        if down.is_empty() { Ok(()) } else { Err(down) }
    }

    /// Runs every pool's discovery and health checks, in one service.
    pub fn service(self: &Arc<Self>) -> PoolService {
        PoolService(self.clone())
    }
}

/// Discovery and health checks of every pool, on one runtime (a service per host would be a
/// thread per host).
pub struct PoolService(Arc<Upstreams>);

#[async_trait]
impl BackgroundService for PoolService {
    async fn start_with_ready_notifier(&self, shutdown: ShutdownWatch, ready: ServiceReadyNotifier) {
        let lbs: Vec<Arc<Balancer>> = self.0.pools().map(|p| p.lb.clone()).collect();
        // The first discovery before the proxy takes requests: a name that resolves serves
        // from the first request on.
        for lb in &lbs {
            if let Err(e) = lb.update().await {
                log::warn!("backend discovery: {e}");
            }
        }
        ready.notify_ready();
        let mut tasks = tokio::task::JoinSet::new();
        for lb in lbs {
            let shutdown = shutdown.clone();
            tasks.spawn(async move { lb.run(shutdown, None).await });
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn start(&self, shutdown: ShutdownWatch) {
        let (tx, _rx) = tokio::sync::watch::channel(false);
        self.start_with_ready_notifier(shutdown, ServiceReadyNotifier::new(tx)).await
    }
}

//! `mode: origin`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::common::{AdminSettings, DeltaSettings, ServerSettings, WebSocketSettings, check_distinct_addresses};
use super::reader::{ByteSize, Secs, Section};
use super::upstream::{BackendSpec, BackendTls, DnsSettings, HostPort, Scheme};
use crate::hosts::HostPattern;

/// Where the origin accepts the tunnel, or dials it out.
#[derive(Debug, Clone)]
pub struct TunnelListener {
    /// Addresses edges connect to (none: the origin only dials out).
    pub listen: Vec<SocketAddr>,
    /// Addresses `listen` accepts connections from (empty: any); others are closed before TLS.
    pub allow: Vec<ipnet::IpNet>,
    /// Dial-out: the edges' connector listeners this origin dials (and serves over).
    pub dial: Vec<HostPort>,
    /// Dial-out: connections held to each edge of `dial`.
    pub lanes: usize,
    /// Dial-out: the CA that signs the edges' connector certificates.
    pub ca: PathBuf,
    /// Dial-out: the name an edge's connector certificate must carry.
    pub edge_name: String,
    /// Dial-out: a lane that fails is dialled again after a random wait up to
    /// min(reconnect_cap, 1 s × 2^failures in a row).
    pub reconnect_cap: Duration,
    /// Dial-out: this process's name on its lanes (edges tell replicas apart by it); the host's
    /// name and the process id when unset.
    pub replica: Option<String>,
    /// Dial-out: a lane whose sent bytes stay unacknowledged (or whose idle probes stay
    /// unanswered) this long is dead, and is replaced.
    pub dead_after: Duration,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA that must have issued the certificate every edge presents (mutual TLS).
    pub client_ca: PathBuf,
    /// An edge's certificate must be valid for one of these names (DNS or IP SANs).
    pub client_names: Vec<String>,
    /// Concurrent HTTP/2 streams allowed per tunnel connection (above the edges' `max_streams`,
    /// so that edges decide when to open another connection).
    pub max_streams: u32,
    /// HTTP/2 flow-control windows the origin grants edges for request bodies: per stream and per
    /// connection. One window of data crosses per round trip, so a long link needs them large.
    pub stream_window: u32,
    pub connection_window: u32,
    /// TCP congestion control of the accepted tunnel sockets (`bbr`, `cubic`, …); the kernel's
    /// default when unset.
    pub congestion_control: Option<String>,
}

/// The largest HTTP/2 flow-control window (RFC 9113 §6.9.1).
const MAX_WINDOW: u64 = (1 << 31) - 1;

/// The backends serving one host (or a wildcard of hosts, or every other host).
#[derive(Debug, Clone)]
pub struct HostRoute {
    pub pattern: HostPattern,
    /// For requests no route takes; may be empty when routes cover every path the host serves.
    pub backends: Vec<BackendSpec>,
    /// Path prefixes with backends of their own; the longest matching prefix wins.
    pub routes: Vec<PathRoute>,
    /// TLS to this host's `https://` backends.
    pub tls: BackendTls,
}

#[derive(Debug, Clone)]
pub struct PathRoute {
    /// Starts with `/`; a request whose path starts with it goes to these backends.
    pub prefix: String,
    pub backends: Vec<BackendSpec>,
}

impl HostRoute {
    /// Every backend list of this host, with the key it was configured under.
    pub fn pools(&self) -> impl Iterator<Item = (Option<&str>, &[BackendSpec])> {
        let own = (!self.backends.is_empty()).then_some((None, self.backends.as_slice()));
        own.into_iter().chain(self.routes.iter().map(|r| (Some(r.prefix.as_str()), r.backends.as_slice())))
    }
}

/// How a request picks one of several healthy backends (or listeners).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// In turn, in proportion to weights.
    RoundRobin,
    /// The one with the fewest requests in flight per unit of weight (ties in turn).
    LeastRequests,
}

impl Balance {
    pub fn read(s: &Section<'_>, key: &str) -> Self {
        match s.or(key, "round_robin".to_string()).as_str() {
            "round_robin" => Balance::RoundRobin,
            "least_requests" => Balance::LeastRequests,
            other => {
                s.problem(key, format!("{other:?} is not a balance (round_robin or least_requests)"));
                Balance::RoundRobin
            }
        }
    }
}

/// How the origin talks to its backends (HTTP/1.1, keep-alive).
#[derive(Debug, Clone)]
pub struct BackendSettings {
    pub connect_timeout: Duration,
    /// Longest wait for each read of a backend's response.
    pub response_timeout: Duration,
    /// Idle keep-alive connections to backends are closed after this.
    pub idle_timeout: Duration,
    /// How often each backend is checked; a failed check takes it out of the rotation.
    pub health_interval: Duration,
    /// `None`: a TCP connect; `Some(path)`: `GET path` must answer 200.
    pub health_path: Option<String>,
    pub balance: Balance,
    /// Connects in flight to one backend address at once; further requests that need a new
    /// connection wait their turn (see `backends::Pool::connect_slot`).
    pub max_connects: usize,
}

#[derive(Debug, Clone)]
pub struct OriginConfig {
    pub server: ServerSettings,
    pub admin: AdminSettings,
    pub tunnel: TunnelListener,
    pub hosts: Vec<HostRoute>,
    pub backend: BackendSettings,
    pub delta: DeltaSettings,
    /// zstd level for bodies sent in full.
    pub full_level: i32,
    /// How hard deltas are encoded.
    pub effort: Effort,
    pub store: StoreKind,
    pub websocket: WebSocketSettings,
    pub dns: DnsSettings,
}

/// Where the origin keeps versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// In this process, bounded by `delta.store_size`.
    Memory,
    /// Shared by every listener pointed at it.
    Redis(RedisSettings),
}

/// A shared store: `redis://` or `rediss://` (TLS), with AUTH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// As configured, without a password (one is refused there).
    pub url: String,
    /// Longest wait per call.
    pub timeout: Duration,
    /// `rediss://`: the CAs that may sign the server's certificate (default: the system roots),
    /// and a client certificate for a server that asks for one.
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// AUTH: an ACL user (default: Redis's `default`) and the file holding the password.
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
}

impl RedisSettings {
    fn read(d: &Section<'_>, url: String) -> Self {
        let t = d.section("store_tls");
        let r = RedisSettings {
            timeout: d.or("store_timeout", Secs(Duration::from_millis(100))).0,
            ca: t.opt("ca"),
            cert: t.opt("cert"),
            key: t.opt("key"),
            user: d.opt("store_user"),
            password_file: d.opt("store_password_file"),
            url,
        };
        match redis::IntoConnectionInfo::into_connection_info(r.url.as_str()) {
            Err(e) => d.problem("store", format!("{:?} is not a Redis URL: {e}", r.url)),
            Ok(info) => {
                if info.redis_settings().password().is_some() {
                    d.problem("store", "holds a password: put it in store_password_file, never in this file");
                }
                if info.redis_settings().username().is_some() && r.user.is_some() {
                    d.problem("store_user", "the URL names a user already");
                }
            }
        }
        if d.has("store_tls") && !r.url.starts_with("rediss://") {
            d.problem("store_tls", "only used with store: rediss://…");
        }
        if r.cert.is_some() != r.key.is_some() {
            t.problem(if r.cert.is_some() { "key" } else { "cert" }, "cert and key go together");
        }
        r
    }

    fn paths_mut(&mut self) -> impl Iterator<Item = &mut PathBuf> {
        [&mut self.ca, &mut self.cert, &mut self.key, &mut self.password_file].into_iter().flatten()
    }

    fn files(&self) -> impl Iterator<Item = (String, &Path)> {
        let tls = [("ca", &self.ca), ("cert", &self.cert), ("key", &self.key)];
        let tls = tls.into_iter().filter_map(|(k, p)| p.as_deref().map(|p| (format!("delta.store_tls.{k}"), p)));
        tls.chain(self.password_file.as_deref().map(|p| ("delta.store_password_file".to_string(), p)))
    }
}

/// Delta encoding effort: smallest deltas, or cheapest encoding (the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    /// zstd's match finder tuned on the corpus: 0.384 % of raw, the fewest bytes.
    Small,
    /// The sampled index: 0.461 % of raw for several times less CPU per request.
    Fast,
}

impl Effort {
    pub fn params(self) -> delta::codec::DeltaParams {
        match self {
            Effort::Small => delta::codec::DeltaParams::default(),
            Effort::Fast => delta::codec::DeltaParams::fast(),
        }
    }
}

/// A flow-control window: 8 MB by default, as the edge's, within HTTP/2's limits.
fn window(t: &Section<'_>, key: &str) -> u32 {
    let n = t.or(key, ByteSize(8 << 20)).0;
    if !(65_535..=MAX_WINDOW).contains(&n) {
        t.problem(key, format!("must be from 64K (65535, HTTP/2's default) to {MAX_WINDOW} bytes"));
    }
    n.clamp(65_535, MAX_WINDOW) as u32
}

impl OriginConfig {
    pub fn read(root: &Section<'_>) -> Self {
        let server = ServerSettings::read(&root.section("server"), "origin");
        let admin = AdminSettings::read(&root.section("admin"));
        let t = root.section("tunnel");
        let dial: Vec<HostPort> = t.list("dial");
        let dials = !dial.is_empty();
        let tunnel = TunnelListener {
            listen: if dials {
                if t.has("listen") {
                    t.problem(
                        "listen",
                        "an origin listens or dials out (dial), not both: each needs a certificate of its own",
                    );
                }
                Vec::new()
            } else {
                t.req_list("listen", "addresses for edges, e.g. 127.0.0.1:2408 (or dial: the edges this origin dials)")
            },
            allow: match (dials, t.has("allow")) {
                (_, false) => Vec::new(),
                (true, true) => {
                    t.problem(
                        "allow",
                        "locks a listening origin to its edges; one that dials out (dial) has no port to lock",
                    );
                    Vec::new()
                }
                (false, true) => t.req_list(
                    "allow",
                    "address blocks edges connect from, e.g. 203.0.113.0/24 (omit allow to admit any)",
                ),
            },
            lanes: t.or("lanes", 4usize),
            ca: if dials { t.req("ca").unwrap_or_default() } else { t.opt("ca").unwrap_or_default() },
            edge_name: t.or("edge_name", crate::ops::certs::CONNECTOR_NAME.to_string()),
            reconnect_cap: t.or("reconnect_cap", Secs(Duration::from_secs(30))).0,
            dead_after: t.or("dead_after", Secs(Duration::from_secs(10))).0,
            replica: t.opt("replica"),
            dial,
            cert: t.req("cert").unwrap_or_default(),
            key: t.req("key").unwrap_or_default(),
            client_ca: if dials {
                t.opt("client_ca").unwrap_or_default()
            } else {
                t.req("client_ca").unwrap_or_default()
            },
            client_names: if t.has("client_names") {
                t.req_list("client_names", "names an edge certificate may carry")
            } else {
                vec![crate::ops::certs::EDGE_NAME.to_string()]
            },
            max_streams: t.or("max_streams", 1000u32),
            stream_window: window(&t, "stream_window"),
            connection_window: window(&t, "connection_window"),
            congestion_control: t.opt("congestion_control"),
        };
        if let Some(Err(e)) = tunnel.congestion_control.as_deref().map(crate::tunnel::tcp::check) {
            t.problem("congestion_control", e);
        }
        if tunnel.max_streams == 0 {
            t.problem("max_streams", "must be at least 1");
        }
        if !(1..=64).contains(&tunnel.lanes) {
            t.problem("lanes", "must be from 1 to 64");
        }
        if tunnel.reconnect_cap < Duration::from_secs(1) {
            t.problem("reconnect_cap", "must be at least 1s");
        }
        if tunnel.dead_after < Duration::from_secs(1) {
            t.problem("dead_after", "must be at least 1s");
        }
        if let Some(r) = tunnel.replica.as_deref().filter(|r| !crate::tunnel::lane_hello::valid_replica(r)) {
            t.problem("replica", format!("{r:?}: 1-64 characters of A-Z, a-z, 0-9, '.', '_' and '-'"));
        }
        if rustls::pki_types::ServerName::try_from(tunnel.edge_name.as_str()).is_err() {
            t.problem("edge_name", format!("{:?} is not a DNS name or IP address", tunnel.edge_name));
        }
        for n in &tunnel.client_names {
            if rustls::pki_types::ServerName::try_from(n.as_str()).is_err() {
                t.problem("client_names", format!("{n:?} is not a DNS name or IP address"));
            }
        }
        drop(t);
        let mut hosts: Vec<HostRoute> = Vec::new();
        for (name, s) in root.entries("hosts") {
            let Ok(pattern) = HostPattern::parse(&name).map_err(|e| s.problem("", e)) else {
                continue;
            };
            let routes = read_routes(&s);
            let backends = if routes.is_empty() || s.has("backends") {
                s.req_list("backends", "backends: host:port, http://, https:// or h2c://host:port")
            } else {
                Vec::new()
            };
            let route = HostRoute { pattern, backends, routes, tls: BackendTls::read(&s.section("tls")) };
            if hosts.iter().any(|h| h.pattern == route.pattern) {
                s.problem("", format!("host {} is listed twice", route.pattern));
            }
            let https = route.pools().any(|(_, b)| b.iter().any(|b| b.scheme == Scheme::Https));
            if !https && route.tls != BackendTls::default() {
                s.problem("tls", "only used with https:// backends");
            }
            hosts.push(route);
        }
        if hosts.is_empty() {
            root.problem("hosts", "required: a map of host names to backends");
        }
        let b = root.section("backend");
        let backend = BackendSettings {
            connect_timeout: b.or("connect_timeout", Secs(Duration::from_secs(2))).0,
            response_timeout: b.or("response_timeout", Secs(Duration::from_secs(60))).0,
            idle_timeout: b.or("idle_timeout", Secs(Duration::from_secs(60))).0,
            health_interval: b.or("health_interval", Secs(Duration::from_secs(2))).0,
            health_path: b.opt("health_path"),
            balance: Balance::read(&b, "balance"),
            max_connects: b.or("max_connects", 64usize),
        };
        if backend.max_connects == 0 {
            b.problem("max_connects", "must be at least 1");
        }
        if backend.health_interval.is_zero() {
            b.problem("health_interval", "must be more than 0");
        }
        if backend.health_path.as_ref().is_some_and(|p| !p.starts_with('/')) {
            b.problem("health_path", "must start with /");
        }
        drop(b);
        let d = root.section("delta");
        let delta = DeltaSettings::read(&d, 512 << 20);
        let effort = match d.or("effort", "fast".to_string()).as_str() {
            "small" => Effort::Small,
            "fast" => Effort::Fast,
            other => {
                d.problem("effort", format!("{other:?} is not an effort (small or fast)"));
                Effort::Fast
            }
        };
        let store = match d.or("store", "memory".to_string()) {
            m if m == "memory" => StoreKind::Memory,
            url if url.starts_with("redis://") || url.starts_with("rediss://") => {
                StoreKind::Redis(RedisSettings::read(&d, url))
            }
            other => {
                d.problem("store", format!("{other:?} is not a store (memory, redis://host:port/db or rediss://…)"));
                StoreKind::Memory
            }
        };
        if d.has("store_ttl") {
            d.problem("store_ttl", "replaced by delta.version_ttl, which both stores keep versions for");
        }
        if store == StoreKind::Memory {
            for key in ["store_timeout", "store_tls", "store_user", "store_password_file"] {
                if d.has(key) {
                    d.problem(key, "only used with store: redis://… or rediss://…");
                }
            }
        }
        drop(d);
        let full_level = root.or("full_level", delta::codec::FULL_LEVEL);
        if !(1..=19).contains(&full_level) {
            root.problem("full_level", "must be a zstd level from 1 to 19");
        }
        let mut addrs: Vec<(&str, SocketAddr)> = tunnel.listen.iter().map(|a| ("tunnel.listen", *a)).collect();
        addrs.push(("admin.listen", admin.listen));
        check_distinct_addresses(root, &addrs);
        let websocket = WebSocketSettings::read(&root.section("websocket"), false);
        let dns = DnsSettings::read(&root.section("dns"));
        OriginConfig { server, admin, tunnel, hosts, backend, delta, full_level, effort, store, websocket, dns }
    }

    /// Every backend name that must resolve at start, with the key it is configured under.
    pub fn names(&self) -> Vec<(String, HostPort)> {
        let mut names = Vec::new();
        for h in &self.hosts {
            for (prefix, pool) in h.pools() {
                let key = match prefix {
                    None => format!("hosts.{}.backends", h.pattern),
                    Some(p) => format!("hosts.{}.routes[{p}].backends", h.pattern),
                };
                names.extend(pool.iter().filter(|b| !b.optional).map(|b| (key.clone(), b.at.clone())));
            }
        }
        names
    }

    pub fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        let t = &mut self.tunnel;
        let mut p = vec![&mut t.cert, &mut t.key, &mut t.client_ca, &mut t.ca];
        p.extend(self.server.paths_mut());
        for h in &mut self.hosts {
            p.extend(h.tls.paths_mut());
        }
        if let StoreKind::Redis(r) = &mut self.store {
            p.extend(r.paths_mut());
        }
        p
    }

    pub fn files(&self) -> Vec<(String, &Path)> {
        let mut f: Vec<(String, &Path)> = vec![
            ("tunnel.cert".into(), &self.tunnel.cert),
            ("tunnel.key".into(), &self.tunnel.key),
            ("tunnel.client_ca".into(), &self.tunnel.client_ca),
            ("tunnel.ca".into(), &self.tunnel.ca),
        ];
        for h in &self.hosts {
            let t = &h.tls;
            for (key, path) in [("ca", &t.ca), ("cert", &t.cert), ("key", &t.key)] {
                f.extend(path.as_deref().map(|p| (format!("hosts.{}.tls.{key}", h.pattern), p)));
            }
        }
        if let StoreKind::Redis(r) = &self.store {
            f.extend(r.files());
        }
        f
    }
}

/// A host's `routes:`, in order: `{ path: /prefix/, backends: [...] }`.
fn read_routes(s: &Section<'_>) -> Vec<PathRoute> {
    let Some(v) = s.value("routes") else {
        return Vec::new();
    };
    let serde_yaml::Value::Sequence(items) = v else {
        s.problem("routes", "expected a list of { path: /prefix/, backends: [...] }");
        return Vec::new();
    };
    let mut routes: Vec<PathRoute> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let r = s.item("routes", i, item);
        let prefix: String = r.req("path").unwrap_or_default();
        if !prefix.starts_with('/') {
            r.problem("path", format!("{prefix:?} must start with /"));
        }
        if routes.iter().any(|o| o.prefix == prefix) {
            r.problem("path", format!("{prefix} is routed twice"));
        }
        let backends = r.req_list("backends", "the backends of this path");
        routes.push(PathRoute { prefix, backends });
    }
    routes
}

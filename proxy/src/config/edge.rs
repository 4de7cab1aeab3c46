//! `mode: edge`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::client_dictionaries::ClientDictionaries;
use super::common::{AdminSettings, DeltaSettings, ServerSettings, WebSocketSettings, check_distinct_addresses};
use super::origin::Balance;
use super::reader::{ByteSize, Secs, Section};
use super::upstream::{DnsSettings, HostPort};
use crate::hosts::{self, HostPattern};

/// How the edge reaches origin listeners.
#[derive(Debug, Clone)]
pub struct TunnelClient {
    /// The private CA that signed the origin listeners' certificates (system roots are never used).
    pub ca: PathBuf,
    /// The edge's client certificate and key (mutual TLS: origins require them).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Name the origin's certificate must carry, unless a route overrides it.
    pub server_name: String,
    pub connect_timeout: Duration,
    /// Longest wait for each read of the origin's response.
    pub response_timeout: Duration,
    /// Pooled connections idle longer than this are closed.
    pub idle_timeout: Duration,
    /// HTTP/2 PING interval that keeps pooled connections alive and detects dead ones.
    pub ping_interval: Duration,
    /// Concurrent requests per tunnel connection before another connection is opened.
    pub max_streams: usize,
    /// Persistent tunnel connections (lanes) to each origin listener, requests spread over them.
    /// 16 by default: as many TCP flows as nginx opens for 16 requests side by side, which a
    /// lossy link needs (each loss-based flow gets ~MSS / (RTT √loss); 4 carried 0.57× nginx's
    /// pages/s at 150 ms and 0.5 % loss), while requests one after another stay on one.
    pub lanes: usize,
    /// TCP congestion control of the tunnel sockets (`bbr`, `cubic`, …); the kernel's default
    /// when unset.
    pub congestion_control: Option<String>,
    /// How a request picks one of a host's listeners that are up.
    pub balance: Balance,
}

/// What to do when no origin listener of a host is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallback {
    /// Answer 502 at once, with a body that says why.
    Error,
    /// Go straight to the origin over HTTP/1.1, without deltas (as Railgun did); a name is
    /// looked up as `dns:` says, when the fallback is used.
    Direct(HostPort),
}

/// The origin listeners serving one host (or a wildcard of hosts, or every other host).
#[derive(Debug, Clone)]
pub struct OriginRoute {
    pub pattern: HostPattern,
    /// As configured: IP literals or names (none for a host served by a tunnel that dials out).
    pub listener_names: Vec<HostPort>,
    /// The addresses they stand for (names resolved at start, each address a listener).
    pub listeners: Vec<SocketAddr>,
    pub server_name: String,
    /// `tunnel: NAME`: served by the origins that dial out as this tunnel (`connectors.tunnels`),
    /// instead of listeners.
    pub tunnel: Option<String>,
    pub fallback: Fallback,
    /// This host's `request_buffering`, when it overrides `limits.request_buffering`.
    pub request_buffering: Option<bool>,
    /// This host's session cookies, when they override `credentials.cookies`.
    pub cookies: Option<Vec<String>>,
    /// Path prefixes whose pages are the same for every user: requests with credentials share
    /// the URL's version there.
    pub shared_bases: Vec<String>,
    /// Keep `Cache-Control: no-store` responses as versions (both ends).
    pub store_no_store: bool,
    /// Pages offered to browsers as dictionaries, and deltas against them; None: off.
    pub client_dictionaries: Option<ClientDictionaries>,
}

impl OriginRoute {
    /// Whether requests for `path` share the URL's version whatever their credentials.
    pub fn shared_base(&self, path: &str) -> bool {
        self.shared_bases.iter().any(|p| path.starts_with(p.as_str()))
    }
}

/// What makes a request a user's (see `crate::versions`).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// Request headers that carry credentials besides Cookie and Authorization.
    pub headers: Vec<http::HeaderName>,
    /// The cookies that identify a user; empty: every cookie does.
    pub cookies: Vec<String>,
}

impl Credentials {
    fn read(s: &Section<'_>) -> Self {
        let mut headers = Vec::new();
        for name in s.list::<String>("headers") {
            match http::HeaderName::from_bytes(name.as_bytes()) {
                Ok(h) if h == http::header::COOKIE || h == http::header::AUTHORIZATION => {
                    s.problem("headers", format!("{name}: always a credential, list only others"));
                }
                Ok(h) => headers.push(h),
                Err(_) => s.problem("headers", format!("{name:?} is not a header name")),
            }
        }
        Credentials { headers, cookies: read_cookie_names(s) }
    }
}

/// A `cookies:` list: names as they appear before `=`.
fn read_cookie_names(s: &Section<'_>) -> Vec<String> {
    let names = s.list::<String>("cookies");
    for n in &names {
        if n.is_empty() || n.contains([';', '=', ',', ' ']) {
            s.problem("cookies", format!("{n:?} is not a cookie name"));
        }
    }
    names
}

/// Health checking of origin listeners and retries on another one.
#[derive(Debug, Clone)]
pub struct FailoverSettings {
    /// How often a listener that is up is probed over the tunnel.
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    /// A listener that is down is probed again after a random delay up to
    /// min(backoff_cap, backoff_base × 2^failed probes).
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Consecutive failed probes that retire a lane that was serving.
    pub probe_failures: u32,
    /// Requests with these methods and no body are retried on another listener when the tunnel
    /// fails before their response started.
    pub retry_methods: Vec<String>,
}

/// The edge cache for cacheable responses.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub enabled: bool,
    /// Bytes of cached responses kept (LRU).
    pub size: u64,
    /// Larger responses are not cached.
    pub max_object: u64,
    /// Concurrent misses for one key wait this long for the first to fill the cache.
    pub lock_timeout: Duration,
}

/// An HTTPS listener for clients.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub listen: Vec<SocketAddr>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub server: ServerSettings,
    /// Plain client listeners: HTTP/1.1, and HTTP/2 with prior knowledge (h2c).
    pub listen: Vec<SocketAddr>,
    /// HTTPS client listeners (HTTP/2 and HTTP/1.1 by ALPN).
    pub https: Option<ClientTls>,
    pub admin: AdminSettings,
    pub tunnel: TunnelClient,
    /// Where origins that dial out reach this edge.
    pub connectors: Option<super::connectors::Connectors>,
    pub origins: Vec<OriginRoute>,
    pub delta: DeltaSettings,
    pub cache: CacheSettings,
    pub failover: FailoverSettings,
    /// Compression level for clients that accept gzip/br/zstd (0: off).
    pub client_compression: u32,
    pub limits: super::limits::Limits,
    pub websocket: WebSocketSettings,
    pub dns: DnsSettings,
    pub credentials: Credentials,
    /// `delta.report_header`: every response says how its body crossed the tunnel and reached
    /// the client (`railproxy-delta`), for operators.
    pub report_header: bool,
}

impl EdgeConfig {
    pub fn read(root: &Section<'_>) -> Self {
        let server = ServerSettings::read(&root.section("server"), "edge");
        let listen: Vec<SocketAddr> = if root.has("https") {
            root.list("listen")
        } else {
            root.req_list("listen", "addresses for clients, e.g. 127.0.0.1:8080")
        };
        let https = root.has("https").then(|| {
            let s = root.section("https");
            ClientTls {
                listen: s.req_list("listen", "addresses for HTTPS clients"),
                cert: s.req("cert").unwrap_or_default(),
                key: s.req("key").unwrap_or_default(),
            }
        });
        let admin = AdminSettings::read(&root.section("admin"));
        let t = root.section("tunnel");
        let tunnel = TunnelClient {
            ca: t.opt("ca").unwrap_or_default(),
            cert: t.opt("cert").unwrap_or_default(),
            key: t.opt("key").unwrap_or_default(),
            server_name: t.or("server_name", "origin.railproxy.internal".to_string()),
            connect_timeout: t.or("connect_timeout", Secs(Duration::from_secs(2))).0,
            response_timeout: t.or("response_timeout", Secs(Duration::from_secs(60))).0,
            idle_timeout: t.or("idle_timeout", Secs(Duration::from_secs(600))).0,
            ping_interval: t.or("ping_interval", Secs(Duration::from_secs(30))).0,
            max_streams: t.or("max_streams", 128),
            lanes: t.or("lanes", 16),
            congestion_control: t.opt("congestion_control"),
            balance: Balance::read(&t, "balance"),
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
        drop(t);
        let connectors =
            root.has("connectors").then(|| super::connectors::Connectors::read(&root.section("connectors")));
        let d = root.section("delta");
        let mut delta = DeltaSettings::read(&d, 256 << 20);
        delta.max_decoded = d.or("max_decoded", ByteSize(256 << 20)).0;
        if delta.max_decoded < delta.max_body {
            d.problem("max_decoded", "must be at least max_body");
        }
        let report_header = d.or("report_header", false);
        drop(d);
        let mut origins: Vec<OriginRoute> = Vec::new();
        for (name, s) in root.entries("origins") {
            let Ok(pattern) = HostPattern::parse(&name).map_err(|e| s.problem("", e)) else {
                continue;
            };
            let fallback = match s.or("fallback", "error".to_string()).as_str() {
                "error" => Fallback::Error,
                "direct" => match s.req::<String>("direct") {
                    Some(url) => match parse_direct(&url) {
                        Ok(at) => Fallback::Direct(at),
                        Err(e) => {
                            s.problem("direct", e);
                            Fallback::Error
                        }
                    },
                    None => Fallback::Error,
                },
                other => {
                    s.problem("fallback", format!("{other:?} is not a fallback (error or direct)"));
                    Fallback::Error
                }
            };
            if fallback == Fallback::Error && s.has("direct") {
                s.problem("direct", "only used with fallback: direct");
            }
            let via: Option<String> = s.opt("tunnel");
            let listener_names: Vec<HostPort> = match &via {
                Some(name) => {
                    if s.has("listeners") {
                        s.problem("listeners", "a host is served by listeners or by a tunnel, not both");
                    }
                    match connectors.as_ref().map(|c| c.tunnel(name)) {
                        None => s.problem("tunnel", "needs connectors: (where tunnels dial in)"),
                        Some(None) => s.problem("tunnel", format!("no tunnel {name:?} in connectors.tunnels")),
                        Some(Some(grant)) if !grant.hosts.contains(&pattern) => s.problem(
                            "tunnel",
                            format!("tunnel {name:?} may not serve {pattern} (connectors.tunnels.{name}.hosts)"),
                        ),
                        Some(Some(_)) => {}
                    }
                    Vec::new()
                }
                None => s.req_list("listeners", "origin listeners: host:port (or tunnel: NAME)"),
            };
            let route = OriginRoute {
                tunnel: via,
                listeners: listener_names.iter().filter_map(HostPort::literal).collect(),
                listener_names,
                server_name: s.or("server_name", tunnel.server_name.clone()),
                pattern,
                fallback,
                request_buffering: s.opt("request_buffering"),
                cookies: s.has("cookies").then(|| read_cookie_names(&s)),
                shared_bases: s.list("shared_bases"),
                store_no_store: s.or("store_no_store", false),
                client_dictionaries: ClientDictionaries::read(&s, "client_dictionaries", delta.version_ttl),
            };
            if let Some(p) = route.shared_bases.iter().find(|p| !p.starts_with('/')) {
                s.problem("shared_bases", format!("{p:?} must start with /"));
            }
            if origins.iter().any(|o| o.pattern == route.pattern) {
                s.problem("", format!("host {} is listed twice", route.pattern));
            }
            origins.push(route);
        }
        if origins.is_empty() {
            root.problem("origins", "required: a map of host names to origin listeners");
        }
        // The tunnel's client certificate is for dialling origin listeners; an edge whose
        // origins all dial out needs none.
        if origins.iter().any(|o| o.tunnel.is_none()) {
            for (key, path) in [("tunnel.ca", &tunnel.ca), ("tunnel.cert", &tunnel.cert), ("tunnel.key", &tunnel.key)] {
                if path.as_os_str().is_empty() {
                    root.problem(key, "required (a file path) when an origin is reached by its listeners");
                }
            }
        }
        let c = root.section("cache");
        let cache = CacheSettings {
            enabled: c.or("enabled", true),
            size: c.or("size", ByteSize(256 << 20)).0,
            max_object: c.or("max_object", ByteSize(8 << 20)).0,
            lock_timeout: c.or("lock_timeout", Secs(Duration::from_secs(2))).0,
        };
        if cache.max_object > cache.size {
            c.problem("max_object", format!("{} is more than size ({})", cache.max_object, cache.size));
        }
        drop(c);
        let f = root.section("failover");
        let failover = FailoverSettings {
            probe_interval: f.or("probe_interval", Secs(Duration::from_secs(2))).0,
            probe_timeout: f.or("probe_timeout", Secs(Duration::from_secs(1))).0,
            backoff_base: f.or("backoff_base", Secs(Duration::from_secs(1))).0,
            backoff_cap: f.or("backoff_cap", Secs(Duration::from_secs(30))).0,
            probe_failures: f.or("probe_failures", 3u32),
            retry_methods: if f.has("retry_methods") {
                f.list::<String>("retry_methods").into_iter().map(|m| m.to_ascii_uppercase()).collect()
            } else {
                vec!["GET".into(), "HEAD".into(), "OPTIONS".into()]
            },
        };
        for (key, d) in [
            ("probe_interval", failover.probe_interval),
            ("probe_timeout", failover.probe_timeout),
            ("backoff_base", failover.backoff_base),
        ] {
            if d.is_zero() {
                f.problem(key, "must be more than 0");
            }
        }
        if failover.probe_failures == 0 {
            f.problem("probe_failures", "must be at least 1");
        }
        if failover.backoff_cap < failover.backoff_base {
            f.problem("backoff_cap", "must be at least backoff_base");
        }
        drop(f);
        let client_compression = root.or("client_compression", 6u32);
        if client_compression > 11 {
            root.problem("client_compression", "must be 0 (off) to 11");
        }
        let mut addrs: Vec<(&str, SocketAddr)> = listen.iter().map(|a| ("listen", *a)).collect();
        if let Some(h) = &https {
            addrs.extend(h.listen.iter().map(|a| ("https.listen", *a)));
        }
        if let Some(c) = &connectors {
            addrs.extend(c.listen.iter().map(|a| ("connectors.listen", *a)));
        }
        addrs.push(("admin.listen", admin.listen));
        check_distinct_addresses(root, &addrs);
        let limits = super::limits::Limits::read(&root.section("limits"));
        let websocket = WebSocketSettings::read(&root.section("websocket"), true);
        let dns = DnsSettings::read(&root.section("dns"));
        let credentials = Credentials::read(&root.section("credentials"));
        EdgeConfig {
            server,
            listen,
            https,
            admin,
            tunnel,
            connectors,
            origins,
            delta,
            cache,
            failover,
            client_compression,
            limits,
            websocket,
            dns,
            credentials,
            report_header,
        }
    }

    /// Every listener name that must resolve at start, with the key it is configured under.
    pub fn names(&self) -> Vec<(String, HostPort)> {
        let key = |o: &OriginRoute| format!("origins.{}.listeners", o.pattern);
        let mut names: Vec<(String, HostPort)> =
            self.origins.iter().flat_map(|o| o.listener_names.iter().map(move |n| (key(o), n.clone()))).collect();
        for o in &self.origins {
            if let Fallback::Direct(at) = &o.fallback {
                names.push((format!("origins.{}.direct", o.pattern), at.clone()));
            }
        }
        names
    }

    pub fn files(&self) -> Vec<(String, &Path)> {
        let t = &self.tunnel;
        let mut f: Vec<(String, &Path)> =
            vec![("tunnel.ca".into(), &t.ca), ("tunnel.cert".into(), &t.cert), ("tunnel.key".into(), &t.key)];
        if let Some(h) = &self.https {
            f.push(("https.cert".into(), &h.cert));
            f.push(("https.key".into(), &h.key));
        }
        if let Some(c) = &self.connectors {
            f.extend(c.files());
        }
        f
    }

    pub fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        let t = &mut self.tunnel;
        let mut p = vec![&mut t.ca, &mut t.cert, &mut t.key];
        if let Some(h) = &mut self.https {
            p.extend([&mut h.cert, &mut h.key]);
        }
        if let Some(c) = &mut self.connectors {
            p.extend(c.paths_mut());
        }
        p.extend(self.server.paths_mut());
        p
    }

    /// The route for a request's host (lower case, port stripped): the most specific pattern.
    pub fn route(&self, host: &str) -> Option<&OriginRoute> {
        hosts::best(self.origins.iter().map(|o| (&o.pattern, o)), host)
    }
}

/// `http://host:port` (or `host:port`) of an origin reached directly.
fn parse_direct(url: &str) -> Result<HostPort, String> {
    if url.starts_with("https://") {
        return Err(format!("{url:?}: direct fallback speaks plain HTTP/1.1 (http://host:port)"));
    }
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    HostPort::parse(authority).map_err(|e| format!("{url:?} is not http://host:port: {e}"))
}

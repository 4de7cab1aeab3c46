//! Settings both modes share: Pingora's server section, the admin listener, delta limits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::reader::{ByteSize, Secs, Section};

/// Pingora's server settings (its own YAML file, folded into ours).
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Worker threads per service.
    pub threads: usize,
    /// Let idle threads take work from busy ones.
    pub work_stealing: bool,
    /// After SIGTERM/SIGQUIT: how long listeners stay open while a new process takes over.
    pub grace_period: Duration,
    /// Then: how long in-flight requests may take to finish.
    pub graceful_shutdown_timeout: Duration,
    /// Socket over which `--upgrade` hands listening sockets to a new process.
    pub upgrade_sock: PathBuf,
    /// Written when running as a daemon.
    pub pid_file: PathBuf,
    /// Log file (stderr when unset).
    pub error_log: Option<PathBuf>,
    /// Idle upstream connections kept per process.
    pub upstream_keepalive_pool_size: usize,
}

impl ServerSettings {
    pub fn read(s: &Section<'_>, mode: &str) -> Self {
        let default_threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let settings = ServerSettings {
            threads: s.or("threads", default_threads),
            work_stealing: s.or("work_stealing", true),
            grace_period: s.or("grace_period", Secs(Duration::from_secs(10))).0,
            graceful_shutdown_timeout: s.or("graceful_shutdown_timeout", Secs(Duration::from_secs(10))).0,
            upgrade_sock: s.or("upgrade_sock", PathBuf::from(format!("/tmp/railproxy-{mode}-upgrade.sock"))),
            pid_file: s.or("pid_file", PathBuf::from(format!("/tmp/railproxy-{mode}.pid"))),
            error_log: s.opt("error_log"),
            upstream_keepalive_pool_size: s.or("upstream_keepalive_pool_size", 128),
        };
        if settings.threads == 0 {
            s.problem("threads", "must be at least 1");
        }
        settings
    }

    pub fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        let mut p = vec![&mut self.upgrade_sock, &mut self.pid_file];
        p.extend(self.error_log.as_mut());
        p
    }
}

/// The admin listener: `/metrics`, `/health`.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// Enables `POST /debug/...` fault injection. For tests only; never in production.
    pub fault_injection: bool,
}

impl AdminSettings {
    pub fn read(s: &Section<'_>) -> Self {
        AdminSettings {
            listen: s.req("listen").unwrap_or_else(|| ([127, 0, 0, 1], 0).into()),
            fault_injection: s.or("fault_injection", false),
        }
    }
}

/// Limits for deltas and the version store.
#[derive(Debug, Clone, Copy)]
pub struct DeltaSettings {
    /// Bytes the version store may hold.
    pub store_size: u64,
    /// Largest body that is encoded and stored (origin) or held until verified and stored (edge).
    pub max_body: u64,
    /// Edge: largest decoded body accepted when the origin announced no length (bomb limit).
    pub max_decoded: u64,
    /// A version is dropped this long after it was stored (in memory, and in Redis), unless
    /// stored again.
    pub version_ttl: Duration,
}

impl DeltaSettings {
    pub fn read(s: &Section<'_>, default_store: u64) -> Self {
        let d = DeltaSettings {
            store_size: s.or("store_size", ByteSize(default_store)).0,
            max_body: s.or("max_body", ByteSize(8 << 20)).0,
            max_decoded: 0,
            version_ttl: s.or("version_ttl", Secs(Duration::from_secs(600))).0,
        };
        if d.version_ttl < Duration::from_secs(1) {
            s.problem("version_ttl", "must be at least 1s");
        }
        if d.max_body == 0 {
            s.problem("max_body", "must be more than 0");
        }
        if d.max_body > d.store_size {
            s.problem("max_body", format!("{} is more than store_size ({})", d.max_body, d.store_size));
        }
        d
    }
}

/// Rejects listen addresses used twice across the file.
pub fn check_distinct_addresses(s: &Section<'_>, addrs: &[(&str, SocketAddr)]) {
    for (i, (key, a)) in addrs.iter().enumerate() {
        if let Some((other, _)) = addrs[..i].iter().find(|(_, b)| b == a) {
            s.problem(key, format!("{a} is also used by {other}"));
        }
    }
}

/// Upgraded connections (WebSocket), which outlive any request's timeouts and are not request
/// bodies: `limits.max_body` does not apply to what crosses them.
#[derive(Debug, Clone, Copy)]
pub struct WebSocketSettings {
    /// A WebSocket on which either direction is silent this long is closed; it replaces the
    /// response and body timeouts once the connection is upgraded.
    pub idle_timeout: Duration,
    /// Edge: bytes per second each client socket may move in each direction (a second's worth
    /// may come at once); 0, the default, for no limit.
    pub max_rate: u64,
}

impl WebSocketSettings {
    /// `websocket:` of an edge (`clients`: its sockets are clients') or of an origin.
    pub fn read(s: &Section<'_>, clients: bool) -> Self {
        let settings = WebSocketSettings {
            idle_timeout: s.or("idle_timeout", Secs(Duration::from_secs(300))).0,
            max_rate: if clients { s.or("max_rate", ByteSize(0)).0 } else { 0 },
        };
        if settings.idle_timeout.is_zero() {
            s.problem("idle_timeout", "must be more than 0");
        }
        settings
    }
}

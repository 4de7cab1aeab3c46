//! A whole deployment on loopback: backend → origin listener → edge, each a real process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;
use crate::process::{Backend, Proc, bin, free_loopback};

/// Settings a test may change; the rest is fixed by the harness.
#[derive(Debug, Clone)]
pub struct Knobs {
    pub edge_max_body: String,
    pub origin_max_body: String,
    pub edge_store: String,
    pub origin_store: String,
    pub fault_injection: bool,
    /// Serve `../shared/corpus/dev` from the backend too (when present).
    pub corpus: bool,
    /// Extra backends for host `test.example` besides the main one (round robin).
    pub extra_backends: usize,
    /// The origin's `delta.effort`.
    pub effort: String,
    pub threads: usize,
    /// Origin listeners (processes) the edge balances over.
    pub origins: usize,
    /// The edge's `fallback` for every host: `error` or `direct` (to the main backend).
    pub fallback: String,
    /// The origins' shared version store, when not in memory (e.g. `redis://127.0.0.1:6379/0`).
    pub store: Option<String>,
    /// More top-level YAML for the edge (e.g. a `limits:` section).
    pub edge_extra: String,
    /// More keys for the origins' `tunnel:` section, each line indented by two spaces.
    pub origin_tunnel_extra: String,
    /// The edge's `tunnel.lanes`.
    pub lanes: usize,
    /// More keys for the edge's `tunnel:` section, each line indented by two spaces.
    pub edge_tunnel_extra: String,
    /// The origins' backend for every host instead of the test backend (e.g. a `Recorder`).
    pub backend_override: Option<SocketAddr>,
    /// The edge's `tunnel.response_timeout` and the origins' `backend.response_timeout`.
    pub response_timeout: String,
    /// More top-level YAML for the origins (e.g. a `websocket:` section).
    pub origin_extra: String,
    /// The origins' whole `hosts:` section instead of the generated one (each line indented by
    /// two spaces), for tests that bring backends of their own.
    pub origin_hosts: String,
    /// More keys of the edge's `origins:` (e.g. `*.example.test`, `default`), each sent to every
    /// origin listener like the standard hosts.
    pub edge_origins: Vec<String>,
    /// More keys for the origins' `backend:` section, each line indented by two spaces.
    pub origin_backend_extra: String,
    /// The edge names its origin listeners and its `direct` fallback by this host name (e.g.
    /// `localhost`) instead of their IP address.
    pub listener_host: Option<String>,
    /// More keys for the edge's and the origins' `delta:` sections, each line indented by two
    /// spaces.
    pub edge_delta_extra: String,
    pub origin_delta_extra: String,
    /// More keys for a host of the edge's `origins:` (host, lines indented by four spaces).
    pub edge_route_extra: Vec<(String, String)>,
    /// The origins write their access logs (to their log, [`Proc::log`]).
    pub access_log: bool,
    /// The `railproxy` binary both modes run, when not this workspace's (a benchmark's
    /// "before" column runs an earlier build).
    pub binary: Option<PathBuf>,
    /// The origins dial out to the edge's connector listener (tunnel [`TUNNEL`]) instead of
    /// listening; by default when `RAILPROXY_TEST_TUNNEL=dial-out`, so that a test family can
    /// run over either.
    pub dial_out: bool,
}

/// The tunnel dial-out stacks use: the one `railproxy certs --out` issues a certificate for.
pub const TUNNEL: &str = "demo";

impl Knobs {
    /// The `railproxy` binary this stack runs: `binary`, else `$RAILPROXY_BIN` (to run a test
    /// against another build, e.g. one from before a fix), else this workspace's.
    pub fn railproxy(&self) -> PathBuf {
        self.binary
            .clone()
            .or_else(|| std::env::var_os("RAILPROXY_BIN").map(PathBuf::from))
            .unwrap_or_else(|| bin("railproxy"))
    }
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            edge_max_body: "4M".into(),
            origin_max_body: "4M".into(),
            edge_store: "64M".into(),
            origin_store: "64M".into(),
            fault_injection: false,
            corpus: false,
            extra_backends: 0,
            effort: "fast".into(),
            threads: 2,
            origins: 1,
            fallback: "error".into(),
            store: None,
            edge_extra: String::new(),
            origin_tunnel_extra: String::new(),
            edge_tunnel_extra: String::new(),
            backend_override: None,
            lanes: 4,
            response_timeout: "10s".into(),
            origin_extra: String::new(),
            origin_hosts: String::new(),
            edge_origins: Vec::new(),
            listener_host: None,
            origin_backend_extra: String::new(),
            edge_delta_extra: String::new(),
            origin_delta_extra: String::new(),
            access_log: false,
            edge_route_extra: Vec::new(),
            binary: None,
            dial_out: std::env::var("RAILPROXY_TEST_TUNNEL").is_ok_and(|v| v == "dial-out"),
        }
    }
}

/// Hosts every stack serves; `down.example` maps to a backend address where nothing listens.
pub const HOSTS: [&str; 3] = ["127.0.0.1", "localhost", "test.example"];
pub const DOWN_HOST: &str = "down.example";

/// One origin listener process, which a test may kill and start again.
#[derive(Debug)]
pub struct OriginNode {
    pub proc: Option<Proc>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    name: String,
    pub yaml: String,
}

#[allow(missing_debug_implementations)]
pub struct Stack {
    // Dropped in this order: edge first, the temp dir last.
    pub edge: Proc,
    binary: PathBuf,
    edge_yaml: String,
    upgrades: usize,
    pub origins: Vec<OriginNode>,
    pub backend: Backend,
    /// The `extra_backends`, which serve `test.example` with `backend`.
    pub extra: Vec<Backend>,
    pub edge_addr: SocketAddr,
    pub edge_admin: SocketAddr,
    pub origin_addr: SocketAddr,
    pub origin_admin: SocketAddr,
    pub dir: tempfile::TempDir,
}

/// Issues the demo certificates into `dir/certs`.
pub fn make_certs(dir: &Path) -> PathBuf {
    let certs = dir.join("certs");
    let out = Command::new(bin("railproxy")).arg("certs").arg("--out").arg(&certs).output().expect("railproxy certs");
    assert!(out.status.success(), "railproxy certs failed: {}", String::from_utf8_lossy(&out.stderr));
    certs
}

pub fn origin_yaml(
    dir: &Path,
    k: &Knobs,
    listen: SocketAddr,
    admin: SocketAddr,
    backends: &[SocketAddr],
    dead: SocketAddr,
) -> String {
    let certs = dir.join("certs");
    let mut hosts = String::new();
    let all: Vec<String> = backends.iter().map(ToString::to_string).collect();
    for h in HOSTS {
        // test.example is served by every backend, the other hosts by the first.
        let list = if h == "test.example" { all.join(", ") } else { all[0].clone() };
        hosts.push_str(&format!("  {h}:\n    backends: [{list}]\n"));
    }
    hosts.push_str(&format!("  {DOWN_HOST}:\n    backends: [{dead}]\n"));
    if !k.origin_hosts.is_empty() {
        hosts = k.origin_hosts.clone();
    }
    format!(
        "mode: origin
server:
  threads: {threads}
  grace_period: 1s
  graceful_shutdown_timeout: 1s
  upgrade_sock: {d}/origin-upgrade.sock
  pid_file: {d}/origin.pid
admin:
  listen: {admin}
{tunnel}{tunnel_extra}hosts:
{hosts}backend:
  connect_timeout: 1s
  response_timeout: {response_timeout}
{backend_extra}delta:
  store_size: {store}
  max_body: {max}
  effort: {effort}
{shared}{delta_extra}{extra}",
        delta_extra = k.origin_delta_extra,
        response_timeout = k.response_timeout,
        backend_extra = k.origin_backend_extra,
        extra = k.origin_extra,
        threads = k.threads,
        d = dir.display(),
        store = k.origin_store,
        max = k.origin_max_body,
        effort = k.effort,
        tunnel_extra = k.origin_tunnel_extra,
        tunnel = match &k.dial_out {
            // `listen` is the edge's connector listener then.
            true => format!(
                "tunnel:\n  dial: [{listen}]\n  lanes: {lanes}\n  cert: {c}/tunnel-{TUNNEL}.pem\n  key: {c}/tunnel-{TUNNEL}.key\n  ca: {c}/ca.pem\n",
                lanes = k.lanes,
                c = certs.display(),
            ),
            false => format!(
                "tunnel:\n  listen: [{listen}]\n  cert: {c}/origin.pem\n  key: {c}/origin.key\n  client_ca: {c}/ca.pem\n",
                c = certs.display(),
            ),
        },
        shared = k.store.as_ref().map(|s| format!("  store: {s}\n  store_timeout: 100ms\n")).unwrap_or_default(),
    )
}

pub fn edge_yaml(
    dir: &Path,
    k: &Knobs,
    listen: SocketAddr,
    admin: SocketAddr,
    origins: &[SocketAddr],
    direct: SocketAddr,
) -> String {
    let certs = dir.join("certs");
    let list: Vec<String> = origins
        .iter()
        .map(|a| match &k.listener_host {
            Some(name) => format!("{name}:{}", a.port()),
            None => a.to_string(),
        })
        .collect();
    let direct = match &k.listener_host {
        Some(name) => format!("{name}:{}", direct.port()),
        None => direct.to_string(),
    };
    let fallback = match k.fallback.as_str() {
        "direct" => format!("    fallback: direct\n    direct: http://{direct}\n"),
        other => format!("    fallback: {other}\n"),
    };
    let mut routes = String::new();
    let hosts: Vec<String> =
        HOSTS.iter().chain([&DOWN_HOST]).map(|h| h.to_string()).chain(k.edge_origins.iter().cloned()).collect();
    let reached = match k.dial_out {
        true => format!("tunnel: {TUNNEL}"),
        false => format!("listeners: [{}]", list.join(", ")),
    };
    let connectors = match (k.dial_out, origins.first()) {
        (true, Some(at)) => format!(
            "connectors:\n  listen: [{at}]\n  ca: {c}/ca.pem\n  cert: {c}/connector.pem\n  key: {c}/connector.key\n  tunnels:\n    {TUNNEL}:\n      hosts: [{}]\n",
            hosts.iter().map(|h| format!("\"{h}\"")).collect::<Vec<_>>().join(", "),
            c = certs.display(),
        ),
        _ => String::new(),
    };
    for h in &hosts {
        routes.push_str(&format!("  \"{h}\":\n    {reached}\n{fallback}"));
        for (_, extra) in k.edge_route_extra.iter().filter(|(host, _)| host == h) {
            routes.push_str(extra);
        }
    }
    format!(
        "mode: edge
server:
  threads: {threads}
  grace_period: 1s
  graceful_shutdown_timeout: 1s
  upgrade_sock: {d}/edge-upgrade.sock
  pid_file: {d}/edge.pid
listen: [{listen}]
admin:
  listen: {admin}
  fault_injection: {fi}
tunnel:
  ca: {c}/ca.pem
  cert: {c}/edge.pem
  key: {c}/edge.key
  connect_timeout: 1s
  response_timeout: {response_timeout}
  lanes: {lanes}
{tunnel_extra}{connectors}origins:
{routes}delta:
  store_size: {store}
  max_body: {max}
{delta_extra}failover:
  probe_interval: 200ms
  probe_timeout: 500ms
  backoff_base: 200ms
  backoff_cap: 1s
{extra}",
        threads = k.threads,
        d = dir.display(),
        c = certs.display(),
        fi = k.fault_injection,
        store = k.edge_store,
        max = k.edge_max_body,
        extra = k.edge_extra,
        lanes = k.lanes,
        tunnel_extra = k.edge_tunnel_extra,
        response_timeout = k.response_timeout,
        delta_extra = k.edge_delta_extra,
    )
}

/// The proxies' log filter: `TEST_PROXY_LOG` when set (e.g. `info` for access logs,
/// `info,pingora_proxy=debug`), else what a test's failure report needs.
fn proxy_log_filter() -> String {
    std::env::var("TEST_PROXY_LOG").unwrap_or_else(|_| "info,access=off".into())
}

/// Starts `railproxy --mode MODE -c FILE` and waits until its `/health` says ready; None if the
/// process exited first (e.g. its port was taken in the meantime).
pub async fn start_proxy(dir: &Path, name: &str, mode: &str, yaml: &str, admin: SocketAddr) -> Option<Proc> {
    start_proxy_pinned(dir, name, mode, yaml, admin, None).await
}

/// As [`start_proxy`], pinned to `cpus` (a `taskset -c` list), with access logs off.
pub async fn start_proxy_pinned(
    dir: &Path,
    name: &str,
    mode: &str,
    yaml: &str,
    admin: SocketAddr,
    cpus: Option<&str>,
) -> Option<Proc> {
    start_proxy_with(dir, name, mode, yaml, admin, crate::process::command(&bin("railproxy"), cpus)).await
}

/// As [`start_proxy`], run by `cmd` (the `railproxy` binary, perhaps behind a wrapper such as
/// `ip netns exec`).
pub async fn start_proxy_with(
    dir: &Path,
    name: &str,
    mode: &str,
    yaml: &str,
    admin: SocketAddr,
    mut cmd: Command,
) -> Option<Proc> {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).expect("write config");
    cmd.args(["--mode", mode, "-c"]).arg(&file);
    if !cmd.get_envs().any(|(k, _)| k == "RAILPROXY_LOG") {
        cmd.env("RAILPROXY_LOG", proxy_log_filter());
    }
    let mut proc = Proc::spawn(name, cmd, dir, false);
    if wait_ready(&mut proc, admin, Duration::from_secs(30)).await {
        return Some(proc);
    }
    // The caller may try again (a port taken meanwhile); a failure that repeats says why here.
    eprintln!("{name} exited before it was ready ({:?}):\n{}", proc.exited(), proc.log());
    None
}

/// Starts `railproxy --upgrade` with `yaml`, lets it take over from `old` (SIGQUIT), and waits
/// until `old` has exited.
async fn upgrade(binary: &Path, dir: &Path, name: &str, mode: &str, yaml: &str, old: &mut Proc) -> Proc {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).expect("write config");
    // The new process waits on the upgrade socket; the old one hands its sockets over on SIGQUIT.
    // The socket exists once the new process listens on it (a previous round's is removed first).
    let sock = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("upgrade_sock:"))
        .map(|p| std::path::PathBuf::from(p.trim()))
        .expect("upgrade_sock in the config");
    let _ = std::fs::remove_file(&sock);
    let mut cmd = Command::new(binary);
    cmd.args(["--upgrade", "--mode", mode, "-c"]).arg(&file).env("RAILPROXY_LOG", proxy_log_filter());
    let mut new = Proc::spawn(name, cmd, dir, false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(new.exited().is_none(), "{name} exited:\n{}", new.log());
        assert!(Instant::now() < deadline, "{name} never listened on {}:\n{}", sock.display(), new.log());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    old.signal("QUIT");
    let status = old.wait_exit(Duration::from_secs(15));
    assert!(status.is_some(), "{} did not exit after SIGQUIT:\n{}", old.name, old.log());
    assert!(new.exited().is_none(), "{name} exited:\n{}", new.log());
    new
}

/// Polls `/health` until 200; false if the process exits or the time runs out.
pub async fn wait_ready(proc: &mut Proc, admin: SocketAddr, limit: Duration) -> bool {
    let mut http = crate::Http::h1();
    // Long enough for an admin listener beyond an emulated long link.
    http.timeout = Duration::from_secs(5);
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if proc.exited().is_some() {
            return false;
        }
        if let Ok(r) = http.get(&format!("http://{admin}/health"), &[]).await
            && r.status == 200
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{} not ready after {limit:?}:\n{}", proc.name, proc.log());
}

impl Stack {
    pub async fn start(knobs: Knobs) -> Stack {
        let dir = tempfile::tempdir().expect("temp dir");
        make_certs(dir.path());
        let corpus = if knobs.corpus { crate::corpus() } else { None };
        let backend = Backend::start(dir.path(), "backend", corpus.as_deref());
        let extra: Vec<Backend> =
            (0..knobs.extra_backends).map(|i| Backend::start(dir.path(), &format!("backend{}", i + 2), None)).collect();
        let backends: Vec<SocketAddr> = match knobs.backend_override {
            Some(addr) => vec![addr],
            None => std::iter::once(backend.addr).chain(extra.iter().map(|b| b.addr)).collect(),
        };
        if knobs.dial_out {
            return Self::start_dialling_out(knobs, dir, backend, extra, &backends).await;
        }
        'attempt: for attempt in 1..=3 {
            let dead = free_loopback();
            let mut origins = Vec::new();
            for i in 0..knobs.origins {
                let (addr, admin) = (free_loopback(), free_loopback());
                let name = format!("origin{}-{attempt}", i + 1);
                let yaml = origin_yaml(dir.path(), &knobs, addr, admin, &backends, dead);
                let mut cmd = Command::new(knobs.railproxy());
                if knobs.access_log {
                    cmd.env("RAILPROXY_LOG", "info");
                }
                let Some(proc) = start_proxy_with(dir.path(), &name, "origin", &yaml, admin, cmd).await else {
                    continue 'attempt;
                };
                origins.push(OriginNode { proc: Some(proc), addr, admin, name, yaml });
            }
            let (edge_addr, edge_admin) = (free_loopback(), free_loopback());
            let listeners: Vec<SocketAddr> = origins.iter().map(|o| o.addr).collect();
            let ey = edge_yaml(dir.path(), &knobs, edge_addr, edge_admin, &listeners, backend.addr);
            let cmd = Command::new(knobs.railproxy());
            let Some(edge) =
                start_proxy_with(dir.path(), &format!("edge{attempt}"), "edge", &ey, edge_admin, cmd).await
            else {
                continue;
            };
            let (origin_addr, origin_admin) = (origins[0].addr, origins[0].admin);
            return Stack {
                edge,
                binary: knobs.railproxy(),
                edge_yaml: ey,
                upgrades: 0,
                origins,
                backend,
                extra,
                edge_addr,
                edge_admin,
                origin_addr,
                origin_admin,
                dir,
            };
        }
        panic!("could not start the stack in 3 attempts; logs in {}", dir.keep().display());
    }

    /// As [`Stack::start`], the origins dialling out: the edge starts first (its connector
    /// listener is what they dial), then each origin, and the stack is ready once the edge holds
    /// every origin's lanes.
    async fn start_dialling_out(
        knobs: Knobs,
        dir: tempfile::TempDir,
        backend: Backend,
        extra: Vec<Backend>,
        backends: &[SocketAddr],
    ) -> Stack {
        for attempt in 1..=3 {
            let (edge_addr, edge_admin, connector, dead) =
                (free_loopback(), free_loopback(), free_loopback(), free_loopback());
            let ey = edge_yaml(dir.path(), &knobs, edge_addr, edge_admin, &[connector], backend.addr);
            let cmd = Command::new(knobs.railproxy());
            let Some(edge) =
                start_proxy_with(dir.path(), &format!("edge{attempt}"), "edge", &ey, edge_admin, cmd).await
            else {
                continue;
            };
            let mut origins = Vec::new();
            for i in 0..knobs.origins {
                let admin = free_loopback();
                let name = format!("origin{}-{attempt}", i + 1);
                let yaml = origin_yaml(dir.path(), &knobs, connector, admin, backends, dead);
                let mut cmd = Command::new(knobs.railproxy());
                if knobs.access_log {
                    cmd.env("RAILPROXY_LOG", "info");
                }
                let proc =
                    start_proxy_with(dir.path(), &name, "origin", &yaml, admin, cmd).await.expect("origin starts");
                origins.push(OriginNode { proc: Some(proc), addr: connector, admin, name, yaml });
            }
            let stack = Stack {
                edge,
                binary: knobs.railproxy(),
                edge_yaml: ey,
                upgrades: 0,
                origin_addr: connector,
                origin_admin: origins[0].admin,
                origins,
                backend,
                extra,
                edge_addr,
                edge_admin,
                dir,
            };
            stack.wait_lanes(knobs.origins * knobs.lanes).await;
            return stack;
        }
        panic!("could not start the stack in 3 attempts");
    }

    /// Waits until the edge holds `n` dial-out lanes (every replica's together).
    pub async fn wait_lanes(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let held = Metrics::scrape(self.edge_admin).await.sum("railproxy_dialout_lanes", &[]) as usize;
            if held >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the edge holds {held} dial-out lanes of {n} after 15 s:\n{}",
                self.edge.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Zero-downtime upgrade of the edge: a new process started with `--upgrade` takes the
    /// listening sockets over when the old one gets SIGQUIT; returns once the old one has exited.
    pub async fn upgrade_edge(&mut self) -> Duration {
        self.upgrades += 1;
        let name = format!("edge-upgrade{}", self.upgrades);
        let new = upgrade(&self.binary, self.dir.path(), &name, "edge", &self.edge_yaml, &mut self.edge).await;
        self.edge = new;
        wait_ready(&mut self.edge, self.edge_admin, Duration::from_secs(10)).await;
        Duration::ZERO
    }

    /// Zero-downtime upgrade of origin listener `i`.
    pub async fn upgrade_origin(&mut self, i: usize) {
        self.upgrades += 1;
        let name = format!("{}-upgrade{}", self.origins[i].name, self.upgrades);
        let o = &mut self.origins[i];
        let mut old = o.proc.take().expect("origin running");
        let new = upgrade(&self.binary, self.dir.path(), &name, "origin", &o.yaml, &mut old).await;
        o.proc = Some(new);
        let admin = o.admin;
        wait_ready(o.proc.as_mut().expect("just set"), admin, Duration::from_secs(10)).await;
    }

    /// SIGKILLs origin listener `i`.
    pub fn kill_origin(&mut self, i: usize) {
        if let Some(mut p) = self.origins[i].proc.take() {
            p.signal("KILL");
            p.wait_exit(Duration::from_secs(5));
        }
    }

    /// Starts origin listener `i` again, same ports and configuration, and waits until ready.
    pub async fn restart_origin(&mut self, i: usize) {
        let o = &mut self.origins[i];
        let name = format!("{}-again", o.name);
        let cmd = Command::new(&self.binary);
        let proc =
            start_proxy_with(self.dir.path(), &name, "origin", &o.yaml, o.admin, cmd).await.expect("origin restarts");
        o.proc = Some(proc);
    }

    /// A URL on the edge (host 127.0.0.1).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.edge_addr)
    }

    /// The edge's metrics once every finished request is counted.
    pub async fn edge_metrics(&self) -> Metrics {
        Metrics::settled(self.edge_admin).await
    }

    pub async fn origin_metrics(&self) -> Metrics {
        Metrics::settled(self.origin_admin).await
    }
}

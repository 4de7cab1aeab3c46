//! A whole deployment on loopback: backend → origin listener → edge, each a real process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;
use crate::process::{Backend, Proc, bin, free_port};

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
            effort: "small".into(),
            threads: 2,
        }
    }
}

/// Hosts every stack serves; `down.example` maps to a backend address where nothing listens.
pub const HOSTS: [&str; 3] = ["127.0.0.1", "localhost", "test.example"];
pub const DOWN_HOST: &str = "down.example";

#[allow(missing_debug_implementations)]
pub struct Stack {
    // Dropped in this order: edge first, the temp dir last.
    pub edge: Proc,
    pub origin: Proc,
    pub backend: Backend,
    /// The `extra_backends`, which serve `test.example` with `backend`.
    pub extra: Vec<Backend>,
    pub edge_addr: SocketAddr,
    pub edge_admin: SocketAddr,
    pub origin_addr: SocketAddr,
    pub origin_admin: SocketAddr,
    pub dir: tempfile::TempDir,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
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
tunnel:
  listen: [{listen}]
  cert: {c}/origin.pem
  key: {c}/origin.key
  client_ca: {c}/ca.pem
hosts:
{hosts}backend:
  connect_timeout: 1s
  response_timeout: 10s
delta:
  store_size: {store}
  max_body: {max}
  effort: {effort}
",
        threads = k.threads,
        d = dir.display(),
        c = certs.display(),
        store = k.origin_store,
        max = k.origin_max_body,
        effort = k.effort,
    )
}

pub fn edge_yaml(dir: &Path, k: &Knobs, listen: SocketAddr, admin: SocketAddr, origin: SocketAddr) -> String {
    let certs = dir.join("certs");
    let mut routes = String::new();
    for h in HOSTS.iter().chain([&DOWN_HOST]) {
        routes.push_str(&format!("  {h}:\n    listeners: [{origin}]\n"));
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
  response_timeout: 10s
origins:
{routes}delta:
  store_size: {store}
  max_body: {max}
",
        threads = k.threads,
        d = dir.display(),
        c = certs.display(),
        fi = k.fault_injection,
        store = k.edge_store,
        max = k.edge_max_body,
    )
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
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).expect("write config");
    let mut cmd = crate::process::command(&bin("railproxy"), cpus);
    cmd.args(["--mode", mode, "-c"]).arg(&file).env("RAILPROXY_LOG", "info,access=off");
    let mut proc = Proc::spawn(name, cmd, dir, false);
    wait_ready(&mut proc, admin, Duration::from_secs(30)).await.then_some(proc)
}

/// Polls `/health` until 200; false if the process exits or the time runs out.
pub async fn wait_ready(proc: &mut Proc, admin: SocketAddr, limit: Duration) -> bool {
    let mut http = crate::Http::h1();
    http.timeout = Duration::from_secs(1);
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
        let backends: Vec<SocketAddr> = std::iter::once(backend.addr).chain(extra.iter().map(|b| b.addr)).collect();
        for attempt in 1..=3 {
            let (origin_addr, origin_admin, edge_addr, edge_admin, dead) = (
                loopback(free_port()),
                loopback(free_port()),
                loopback(free_port()),
                loopback(free_port()),
                loopback(free_port()),
            );
            let oy = origin_yaml(dir.path(), &knobs, origin_addr, origin_admin, &backends, dead);
            let Some(origin) = start_proxy(dir.path(), &format!("origin{attempt}"), "origin", &oy, origin_admin).await
            else {
                continue;
            };
            let ey = edge_yaml(dir.path(), &knobs, edge_addr, edge_admin, origin_addr);
            let Some(edge) = start_proxy(dir.path(), &format!("edge{attempt}"), "edge", &ey, edge_admin).await else {
                continue;
            };
            return Stack { edge, origin, backend, extra, edge_addr, edge_admin, origin_addr, origin_admin, dir };
        }
        panic!("could not start the stack in 3 attempts; logs in {}", dir.keep().display());
    }

    /// A URL on the edge (host 127.0.0.1).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.edge_addr)
    }

    pub async fn edge_metrics(&self) -> Metrics {
        Metrics::scrape(self.edge_admin).await
    }

    pub async fn origin_metrics(&self) -> Metrics {
        Metrics::scrape(self.origin_admin).await
    }
}

//! The paths compared, started across an emulated link (edge on this side, origin and backend
//! beyond it) or on loopback.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use integration::bench::{NginxRole, nginx_conf, start_listening};
use integration::link::{Link, Profile};
use integration::process::{Proc, bin, free_loopback, free_port};
use integration::stack::{edge_yaml, make_certs, origin_yaml, start_proxy_with};
use integration::{Backend, Http, Knobs};

/// The paths compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Railproxy,
    /// railproxy with the origin dialling out to the edge's connector listener: the same
    /// request path over lanes the origin opened.
    RailproxyDialOut,
    Nginx,
    /// nginx two hops, the origin gzipping at nginx's default level (1), the edge gunzipping.
    NginxGzip,
    /// The same at `gzip_comp_level 6`.
    NginxGzip6,
}

impl Route {
    pub fn name(self) -> &'static str {
        match self {
            Route::Railproxy => "railproxy edge → tunnel → railproxy origin",
            Route::RailproxyDialOut => "railproxy, as above, the origin dialling out (as many lanes)",
            Route::Nginx => "nginx edge → nginx origin",
            Route::NginxGzip => "nginx, gzip between (level 1, nginx's default)",
            Route::NginxGzip6 => "nginx, gzip between (level 6)",
        }
    }

    pub const ALL: [Route; 4] = [Route::Railproxy, Route::Nginx, Route::NginxGzip, Route::NginxGzip6];
}

/// One path running across one link: where clients connect, what to stop, and where to look.
pub struct Running {
    pub edge: SocketAddr,
    /// railproxy's edge admin listener (its metrics), if this is railproxy.
    pub edge_admin: Option<SocketAddr>,
    /// `ss`'s filter for the origin side's sockets (beyond the link) that carry the responses:
    /// its listening port's, or, dialling out, those to the edge's connector listener.
    pub origin_sockets: String,
    // Dropped first: the processes, then the backend, then the link.
    _procs: Vec<Proc>,
    _backend: Backend,
    pub link: Link,
}

/// How railproxy runs on the link: its edge's `tunnel` settings beyond the defaults (lanes).
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    /// `tunnel.lanes`; its default when `None`.
    pub lanes: Option<usize>,
}

/// `path` across a link of `profile`, every TCP connection across it using `congestion`, its
/// backend serving the page sets in `sets`.
pub async fn start(path: Route, profile: Profile, congestion: &str, setup: Setup, dir: &Path, sets: &Path) -> Running {
    let link = Link::start(profile).await.unwrap_or_else(|why| {
        eprintln!("railproxy-wanbench needs an emulated link, which this machine cannot make: {why}");
        std::process::exit(77);
    });
    link.congestion_control(congestion)
        .unwrap_or_else(|e| panic!("congestion control {congestion} on the link's routes: {e}"));
    let mut backend_cmd = link.command(&bin("railproxy-testbackend"));
    backend_cmd.arg("--corpus").arg(sets);
    let backend = Backend::start_with(dir, "backend", backend_cmd);
    let origin = SocketAddr::from((link.far, free_port()));
    let edge = free_loopback();
    let (procs, edge_admin, origin_sockets) = match path {
        Route::Railproxy => {
            // conf/*.yaml's timeouts, which must fit a long link (and a thin one's queues).
            let knobs = Knobs { response_timeout: "60s".into(), lanes: setup.lanes.unwrap_or(0), ..Knobs::default() };
            let origin_admin = SocketAddr::from((link.far, free_port()));
            let oy = origin_yaml(dir, &knobs, origin, origin_admin, &[backend.addr], free_loopback());
            // Knobs::railproxy: $RAILPROXY_BIN runs an earlier build on both sides.
            let o = start_proxy_with(dir, "origin", "origin", &oy, origin_admin, link.command(&knobs.railproxy()))
                .await
                .expect("railproxy origin starts");
            let edge_admin = free_loopback();
            let ey = edge_yaml(dir, &knobs, edge, edge_admin, &[origin], backend.addr);
            let ey = default_lanes(ey, setup)
                .replace("connect_timeout: 1s", "connect_timeout: 2s")
                .replace("probe_timeout: 500ms", "probe_timeout: 1s")
                .replace("probe_interval: 200ms", "probe_interval: 2s");
            let e = start_proxy_with(dir, "edge", "edge", &ey, edge_admin, Command::new(knobs.railproxy()))
                .await
                .expect("railproxy edge starts");
            (vec![e, o], Some(edge_admin), format!("sport = :{}", origin.port()))
        }
        Route::RailproxyDialOut => {
            // As many lanes as the edge dials by default, so that the row compares the
            // transports, not the lane counts (the origin's own default is 4; on this lossy link
            // 4 loss-based flows carried ~0.57x 16's pages/s of bodies that are no delta).
            let lanes = setup.lanes.unwrap_or(DIAL_IN_LANES);
            let knobs = Knobs { response_timeout: "60s".into(), lanes, dial_out: true, ..Knobs::default() };
            // The edge's connector listener, on this side of the link: the origin dials it.
            let connector = SocketAddr::from((link.near, free_port()));
            let edge_admin = free_loopback();
            let ey = edge_yaml(dir, &knobs, edge, edge_admin, &[connector], backend.addr);
            let e = start_proxy_with(dir, "edge", "edge", &ey, edge_admin, Command::new(knobs.railproxy()))
                .await
                .expect("railproxy edge starts");
            let origin_admin = SocketAddr::from((link.far, free_port()));
            let oy = origin_yaml(dir, &knobs, connector, origin_admin, &[backend.addr], free_loopback());
            let o = start_proxy_with(dir, "origin", "origin", &oy, origin_admin, link.command(&knobs.railproxy()))
                .await
                .expect("railproxy origin starts");
            wait_for_lanes(edge_admin, lanes).await;
            (vec![e, o], Some(edge_admin), format!("dport = :{}", connector.port()))
        }
        _ => {
            let (edge_role, origin_role) = match path {
                Route::Nginx => (NginxRole::Proxy, NginxRole::Proxy),
                Route::NginxGzip => (NginxRole::GunzipEdge, NginxRole::GzipOrigin),
                _ => (NginxRole::GunzipEdge, NginxRole::GzipOrigin6),
            };
            let oc = nginx_conf(dir, "nginx-origin", origin_role, origin, backend.addr);
            let o = nginx(dir, "nginx-origin", &oc, origin, Some(&link));
            let ec = nginx_conf(dir, "nginx-edge", edge_role, edge, origin);
            let e = nginx(dir, "nginx-edge", &ec, edge, None);
            (vec![e, o], None, format!("sport = :{}", origin.port()))
        }
    };
    Running { edge, edge_admin, origin_sockets, _procs: procs, _backend: backend, link }
}

/// The edge's `tunnel.lanes` default (dial-in).
const DIAL_IN_LANES: usize = 16;

/// `yaml` with its `tunnel.lanes` line dropped when the run uses the default.
fn default_lanes(yaml: String, setup: Setup) -> String {
    if setup.lanes.is_none() { yaml.replace("  lanes: 0\n", "") } else { yaml }
}

/// Until the edge holds `lanes` request lanes of the dialling origin (its WebSocket lanes are
/// not counted there), 30 s at most: the link's round trips make each TLS handshake slow.
async fn wait_for_lanes(edge_admin: SocketAddr, lanes: usize) {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let held = integration::metrics::Metrics::scrape(edge_admin).await.sum("railproxy_dialout_lanes", &[]);
        if held as usize >= lanes {
            return;
        }
        assert!(
            Instant::now() < until,
            "the dialling origin's lanes did not reach the edge in 30 s ({held} of {lanes})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// nginx in the foreground, on the far side of `link` when given; one process (no master), so
/// that stopping it stops all of it.
pub fn nginx(dir: &Path, name: &str, conf: &str, listen: SocketAddr, link: Option<&Link>) -> Proc {
    let file = dir.join(format!("{name}.conf"));
    std::fs::write(&file, conf).expect("write nginx conf");
    let mut cmd = match link {
        Some(l) => l.command(Path::new("/usr/sbin/nginx")),
        None => Command::new("nginx"),
    };
    cmd.arg("-p").arg(dir).arg("-c").arg(&file).args(["-g", "daemon off; master_process off;"]);
    start_listening(dir, name, cmd, listen)
}

/// What the origin side's sockets that `filter` picks (beyond the link) say they use: the congestion
/// control of each established connection, counted (`ss -ti`), e.g. "4 × bbr".
pub fn congestion_in_use(link: &Link, filter: &str) -> String {
    let out =
        Command::new("ip").args(["netns", "exec", &link.ns, "ss", "-tinH", "state", "established", filter]).output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default();
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for line in text.lines() {
        // The info line starts with the algorithm's name ("cubic wscale:…", "bbr wscale:…").
        if let Some(first) = line.split_whitespace().next().filter(|w| w.chars().all(|c| c.is_ascii_alphanumeric()))
            && line.contains("rtt:")
        {
            *counts.entry(first.to_string()).or_default() += 1;
        }
    }
    if counts.is_empty() {
        return "none open".into();
    }
    counts.iter().map(|(cc, n)| format!("{n} × {cc}")).collect::<Vec<_>>().join(", ")
}

/// A path on loopback (no link): railproxy's stack with its default settings, or nginx two
/// hops; kept whole until dropped.
pub struct Loopback {
    // Dropped in this order: the proxies, then the backend.
    _stack: Option<Box<integration::Stack>>,
    _procs: Vec<Proc>,
    _backend: Option<Backend>,
}

impl Loopback {
    /// The path, where clients connect, and its backend's address.
    pub async fn start(path: Route, dir: &Path) -> (Loopback, SocketAddr, SocketAddr) {
        match path {
            Route::Railproxy | Route::RailproxyDialOut => {
                let dial_out = path == Route::RailproxyDialOut;
                let stack = integration::Stack::start(Knobs { dial_out, ..Knobs::default() }).await;
                let (edge, backend) = (stack.edge_addr, stack.backend.addr);
                (Loopback { _stack: Some(Box::new(stack)), _procs: Vec::new(), _backend: None }, edge, backend)
            }
            _ => {
                let backend = Backend::start(dir, "backend", None);
                let (origin, edge) = (free_loopback(), free_loopback());
                let oc = nginx_conf(dir, "nginx-origin", NginxRole::Proxy, origin, backend.addr);
                let o = nginx(dir, "nginx-origin", &oc, origin, None);
                let ec = nginx_conf(dir, "nginx-edge", NginxRole::Proxy, edge, origin);
                let e = nginx(dir, "nginx-edge", &ec, edge, None);
                let addr = backend.addr;
                (Loopback { _stack: None, _procs: vec![e, o], _backend: Some(backend) }, edge, addr)
            }
        }
    }
}

/// The one-byte-chunk upload flood beside GETs, on loopback.
pub async fn flood(path: Route, dir: &Path) -> integration::flood::Flood {
    let (_running, edge, _) = Loopback::start(path, dir).await;
    integration::flood::run(edge, Duration::from_secs(5)).await
}

/// TCP connections established to `port` on this host now.
fn established_to(port: u16) -> usize {
    let filter = format!("( dport = :{port} )");
    Command::new("ss")
        .args(["-tnH", "state", "established", &filter])
        .output()
        .map_or(0, |o| String::from_utf8_lossy(&o.stdout).lines().count())
}

/// slowhttptest -B (slow bodies, R-U-Dead-Yet) on loopback: 200 clients declaring 8 KB bodies
/// and sending a few bytes every 5 s, for 15 s. Returns the most backend connections established
/// meanwhile, the most client connections the edge held (the attack's, to show it ran), and
/// the GETs other clients got answered (of those sent, one every 100 ms).
pub async fn slow_bodies(path: Route, dir: &Path) -> (usize, usize, usize, usize) {
    let (_running, edge, backend) = Loopback::start(path, dir).await;
    let mut attack = Command::new("slowhttptest")
        .args(["-B", "-c", "200", "-r", "200", "-i", "5", "-s", "8192", "-x", "10", "-l", "15", "-p", "3"])
        .arg("-u")
        .arg(format!("http://{edge}/echo"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("slowhttptest (Debian package slowhttptest)");
    let (mut peak, mut clients, mut answered, mut sent) = (0, 0, 0, 0);
    let http = Http::h1();
    let until = Instant::now() + Duration::from_secs(14);
    while Instant::now() < until {
        peak = peak.max(established_to(backend.port()));
        clients = clients.max(established_to(edge.port()));
        sent += 1;
        if http.get(&format!("http://{edge}/text/2000"), &[]).await.is_ok_and(|r| r.status == 200) {
            answered += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = attack.kill();
    let _ = attack.wait();
    (peak, clients, answered, sent)
}

/// Requests not answered 200 among 20 sent right after a fresh railproxy stack started.
pub async fn startup_errors(dir: &Path, sets: &Path) -> (usize, f64) {
    let profile = Profile::new(Duration::from_millis(700), 50.0, 0.0);
    let run = start(Route::Railproxy, profile, "cubic", Setup { lanes: None }, dir, sets).await;
    let http = Http::h1();
    let started = Instant::now();
    let mut errors = 0;
    for _ in 0..20 {
        match http.get(&format!("http://{}/text/10000", run.edge), &[]).await {
            Ok(r) if r.status == 200 && r.body.len() == 10_000 => {}
            _ => errors += 1,
        }
    }
    (errors, started.elapsed().as_secs_f64())
}

/// Issues the demo certificates the stacks use into `dir`.
pub fn certificates(dir: &Path) {
    make_certs(dir);
}

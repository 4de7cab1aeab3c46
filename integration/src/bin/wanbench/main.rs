//! `railproxy-wanbench` (`make bench-wan`): railproxy beside nginx two hops (plain, and gzip
//! between the hops) across the emulated long link of `integration::link`, one run, side by side.
//! The edges (railproxy's and nginx's) run on this side of the link, origins and the test backend
//! on the far side, so only what one path sends between its hops crosses the link.
//!
//! For each of three links (40 ms / 50 Mbit/s; 150 ms / 10 Mbit/s / 0.5 % loss; 150 ms /
//! 2 Mbit/s), per path: a 190 KB dynamic page (a real one when `--corpus DIR` has
//! volksstimme-home, else generated; every version differs from the one before) fetched in
//! sequence (time to last byte p50/p90) and by 16 clients at once (pages/s, p50/p99); the bytes
//! the link carried per page; the first fetch after 65 s idle; a 2 MB body; a 2 MB upload. Then,
//! on loopback, GETs beside a flood of one-byte-chunk uploads, the backend connections that
//! slowhttptest's slow bodies hold, and requests answered in error right after start at 700 ms
//! RTT. Needs root and /dev/net/tun; says so and exits 77 otherwise.
//!
//!   railproxy-wanbench [--corpus DIR] [--only WORD|WORD]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use integration::bench::{NginxRole, honest, nginx_conf, start_listening};
use integration::link::{Link, Profile};
use integration::process::{Proc, bin, free_loopback, free_port};
use integration::stack::{edge_yaml, make_certs, origin_yaml, start_proxy, start_proxy_with};
use integration::{Backend, Http, Knobs};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The paths compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Railproxy,
    /// railproxy with `tunnel.congestion_control: bbr` on its tunnel connections.
    RailproxyBbr,
    Nginx,
    NginxGzip,
}

impl Route {
    fn name(self) -> &'static str {
        match self {
            Route::Railproxy => "railproxy edge → tunnel → railproxy origin",
            Route::RailproxyBbr => "railproxy, `tunnel.congestion_control: bbr`",
            Route::Nginx => "nginx edge → nginx origin",
            Route::NginxGzip => "nginx edge → nginx origin, gzip between",
        }
    }
}

/// The dynamic page's set, as the backend names it.
const PAGE: &str = "page-190k";

/// One path running across one link: where clients connect, and what to stop.
struct Running {
    edge: SocketAddr,
    // Dropped first: the processes, then the backend, then the link.
    _procs: Vec<Proc>,
    _backend: Backend,
    link: Link,
}

/// `path` across a link of `profile`, its backend serving the page sets in `sets`.
async fn start(path: Route, profile: Profile, dir: &Path, sets: &Path) -> Running {
    let link = Link::start(profile).await.unwrap_or_else(|why| {
        eprintln!("railproxy-wanbench needs an emulated link, which this machine cannot make: {why}");
        std::process::exit(77);
    });
    let mut backend_cmd = link.command(&bin("railproxy-testbackend"));
    backend_cmd.arg("--corpus").arg(sets);
    let backend = Backend::start_with(dir, "backend", backend_cmd);
    let origin = SocketAddr::from((link.far, free_port()));
    let edge = free_loopback();
    let procs = match path {
        Route::Railproxy | Route::RailproxyBbr => {
            // Both ends of the tunnel use bbr, as an operator would set it (the edge dials,
            // the origin accepts).
            let bbr = "  congestion_control: bbr\n".to_string();
            let knobs = match path {
                Route::RailproxyBbr => {
                    Knobs { edge_tunnel_extra: bbr.clone(), origin_tunnel_extra: bbr, ..Knobs::default() }
                }
                _ => Knobs::default(),
            };
            let origin_admin = SocketAddr::from((link.far, free_port()));
            let oy = origin_yaml(dir, &knobs, origin, origin_admin, &[backend.addr], free_loopback());
            let o = start_proxy_with(dir, "origin", "origin", &oy, origin_admin, link.command(&bin("railproxy")))
                .await
                .expect("railproxy origin starts");
            let edge_admin = free_loopback();
            // conf/edge.yaml's timeouts, which must fit a long link.
            let ey = edge_yaml(dir, &knobs, edge, edge_admin, &[origin], backend.addr)
                .replace("connect_timeout: 1s", "connect_timeout: 2s")
                .replace("probe_timeout: 500ms", "probe_timeout: 1s");
            let e = start_proxy(dir, "edge", "edge", &ey, edge_admin).await.expect("railproxy edge starts");
            vec![e, o]
        }
        Route::Nginx | Route::NginxGzip => {
            let (edge_role, origin_role) = match path {
                Route::Nginx => (NginxRole::Proxy, NginxRole::Proxy),
                _ => (NginxRole::GunzipEdge, NginxRole::GzipOrigin),
            };
            let oc = nginx_conf(dir, "nginx-origin", origin_role, origin, backend.addr);
            let o = nginx(dir, "nginx-origin", &oc, origin, Some(&link));
            let ec = nginx_conf(dir, "nginx-edge", edge_role, edge, origin);
            let e = nginx(dir, "nginx-edge", &ec, edge, None);
            vec![e, o]
        }
    };
    Running { edge, _procs: procs, _backend: backend, link }
}

/// nginx in the foreground, on the far side of `link` when given; one process (no master), so
/// that stopping it stops all of it.
fn nginx(dir: &Path, name: &str, conf: &str, listen: SocketAddr, link: Option<&Link>) -> Proc {
    let file = dir.join(format!("{name}.conf"));
    std::fs::write(&file, conf).expect("write nginx conf");
    let mut cmd = match link {
        Some(l) => l.command(Path::new("/usr/sbin/nginx")),
        None => Command::new("nginx"),
    };
    cmd.arg("-p").arg(dir).arg("-c").arg(&file).args(["-g", "daemon off; master_process off;"]);
    start_listening(dir, name, cmd, listen)
}

/// A path on loopback (no link): railproxy's stack with its default settings, or nginx two
/// hops; kept whole until dropped.
struct Loopback {
    // Dropped in this order: the proxies, then the backend.
    _stack: Option<Box<integration::Stack>>,
    _procs: Vec<Proc>,
    _backend: Option<Backend>,
}

impl Loopback {
    /// The path, where clients connect, and its backend's address.
    async fn start(path: Route, dir: &Path) -> (Loopback, SocketAddr, SocketAddr) {
        match path {
            Route::Railproxy => {
                let stack = integration::Stack::start(Knobs::default()).await;
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
async fn flood(path: Route, dir: &Path) -> integration::flood::Flood {
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
async fn slow_bodies(path: Route, dir: &Path) -> (usize, usize, usize, usize) {
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
async fn startup_errors(dir: &Path, sets: &Path) -> (usize, f64) {
    let run = start(Route::Railproxy, Profile::new(Duration::from_millis(700), 50.0, 0.0), dir, sets).await;
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

/// One link to measure across.
struct Wan {
    name: &'static str,
    rtt_ms: u64,
    mbit: f64,
    loss_percent: f64,
}

const LINKS: [Wan; 3] = [
    Wan { name: "40 ms RTT, 50 Mbit/s", rtt_ms: 40, mbit: 50.0, loss_percent: 0.0 },
    Wan { name: "150 ms RTT, 10 Mbit/s, 0.5 % loss", rtt_ms: 150, mbit: 10.0, loss_percent: 0.5 },
    Wan { name: "150 ms RTT, 2 Mbit/s", rtt_ms: 150, mbit: 2.0, loss_percent: 0.0 },
];

/// Sequential fetches of the page, and the clients fetching at once, pages each (after one
/// unmeasured fetch each, so that every measured page has its previous version at the edge).
const SEQUENTIAL: usize = 20;
const CLIENTS: usize = 16;
const PER_CLIENT: usize = 2;
const IDLE: Duration = Duration::from_secs(65);
const BIG: usize = 2_000_000;

/// What one path measured across one link.
#[derive(Default)]
struct Figures {
    /// Seconds to the last byte, one page at a time.
    sequential: Vec<f64>,
    /// Pages per second with 16 clients, and their seconds to the last byte.
    clients_rate: f64,
    clients: Vec<f64>,
    /// Bytes the link carried per page, over the sequential fetches.
    link_bytes: f64,
    after_idle: f64,
    download: f64,
    upload: f64,
}

fn quantile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
}

/// A client that waits as long as a thin link needs (16 pages of 190 KB sharing 2 Mbit/s take
/// more than the tests' 30 s).
fn client() -> Http {
    let mut http = Http::h1();
    http.timeout = Duration::from_secs(300);
    http
}

/// Seconds for one GET of `url` to its last byte, checking the body is `expected`'s.
async fn fetch(http: &Http, url: &str, expected: Option<&[u8]>) -> f64 {
    let started = Instant::now();
    let r = http.get(url, &[]).await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(r.status, 200, "{url}");
    if let Some(want) = expected {
        assert!(r.body == want, "{url}: not the backend's bytes");
    }
    secs
}

/// The page versions `/cycle/PAGE?page=Q` serves, in turn, from its first request on.
struct Turns {
    versions: Vec<Vec<u8>>,
    next: std::collections::HashMap<String, usize>,
}

impl Turns {
    fn expect(&mut self, query: &str) -> Vec<u8> {
        let n = self.next.entry(query.to_string()).or_default();
        *n += 1;
        self.versions[(*n - 1) % self.versions.len()].clone()
    }
}

async fn measure(run: &Running, versions: &[Vec<u8>]) -> Figures {
    let mut f = Figures::default();
    let mut turns = Turns { versions: versions.to_vec(), next: Default::default() };
    let page = |q: &str| format!("http://{}/cycle/{PAGE}?{q}", run.edge);
    let http = client();
    // The first fetch opens the connections and leaves a version at railproxy's edge.
    fetch(&http, &page("seq"), Some(&turns.expect("seq"))).await;
    let carried = || run.link.drops.carried.load(std::sync::atomic::Ordering::Relaxed);
    let before = carried();
    for _ in 0..SEQUENTIAL {
        let want = turns.expect("seq");
        f.sequential.push(fetch(&http, &page("seq"), Some(&want)).await);
    }
    f.link_bytes = (carried() - before) as f64 / SEQUENTIAL as f64;
    // Each client its own page (its own turn of versions), fetched once unmeasured.
    let mut wants: Vec<Vec<Vec<u8>>> = Vec::new();
    for c in 0..CLIENTS {
        let q = format!("c{c}");
        fetch(&http, &page(&q), Some(&turns.expect(&q))).await;
        wants.push((0..PER_CLIENT).map(|_| turns.expect(&q)).collect());
    }
    let started = Instant::now();
    let mut clients = Vec::new();
    for (c, want) in wants.into_iter().enumerate() {
        let url = page(&format!("c{c}"));
        clients.push(tokio::spawn(async move {
            let http = client();
            let mut times = Vec::new();
            for w in want {
                times.push(fetch(&http, &url, Some(&w)).await);
            }
            times
        }));
    }
    for c in clients {
        f.clients.extend(c.await.expect("client"));
    }
    f.clients_rate = f.clients.len() as f64 / started.elapsed().as_secs_f64();
    let big = fetch(&http, &format!("http://{}/binary/{BIG}", run.edge), None).await;
    f.download = big;
    let body = Bytes::from((0..BIG as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect::<Vec<_>>());
    let started = Instant::now();
    let r = http.send(Method::POST, &format!("http://{}/sink", run.edge), &[], body).await.expect("upload");
    assert!(r.status == 200 && r.body == format!("{BIG}\n").as_bytes(), "the upload arrived whole");
    f.upload = started.elapsed().as_secs_f64();
    f
}

/// The 190 KB page's versions: volksstimme-home from `corpus` when there, else generated; every
/// version different from the one before. Written as set `PAGE` under `dir` for the backend.
fn page_versions(corpus: Option<&Path>, dir: &Path) -> (Vec<Vec<u8>>, String) {
    let real = corpus
        .and_then(|c| delta::corpus::load_version_sets(c).ok())
        .and_then(|sets| sets.into_iter().find(|s| s.name == "volksstimme-home"));
    let (set, from) = match real {
        Some(s) => (s, "volksstimme-home, the real 190 KB front page"),
        None => (
            delta::corpus::VersionSet {
                name: PAGE.into(),
                versions: delta::testing::PageGenerator::versions(190, 190_000, 16),
            },
            "a generated 190 KB page (no corpus)",
        ),
    };
    let (set, same, pairs) = honest(set);
    let d = dir.join(PAGE);
    std::fs::create_dir_all(&d).expect("sets dir");
    for (i, v) in set.versions.iter().enumerate() {
        std::fs::write(d.join(format!("{i:03}.html")), v).expect("write version");
    }
    let avg = set.versions.iter().map(Vec::len).sum::<usize>() / set.versions.len();
    let what = format!(
        "{from}: {} versions of {:.0} KB on average, every one different from the one before \
         ({same} of {pairs} consecutive pairs were identical and were dropped)",
        set.versions.len(),
        avg as f64 / 1000.0
    );
    (set.versions, what)
}

fn usage() -> ! {
    eprintln!(
        "usage: railproxy-wanbench [--corpus DIR] [--only WORD|WORD] (words: a link's name, \"loopback\", \"start\")"
    );
    std::process::exit(2)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (mut corpus, mut only): (Option<std::path::PathBuf>, Vec<String>) = (None, Vec::new());
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--corpus" => corpus = Some(args.next().unwrap_or_else(|| usage()).into()),
            "--only" => only = args.next().unwrap_or_else(|| usage()).split('|').map(str::to_string).collect(),
            _ => usage(),
        }
    }
    let runs = |part: &str| only.is_empty() || only.iter().any(|w| part.contains(w.as_str()));
    if let Err(why) = Link::start(Profile::new(Duration::from_millis(10), 10.0, 0.0)).await {
        eprintln!("railproxy-wanbench: skipped: it needs root and /dev/net/tun for its emulated link ({why})");
        std::process::exit(77);
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    make_certs(dir.path());
    let sets = dir.path().join("sets");
    let (versions, page_from) = page_versions(corpus.as_deref().filter(|c| c.is_dir()), &sets);
    println!("# railproxy across an emulated long link\n");
    println!("Edges on this side, origins and the test backend beyond `integration/src/link.rs`'s link");
    println!("(TUN devices and a forwarder: one-way delay, bottleneck rate, tail-drop queue of one");
    println!("bandwidth-delay product, random loss). nginx two hops: keep-alive upstreams; gzip between");
    println!("them: the origin gzips (level 1), the edge gunzips. Kernel default congestion control");
    println!("(cubic) everywhere but the bbr row. One run; compare rows within it.\n");
    println!("Page: {page_from}. Each request asks for the page's next version (`/cycle/`), so every");
    println!("page railproxy sends is a delta against the one before; {SEQUENTIAL} in sequence, then");
    println!("{CLIENTS} clients × {PER_CLIENT} pages at once (each client its own page, fetched once");
    println!("before). Link bytes: IP bytes both ways per sequential page (TCP, TLS and HTTP included).");
    println!("After idle: one fetch after {} s without a request. 2 MB body: `/binary/` (not", IDLE.as_secs());
    println!("compressible), one fetch; 2 MB upload: one POST to a sink. Times to the last byte.");
    let mut goals = Vec::new();
    for wan in &LINKS {
        if !runs(wan.name) {
            continue;
        }
        let profile = Profile::new(Duration::from_millis(wan.rtt_ms), wan.mbit, wan.loss_percent);
        let mut paths = vec![Route::Railproxy, Route::Nginx, Route::NginxGzip];
        if wan.loss_percent > 0.0 {
            paths.insert(1, Route::RailproxyBbr);
        }
        eprintln!("{} …", wan.name);
        let mut running = Vec::new();
        for p in &paths {
            running.push(start(*p, profile, dir.path(), &sets).await);
        }
        let mut figures = Vec::new();
        for (p, run) in paths.iter().zip(&running) {
            eprintln!("  {}", p.name());
            figures.push(measure(run, &versions).await);
        }
        // Every path idle at once, then one fetch each.
        tokio::time::sleep(IDLE).await;
        for ((run, f), _) in running.iter().zip(figures.iter_mut()).zip(&paths) {
            let url = format!("http://{}/cycle/{PAGE}?seq", run.edge);
            f.after_idle = fetch(&client(), &url, None).await;
        }
        drop(running);
        println!("\n## {}\n", wan.name);
        println!(
            "| path | sequential p50 ms | p90 ms | {CLIENTS} clients pages/s | p50 ms | p99 ms | p99 in RTTs | link bytes/page | first fetch after {} s idle, ms | 2 MB body s | 2 MB upload s |",
            IDLE.as_secs()
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let rtt = wan.rtt_ms as f64 / 1000.0;
        for (p, f) in paths.iter().zip(&figures) {
            println!(
                "| {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.1} | {:.0} | {:.0} | {:.2} | {:.2} |",
                p.name(),
                quantile(&f.sequential, 0.5) * 1e3,
                quantile(&f.sequential, 0.9) * 1e3,
                f.clients_rate,
                quantile(&f.clients, 0.5) * 1e3,
                quantile(&f.clients, 0.99) * 1e3,
                quantile(&f.clients, 0.99) / rtt,
                f.link_bytes,
                f.after_idle * 1e3,
                f.download,
                f.upload,
            );
        }
        let rp = &figures[0];
        let p50 = quantile(&rp.sequential, 0.5);
        let ok = p50 <= rtt + 0.015;
        goals.push(format!(
            "- {}: railproxy's p50 for the page {:.0} ms (goal ≤ RTT + 15 ms = {:.0} ms: {})",
            wan.name,
            p50 * 1e3,
            (rtt + 0.015) * 1e3,
            if ok { "met" } else { "NOT met" }
        ));
        if wan.loss_percent > 0.0 {
            for (p, f) in
                paths.iter().zip(&figures).filter(|(p, _)| matches!(p, Route::Railproxy | Route::RailproxyBbr))
            {
                let p99 = quantile(&f.clients, 0.99) / rtt;
                goals.push(format!(
                    "- {}, {CLIENTS} clients, {}: p99 {p99:.1} RTT (goal ≤ 2.5 RTT: {})",
                    wan.name,
                    p.name(),
                    if p99 <= 2.5 { "met" } else { "NOT met" }
                ));
            }
        }
    }
    if !goals.is_empty() {
        println!("\n## Goals\n");
        for g in &goals {
            println!("{g}");
        }
    }
    if runs("loopback") {
        loopback_sections(dir.path()).await;
    }
    if runs("start") {
        let (errors, secs) = startup_errors(dir.path(), &sets).await;
        println!("\n## Start-up at 700 ms RTT\n");
        println!("railproxy, 20 sequential requests right after both processes started: {errors} errors, {secs:.1} s.");
    }
    println!("\nTotal: {:.0} s.", started.elapsed().as_secs_f64());
}

async fn loopback_sections(dir: &Path) {
    println!(
        "\n## On loopback: one-byte-chunk uploads beside GETs (5 s; 2 clients upload 400 one-byte chunks, 4 fetch 2 KB)\n"
    );
    println!(
        "| path | GETs answered 200 | GETs failed | share 200 | uploads echoed | uploads failed |\n|---|---:|---:|---:|---:|---:|"
    );
    for p in [Route::Railproxy, Route::Nginx] {
        let f = flood(p, dir).await;
        let share = 100.0 * f.gets as f64 / (f.gets + f.gets_failed).max(1) as f64;
        println!(
            "| {} | {} | {} | {share:.2} % | {} | {} |",
            p.name(),
            f.gets,
            f.gets_failed,
            f.uploads,
            f.uploads_failed
        );
    }
    println!("\n## On loopback: slowhttptest -B (200 clients declaring 8 KB bodies, a few bytes every 5 s, 15 s)\n");
    println!(
        "| path | client connections at the edge, at most | backend connections at most | other clients' GETs answered 200 |\n|---|---:|---:|---:|"
    );
    for p in [Route::Railproxy, Route::Nginx] {
        let (peak, clients, answered, sent) = slow_bodies(p, dir).await;
        println!("| {} | {clients} | {peak} | {answered} of {sent} |", p.name());
    }
}

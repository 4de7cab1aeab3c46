//! `railproxy-wanbench`: railproxy beside nginx two hops (plain, and gzip between the hops) across
//! the emulated long link of `integration::link`, one run, side by side. The edges (railproxy's
//! and nginx's) run on this side of the link, origins and the test backend on the far side, so
//! only what one path sends between its hops crosses the link.
//!
//! Prints, per path: a 2 MB upload (and its echo) at 150 ms RTT / 50 Mbit/s; 16 clients fetching
//! 200 KB bodies that are not delta-coded at 150 ms / 10 Mbit/s / 0.5 % loss, with every
//! connection across the link using cubic and then bbr (the link's routes say which, for every
//! path alike);
//! for railproxy, requests answered in error right after start at 700 ms RTT; and, on loopback,
//! GETs answered beside a flood of one-byte-chunk uploads, and the backend connections that
//! slowhttptest's slow bodies hold. Needs root.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use integration::bench::{NginxRole, nginx_conf, start_listening};
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
    Nginx,
    NginxGzip,
}

impl Route {
    const ALL: [Route; 3] = [Route::Railproxy, Route::Nginx, Route::NginxGzip];

    fn name(self) -> &'static str {
        match self {
            Route::Railproxy => "railproxy edge → tunnel → railproxy origin",
            Route::Nginx => "nginx edge → nginx origin",
            Route::NginxGzip => "nginx edge → nginx origin, gzip between",
        }
    }
}

/// One path running across one link: where clients connect, and what to stop.
struct Running {
    edge: SocketAddr,
    // Dropped first: the processes, then the backend, then the link.
    _procs: Vec<Proc>,
    _backend: Backend,
    link: Link,
}

async fn start(path: Route, profile: Profile, dir: &Path) -> Running {
    start_with(path, profile, dir, None).await.expect("the kernel's default congestion control")
}

/// `start`, with every connection across the link using `algorithm` (set before anything
/// connects); `None` where this machine refuses it.
async fn start_with(path: Route, profile: Profile, dir: &Path, algorithm: Option<&str>) -> Option<Running> {
    let link = Link::start(profile).await.unwrap_or_else(|why| {
        eprintln!("railproxy-wanbench needs an emulated link, which this machine cannot make: {why}");
        std::process::exit(2);
    });
    if let Some(Err(e)) = algorithm.map(|a| link.congestion_control(a)) {
        eprintln!("congestion control {algorithm:?} not set: {e}");
        return None;
    }
    let backend = Backend::start_with(dir, "backend", link.command(&bin("railproxy-testbackend")));
    let origin = SocketAddr::from((link.far, free_port()));
    let edge = free_loopback();
    let procs = match path {
        Route::Railproxy => {
            let knobs = Knobs::default();
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
    Some(Running { edge, _procs: procs, _backend: backend, link })
}

/// nginx in the foreground, on the far side of `link` when given.
fn nginx(dir: &Path, name: &str, conf: &str, listen: SocketAddr, link: Option<&Link>) -> Proc {
    let file = dir.join(format!("{name}.conf"));
    std::fs::write(&file, conf).expect("write nginx conf");
    let mut cmd = match link {
        Some(l) => l.command(Path::new("/usr/sbin/nginx")),
        None => Command::new("nginx"),
    };
    cmd.arg("-p").arg(dir).arg("-c").arg(&file).args(["-g", "daemon off;"]);
    start_listening(dir, name, cmd, listen)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds for a 2 MB POST and its echo, median of three.
async fn upload(path: Route, dir: &Path) -> f64 {
    let run = start(path, Profile::new(Duration::from_millis(150), 50.0, 0.0), dir).await;
    let body = Bytes::from((0..2_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect::<Vec<_>>());
    let http = Http::h1();
    let url = format!("http://{}/echo", run.edge);
    // A first request opens the connections every path keeps.
    let _ = http.get(&format!("http://{}/text/1000", run.edge), &[]).await;
    let mut times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let r = http.send(Method::POST, &url, &[], body.clone()).await.expect("upload");
        assert!(r.status == 200 && r.body == body, "{}: {} and not the body's echo", path.name(), r.status);
        times.push(started.elapsed().as_secs_f64());
    }
    median(times)
}

/// Pages per second and p50 / p99 seconds for 16 clients fetching 4 × 200 KB each.
async fn sixteen(path: Route, algorithm: &str, dir: &Path) -> Option<(f64, f64, f64, u64)> {
    let run = start_with(path, Profile::new(Duration::from_millis(150), 10.0, 0.5), dir, Some(algorithm)).await?;
    let url = format!("http://{}/binary/200000", run.edge);
    let expected = Http::h1().get(&url, &[]).await.expect("first fetch").body;
    assert_eq!(expected.len(), 200_000);
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..16 {
        let (url, expected) = (url.clone(), expected.clone());
        clients.push(tokio::spawn(async move {
            let http = Http::h1();
            let mut times = Vec::new();
            for _ in 0..4 {
                let t = Instant::now();
                let r = http.get(&url, &[]).await.expect("fetch");
                assert!(r.status == 200 && r.body == expected, "other bytes under loss");
                times.push(t.elapsed().as_secs_f64());
            }
            times
        }));
    }
    let mut times = Vec::new();
    for c in clients {
        times.extend(c.await.expect("client"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    let p = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    let drops = run.link.drops.loss.load(std::sync::atomic::Ordering::Relaxed);
    Some((times.len() as f64 / elapsed, p(0.5), p(0.99), drops))
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
async fn startup_errors(dir: &Path) -> (usize, f64) {
    let run = start(Route::Railproxy, Profile::new(Duration::from_millis(700), 50.0, 0.0), dir).await;
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    make_certs(dir.path());
    println!("# railproxy across an emulated long link\n");
    println!("Edges on this side, origins and the test backend beyond `integration/src/link.rs`'s link");
    println!("(TUN devices and a forwarder: one-way delay, bottleneck rate, tail-drop queue of one");
    println!("bandwidth-delay product, random loss). nginx two hops: keep-alive upstreams; gzip between");
    println!("them: the origin gzips (level 1), the edge gunzips. One run; compare rows within it.\n");
    println!("## A 2 MB upload and its echo, 150 ms RTT, 50 Mbit/s (median of 3)\n");
    println!("| path | seconds | vs nginx |\n|---|---:|---:|");
    let mut up = Vec::new();
    for p in Route::ALL {
        up.push((p, upload(p, dir.path()).await));
    }
    let nginx = up.iter().find(|(p, _)| *p == Route::Nginx).map_or(1.0, |(_, s)| *s);
    for (p, s) in &up {
        println!("| {} | {s:.2} | {:.2}× |", p.name(), s / nginx);
    }
    for algorithm in ["cubic", "bbr"] {
        println!(
            "\n## 16 clients × 4 pages of 200 KB (not delta-coded), 150 ms RTT, 10 Mbit/s, 0.5 % loss, {algorithm} on every connection across the link\n"
        );
        let mut rows = Vec::new();
        for p in Route::ALL {
            match sixteen(p, algorithm, dir.path()).await {
                Some(r) => rows.push((p, r)),
                None => break,
            }
        }
        if rows.is_empty() {
            println!("Not measured: this machine refuses {algorithm} on the link's routes (see the message above).");
            continue;
        }
        println!(
            "| path | pages/s | vs nginx | p50 s | p99 s | p99 in RTTs | packets lost |\n|---|---:|---:|---:|---:|---:|---:|"
        );
        let nginx = rows.iter().find(|(p, _)| *p == Route::Nginx).map_or(1.0, |(_, r)| r.0);
        for (p, (rate, p50, p99, lost)) in &rows {
            println!(
                "| {} | {rate:.2} | {:.2}× | {p50:.2} | {p99:.2} | {:.1} | {lost} |",
                p.name(),
                rate / nginx,
                p99 / 0.150
            );
        }
    }
    println!(
        "\n## On loopback: one-byte-chunk uploads beside GETs (5 s; 2 clients upload 400 one-byte chunks, 4 fetch 2 KB)\n"
    );
    println!(
        "| path | GETs answered 200 | GETs failed | share 200 | uploads echoed | uploads failed |\n|---|---:|---:|---:|---:|---:|"
    );
    for p in [Route::Railproxy, Route::Nginx] {
        let f = flood(p, dir.path()).await;
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
        let (peak, clients, answered, sent) = slow_bodies(p, dir.path()).await;
        println!("| {} | {clients} | {peak} | {answered} of {sent} |", p.name());
    }
    let (errors, secs) = startup_errors(dir.path()).await;
    println!("\n## Start-up at 700 ms RTT\n");
    println!("railproxy, 20 sequential requests right after both processes started: {errors} errors, {secs:.1} s.");
    println!("\nTotal: {:.0} s.", started.elapsed().as_secs_f64());
}

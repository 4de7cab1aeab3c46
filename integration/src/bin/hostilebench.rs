//! `make bench-hostile`: each attack of the "one client never hurts another" family (issue 29)
//! against railproxy (edge → origin → backend) and against nginx in front of the same backend,
//! from one run, with bystanders fetching a page throughout; with `--before BIN`, also against an
//! earlier railproxy build, so that a fix is shown beside what it fixed. Then memory: resident
//! size of each proxy fresh, holding 5,000 kept-alive client connections, and after they left.
//!
//!   railproxy-hostilebench [--before PATH] [--only WORD]
//!
//! Prints markdown tables. Loopback only; every process it starts is stopped when it ends.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use integration::hostile::{
    Bystanders, Tally, burst, memory, naive, nginx, rapid_reset, slow_bodies, stray, targets, upgrades,
};
use integration::process::{Backend, bin, free_loopback};
use integration::recorder::Recorder;
use integration::{Http, Knobs, Proc, Stack};

/// What stands in front of the backend.
enum Front {
    Railproxy(Box<Stack>),
    Nginx { proc: Proc, h1: SocketAddr, h2: SocketAddr },
}

impl Front {
    fn addr(&self) -> SocketAddr {
        match self {
            Front::Railproxy(s) => s.edge_addr,
            Front::Nginx { h1, .. } => *h1,
        }
    }

    /// Where HTTP/2 clients (prior knowledge) connect.
    fn h2_addr(&self) -> SocketAddr {
        match self {
            Front::Railproxy(s) => s.edge_addr,
            Front::Nginx { h2, .. } => *h2,
        }
    }

    /// The proxy processes, edge first (nginx: its master, whose worker counts with it).
    fn pids(&self) -> Vec<u32> {
        match self {
            Front::Railproxy(s) => std::iter::once(s.edge.pid())
                .chain(s.origins.iter().filter_map(|o| o.proc.as_ref()).map(Proc::pid))
                .collect(),
            Front::Nginx { proc, .. } => vec![proc.pid()],
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    fn h2_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.h2_addr())
    }
}

/// The fronts of one comparison, by name.
#[derive(Clone)]
struct Sides {
    before: Option<PathBuf>,
}

impl Sides {
    fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.before.is_some() {
            v.push("railproxy before");
        }
        v.extend(["railproxy", "nginx"]);
        v
    }

    /// The front called `name` in front of `backend` (nginx with `proxy_cache` when `cache`;
    /// railproxy's edge cache is on as it ships). A railproxy name may add a `limits` setting
    /// after a comma (`railproxy, get_bodies: forward`).
    async fn start(&self, name: &str, dir: &Path, backend: SocketAddr, cache: bool) -> Front {
        match name {
            "nginx" => {
                let (h1, h2) = (free_loopback(), free_loopback());
                let n = format!("nginx-{}", h1.port());
                Front::Nginx { proc: nginx::start(dir, &n, h1, h2, backend, cache), h1, h2 }
            }
            _ => {
                let binary = if name == "railproxy before" { self.before.clone() } else { Some(bin("railproxy")) };
                let edge_extra = match name.split_once(", ") {
                    Some((_, setting)) => format!("limits: {{{setting}}}\n"),
                    None => String::new(),
                };
                let knobs = Knobs { backend_override: Some(backend), binary, edge_extra, ..Knobs::default() };
                Front::Railproxy(Box::new(Stack::start(knobs).await))
            }
        }
    }
}

fn pct(t: &Tally) -> String {
    format!("{:.1} % of {}", t.percent_ok(), t.total())
}

fn header(title: &str, columns: &[&str]) {
    println!("\n### {title}\n");
    println!("| | {} |", columns.join(" | "));
    println!("|---|{}", "---:|".repeat(columns.len()));
}

fn row(name: &str, cells: &[String]) {
    println!("| {name} | {} |", cells.join(" | "));
}

/// Bystanders on `front`'s `/text/2000` (three HTTP/1.1 clients, one HTTP/2): during `attack`,
/// then for `after`.
async fn beside<F: std::future::Future>(front: &Front, attack: F, after: Duration) -> (F::Output, Vec<Tally>) {
    let bystanders = Bystanders::on_ports(&front.url("/text/2000"), &front.h2_url("/text/2000"), 3, 1).await;
    let out = attack.await;
    bystanders.next_phase();
    tokio::time::sleep(after).await;
    (out, bystanders.stop().await)
}

async fn rapid_reset_section(sides: &Sides, dir: &Path, backend: &Backend) {
    header(
        "1. HTTP/2 rapid reset, 4 connections at once for 10 s (2 reset with the request, 2 a batch 2 ms later)",
        &[
            "streams sent",
            "bystanders during",
            "bystanders after",
            "backend requests for reset streams",
            "backend connections opened",
        ],
    );
    for name in sides.names() {
        let front = sides.start(name, dir, backend.addr, false).await;
        let (before_hits, before_conns) = (backend.hits("0/reset").await, connections(backend).await);
        let h2 = front.h2_addr();
        let authority = h2.to_string();
        let length = Duration::from_secs(10);
        let attack = async {
            let (a, b) = tokio::join!(
                rapid_reset::run(h2, &authority, "/cache/0/reset", 2, length, rapid_reset::Shape::Together),
                rapid_reset::run(h2, &authority, "/cache/0/reset", 2, length, rapid_reset::Shape::Later),
            );
            a.streams + b.streams
        };
        let (streams, t) = beside(&front, attack, Duration::from_secs(3)).await;
        let hits = backend.hits("0/reset").await - before_hits;
        let conns = connections(backend).await - before_conns;
        row(name, &[streams.to_string(), pct(&t[0]), pct(&t[1]), hits.to_string(), conns.to_string()]);
    }
}

async fn connections(backend: &Backend) -> u64 {
    let r = Http::h1().get(&format!("http://{}/connections", backend.addr), &[]).await.expect("backend answers");
    String::from_utf8_lossy(&r.body).trim().parse().unwrap_or(0)
}

async fn upgrades_section(sides: &Sides, dir: &Path, backend: &Backend) {
    header(
        "2. 1,000 WebSocket handshakes abandoned before a slow backend's 101 (20 s)",
        &["bystanders during", "bystanders after", "proxy descriptors before", "right after", "1 s after"],
    );
    for name in sides.names() {
        let front = sides.start(name, dir, backend.addr, false).await;
        let fds = |f: &Front| memory_fds(&f.pids());
        let start = fds(&front);
        let host = front.addr().to_string();
        let attack = upgrades::abandon(front.addr(), &host, "/ws?delay=20000", 1000, 50, Duration::from_millis(200));
        let (_, t) = beside(&front, attack, Duration::from_millis(50)).await;
        let right_after = fds(&front);
        tokio::time::sleep(Duration::from_secs(1)).await;
        row(name, &[pct(&t[0]), pct(&t[1]), start.to_string(), right_after.to_string(), fds(&front).to_string()]);
    }
}

/// Descriptors `pids` and their children hold.
fn memory_fds(pids: &[u32]) -> usize {
    let mut all = pids.to_vec();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid =
            stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).and_then(|p| p.parse::<u32>().ok());
        if ppid.is_some_and(|p| pids.contains(&p)) {
            all.push(pid);
        }
    }
    all.iter().map(|p| upgrades::open_fds(*p)).sum()
}

async fn stray_section(sides: &Sides, dir: &Path) {
    header(
        "3. GETs with a request in their body, to a backend that never reads GET bodies (2 attackers, 4 bystanders on URLs of their own, 4 s)",
        &["GETs with a body", "refused", "bystanders right", "fetched again: wrong", "backend answered smuggled"],
    );
    let mut names = sides.names();
    names.insert(names.len() - 1, "railproxy, get_bodies: forward");
    for name in names {
        let backend = naive::NaiveBackend::start().await;
        let front = sides.start(name, dir, backend.addr, true).await;
        let run = stray::run(front.addr(), 2, 4, Duration::from_secs(4)).await;
        row(
            name,
            &[
                run.attacks.to_string(),
                run.attacks_refused.to_string(),
                pct(&run.victims),
                format!("{} of {}", run.refetched_wrong, run.refetched),
                backend.smuggled().to_string(),
            ],
        );
    }
}

async fn slow_bodies_section(sides: &Sides, dir: &Path) {
    header(
        "4. 300 slow uploads with odd Upgrade values or gRPC types on HTTP/1.1, and broken chunked bodies so dressed",
        &[
            "backend connections held",
            "uploads answered whole",
            "broken bodies reaching the backend",
            "bystanders during",
        ],
    );
    for name in sides.names() {
        let recorder = Recorder::start().await;
        let front = sides.start(name, dir, recorder.addr, false).await;
        let host = front.addr().to_string();
        let attack = async {
            let slow = slow_bodies::Slow::start(front.addr(), &host, "/slow", 300);
            tokio::time::sleep(Duration::from_secs(2)).await;
            let held = recorder.busy();
            let answers = slow.finish().await;
            for i in 0..slow_bodies::DISGUISES.len() {
                let [first, rest] = slow_bodies::broken_chunked(i, &host, "/broken");
                let gap = Duration::from_millis(300);
                integration::raw::exchange(front.addr(), &[&first, &rest], gap, Duration::from_secs(5)).await;
            }
            let whole = answers
                .iter()
                .enumerate()
                .filter(|(i, (s, b))| *s == Some(200) && *b == slow_bodies::body_of(*i))
                .count();
            (held, whole)
        };
        let bystanders = Bystanders::on_ports(&front.url("/bystander"), &front.h2_url("/bystander"), 3, 1).await;
        let (held, whole) = attack.await;
        let t = bystanders.stop().await;
        let broken = recorder.requests().iter().filter(|r| r.target == "/broken").count();
        row(name, &[held.to_string(), format!("{whole} of 300"), broken.to_string(), pct(&t[0])]);
    }
}

async fn websocket_section(sides: &Sides, dir: &Path, backend: &Backend) {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    header(
        "5. One WebSocket carrying 200 MB each way (1 MB messages, echoed)",
        &["MB echoed", "seconds", "bystanders during"],
    );
    for name in sides.names() {
        let front = sides.start(name, dir, backend.addr, false).await;
        let url = format!("ws://{}/ws", front.addr());
        let session = async {
            let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else { return (0, Duration::ZERO) };
            let message: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
            let (start, mut whole) = (std::time::Instant::now(), 0usize);
            for _ in 0..200 {
                if ws.send(Message::binary(message.clone())).await.is_err() {
                    break;
                }
                match tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
                    Ok(Some(Ok(Message::Binary(b)))) if b[..] == message[..] => whole += b.len(),
                    _ => break,
                }
            }
            (whole >> 20, start.elapsed())
        };
        let ((mb, took), t) = beside(&front, session, Duration::from_millis(100)).await;
        row(name, &[format!("{mb} of 200"), format!("{:.1}", took.as_secs_f64()), pct(&t[0])]);
    }
}

async fn burst_section(sides: &Sides, dir: &Path) {
    header(
        "6. 5,000 GETs at once from 5 addresses to the only backend, which accepts slowly (backlog 128, 200 µs per accept, none for the first 3 s; railproxy's backend.connect_timeout 1 s)",
        &["answered right", "outcomes", "bystanders during", "bystanders after"],
    );
    for name in sides.names() {
        let mut cmd = std::process::Command::new(bin("railproxy-testbackend"));
        cmd.args(["--backlog", "128", "--accept-pause-us", "200"]);
        let slow = Backend::start_with(dir, &format!("slow-{}", free_loopback().port()), cmd);
        let front = sides.start(name, dir, slow.addr, false).await;
        let page = Http::h1().get(&format!("http://{}/text/2000", slow.addr), &[]).await.expect("backend").body;
        let host = front.addr().to_string();
        let sources = burst::sources(5);
        burst::stall(slow.addr, 3000).await;
        let run = burst::run(front.addr(), &host, "/text/2000", 5000, &sources, &page, Duration::from_secs(60));
        let (run, t) = beside(&front, run, Duration::from_secs(2)).await;
        row(name, &[format!("{} of {}", run.ok, run.sent), format!("{:?}", run.statuses), pct(&t[0]), pct(&t[1])]);
    }
}

/// How long after a load memory is read again.
const AFTER: Duration = Duration::from_secs(5);

async fn memory_section(sides: &Sides, dir: &Path, backend: &Backend) {
    println!(
        "\n### 7. Memory: resident size fresh, holding 5,000 kept-alive client connections (each fetched a 2 KB page), \
         {AFTER:?} after they left, and {AFTER:?} after 5,000 GETs at once\n"
    );
    println!("| | process | fresh MB | 5,000 connections MB | per connection KB | after MB | after the burst MB |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    let mb = |b: u64| format!("{:.1}", b as f64 / 1048576.0);
    for name in sides.names() {
        let front = sides.start(name, dir, backend.addr, false).await;
        let _ = Http::h1().get(&front.url("/text/2000"), &[]).await;
        let pids = front.pids();
        let fresh: Vec<u64> = pids.iter().map(|p| memory::rss(&[*p])).collect();
        let held = memory::hold(front.addr(), "127.0.0.1", "/text/2000", 5000, &burst::sources(5), 500).await;
        let under: Vec<u64> = pids.iter().map(|p| memory::rss(&[*p])).collect();
        let n = held.connections.len();
        drop(held);
        tokio::time::sleep(AFTER).await;
        let after: Vec<u64> = pids.iter().map(|p| memory::rss(&[*p])).collect();
        let page = Http::h1().get(&front.url("/text/2000"), &[]).await.expect("page").body;
        burst::run(front.addr(), "127.0.0.1", "/text/2000", 5000, &burst::sources(5), &page, Duration::from_secs(60))
            .await;
        tokio::time::sleep(AFTER).await;
        let after_burst: Vec<u64> = pids.iter().map(|p| memory::rss(&[*p])).collect();
        for (i, _) in pids.iter().enumerate() {
            let process = match (&front, i) {
                (Front::Nginx { .. }, _) => "master + worker",
                (_, 0) => "edge",
                _ => "origin",
            };
            let per = (under[i].saturating_sub(fresh[i])) as f64 / 1024.0 / n.max(1) as f64;
            row(
                name,
                &[
                    process.to_string(),
                    mb(fresh[i]),
                    mb(under[i]),
                    format!("{per:.1}"),
                    mb(after[i]),
                    mb(after_burst[i]),
                ],
            );
        }
    }
}

async fn targets_section(sides: &Sides, dir: &Path, backend: &Backend) {
    let cases = targets::refused("127.0.0.1");
    header(
        &format!("8. {} request targets nginx refuses (asterisk, authority-form, ftp://, NUL, …)", cases.len()),
        &["refused with 400", "answered otherwise", "reached the backend"],
    );
    for name in sides.names() {
        let front = sides.start(name, dir, backend.addr, false).await;
        let before = backend.hits("60/target").await;
        let (mut refused, mut other) = (0, Vec::new());
        for (what, raw) in &cases {
            let a = integration::raw::exchange(front.addr(), &[raw], Duration::ZERO, Duration::from_secs(5)).await;
            if a.status == Some(400) {
                refused += 1;
            } else {
                other.push(format!("{what}: {:?}", a.status));
            }
        }
        let reached = backend.hits("60/target").await - before;
        row(name, &[format!("{refused} of {}", cases.len()), other.join("; "), reached.to_string()]);
    }
}

async fn credentials_section(sides: &Sides, dir: &Path, backend: &Backend) {
    header(
        "9. A `public, max-age` page fetched with a cookie, then by others: whose page each got",
        &["alice (cookie)", "anonymous", "bob (cookie)", "Authorization", "pages not the client's own"],
    );
    for name in sides.names() {
        let front = sides.start(name, dir, backend.addr, true).await;
        let url = front.url("/personal/generated-10k");
        let public = ("x-cc", "public, max-age=600");
        let mut cells = Vec::new();
        let mut wrong = 0;
        for (mine, headers) in [
            ("session=alice", vec![public, ("cookie", "session=alice")]),
            ("anonymous", vec![public]),
            ("session=bob", vec![public, ("cookie", "session=bob")]),
            ("anonymous", vec![public, ("authorization", "Bearer carol")]),
        ] {
            let r = Http::h1().get(&url, &headers).await.expect("answer");
            let body = String::from_utf8_lossy(&r.body).to_string();
            let who = body.rsplit("<!-- for ").next().and_then(|t| t.split(" -->").next()).unwrap_or("?").to_string();
            wrong += usize::from(who != mine);
            cells.push(who);
        }
        cells.push(wrong.to_string());
        row(name, &cells);
    }
}

fn usage() -> ! {
    eprintln!("usage: railproxy-hostilebench [--before PATH] [--only WORD]");
    std::process::exit(2)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    integration::raise_open_files_limit();
    let (mut before, mut only) = (None, None::<String>);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--before" => before = Some(PathBuf::from(args.next().unwrap_or_else(|| usage()))),
            "--only" => only = Some(args.next().unwrap_or_else(|| usage())),
            _ => usage(),
        }
    }
    if std::process::Command::new("nginx").arg("-v").output().is_err() {
        eprintln!("railproxy-hostilebench: nginx is missing (make bench-hostile installs it)");
        std::process::exit(69);
    }
    let sides = Sides { before: before.clone() };
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = Backend::start(dir.path(), "backend", None);
    let nginx_version = std::process::Command::new("nginx")
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_default();
    println!("# One client never hurts another: railproxy beside nginx\n");
    println!("railproxy: {}", bin("railproxy").display());
    if let Some(b) = &before {
        println!("railproxy before: {}", b.display());
    }
    println!(
        "{nginx_version}, one worker, in front of the same backend (proxy_cache in sections 3 and 9 only); bystanders: 3 HTTP/1.1 clients and 1 HTTP/2 client fetching a 2 KB page every 5 ms (their requests counted during the attack and after it)."
    );
    let run = |section: &str| only.as_deref().is_none_or(|w| section.contains(w));
    let d = dir.path();
    if run("rapid reset") {
        rapid_reset_section(&sides, d, &backend).await;
    }
    if run("upgrades") {
        upgrades_section(&sides, d, &backend).await;
    }
    if run("stray") {
        stray_section(&sides, d).await;
    }
    if run("slow bodies") {
        slow_bodies_section(&sides, d).await;
    }
    if run("websocket") {
        websocket_section(&sides, d, &backend).await;
    }
    if run("burst") {
        burst_section(&sides, d).await;
    }
    if run("memory") {
        memory_section(&sides, d, &backend).await;
    }
    if run("targets") {
        targets_section(&sides, d, &backend).await;
    }
    if run("credentials") {
        credentials_section(&sides, d, &backend).await;
    }
}

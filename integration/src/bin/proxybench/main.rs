//! `make bench`: railproxy beside nginx on this machine, with the same backend and pages, in one
//! run. Servers (backend and proxies) are pinned to CPU 0 and wrk to CPU 1 for every row; each
//! row starts its own proxy processes.
//!
//!   railproxy-proxybench [--corpus DIR] [--seconds N] [--connections N] [--rounds N] [--only A|B]
//!
//! `--only` runs just the parts whose name contains one of the `|`-separated words: "codec",
//! "memory", "streams", "browsers", or part of a row's name after its page size, such as "gzip" or
//! "10 KB railproxy edge" (e.g. to profile one row).
//!
//! Rows are measured in rounds, each round running every row once with fresh processes, and the
//! median of the rounds is shown: noise from other tenants of a shared machine then falls on all
//! rows alike instead of on whichever row was running.

mod browsers;
mod streams;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use delta::corpus::{self, VersionSet};
use delta::testing;
use integration::bench::{self, Load, NginxRole, RefHop, Requests};
use integration::process::{Backend, Proc, bin, free_loopback};
use integration::stack::{Knobs, edge_yaml, make_certs, origin_yaml, start_proxy_pinned};
use integration::{Http, Metrics};

const SERVER_CPU: &str = "0";
const LOAD_CPU: &str = "1";
/// Latency is measured with one request at a time: the time a request takes, without queueing.
const LATENCY_CONNECTIONS: u32 = 1;

struct Opts {
    corpus: Option<PathBuf>,
    seconds: u32,
    connections: u32,
    /// Every row is measured this many times, interleaved with the others; medians are shown.
    rounds: u32,
    /// Substrings of the parts to run; empty runs everything.
    only: Vec<String>,
}

impl Opts {
    fn runs(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|w| part.contains(w.as_str()))
    }
}

/// The two page sizes, as the tables label them.
const SMALL: &str = "10 KB";
const LARGE: &str = "100 KB";

/// The rows the Targets and the reference compare, by name.
const DIRECT: &str = "backend directly";
const NGINX_PLAIN: &str = "nginx edge → nginx origin";
const NGINX_GZIP: &str = "nginx edge → nginx origin, gzip between";
const RAILPROXY: &str = "railproxy edge → tunnel → railproxy origin";
const DELTAS_OFF: &str = "railproxy, deltas off (origin `max_body: 1K`)";
const DIAL_OUT: &str = "railproxy, as above, the origin dialling out (`tunnel.dial`)";
const PINGORA_H2C: &str = "Pingora alone, two hops over h2c (no hooks)";
const PINGORA_TLS: &str = "Pingora alone, two hops over TLS 1.3 h2 (no hooks)";
const NGINX_HITS: &str = "nginx proxy_cache, hits";
const RAILPROXY_HITS: &str = "railproxy edge cache, hits";
const PINGORA_HITS: &str = "Pingora alone, its memory cache, hits (no hooks)";

/// One measured row.
struct Row {
    name: String,
    load: Load,
    latency: Load,
    cpu_us: Option<f64>,
    hop_bytes: Option<f64>,
    /// railproxy: the share of requests whose page crossed as the unchanged frame.
    unchanged: Option<f64>,
}

/// The realistic workload: this many URLs, Zipf popularity of this exponent, each page turning
/// to its next version every 5 s (the test backend's `/live/N`).
const LIVE_URLS: u32 = 200;
const LIVE_ZIPF: f64 = 1.0;

struct Bench {
    opts: Opts,
    dir: tempfile::TempDir,
    backend: Backend,
    rt: tokio::runtime::Runtime,
}

impl Bench {
    /// Runs throughput then latency load against `url`, measuring the CPU of `pids`. Dynamic
    /// URLs are spread over as many pages as connections (`?page=N`), each changing on every
    /// request to it, so that each page's previous version is what the edge holds; `/live` is
    /// the realistic workload's site (`URL/N`, Zipf).
    fn measure(&self, name: &str, url: &str, pids: &[u32]) -> (Load, Load, Option<f64>) {
        let pages = if url.contains("/cycle/") {
            Requests::Pages(self.opts.connections)
        } else if url.ends_with("/live") {
            Requests::Zipf { urls: LIVE_URLS, s: LIVE_ZIPF }
        } else {
            Requests::One
        };
        // Warm up connection pools, caches and the version stores.
        bench::wrk(url, self.opts.connections, 1, LOAD_CPU, pages);
        let cpu0 = bench::cpu_seconds(pids);
        let load = bench::wrk(url, self.opts.connections, self.opts.seconds, LOAD_CPU, pages);
        let cpu = bench::cpu_seconds(pids) - cpu0;
        let latency = bench::wrk(url, LATENCY_CONNECTIONS, (self.opts.seconds / 2).max(2), LOAD_CPU, pages);
        eprintln!("  {name:<44} {:>9.0} req/s  p99 {:.2} ms", load.rps, latency.p99_ms);
        let cpu_us = (!pids.is_empty() && load.requests > 0).then(|| cpu * 1e6 / load.requests as f64);
        (load, latency, cpu_us)
    }

    fn direct(&self, path: &str) -> Row {
        let (load, latency, _) = self.measure(DIRECT, &format!("http://{}{path}", self.backend.addr), &[]);
        Row { name: DIRECT.into(), load, latency, cpu_us: None, hop_bytes: None, unchanged: None }
    }

    fn nginx_one_hop(&self, path: &str, role: NginxRole, name: &str) -> Row {
        let listen = free_loopback();
        let conf = bench::nginx_conf(self.dir.path(), "nginx1", role, listen, self.backend.addr);
        let nginx = bench::start_nginx(self.dir.path(), "nginx1", &conf, listen, SERVER_CPU);
        let (load, latency, cpu_us) = self.measure(name, &format!("http://{listen}{path}"), &[nginx.pid()]);
        stop(nginx);
        Row { name: name.into(), load, latency, cpu_us, hop_bytes: None, unchanged: None }
    }

    fn nginx_two_hops(&self, path: &str, gzip: bool, name: &str) -> Row {
        let (edge_listen, origin_listen) = (free_loopback(), free_loopback());
        let (edge_role, origin_role) =
            if gzip { (NginxRole::GunzipEdge, NginxRole::GzipOrigin) } else { (NginxRole::Proxy, NginxRole::Proxy) };
        let origin_conf =
            bench::nginx_conf(self.dir.path(), "nginx-origin", origin_role, origin_listen, self.backend.addr);
        let edge_conf = bench::nginx_conf(self.dir.path(), "nginx-edge", edge_role, edge_listen, origin_listen);
        let log = self.dir.path().join("nginx-origin-access.log");
        let _ = std::fs::remove_file(&log);
        let origin = bench::start_nginx(self.dir.path(), "nginx-origin", &origin_conf, origin_listen, SERVER_CPU);
        let edge = bench::start_nginx(self.dir.path(), "nginx-edge", &edge_conf, edge_listen, SERVER_CPU);
        let (load, latency, cpu_us) =
            self.measure(name, &format!("http://{edge_listen}{path}"), &[edge.pid(), origin.pid()]);
        stop(edge);
        stop(origin);
        let (bytes, n) = bench::logged_bytes(&log);
        let hop_bytes = (n > 0).then(|| bytes as f64 / n as f64);
        Row { name: name.into(), load, latency, cpu_us, hop_bytes, unchanged: None }
    }

    /// Pingora alone, edge → origin over one pooled HTTP/2 connection (TLS 1.3 like the tunnel,
    /// or cleartext h2c like the reference), one worker thread each, no hooks.
    fn pingora_two_hops(&self, path: &str, tls: bool, name: &str) -> Row {
        let (edge_listen, origin_listen) = (free_loopback(), free_loopback());
        let certs = self.dir.path().join("certs");
        let tls = tls.then_some(certs.as_path());
        let start = |role: &str, listen: SocketAddr, upstream: SocketAddr, hop: RefHop| {
            let name = format!("pingora-{role}");
            bench::start_pingora_reference(self.dir.path(), &name, listen, upstream, hop, tls, Some(SERVER_CPU))
        };
        let origin = start("origin", origin_listen, self.backend.addr, RefHop::Http1);
        let edge = start("edge", edge_listen, origin_listen, RefHop::Http2);
        let (load, latency, cpu_us) =
            self.measure(name, &format!("http://{edge_listen}{path}"), &[edge.pid(), origin.pid()]);
        drop(edge);
        drop(origin);
        Row { name: name.into(), load, latency, cpu_us, hop_bytes: None, unchanged: None }
    }

    /// Pingora alone with its in-memory cache, one hop in front of the backend: what a cache hit
    /// costs in Pingora before railproxy's hooks.
    fn pingora_cache(&self, path: &str, name: &str) -> Row {
        let listen = free_loopback();
        let cache = bench::start_pingora_reference(
            self.dir.path(),
            "pingora-cache",
            listen,
            self.backend.addr,
            RefHop::Caching,
            None,
            Some(SERVER_CPU),
        );
        let (load, latency, cpu_us) = self.measure(name, &format!("http://{listen}{path}"), &[cache.pid()]);
        drop(cache);
        Row { name: name.into(), load, latency, cpu_us, hop_bytes: None, unchanged: None }
    }

    /// Starts origin and edge (one thread each, like one nginx worker each).
    fn railproxy(&self, knobs: &Knobs) -> (Proc, Proc, SocketAddr, SocketAddr, SocketAddr) {
        self.railproxy_on(knobs, SERVER_CPU, SERVER_CPU)
    }

    /// As [`Bench::railproxy`], the origin and the edge pinned to the given CPUs.
    fn railproxy_on(
        &self,
        knobs: &Knobs,
        origin_cpu: &str,
        edge_cpu: &str,
    ) -> (Proc, Proc, SocketAddr, SocketAddr, SocketAddr) {
        let dir = self.dir.path();
        let (o_listen, o_admin, e_listen, e_admin) =
            (free_loopback(), free_loopback(), free_loopback(), free_loopback());
        // Dialling out, `o_listen` is the edge's connector listener, which the origin dials.
        let oy = origin_yaml(dir, knobs, o_listen, o_admin, &[self.backend.addr], free_loopback());
        let ey = edge_yaml(dir, knobs, e_listen, e_admin, &[o_listen], self.backend.addr);
        self.rt.block_on(async {
            if knobs.dial_out {
                let edge =
                    start_proxy_pinned(dir, "rp-edge", "edge", &ey, e_admin, Some(edge_cpu)).await.expect("edge");
                let origin = start_proxy_pinned(dir, "rp-origin", "origin", &oy, o_admin, Some(origin_cpu))
                    .await
                    .expect("origin");
                let deadline = Instant::now() + Duration::from_secs(20);
                while Metrics::scrape(e_admin).await.sum("railproxy_dialout_lanes", &[]) < knobs.lanes as f64 {
                    assert!(Instant::now() < deadline, "the origin's lanes never reached the edge");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                return (origin, edge, e_listen, o_admin, e_admin);
            }
            let origin =
                start_proxy_pinned(dir, "rp-origin", "origin", &oy, o_admin, Some(origin_cpu)).await.expect("origin");
            let edge = start_proxy_pinned(dir, "rp-edge", "edge", &ey, e_admin, Some(edge_cpu)).await.expect("edge");
            (origin, edge, e_listen, o_admin, e_admin)
        })
    }

    fn railproxy_row(&self, path: &str, name: &str, hop_bytes: bool, knobs: &Knobs) -> Row {
        let (origin, edge, listen, o_admin, _) = self.railproxy(knobs);
        let before = self.rt.block_on(Metrics::scrape(o_admin));
        let (load, latency, cpu_us) =
            self.measure(name, &format!("http://{listen}{path}"), &[edge.pid(), origin.pid()]);
        let after = self.rt.block_on(Metrics::settled(o_admin));
        let wire = |m: &Metrics| m.sum("railproxy_delta_wire_bytes_total", &[("mode", "origin")]);
        let reqs = |m: &Metrics| m.sum("railproxy_requests_total", &[("mode", "origin")]);
        let same = |m: &Metrics| m.sum("railproxy_unchanged_total", &[("mode", "origin")]);
        let n = reqs(&after) - reqs(&before);
        let hop = (hop_bytes && n > 0.0).then(|| (wire(&after) - wire(&before)) / n);
        let unchanged = (n > 0.0).then(|| (same(&after) - same(&before)) / n);
        drop(edge);
        drop(origin);
        Row { name: name.into(), load, latency, cpu_us, hop_bytes: hop, unchanged }
    }
}

/// Proxies with one worker thread each, like one nginx worker each.
fn one_thread(effort: &str) -> Knobs {
    Knobs { threads: 1, effort: effort.into(), ..Knobs::default() }
}

/// A row's name and how to measure it once (fresh processes each time).
type RowFn<'a> = (&'static str, Box<dyn Fn(&str) -> Row + 'a>);

/// Each row measured `rounds` times, every round running every row once; the medians.
fn in_rounds(rounds: u32, rows: &[&RowFn<'_>]) -> Vec<Row> {
    if rows.is_empty() {
        return Vec::new();
    }
    let mut measured: Vec<Vec<Row>> = (0..rows.len()).map(|_| Vec::new()).collect();
    for round in 0..rounds {
        eprintln!(" round {}", round + 1);
        for (i, (name, row)) in rows.iter().enumerate() {
            measured[i].push(row(name));
        }
    }
    measured.iter().map(|r| median_row(r)).collect()
}

/// The row with each figure the median over rounds.
fn median_row(rounds: &[Row]) -> Row {
    let med = |f: &dyn Fn(&Row) -> f64| median(rounds.iter().map(f).collect());
    let opt = |f: &dyn Fn(&Row) -> Option<f64>| {
        let v: Vec<f64> = rounds.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| median(v))
    };
    Row {
        name: rounds[0].name.clone(),
        load: Load {
            requests: rounds.iter().map(|r| r.load.requests).sum(),
            rps: med(&|r| r.load.rps),
            p50_ms: f64::NAN,
            p99_ms: f64::NAN,
            errors: rounds.iter().map(|r| r.load.errors).sum(),
        },
        latency: Load {
            requests: 0,
            rps: 0.0,
            p50_ms: med(&|r| r.latency.p50_ms),
            p99_ms: med(&|r| r.latency.p99_ms),
            errors: rounds.iter().map(|r| r.latency.errors).sum(),
        },
        cpu_us: opt(&|r| r.cpu_us),
        hop_bytes: opt(&|r| r.hop_bytes),
        unchanged: opt(&|r| r.unchanged),
    }
}

fn stop(mut p: Proc) {
    // Graceful, so nginx flushes its access log.
    p.signal("QUIT");
    p.wait_exit(Duration::from_secs(5));
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.digits$}"))
}

fn print_rows(title: &str, rows: &[Row]) {
    println!("\n### {title}\n");
    print_table(rows, false);
}

/// The rows as a table; `unchanged`: with the share of pages that crossed as the unchanged frame.
fn print_table(rows: &[Row], unchanged: bool) {
    let extra = if unchanged { " crossed unchanged |" } else { "" };
    println!("| path | req/s | p50 ms | p99 ms | proxy CPU µs/req | bytes between hops/req |{extra} errors |");
    println!("|---|---:|---:|---:|---:|---:|{}---:|", if unchanged { "---:|" } else { "" });
    for r in rows {
        let share = r.unchanged.map_or_else(|| "–".into(), |u| format!("{:.1} %", u * 100.0));
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {} | {} |{} {} |",
            r.name,
            r.load.rps,
            r.latency.p50_ms,
            r.latency.p99_ms,
            fmt_opt(r.cpu_us, 1),
            fmt_opt(r.hop_bytes, 0),
            if unchanged { format!(" {share} |") } else { String::new() },
            r.load.errors + r.latency.errors
        );
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

/// Page sets for the proxy rows: ~10 KB and ~100 KB pages that change a little every version,
/// every version different from the one before (see `bench::honest`), and what they are.
fn page_sets(corpus: Option<&Path>) -> (VersionSet, VersionSet, String) {
    let (small, large, from) = raw_page_sets(corpus);
    let (small, s_same, s_pairs) = bench::honest(small);
    let (large, l_same, l_pairs) = bench::honest(large);
    let what = format!(
        "{from}; versions equal to the one before them dropped ({s_same} of {s_pairs} consecutive pairs at 10 KB, \
         {l_same} of {l_pairs} at 100 KB, counting the last with the first): {} and {} versions, every \
         consecutive pair different",
        small.versions.len(),
        large.versions.len()
    );
    (small, large, what)
}

fn raw_page_sets(corpus: Option<&Path>) -> (VersionSet, VersionSet, String) {
    if let Some(dir) = corpus {
        let sets = corpus::load_version_sets(dir).expect("corpus");
        let find = |name: &str| sets.iter().find(|s| s.name == name).cloned();
        if let (Some(small), Some(large)) = (find("christiandailyreporter-home"), find("volksstimme-home")) {
            // The 190 KB front page cut to its first 100 KB: its changes are spread through it.
            let large = VersionSet {
                name: "page-100k".into(),
                versions: large
                    .versions
                    .into_iter()
                    .map(|mut v| {
                        v.truncate(100_000);
                        v
                    })
                    .collect(),
            };
            let small = VersionSet { name: "page-10k".into(), versions: small.versions };
            let what =
                format!("{}: christiandailyreporter-home (10 KB), volksstimme-home cut to 100 KB", dir.display());
            return (small, large, what);
        }
    }
    let g = testing::generated_sets();
    (
        VersionSet { name: "page-10k".into(), versions: g[0].versions.clone() },
        VersionSet { name: "page-100k".into(), versions: g[1].versions.clone() },
        "generated page versions (no corpus)".into(),
    )
}

fn write_set(dir: &Path, set: &VersionSet) {
    let d = dir.join(&set.name);
    std::fs::create_dir_all(&d).unwrap();
    for (i, v) in set.versions.iter().enumerate() {
        std::fs::write(d.join(format!("{i:03}.html")), v).unwrap();
    }
}

/// Times `cmd` (best of 3), returning its stdout.
fn timed(mut make: impl FnMut() -> Command) -> (Vec<u8>, f64) {
    let mut best = f64::MAX;
    let mut out = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let o = make().output().expect("run tool");
        best = best.min(start.elapsed().as_secs_f64());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        out = o.stdout;
    }
    (out, best)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// zstd --patch-from and gzip -6, the Debian command-line tools, on every pair.
fn codec_cli(dir: &Path, sets: &[VersionSet]) -> Vec<(String, f64, f64, f64)> {
    let files = dir.join("codec");
    std::fs::create_dir_all(&files).unwrap();
    let mut results = Vec::new();
    for tool in ["zstd -3 --patch-from", "gzip -6"] {
        let (mut raw, mut sent, mut enc, mut dec) = (0u64, 0u64, Vec::new(), Vec::new());
        for set in sets {
            for (i, pair) in set.versions.windows(2).enumerate() {
                let (old, new) = (files.join("old"), files.join("new"));
                std::fs::write(&old, &pair[0]).unwrap();
                std::fs::write(&new, &pair[1]).unwrap();
                let pin = |args: &[&str]| {
                    let mut c = Command::new("taskset");
                    c.arg("-c").arg(LOAD_CPU).args(args);
                    c
                };
                let (o, n) = (old.to_str().unwrap().to_string(), new.to_str().unwrap().to_string());
                let (encoded, t_enc) = if tool.starts_with("zstd") {
                    timed(|| pin(&["zstd", "-3", "-q", "-c", &format!("--patch-from={o}"), &n]))
                } else {
                    timed(|| pin(&["gzip", "-6", "-c", &n]))
                };
                let enc_file = files.join(format!("enc-{i}"));
                std::fs::write(&enc_file, &encoded).unwrap();
                let e = enc_file.to_str().unwrap().to_string();
                let (decoded, t_dec) = if tool.starts_with("zstd") {
                    timed(|| pin(&["zstd", "-d", "-q", "-c", &format!("--patch-from={o}"), &e]))
                } else {
                    timed(|| pin(&["gzip", "-d", "-c", &e]))
                };
                assert!(decoded == pair[1], "{tool}: round trip failed");
                raw += pair[1].len() as u64;
                sent += encoded.len() as u64;
                enc.push(pair[1].len() as f64 / t_enc / 1e6);
                dec.push(pair[1].len() as f64 / t_dec / 1e6);
            }
        }
        results.push((tool.to_string(), 100.0 * sent as f64 / raw as f64, median(enc), median(dec)));
    }
    results
}

fn usage() -> ! {
    eprintln!("usage: railproxy-proxybench [--corpus DIR] [--seconds N] [--connections N] [--rounds N] [--only A|B]");
    std::process::exit(2)
}

fn main() {
    let mut opts = Opts { corpus: None, seconds: 5, connections: 32, rounds: 3, only: Vec::new() };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--corpus" => opts.corpus = Some(args.next().unwrap_or_else(|| usage()).into()),
            "--seconds" => opts.seconds = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage()),
            "--connections" => opts.connections = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage()),
            "--rounds" => {
                opts.rounds = args.next().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or_else(|| usage())
            }
            "--only" => {
                opts.only = args.next().unwrap_or_else(|| usage()).split('|').map(str::to_string).collect();
            }
            _ => usage(),
        }
    }
    for tool in ["wrk", "nginx", "taskset", "zstd", "gzip"] {
        if Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().map_or(true, |o| !o.status.success())
        {
            eprintln!("railproxy-proxybench: {tool} is missing (make bench installs it)");
            std::process::exit(69);
        }
    }
    let corpus = opts.corpus.clone().filter(|c| c.is_dir());
    let dir = tempfile::tempdir().expect("temp dir");
    let (small, large, pages_from) = page_sets(corpus.as_deref());
    let sets_dir = dir.path().join("sets");
    write_set(&sets_dir, &small);
    write_set(&sets_dir, &large);
    let live_from = write_live_sets(&sets_dir, corpus.as_deref());
    make_certs(dir.path());
    let backend = Backend::start_pinned(dir.path(), "backend", Some(&sets_dir), Some(SERVER_CPU));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let bench = Bench { opts, dir, backend, rt };
    let started = Instant::now();

    println!("# railproxy benchmark\n");
    println!(
        "One run on this machine ({}). Servers (backend, proxies) pinned to CPU {SERVER_CPU}, wrk to CPU {LOAD_CPU} \
         (`taskset`), for every row. Throughput: wrk, 1 thread, {} connections, {} s; latency: {LATENCY_CONNECTIONS} \
         connection, {} s. Each proxy runs one worker (nginx `worker_processes 1`, railproxy `threads: 1`). Every \
         row runs {} times in interleaved rounds with fresh processes; figures are medians. Pages: {pages_from}; \
         dynamic pages are {} pages (`?page=N`), each serving its next version on every request to it.",
        cpu_model(),
        bench.opts.connections,
        bench.opts.seconds,
        (bench.opts.seconds / 2).max(2),
        bench.opts.rounds,
        bench.opts.connections,
    );

    if bench.opts.runs("codec") {
        codec_section(&bench, corpus.as_deref());
    }

    // 2. Proxy paths.
    let mut summary = Vec::new();
    for (size, set) in [(SMALL, &small), (LARGE, &large)] {
        eprintln!("{size} page …");
        let dynamic = format!("/cycle/{}", set.name);
        let cacheable = format!("/cacheable/{}", set.name);
        let dynamic_rows: Vec<RowFn<'_>> = vec![
            (DIRECT, Box::new(|_| bench.direct(&dynamic))),
            ("nginx proxy_pass (one hop)", Box::new(|n| bench.nginx_one_hop(&dynamic, NginxRole::Proxy, n))),
            (NGINX_PLAIN, Box::new(|n| bench.nginx_two_hops(&dynamic, false, n))),
            (NGINX_GZIP, Box::new(|n| bench.nginx_two_hops(&dynamic, true, n))),
            (RAILPROXY, Box::new(|n| bench.railproxy_row(&dynamic, n, true, &one_thread("fast")))),
            (
                DIAL_OUT,
                Box::new(|n| bench.railproxy_row(&dynamic, n, true, &Knobs { dial_out: true, ..one_thread("fast") })),
            ),
            (
                "railproxy, as above, `delta.effort: small`",
                Box::new(|n| bench.railproxy_row(&dynamic, n, true, &one_thread("small"))),
            ),
            // What the tunnel costs without the codec: bodies over the origin's max_body cross
            // whole, neither hashed nor encoded nor decoded.
            (
                DELTAS_OFF,
                Box::new(|n| {
                    let knobs = Knobs { origin_max_body: "1K".into(), ..one_thread("fast") };
                    bench.railproxy_row(&dynamic, n, true, &knobs)
                }),
            ),
            // The reference, and the same over TLS as the tunnel runs: Pingora's own two
            // hops with nothing of railproxy's.
            (PINGORA_H2C, Box::new(|n| bench.pingora_two_hops(&dynamic, false, n))),
            (PINGORA_TLS, Box::new(|n| bench.pingora_two_hops(&dynamic, true, n))),
        ];
        let hit_rows: Vec<RowFn<'_>> = vec![
            (NGINX_HITS, Box::new(|n| bench.nginx_one_hop(&cacheable, NginxRole::Cache, n))),
            (RAILPROXY_HITS, Box::new(|n| bench.railproxy_row(&cacheable, n, false, &one_thread("fast")))),
            (PINGORA_HITS, Box::new(|n| bench.pingora_cache(&cacheable, n))),
        ];
        let measure_all = |rows: &[RowFn<'_>]| -> Vec<Row> {
            let rows: Vec<&RowFn<'_>> =
                rows.iter().filter(|(name, _)| bench.opts.runs(&format!("{size} {name}"))).collect();
            in_rounds(bench.opts.rounds, &rows)
        };
        let (all_rows, all_hits) = (dynamic_rows.len(), hit_rows.len());
        let rows = measure_all(&dynamic_rows);
        let hits = measure_all(&hit_rows);
        if !rows.is_empty() {
            print_rows(&format!("{size} dynamic page"), &rows);
        }
        if !hits.is_empty() {
            print_rows(&format!("{size} cacheable page, served from the edge cache"), &hits);
        }
        // The ratios need every row; a partial run (`--only`) prints its rows alone.
        if rows.len() == all_rows && hits.len() == all_hits {
            summary.push((size, rows, hits));
        }
    }

    if !summary.is_empty() {
        println!("\n## Targets (ratios within this run)\n");
    }
    for (size, rows, hits) in &summary {
        let [direct, plain, gzip, rp, floor, h2c, tls, dial_out] =
            [DIRECT, NGINX_PLAIN, NGINX_GZIP, RAILPROXY, DELTAS_OFF, PINGORA_H2C, PINGORA_TLS, DIAL_OUT]
                .map(|n| named(rows, n));
        let r_gzip = rp.load.rps / gzip.load.rps;
        let r_plain = rp.load.rps / plain.load.rps;
        let bytes = rp.hop_bytes.unwrap_or(f64::NAN) / gzip.hop_bytes.unwrap_or(f64::NAN);
        let added = rp.latency.p99_ms - direct.latency.p99_ms;
        let [nginx_hits, rp_hits, pingora_hits] = [NGINX_HITS, RAILPROXY_HITS, PINGORA_HITS].map(|n| named(hits, n));
        let r_cache = rp_hits.load.rps / nginx_hits.load.rps;
        let r_cpu = rp.cpu_us.unwrap_or(f64::NAN) / tls.cpu_us.unwrap_or(f64::NAN);
        // The targets of the long-link issue, by page size.
        let (want_gzip, want_cpu) = if *size == SMALL { (2.0, 1.35) } else { (3.0, 1.15) };
        println!("{size}:");
        println!(
            "- railproxy two hops vs nginx two hops with gzip: {r_gzip:.2}× req/s (target ≥ {want_gzip}×: {})",
            verdict(r_gzip >= want_gzip)
        );
        println!(
            "- railproxy's proxy CPU per request vs Pingora alone over TLS 1.3: {r_cpu:.2}× ({} against {} µs; \
             target ≤ {want_cpu}×: {})",
            fmt_opt(rp.cpu_us, 0),
            fmt_opt(tls.cpu_us, 0),
            verdict(r_cpu <= want_cpu)
        );
        println!(
            "- edge cache hits vs nginx proxy_cache hits: {r_cache:.2}× req/s (target ≥ 0.9×: {}); Pingora's own \
             memory cache without hooks: {:.2}× ({} µs CPU per hit against railproxy's {} and nginx's {})",
            verdict(r_cache >= 0.9),
            pingora_hits.load.rps / nginx_hits.load.rps,
            fmt_opt(pingora_hits.cpu_us, 1),
            fmt_opt(rp_hits.cpu_us, 1),
            fmt_opt(nginx_hits.cpu_us, 1)
        );
        let r_dial = dial_out.cpu_us.unwrap_or(f64::NAN) / rp.cpu_us.unwrap_or(f64::NAN);
        println!(
            "- the origin dialling out vs listening: {r_dial:.2}× CPU per request ({} against {} µs; target ≤ 1.10×: \
             {}), {:.2}× req/s",
            fmt_opt(dial_out.cpu_us, 0),
            fmt_opt(rp.cpu_us, 0),
            verdict(r_dial <= 1.10),
            dial_out.load.rps / rp.load.rps
        );
        println!("- railproxy two hops vs nginx two hops without compression: {r_plain:.2}× req/s");
        println!("- bytes between hops vs the gzip path: 1/{:.0}", 1.0 / bytes);
        println!("- p99 added over the backend directly: {added:.2} ms");
        println!(
            "- railproxy with deltas off (bodies cross whole): {:.2}× nginx gzip's req/s, {} µs CPU per request \
             against {} µs with deltas: what Pingora, TLS and HTTP/2 cost before any codec",
            floor.load.rps / gzip.load.rps,
            fmt_opt(floor.cpu_us, 0),
            fmt_opt(rp.cpu_us, 0)
        );
        println!(
            "- Pingora alone, two hops (no hooks, no codec): {:.2}× nginx gzip's req/s over h2c, {:.2}× over TLS 1.3 \
             ({} and {} µs CPU per request): the ratio before anything railproxy does",
            h2c.load.rps / gzip.load.rps,
            tls.load.rps / gzip.load.rps,
            fmt_opt(h2c.cpu_us, 0),
            fmt_opt(tls.cpu_us, 0)
        );
    }
    if !summary.is_empty() {
        reference_section(&summary);
    }

    if bench.opts.runs("realistic") {
        realistic_section(&bench, &live_from);
    }
    if bench.opts.runs("memory") {
        memory_section(&bench);
    }
    if bench.opts.runs("streams") {
        streams::section(&bench, &large.name);
    }
    if bench.opts.runs("browsers") {
        browsers::section(&bench, &large);
    }
    println!("\nTotal benchmark time: {:.0} s.", started.elapsed().as_secs_f64());
}

/// A row of a complete run (the Targets are printed only when every row ran).
fn named<'a>(rows: &'a [Row], name: &str) -> &'a Row {
    rows.iter().find(|r| r.name == name).unwrap_or_else(|| panic!("no row {name:?} in this run"))
}

/// The bench issue's reference figures (CPU per request, both hops, one core for the proxies)
/// beside this run's: (row, 10 KB µs, 100 KB µs).
const REFERENCE: [(&str, f64, f64); 3] =
    [(NGINX_PLAIN, 29.0, 58.0), (NGINX_GZIP, 111.0, 1056.0), (PINGORA_H2C, 57.0, 147.0)];

fn reference_section(summary: &[(&str, Vec<Row>, Vec<Row>)]) {
    println!("\n### The issue's reference beside this run (proxy CPU µs per request, both hops)\n");
    let sizes: Vec<&str> = summary.iter().map(|(size, _, _)| *size).collect();
    println!(
        "| path | {} |",
        sizes.iter().map(|s| format!("{s}: reference | {s}: this run")).collect::<Vec<_>>().join(" | ")
    );
    println!("|---|{}", "---:|---:|".repeat(sizes.len()));
    for (name, small, large) in REFERENCE {
        let cells: Vec<String> = summary
            .iter()
            .map(|(size, rows, _)| {
                let reference = if *size == SMALL { small } else { large };
                format!("{reference:.0} | {}", fmt_opt(named(rows, name).cpu_us, 0))
            })
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
}

/// 1. Codec: `railproxy delta bench` in process, the Debian CLI tools beside it.
fn codec_section(bench: &Bench, corpus: Option<&Path>) {
    let codec_sets = match corpus {
        Some(c) => corpus::load_version_sets(c).expect("corpus"),
        None => testing::generated_sets(),
    };
    eprintln!("codec …");
    let mut delta_bench = Command::new("taskset");
    delta_bench.args(["-c", LOAD_CPU]).arg(bin("railproxy")).args(["delta", "bench"]);
    match corpus {
        Some(c) => delta_bench.arg(c),
        None => {
            let g = bench.dir.path().join("generated");
            for s in &codec_sets {
                write_set(&g, s);
            }
            delta_bench.arg(g)
        }
    };
    let out = delta_bench.output().expect("railproxy delta bench");
    let table = String::from_utf8_lossy(&out.stdout);
    let total = table.lines().find(|l| l.starts_with("| total")).unwrap_or_default().to_string();
    let cells: Vec<&str> = total.split('|').map(str::trim).collect();
    println!(
        "\n## Codec: every consecutive pair ({} pairs)\n",
        codec_sets.iter().map(|s| s.versions.len().saturating_sub(1)).sum::<usize>()
    );
    println!("| method | % of raw sent | encode MB/s | decode MB/s |\n|---|---:|---:|---:|");
    // `railproxy delta bench` columns: dcz (effort small), dcz fast (effort fast), zstd -3, gzip -6.
    if cells.len() > 16 {
        println!(
            "| railproxy dcz, `delta.effort: small` (`railproxy delta bench`, in process) | {} | {} | {} |",
            cells[5], cells[6], cells[7]
        );
        println!(
            "| railproxy dcz, `delta.effort: fast` (the default; in process) | {} | {} | {} |",
            cells[9], cells[10], cells[11]
        );
        println!("| zstd -3 alone (in process) | {} | {} | {} |", cells[13], cells[14], cells[15]);
    }
    for (tool, pct, enc, dec) in codec_cli(bench.dir.path(), &codec_sets) {
        println!("| {tool} (Debian CLI, per file, process start included) | {pct:.3}% | {enc:.0} | {dec:.0} |");
    }
}

/// 3. Memory: RSS of edge and origin after 10,000 distinct URLs, against the store sizes.
fn memory_section(bench: &Bench) {
    eprintln!("memory …");
    // Cache off: these pages are uncacheable anyway; the figures are about the version stores.
    let knobs = Knobs { edge_store: "64M".into(), origin_store: "64M".into(), ..one_thread("fast") };
    let (origin, edge, listen, o_admin, e_admin) = bench.railproxy(&knobs);
    let rss0 = (bench::rss_bytes(edge.pid()), bench::rss_bytes(origin.pid()));
    let urls = 10_000u32;
    bench.rt.block_on(async {
        let http = Http::h1();
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..8u32 {
            let (http, base) = (http.clone(), format!("http://{listen}/tagged/page-100k"));
            tasks.spawn(async move {
                for i in (worker..urls).step_by(8) {
                    let r = http.get(&format!("{base}?u={i}"), &[]).await.expect("request");
                    assert_eq!(r.status, 200);
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    });
    let rss1 = (bench::rss_bytes(edge.pid()), bench::rss_bytes(origin.pid()));
    let (em, om) = bench.rt.block_on(async { (Metrics::scrape(e_admin).await, Metrics::scrape(o_admin).await) });
    let mib = |b: f64| b / (1024.0 * 1024.0);
    println!("\n## Memory after {urls} distinct URLs, each a distinct ~100 KB body\n");
    println!(
        "| process | store size configured | store bytes held | store entries | RSS before | RSS after |\n|---|---:|---:|---:|---:|---:|"
    );
    for (name, m, mode, (before, after)) in
        [("edge", &em, "edge", (rss0.0, rss1.0)), ("origin", &om, "origin", (rss0.1, rss1.1))]
    {
        println!(
            "| {name} | 64 MiB | {:.1} MiB | {:.0} | {:.1} MiB | {:.1} MiB |",
            mib(m.sum("railproxy_store_bytes", &[("mode", mode)])),
            m.sum("railproxy_store_entries", &[("mode", mode)]),
            mib(before as f64),
            mib(after as f64)
        );
    }
    drop(edge);
    drop(origin);
}

fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string());
    let cpus = info.lines().filter(|l| l.starts_with("processor")).count();
    format!("{cpus} × {}", model.unwrap_or_else(|| "unknown CPU".into()))
}

/// The realistic workload's site: every source of the corpus (else the generated sets) as a
/// `live-*` set of the backend, every version different from the one before. Returns what the
/// pages are.
fn write_live_sets(dir: &Path, corpus: Option<&Path>) -> String {
    let (sets, from) = match corpus {
        Some(c) => (corpus::load_version_sets(c).expect("corpus"), format!("the real pages of {}", c.display())),
        None => (testing::generated_sets().into_iter().take(2).collect(), "generated 10 KB and 100 KB pages".into()),
    };
    let mut described = Vec::new();
    for set in sets {
        let (set, _, _) = bench::honest(set);
        let avg = set.versions.iter().map(Vec::len).sum::<usize>() / set.versions.len().max(1);
        described.push(format!("{} ({} KB)", set.name, avg / 1000));
        write_set(dir, &VersionSet { name: format!("live-{}", set.name), versions: set.versions });
    }
    format!("{from}: {}", described.join(", "))
}

/// The realistic row: a site of 200 URLs of real pages with Zipf popularity, each page changing
/// every 5 s, so most requests find the page unchanged since the version the edge holds.
fn realistic_section(bench: &Bench, live_from: &str) {
    eprintln!("realistic workload …");
    let live = "/live";
    let rows: Vec<RowFn<'_>> = vec![
        (NGINX_PLAIN, Box::new(|n| bench.nginx_two_hops(live, false, n))),
        (NGINX_GZIP, Box::new(|n| bench.nginx_two_hops(live, true, n))),
        (RAILPROXY, Box::new(|n| bench.railproxy_row(live, n, true, &one_thread("fast")))),
        (PINGORA_TLS, Box::new(|n| bench.pingora_two_hops(live, true, n))),
    ];
    let rows = in_rounds(bench.opts.rounds, &rows.iter().collect::<Vec<_>>());
    println!(
        "\n## Realistic workload: {LIVE_URLS} URLs, Zipf popularity (s = {LIVE_ZIPF}), each page changing every 5 s\n"
    );
    println!("Pages: {live_from}; URL N serves live set N mod their number, at a phase of its own.\n");
    print_table(&rows, true);
    let [plain, gzip, rp] = [NGINX_PLAIN, NGINX_GZIP, RAILPROXY].map(|n| named(&rows, n));
    if let (Some(rp_cpu), Some(plain_cpu)) = (rp.cpu_us, plain.cpu_us) {
        println!(
            "\n- railproxy's CPU per request vs nginx two hops plain: {:.2}× (target ≤ 1.0×: {}); vs nginx gzip: {:.2}×",
            rp_cpu / plain_cpu,
            verdict(rp_cpu <= plain_cpu),
            gzip.cpu_us.map_or(f64::NAN, |g| rp_cpu / g)
        );
    }
    if let (Some(rp_b), Some(plain_b), Some(gzip_b)) = (rp.hop_bytes, plain.hop_bytes, gzip.hop_bytes) {
        println!(
            "- bytes between hops per request: railproxy 1/{:.0} of nginx plain's, 1/{:.0} of nginx gzip's",
            plain_b / rp_b,
            gzip_b / rp_b
        );
    }
}

//! `railproxy-wanbench` (`make bench-wan`): railproxy beside nginx two hops (plain, and gzip
//! between the hops at nginx's default level and at 6) across the emulated long link of
//! `integration::link`, one run, side by side. The edges run on this side of the link, origins
//! and the test backend on the far side, so only what one path sends between its hops crosses.
//!
//! Three links (40 ms / 50 Mbit/s; 150 ms / 10 Mbit/s / 0.5 % loss; 150 ms / 2 Mbit/s), each with
//! cubic and with bbr set on every connection across it (the link's routes) and read back from
//! the sockets (`ss -ti`). Per path: a 190 KB dynamic page (a real one when `--corpus DIR` has
//! volksstimme-home; every version differs from the one before) one at a time; 16 clients
//! side by side on it as steady load, and on a 200 KB body that is no delta; 2 MB downloads
//! after idle gaps and in sequence; a 2 MB upload; what the tunnel did meanwhile. On the lossy
//! link railproxy runs a second time with its origin dialling out (as many lanes as dial-in),
//! and the goals compare the two. A fourth link
//! (150 ms / 50 Mbit/s) runs the 2 MB downloads only. Every percentile says how many
//! requests it is from. Then, on loopback, GETs beside a flood of one-byte-chunk uploads, the
//! backend connections that slowhttptest's slow bodies hold, and requests answered in error right
//! after start at 700 ms RTT. Needs root and /dev/net/tun; says so and exits 77 otherwise.
//!
//!   railproxy-wanbench [--corpus DIR] [--only WORD|WORD] [--cc cubic,bbr] [--lanes N] [--quick | --downloads]
//!
//! `--lanes N` runs railproxy's edge with N lanes (its default otherwise); `--quick` measures the
//! steady phases only, `--downloads` the 2 MB downloads only, of railproxy and plain nginx.

mod browser;
mod paths;
mod phases;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use integration::bench::honest;
use integration::link::{Link, Profile};

use paths::{Route, Running};
use phases::{CLIENTS, Churn, Steady, Times, Turns, Until};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The dynamic page's set, as the backend names it.
const PAGE: &str = "page-190k";
const IDLE: Duration = Duration::from_secs(65);

/// One link to measure across.
struct Wan {
    name: &'static str,
    rtt_ms: u64,
    mbit: f64,
    loss_percent: f64,
    /// Whether 16 clients fetch the 200 KB body that is no delta across it: not on the 2 Mbit/s
    /// link, where a thousand of them would take 14 minutes per path.
    non_delta: bool,
    /// Whether only the 2 MB downloads run across it.
    downloads_only: bool,
    /// Whether railproxy with its origin dialling out runs across it too, beside dial-in.
    dial_out: bool,
}

const LINKS: [Wan; 4] = [
    Wan {
        name: "40 ms RTT, 50 Mbit/s",
        rtt_ms: 40,
        mbit: 50.0,
        loss_percent: 0.0,
        non_delta: true,
        downloads_only: false,
        dial_out: false,
    },
    // Dial-out is measured here, where loss makes the lanes' windows and retransmissions count.
    Wan {
        name: "150 ms RTT, 10 Mbit/s, 0.5 % loss",
        rtt_ms: 150,
        mbit: 10.0,
        loss_percent: 0.5,
        non_delta: true,
        downloads_only: false,
        dial_out: true,
    },
    Wan {
        name: "150 ms RTT, 2 Mbit/s",
        rtt_ms: 150,
        mbit: 2.0,
        loss_percent: 0.0,
        non_delta: false,
        downloads_only: false,
        dial_out: false,
    },
    // Where a download on a lane left cold shows: slow start to this link's window takes many
    // round trips of 150 ms, and no loss blurs it (5 downloads under loss say little).
    Wan {
        name: "150 ms RTT, 50 Mbit/s",
        rtt_ms: 150,
        mbit: 50.0,
        loss_percent: 0.0,
        non_delta: false,
        downloads_only: true,
        dial_out: false,
    },
];

/// What one path measured across one link.
#[derive(Default)]
struct Figures {
    sequential: Times,
    sequential_link_bytes: f64,
    dynamic: Steady,
    /// The first `phases::SWITCH` of the non-delta load, right after the dynamic page's: not in
    /// the steady figures.
    non_delta_switch: Steady,
    non_delta: Steady,
    after_idle_gaps: Times,
    in_sequence: Times,
    upload: f64,
    after_long_idle: Option<f64>,
    /// Tunnel connections opened, probes late, probes failed: during the dynamic and the
    /// non-delta phase (railproxy only).
    churn: [Option<Churn>; 2],
    sockets: String,
}

/// What a run measures: everything, or a part of it on railproxy and plain nginx only.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    All,
    /// The steady phases.
    Quick,
    /// The 2 MB downloads.
    Downloads,
}

/// `plain`: railproxy or plain nginx, the paths where a body that is no delta is worth a row (the
/// gzip paths do not gzip it, and would repeat plain nginx's).
async fn measure(run: &Running, versions: &[Vec<u8>], non_delta: Option<&Bytes>, plain: bool, scope: Scope) -> Figures {
    let mut f = Figures::default();
    if scope == Scope::Downloads {
        f.after_idle_gaps = phases::downloads_after_idle(run).await;
        f.in_sequence = phases::downloads_in_sequence(run).await;
        f.sockets = paths::congestion_in_use(&run.link, &run.origin_sockets);
        return f;
    }
    let mut turns = Turns::new(versions.to_vec());
    let page = |q: &str| format!("http://{}/cycle/{PAGE}?{q}", run.edge);
    // The first fetch opens the connections and leaves a version at railproxy's edge.
    let http = phases::client();
    let first = turns.take("seq");
    phases::fetch(&http, &page("seq"), Some(&first)).await.expect("the first page");
    (f.sequential, f.sequential_link_bytes) = phases::sequential(run, &page("seq"), &mut turns, "seq").await;
    // Each client its own page, fetched once unmeasured (side by side: 16 full pages queue on
    // the link at once, as in a burst of new visitors), then steady load on it. Client c's page
    // starts at its own place in the cycle, `start(c)`: 16 pages do not change in step, and the
    // cycle's wrap (its last version back to its first, the set's largest step, which no real
    // page takes) would otherwise reach all 16 in the same second and overflow the link's queue
    // at once. The tunnel's counters include the warm-up.
    let versions = turns.versions.len();
    let start = move |c: usize| c * versions / CLIENTS;
    let client_page =
        move |edge: std::net::SocketAddr, c: usize| format!("http://{edge}/cycle/{PAGE}?c{c}&start={}", start(c));
    let before = Churn::read(run).await;
    let mut warm = Vec::new();
    for c in 0..CLIENTS {
        let (url, want) = (client_page(run.edge, c), turns.versions[start(c)].clone());
        warm.push(tokio::spawn(async move { phases::fetch(&phases::client(), &url, Some(&want)).await }));
    }
    for w in warm {
        w.await.expect("warm-up").expect("a client's first page");
    }
    let (edge, all) = (run.edge, turns.versions.clone());
    f.dynamic = phases::steady(
        run,
        move |c| client_page(edge, c),
        move |c, k| Some(Bytes::from(all[(start(c) + 1 + k) % all.len()].clone())),
        Until::Enough,
    )
    .await;
    let mid = Churn::read(run).await;
    f.churn[0] = mid.zip(before).map(|(m, b)| m.since(b));
    if let Some(body) = non_delta.cloned() {
        let url = move |_| format!("http://{edge}/binary/{}", phases::NON_DELTA);
        let first = body.clone();
        f.non_delta_switch =
            phases::steady(run, url, move |_, _| Some(first.clone()), Until::For(phases::SWITCH)).await;
        f.non_delta = phases::steady(run, url, move |_, _| Some(body.clone()), Until::Enough).await;
        let after = Churn::read(run).await;
        f.churn[1] = after.zip(mid).map(|(a, m)| a.since(m));
    }
    f.sockets = paths::congestion_in_use(&run.link, &run.origin_sockets);
    if scope == Scope::All {
        f.after_idle_gaps = phases::downloads_after_idle(run).await;
        if plain {
            f.in_sequence = phases::downloads_in_sequence(run).await;
        }
        f.upload = phases::upload(run).await;
    }
    f
}

fn cell(t: &Times) -> String {
    format!(
        "{:.0} / {:.0} (n={}{})",
        t.ms(0.5),
        t.ms(0.99),
        t.n(),
        if t.failed > 0 { format!(", {} failed", t.failed) } else { String::new() }
    )
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
        "usage: railproxy-wanbench [--corpus DIR] [--only WORD|WORD] [--cc cubic,bbr] [--lanes N] [--quick | --downloads] (words: a link's name, \"loopback\", \"start\", \"browser\"; --quick: the steady phases, --downloads: the 2 MB downloads, of railproxy and plain nginx only)"
    );
    std::process::exit(2)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (mut corpus, mut only): (Option<std::path::PathBuf>, Vec<String>) = (None, Vec::new());
    let mut algorithms = vec!["cubic".to_string(), "bbr".to_string()];
    let (mut setup, mut scope) = (paths::Setup { lanes: None }, Scope::All);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--corpus" => corpus = Some(args.next().unwrap_or_else(|| usage()).into()),
            "--only" => only = args.next().unwrap_or_else(|| usage()).split('|').map(str::to_string).collect(),
            "--cc" => algorithms = args.next().unwrap_or_else(|| usage()).split(',').map(str::to_string).collect(),
            "--lanes" => setup.lanes = Some(args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage())),
            "--quick" => scope = Scope::Quick,
            "--downloads" => scope = Scope::Downloads,
            _ => usage(),
        }
    }
    let runs = |part: &str| only.is_empty() || only.iter().any(|w| part.contains(w.as_str()));
    // A part of the link rows is all a --quick or --downloads run asks for.
    let named = |part: &str| only.iter().any(|w| part.contains(w.as_str()));
    let extras = |part: &str| if scope == Scope::All { runs(part) } else { named(part) };
    if let Err(why) = Link::start(Profile::new(Duration::from_millis(10), 10.0, 0.0)).await {
        eprintln!("railproxy-wanbench: skipped: it needs root and /dev/net/tun for its emulated link ({why})");
        std::process::exit(77);
    }
    for cc in &algorithms {
        if let Err(e) = railproxy_congestion_check(cc) {
            eprintln!("railproxy-wanbench: {e}");
            std::process::exit(69);
        }
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    paths::certificates(dir.path());
    let sets = dir.path().join("sets");
    let (versions, page_from) = page_versions(corpus.as_deref().filter(|c| c.is_dir()), &sets);
    let non_delta = Bytes::from(integration::binary_body(phases::NON_DELTA));
    println!("# railproxy across an emulated long link\n");
    println!("Edges on this side, origins and the test backend beyond `integration/src/link.rs`'s link");
    println!("(TUN devices and a forwarder: one-way delay, bottleneck rate, tail-drop queue of one");
    println!("bandwidth-delay product, random loss). nginx two hops: keep-alive upstreams; gzip between");
    println!("them: the origin gzips, the edge gunzips. Congestion control: set on every connection across");
    println!("the link (its routes' `congctl`), per table, and read back from the origin side's sockets");
    println!(
        "(`ss -ti`). railproxy: {}, its defaults otherwise. One run; compare rows within a table.\n",
        setup.lanes.map_or("its default lanes".to_string(), |n| format!("{n} lanes"))
    );
    println!("Page: {page_from}. Each request asks for the page's next version (`/cycle/`), so every");
    println!(
        "page railproxy sends is a delta against the one before: {} one at a time, then {CLIENTS}",
        phases::SEQUENTIAL
    );
    println!("clients side by side, each on a page of its own (fetched once before, side by side). Not a delta:");
    println!(
        "{CLIENTS} clients on `/binary/{}` (not compressible). Steady load: until {} requests and",
        phases::NON_DELTA,
        phases::STEADY_REQUESTS
    );
    println!(
        "{} s, or {} s at most; n is how many requests a percentile is from. Link bytes: IP bytes",
        phases::STEADY_MIN.as_secs(),
        phases::STEADY_MAX.as_secs()
    );
    println!(
        "both ways per page. 2 MB after idle: a small page, {} s of nothing, a 2 MB download,",
        phases::IDLE_GAP.as_secs()
    );
    println!("{} times (every connection's window restarts under cubic: the gap is longer than any", phases::IDLE_GAPS);
    println!(
        "retransmission timeout here). 2 MB in sequence: one 2 MB download after another, {} ms",
        phases::SEQUENCE_GAP.as_millis()
    );
    println!(
        "apart, {} timed after one (a connection that carried the last keeps its window; one that",
        phases::IDLE_GAPS
    );
    println!("sat out a few would not: railproxy and plain nginx only, gzip is not used on a binary).");
    println!(
        "Not a delta: its steady phase follows {} s of the same load right after the dynamic page (see",
        phases::SWITCH.as_secs()
    );
    println!("the goals for those). Times to the last byte. Tunnel: connections opened / probes late /");
    println!("probes failed, during the phase; the dynamic phase's include its warm-up, 16 first pages at");
    println!("once, and the not-a-delta phase's the load before it (the");
    println!("lanes are dialled at start: 0 opened is the goal). Not a delta is not run at 2 Mbit/s,");
    println!("nor through the gzip paths (nginx does not gzip it: they are plain nginx's path).");
    println!("At 150 ms / 50 Mbit/s only the 2 MB rows run (railproxy and plain nginx).");
    let mut goals = Vec::new();
    for wan in &LINKS {
        for (i, cc) in algorithms.iter().enumerate() {
            let title = format!("{}, {cc}", wan.name);
            if !runs(&title) {
                continue;
            }
            if wan.downloads_only && scope == Scope::Quick {
                continue;
            }
            let profile = Profile::new(Duration::from_millis(wan.rtt_ms), wan.mbit, wan.loss_percent);
            let scope = if wan.downloads_only { Scope::Downloads } else { scope };
            eprintln!("{title} …");
            let mut routes = Route::ALL[..if scope == Scope::All { 4 } else { 2 }].to_vec();
            // Last, so that the tables' first rows stay railproxy and nginx.
            if wan.dial_out && scope != Scope::Downloads {
                routes.push(Route::RailproxyDialOut);
            }
            let routes = &routes[..];
            let mut running = Vec::new();
            for &p in routes {
                running.push(paths::start(p, profile, cc, setup, dir.path(), &sets).await);
            }
            let mut figures = Vec::new();
            for (p, run) in routes.iter().zip(&running) {
                eprintln!("  {}", p.name());
                let plain = matches!(p, Route::Railproxy | Route::RailproxyDialOut | Route::Nginx);
                figures
                    .push(measure(run, &versions, (wan.non_delta && plain).then_some(&non_delta), plain, scope).await);
            }
            // Once per link: every path idle at once, then one fetch each.
            if i == 0 && scope == Scope::All {
                tokio::time::sleep(IDLE).await;
                for (run, f) in running.iter().zip(figures.iter_mut()) {
                    let url = format!("http://{}/cycle/{PAGE}?seq", run.edge);
                    f.after_long_idle = phases::fetch(&phases::client(), &url, None).await.ok();
                }
            }
            drop(running);
            print_tables(&title, routes, &figures);
            goals.extend(goals_of(&title, wan, cc, &figures));
            if let Some(i) = routes.iter().position(|r| *r == Route::RailproxyDialOut) {
                goals.extend(dial_out_goals(&title, &figures[0], &figures[i]));
            }
        }
    }
    if !goals.is_empty() {
        println!("\n## Goals (ratios within one table)\n");
        for g in &goals {
            println!("{g}");
        }
    }
    if extras("loopback") {
        loopback_sections(dir.path()).await;
    }
    if extras("browser") {
        browser::section(dir.path(), &sets, PAGE, versions.len()).await;
    }
    if extras("start") {
        let (errors, secs) = paths::startup_errors(dir.path(), &sets).await;
        println!("\n## Start-up at 700 ms RTT\n");
        println!("railproxy, 20 sequential requests right after both processes started: {errors} errors, {secs:.1} s.");
    }
    println!("\nTotal: {:.0} s.", started.elapsed().as_secs_f64());
}

/// Whether this kernel lets a socket use `cc`.
fn railproxy_congestion_check(cc: &str) -> Result<(), String> {
    let available = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control").unwrap_or_default();
    if available.split_whitespace().any(|a| a == cc) {
        return Ok(());
    }
    // A module not loaded yet is loaded on first use by root; try it.
    let _ = std::process::Command::new("modprobe").arg(format!("tcp_{cc}")).status();
    let available = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control").unwrap_or_default();
    if available.split_whitespace().any(|a| a == cc) {
        Ok(())
    } else {
        Err(format!("congestion control {cc} is not available here ({})", available.trim()))
    }
}

fn print_tables(title: &str, routes: &[Route], figures: &[Figures]) {
    println!("\n## {title}\n");
    if figures.iter().any(|f| f.sequential.n() > 0 || f.dynamic.times.n() > 0) {
        print_load_table(routes, figures);
    }
    println!(
        "| path | 2 MB after {} s idle: p50 / max s (n) | 2 MB in sequence, {} ms apart: p50 / max s (n) | 2 MB upload s | first fetch after {} s idle, ms | tunnel, dynamic phase | tunnel, not-a-delta phase | origin sockets used |",
        phases::IDLE_GAP.as_secs(),
        phases::SEQUENCE_GAP.as_millis(),
        IDLE.as_secs()
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    let secs = |t: &Times| match t.n() {
        0 => "–".to_string(),
        n => format!("{:.2} / {:.2} (n={n})", t.ms(0.5) / 1e3, t.ms(1.0) / 1e3),
    };
    for (p, f) in routes.iter().zip(figures) {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            p.name(),
            secs(&f.after_idle_gaps),
            secs(&f.in_sequence),
            if f.upload > 0.0 { format!("{:.2}", f.upload) } else { "–".into() },
            f.after_long_idle.map_or_else(|| "–".into(), |s| format!("{:.0}", s * 1e3)),
            Churn::cell(f.churn[0]),
            Churn::cell(f.churn[1]),
            f.sockets,
        );
    }
}

fn print_load_table(routes: &[Route], figures: &[Figures]) {
    println!(
        "| path | one at a time: p50 / p99 ms (n) | link bytes/page | {CLIENTS} clients, dynamic page: pages/s | p50 / p99 ms (n) | link bytes/page | {CLIENTS} clients, {} KB not a delta: pages/s | p50 / p99 ms (n) |",
        phases::NON_DELTA / 1000
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (p, f) in routes.iter().zip(figures) {
        println!(
            "| {} | {} | {:.0} | {:.2} | {} | {:.0} | {} | {} |",
            p.name(),
            cell(&f.sequential),
            f.sequential_link_bytes,
            f.dynamic.rate,
            cell(&f.dynamic.times),
            f.dynamic.link_bytes,
            if f.non_delta.times.n() > 0 { format!("{:.2}", f.non_delta.rate) } else { "–".into() },
            if f.non_delta.times.n() > 0 { cell(&f.non_delta.times) } else { "–".into() },
        );
    }
    println!();
}

fn goals_of(title: &str, wan: &Wan, cc: &str, figures: &[Figures]) -> Vec<String> {
    let (rp, nginx) = (&figures[0], &figures[1]);
    let mut goals = Vec::new();
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    for (what, rp, nginx) in [
        (format!("2 MB after {} s idle", phases::IDLE_GAP.as_secs()), &rp.after_idle_gaps, &nginx.after_idle_gaps),
        (
            format!("2 MB in sequence, {} ms apart", phases::SEQUENCE_GAP.as_millis()),
            &rp.in_sequence,
            &nginx.in_sequence,
        ),
    ] {
        if cc == "cubic" && rp.n() > 0 && nginx.n() > 0 {
            let r = rp.ms(0.5) / nginx.ms(0.5);
            goals.push(format!(
                "- {title}: {what}, railproxy ÷ nginx (p50 of {} and {}): {r:.3} (goal ≤ 1.0: {})",
                rp.n(),
                nginx.n(),
                verdict(r <= 1.0)
            ));
        }
    }
    if wan.loss_percent > 0.0 && rp.non_delta.times.n() > 0 && nginx.non_delta.times.n() > 0 {
        let p99 = rp.non_delta.times.ms(0.99) / nginx.non_delta.times.ms(0.99);
        let rate = rp.non_delta.rate / nginx.non_delta.rate;
        goals.push(format!(
            "- {title}: {CLIENTS} clients, {} KB not a delta: p99 railproxy ÷ nginx {p99:.3} (goal ≤ 1.0: {}), pages/s {rate:.3} (goal ≥ 1.0: {}); n = {} and {}",
            phases::NON_DELTA / 1000,
            verdict(p99 <= 1.0),
            verdict(rate >= 1.0),
            rp.non_delta.times.n(),
            nginx.non_delta.times.n()
        ));
        let (rs, ns) = (&rp.non_delta_switch, &nginx.non_delta_switch);
        goals.push(format!(
            "- {title}: the same, its first {} s right after the dynamic page (not a goal; before the steady phase above): p99 railproxy ÷ nginx {:.3} ({:.0} / {:.0} ms), pages/s {:.3}; n = {} and {}",
            phases::SWITCH.as_secs(),
            rs.times.ms(0.99) / ns.times.ms(0.99),
            rs.times.ms(0.99),
            ns.times.ms(0.99),
            rs.rate / ns.rate,
            rs.times.n(),
            ns.times.n()
        ));
    }
    for (phase, c) in ["dynamic", "not a delta"].iter().zip(rp.churn) {
        if let Some(c) = c {
            goals.push(format!(
                "- {title}, {phase}: tunnel connections opened {:.0}, probes late {:.0}, failed {:.0} (goal: 0 opened, 0 failed: {})",
                c.connections,
                c.late,
                c.failed,
                verdict(c.connections == 0.0 && c.failed == 0.0)
            ));
        }
    }
    if wan.mbit <= 2.0 && rp.dynamic.times.n() > 0 {
        let rate_bound = wan.mbit * 1e6 / 8.0 / rp.dynamic.link_bytes.max(1.0);
        let rtt_bound = CLIENTS as f64 / (wan.rtt_ms as f64 / 1000.0);
        let bound = rate_bound.min(rtt_bound);
        let share = rp.dynamic.rate / bound;
        goals.push(format!(
            "- {title}: {CLIENTS} clients, dynamic page: {:.1} pages/s of the physical bound {bound:.1} (min of rate ÷ link bytes per page {rate_bound:.1}, clients ÷ RTT {rtt_bound:.1}): {share:.3} (goal ≥ 0.9: {})",
            rp.dynamic.rate,
            verdict(share >= 0.9)
        ));
        // The bound above counts both directions' bytes against one rate; each direction has
        // its own, so the busier one is the tighter bound. And a closed loop cannot beat its
        // clients ÷ the time of one request alone (Little's law with no queue at all).
        let down_bound = (wan.mbit * 1e6 / 8.0 / rp.dynamic.link_bytes_down.max(1.0)).min(rtt_bound);
        let alone = rp.sequential.ms(0.5) / 1000.0;
        goals.push(format!(
            "  - the same against the busier direction's bytes ({:.0} of {:.0} per page): {:.2} of {down_bound:.1}; no closed loop of {CLIENTS} clients exceeds clients ÷ one request alone ({:.0} ms) = {:.1} pages/s, {:.2} of that bound",
            rp.dynamic.link_bytes_down,
            rp.dynamic.link_bytes,
            rp.dynamic.rate / down_bound,
            alone * 1000.0,
            CLIENTS as f64 / alone,
            CLIENTS as f64 / alone / down_bound,
        ));
    }
    goals
}

/// Dial-out beside dial-in, both railproxy on the same link (issue 31: within 10 %).
fn dial_out_goals(title: &str, dial_in: &Figures, dial_out: &Figures) -> Vec<String> {
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let mut goals = Vec::new();
    for (what, i, o) in [
        ("dynamic page".to_string(), &dial_in.dynamic, &dial_out.dynamic),
        (format!("{} KB not a delta", phases::NON_DELTA / 1000), &dial_in.non_delta, &dial_out.non_delta),
    ] {
        if i.times.n() == 0 || o.times.n() == 0 {
            continue;
        }
        let rate = o.rate / i.rate;
        let p99 = o.times.ms(0.99) / i.times.ms(0.99);
        goals.push(format!(
            "- {title}: {CLIENTS} clients, {what}: dial-out ÷ dial-in pages/s {rate:.3} (goal ≥ 0.9: {}), p99 {p99:.3} ({:.0} / {:.0} ms; goal ≤ 1.1: {}); n = {} and {}",
            verdict(rate >= 0.9),
            o.times.ms(0.99),
            i.times.ms(0.99),
            verdict(p99 <= 1.1),
            o.times.n(),
            i.times.n()
        ));
    }
    goals
}

async fn loopback_sections(dir: &Path) {
    println!(
        "\n## On loopback: one-byte-chunk uploads beside GETs (5 s; 2 clients upload 400 one-byte chunks, 4 fetch 2 KB)\n"
    );
    println!(
        "| path | GETs answered 200 | GETs failed | share 200 | uploads echoed | uploads failed |\n|---|---:|---:|---:|---:|---:|"
    );
    for p in [Route::Railproxy, Route::Nginx] {
        let f = paths::flood(p, dir).await;
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
        let (peak, clients, answered, sent) = paths::slow_bodies(p, dir).await;
        println!("| {} | {clients} | {peak} | {answered} of {sent} |", p.name());
    }
}

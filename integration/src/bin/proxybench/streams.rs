//! `--only streams`: what streams cost. Time to first byte of a page whose backend flushes its
//! first 8 KB and the rest 100 ms later, and the speed of a large download, each beside the
//! backend directly and one Pingora hop.

use std::net::SocketAddr;
use std::time::Duration;

use integration::Http;
use integration::bench::{self, RefHop, download, rss_bytes};
use integration::process::free_loopback;

use super::{Bench, LOAD_CPU, SERVER_CPU, one_thread, verdict};

/// Sequential fetches per path for the time to first byte.
const FETCHES: usize = 40;
/// The download's size.
const DOWNLOAD: u64 = 1 << 30;

/// Downloads `DOWNLOAD` bytes through `addr`, prints the row, returns MB/s.
fn download_row(bench: &Bench, name: &str, addr: SocketAddr, pids: &[u32]) -> f64 {
    let rss0: Vec<u64> = pids.iter().map(|&pid| rss_bytes(pid)).collect();
    let cpu0 = bench::cpu_seconds(pids);
    let (bytes, secs) = bench.rt.block_on(download(addr, &format!("/big/{DOWNLOAD}")));
    assert_eq!(bytes, DOWNLOAD, "{name}: the whole body");
    let cpu = bench::cpu_seconds(pids) - cpu0;
    let grew: u64 = pids.iter().zip(&rss0).map(|(&pid, &r)| rss_bytes(pid).saturating_sub(r)).sum();
    let mbs = bytes as f64 / secs / 1e6;
    println!("| {name} | {mbs:.0} | {cpu:.2} | {:.1} |", grew as f64 / (1 << 20) as f64);
    mbs
}

/// Median and largest of durations, in ms.
fn ms(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let f = |d: Duration| d.as_secs_f64() * 1e3;
    (f(v[v.len() / 2]), f(*v.last().expect("fetches")))
}

struct Path {
    name: &'static str,
    addr: SocketAddr,
    pids: Vec<u32>,
}

pub fn section(bench: &Bench, page_set: &str) {
    eprintln!("streams …");
    // The one-hop reference, on a CPU of its own choosing; it listens where it says.
    let start_pingora = |name: &str, cpu: &str| {
        let listen = free_loopback();
        let proc = bench::start_pingora_reference(
            bench.dir.path(),
            name,
            listen,
            bench.backend.addr,
            RefHop::Http1,
            None,
            Some(cpu),
        );
        (proc, listen)
    };
    let (pingora, pingora_listen) = start_pingora("pingora-one-hop", SERVER_CPU);
    let (origin, edge, listen, _, _) = bench.railproxy(&one_thread("fast"));
    let paths = [
        Path { name: "backend directly", addr: bench.backend.addr, pids: vec![] },
        Path { name: "Pingora alone, one hop", addr: pingora_listen, pids: vec![pingora.pid()] },
        Path {
            name: "railproxy edge → tunnel → railproxy origin", addr: listen, pids: vec![edge.pid(), origin.pid()]
        },
    ];

    println!("\n## Streams\n");
    println!(
        "Time to first byte of the {page_set} page, whose backend sends its first 8 KB at once and the rest \
         100 ms later (`/flush/{page_set}?first=8192&ms=100`, a new version on every fetch, so railproxy sends \
         deltas): {FETCHES} fetches one after another per path.\n"
    );
    println!("| path | first byte p50 ms | first byte max ms | last byte p50 ms |\n|---|---:|---:|---:|");
    let mut first_p50 = Vec::new();
    for p in &paths {
        let url = format!("http://{}/flush/{page_set}?first=8192&ms=100", p.addr);
        let (first, last): (Vec<Duration>, Vec<Duration>) = bench.rt.block_on(async {
            let http = Http::h1();
            let mut times = Vec::new();
            for _ in 0..FETCHES {
                let t = http.get_timed(&url, &[]).await.expect("page");
                assert_eq!(t.status, 200, "{}", p.name);
                times.push((t.first_byte().expect("a body"), t.pieces.last().expect("a body").1));
            }
            times.into_iter().unzip()
        });
        let ((f50, fmax), (l50, _)) = (ms(first), ms(last));
        println!("| {} | {f50:.2} | {fmax:.2} | {l50:.1} |", p.name);
        first_p50.push(f50);
    }
    let added = first_p50[2] - first_p50[0];
    println!(
        "\n- railproxy's first byte p50 over the backend's: {added:+.2} ms (goal ≤ 5 ms: {})",
        verdict(added <= 5.0)
    );

    println!(
        "\nA {} MiB download (`/big/N`, application/octet-stream with Content-Length), one connection, read \
         as fast as it comes; CPU of the proxy processes, and how much their resident memory grew. First with \
         every server on CPU {SERVER_CPU} (speed then follows the sum of the hops' CPU), then with a core per \
         hop as deployed, where edge and origin are different machines (backend and origin on CPU \
         {SERVER_CPU}; the edge, or Pingora, on CPU {LOAD_CPU}).\n",
        DOWNLOAD >> 20
    );
    println!("| path | MB/s | proxy CPU s | RSS growth MiB |\n|---|---:|---:|---:|");
    let speed: Vec<f64> = paths.iter().map(|p| download_row(bench, p.name, p.addr, &p.pids)).collect();
    drop(edge);
    drop(origin);
    drop(pingora);
    let (pingora, pingora_listen) = start_pingora("pingora-own-core", LOAD_CPU);
    let (origin, edge, listen, _, _) = bench.railproxy_on(&one_thread("fast"), SERVER_CPU, LOAD_CPU);
    let per_hop = [
        download_row(bench, "Pingora alone, one hop, own core", pingora_listen, &[pingora.pid()]),
        download_row(bench, "railproxy, a core per hop", listen, &[edge.pid(), origin.pid()]),
    ];
    let (ratio, deployed) = (speed[2] / speed[1], per_hop[1] / per_hop[0]);
    println!(
        "\n- railproxy's download speed over one Pingora hop: {deployed:.2}× with a core per hop (goal ≥ 0.5×: {}); \
         {ratio:.2}× with every server on one core",
        verdict(deployed >= 0.5)
    );
    drop(edge);
    drop(origin);
    drop(pingora);
}

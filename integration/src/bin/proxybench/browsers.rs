//! `--only browsers`: deltas to browsers at the edge. What a `dcz` answer to a browser costs the
//! edge's CPU beside the br answer it replaces, the bytes each sends, and the memory that
//! keeping the pages browsers hold costs. Clients behave as Chromium does: each keeps the last
//! page it got and offers its SHA-256 with `dcz` on the next request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use delta::VersionId;
use delta::corpus::VersionSet;
use integration::{Http, Metrics, bench};

use super::{Bench, one_thread};

struct Answered {
    responses: u64,
    body_bytes: u64,
    dcz: u64,
    cpu_us: f64,
    store_bytes: f64,
}

/// `pages` clients, each on its own page that changes on every request, for `seconds`.
fn run(bench: &Bench, set: &VersionSet, dictionaries: bool, accept: &'static str, row: usize) -> Answered {
    let mut knobs = one_thread("fast");
    if dictionaries {
        knobs.edge_route_extra = vec![("127.0.0.1".into(), "    client_dictionaries: true\n".into())];
    }
    let (origin, edge, listen, _, e_admin) = bench.railproxy(&knobs);
    let pages = u64::from(bench.opts.connections);
    let seconds = u64::from(bench.opts.seconds);
    let (responses, body_bytes, dcz) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let versions: Arc<Vec<VersionId>> = Arc::new(set.versions.iter().map(|v| VersionId::of(v)).collect());
    let cpu0 = bench::cpu_seconds(&[edge.pid()]);
    bench.rt.block_on(async {
        let until = Instant::now() + Duration::from_secs(seconds);
        let tasks: Vec<_> = (0..pages)
            .map(|page| {
                let (responses, body_bytes, dcz, versions) =
                    (responses.clone(), body_bytes.clone(), dcz.clone(), versions.clone());
                // A page of this row's own: the backend's turns start at version 0.
                let url = format!("http://{listen}/cycle/{}?page={page}&row={row}", set.name);
                tokio::spawn(async move {
                    let http = Http::h1();
                    // The backend's turn for this page: request n gets version n.
                    let mut n = 0usize;
                    while Instant::now() < until {
                        let held = (n > 0).then(|| versions[(n - 1) % versions.len()].to_sf());
                        let mut headers = vec![("accept-encoding", accept)];
                        if let Some(h) = held.as_deref() {
                            headers.push(("available-dictionary", h));
                        }
                        let r = http.get(&url, &headers).await.expect("response");
                        assert_eq!(r.status, 200);
                        responses.fetch_add(1, Ordering::Relaxed);
                        body_bytes.fetch_add(r.body.len() as u64, Ordering::Relaxed);
                        if r.header("content-encoding") == Some("dcz") {
                            dcz.fetch_add(1, Ordering::Relaxed);
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("client");
        }
    });
    let cpu = bench::cpu_seconds(&[edge.pid()]) - cpu0;
    let m = bench.rt.block_on(Metrics::scrape(e_admin));
    let store_bytes = m.sum("railproxy_store_bytes", &[("mode", "edge")]);
    drop(edge);
    drop(origin);
    let responses = responses.load(Ordering::Relaxed);
    Answered {
        responses,
        body_bytes: body_bytes.load(Ordering::Relaxed),
        dcz: dcz.load(Ordering::Relaxed),
        cpu_us: cpu * 1e6 / responses.max(1) as f64,
        store_bytes,
    }
}

pub fn section(bench: &Bench, set: &VersionSet) {
    eprintln!("deltas to browsers …");
    let pages = bench.opts.connections;
    println!(
        "\n## Deltas to browsers: the edge's CPU per answer, and the memory of the pages kept\n\n\
         {pages} clients, each on its own page of `{}` that changes on every request, one request at a time for \
         {} s, offering the page they got before as Chromium does (`Available-Dictionary`, `dcz`); the edge runs \
         one worker. CPU: the edge process only (`/proc`), per response.\n",
        set.name, bench.opts.seconds
    );
    println!(
        "| edge answers with | responses | of which dcz | body bytes per response | edge CPU µs per response | edge store bytes at the end |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    const BROWSER: &str = "gzip, deflate, br, zstd, dcb, dcz";
    for (row, (name, on, accept)) in [
        ("br (client_dictionaries off)", false, BROWSER),
        ("dcz (client_dictionaries: true)", true, BROWSER),
        ("gzip (off, a client that takes only gzip)", false, "gzip"),
    ]
    .into_iter()
    .enumerate()
    {
        let a = run(bench, set, on, accept, row);
        println!(
            "| {name} | {} | {} | {:.0} | {:.0} | {:.0} |",
            a.responses,
            a.dcz,
            a.body_bytes as f64 / a.responses.max(1) as f64,
            a.cpu_us,
            a.store_bytes
        );
        rows.push(a);
    }
    let (br, dcz, gzip) = (&rows[0], &rows[1], &rows[2]);
    let per = |a: &Answered| a.body_bytes as f64 / a.responses.max(1) as f64;
    println!(
        "\n- a dcz answer costs the edge {:.2}× the CPU of a br answer ({:.0} against {:.0} µs; gzip {:.0} µs) and \
         sends {:.1} % of br's bytes, {:.1} % of gzip's (`client_compression: 6`)",
        dcz.cpu_us / br.cpu_us,
        dcz.cpu_us,
        br.cpu_us,
        gzip.cpu_us,
        100.0 * per(dcz) / per(br),
        100.0 * per(dcz) / per(gzip)
    );
    let page_kb = set.versions.iter().map(Vec::len).sum::<usize>() as f64 / set.versions.len() as f64 / 1e3;
    println!(
        "- the pages kept for browsers: {:.0} KB more in the edge's store. Pages without credentials are kept once \
         per version whoever got it, so this is the {} versions of `{}` ({page_kb:.0} KB each) sent within \
         `version_ttl`, not one copy per client; a user's own pages take one copy per user and version",
        (dcz.store_bytes - br.store_bytes) / 1e3,
        set.versions.len(),
        set.name
    );
}

//! A page the backend renders exactly as the version the edge holds crosses as the 40-byte
//! unchanged frame: the origin encodes nothing, the edge serves its stored copy, both count it,
//! and the client gets the backend's bytes as ever. A page that merely starts the same, or
//! whose head the backend flushed early, crosses as before.

use std::time::{Duration, Instant};

use integration::{Http, Knobs, Stack};

fn set(name: &str) -> Vec<Vec<u8>> {
    delta::testing::generated_sets().into_iter().find(|s| s.name == name).expect("generated set").versions
}

/// Tunnel bytes of each response the origin sent for `path`, in order, from its access log;
/// waits until it holds `n`.
async fn wire_sizes(stack: &Stack, path: &str, n: usize) -> Vec<u64> {
    let needle = format!("{path}\" 200 ");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = stack.origins[0].proc.as_ref().expect("origin running").log();
        let found: Vec<u64> = log
            .lines()
            .filter(|l| l.contains(" access: ") && l.contains(&needle))
            .filter_map(|l| l.split(" wire=").nth(1)?.split(' ').next()?.parse().ok())
            .collect();
        if found.len() >= n || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn unchanged(stack: &Stack) -> (f64, f64) {
    let (e, o) = (stack.edge_metrics().await, stack.origin_metrics().await);
    let count = |m: &integration::Metrics, mode| m.sum("railproxy_unchanged_total", &[("mode", mode)]);
    (count(&e, "edge"), count(&o, "origin"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_equal_to_the_edges_version_crosses_as_the_unchanged_frame() {
    let stack = Stack::start(Knobs { access_log: true, ..Knobs::default() }).await;
    let v = set("generated-100k");
    let (page, h1) = ("/pages/generated-100k", Http::h1());
    // (version served, whether it is the version the edge holds)
    let turns = [(0, false), (0, true), (1, false), (1, true), (1, true), (0, false)];
    for (i, (n, _)) in turns.iter().enumerate() {
        let r = h1.get(&stack.url(page), &[("x-version", &n.to_string())]).await.expect("page");
        assert_eq!(r.status, 200);
        assert!(r.body == v[*n][..], "turn {i}: not the backend's bytes");
    }
    let wire = wire_sizes(&stack, page, turns.len()).await;
    for (i, ((_, same), wire)) in turns.iter().zip(&wire).enumerate() {
        // 45: the 40-byte frame in one 5-byte segment record.
        match same {
            true => assert_eq!(*wire, 45, "turn {i}: an unchanged page crosses as its frame ({wire:?})"),
            false => assert!(*wire > 100, "turn {i}: a changed page crosses encoded ({wire:?})"),
        }
    }
    assert_eq!(unchanged(&stack).await, (3.0, 3.0), "counted at both ends (edge, origin)");

    // Served from the stored copy to other clients as to any: HTTP/2, and compressed for them.
    let r = Http::h2c().get(&stack.url(page), &[("x-version", "0"), ("accept-encoding", "gzip")]).await.expect("h2");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&r.body[..]), &mut body).unwrap();
    assert!(body == v[0], "the gzip body decodes to the backend's page");
    assert_eq!(unchanged(&stack).await, (4.0, 4.0));
    let m = stack.origin_metrics().await;
    let sent = m.sum("railproxy_delta_wire_bytes_total", &[("mode", "origin"), ("encoding", "dcz")]);
    let raw = m.sum("railproxy_delta_raw_bytes_total", &[("mode", "origin"), ("encoding", "dcz")]);
    assert!(raw >= 5.0 * v[0].len() as f64 && sent < raw / 50.0, "dcz raw {raw} sent {sent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_flushed_early_goes_out_early_even_when_the_page_is_unchanged() {
    let stack = Stack::start(Knobs::default()).await;
    let v = set("generated-100k");
    let url = stack.url("/flush/generated-100k?first=8192&ms=500&version=5");
    for turn in 0..2 {
        let timed = Http::h1().get_timed(&url, &[]).await.expect("page");
        assert_eq!(timed.status, 200);
        assert!(timed.body() == v[5], "turn {turn}: not the backend's bytes");
        let first = timed.first_byte().expect("a body");
        assert!(first < Duration::from_millis(250), "turn {turn}: first byte after {first:?}");
        let early: usize =
            timed.pieces.iter().filter(|(_, at, _)| *at < Duration::from_millis(400)).map(|p| p.2.len()).sum();
        assert_eq!(early, 8192, "turn {turn}: what came before the pause");
    }
    let m = stack.origin_metrics().await;
    assert_eq!(m.sum("railproxy_delta_base_total", &[("mode", "origin"), ("result", "hit")]), 1.0, "a delta");
    assert_eq!(unchanged(&stack).await, (0.0, 0.0), "cut at the pause, so not the unchanged frame");
}

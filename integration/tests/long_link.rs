//! The stack across an emulated long link (`integration::link`): the edge on this side, origin
//! and backend on the far side, the tunnel crossing the link. Skipped, saying why, where the
//! machine cannot make network namespaces or TUN devices (not root).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use integration::link::{Link, Profile};
use integration::process::{Proc, bin, free_loopback, free_port};
use integration::stack::{edge_yaml, make_certs, origin_yaml, start_proxy, start_proxy_with};
use integration::{Backend, Http, Knobs};

/// Edge here, origin and backend beyond the link.
struct LongStack {
    edge: SocketAddr,
    edge_admin: SocketAddr,
    // Dropped in this order: processes first, then the link, then the folder.
    _procs: Vec<Proc>,
    _backend: Backend,
    link: Link,
    _dir: tempfile::TempDir,
}

async fn start(profile: Profile, what: &str) -> Option<LongStack> {
    let link = match Link::start(profile).await {
        Ok(l) => l,
        Err(why) => {
            println!("skipped: {what} needs an emulated link, which this machine cannot make: {why}");
            return None;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let knobs = Knobs::default();
    let backend = Backend::start_with(dir.path(), "backend", link.command(&bin("railproxy-testbackend")));
    let (origin, origin_admin) = (SocketAddr::from((link.far, free_port())), SocketAddr::from((link.far, free_port())));
    let oy = origin_yaml(dir.path(), &knobs, origin, origin_admin, &[backend.addr], free_loopback());
    let origin_proc =
        start_proxy_with(dir.path(), "origin", "origin", &oy, origin_admin, link.command(&bin("railproxy")))
            .await
            .expect("origin starts beyond the link");
    let (edge, edge_admin) = (free_loopback(), free_loopback());
    // The defaults of conf/edge.yaml, not the short ones of loopback tests: they must fit a long
    // link (connect and TLS handshake two round trips within connect_timeout, a probe's answer
    // one within probe_timeout).
    let ey = edge_yaml(dir.path(), &knobs, edge, edge_admin, &[origin], backend.addr)
        .replace("connect_timeout: 1s", "connect_timeout: 2s")
        .replace("probe_timeout: 500ms", "probe_timeout: 1s");
    let edge_proc = start_proxy(dir.path(), "edge", "edge", &ey, edge_admin).await.expect("edge starts");
    Some(LongStack { edge, edge_admin, _procs: vec![edge_proc, origin_proc], _backend: backend, link, _dir: dir })
}

/// The backend is beyond the link, out of the test's reach; it is deterministic, so a first
/// answer is checked for its length and every later one compared with it.
async fn get(http: &Http, stack: &LongStack, path: &str) -> Result<(u16, Bytes), String> {
    http.get(&format!("http://{}{path}", stack.edge), &[]).await.map(|r| (r.status.as_u16(), r.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_serves_from_its_first_request_across_a_700_ms_link() {
    let Some(stack) = start(Profile::new(Duration::from_millis(700), 50.0, 0.0), "700 ms RTT startup").await else {
        return;
    };
    let http = Http::h1();
    let started = Instant::now();
    let (status, first) = get(&http, &stack, "/text/20000").await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&first));
    assert_eq!(first.len(), 20_000);
    println!("first request at 700 ms RTT, right after start: 200 in {:?}", started.elapsed());
    for i in 0..10 {
        let (status, body) = get(&http, &stack, "/text/20000").await.unwrap();
        assert_eq!(status, 200, "request {i}");
        assert!(body == first, "request {i}: other bytes");
    }
    // The probes fit the link too: every lane serves, and no listener was ever marked down.
    let m = integration::Metrics::scrape(stack.edge_admin).await;
    assert_eq!(m.sum("railproxy_tunnel_lanes_serving", &[]), 4.0, "lanes serving at 700 ms RTT");
    assert_eq!(m.sum("railproxy_failovers_total", &[]), 0.0, "a listener was marked down at 700 ms RTT");
    println!("link drops: {:?}", stack.link.drops);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2_mb_upload_crosses_a_150_ms_link_whole() {
    let Some(stack) = start(Profile::new(Duration::from_millis(150), 50.0, 0.0), "the long-link upload").await else {
        return;
    };
    let body: Vec<u8> = (0..2_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let started = Instant::now();
    let r = Http::h1()
        .send(Method::POST, &format!("http://{}/echo", stack.edge), &[], Bytes::from(body.clone()))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body == body, "the echo is not the 2 MB sent");
    // Timed in the benchmark; printed here for the record.
    println!("2 MB upload and echo at 150 ms RTT, 50 Mbit/s: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_clients_get_exact_bytes_across_a_lossy_link() {
    let profile = Profile::new(Duration::from_millis(150), 10.0, 0.5);
    let Some(stack) = start(profile, "16 clients under loss").await else {
        return;
    };
    let http = Http::h1();
    let (status, expected) = get(&http, &stack, "/binary/200000").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(expected.len(), 200_000);
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..16 {
        let (edge, expected) = (stack.edge, expected.clone());
        clients.push(tokio::spawn(async move {
            let http = Http::h1();
            for _ in 0..2 {
                let r = http.get(&format!("http://{edge}/binary/200000"), &[]).await.unwrap();
                assert_eq!(r.status, 200);
                assert!(r.body == expected, "other bytes under loss");
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    println!(
        "32 pages of 200 KB to 16 clients at 150 ms RTT, 10 Mbit/s, 0.5 % loss: {:?}; link drops {:?}",
        started.elapsed(),
        stack.link.drops
    );
}

//! The edge cache: cacheable responses are served from it, concurrent misses make one upstream
//! request, and what is cached is the plain body.

use integration::{Http, Knobs, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cacheable_response_is_served_from_the_cache() {
    let stack = Stack::start(Knobs::default()).await;
    let http = Http::h1();
    let direct = http.get(&format!("http://{}/cache/60/a", stack.backend.addr), &[]).await.unwrap();
    let first = http.get(&stack.url("/cache/60/a"), &[]).await.unwrap();
    assert_eq!(first.header("railproxy-cache"), Some("MISS"));
    let second = http.get(&stack.url("/cache/60/a"), &[]).await.unwrap();
    assert_eq!(second.header("railproxy-cache"), Some("HIT"));
    assert!(first.body == direct.body && second.body == direct.body, "cached bytes differ from the backend's");
    assert_eq!(second.header("content-length"), Some(direct.body.len().to_string().as_str()));
    // The backend saw the direct request and the first miss only.
    assert_eq!(stack.backend.hits("60/a").await, 2);
    // Over HTTP/2 and with gzip, a hit is still the same body.
    let h2 = Http::h2c().get(&stack.url("/cache/60/a"), &[]).await.unwrap();
    assert_eq!(h2.header("railproxy-cache"), Some("HIT"));
    assert!(h2.body == direct.body);
    assert_eq!(stack.backend.hits("60/a").await, 2);
    // Uncacheable responses keep going through the tunnel, with deltas.
    for v in ["0", "1"] {
        let page = http.get(&stack.url("/pages/generated-10k"), &[("x-version", v)]).await.unwrap();
        assert_eq!(page.header("railproxy-cache"), Some("DYNAMIC"));
    }
    let post = http.send(http::Method::POST, &stack.url("/echo"), &[], bytes::Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(post.header("railproxy-cache"), Some("BYPASS"));
    let m = stack.edge_metrics().await;
    assert!(m.sum("railproxy_delta_wire_bytes_total", &[("encoding", "dcz")]) > 0.0);
    assert_eq!(m.sum("railproxy_cache_requests_total", &[("result", "HIT")]), 2.0);
    assert!(m.sum("railproxy_cache_entries", &[]) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_collapse_to_one_backend_request() {
    let stack = Stack::start(Knobs::default()).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let url = stack.url("/cache/60/b?delay=300");
        tasks.push(tokio::spawn(async move { Http::h1().get(&url, &[]).await.expect("request") }));
    }
    let mut bodies = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        bodies.push(r.body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(stack.backend.hits("60/b").await, 1, "the cache lock lets one miss through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_body_is_the_plain_body_even_when_it_crossed_as_zstd() {
    let stack = Stack::start(Knobs::default()).await;
    let http = Http::h1();
    let miss = http.get(&stack.url("/cache/60/c"), &[]).await.unwrap();
    let m = stack.edge_metrics().await;
    assert!(m.sum("railproxy_delta_wire_bytes_total", &[("encoding", "zstd")]) > 0.0, "crossed as zstd");
    let hit = http.get(&stack.url("/cache/60/c"), &[("accept-encoding", "gzip")]).await.unwrap();
    assert_eq!(hit.header("railproxy-cache"), Some("HIT"));
    assert_eq!(hit.header("content-encoding"), Some("gzip"), "client compression applies after the cache");
    let plain = http.get(&stack.url("/cache/60/c"), &[]).await.unwrap();
    assert_eq!(plain.header("content-encoding"), None);
    assert!(plain.body == miss.body);
}

/// A cache hit leaves the edge as one write: its header and body in one TCP segment on loopback
/// (MTU 64 KiB), not the header, then the body (one wakeup of the client instead of two: a fifth
/// of the edge's CPU per 10 KB hit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_cache_hit_reaches_the_client_in_one_segment() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = Stack::start(Knobs::default()).await;
    let direct = Http::h1().get(&format!("http://{}/cache/60/one", stack.backend.addr), &[]).await.unwrap();
    assert!(direct.body.len() > 8192, "a body larger than the socket's write buffer");
    let mut sock = tokio::net::TcpStream::connect(stack.edge_addr).await.unwrap();
    let mut segments = Vec::new();
    for _ in 0..3 {
        let before = data_segments_in(&sock);
        sock.write_all(b"GET /cache/60/one HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
        let response = read_response(&mut sock).await;
        let text = String::from_utf8_lossy(&response);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(response.ends_with(&direct.body), "the body is the backend's");
        segments.push((text.contains("railproxy-cache: HIT"), data_segments_in(&sock) - before));
    }
    // The first is the miss (its header and body cross as they come); the others are hits.
    assert_eq!(segments[1..], [(true, 1), (true, 1)], "(hit, segments) per response: {segments:?}");

    /// One response with a Content-Length body, read to its end.
    async fn read_response(sock: &mut tokio::net::TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early");
            got.extend_from_slice(&buf[..n]);
            let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .expect("content-length");
            if got.len() >= end + 4 + len {
                return got;
            }
        }
    }

    /// Segments with data this socket has received (`tcpi_data_segs_in`). Neither nix nor
    /// tokio reads TCP_INFO.
    #[allow(unsafe_code)]
    fn data_segments_in(sock: &tokio::net::TcpStream) -> u32 {
        use std::os::fd::AsRawFd;
        // SAFETY: tcp_info is plain data, and getsockopt writes at most `len` bytes into it.
        unsafe {
            let mut info: libc::tcp_info = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
            let rc = libc::getsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            );
            assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
            info.tcpi_data_segs_in
        }
    }
}

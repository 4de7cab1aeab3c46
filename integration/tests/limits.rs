//! `limits`: slow heads are cut off while other clients are served, connections are capped in
//! all and per client IP, oversized heads get 431 and bodies 413, HTTP/2 clients are told the
//! stream limit, and a client that resets streams in a burst is cut off.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use integration::raw::send;
use integration::raw_h2::{self, Frame, H2Answer};
use integration::{Http, Knobs, Stack};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn with_limits(limits: &str) -> Knobs {
    Knobs { edge_extra: format!("limits: {limits}\n"), ..Knobs::default() }
}

async fn refusals(stack: &Stack, limit: &str) -> f64 {
    stack.edge_metrics().await.sum("railproxy_limit_refusals_total", &[("limit", limit)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_off_at_the_head_timeout_while_others_are_served() {
    let stack = Stack::start(with_limits("{head_timeout: 1s}")).await;
    let edge = stack.edge_addr;
    // One byte every 100 ms: each read is quick, the head never ends.
    let dribble = tokio::spawn(async move {
        let mut tcp = tokio::net::TcpStream::connect(edge).await.unwrap();
        let start = Instant::now();
        let head = b"GET /pages/generated-10k HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".repeat(4);
        let mut buf = [0u8; 64];
        for b in head {
            if tcp.write_all(&[b]).await.is_err() {
                break;
            }
            // The server closing shows up as EOF (or a reset) here.
            if let Ok(r) = tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut buf)).await {
                assert!(matches!(r, Ok(0) | Err(_)), "the slow client got an answer");
                break;
            }
        }
        start.elapsed()
    });
    // Meanwhile a normal client is served, more than once.
    for i in 0..5 {
        let r = Http::h1().get(&stack.url("/pages/generated-10k"), &[("x-version", &i.to_string())]).await.unwrap();
        assert_eq!(r.status, 200);
    }
    let cut = dribble.await.unwrap();
    eprintln!("slowloris (1 byte / 100 ms) cut off after {cut:?} with head_timeout 1s");
    assert!(cut >= Duration::from_millis(900) && cut < Duration::from_secs(5), "cut off after {cut:?}");
    assert_eq!(refusals(&stack, "head_timeout").await, 1.0);
    // A kept-alive connection that is idle is not a slow head: it keeps its keep-alive time.
    let a = integration::raw::exchange(
        edge,
        &[
            b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        ],
        Duration::from_millis(1500),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(a.statuses().len(), 2, "the second request after 1.5 s idle was not answered: {a:?}");
}

async fn connect_from(ip: [u8; 4], to: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((ip, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// True if the edge answers a request on this connection (false: it closed it).
async fn answers(tcp: &mut tokio::net::TcpStream) -> bool {
    if tcp.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    matches!(tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf)).await, Ok(Ok(n)) if n > 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_in_all_and_per_client_ip() {
    let stack = Stack::start(with_limits("{max_connections: 5, max_connections_per_ip: 3}")).await;
    let edge = stack.edge_addr;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = connect_from([127, 0, 0, 1], edge).await;
        assert!(answers(&mut c).await);
        held.push(c);
    }
    let mut fourth = connect_from([127, 0, 0, 1], edge).await;
    assert!(!answers(&mut fourth).await, "a 4th connection from one IP was served");
    // Another client address still gets in, up to the global cap.
    for _ in 0..2 {
        let mut c = connect_from([127, 0, 0, 2], edge).await;
        assert!(answers(&mut c).await, "another IP was refused below the global cap");
        held.push(c);
    }
    let mut sixth = connect_from([127, 0, 0, 3], edge).await;
    assert!(!answers(&mut sixth).await, "a 6th connection was served");
    // Closing one frees its place.
    drop(held.remove(0));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = connect_from([127, 0, 0, 1], edge).await;
        if answers(&mut again).await {
            break;
        }
        assert!(Instant::now() < deadline, "a closed connection never freed its place");
    }
    drop(held);
    assert!(refusals(&stack, "connections_per_ip").await >= 1.0);
    assert!(refusals(&stack, "connections").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_431_and_bodies_413() {
    let stack = Stack::start(with_limits("{max_headers: 50, max_header_bytes: 16k, max_body: 1M}")).await;
    let edge = stack.edge_addr;
    let many: String = (0..60).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    let fine: String = (0..38).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    let big = format!("X-Big: {}\r\n", "a".repeat(20_000));
    let cases = [
        ("60 header fields", format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n{many}\r\n"), 431),
        ("20 KB of headers", format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n{big}\r\n"), 431),
        (
            "Content-Length 2 MB",
            "POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2000000\r\n\r\n".to_string(),
            413,
        ),
        (
            "40 header fields, 10 KB",
            format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n{fine}X-Big: {}\r\n\r\n", "a".repeat(10_000)),
            200,
        ),
    ];
    for (what, req, want) in cases {
        let a = send(edge, &req).await;
        eprintln!("{what:<28} -> {:?}", a.status);
        assert_eq!(a.status, Some(want), "{what}");
    }
    // A chunked body that grows past the limit is cut off with 413.
    let mut tcp = tokio::net::TcpStream::connect(edge).await.unwrap();
    tcp.write_all(b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n").await.unwrap();
    let chunk = format!("10000\r\n{}\r\n", "b".repeat(0x10000));
    // Just over 1 MB and no more, so that the edge has read all of it when it answers (unread
    // bytes at close would reset the connection and lose the answer).
    for _ in 0..17 {
        if tcp.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    // The answer comes at once; the connection closes once the origin gives up on the body.
    let mut back = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&back).contains("bytes\n") {
        match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => back.extend_from_slice(&buf[..n]),
            other => panic!("no 413 for an endless chunked body: {other:?} after {:?}", String::from_utf8_lossy(&back)),
        }
    }
    let status = integration::raw::status_of(&back);
    eprintln!("{:<28} -> {status:?}", "chunked body over 1 MB");
    assert_eq!(status, Some(413));
    // A body within the limit goes through whole.
    let body = bytes::Bytes::from(vec![b'c'; 500_000]);
    let r = Http::h1().send(http::Method::POST, &stack.url("/echo"), &[], body.clone()).await.unwrap();
    assert!(r.status == 200 && r.body == body);
    assert!(refusals(&stack, "headers").await >= 2.0);
    assert!(refusals(&stack, "body").await >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_are_told_the_stream_limit() {
    let stack = Stack::start(with_limits("{h2_max_streams: 7}")).await;
    let tcp = tokio::net::TcpStream::connect(stack.edge_addr).await.unwrap();
    let (client, mut conn) = h2::client::handshake(tcp).await.unwrap();
    // The server's SETTINGS arrive with the first exchange.
    let mut client = client.ready().await.unwrap();
    let req = http::Request::get(stack.url("/health")).body(()).unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    let status = tokio::select! {
        r = resp => r.unwrap().status(),
        r = &mut conn => panic!("h2 connection ended: {r:?}"),
    };
    assert_eq!(status, 200);
    assert_eq!(conn.max_concurrent_send_streams(), 7);
}

/// Opens `streams` streams and cancels each at once (HTTP/2 rapid reset), all in one write so the
/// edge reads them before it can take any stream up, then pings: the ping's answer shows the
/// edge read the whole burst and kept the connection.
async fn rapid_reset(stack: &Stack, streams: u32) -> H2Answer {
    let authority = stack.url("/").parse::<http::Uri>().unwrap().authority().unwrap().to_string();
    let mut frames = vec![Frame::settings()];
    for id in (1..).step_by(2).take(streams as usize) {
        frames.push(Frame::get(id, &authority, "/health"));
        frames.push(Frame::rst_stream(id, raw_h2::CANCEL));
    }
    let ping = *b"burst-ok";
    frames.push(Frame::ping(ping));
    let answer = raw_h2::exchange(stack.edge_addr, &frames, |f| f.is_ping_ack(ping), Duration::from_secs(5)).await;
    eprintln!(
        "rapid reset of {streams} streams: goaway {:?}, ping answered {}, closed {}",
        answer.goaway_code(),
        answer.matched,
        answer.closed
    );
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_rapid_reset_ends_the_connection() {
    let stack = Stack::start(with_limits("{h2_max_resets: 10}")).await;
    // One over the limit; h2's own default (20) would let these through.
    let burst = rapid_reset(&stack, 11).await;
    assert_eq!(burst.goaway_code(), Some(raw_h2::ENHANCE_YOUR_CALM), "11 reset streams and no GOAWAY: {burst:?}");
    assert!(!burst.matched, "the edge read on after the GOAWAY and answered the ping");
    // Within the limit, the same kind of burst leaves the connection up.
    let within = rapid_reset(&stack, 10).await;
    assert!(within.matched && within.goaway_code().is_none(), "10 reset streams ended the connection: {within:?}");
    // A normal client is still served.
    assert_eq!(Http::h2c().get(&stack.url("/health"), &[]).await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_head_on_a_kept_alive_connection_is_cut_off_too() {
    let stack = Stack::start(with_limits("{head_timeout: 1s, keepalive_timeout: 1s}")).await;
    let mut tcp = tokio::net::TcpStream::connect(stack.edge_addr).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 4096];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "first request not served");
    // The next head dribbles in: it gets the keep-alive wait plus the head timeout, no more.
    let start = Instant::now();
    for b in b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".repeat(3) {
        if tcp.write_all(&[b]).await.is_err() {
            break;
        }
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut buf)).await {
            assert!(matches!(r, Ok(0) | Err(_)), "the slow head got an answer");
            break;
        }
    }
    let cut = start.elapsed();
    eprintln!("slow second head cut off after {cut:?} (keepalive 1s + head 1s)");
    assert!(cut >= Duration::from_millis(1900) && cut < Duration::from_secs(6), "cut off after {cut:?}");
    assert_eq!(refusals(&stack, "head_timeout").await, 1.0);
}

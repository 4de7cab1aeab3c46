//! Request buffering at the edge (`limits.request_buffering`, on by default): a body is read
//! whole and checked before anything goes upstream, so slow uploads hold no backend connection
//! and a body that breaks reaches no backend; large bodies wait in an unlinked temporary file.

use std::time::{Duration, Instant};

use bytes::Bytes;
use integration::raw::exchange;
use integration::recorder::{Recorder, recorded_stack};
use integration::{Http, Knobs, Stack};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `clients` uploads that send their head and half their body, then wait: the backend
/// connections busy meanwhile, and then every upload finished and answered.
async fn slow_uploads(stack: &Stack, recorder: &Recorder, clients: usize) -> usize {
    let mut conns = Vec::new();
    for i in 0..clients {
        let mut tcp = tokio::net::TcpStream::connect(stack.edge_addr).await.unwrap();
        let head =
            format!("POST /slow/{i} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\nConnection: close\r\n\r\n");
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp.write_all(b"12345").await.unwrap();
        conns.push(tcp);
    }
    // Time for each head and half body to cross both hops.
    let settle = Instant::now() + Duration::from_millis(1500);
    let mut busy = 0;
    while Instant::now() < settle {
        busy = busy.max(recorder.busy());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One after another: what is measured is the wait above, not a burst of 200 requests.
    for mut tcp in conns {
        tcp.write_all(b"67890").await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await.unwrap().unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
        assert!(answer.ends_with(b"1234567890"));
    }
    busy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_uploads_hold_no_backend_connection() {
    let (recorder, stack) = recorded_stack("").await;
    let busy = slow_uploads(&stack, &recorder, 200).await;
    println!("200 slow uploads, buffered: at most {busy} backend connections busy");
    assert!(busy <= 4, "{busy} backend connections held by uploads still arriving");
    let seen = recorder.requests();
    assert_eq!(seen.len(), 200);
    assert!(
        seen.iter().all(|r| r.error.is_none() && r.body == b"1234567890" && r.header("content-length") == Some("10"))
    );
    // Turned off, uploads stream as they arrive: each holds a backend connection.
    let (recorder, stack) = recorded_stack("limits:\n  request_buffering: false\n").await;
    let busy = slow_uploads(&stack, &recorder, 20).await;
    println!("20 slow uploads, not buffered: {busy} backend connections busy");
    assert!(busy >= 15, "streamed uploads should each hold a backend connection, saw {busy}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_breaks_or_ends_short_reaches_no_backend() {
    let (recorder, stack) = recorded_stack("").await;
    let h = "Host: 127.0.0.1\r\n";
    // Closed halfway through its declared length.
    let a = exchange(
        stack.edge_addr,
        &[format!("POST /short HTTP/1.1\r\n{h}Content-Length: 100\r\n\r\n").as_bytes(), &[b'x'; 50]],
        Duration::from_millis(50),
        Duration::from_millis(300),
    )
    .await;
    drop(a);
    // A chunk that is not what its size says.
    let a = exchange(
        stack.edge_addr,
        &[format!(
            "POST /broken HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nabcdef\r\n0\r\n\r\n"
        )
        .as_bytes()],
        Duration::ZERO,
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(a.status, Some(400), "{}", String::from_utf8_lossy(&a.bytes));
    // HTTP/2: DATA that disagrees with content-length, both ways.
    for (declared, sent) in [(10usize, 4usize), (4, 10)] {
        let tcp = tokio::net::TcpStream::connect(stack.edge_addr).await.unwrap();
        let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(conn);
        let req = http::Request::post("http://127.0.0.1/h2-mismatch")
            .header("content-length", declared.to_string())
            .body(())
            .unwrap();
        let (answer, mut stream) = client.send_request(req, false).unwrap();
        let _ = stream.send_data(Bytes::from(vec![b'y'; sent]), true);
        let status = tokio::time::timeout(Duration::from_secs(5), answer).await.unwrap().map(|r| r.status());
        assert!(status.as_ref().map_or(true, |s| s.as_u16() >= 400), "declared {declared}, sent {sent}: {status:?}");
    }
    // Nothing half-formed arrived; the next request is served as ever.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(recorder.requests().is_empty(), "{:#?}", recorder.requests());
    let r = Http::h1().send(http::Method::POST, &stack.url("/fine"), &[], Bytes::from_static(b"fine")).await.unwrap();
    assert!(r.status == 200 && r.body.as_ref() == b"fine");
}

/// Descriptors of `pid` open on unlinked files in `dir`.
fn deleted_files_in(pid: u32, dir: &std::path::Path) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return 0 };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir) && target.to_string_lossy().ends_with("(deleted)"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_waits_in_an_unlinked_file_and_arrives_whole() {
    let spool = tempfile::tempdir().unwrap();
    let extra = format!("limits:\n  request_buffer_memory: 64k\n  request_buffer_dir: {}\n", spool.path().display());
    let (recorder, stack) = recorded_stack(&extra).await;
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let mut tcp = tokio::net::TcpStream::connect(stack.edge_addr).await.unwrap();
    let head =
        format!("PUT /big HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&body[..2_000_000]).await.unwrap();
    // Held at the edge, in a file nobody else can open and nothing has to clean up.
    let pid = stack.edge.pid();
    let deadline = Instant::now() + Duration::from_secs(5);
    while deleted_files_in(pid, spool.path()) == 0 {
        assert!(Instant::now() < deadline, "no temporary file for the body");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(std::fs::read_dir(spool.path()).unwrap().next().is_none(), "a named file was left in the directory");
    assert_eq!(recorder.busy(), 0, "the body went upstream before it was whole");
    tcp.write_all(&body[2_000_000..]).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut answer)).await.unwrap().unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer[..answer.len().min(300)]));
    assert!(answer.ends_with(&body));
    let seen = recorder.requests();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].body == body, "the body at the backend differs");
    assert_eq!(deleted_files_in(pid, spool.path()), 0, "the temporary file is still open");
}

/// A buffered body is sent again like a GET: POSTs in flight on a listener that dies before
/// they are answered go to the other listener, whole: up to 64 KB by Pingora's own retry, larger
/// ones by the edge sending the held body again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffered_body_is_sent_again_when_its_listener_dies_before_the_answer() {
    let recorder = Recorder::start().await;
    let knobs = Knobs { backend_override: Some(recorder.addr), origins: 2, ..Knobs::default() };
    let mut stack = Stack::start(knobs).await;
    recorder.answer_after(Duration::from_millis(1500));
    let mut posts = Vec::new();
    for i in 0..12u8 {
        let url = stack.url(&format!("/post/{i}"));
        let size = if i % 2 == 0 { 60_000 } else { 300_000 };
        let body = Bytes::from(vec![b'a' + i; size]);
        posts.push(tokio::spawn(async move {
            let r = Http::h1().send(http::Method::POST, &url, &[], body.clone()).await;
            r.map(|r| r.status == 200 && r.body == body)
        }));
    }
    // Every POST reached the backend through one listener or the other; then one dies.
    let deadline = Instant::now() + Duration::from_secs(5);
    while recorder.requests().len() < 12 {
        assert!(Instant::now() < deadline, "the POSTs did not all reach the backend");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stack.kill_origin(1);
    for p in posts {
        assert_eq!(p.await.unwrap(), Ok(true), "a POST failed although the other listener was up");
    }
    let m = stack.edge_metrics().await;
    assert!(m.sum("railproxy_retries_total", &[]) >= 1.0, "no POST was in flight on the killed listener");
}

/// gRPC bodies are streams a call may answer message by message: never buffered (as nginx's
/// grpc_pass). They reach the backend as they came, not framed by a length the edge counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_bodies_stream_unbuffered() {
    let (recorder, stack) = recorded_stack("").await;
    let tcp = tokio::net::TcpStream::connect(stack.edge_addr).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    for (content_type, buffered) in [("application/grpc", false), ("application/octet-stream", true)] {
        recorder.clear();
        let req =
            http::Request::post("http://127.0.0.1/svc.Echo/Say").header("content-type", content_type).body(()).unwrap();
        let (answer, mut stream) = client.send_request(req, false).unwrap();
        stream.send_data(Bytes::from_static(b"\0\0\0\0\x05hello"), true).unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(5), answer).await.unwrap().unwrap();
        assert_eq!(answer.status(), 200);
        let seen = recorder.requests();
        assert_eq!(seen.len(), 1);
        let framed_by_length = seen[0].framing == integration::recorder::Framing::Length(10);
        assert_eq!(framed_by_length, buffered, "{content_type}: {:?}", seen[0].framing);
    }
}

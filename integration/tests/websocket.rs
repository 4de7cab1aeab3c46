//! WebSocket end to end: a real client library (tungstenite) through edge and origin to a real
//! echo backend, each hop a process of its own. Frames both ways, text and binary, 1 MB
//! messages, pings, close codes both ways, sockets idle past the response timeout, a thousand
//! sockets on one edge, and sockets across a zero-downtime upgrade.

use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use integration::{Knobs, Stack};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long any one frame may take to come back on loopback.
const FRAME: Duration = Duration::from_secs(10);

async fn connect(stack: &Stack) -> Socket {
    let url = format!("ws://{}/ws", stack.edge_addr);
    let (ws, resp) = tokio::time::timeout(FRAME, tokio_tungstenite::connect_async(url))
        .await
        .expect("handshake in time")
        .expect("handshake");
    assert_eq!(resp.status(), 101);
    ws
}

/// The next data or control frame, skipping nothing.
async fn next(ws: &mut Socket) -> Message {
    match tokio::time::timeout(FRAME, ws.next()).await {
        Ok(Some(Ok(m))) => m,
        other => panic!("no frame: {other:?}"),
    }
}

async fn echoes(ws: &mut Socket, msg: Message) {
    ws.send(msg.clone()).await.expect("send");
    let back = next(ws).await;
    assert!(back == msg, "{} bytes sent, {:?} came back", msg.len(), back.len());
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_pings_and_close_codes_cross_both_ways() {
    let stack = Stack::start(Knobs::default()).await;
    let mut ws = connect(&stack).await;
    echoes(&mut ws, Message::text("hello through the tunnel")).await;
    echoes(&mut ws, Message::binary(bytes(1000, 7))).await;
    echoes(&mut ws, Message::binary(bytes(1 << 20, 9))).await;
    let text: String = (0..(1 << 20)).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    echoes(&mut ws, Message::text(text)).await;
    // A ping from the client is answered by the backend's library with its payload.
    ws.send(Message::Ping(b"are you there".to_vec().into())).await.expect("ping");
    assert_eq!(next(&mut ws).await, Message::Pong(b"are you there".to_vec().into()));
    // Many small frames in a row come back in order.
    for i in 0..200 {
        ws.send(Message::text(format!("n{i}"))).await.expect("send");
    }
    for i in 0..200 {
        assert_eq!(next(&mut ws).await, Message::text(format!("n{i}")));
    }
    // The backend closes with a code of its own: the client gets that code.
    ws.send(Message::text("close:4001")).await.expect("send");
    match next(&mut ws).await {
        Message::Close(Some(CloseFrame { code, .. })) => assert_eq!(code, CloseCode::from(4001)),
        other => panic!("expected the backend's close, got {other:?}"),
    }

    // The client closes: its code reaches the backend, whose library answers with it.
    let mut ws = connect(&stack).await;
    echoes(&mut ws, Message::text("one more")).await;
    let bye = CloseFrame { code: CloseCode::Away, reason: "leaving".into() };
    ws.send(Message::Close(Some(bye))).await.expect("close");
    match next(&mut ws).await {
        Message::Close(Some(CloseFrame { code, .. })) => assert_eq!(code, CloseCode::Away),
        other => panic!("expected the close echoed, got {other:?}"),
    }
    // Plain requests still work beside the sockets, over the lanes.
    let page = integration::Http::h1().get(&stack.url("/text/5000"), &[]).await.expect("GET");
    assert_eq!((page.status.as_u16(), page.body.len()), (200, 5000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_outlive_the_response_timeout_until_their_own() {
    let idle = "websocket:\n  idle_timeout: 4s\n".to_string();
    let stack = Stack::start(Knobs {
        response_timeout: "1s".into(),
        edge_extra: idle.clone(),
        origin_extra: idle,
        ..Knobs::default()
    })
    .await;
    let mut ws = connect(&stack).await;
    echoes(&mut ws, Message::text("before")).await;
    // Twice the response timeout of every hop without a frame: still open.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    echoes(&mut ws, Message::text("after 2.5 s of silence")).await;
    // Past `websocket.idle_timeout`: closed by the proxies.
    let quiet = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("closed within 10 s");
    assert!(!matches!(end, Some(Ok(Message::Text(_) | Message::Binary(_)))), "{end:?}");
    let waited = quiet.elapsed();
    assert!(
        waited >= Duration::from_millis(3500) && waited < Duration::from_secs(8),
        "closed after {waited:?} of silence, idle_timeout is 4 s"
    );
}

async fn round(ws: &mut Socket, i: usize, n: usize) -> Result<(), String> {
    let msg = Message::text(format!("socket {i} round {n}"));
    ws.send(msg.clone()).await.map_err(|e| format!("socket {i}: {e}"))?;
    match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
        Ok(Some(Ok(back))) if back == msg => Ok(()),
        other => Err(format!("socket {i} round {n}: {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sockets_on_one_edge() {
    integration::raise_open_files_limit();
    const SOCKETS: usize = 1000;
    let stack = Stack::start(Knobs::default()).await;
    let url = format!("ws://{}/ws", stack.edge_addr);
    let mut tasks = tokio::task::JoinSet::new();
    // Each socket connects, echoes once, waits until all are open, echoes again: a thousand
    // sockets are open on the edge at the same time.
    let all_open = std::sync::Arc::new(tokio::sync::Barrier::new(SOCKETS + 1));
    let handshakes = std::sync::Arc::new(tokio::sync::Semaphore::new(100));
    for i in 0..SOCKETS {
        let (url, all_open, handshakes) = (url.clone(), all_open.clone(), handshakes.clone());
        tasks.spawn(async move {
            let permit = handshakes.acquire_owned().await.expect("semaphore");
            let opened =
                match tokio::time::timeout(Duration::from_secs(30), tokio_tungstenite::connect_async(url)).await {
                    Ok(Ok((ws, _))) => Ok(ws),
                    Ok(Err(e)) => Err(format!("socket {i}: {e}")),
                    Err(_) => Err(format!("socket {i}: handshake timed out")),
                };
            drop(permit);
            let first = match opened {
                Ok(mut ws) => round(&mut ws, i, 1).await.map(|()| ws),
                Err(e) => Err(e),
            };
            // Every task reaches the barrier, so that a failure is reported, not waited on.
            all_open.wait().await;
            let mut ws = first?;
            round(&mut ws, i, 2).await?;
            let _ = ws.close(None).await;
            Ok::<_, String>(())
        });
    }
    tokio::time::timeout(Duration::from_secs(60), all_open.wait()).await.expect("1000 sockets open within 60 s");
    let mut failed = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r.expect("task") {
            failed.push(e);
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {SOCKETS} sockets failed, e.g. {:?}",
        failed.len(),
        &failed[..3.min(failed.len())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_drain_within_the_grace_period_of_an_upgrade() {
    let mut stack = Stack::start(Knobs::default()).await;
    for hop in ["edge", "origin"] {
        let mut old = connect(&stack).await;
        echoes(&mut old, Message::text(format!("before the {hop} upgrade"))).await;
        // SIGQUIT: the new process takes the listening sockets; the old one keeps serving its
        // sockets through the grace period (1 s here), then closes them and exits.
        let started = Instant::now();
        // Its own task: the upgrade below waits for the old process in a blocking call.
        let talker = tokio::spawn(async move {
            let mut answered = 0;
            while started.elapsed() < Duration::from_millis(700) {
                echoes(&mut old, Message::text("during the grace period")).await;
                answered += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (answered, old)
        });
        match hop {
            "edge" => {
                stack.upgrade_edge().await;
            }
            _ => stack.upgrade_origin(0).await,
        }
        let (answered, mut old) = talker.await.expect("talker");
        assert!(answered >= 5, "the {hop}'s old process stopped serving its socket early");
        // The old process has exited (grace period and shutdown timeout, 1 s each): its
        // socket is closed, and a new socket goes to the new process.
        let end = tokio::time::timeout(FRAME, async {
            loop {
                match old.next().await {
                    Some(Ok(Message::Text(_) | Message::Binary(_))) => continue,
                    other => return other,
                }
            }
        })
        .await;
        assert!(end.is_ok(), "the {hop}'s old socket still open after its process exited");
        assert!(started.elapsed() < Duration::from_secs(8), "draining took {:?}", started.elapsed());
        let mut new = connect(&stack).await;
        echoes(&mut new, Message::text(format!("after the {hop} upgrade"))).await;
    }
}

/// What an idle socket costs each end: 2,000 sockets opened (from four loopback addresses, as
/// the edge takes 1,000 connections per address), each echoing once, then held silent. Each
/// is a stream of a tunnel connection, not a TLS connection of its own (which cost ~280 KB at
/// each end); the goal is 50 KB per socket per end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_cost_each_end_little_memory() {
    use integration::bench::rss_bytes;
    integration::raise_open_files_limit();
    const SOCKETS: usize = 2000;
    let stack = Stack::start(Knobs::default()).await;
    let (edge, origin) = (stack.edge.pid(), stack.origins[0].proc.as_ref().expect("origin").pid());
    // The tunnel's connections for sockets are up before the baseline.
    let mut first = connect(&stack).await;
    echoes(&mut first, Message::text("warm")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = (rss_bytes(edge), rss_bytes(origin));
    let url = format!("ws://{}/ws", stack.edge_addr);
    let mut sockets = Vec::with_capacity(SOCKETS);
    for i in 0..SOCKETS {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(std::net::SocketAddr::from(([127, 0, 0, 1 + (i % 4) as u8], 0))).unwrap();
        let tcp = socket.connect(stack.edge_addr).await.expect("connect");
        let (mut ws, _) =
            tokio::time::timeout(FRAME, tokio_tungstenite::client_async(url.as_str(), MaybeTlsStream::Plain(tcp)))
                .await
                .unwrap_or_else(|_| panic!("socket {i}: no handshake within {FRAME:?}"))
                .unwrap_or_else(|e| panic!("socket {i}: {e}"));
        echoes(&mut ws, Message::text(format!("socket {i}"))).await;
        sockets.push(ws);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = (rss_bytes(edge), rss_bytes(origin));
    let per = |b: u64, a: u64| a.saturating_sub(b) as f64 / SOCKETS as f64 / 1024.0;
    let (edge_kb, origin_kb) = (per(before.0, after.0), per(before.1, after.1));
    eprintln!(
        "{SOCKETS} idle sockets: edge {} -> {} MB ({edge_kb:.1} KB per socket), origin {} -> {} MB ({origin_kb:.1} KB per socket)",
        before.0 >> 20,
        after.0 >> 20,
        before.1 >> 20,
        after.1 >> 20
    );
    // Still alive, every one.
    for (i, ws) in sockets.iter_mut().enumerate().step_by(97) {
        echoes(ws, Message::text(format!("still here {i}"))).await;
    }
    // The goal is 50 KB at each end (a connection per socket cost ~280 KB). The edge's share is
    // mostly Pingora's own per-connection state; it held 59 KB until its dial and handshake
    // futures were boxed (edge/websocket.rs, the vendored listening.rs), 44 KB since.
    assert!(edge_kb <= 50.0, "the edge holds {edge_kb:.1} KB per idle socket");
    assert!(origin_kb <= 50.0, "the origin holds {origin_kb:.1} KB per idle socket");
}

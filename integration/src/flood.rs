//! One client's misbehaviour beside everyone else's requests: chunked POSTs of one-byte chunks
//! (written at once, so that a proxy reading a chunk at a time forwards tiny pieces) while
//! other clients fetch a page. Shared by the tunnel test and `railproxy-wanbench`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{Http, raw};

/// A chunked POST to `/echo` of `n` one-byte chunks, and the body it carries.
pub fn one_byte_chunks(n: usize) -> (Vec<u8>, Vec<u8>) {
    let body: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
    let mut req =
        b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for b in &body {
        req.extend_from_slice(b"1\r\n");
        req.push(*b);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    (req, body)
}

/// What a flood run saw.
#[derive(Debug, Clone, Copy)]
pub struct Flood {
    /// One-byte-chunk uploads answered with their exact echo, and those that were not.
    pub uploads: u64,
    pub uploads_failed: u64,
    /// GETs of `/text/2000` beside them, answered 200 with 2000 bytes, and not.
    pub gets: u64,
    pub gets_failed: u64,
}

/// Two clients upload 400 one-byte chunks at a time, over and over, while four fetch a page,
/// through `edge`, for `length`.
pub async fn run(edge: SocketAddr, length: Duration) -> Flood {
    let stop = Instant::now() + length;
    let counters: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let counters = counters.clone();
        tasks.push(tokio::spawn(async move {
            let http = Http::h1();
            let url = format!("http://{edge}/text/2000");
            while Instant::now() < stop {
                let ok = matches!(http.get(&url, &[]).await, Ok(r) if r.status == 200 && r.body.len() == 2000);
                counters[if ok { 2 } else { 3 }].fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for _ in 0..2 {
        let counters = counters.clone();
        tasks.push(tokio::spawn(async move {
            let (req, body) = one_byte_chunks(400);
            while Instant::now() < stop {
                let answer = raw::exchange(edge, &[&req], Duration::ZERO, Duration::from_secs(5)).await;
                let ok = answer.status == Some(200) && answer.bytes.ends_with(&body);
                counters[if ok { 0 } else { 1 }].fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let n = |i: usize| counters[i].load(Ordering::Relaxed);
    Flood { uploads: n(0), uploads_failed: n(1), gets: n(2), gets_failed: n(3) }
}

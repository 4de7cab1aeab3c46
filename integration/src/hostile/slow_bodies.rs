//! Slow request bodies that try to slip past request buffering: each announces a body, sends a
//! little of it, waits, then sends the rest. With buffering they hold a client connection each at
//! the proxy and nothing upstream; a request marked so that a proxy streams its body (an
//! `Upgrade` header that is not a WebSocket handshake, a gRPC content type over HTTP/1.1) would
//! hold a backend connection each instead.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Header lines that mark a slow body, one set per kind of client (they take turns).
pub const DISGUISES: &[&str] = &[
    "Upgrade: foo\r\nConnection: upgrade\r\n",
    "Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
    "Upgrade: websocket, foo\r\nConnection: upgrade\r\n",
    "Upgrade: websocket\r\n",
    "Content-Type: application/grpc\r\n",
    "Content-Type: application/grpc+proto\r\nTE: trailers\r\n",
];

/// The body the `i`-th slow client sends: 1,000 bytes naming it.
pub fn body_of(i: usize) -> Vec<u8> {
    format!("slow body {i:05} ").bytes().cycle().take(1000).collect()
}

/// A slow client's request head for `path`: its disguise, a POST with a 1,000-byte body.
pub fn head(i: usize, host: &str, path: &str) -> String {
    let disguise = DISGUISES[i % DISGUISES.len()];
    format!("POST {path} HTTP/1.1\r\nHost: {host}\r\n{disguise}Content-Length: 1000\r\n\r\n")
}

/// One slow client: sends the head and the body's first 10 bytes, waits until `release`
/// resolves, sends the rest, and returns what came back (status and the bytes after the head).
async fn one(
    addr: SocketAddr,
    i: usize,
    host: String,
    path: String,
    release: tokio::sync::watch::Receiver<bool>,
) -> (Option<u16>, Vec<u8>) {
    let mut release = release;
    let Ok(mut tcp) = tokio::net::TcpStream::connect(addr).await else { return (None, Vec::new()) };
    let body = body_of(i);
    let mut start = head(i, &host, &path).into_bytes();
    start.extend_from_slice(&body[..10]);
    if tcp.write_all(&start).await.is_err() {
        return (None, Vec::new());
    }
    let _ = release.wait_for(|r| *r).await;
    if tcp.write_all(&body[10..]).await.is_err() {
        return (None, Vec::new());
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // One answer: until its head and Content-Length body are in (or the proxy closes).
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let len =
                    head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok());
                if len.is_some_and(|len: usize| got.len() >= end + 4 + len) {
                    break;
                }
            }
        }
    })
    .await;
    let status = crate::raw::status_of(&got);
    let body = got.windows(4).position(|w| w == b"\r\n\r\n").map_or_else(Vec::new, |e| got[e + 4..].to_vec());
    (status, body)
}

/// Slow clients in flight, holding what they hold until [`Slow::finish`].
#[allow(missing_debug_implementations)]
pub struct Slow {
    release: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<(Option<u16>, Vec<u8>)>>,
}

impl Slow {
    /// Starts `n` slow clients of `path` on `addr`.
    pub fn start(addr: SocketAddr, host: &str, path: &str, n: usize) -> Slow {
        let (release, rx) = tokio::sync::watch::channel(false);
        let tasks =
            (0..n).map(|i| tokio::spawn(one(addr, i, host.to_string(), path.to_string(), rx.clone()))).collect();
        Slow { release, tasks }
    }

    /// Lets every client send the rest of its body; each one's status and answer body.
    pub async fn finish(self) -> Vec<(Option<u16>, Vec<u8>)> {
        let _ = self.release.send(true);
        let mut out = Vec::new();
        for t in self.tasks {
            out.push(t.await.unwrap_or((None, Vec::new())));
        }
        out
    }
}

/// A chunked body whose second chunk size is not a number, marked as [`DISGUISES`] `i`, in two
/// pieces (the head and a good first chunk, then the broken rest) to be sent apart: a proxy that
/// streams the body has sent the first piece on before it sees the second. It must reach no
/// backend at all.
pub fn broken_chunked(i: usize, host: &str, path: &str) -> [Vec<u8>; 2] {
    let disguise = DISGUISES[i % DISGUISES.len()];
    [
        format!("POST {path} HTTP/1.1\r\nHost: {host}\r\n{disguise}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            .into_bytes(),
        b"zz\r\nbroken\r\n0\r\n\r\n".to_vec(),
    ]
}

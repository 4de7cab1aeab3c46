//! Raw HTTP/1.x over TCP, for requests no well-behaved client would send.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// What came back for raw bytes.
#[derive(Debug)]
pub struct RawAnswer {
    /// Status of the first response, if one came.
    pub status: Option<u16>,
    /// Whether the server closed the connection (within `wait`).
    pub closed: bool,
    pub bytes: Vec<u8>,
}

impl RawAnswer {
    /// Statuses of every response in the bytes (pipelined or smuggled requests show up here).
    pub fn statuses(&self) -> Vec<u16> {
        let text = String::from_utf8_lossy(&self.bytes);
        text.match_indices("HTTP/1.")
            .filter_map(|(i, _)| text[i..].split(' ').nth(1).and_then(|s| s.get(..3)).and_then(|s| s.parse().ok()))
            .collect()
    }
}

/// Sends `bytes` (in pieces with `gap` between them, if given) and reads until the server
/// closes or `wait` passes without it closing.
pub async fn exchange(addr: SocketAddr, pieces: &[&[u8]], gap: Duration, wait: Duration) -> RawAnswer {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("TCP connect");
    for (i, p) in pieces.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        if tcp.write_all(p).await.is_err() {
            break;
        }
    }
    let mut bytes = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; 16384];
    let closed = loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    RawAnswer { status: status_of(&bytes), closed, bytes }
}

/// The status of the HTTP/1.x response these bytes start with, if they start with one.
pub fn status_of(bytes: &[u8]) -> Option<u16> {
    std::str::from_utf8(&bytes[..bytes.len().min(12)])
        .ok()
        .and_then(|s| s.strip_prefix("HTTP/1.1 ").or_else(|| s.strip_prefix("HTTP/1.0 ")))
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
}

/// One request as a single write, 2 s to answer.
pub async fn send(addr: SocketAddr, request: &str) -> RawAnswer {
    exchange(addr, &[request.as_bytes()], Duration::ZERO, Duration::from_secs(2)).await
}

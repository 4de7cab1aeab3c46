//! Abandoned upgrades: a client sends a WebSocket handshake and closes its connection before the
//! answer comes. Whatever the proxy opened for it (a tunnel connection, a backend connection, a
//! client-connection slot) must go at once, not when an idle timeout ends it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;

/// A WebSocket handshake for `path` on `host`.
pub fn handshake(host: &str, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Sends `n` handshakes for `path` to `addr`, `at_once` at a time, each closed `linger` after it
/// was written; returns how many were written.
pub async fn abandon(addr: SocketAddr, host: &str, path: &str, n: usize, at_once: usize, linger: Duration) -> usize {
    let request = handshake(host, path);
    let mut sent = 0;
    for round in 0..n.div_ceil(at_once) {
        let this = at_once.min(n - round * at_once);
        let mut tasks = Vec::new();
        for _ in 0..this {
            let request = request.clone();
            tasks.push(tokio::spawn(async move {
                let Ok(mut tcp) = tokio::net::TcpStream::connect(addr).await else { return false };
                let ok = tcp.write_all(request.as_bytes()).await.is_ok();
                tokio::time::sleep(linger).await;
                ok
            }));
        }
        for t in tasks {
            sent += usize::from(t.await.unwrap_or(false));
        }
    }
    sent
}

/// File descriptors `pid` holds open now (sockets, mostly), from /proc.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Waits up to `limit` for `pid` to hold at most `at_most` descriptors; the count it ended at,
/// and how long that took.
pub async fn fds_settle(pid: u32, at_most: usize, limit: Duration) -> (usize, Duration) {
    let start = std::time::Instant::now();
    loop {
        let n = open_fds(pid);
        if n <= at_most || start.elapsed() > limit {
            return (n, start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

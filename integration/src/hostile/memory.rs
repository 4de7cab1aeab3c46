//! What client connections cost a proxy in memory: thousands of clients that each fetched a page
//! and keep their connection open (a browser's keep-alive), then all leave. A proxy's resident
//! memory should grow by what a connection needs while they are open, and come back near where
//! it started once they are gone.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Clients holding their kept-alive connections open.
#[derive(Debug)]
pub struct Held {
    pub connections: Vec<tokio::net::TcpStream>,
    /// Those whose page came back (status 200) before they went idle.
    pub answered: usize,
}

/// `n` clients, spread over `sources`, each fetch `path` on `host` once over a connection of its
/// own (HTTP/1.1 keep-alive), `at_once` at a time, and keep the connection.
pub async fn hold(addr: SocketAddr, host: &str, path: &str, n: usize, sources: &[IpAddr], at_once: usize) -> Held {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let mut held = Held { connections: Vec::with_capacity(n), answered: 0 };
    for round in 0..n.div_ceil(at_once) {
        let tasks: Vec<_> = (round * at_once..n.min((round + 1) * at_once))
            .map(|i| {
                let (request, source) = (request.clone(), sources[i % sources.len()]);
                tokio::spawn(async move { one(addr, source, &request).await })
            })
            .collect();
        for t in tasks {
            if let Ok(Some((tcp, ok))) = t.await {
                held.answered += usize::from(ok);
                held.connections.push(tcp);
            }
        }
    }
    held
}

/// One client: connect from `source`, send `request`, read one answer (its head, then as many
/// bytes as its Content-Length says), keep the connection.
async fn one(addr: SocketAddr, source: IpAddr, request: &str) -> Option<(tokio::net::TcpStream, bool)> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(source, 0)).ok()?;
    let mut tcp = tokio::time::timeout(Duration::from_secs(30), socket.connect(addr)).await.ok()?.ok()?;
    tcp.write_all(request.as_bytes()).await.ok()?;
    let (mut got, mut buf) = (Vec::new(), [0u8; 16384]);
    let read = async {
        loop {
            let n = tcp.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            got.extend_from_slice(&buf[..n]);
            let end = got.windows(4).position(|w| w == b"\r\n\r\n")?;
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length:"))?.trim().parse().ok()?;
            if got.len() >= end + 4 + len {
                return Some(crate::raw::status_of(&got) == Some(200));
            }
        }
    };
    let ok = tokio::time::timeout(Duration::from_secs(30), read).await.ok().flatten().unwrap_or(false);
    Some((tcp, ok))
}

/// Resident memory of `pids` and their direct children (nginx's workers), in bytes.
pub fn rss(pids: &[u32]) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid =
            stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).and_then(|p| p.parse::<u32>().ok());
        if pids.contains(&pid) || ppid.is_some_and(|p| pids.contains(&p)) {
            total += crate::bench::rss_bytes(pid);
        }
    }
    total
}

/// The RSS of `pids` once `wait` has passed.
pub async fn rss_after(pids: &[u32], wait: Duration) -> u64 {
    tokio::time::sleep(wait).await;
    rss(pids)
}

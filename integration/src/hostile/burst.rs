//! A burst: thousands of clients, from several source addresses (a proxy limits connections per
//! address), each sending one GET at the same moment on a connection of its own, and waiting as
//! long as a browser would. Behind the proxy, a backend slow to accept connections (a small
//! backlog, a pause after each accept, and no accept at all for the burst's first moments: see
//! [`stall`]) whose accept queue the burst overflows.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// What the burst's clients got.
#[derive(Debug, Clone, Default)]
pub struct Burst {
    pub sent: usize,
    /// Answered 200 with exactly the expected body.
    pub ok: usize,
    /// Every outcome: a status, or 0 for no answer.
    pub statuses: BTreeMap<u16, usize>,
    /// The first few answers that were not right.
    pub examples: Vec<String>,
}

/// Loopback addresses `127.0.0.2` … `127.0.0.(n+1)`, the burst's sources: 127.0.0.1 is left to
/// bystanders, whose connections would otherwise count against the same per-address limit.
pub fn sources(n: u8) -> Vec<IpAddr> {
    (2..=n + 1).map(|i| IpAddr::from([127, 0, 0, i])).collect()
}

/// Tells a test backend (`railproxy-testbackend`) to accept no new connection for `ms`: the
/// burst that follows fills its accept queue, and the SYNs beyond it are dropped.
pub async fn stall(backend: SocketAddr, ms: u64) {
    let r = crate::Http::h1().get(&format!("http://{backend}/stall?ms={ms}"), &[]).await.expect("backend answers");
    assert_eq!(r.status, 200, "{backend} did not stall");
}

/// `n` GETs of `path` on `host` at once to `addr`, spread over `sources`, each waiting up to
/// `wait` for its answer; every answer is compared with `expected`.
pub async fn run(
    addr: SocketAddr,
    host: &str,
    path: &str,
    n: usize,
    sources: &[IpAddr],
    expected: &[u8],
    wait: Duration,
) -> Burst {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (request, source, start) = (request.clone(), sources[i % sources.len()], start.clone());
            tokio::spawn(async move {
                let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
                socket.bind(SocketAddr::new(source, 0)).map_err(|e| format!("bind {source}: {e}"))?;
                // Every client is ready before any sends: one burst, not a ramp.
                start.wait().await;
                let exchange = async {
                    let mut tcp = socket.connect(addr).await.map_err(|e| format!("connect: {e}"))?;
                    tcp.write_all(request.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
                    let mut got = Vec::new();
                    tcp.read_to_end(&mut got).await.map_err(|e| format!("read: {e}"))?;
                    Ok::<_, String>(got)
                };
                tokio::time::timeout(wait, exchange).await.map_err(|_| format!("no answer in {wait:?}"))?
            })
        })
        .collect();
    let mut burst = Burst { sent: n, ..Burst::default() };
    for t in tasks {
        let answer = t.await.map_err(|e| e.to_string()).and_then(|r| r);
        let (status, right, what) = match &answer {
            Ok(bytes) => {
                let status = crate::raw::status_of(bytes).unwrap_or(0);
                let body = response_body(bytes);
                let right = status == 200 && body.as_deref() == Some(expected);
                let what = String::from_utf8_lossy(&bytes[..bytes.len().min(160)]).replace("\r\n", " | ");
                (status, right, what)
            }
            Err(e) => (0, false, e.clone()),
        };
        *burst.statuses.entry(status).or_default() += 1;
        if right {
            burst.ok += 1;
        } else if burst.examples.len() < 5 {
            burst.examples.push(what);
        }
    }
    burst
}

/// The body of one HTTP/1.1 response read to its connection's end: by Content-Length, chunked,
/// or to the end.
pub fn response_body(bytes: &[u8]) -> Option<Vec<u8>> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
    let rest = &bytes[end + 4..];
    if head.lines().any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked")) {
        let (mut body, mut at) = (Vec::new(), 0);
        loop {
            let line_end = at + rest[at..].windows(2).position(|w| w == b"\r\n")?;
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[at..line_end]).ok()?.split(';').next()?.trim(), 16)
                    .ok()?;
            at = line_end + 2;
            if size == 0 {
                return Some(body);
            }
            body.extend_from_slice(rest.get(at..at + size)?);
            at += size + 2;
        }
    }
    match head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok()) {
        Some(len) => rest.get(..len).map(<[u8]>::to_vec),
        None => Some(rest.to_vec()),
    }
}

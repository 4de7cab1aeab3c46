//! A backend that never reads request bodies, as Python's `http.server` (and many small
//! frameworks) do for a GET: it reads a request head, answers it on the kept-alive connection,
//! and takes whatever bytes come next as the next request. A body a proxy forwarded with a GET is
//! therefore read as a request of its own, and its answer queued behind the real one: a proxy
//! that reuses that connection hands the stray answer to whoever asks next.
//!
//! Every answer's body names the target it answers (`answer for GET /path`), so a client can
//! tell its own answer from another's; it says `Cache-Control: public, max-age=60` so that an
//! edge cache would store a stray answer under the victim's URL.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

#[derive(Debug)]
pub struct NaiveBackend {
    pub addr: SocketAddr,
    /// Request heads answered, and among them those whose target was `/smuggled…`.
    answered: Arc<AtomicU64>,
    smuggled: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for NaiveBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The body the naive backend answers `target` with.
pub fn answer_for(target: &str) -> String {
    format!("answer for GET {target}\n")
}

impl NaiveBackend {
    pub async fn start() -> NaiveBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind naive backend");
        let addr = listener.local_addr().expect("bound");
        let (answered, smuggled) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (a, s) = (answered.clone(), smuggled.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (a, s) = (a.clone(), s.clone());
                tokio::spawn(async move { serve(tcp, &a, &s).await });
            }
        });
        NaiveBackend { addr, answered, smuggled, task }
    }

    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Answers to request heads that came from inside another request's body.
    pub fn smuggled(&self) -> u64 {
        self.smuggled.load(Ordering::Relaxed)
    }
}

async fn serve(mut tcp: tokio::net::TcpStream, answered: &AtomicU64, smuggled: &AtomicU64) {
    let _ = tcp.set_nodelay(true);
    let (mut pending, mut buf) = (Vec::new(), vec![0u8; 16384]);
    loop {
        // One head: up to the blank line. Whatever follows is the next head (the body is never
        // read as a body).
        let end = loop {
            if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        };
        let head = String::from_utf8_lossy(&pending[..end]).to_string();
        pending.drain(..end);
        let target = head.split_whitespace().nth(1).unwrap_or("?").to_string();
        answered.fetch_add(1, Ordering::Relaxed);
        if target.starts_with("/smuggled") {
            smuggled.fetch_add(1, Ordering::Relaxed);
        }
        // A moment's work per request, as a real handler takes: an answer to bytes that followed
        // a head then comes after the answer to that head, not in the same segment.
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        let body = answer_for(&target);
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: public, max-age=60\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if tcp.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

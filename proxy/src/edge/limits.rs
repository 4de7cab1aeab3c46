//! Per-connection and per-request-head limits, wrapped around Pingora's HTTP proxy app:
//! connection caps (global and per client IP) and the request-head timeout that cuts off
//! slowloris clients. Pingora bounds each read of a head, not the head as a whole, and has no
//! connection caps, so these sit between its listener and its proxy.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use pingora_core::protocols::Stream;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::http::v2::server::H2Options;
use pingora_core::server::ShutdownWatch;

use crate::metrics;

tokio::task_local! {
    /// Set once the request head has been read (the proxy creates its context then).
    static HEAD_READ: Arc<AtomicBool>;
    /// This HTTP/1 connection (Pingora serves its requests in the connection's task).
    static CONNECTION: Arc<Connection>;
}

#[derive(Debug, Default)]
struct Connection {
    /// Requests started on it.
    requests: AtomicUsize,
    /// Its first request head has been read.
    first_head: AtomicBool,
}

/// Called by the proxy when a request's context is created: its head is complete.
pub fn head_read() {
    let _ = HEAD_READ.try_with(|done| done.store(true, Ordering::Relaxed));
    let _ = CONNECTION.try_with(|c| c.first_head.store(true, Ordering::Relaxed));
}

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Bounds the time until the head of each further request on a kept-alive HTTP/1 connection is
/// read (the first one is bounded by [`ConnectionCaps`]).
pub struct HeadTimeout<A> {
    inner: Arc<A>,
    head_timeout: Duration,
    /// On a kept-alive connection the head may only start after this idle wait.
    keepalive_timeout: Duration,
}

impl<A> HeadTimeout<A> {
    /// `inner` is shared: the edge's prober hands it probes too.
    pub fn new(inner: Arc<A>, head_timeout: Duration, keepalive_timeout: Duration) -> Self {
        Self { inner, head_timeout, keepalive_timeout }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> HttpServerApp for HeadTimeout<A> {
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let reused = CONNECTION.try_with(|c| c.requests.fetch_add(1, Ordering::Relaxed) > 0).unwrap_or(false);
        if !reused {
            // A connection's first head is bounded by `ConnectionCaps` from accept, and HTTP/2
            // heads arrive whole: no timer needed on this path.
            return self.inner.process_new_http(session, shutdown).await;
        }
        // A connection coming back for its next request waits idle first (Pingora bounds that
        // wait by the keep-alive timeout), then gets the same head timeout.
        let limit = self.keepalive_timeout + self.head_timeout;
        let done = Arc::new(AtomicBool::new(false));
        let request = HEAD_READ.scope(done.clone(), self.inner.process_new_http(session, shutdown));
        tokio::pin!(request);
        tokio::select! {
            reused = &mut request => reused,
            () = tokio::time::sleep(limit) => {
                if done.load(Ordering::Relaxed) {
                    request.await
                } else {
                    // Dropping the request closes the connection.
                    metrics::LIMIT_REFUSALS.with_label_values(&["head_timeout"]).inc();
                    None
                }
            }
        }
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.inner.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.inner.server_options()
    }

    async fn http_cleanup(&self) {
        self.inner.http_cleanup().await;
    }
}

/// Open client connections, in all and per IP address.
#[derive(Debug, Default)]
struct Open {
    all: AtomicUsize,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Counts a connection until dropped.
struct Slot {
    open: Arc<Open>,
    ip: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.all.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.ip {
            let mut by_ip = self.open.by_ip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = by_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    by_ip.remove(&ip);
                }
            }
        }
    }
}

/// Closes connections beyond the caps as soon as they are accepted (0: no cap), and cleartext
/// connections whose first request head is not in within the head timeout. That clock starts
/// at accept: Pingora first waits for 24 bytes to tell HTTP/2 from HTTP/1.1, without a bound.
pub struct ConnectionCaps<A> {
    inner: Arc<A>,
    max: usize,
    per_ip: usize,
    head_timeout: Duration,
    open: Arc<Open>,
}

impl<A> ConnectionCaps<A> {
    pub fn new(inner: A, max: usize, per_ip: usize, head_timeout: Duration) -> Self {
        Self { inner: Arc::new(inner), max, per_ip, head_timeout, open: Arc::default() }
    }

    fn admit(&self, ip: Option<IpAddr>) -> Result<Slot, &'static str> {
        let all = self.open.all.fetch_add(1, Ordering::Relaxed) + 1;
        // From here the slot undoes the counts when dropped, refused or not.
        let mut slot = Slot { open: self.open.clone(), ip: None };
        if self.max > 0 && all > self.max {
            return Err("connections");
        }
        if let Some(ip) = ip {
            let mut by_ip = self.open.by_ip.lock().unwrap_or_else(|p| p.into_inner());
            let n = by_ip.entry(ip).or_default();
            *n += 1;
            slot.ip = Some(ip);
            if self.per_ip > 0 && *n > self.per_ip {
                return Err("connections_per_ip");
            }
        }
        Ok(slot)
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for ConnectionCaps<A> {
    async fn process_new(self: &Arc<Self>, mut stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let ip = stream.get_socket_digest().and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let _slot = match self.admit(ip) {
            Ok(slot) => slot,
            Err(limit) => {
                metrics::LIMIT_REFUSALS.with_label_values(&[limit]).inc();
                return None;
            }
        };
        let deadline = tokio::time::Instant::now() + self.head_timeout;
        let h2 = if stream.get_ssl_digest().is_some() {
            matches!(stream.selected_alpn_proto(), Some(pingora_core::protocols::ALPN::H2))
        } else {
            // The same peek Pingora does next (it rewinds, so Pingora sees the same bytes).
            let mut first = [0u8; 24];
            match tokio::time::timeout_at(deadline, stream.try_peek(&mut first)).await {
                Ok(Ok(_)) => first == *H2_PREFACE,
                Ok(Err(_)) => return None,
                Err(_) => {
                    metrics::LIMIT_REFUSALS.with_label_values(&["head_timeout"]).inc();
                    return None;
                }
            }
        };
        if h2 {
            // HTTP/2 heads arrive whole, in HEADERS frames.
            return self.inner.process_new(stream, shutdown).await;
        }
        let connection = Arc::new(Connection::default());
        let serve = CONNECTION.scope(connection.clone(), self.inner.process_new(stream, shutdown));
        tokio::pin!(serve);
        tokio::select! {
            reused = &mut serve => reused,
            () = tokio::time::sleep_until(deadline) => {
                if connection.first_head.load(Ordering::Relaxed) {
                    serve.await
                } else {
                    metrics::LIMIT_REFUSALS.with_label_values(&["head_timeout"]).inc();
                    None
                }
            }
        }
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_per_ip_and_in_all_and_release_on_drop() {
        let caps = ConnectionCaps::new((), 3, 2, Duration::from_secs(1));
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let a1 = caps.admit(Some(a)).unwrap();
        let _a2 = caps.admit(Some(a)).unwrap();
        assert_eq!(caps.admit(Some(a)).err(), Some("connections_per_ip"));
        let _b1 = caps.admit(Some(b)).unwrap();
        assert_eq!(caps.admit(Some(b)).err(), Some("connections"));
        drop(a1);
        assert!(caps.admit(Some(b)).is_ok(), "a closed connection frees its place");
        assert_eq!(caps.open.all.load(Ordering::Relaxed), 2);
        assert_eq!(caps.open.by_ip.lock().unwrap().get(&a), Some(&1));
    }
}

//! `limits:` what one client may ask of the edge. Defaults follow nginx where it has one.

use std::time::Duration;

use super::reader::{ByteSize, Secs, Section};

#[derive(Debug, Clone)]
pub struct Limits {
    /// The whole request head (request line and headers) must arrive within this; slow heads
    /// (slowloris) are cut off. Counts from the connection's first byte wait, or, on a kept-alive
    /// connection, from the end of its idle wait.
    pub head_timeout: Duration,
    /// Idle keep-alive connections are closed after this.
    pub keepalive_timeout: Duration,
    /// Header fields per request; more get 431.
    pub max_headers: usize,
    /// Request line and headers, bytes; more get 431.
    pub max_header_bytes: u64,
    /// Request body bytes; more get 413.
    pub max_body: u64,
    /// Client connections open at once (0: no cap); further connections are closed at once.
    pub max_connections: usize,
    /// Client connections open at once from one IP address (0: no cap).
    pub max_connections_per_ip: usize,
    /// Concurrent streams per client HTTP/2 connection.
    pub h2_max_streams: u32,
    /// HTTP/2 streams a client may reset before the server has accepted them, and streams the
    /// server may reset for a client's protocol errors, before the connection is closed
    /// (rapid reset, CVE-2023-44487).
    pub h2_max_resets: usize,
}

impl Limits {
    pub fn read(s: &Section<'_>) -> Self {
        let l = Limits {
            head_timeout: s.or("head_timeout", Secs(Duration::from_secs(10))).0,
            keepalive_timeout: s.or("keepalive_timeout", Secs(Duration::from_secs(60))).0,
            max_headers: s.or("max_headers", 100usize),
            max_header_bytes: s.or("max_header_bytes", ByteSize(32 << 10)).0,
            max_body: s.or("max_body", ByteSize(100 << 20)).0,
            max_connections: s.or("max_connections", 10_000usize),
            max_connections_per_ip: s.or("max_connections_per_ip", 1000usize),
            h2_max_streams: s.or("h2_max_streams", 100u32),
            h2_max_resets: s.or("h2_max_resets", 100usize),
        };
        if l.head_timeout.is_zero() {
            s.problem("head_timeout", "must be more than 0");
        }
        if l.keepalive_timeout < Duration::from_secs(1) {
            s.problem("keepalive_timeout", "must be at least 1s (Pingora counts it in whole seconds)");
        }
        if !(1..=256).contains(&l.max_headers) {
            s.problem("max_headers", "must be from 1 to 256 (Pingora's parser stops at 256)");
        }
        if !(1024..=(1 << 20)).contains(&l.max_header_bytes) {
            s.problem("max_header_bytes", "must be from 1k to 1M");
        }
        if l.h2_max_streams == 0 {
            s.problem("h2_max_streams", "must be at least 1");
        }
        l
    }
}

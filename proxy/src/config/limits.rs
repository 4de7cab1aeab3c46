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
    /// Methods the edge forwards; others get 405 with `Allow` naming these. TRACE is not among
    /// the defaults (it echoes requests, credentials included) and CONNECT is never served.
    pub methods: Vec<http::Method>,
    /// Keep header fields whose names hold `_`; by default they are dropped (nginx's
    /// `underscores_in_headers off`): a backend may read `X_User` as `X-User`, a name the
    /// edge and other hops treat as a different field.
    pub underscores_in_headers: bool,
    /// The `Allow` value of a 405, from `methods`.
    pub allow: String,
    /// Read each request body whole before anything goes upstream (a host's
    /// `request_buffering` overrides it): slow uploads then hold no backend connection.
    pub request_buffering: bool,
    /// Bytes of one body held in memory; the rest of a larger one goes to a temporary file.
    pub request_buffer_memory: u64,
    /// Where those files are made (unlinked at once, so nothing is left behind).
    pub request_buffer_dir: std::path::PathBuf,
    /// Longest wait for the next piece of a request body being buffered (nginx's
    /// client_body_timeout); the client then gets 408.
    pub body_timeout: Duration,
    /// What a GET or HEAD request carrying a body gets.
    pub get_bodies: GetBodies,
}

/// What a GET or HEAD with a body gets (`limits.get_bodies`). Such content has no defined
/// meaning (RFC 9110 §9.3.1), and a backend that does not read it (Python's `http.server` and
/// its family) takes it for a request of its own, which then reaches the backend past every
/// check the edge makes (host, method, headers) and is answered to no one; no proxy can stop
/// that once the body is sent. Some APIs do search with a GET body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetBodies {
    /// 400, nothing goes upstream (the default; CloudFront refuses them too).
    Refuse,
    /// Forwarded, on a backend connection of its own that is closed after the answer (see
    /// `http1_reuse`), never answered from or stored in the cache.
    Forward,
}

impl GetBodies {
    fn read(s: &Section<'_>) -> Self {
        match s.or("get_bodies", "refuse".to_string()).as_str() {
            "refuse" => GetBodies::Refuse,
            "forward" => GetBodies::Forward,
            other => {
                s.problem("get_bodies", format!("{other:?} is neither refuse nor forward"));
                GetBodies::Refuse
            }
        }
    }
}

/// `limits.methods` unless set: what sites use, without TRACE.
const DEFAULT_METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

impl Limits {
    pub fn read(s: &Section<'_>) -> Self {
        let mut l = Limits {
            head_timeout: s.or("head_timeout", Secs(Duration::from_secs(10))).0,
            keepalive_timeout: s.or("keepalive_timeout", Secs(Duration::from_secs(60))).0,
            max_headers: s.or("max_headers", 100usize),
            max_header_bytes: s.or("max_header_bytes", ByteSize(32 << 10)).0,
            max_body: s.or("max_body", ByteSize(100 << 20)).0,
            max_connections: s.or("max_connections", 10_000usize),
            max_connections_per_ip: s.or("max_connections_per_ip", 1000usize),
            h2_max_streams: s.or("h2_max_streams", 100u32),
            h2_max_resets: s.or("h2_max_resets", 100usize),
            methods: Vec::new(),
            underscores_in_headers: s.or("underscores_in_headers", false),
            allow: String::new(),
            request_buffering: s.or("request_buffering", true),
            request_buffer_memory: s.or("request_buffer_memory", ByteSize(64 << 10)).0,
            request_buffer_dir: s.or("request_buffer_dir", std::env::temp_dir()),
            body_timeout: s.or("body_timeout", Secs(Duration::from_secs(60))).0,
            get_bodies: GetBodies::read(s),
        };
        let names: Vec<String> = if s.has("methods") {
            s.list("methods")
        } else {
            DEFAULT_METHODS.iter().map(ToString::to_string).collect()
        };
        for name in names {
            match http::Method::from_bytes(name.as_bytes()) {
                Ok(m) if m == http::Method::CONNECT => {
                    s.problem("methods", "CONNECT cannot be allowed: this is a reverse proxy");
                }
                Ok(m) if name.bytes().all(|b| b.is_ascii_uppercase() || b == b'-') => {
                    if !l.methods.contains(&m) {
                        l.methods.push(m);
                    }
                }
                _ => s.problem("methods", format!("{name:?} is not a method name (upper case, e.g. GET)")),
            }
        }
        if s.has("methods") && l.methods.is_empty() {
            s.problem("methods", "must list at least one method");
        }
        l.allow = l.methods.iter().map(http::Method::as_str).collect::<Vec<_>>().join(", ");
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
        if l.body_timeout.is_zero() {
            s.problem("body_timeout", "must be more than 0");
        }
        if l.request_buffering && !l.request_buffer_dir.is_dir() {
            let dir = l.request_buffer_dir.display();
            s.problem("request_buffer_dir", format!("{dir} is not a directory"));
        }
        if l.h2_max_streams == 0 {
            s.problem("h2_max_streams", "must be at least 1");
        }
        l
    }
}

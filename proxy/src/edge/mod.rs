//! Edge mode: the reverse proxy near users. Each request goes to an origin listener for its Host
//! over a pooled, multiplexed HTTP/2 + TLS tunnel, naming the version the edge holds; tunnel
//! bodies are decoded, verified and stored before the client gets them.

mod cache;
mod decode;
pub mod listeners;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::modules::http::HttpModules;
use pingora_core::modules::http::compression::ResponseCompressionBuilder;
use pingora_core::protocols::Digest;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use tunnel::codec::{DecodeOptions, Decoder, Encoding};
use tunnel::protocol;
use tunnel::store::{MemoryStore, VersionStore};
use tunnel::{Version, VersionId};

use crate::config::EdgeConfig;
use crate::config::edge::Fallback;
use crate::http_util::{self, header_str};
use crate::metrics;
use crate::tls::{self, SharedPeerTls};
use decode::BodyDecoder;

const MODE: &str = "edge";

pub struct Edge {
    config: Arc<EdgeConfig>,
    tls: SharedPeerTls,
    store: Arc<MemoryStore<String>>,
    listeners: Arc<listeners::Listeners>,
    /// One lock per origin listener, held from `upstream_peer` until the tunnel stream is
    /// acquired. Pingora takes a pooled HTTP/2 connection out of its pool while it opens a
    /// stream, so concurrent requests would otherwise miss it and dial more connections
    /// (measured: 14 of 40 bursts of 100 requests opened extra connections without the lock,
    /// 0 of 40 with it). Requests wait for each other's stream (microseconds) or handshake.
    acquire: HashMap<SocketAddr, Arc<tokio::sync::Mutex<()>>>,
    cache: Option<cache::EdgeCache>,
}

impl Edge {
    /// Whether a request may go to another listener after the tunnel failed: a configured
    /// method, and no body (which Pingora could not send again).
    fn retryable(&self, session: &Session) -> bool {
        let req = session.req_header();
        let has_body = req.headers.contains_key(http::header::TRANSFER_ENCODING)
            || http_util::header_str(req.headers.get(http::header::CONTENT_LENGTH)).is_some_and(|v| v.trim() != "0");
        !has_body && self.config.failover.retry_methods.iter().any(|m| m == req.method.as_str())
    }

    pub fn new(
        config: Arc<EdgeConfig>,
        tls: SharedPeerTls,
        store: Arc<MemoryStore<String>>,
        listeners: Arc<listeners::Listeners>,
    ) -> Self {
        let acquire = config
            .origins
            .iter()
            .flat_map(|o| o.listeners.iter().copied())
            .map(|a| (a, Arc::new(tokio::sync::Mutex::new(()))))
            .collect();
        let cache = config.cache.enabled.then(|| cache::EdgeCache::new(&config.cache));
        Edge { config, tls, store, listeners, acquire, cache }
    }
}

/// Per-request state.
pub struct EdgeCtx {
    start: Instant,
    /// Dropped with the context, after `logging` recorded this request.
    _in_flight: metrics::InFlight,
    host: Option<String>,
    /// Version-store key; only GET responses are versions.
    key: Option<String>,
    /// The version named in `Available-Dictionary`.
    base: Option<Version>,
    /// Set after a base mismatch: the retry asks without a base.
    without_base: bool,
    body: Option<BodyDecoder>,
    encoding: Encoding,
    raw_bytes: u64,
    /// Request body bytes read from the client so far.
    body_in: u64,
    wire_bytes: u64,
    /// Held while Pingora acquires the tunnel stream for this request.
    acquiring: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// The listener this attempt goes to, and those that failed this request already.
    listener: Option<SocketAddr>,
    tried: Vec<SocketAddr>,
    /// No listener was up: the request goes straight to the origin.
    direct: bool,
}

/// GOAWAY(NO_ERROR) or REFUSED_STREAM from the origin: it is closing the connection in order and
/// did not process the request (RFC 9113 §8.7).
fn graceful_h2_shutdown(e: &Error) -> bool {
    e.root_cause().downcast_ref::<h2::Error>().is_some_and(|h2e| {
        h2e.is_remote()
            && ((h2e.is_go_away() && h2e.reason() == Some(h2::Reason::NO_ERROR))
                || (h2e.is_reset() && h2e.reason() == Some(h2::Reason::REFUSED_STREAM)))
    })
}

/// Errors that say the tunnel (not the request) failed: connecting, TLS, the connection closing
/// or resetting, HTTP/2 connection errors and GOAWAY. What a client did (a broken request body,
/// a reset of its own stream) never marks a listener down: clients cannot take listeners out.
fn tunnel_failure(e: &Error) -> bool {
    if *e.esource() == pingora_error::ErrorSource::Downstream {
        return false;
    }
    if let Some(h2e) = e.root_cause().downcast_ref::<h2::Error>() {
        // A stream reset or a request h2 refused to send concerns one request only.
        return h2e.is_io() || h2e.is_go_away();
    }
    matches!(
        e.etype(),
        ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectError
            | ErrorType::TLSHandshakeFailure
            | ErrorType::TLSHandshakeTimedout
            | ErrorType::ConnectionClosed
            | ErrorType::ReadError
            | ErrorType::WriteError
            | ErrorType::H2Error
            | ErrorType::InvalidH2
    )
}

fn verify_error(reason: &'static str, detail: &str) -> Box<Error> {
    metrics::VERIFY_FAILURES.with_label_values(&[reason]).inc();
    Error::explain(ErrorType::Custom("tunnel body refused"), format!("{reason}: {detail}"))
}

impl Edge {
    /// A request head beyond `limits`: status, metric label, why.
    fn over_limits(&self, session: &Session) -> Option<(u16, &'static str, String)> {
        let l = &self.config.limits;
        let req = session.req_header();
        let fields = req.headers.len();
        if fields > l.max_headers {
            return Some((431, "headers", format!("{fields} header fields, at most {} are accepted", l.max_headers)));
        }
        let head = match session.as_downstream().as_http1() {
            Some(h1) => h1.get_headers_raw_bytes().len() as u64,
            // HTTP/2: as RFC 9113 §6.5.2 counts it (name + value + 32 per field).
            None => req.headers.iter().map(|(n, v)| (n.as_str().len() + v.len() + 32) as u64).sum(),
        };
        if head > l.max_header_bytes {
            return Some((
                431,
                "headers",
                format!("{head} bytes of headers, at most {} are accepted", l.max_header_bytes),
            ));
        }
        match http_util::header_str(req.headers.get(http::header::CONTENT_LENGTH)).map(str::parse::<u64>) {
            Some(Ok(n)) if n > l.max_body => {
                Some((413, "body", format!("a body of {n} bytes, at most {} are accepted", l.max_body)))
            }
            _ => None,
        }
    }
}

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = EdgeCtx;

    fn new_ctx(&self) -> Self::CTX {
        crate::limits::head_read();
        EdgeCtx {
            start: Instant::now(),
            _in_flight: metrics::InFlight::start(MODE),
            host: None,
            key: None,
            base: None,
            without_base: false,
            body: None,
            encoding: Encoding::Identity,
            raw_bytes: 0,
            body_in: 0,
            wire_bytes: 0,
            acquiring: None,
            listener: None,
            tried: Vec::new(),
            direct: false,
        }
    }

    fn init_downstream_modules(&self, modules: &mut HttpModules) {
        // Clients get gzip, br or zstd per their Accept-Encoding; what crosses the tunnel and
        // what is stored stays independent of that.
        if self.config.client_compression > 0 {
            modules.add_module(ResponseCompressionBuilder::enable(self.config.client_compression));
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        if let Some(problem) = http_util::session_framing_problem(session) {
            return http_util::refuse(session, 400, problem).await;
        }
        let req = session.req_header();
        if let Some((status, problem)) = http_util::target_problem(req) {
            return http_util::refuse(session, status, problem).await;
        }
        if let Some((status, limit, problem)) = self.over_limits(session) {
            metrics::LIMIT_REFUSALS.with_label_values(&[limit]).inc();
            return http_util::refuse(session, status, &problem).await;
        }
        session.set_keepalive(Some(self.config.limits.keepalive_timeout.as_secs()));
        let req = session.req_header();
        let host = http_util::request_host(req);
        match &host {
            None => return http_util::refuse(session, 400, "no Host").await,
            Some(h) if self.config.route(h).is_none() => {
                return http_util::refuse(session, 421, "this edge does not serve that host").await;
            }
            Some(_) => {}
        }
        let req = session.req_header();
        if req.method == http::Method::GET {
            let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
            ctx.key = Some(format!("{}{path}", host.as_deref().unwrap_or_default()));
        }
        ctx.host = host;
        Ok(false)
    }

    fn request_cache_filter(&self, session: &mut Session, _ctx: &mut Self::CTX) -> Result<()> {
        if let Some(cache) = &self.cache {
            cache.enable(session);
        }
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut Self::CTX) -> Result<pingora_cache::CacheKey> {
        Ok(cache::key(ctx.host.as_deref().unwrap_or_default(), session.req_header()))
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        _ctx: &mut Self::CTX,
    ) -> Result<pingora_cache::RespCacheable> {
        Ok(cache::cacheable(session.req_header(), resp))
    }

    fn cache_vary_filter(
        &self,
        meta: &pingora_cache::CacheMeta,
        _ctx: &mut Self::CTX,
        req: &RequestHeader,
    ) -> Option<pingora_cache::key::HashBinary> {
        cache::variance(meta, req)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        if self.cache.is_some() {
            let status = cache::status(session.cache.phase());
            metrics::CACHE.with_label_values(&[status]).inc();
            resp.insert_header("railproxy-cache", status)?;
        }
        Ok(())
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Self::CTX) -> Result<Box<HttpPeer>> {
        let host = ctx.host.as_deref().unwrap_or_default();
        let route = self
            .config
            .route(host)
            .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, format!("no origin for host {host}")))?;
        let Some(listener) = self.listeners.pick(host, &ctx.tried) else {
            ctx.listener = None;
            return match &route.fallback {
                Fallback::Direct(addr) => {
                    metrics::FALLBACKS.with_label_values(&["direct"]).inc();
                    ctx.direct = true;
                    let t = &self.config.tunnel;
                    let mut peer = HttpPeer::new(*addr, false, String::new());
                    peer.options.connection_timeout = Some(t.connect_timeout);
                    peer.options.read_timeout = Some(t.response_timeout);
                    Ok(Box::new(peer))
                }
                Fallback::Error => {
                    metrics::FALLBACKS.with_label_values(&["error"]).inc();
                    Err(Error::explain(ErrorType::HTTPStatus(502), format!("no origin listener for {host} is up")))
                }
            };
        };
        ctx.direct = false;
        ctx.listener = Some(listener.addr);
        if let Some(lock) = self.acquire.get(&listener.addr) {
            // Bounded: a listener that does not answer must not queue requests behind each
            // other's connect timeouts.
            let wait = self.config.tunnel.connect_timeout;
            ctx.acquiring = tokio::time::timeout(wait, lock.clone().lock_owned()).await.ok();
        }
        Ok(Box::new(listeners::tunnel_peer(&self.config, &self.tls.load(), listener.addr, &listener.server_name)))
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        digest: Option<&Digest>,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        ctx.acquiring = None;
        if ctx.direct || reused {
            return Ok(());
        }
        metrics::TUNNEL_CONNECTIONS.with_label_values(&[MODE]).inc();
        if let Some(version) = tls::not_tls13(digest) {
            metrics::TUNNEL_AUTH_FAILURES.with_label_values(&["tls12"]).inc();
            return Error::e_explain(
                ErrorType::TLSHandshakeFailure,
                format!("origin listener negotiated {version}, the tunnel is TLS 1.3 only"),
            );
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.acquiring = None;
        if let Some(addr) = ctx.listener.take() {
            self.listeners.mark_down(addr, &e.to_string());
            ctx.tried.push(addr);
            // Nothing reached the origin: any request may go to another listener.
            e.set_retry(true);
            metrics::RETRIES.inc();
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Self::CTX,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if session.response_written().is_none() && !ctx.direct && graceful_h2_shutdown(&e) {
            // The listener is shutting down gracefully (an upgrade or a restart) and did not
            // process this request: send it again, on a new connection, without marking it down.
            e.set_retry(true);
            metrics::RETRIES.inc();
            return e;
        }
        if session.response_written().is_none() && !ctx.direct && tunnel_failure(&e) {
            if let Some(addr) = ctx.listener.take() {
                self.listeners.mark_down(addr, &e.to_string());
                ctx.tried.push(addr);
            }
            let retry = self.retryable(session);
            e.set_retry(retry);
            if retry {
                metrics::RETRIES.inc();
            }
            return e;
        }
        // Pingora's policy otherwise: idempotent requests whose body was kept.
        if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated() {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, _ctx: &mut Self::CTX) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ => match e.esource() {
                pingora_error::ErrorSource::Upstream => 502,
                pingora_error::ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                _ => 500,
            },
        };
        if code > 0 && session.response_written().is_none() {
            // Say why, so that an operator reading a client's error page knows where to look.
            let reason = http::StatusCode::from_u16(code).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error");
            let detail = if *e.esource() == pingora_error::ErrorSource::Downstream {
                format!("the request could not be read ({})", e.etype().as_str())
            } else {
                e.context.as_ref().map(|c| c.as_str().to_string()).unwrap_or_default()
            };
            let body = Bytes::from(format!("{code} {reason}: {detail}\n"));
            let _ = session.respond_error_with_body(code, body).await;
        }
        FailToProxy { error_code: code, can_reuse_downstream: false }
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // Nothing a client sends may steer the tunnel.
        http_util::strip_tunnel_headers_req(upstream_request);
        if ctx.direct {
            // Straight to the origin: the request as the client sent it, no tunnel encodings.
            ctx.base = None;
            return Ok(());
        }
        upstream_request.insert_header(http::header::ACCEPT_ENCODING, protocol::TUNNEL_ACCEPT_ENCODING)?;
        if let Some(client) = session.client_addr().and_then(|a| a.as_inet()) {
            let forwarded = match header_str(upstream_request.headers.get("x-forwarded-for")) {
                Some(prev) => format!("{prev}, {}", client.ip()),
                None => client.ip().to_string(),
            };
            upstream_request.insert_header("x-forwarded-for", forwarded)?;
        }
        ctx.base = None;
        if let Some(key) = ctx.key.as_ref().filter(|_| !ctx.without_base) {
            match self.store.get(key).await {
                Some(version) => {
                    upstream_request.insert_header(protocol::AVAILABLE_DICTIONARY, version.id.to_sf())?;
                    ctx.base = Some(version);
                    metrics::BASE.with_label_values(&[MODE, "hit"]).inc();
                }
                None => metrics::BASE.with_label_values(&[MODE, "miss"]).inc(),
            }
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // Chunked and HTTP/2 bodies announce no length: counted as they come.
        ctx.body_in += body.as_ref().map_or(0, |b| b.len() as u64);
        if ctx.body_in > self.config.limits.max_body {
            metrics::LIMIT_REFUSALS.with_label_values(&["body"]).inc();
            // Answered here: Pingora takes a body filter error for an upstream one and would
            // keep the client waiting for the origin's answer to a body that never ends.
            *body = None;
            let why = format!("request body over {} bytes", self.config.limits.max_body);
            if session.response_written().is_none() {
                http_util::refuse(session, 413, &why).await?;
            }
            return Error::e_explain(ErrorType::HTTPStatus(413), why);
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let encoding = header_str(resp.headers.get(http::header::CONTENT_ENCODING)).and_then(Encoding::from_token);
        let named_base = resp.headers.get(protocol::DELTA_BASE).and_then(|v| VersionId::parse_sf(v.as_bytes()).ok());
        let raw_length = header_str(resp.headers.get(protocol::RAW_LENGTH)).and_then(|v| v.parse::<u64>().ok());
        http_util::strip_tunnel_headers_resp(resp);
        let limits = &self.config.delta;
        let opts = DecodeOptions { max_output: raw_length.unwrap_or(limits.max_decoded), require_checksum: true };
        let decoder = match encoding {
            Some(Encoding::Dcz) => {
                let Some(base) = ctx.base.as_ref().filter(|b| Some(b.id) == named_base) else {
                    // The origin answered against a base other than the one named: nothing has
                    // gone to the client yet, so ask once more without a base.
                    let e = verify_error(
                        "base_mismatch",
                        &format!(
                            "asked against {:?}, answered against {named_base:?}",
                            ctx.base.as_ref().map(|b| b.id)
                        ),
                    );
                    if let Some(key) = &ctx.key {
                        self.store.remove(key);
                    }
                    if !ctx.without_base {
                        ctx.without_base = true;
                        metrics::BASE_RETRIES.inc();
                        let mut e = e;
                        e.set_retry(true);
                        return Err(e);
                    }
                    return Err(e);
                };
                Decoder::dcz(base, opts)
            }
            Some(Encoding::Zstd) => Decoder::zstd(opts),
            _ => return Ok(()),
        }
        .map_err(|e| Error::because(ErrorType::InternalError, "starting the tunnel decoder", e))?;
        ctx.encoding = decoder.encoding();
        resp.remove_header(&http::header::CONTENT_ENCODING);
        // The decoded body's length, also for a HEAD that the cache sent upstream as a GET.
        match raw_length {
            Some(n) => resp.insert_header(http::header::CONTENT_LENGTH, n.to_string())?,
            None => {
                resp.remove_header(&http::header::CONTENT_LENGTH);
            }
        }
        ctx.body = Some(BodyDecoder::new(decoder, limits.max_body, raw_length));
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<std::time::Duration>> {
        let wire = body.as_ref().map_or(0, |b| b.len() as u64);
        ctx.wire_bytes += wire;
        let Some(decoder) = ctx.body.as_mut() else {
            ctx.raw_bytes += wire;
            return Ok(None);
        };
        match decoder.push(body.as_deref(), end_of_stream) {
            Ok(out) => {
                ctx.raw_bytes += out.send.as_ref().map_or(0, |b| b.len() as u64);
                *body = out.send;
                if let (Some(complete), Some(key)) = (out.complete, ctx.key.clone()) {
                    let status = session.response_written().map_or(200, |r| r.status.as_u16());
                    if status == 200 {
                        self.store.put(key, complete);
                    }
                }
                Ok(None)
            }
            Err(refused) => {
                // Whatever this key held may be what went wrong; the next request goes in full.
                if let Some(key) = &ctx.key {
                    self.store.remove(key);
                }
                if refused.after_output {
                    metrics::ABORTED.inc();
                }
                *body = None;
                Err(verify_error(refused.reason, &refused.detail))
            }
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let elapsed = ctx.start.elapsed();
        metrics::request_done(MODE, if status == 0 { 502 } else { status }, elapsed.as_secs_f64());
        let enc = ctx.encoding.as_str();
        metrics::RAW_BYTES.with_label_values(&[MODE, enc]).inc_by(ctx.raw_bytes);
        metrics::WIRE_BYTES.with_label_values(&[MODE, enc]).inc_by(ctx.wire_bytes);
        if let Some(e) = e {
            metrics::UPSTREAM_ERRORS.with_label_values(&[MODE, crate::proxy_common::error_kind(e)]).inc();
        }
        crate::proxy_common::access_log(
            MODE,
            session,
            status,
            enc,
            ctx.raw_bytes,
            ctx.wire_bytes,
            ctx.base.is_some(),
            elapsed,
            e,
        );
    }
}

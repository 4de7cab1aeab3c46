//! Origin mode: terminates the tunnel (TLS 1.3, HTTP/2), routes by Host (exact, wildcard or
//! default) and path prefix to pools of backends (HTTP/1.1, TLS or h2c; see `backends`), and
//! answers with a dcz delta against the base the edge named, or the full body in zstd.

pub mod backends;
pub mod dial;
mod encode;
mod pause;
pub mod redis_store;
mod websocket;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use delta::codec::Encoding;
use delta::store::VersionStore;
use delta::{Version, VersionId};
use pingora_core::protocols::ALPN;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{ProxyHttp, Session};

use crate::config::OriginConfig;
use crate::envelope::Envelope;
use crate::http_util;
use crate::http1_reuse;
use crate::metrics;
use crate::tunnel::protocol::{self, Accepts, Probe, TunnelRequest};
use crate::versions::{self, Keep, Versions};
use backends::{InFlight, Pool, Upstreams};
use encode::{BodyEncoder, Plan};

const MODE: &str = "origin";

/// Connects a request may make to its host's backends, each bounded by
/// `backend.connect_timeout`: every backend once, and while attempts remain, again (see
/// `Pool::select`). Four at the default 2 s is 8 s, as long as a client that sees a burst
/// through waits; nginx waits 60 s on one connect.
const CONNECT_ATTEMPTS: usize = 4;

/// Remembers which tunnel connections were seen, to count them (Pingora has no accept hook).
/// A connection is its two ends: every lane an origin dials out has the same peer (the edge's
/// connector listener) and a port of its own here.
#[derive(Debug)]
struct ConnectionTracker(Mutex<lru::LruCache<(SocketAddr, Option<SocketAddr>), ()>>);

impl ConnectionTracker {
    fn new() -> Self {
        ConnectionTracker(Mutex::new(lru::LruCache::new(std::num::NonZeroUsize::new(65_536).expect("non-zero"))))
    }

    fn saw(&self, peer: SocketAddr, local: Option<SocketAddr>) {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if seen.put((peer, local), ()).is_none() {
            metrics::TUNNEL_CONNECTIONS.with_label_values(&[MODE]).inc();
        }
    }
}

pub struct Origin {
    config: Arc<OriginConfig>,
    /// Backend connections of WebSockets, made outside Pingora's proxy (which carries no
    /// upgrade from an HTTP/2 stream) and never pooled.
    connector: pingora_core::connectors::TransportConnector,
    upstreams: Arc<Upstreams>,
    store: Arc<dyn VersionStore<VersionId>>,
    connections: ConnectionTracker,
    delta_params: delta::codec::DeltaParams,
}

impl Origin {
    pub fn new(config: Arc<OriginConfig>, store: Arc<dyn VersionStore<VersionId>>, upstreams: Arc<Upstreams>) -> Self {
        let delta_params = config.effort.params();
        let connector = pingora_core::connectors::TransportConnector::new(None);
        Origin { config, connector, upstreams, store, connections: ConnectionTracker::new(), delta_params }
    }
}

/// Per-request state.
pub struct OriginCtx {
    envelope: Envelope,
    host: Option<String>,
    /// The base the edge named and this origin holds; once the response is in, only if the
    /// body is a delta against it.
    base: Option<Version>,
    /// Whose version the response is, as the edge said.
    versions: Versions,
    /// Where the response is kept, once its header is in.
    keep: Option<Keep>,
    /// The encodings the edge accepts on this request.
    accepts: Accepts,
    body: Option<BodyEncoder>,
    /// A health probe from an edge.
    probe: bool,
    /// The backends this request's host and path go to.
    pool: Option<Arc<Pool>>,
    /// The backend of this attempt (held while in flight), and those that could not be reached
    /// for this request.
    backend: Option<(pingora_load_balancing::Backend, InFlight)>,
    /// This attempt's turn to connect, held until its connection is up or failed.
    connecting: Option<backends::ConnectSlot>,
    tried: Vec<SocketAddr>,
    /// A WebSocket upgrade over HTTP/1.1, on a tunnel connection of its own: how an edge of an
    /// earlier version sends one (today's open a stream, see `websocket`).
    websocket: bool,
    /// The edge reads segmented bodies.
    segments: bool,
    /// The backend connection of this attempt, asked whether the backend paused.
    backend_fd: Option<std::os::unix::io::RawFd>,
}

#[async_trait]
impl ProxyHttp for Origin {
    type CTX = OriginCtx;

    fn new_ctx(&self) -> Self::CTX {
        OriginCtx {
            envelope: Envelope::open(MODE),
            host: None,
            pool: None,
            base: None,
            versions: Versions::default(),
            keep: None,
            accepts: Accepts { dcz: false, zstd: false },
            body: None,
            probe: false,
            backend: None,
            connecting: None,
            tried: Vec::new(),
            websocket: false,
            segments: false,
            backend_fd: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        if let Some(peer) = session.client_addr().and_then(|a| a.as_inet()) {
            self.connections.saw(*peer, session.server_addr().and_then(|a| a.as_inet()).copied());
        }
        if http_util::client_cancelled(session) {
            // The edge reset this stream (its client went away) before it was taken up here.
            return Err(http_util::cancelled_error(MODE));
        }
        if Probe::is(session.req_header()) {
            // An edge checking this listener: answered here, no backend involved, not counted.
            ctx.probe = true;
            let mut resp = ResponseHeader::build(200, Some(2))?;
            resp.insert_header(http::header::CONTENT_LENGTH, Probe::ANSWER.len().to_string())?;
            session.write_response_header(Box::new(resp), false).await?;
            session.write_response_body(Some(Bytes::from_static(Probe::ANSWER)), true).await?;
            return Ok(true);
        }
        if crate::tunnel::websocket::is_extended_connect(session.req_header()) {
            // A client's WebSocket, as a stream of the tunnel: joined to the backend here.
            return websocket::carry(self, session).await;
        }
        if let Some(problem) = http_util::session_framing_problem(session) {
            return http_util::refuse(session, 400, "framing", problem).await;
        }
        if let Some((status, problem)) = http_util::target_problem(session.req_header()) {
            return http_util::refuse(session, status, "target", problem).await;
        }
        http_util::absolute_form_to_origin_form(session.req_header_mut())?;
        let req = session.req_header();
        let host = http_util::request_host(req);
        if host.is_none() {
            return http_util::refuse(session, 400, "host", "no Host").await;
        }
        let pool = host.as_deref().and_then(|h| self.upstreams.pool(h, req.uri.path()));
        let Some(pool) = pool else {
            let host = host.as_deref().unwrap_or("");
            if self.upstreams.serves(host) {
                let message = format!("no route of host {host:?} takes this path");
                return http_util::refuse(session, 404, "route", &message).await;
            }
            let message = format!("this origin listener does not serve host {host:?}");
            return http_util::refuse(session, 421, "host", &message).await;
        };
        ctx.pool = Some(pool.clone());
        ctx.host = host;
        if http_util::is_websocket_upgrade(req) {
            // Both sides of an upgraded socket wait up to its idle timeout (see `upstream_peer`).
            ctx.websocket = true;
            session.set_read_timeout(Some(self.config.websocket.idle_timeout));
        }
        let req = session.req_header();
        let asked = TunnelRequest::read(req);
        ctx.accepts = asked.accepts;
        ctx.segments = asked.segments;
        ctx.versions = asked.versions;
        let result = match asked.base {
            None => "none",
            Some(id) if asked.accepts.dcz && req.method == http::Method::GET => match self.store.get(&id).await {
                Some(base) => {
                    ctx.base = Some(base);
                    "hit"
                }
                None => "miss",
            },
            Some(_) => "none",
        };
        metrics::BASE.with_label_values(&[MODE, result]).inc();
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Self::CTX) -> Result<Box<HttpPeer>> {
        let host = ctx.host.as_deref().unwrap_or_default();
        let pool = ctx.pool.as_ref().ok_or_else(|| Error::explain(ErrorType::InternalError, "no pool"))?;
        // Healthy backends only, and not one that already failed this request.
        let (backend, held) = pool.select(&ctx.tried, ctx.tried.len() < CONNECT_ATTEMPTS).ok_or_else(|| {
            let why = match ctx.tried.len() {
                0 => format!("no backend of {host} is known"),
                n => format!("no backend of {host} could be reached ({n} connects failed)"),
            };
            Error::explain(ErrorType::HTTPStatus(502), why)
        })?;
        let b = &self.config.backend;
        // Waits its turn to connect, as long as its connect attempts could last.
        let wait = b.connect_timeout.saturating_mul(CONNECT_ATTEMPTS as u32);
        ctx.connecting = Some(pool.connect_slot(&backend, wait).await.ok_or_else(|| {
            let why = format!("backend {} of {host}: no turn to connect within {wait:?}", backend.addr);
            Error::explain(ErrorType::HTTPStatus(502), why)
        })?);
        let mut peer = pool.peer(&backend, ctx.websocket);
        ctx.backend = Some((backend, held));
        peer.options.connection_timeout = Some(b.connect_timeout);
        peer.options.read_timeout = Some(match ctx.websocket {
            true => self.config.websocket.idle_timeout,
            false => b.response_timeout,
        });
        peer.options.idle_timeout = Some(b.idle_timeout);
        Ok(Box::new(peer))
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        peer: &HttpPeer,
        #[cfg(unix)] fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // A peer that offers HTTP/1.1 only speaks it; one that offers h2 as well may have
        // chosen either, and is left to Pingora's own checks.
        let http1 = peer.options.alpn == ALPN::H1;
        ctx.connecting = None;
        if let Some(e) = http1_reuse::stray_bytes(reused, http1, fd, MODE) {
            return Err(e);
        }
        ctx.backend_fd = Some(fd);
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.connecting = None;
        // Nothing reached that backend: try another of the host's, while there is one.
        if let Some((b, _)) = ctx.backend.take() {
            metrics::BACKEND_CONNECT_FAILURES.inc();
            log::warn!("backend {} of {} unreachable: {e}", b.addr, ctx.host.as_deref().unwrap_or_default());
            if let (Some(pool), Some(addr)) = (&ctx.pool, b.addr.as_inet()) {
                pool.failed(&b);
                ctx.tried.push(*addr);
            }
            e.set_retry(true);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        _ctx: &mut Self::CTX,
        client_reused: bool,
    ) -> Box<Error> {
        if http1_reuse::is_stray(&e) {
            // Dropped before anything of the request was written: any request goes again.
            return e;
        }
        // Pingora's own policy, counted: a kept-alive backend connection that failed before any
        // of the answer came is retried once on a fresh one, for idempotent requests whose body
        // is still held; a POST may have been acted on, so it is not (as nginx).
        let mut e = e.more_context(format!("Peer: {peer}"));
        http_util::pingora_retry_policy(session, &mut e, client_reused);
        if e.retry() {
            metrics::BACKEND_RETRIES.inc();
        }
        e
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Self::CTX, e: &Error) -> bool {
        // An edge resetting a stream speaks for a client that went away.
        http_util::is_cancellation(e)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        if http_util::client_cancelled(session) {
            // Reset while a backend connection was found for it: the backend never sees it.
            return Err(http_util::cancelled_error(MODE));
        }
        protocol::strip_request(upstream_request);
        http1_reuse::close_after_unread_body(session, upstream_request, MODE)?;
        // Deltas are made on bodies as the backend renders them; clients get their compression
        // from the edge.
        upstream_request.insert_header(http::header::ACCEPT_ENCODING, Encoding::Identity.as_str())?;
        // HTTP/2 carries the host in :authority; HTTP/1.1 backends want Host and origin-form.
        if let Some(authority) = upstream_request.uri.authority().map(|a| a.as_str().to_string()) {
            if !upstream_request.headers.contains_key(http::header::HOST) {
                upstream_request.insert_header(http::header::HOST, authority)?;
            }
            let path = upstream_request.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
            upstream_request
                .set_uri(path.parse().map_err(|_| Error::explain(ErrorType::InvalidHTTPHeader, "bad path"))?);
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        http_util::no_empty_last_piece(body, end_of_stream);
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        protocol::strip_response(resp);
        let keep = versions::keep(ctx.versions, resp);
        let plan = Plan::decide(
            session.req_header(),
            resp,
            self.config.delta.max_body,
            ctx.accepts.zstd,
            ctx.base.as_ref().filter(|_| ctx.accepts.dcz),
            keep,
        );
        ctx.envelope.encoding = plan.encoding();
        let (level, max_body) = (self.config.full_level, self.config.delta.max_body);
        ctx.body = plan.start(resp, &self.delta_params, level, max_body, ctx.segments)?;
        match plan {
            Plan::Delta { .. } => metrics::DELTAS.with_label_values(&[MODE, keep.class()]).inc(),
            Plan::Full { refused: true, .. } => metrics::VERSIONS.with_label_values(&[MODE, keep.class()]).inc(),
            _ => {}
        }
        if !matches!(plan, Plan::Delta { .. }) {
            ctx.base = None;
        }
        ctx.keep = Some(keep);
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<std::time::Duration>> {
        let n = body.as_ref().map_or(0, |b| b.len() as u64);
        ctx.envelope.raw_bytes += n;
        let Some(encoder) = ctx.body.as_mut() else {
            ctx.envelope.wire_bytes += n;
            return Ok(None);
        };
        // Pieces Pingora already read and queued behind this one are not a pause, whatever the
        // socket says.
        let paused = !end_of_stream && !session.upstream_task_queued() && pause::paused(ctx.backend_fd, n);
        let (out, finished) = encoder.push(body.take(), end_of_stream, paused)?;
        ctx.envelope.wire_bytes += out.as_ref().map_or(0, |b| b.len() as u64);
        *body = out;
        if end_of_stream && encoder.unchanged() {
            metrics::UNCHANGED.with_label_values(&[MODE]).inc();
        }
        if let Some(version) = finished {
            self.store.put(version.id, version);
            let class = ctx.keep.map_or("anonymous", Keep::class);
            metrics::VERSIONS.with_label_values(&[MODE, class]).inc();
        }
        Ok(None)
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        if !ctx.probe {
            ctx.envelope.close(session, e, ctx.base.as_ref().map(|b| &b.id));
        }
    }
}

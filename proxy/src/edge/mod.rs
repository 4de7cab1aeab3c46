//! Edge mode: the reverse proxy near users. Each request goes to an origin listener for its Host
//! over a pooled, multiplexed HTTP/2 + TLS tunnel, naming the version the edge holds; tunnel
//! bodies are decoded, verified and stored before the client gets them.

mod browser_dictionaries;
mod buffering;
mod cache;
mod client_compression;
mod coalesce;
mod decode;
pub mod limits;
mod pace;
mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use delta::Version;
use delta::store::{MemoryStore, VersionStore};
use pingora_core::modules::http::HttpModules;
use pingora_core::protocols::Digest;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::config::EdgeConfig;
use crate::config::edge::Fallback;
use crate::config::limits::GetBodies;
use crate::envelope::Envelope;
use crate::http_util;
use crate::http1_reuse;
use crate::metrics;
use crate::resolve::Names;
use crate::tunnel::connectors::{Registry, TunnelUse};
use crate::tunnel::listeners::{LaneUse, Listeners};
use crate::tunnel::peer::{self, tunnel_peer};
use crate::tunnel::protocol::{self, Accepts, LaneProbe, TunnelRequest};
use crate::tunnel::tcp;
use crate::tunnel::tls::{self, SharedPeerTls};
use crate::versions::{self, Keep, Scope, UserKeys, Versions};
use decode::{BodyDecoder, Start};

const MODE: &str = "edge";

pub struct Edge {
    config: Arc<EdgeConfig>,
    tls: SharedPeerTls,
    store: Arc<MemoryStore<String>>,
    listeners: Arc<Listeners>,
    /// What the prober's probes carry (see `LaneProbe`).
    probe_secret: String,
    /// Sets up each new tunnel socket (`tunnel::tcp`).
    tcp: tcp::Hook,
    cache: Option<cache::EdgeCache>,
    /// Looks up the `direct` fallback's name.
    names: Arc<Names>,
    /// Tells users apart, for versions of their own.
    users: UserKeys,
    /// The lanes of origins that dial out, by tunnel (`connectors:`).
    connectors: Option<Arc<Registry>>,
    /// The connections that carry WebSockets to origin listeners.
    sockets: crate::tunnel::socket_lanes::ListenerSockets,
}

impl Edge {
    /// Whether a request may go to another lane or listener after the tunnel failed before its
    /// response: one of the configured methods without a body, or any request whose body the
    /// edge still holds whole (Pingora keeps up to 64 KB of it to send again).
    fn retryable(&self, session: &Session) -> bool {
        let req = session.req_header();
        let has_body = req.headers.contains_key(http::header::TRANSFER_ENCODING)
            || http_util::header_str(req.headers.get(http::header::CONTENT_LENGTH)).is_some_and(|v| v.trim() != "0");
        if has_body {
            return !session.as_ref().retry_buffer_truncated();
        }
        self.config.failover.retry_methods.iter().any(|m| m == req.method.as_str())
    }

    /// A request the tunnel failed before any answer goes again, to another lane or listener,
    /// if it may ([`Edge::retryable`]); a buffered body too large for Pingora to keep is sent
    /// again by the edge itself, which holds it whole.
    fn send_again(&self, session: &Session, e: &mut Error) {
        let retry = self.retryable(session);
        e.set_retry(retry);
        if retry {
            metrics::RETRIES.inc();
        } else if let Some(replayed) = buffering::Replayed::of(session) {
            replayed.ask_resend();
        }
    }

    pub fn new(
        config: Arc<EdgeConfig>,
        tls: SharedPeerTls,
        store: Arc<MemoryStore<String>>,
        listeners: Arc<Listeners>,
        probe_secret: String,
        names: Arc<Names>,
        connectors: Option<Arc<Registry>>,
    ) -> Self {
        let cache = config.cache.enabled.then(|| cache::EdgeCache::new(&config.cache));
        let tcp = tcp::hook(config.tunnel.congestion_control.as_deref());
        let users = UserKeys::new(&config.credentials.headers);
        let sockets = crate::tunnel::socket_lanes::ListenerSockets::new(&config.tunnel);
        Edge { config, tls, store, listeners, probe_secret, tcp, cache, names, users, connectors, sockets }
    }
}

/// Why a request failed, for the client's error page: the innermost reason given, never the
/// peer description Pingora's hooks add (the origin listener's address, SNI and this edge's
/// client certificate are for the log, not for anyone who can send a request).
fn reason_for_client(e: &Error) -> String {
    let mut at = e;
    loop {
        match at.context.as_ref().map(|c| c.as_str()) {
            Some(c) if !c.starts_with("Peer: ") => return c.to_string(),
            _ => match at.cause.as_deref().and_then(|c| c.downcast_ref::<Error>()) {
                Some(inner) => at = inner,
                None => return at.etype().as_str().to_string(),
            },
        }
    }
}

/// Per-request state.
pub struct EdgeCtx {
    envelope: Envelope,
    host: Option<String>,
    /// Version-store key (the URL's, or the URL's and the user's); only GET responses are
    /// versions, and only those the response lets be kept.
    key: Option<String>,
    /// Whose this request's version is, as the origin is told.
    versions: Versions,
    /// Where the response is kept, once its header is in.
    keep: Option<Keep>,
    /// The version named in `Available-Dictionary`.
    base: Option<Version>,
    /// Set after a base mismatch: the retry asks without a base.
    without_base: bool,
    body: Option<BodyDecoder>,
    /// Request body bytes read from the client so far.
    body_in: u64,
    /// Joins an HTTP/1.x client's small body pieces before they enter the tunnel.
    joiner: Option<coalesce::Joiner>,
    /// Held while Pingora acquires the tunnel stream for this request.
    acquiring: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// The lane this attempt goes to, the listeners this request could not connect to, and
    /// whether it was sent upstream before (panic routing is for a first attempt only).
    lane: Option<LaneUse>,
    tried: Vec<SocketAddr>,
    /// As `lane` and `tried`, for a host served by a tunnel that dials out.
    dial: Option<TunnelUse>,
    tried_lanes: Vec<u64>,
    attempts: u32,
    /// A probe from this edge's prober, for this lane.
    probe: Option<LaneProbe>,
    /// No listener was up: the request goes straight to the origin.
    direct: bool,
    /// The body was buffered and the request handed on as a subrequest, which answers and is
    /// logged in its own right.
    handed_off: bool,
    /// A WebSocket upgrade: a stream of a tunnel connection (`edge::websocket`), or, when the
    /// host falls back to its origin directly, Pingora's own upgrade there.
    websocket: bool,
    /// A GET or HEAD that may carry no body (`limits.get_bodies: refuse`).
    bodiless: bool,
    /// A WebSocket's `websocket.max_rate`, towards the backend and towards the client.
    pace: Option<(pace::Pace, pace::Pace)>,
    /// A GET or HEAD with credentials (see `Edge::user_of`): not for the shared cache.
    personal: bool,
    /// A GET to a host with browser dictionaries (`client_dictionaries`).
    browser: Option<browser_dictionaries::Browser>,
}

/// Why a GET or HEAD with a body is refused (`limits.get_bodies`).
const GET_BODY: &str = "a GET or HEAD request with a body is not forwarded here (limits.get_bodies)";

impl Edge {
    /// The tunnel peer for a lane, once this request holds the lane's acquire lock.
    async fn lane_peer(&self, lane: &LaneUse, ctx: &mut EdgeCtx) -> Box<HttpPeer> {
        let l = &lane.listener;
        // Bounded: a listener that does not answer must not queue requests behind each
        // other's connect timeouts.
        let wait = self.config.tunnel.connect_timeout;
        let lock = l.lanes[lane.lane].acquire.clone();
        ctx.acquiring = tokio::time::timeout(wait, lock.lock_owned()).await.ok();
        let mut peer = tunnel_peer(&self.config.tunnel, &self.tls.load(), l.addr, &l.server_name, lane.lane);
        peer.options.upstream_tcp_sock_tweak_hook = Some(self.tcp.clone());
        Box::new(peer)
    }

    /// The peer for a request to a host that a tunnel dialling out serves: a lane of that
    /// tunnel (waiting `connectors.wait` for one), else the host's fallback. The 502 names
    /// the tunnel, never an address.
    async fn dial_peer(&self, tunnel: &str, ctx: &mut EdgeCtx) -> Result<Result<Box<HttpPeer>, String>> {
        let Some(registry) = &self.connectors else {
            return Error::e_explain(ErrorType::HTTPStatus(502), format!("no connector listener for tunnel {tunnel}"));
        };
        let max_streams = self.config.tunnel.max_streams;
        let Some(used) = registry.pick(tunnel, &ctx.tried_lanes, max_streams, self.config.tunnel.balance).await else {
            let waited = self.config.connectors.as_ref().map(|c| c.wait).unwrap_or_default();
            return Ok(Err(match registry.tunnel(tunnel).map(|t| t.lane_count()) {
                Some(0) | None => format!("no origin of tunnel {tunnel} is connected (waited {waited:?})"),
                Some(_) => format!("no lane of tunnel {tunnel} is free (waited {waited:?})"),
            }));
        };
        let wait = self.config.tunnel.connect_timeout;
        ctx.acquiring = tokio::time::timeout(wait, used.lane.acquire.clone().lock_owned()).await.ok();
        let peer = registry.peer(&used.lane, &self.config.tunnel);
        ctx.direct = false;
        ctx.dial = Some(used);
        Ok(Ok(Box::new(peer)))
    }

    /// Whether this request's body is to be read whole here first: buffering is on for its host,
    /// it has a body, and it is not already the subrequest carrying a buffered one. gRPC bodies
    /// (over HTTP/2) are streams of messages that a call may answer one by one (as nginx's
    /// grpc_pass, they are never buffered), and a WebSocket handshake carries no body (one that
    /// announces a body is refused); every other body is buffered, whatever it says of itself.
    fn buffers(&self, session: &mut Session, host: Option<&str>) -> bool {
        let on = host
            .and_then(|h| self.config.route(h))
            .and_then(|r| r.request_buffering)
            .unwrap_or(self.config.limits.request_buffering);
        // gRPC exists only on HTTP/2: the type on an HTTP/1.x request buys it nothing.
        let grpc = session.as_downstream().is_http2()
            && http_util::header_str(session.req_header().headers.get(http::header::CONTENT_TYPE))
                .is_some_and(|t| t.starts_with("application/grpc"));
        let websocket = http_util::is_websocket_upgrade(session.req_header());
        on && !grpc && !replayed(session) && !websocket && !session.is_body_done()
    }

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

impl Edge {
    /// Whose a request is: the keyed hash of its credentials (see `credentials`), or None for a
    /// request without any, or one for a path the operator declared the same for every user
    /// (`shared_bases`). One rule for the versions a request's page is kept under and for the
    /// edge cache (see `request_cache_filter`).
    fn user_of(&self, req: &RequestHeader, host: &str) -> Option<String> {
        let route = self.config.route(host);
        let cookies = route.and_then(|r| r.cookies.as_deref()).unwrap_or(&self.config.credentials.cookies);
        let shared = route.is_some_and(|r| r.shared_base(req.uri.path()));
        if shared { None } else { self.users.user(req, cookies) }
    }

    /// The version-store key of a GET, and whose version it is: a request with credentials has
    /// its own (`user`, from [`Edge::user_of`]).
    fn key_versions(&self, req: &RequestHeader, host: &str, user: Option<String>, ctx: &mut EdgeCtx) {
        let route = self.config.route(host);
        ctx.versions = Versions {
            scope: if user.is_some() { Scope::User } else { Scope::Shared },
            keep_no_store: route.is_some_and(|r| r.store_no_store),
        };
        let url = req.uri.path_and_query().map_or("/", |p| p.as_str());
        // A request target holds no space, so no URL's key is another's user key.
        ctx.key = Some(match user {
            Some(user) => format!("{host}{url} user={user}"),
            None => format!("{host}{url}"),
        });
    }
}

impl Edge {
    /// `delta.report_header`, as far as the edge knows it when the header goes: how the body
    /// crossed the tunnel (or came from the cache) and what became of the browser's dictionary
    /// (the client compression module adds the coding the client gets).
    fn report(&self, ctx: &EdgeCtx, from_cache: bool) -> String {
        let tunnel = if from_cache { "cache" } else { ctx.envelope.encoding.as_str() };
        let base = match (&ctx.base, ctx.envelope.encoding) {
            _ if from_cache => "none",
            (Some(_), delta::codec::Encoding::Dcz) => "hit",
            (Some(_), _) => "miss",
            (None, _) => "none",
        };
        let dictionary = ctx.browser.as_ref().map_or("none", |b| b.asked);
        format!("tunnel={tunnel}; base={base}; dictionary={dictionary}")
    }
}

/// Whether this is the subrequest carrying a body the edge buffered (see `buffering`).
fn replayed(session: &Session) -> bool {
    buffering::Replayed::of(session).is_some()
}

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = EdgeCtx;

    fn new_ctx(&self) -> Self::CTX {
        limits::head_read();
        EdgeCtx {
            envelope: Envelope::open(MODE),
            host: None,
            key: None,
            versions: Versions::default(),
            keep: None,
            base: None,
            without_base: false,
            body: None,
            body_in: 0,
            joiner: None,
            acquiring: None,
            lane: None,
            tried: Vec::new(),
            dial: None,
            tried_lanes: Vec::new(),
            attempts: 0,
            probe: None,
            direct: false,
            handed_off: false,
            websocket: false,
            bodiless: false,
            pace: None,
            personal: false,
            browser: None,
        }
    }

    fn allow_spawning_subrequest(&self, _session: &Session, _ctx: &Self::CTX) -> bool {
        // Buffered request bodies are sent on as subrequests (see `buffering`).
        true
    }

    fn init_downstream_modules(&self, modules: &mut HttpModules) {
        // Clients get gzip, br or zstd per their Accept-Encoding; what crosses the tunnel and
        // what is stored stays independent of that.
        // Browser dictionaries' dcz is made there too, and `delta.report_header` is written
        // there (it names the coding).
        let level = (self.config.client_compression > 0).then_some(self.config.client_compression);
        let dictionaries = self.config.origins.iter().any(|o| o.client_dictionaries.is_some());
        if level.is_some() || dictionaries || self.config.report_header {
            modules.add_module(client_compression::Builder::enable(level));
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        if let Some(probe) = LaneProbe::read(session.req_header(), &self.probe_secret) {
            // From this edge's prober, over an in-process socket: no client checks apply.
            ctx.probe = Some(probe);
            return Ok(false);
        }
        if http_util::client_cancelled(session) {
            return Err(http_util::cancelled_error(MODE));
        }
        if let Some(problem) = http_util::session_framing_problem(session) {
            return http_util::refuse(session, 400, "framing", problem).await;
        }
        if let Some((status, problem)) = http_util::target_problem(session.req_header()) {
            return http_util::refuse(session, status, "target", problem).await;
        }
        http_util::absolute_form_to_origin_form(session.req_header_mut())?;
        let limits = &self.config.limits;
        if !limits.methods.contains(&session.req_header().method) {
            let why = format!("{} is not allowed here", session.req_header().method);
            return http_util::refuse_with(session, 405, "method", &why, &limits.allow).await;
        }
        if let Some((status, limit, problem)) = self.over_limits(session) {
            metrics::LIMIT_REFUSALS.with_label_values(&[limit]).inc();
            return http_util::refuse(session, status, "limit", &problem).await;
        }
        ctx.bodiless = limits.get_bodies == GetBodies::Refuse
            && matches!(session.req_header().method, http::Method::GET | http::Method::HEAD);
        if ctx.bodiless && http_util::declares_body(session.req_header()) {
            return http_util::refuse(session, 400, "get_body", GET_BODY).await;
        }
        if !limits.underscores_in_headers {
            // A subrequest carrying a buffered body reads the client's head again: counted once.
            let count = !replayed(session);
            for name in http_util::underscored_names(session.req_header()) {
                if count {
                    metrics::DROPPED_HEADERS.with_label_values(&["underscore"]).inc();
                }
                session.req_header_mut().remove_header(&name);
            }
        }
        session.set_keepalive(Some(limits.keepalive_timeout.as_secs()));
        let http1 = session.as_downstream().as_http1().is_some();
        if http1 {
            ctx.joiner = Some(coalesce::Joiner::default());
            // Requests a client sends before reading earlier answers are answered in order
            // (RFC 9112 §9.3.2), not dropped with the connection.
            session.as_downstream_mut().set_pipelining_enabled(true);
        }
        let req = session.req_header();
        let host = http_util::request_host(req);
        match &host {
            None => return http_util::refuse(session, 400, "host", "no Host").await,
            Some(h) if self.config.route(h).is_none() => {
                return http_util::refuse(session, 421, "host", "this edge does not serve that host").await;
            }
            Some(_) => {}
        }
        if let Some(expect) = session.req_header().headers.get(http::header::EXPECT) {
            // The edge answers the expectation itself (its checks above are the ones a client
            // waits for); the hops after it get the body without being asked.
            if !expect.as_bytes().eq_ignore_ascii_case(b"100-continue") {
                return http_util::refuse(session, 417, "expectation", "only 100-continue is supported").await;
            }
            session.req_header_mut().remove_header(&http::header::EXPECT);
            if http1 && session.req_header().version == http::Version::HTTP_11 && !session.is_body_done() {
                session.as_downstream_mut().write_continue_response().await?;
            }
        }
        if !http_util::is_websocket_upgrade(session.req_header())
            && session.req_header().headers.contains_key(http::header::UPGRADE)
        {
            // Upgrades other than WebSocket (h2c, made-up ones) are not carried: the request goes
            // on as a plain one, as nginx sends it (Upgrade is hop-by-hop), buffered like any.
            http_util::drop_upgrade(session.req_header_mut());
        }
        if http_util::is_websocket_upgrade(session.req_header()) && http_util::declares_body(session.req_header()) {
            return http_util::refuse(session, 400, "framing", "a WebSocket handshake carries no body").await;
        }
        if http_util::is_websocket_upgrade(session.req_header()) {
            // Once upgraded, the client's side is read with the socket's idle timeout, not the
            // 60 s Pingora gives a request body. Its frames go on as they come (a message may
            // wait for an answer): a stream of the tunnel (`websocket`), never buffered.
            ctx.websocket = true;
            ctx.joiner = None;
            session.set_read_timeout(Some(self.config.websocket.idle_timeout));
            let rate = self.config.websocket.max_rate;
            if rate > 0 {
                let now = std::time::Instant::now();
                ctx.pace = Some((pace::Pace::new(rate, now), pace::Pace::new(rate, now)));
            }
            ctx.host = host.clone();
            if let Some(done) = websocket::carry(self, session, ctx, host.as_deref().unwrap_or_default()).await? {
                return Ok(done);
            }
        }
        if replayed(session) {
            buffering::Replayed::frame(session)?;
        } else if self.buffers(session, host.as_deref()) {
            match buffering::read_whole(session, limits).await {
                // An HTTP/2 GET may send a body it did not announce.
                Ok(body) if ctx.bodiless && body.len() > 0 => {
                    return http_util::refuse(session, 400, "get_body", GET_BODY).await;
                }
                Ok(body) => {
                    ctx.handed_off = true;
                    return buffering::replay(session, body).await;
                }
                Err(unread) => {
                    if let buffering::Unread::TooLarge(_) = unread {
                        metrics::LIMIT_REFUSALS.with_label_values(&["body"]).inc();
                    }
                    return http_util::refuse(session, unread.status(), unread.reason(), &unread.message()).await;
                }
            }
        }
        let method = session.req_header().method.clone();
        if matches!(method, http::Method::GET | http::Method::HEAD) && !ctx.websocket {
            let host = host.as_deref().unwrap_or_default();
            let user = self.user_of(session.req_header(), host);
            ctx.personal = user.is_some();
            // A GET's version is its URL's page; one with a body may be something else (a search).
            if method == http::Method::GET && session.as_mut().is_body_empty() {
                let browsers = self.config.route(host).and_then(|r| r.client_dictionaries.as_ref());
                ctx.browser = browsers.and_then(|settings| {
                    browser_dictionaries::Browser::start(
                        session.req_header(),
                        host,
                        user.clone(),
                        settings,
                        &self.store,
                    )
                });
                self.key_versions(session.req_header(), host, user, ctx);
            }
        }
        ctx.host = host;
        Ok(false)
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<()> {
        // An upgrade is never a cached object; as a cache miss it would wait on the cache lock
        // behind every other handshake for its URL, and Pingora keeps a miss's upstream going
        // after its client left (to fill the cache): an abandoned handshake would hold its
        // connections until the socket's idle timeout.
        // A request with credentials is neither answered from the shared cache nor stored in it
        // (Varnish's rule): what it gets may be its user's, and what others stored may not be
        // what its user should see. RFC 9111 §3.5 would let a `public` answer to one be stored;
        // railproxy keeps one rule for the cache and for page versions instead (see `user_of`).
        let personal = ctx.personal;
        if let Some(cache) = self.cache.as_ref().filter(|_| ctx.probe.is_none() && !ctx.websocket && !personal) {
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
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let mut from_cache = false;
        if self.cache.is_some() && ctx.probe.is_none() {
            let status = cache::status(session.cache.phase());
            from_cache = status == "HIT" || status == "STALE";
            metrics::CACHE.with_label_values(&[status]).inc();
            resp.insert_header(protocol::CACHE_STATUS, status)?;
        }
        let mut plan = client_compression::Plan::default();
        if let Some(browser) = ctx.browser.as_mut() {
            let path = session.req_header().uri.path();
            plan.dictionary = browser.respond(resp, path, ctx.versions, self.config.delta.max_body)?;
        }
        if self.config.report_header && ctx.probe.is_none() {
            plan.report = Some(self.report(ctx, from_cache));
        }
        if (plan.dictionary.is_some() || plan.report.is_some())
            && let Some(m) = session.downstream_modules_ctx.get_mut::<client_compression::ClientCompression>()
        {
            m.plan = plan;
        }
        Ok(())
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Self::CTX) -> Result<Box<HttpPeer>> {
        let first_attempt = ctx.attempts == 0;
        ctx.attempts += 1;
        ctx.lane = None;
        ctx.dial = None;
        // A retry sends the body read so far again from Pingora's buffer: what was held or
        // counted for the last attempt is in it.
        ctx.body_in = 0;
        if let Some(joiner) = ctx.joiner.as_mut() {
            *joiner = coalesce::Joiner::default();
        }
        if let Some(probe) = &ctx.probe {
            let lane = self.listeners.lane(probe.listener, probe.lane).ok_or_else(|| {
                Error::explain(ErrorType::ConnectNoRoute, format!("no lane {} of {}", probe.lane, probe.listener))
            })?;
            let mut peer = self.lane_peer(&lane, ctx).await;
            peer.options.read_timeout = Some(self.config.failover.probe_timeout);
            ctx.lane = Some(lane);
            return Ok(peer);
        }
        let host = ctx.host.clone().unwrap_or_default();
        let host = host.as_str();
        let route = self
            .config
            .route(host)
            .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, format!("no origin for host {host}")))?;
        let picked = match &route.tunnel {
            // A WebSocket here found no tunnel stream (`edge::websocket`): the host's fallback.
            _ if ctx.websocket => Err(format!("no origin took the WebSocket for {host}")),
            Some(tunnel) => match self.dial_peer(tunnel, ctx).await? {
                Ok(peer) => return Ok(peer),
                Err(why) => Err(why),
            },
            None => self
                .listeners
                .pick(host, &ctx.tried, first_attempt)
                .ok_or_else(|| format!("no origin listener for {host} is up")),
        };
        let lane = match picked {
            Ok(lane) => lane,
            Err(why) => {
                return match &route.fallback {
                    Fallback::Direct(at) => {
                        metrics::FALLBACKS.with_label_values(&["direct"]).inc();
                        ctx.direct = true;
                        let addr = match self.names.addresses(at).await {
                            Ok(addrs) if !addrs.is_empty() => addrs[rand::random::<usize>() % addrs.len()],
                            _ => {
                                let why = format!("{why}, and {at} does not resolve");
                                return Err(Error::explain(ErrorType::HTTPStatus(502), why));
                            }
                        };
                        let t = &self.config.tunnel;
                        let mut peer = HttpPeer::new(addr, false, String::new());
                        peer.options.connection_timeout = Some(t.connect_timeout);
                        peer.options.read_timeout = Some(match ctx.websocket {
                            true => self.config.websocket.idle_timeout,
                            false => t.response_timeout,
                        });
                        Ok(Box::new(peer))
                    }
                    Fallback::Error => {
                        metrics::FALLBACKS.with_label_values(&["error"]).inc();
                        Err(Error::explain(ErrorType::HTTPStatus(502), why))
                    }
                };
            }
        };
        ctx.direct = false;
        let peer = self.lane_peer(&lane, ctx).await;
        ctx.lane = Some(lane);
        Ok(peer)
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] fd: std::os::unix::io::RawFd,
        digest: Option<&Digest>,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        ctx.acquiring = None;
        if ctx.direct {
            // Straight to the origin over HTTP/1.1: a kept-alive connection must be clean.
            return match http1_reuse::stray_bytes(reused, true, fd, MODE) {
                Some(e) => Err(e),
                None => Ok(()),
            };
        }
        if !reused {
            metrics::TUNNEL_CONNECTIONS.with_label_values(&[MODE]).inc();
        }
        if ctx.dial.is_some() {
            // A dial-out lane: its TLS (1.3 only) ended at the connector listener.
            return Ok(());
        }
        // Every use, not only a new connection: Pingora pools an h2 connection before this hook
        // runs, so a concurrent request may already have taken it up.
        if let Some(version) = tls::not_tls13(digest) {
            if !reused {
                metrics::TUNNEL_AUTH_FAILURES.with_label_values(&["tls12"]).inc();
                // Closed, so that it leaves the pool and no later request finds it there.
                let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
            }
            return Error::e_explain(
                ErrorType::TLSHandshakeFailure,
                format!("origin listener negotiated {version}, the tunnel is TLS 1.3 only"),
            );
        }
        if let Some(lane) = &ctx.lane {
            lane.connected_on(fd);
        }
        // A request got a tunnel connection on its lane: the lane serves (again). A probe's
        // answer decides for the probe.
        if let Some(lane) = ctx.lane.as_ref().filter(|_| ctx.probe.is_none()) {
            self.listeners.connected(lane);
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
        if ctx.probe.is_some() {
            // The prober decides what a failed probe means; it is not dialled again here.
            e.set_retry(false);
            return e;
        }
        if let Some(lane) = ctx.lane.take() {
            self.listeners.retire(&lane, &e.to_string());
            ctx.tried.push(lane.addr());
            // Nothing reached the origin: any request may go to another listener.
            e.set_retry(true);
            metrics::RETRIES.inc();
        }
        if let Some(used) = ctx.dial.take() {
            // The lane's connection takes no new stream now (sent GOAWAY, or full), or its
            // HTTP/2 handshake failed: nothing reached the origin, another lane may take it.
            ctx.tried_lanes.push(used.lane.id);
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
        if http1_reuse::is_stray(&e) {
            // Dropped before anything of the request was written: any request goes again.
            return e;
        }
        let mut e = e.more_context(format!("Peer: {peer}"));
        if let Some(used) = ctx.dial.as_ref().filter(|_| peer::tunnel_failure(&e) || peer::graceful_shutdown(&e)) {
            // Another lane, if the request goes again.
            ctx.tried_lanes.push(used.lane.id);
        }
        if ctx.probe.is_some() {
            // Never again on a new connection: that connection would join the lane in slow start
            // (a probe queued behind a lane's bulk data is late, not failed). The prober decides
            // what a failed probe means, from the lane's progress meanwhile.
            e.set_retry(false);
            return e;
        }
        if session.response_written().is_none() && !ctx.direct && peer::graceful_shutdown(&e) {
            // The listener is shutting down gracefully (an upgrade or a restart) and did not
            // process this request: send it again, on a new connection, without marking it down.
            if let Some(reason) = peer::remote_goaway(&e) {
                metrics::TUNNEL_GOAWAYS.with_label_values(&[&format!("{reason:?}")]).inc();
            }
            e.set_retry(true);
            metrics::RETRIES.inc();
            return e;
        }
        if let Some(reason) = peer::remote_goaway(&e).filter(|_| !ctx.direct) {
            // The listener is alive and closing this connection (for resets its clients caused,
            // say): the lane's next request dials a new one. Never retired for it.
            metrics::TUNNEL_GOAWAYS.with_label_values(&[&format!("{reason:?}")]).inc();
            if session.response_written().is_none() {
                self.send_again(session, &mut e);
            }
            return e;
        }
        if session.response_written().is_none() && !ctx.direct && peer::tunnel_failure(&e) {
            // The lane's connection failed, not necessarily the listener: the request may go to
            // another lane of it.
            if let Some(lane) = ctx.lane.take() {
                self.listeners.retire(&lane, &e.to_string());
            }
            self.send_again(session, &mut e);
            return e;
        }
        http_util::pingora_retry_policy(session, &mut e, client_reused);
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, _ctx: &mut Self::CTX) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ => match e.esource() {
                pingora_error::ErrorSource::Upstream => 502,
                // A client that went away is answered nothing.
                pingora_error::ErrorSource::Downstream if http_util::is_cancellation(e) => 0,
                pingora_error::ErrorSource::Downstream => 400,
                _ => 500,
            },
        };
        if code > 0 && session.response_written().is_none() {
            // Say why, so that an operator reading a client's error page knows where to look.
            let reason = http::StatusCode::from_u16(code).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error");
            let detail = if *e.esource() == pingora_error::ErrorSource::Downstream {
                format!("the request could not be read ({})", e.etype().as_str())
            } else {
                reason_for_client(e)
            };
            let body = Bytes::from(format!("{code} {reason}: {detail}\n"));
            let _ = session.respond_error_with_body(code, body).await;
        }
        FailToProxy { error_code: code, can_reuse_downstream: false }
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Self::CTX, e: &Error) -> bool {
        // A client's own reset or close is its business, not an error of this proxy's; a probe's
        // failure is the prober's to judge (a late one behind a busy lane's data is no failure).
        ctx.probe.is_some() || http_util::is_cancellation(e)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // Nothing a client sends may steer the tunnel.
        protocol::strip_request(upstream_request);
        if ctx.probe.is_some() {
            return LaneProbe::write(upstream_request);
        }
        ctx.base = None;
        if http_util::client_cancelled(session) {
            // Reset while it waited (for the cache lock, a lane, a connection): nothing goes out.
            return Err(http_util::cancelled_error(MODE));
        }
        if ctx.direct {
            // Straight to the origin: the request as the client sent it, no tunnel encodings.
            return http1_reuse::close_after_unread_body(session, upstream_request, MODE);
        }
        if let Some(client) = session.client_addr().and_then(|a| a.as_inet()) {
            let forwarded =
                http_util::forwarded_for(upstream_request.headers.get("x-forwarded-for"), Some(client.ip()));
            upstream_request.insert_header("x-forwarded-for", forwarded.unwrap_or_default())?;
        }
        if let Some(key) = ctx.key.as_ref().filter(|_| !ctx.without_base) {
            ctx.base = self.store.get(key).await;
            let held = if ctx.base.is_some() { "hit" } else { "miss" };
            metrics::BASE.with_label_values(&[MODE, held]).inc();
        }
        let base = ctx.base.as_ref().map(|b| b.id);
        TunnelRequest { base, accepts: Accepts::ALL, segments: true, versions: ctx.versions }.write(upstream_request)
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(joiner) = ctx.joiner.as_mut() {
            // Pingora skips an empty piece that does not end the body: nothing goes on yet.
            *body = Some(joiner.push(body.take(), end_of_stream, std::time::Instant::now()).unwrap_or_default());
        }
        http_util::no_empty_last_piece(body, end_of_stream);
        if ctx.websocket {
            // An upgraded socket's traffic, not a request body: no max_body, its own pace.
            let n = body.as_ref().map_or(0, Bytes::len);
            if let Some(wait) = ctx.pace.as_mut().and_then(|(up, _)| up.take(n, std::time::Instant::now())) {
                tokio::time::sleep(wait).await;
            }
            return Ok(());
        }
        if ctx.bodiless && body.as_ref().is_some_and(|b| !b.is_empty()) {
            // An unannounced HTTP/2 body on a GET, where bodies are not buffered: refused as an
            // announced one is (the upstream has the head only; the stream is reset under it).
            *body = None;
            if session.response_written().is_none() {
                http_util::refuse(session, 400, "get_body", GET_BODY).await?;
            }
            return Error::e_explain(ErrorType::HTTPStatus(400), GET_BODY);
        }
        // Chunked and HTTP/2 bodies announce no length: counted as they come.
        let n = body.as_ref().map_or(0, |b| b.len() as u64);
        ctx.body_in += n;
        if let Some(lane) = &ctx.lane {
            lane.moved(n);
        }
        if ctx.body_in > self.config.limits.max_body {
            metrics::LIMIT_REFUSALS.with_label_values(&["body"]).inc();
            // Answered here: Pingora takes a body filter error for an upstream one and would
            // keep the client waiting for the origin's answer to a body that never ends.
            *body = None;
            let why = format!("request body over {} bytes", self.config.limits.max_body);
            if session.response_written().is_none() {
                http_util::refuse(session, 413, "limit", &why).await?;
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
        if ctx.direct {
            // A backend's response, not the tunnel's: nothing in it is the tunnel's to read.
            protocol::strip_response(resp);
            return Ok(());
        }
        match decode::start(resp, ctx.base.as_ref(), &self.config.delta)? {
            Start::Identity => Ok(()),
            Start::Decode(decoder) => {
                ctx.envelope.encoding = decoder.encoding();
                let keep = versions::keep(ctx.versions, resp);
                if let Some(key) = ctx.key.take_if(|_| !keep.stores()) {
                    // Nothing of this page stays here, not even the version before it.
                    self.store.remove(&key);
                    if resp.status == http::StatusCode::OK {
                        metrics::VERSIONS.with_label_values(&[MODE, keep.class()]).inc();
                    }
                }
                if decoder.encoding() == delta::codec::Encoding::Dcz {
                    let class = match ctx.versions.scope {
                        Scope::Shared => Keep::Anonymous,
                        Scope::User => Keep::PerUser,
                    };
                    metrics::DELTAS.with_label_values(&[MODE, class.class()]).inc();
                }
                ctx.keep = Some(keep);
                ctx.body = Some(*decoder);
                Ok(())
            }
            Start::BaseMismatch(refused) => {
                // Whatever this key held may be what went wrong: drop it, and ask once more
                // without a base.
                if let Some(key) = &ctx.key {
                    self.store.remove(key);
                }
                let mut e = refused.into_error();
                if !ctx.without_base {
                    ctx.without_base = true;
                    metrics::BASE_RETRIES.inc();
                    e.set_retry(true);
                }
                Err(e)
            }
        }
    }

    fn upstream_response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<std::time::Duration>> {
        let wire = body.as_ref().map_or(0, |b| b.len() as u64);
        ctx.envelope.wire_bytes += wire;
        if let Some(lane) = &ctx.lane {
            lane.moved(wire);
        }
        let Some(decoder) = ctx.body.as_mut() else {
            ctx.envelope.raw_bytes += wire;
            return Ok(None);
        };
        match decoder.push(body.as_deref(), end_of_stream) {
            Ok(out) => {
                ctx.envelope.raw_bytes += out.send.as_ref().map_or(0, |b| b.len() as u64);
                *body = out.send;
                if end_of_stream && decoder.unchanged() {
                    metrics::UNCHANGED.with_label_values(&[MODE]).inc();
                }
                if let (Some(complete), Some(key)) = (out.complete, ctx.key.clone()) {
                    let status = session.response_written().map_or(200, |r| r.status.as_u16());
                    if status == 200 {
                        self.store.put(key, complete);
                        let class = ctx.keep.map_or("anonymous", Keep::class);
                        metrics::VERSIONS.with_label_values(&[MODE, class]).inc();
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
                Err(refused.into_error())
            }
        }
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<std::time::Duration>> {
        if let Some((key, page)) = ctx.browser.as_mut().and_then(|b| b.body(body.as_ref(), end_of_stream)) {
            self.store.put(key, page);
        }
        // A WebSocket's pace towards its client (Pingora waits this long before writing).
        let n = body.as_ref().map_or(0, Bytes::len);
        Ok(ctx.pace.as_mut().and_then(|(_, down)| down.take(n, std::time::Instant::now())))
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        if ctx.probe.is_some() || ctx.handed_off || buffering::Replayed::of(session).is_some_and(|r| r.resending()) {
            return;
        }
        ctx.envelope.close(session, e, ctx.base.as_ref().map(|b| &b.id));
    }
}

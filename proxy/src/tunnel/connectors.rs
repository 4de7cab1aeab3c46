//! The edge's side of dial-out: the connector listener where origins with no inbound port dial
//! in, and the lanes they hold, by tunnel.
//!
//! An origin dials TCP and TLS 1.3 (its tunnel certificate names the tunnel), says which
//! replica and lane it is ([`LaneHello`]), and then serves HTTP/2 on the connection: the edge
//! stays the HTTP/2 client, so the request path is the dial-in one. A lane reaches Pingora as
//! the peer's `custom_l4` connection ([`TakeLane`]): Pingora pools the HTTP/2 connection over
//! it as any other (the vendored virtual stream reports the TCP descriptor, so the pool's
//! `getpeername` check passes), with PINGs every `connectors.ping_interval`.
//!
//! * Admission: a handshake is bounded in time (`handshake_timeout`) and in number per source
//!   address; only certificates from `connectors.ca` that name a configured tunnel complete it;
//!   nothing but a lane hello and then HTTP/2 is read from a lane.
//! * A lane leaves its tunnel when its connection ends: Pingora dropped it (its PING went
//!   unanswered, the origin sent GOAWAY and finished), the origin went away while the lane was
//!   parked (a watcher reads it until Pingora takes it), or this edge is shutting down.
//! * Requests take the replicas in turn (or the least busy, `tunnel.balance`), and within one
//!   the lane with the fewest in flight, most recently used among equals.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::connectors::L4Connect;
use pingora_core::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora_core::protocols::l4::stream::Stream;
use pingora_core::protocols::l4::virt::{VirtualSockOpt, VirtualSocket, VirtualSocketStream};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::lane_hello::{LaneHello, carries_sockets};
use super::listeners::now_ms;
use super::tls::{ConnectorTls, tunnel_of};
use crate::config::connectors::Connectors;
use crate::config::edge::TunnelClient;
use crate::config::origin::Balance;
use crate::metrics;

/// How long a shutting-down edge keeps one lane per tunnel for requests that still reach it.
const LAST_LANE: Duration = Duration::from_secs(1);

/// Pool groups of dial-out lanes: apart from every dial-in lane's and the WebSocket group.
const DIAL_GROUP: u64 = 1 << 48;

static LANE_IDS: AtomicU64 = AtomicU64::new(1);

/// One connection an origin dialled in.
#[derive(Debug)]
pub struct DialLane {
    pub id: u64,
    pub replica: String,
    /// The origin's address as this edge sees it: the Pingora peer's address, which the pool
    /// checks against the connection's `getpeername`.
    pub remote: SocketAddr,
    /// Its TCP socket, to end it when this edge shuts down.
    fd: i32,
    /// Until Pingora takes the lane for its HTTP/2 connection: asks the task that watches the
    /// parked connection (see [`watch_parked`]) to hand it over.
    parked: Mutex<Option<oneshot::Sender<oneshot::Sender<LaneIo>>>>,
    in_flight: AtomicUsize,
    last_used: AtomicU64,
    /// Held from `upstream_peer` until the request's stream is acquired (as the dial-in lanes'
    /// lock): Pingora takes a pooled connection out of its pool while it opens a stream, and a
    /// request that missed it would ask for a second connection, which a dial-out lane cannot
    /// give.
    pub acquire: Arc<tokio::sync::Mutex<()>>,
}

/// The lanes of one tunnel, every replica's.
#[derive(Debug)]
pub struct Tunnel {
    pub name: String,
    lanes: Mutex<Vec<Arc<DialLane>>>,
    /// The connections its origins dialled for WebSockets.
    pub sockets: super::socket_lanes::Conns,
    arrived: tokio::sync::Notify,
    /// The next replica in turn (`tunnel.balance: round_robin`).
    next: AtomicUsize,
}

impl Tunnel {
    fn new(name: &str) -> Arc<Self> {
        metrics::DIALOUT_TUNNEL_UP.with_label_values(&[name]).set(0);
        Arc::new(Tunnel {
            name: name.to_string(),
            lanes: Mutex::default(),
            sockets: super::socket_lanes::Conns::default(),
            arrived: tokio::sync::Notify::new(),
            next: AtomicUsize::new(0),
        })
    }

    fn lanes(&self) -> std::sync::MutexGuard<'_, Vec<Arc<DialLane>>> {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn lane_count(&self) -> usize {
        self.lanes().len()
    }

    fn add(&self, lane: Arc<DialLane>) {
        metrics::DIALOUT_LANES.with_label_values(&[&self.name, &lane.replica]).inc();
        self.lanes().push(lane);
        metrics::DIALOUT_TUNNEL_UP.with_label_values(&[&self.name]).set(1);
        self.arrived.notify_waiters();
    }

    /// Takes lane `id` out (once: a lane leaves when its connection ends, or sooner).
    fn remove(&self, id: u64) {
        let mut lanes = self.lanes();
        if let Some(i) = lanes.iter().position(|l| l.id == id) {
            let lane = lanes.swap_remove(i);
            metrics::DIALOUT_LANES.with_label_values(&[&self.name, &lane.replica]).dec();
            metrics::DIALOUT_TUNNEL_UP.with_label_values(&[&self.name]).set(i64::from(!lanes.is_empty()));
            log::info!("tunnel {}: lane of {} from {} gone", self.name, lane.replica, lane.remote);
        }
    }

    /// A lane not in `tried` with fewer than `max_streams` requests in flight: of the replica
    /// `balance` chooses (the next in turn, or the one with the fewest requests in flight), the
    /// lane with the fewest in flight, and of those the one used most recently (as a dial-in
    /// listener's lanes: requests one after another keep one connection's window, requests side
    /// by side spread over the lanes).
    fn pick(&self, tried: &[u64], max_streams: usize, balance: Balance) -> Option<TunnelUse> {
        let lanes = self.lanes();
        let usable: Vec<&Arc<DialLane>> = lanes
            .iter()
            .filter(|l| !tried.contains(&l.id) && l.in_flight.load(Ordering::Relaxed) < max_streams)
            .collect();
        let mut replicas: Vec<&str> = usable.iter().map(|l| l.replica.as_str()).collect();
        replicas.sort_unstable();
        replicas.dedup();
        let in_flight = |r: &str| -> usize {
            usable.iter().filter(|l| l.replica == r).map(|l| l.in_flight.load(Ordering::Relaxed)).sum()
        };
        let replica = match balance {
            Balance::RoundRobin => *replicas.get(self.next.fetch_add(1, Ordering::Relaxed) % replicas.len().max(1))?,
            Balance::LeastRequests => replicas.iter().copied().min_by_key(|r| in_flight(r))?,
        };
        let lane = usable.iter().filter(|l| l.replica == replica).min_by_key(|l| {
            (l.in_flight.load(Ordering::Relaxed), std::cmp::Reverse(l.last_used.load(Ordering::Relaxed)))
        })?;
        Some(TunnelUse::new((*lane).clone()))
    }
}

/// A request's hold on a dial-out lane: counted in flight until dropped.
#[derive(Debug)]
pub struct TunnelUse {
    pub lane: Arc<DialLane>,
}

impl TunnelUse {
    fn new(lane: Arc<DialLane>) -> Self {
        lane.in_flight.fetch_add(1, Ordering::Relaxed);
        lane.last_used.store(now_ms(), Ordering::Relaxed);
        TunnelUse { lane }
    }
}

impl Drop for TunnelUse {
    fn drop(&mut self) {
        self.lane.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every configured tunnel's lanes.
#[derive(Debug)]
pub struct Registry {
    tunnels: HashMap<String, Arc<Tunnel>>,
    settings: Connectors,
}

impl Registry {
    pub fn new(settings: &Connectors) -> Arc<Self> {
        let tunnels = settings.tunnels.iter().map(|t| (t.name.clone(), Tunnel::new(&t.name))).collect();
        Arc::new(Registry { tunnels, settings: settings.clone() })
    }

    pub fn tunnel(&self, name: &str) -> Option<&Arc<Tunnel>> {
        self.tunnels.get(name)
    }

    /// A lane of tunnel `name` not in `tried`, waiting up to `connectors.wait` for one to
    /// connect when there is none now. `None`: still none.
    pub async fn pick(&self, name: &str, tried: &[u64], max_streams: usize, balance: Balance) -> Option<TunnelUse> {
        let tunnel = self.tunnels.get(name)?;
        let deadline = tokio::time::Instant::now() + self.settings.wait;
        loop {
            // Asked for before looking, so that a lane arriving in between is not missed.
            let arrived = tunnel.arrived.notified();
            if let Some(lane) = tunnel.pick(tried, max_streams, balance) {
                return Some(lane);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return None;
            }
        }
    }

    /// Ends every lane with no request in flight but the `keep` most recently used of each
    /// tunnel; how many lanes are left.
    fn close_idle(&self, keep: usize) -> usize {
        self.close(keep, false)
    }

    fn close(&self, keep: usize, all: bool) -> usize {
        let mut left = 0;
        for t in self.tunnels.values() {
            // Under the lock: a lane in the list has not finished leaving it, so its socket is
            // still open and its descriptor still its own.
            let mut lanes = t.lanes();
            lanes.sort_by_key(|l| std::cmp::Reverse(l.last_used.load(Ordering::Relaxed)));
            let mut i = 0;
            lanes.retain(|lane| {
                let idle = lane.in_flight.load(Ordering::Relaxed) == 0;
                let end = all || (idle && i >= keep);
                i += 1;
                if end {
                    // The socket, not the object: Pingora may hold the connection. Its HTTP/2
                    // client reads the end and drops it; its origin dials again.
                    let _ = nix::sys::socket::shutdown(lane.fd, nix::sys::socket::Shutdown::Both);
                    drop(lane.parked.lock().unwrap_or_else(|p| p.into_inner()).take());
                    metrics::DIALOUT_LANES.with_label_values(&[&t.name, &lane.replica]).dec();
                } else {
                    left += 1;
                }
                !end
            });
            metrics::DIALOUT_TUNNEL_UP.with_label_values(&[&t.name]).set(i64::from(!lanes.is_empty()));
        }
        left
    }

    /// This edge is shutting down: its lanes end as soon as no request is in flight on them, so
    /// that their origins dial again and reach the edge that took the port over (an upgrade, or
    /// a restart) instead of waiting out this one's grace period. One lane per tunnel stays a
    /// moment longer ([`LAST_LANE`]) for a request that still reaches this process. Whatever is
    /// still busy at the end of the grace period is cut.
    pub async fn drain(&self, grace: Duration) {
        let started = tokio::time::Instant::now();
        loop {
            let now = tokio::time::Instant::now();
            let keep = usize::from(now < started + LAST_LANE);
            if now >= started + grace {
                self.close(0, true);
                return;
            }
            if self.close_idle(keep) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Ready when every tunnel has a lane; otherwise which have none.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let mut missing: Vec<String> = self
            .tunnels
            .values()
            .filter(|t| t.lane_count() == 0)
            .map(|t| format!("connectors.tunnels.{}: no origin has dialled in", t.name))
            .collect();
        missing.sort();
        if missing.is_empty() { Ok(()) } else { Err(missing) }
    }

    /// The Pingora peer for a request on `lane`: plaintext HTTP/2 (the TLS is the lane's own)
    /// over the lane's connection, pooled per lane.
    pub fn peer(&self, lane: &Arc<DialLane>, t: &TunnelClient) -> HttpPeer {
        let mut peer = HttpPeer::new(lane.remote, false, String::new());
        peer.group_key = DIAL_GROUP | lane.id;
        peer.options.set_http_version(2, 2);
        peer.options.max_h2_streams = t.max_streams;
        peer.options.h2_ping_interval = Some(self.settings.ping_interval);
        // A lane is never closed for being idle: its origin would only dial it again.
        peer.options.idle_timeout = None;
        peer.options.connection_timeout = Some(t.connect_timeout);
        peer.options.total_connection_timeout = Some(t.connect_timeout);
        peer.options.read_timeout = Some(t.response_timeout);
        peer.options.custom_l4 = Some(Arc::new(TakeLane(Arc::downgrade(lane))));
        peer
    }
}

/// Hands Pingora a lane's connection, once.
#[derive(Debug)]
struct TakeLane(Weak<DialLane>);

#[async_trait]
impl L4Connect for TakeLane {
    async fn connect(&self, _addr: &PingoraAddr) -> Result<Stream> {
        let ask = self.0.upgrade().and_then(|lane| lane.parked.lock().unwrap_or_else(|p| p.into_inner()).take());
        let io = match ask {
            Some(ask) => {
                let (give, given) = oneshot::channel();
                // The watcher has gone when the connection ended while parked.
                match ask.send(give) {
                    Ok(()) => given.await.ok(),
                    Err(_) => None,
                }
            }
            None => None,
        };
        match io {
            Some(io) => Ok(Stream::from(VirtualSocketStream::new(Box::new(io)))),
            // Pingora holds the lane's connection (a lane has one) but could not open a stream
            // on it now: it is taken out of the pool for a moment, has sent GOAWAY, or is full.
            // Nothing reached the origin: the request goes to another lane. The lane itself
            // leaves its tunnel when its connection ends.
            None => Error::e_explain(ErrorType::ConnectError, "the tunnel lane's connection takes no new stream"),
        }
    }
}

/// A lane's TLS connection, as Pingora's virtual socket. Its end (dropped) takes the lane out
/// of its tunnel.
#[derive(Debug)]
struct LaneIo {
    tls: TlsStream<TcpStream>,
    fd: i32,
    id: u64,
    /// Where its end is reported.
    tunnel: Weak<Tunnel>,
    /// What the origin sent while the lane was parked (its HTTP/2 SETTINGS), read first.
    early: Vec<u8>,
}

/// What a parked lane may have sent before its HTTP/2 client starts: its SETTINGS, perhaps a
/// GOAWAY; more is no origin's doing, and ends the lane.
const EARLY_MAX: usize = 16 * 1024;

/// Watches a parked lane until Pingora asks for it: reads what the origin sends meanwhile (kept
/// for the HTTP/2 client), so that a lane whose origin went away (EOF, reset, or TCP keepalive
/// giving up on a dead path) leaves its tunnel at once instead of when a request finds it.
async fn watch_parked(mut io: LaneIo, mut asked: oneshot::Receiver<oneshot::Sender<LaneIo>>) {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 2048];
    loop {
        let read = tokio::select! {
            biased;
            give = &mut asked => {
                if let Ok(give) = give {
                    let _ = give.send(io);
                }
                return;
            }
            read = io.tls.read(&mut buf) => read,
        };
        match read {
            Ok(n) if n > 0 && io.early.len() + n <= EARLY_MAX => io.early.extend_from_slice(&buf[..n]),
            // Ended, failed, or said too much: dropping `io` takes the lane out.
            _ => return,
        }
    }
}

impl Drop for LaneIo {
    fn drop(&mut self) {
        if let Some(t) = self.tunnel.upgrade() {
            t.remove(self.id);
        }
    }
}

impl AsyncRead for LaneIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if !self.early.is_empty() {
            let n = self.early.len().min(buf.remaining());
            buf.put_slice(&self.early[..n]);
            self.early.drain(..n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for LaneIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tls).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }
}

impl VirtualSocket for LaneIo {
    fn set_socket_option(&self, opt: VirtualSockOpt) -> std::io::Result<()> {
        let tcp = self.tls.get_ref().0;
        match opt {
            VirtualSockOpt::NoDelay => tcp.set_nodelay(true),
            // Set when the lane registered.
            _ => Ok(()),
        }
    }

    fn raw_fd(&self) -> Option<i32> {
        Some(self.fd)
    }
}

/// Handshakes in progress per source address.
#[derive(Debug, Default)]
struct Pending(Mutex<HashMap<IpAddr, usize>>);

/// One handshake counted against its source address until dropped.
struct PendingSlot<'a> {
    pending: &'a Pending,
    ip: IpAddr,
}

impl Pending {
    fn enter(&self, ip: IpAddr, cap: usize) -> Option<PendingSlot<'_>> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_default();
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(PendingSlot { pending: self, ip })
    }
}

impl Drop for PendingSlot<'_> {
    fn drop(&mut self) {
        let mut map = self.pending.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// The connector listener, a background service of the edge.
pub struct ConnectorListener {
    registry: Arc<Registry>,
    tls: Arc<ConnectorTls>,
    congestion_control: Option<String>,
}

impl ConnectorListener {
    pub fn new(registry: Arc<Registry>, tls: Arc<ConnectorTls>, congestion_control: Option<&str>) -> Self {
        ConnectorListener { registry, tls, congestion_control: congestion_control.map(String::from) }
    }

    /// TLS, the tunnel named by the certificate, its hello, then the lane joins its tunnel.
    async fn admit(self: &Arc<Self>, tcp: TcpStream, from: SocketAddr, pending: Arc<Pending>) {
        let s = &self.registry.settings;
        let Some(_slot) = pending.enter(from.ip(), s.max_handshakes_per_address) else {
            metrics::DIALOUT_REGISTRATIONS.with_label_values(&["busy"]).inc();
            return;
        };
        let refuse = |why: &'static str, detail: String| {
            metrics::DIALOUT_REGISTRATIONS.with_label_values(&[why]).inc();
            log::warn!("connector listener: {from} refused ({why}): {detail}");
        };
        let config = match self.tls.server_config() {
            Ok(c) => c,
            Err(e) => return refuse("tls", format!("{e:#}")),
        };
        let shake = async {
            let mut tls = TlsAcceptor::from(config).accept(tcp).await.map_err(|e| ("tls", e.to_string()))?;
            let names: Vec<String> = s.tunnels.iter().map(|t| t.name.clone()).collect();
            let tunnel = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| tunnel_of(c, &names))
                .ok_or(("certificate", "no configured tunnel's name".to_string()))?;
            let hello = LaneHello::read(&mut tls).await.map_err(|e| ("hello", e))?;
            Ok::<_, (&'static str, String)>((tls, tunnel, hello))
        };
        let (tls, tunnel, hello) = match tokio::time::timeout(s.handshake_timeout, shake).await {
            Err(_) => return refuse("timeout", format!("no handshake and hello within {:?}", s.handshake_timeout)),
            Ok(Err((why, detail))) => return refuse(why, detail),
            Ok(Ok(done)) => done,
        };
        let Some(t) = self.registry.tunnel(&tunnel).cloned() else { return };
        if carries_sockets(hello.lane) {
            // The edge is this lane's HTTP/2 client for WebSockets, outside Pingora's pool.
            // Bounded as request lanes are: a tunnel cannot make this edge hold connections
            // without end.
            if t.sockets.count() >= s.max_lanes_per_tunnel {
                let held = s.max_lanes_per_tunnel;
                return refuse("full", format!("tunnel {tunnel} holds {held} WebSocket lanes already"));
            }
            match super::socket_lanes::handshake(tls, super::socket_lanes::WINDOW).await {
                Ok(conn) => {
                    metrics::DIALOUT_REGISTRATIONS.with_label_values(&["registered"]).inc();
                    log::info!("tunnel {tunnel}: the WebSocket lane of {} from {from} connected", hello.replica);
                    t.sockets.add(conn);
                }
                Err(e) => refuse("hello", e),
            }
            return;
        }
        if t.lane_count() >= s.max_lanes_per_tunnel {
            return refuse("full", format!("tunnel {tunnel} holds {} lanes already", s.max_lanes_per_tunnel));
        }
        let tcp = tls.get_ref().0;
        let fd = tcp.as_raw_fd();
        let _ = tcp.set_nodelay(true);
        let lane = Arc::new(DialLane {
            id: LANE_IDS.fetch_add(1, Ordering::Relaxed),
            replica: hello.replica.clone(),
            remote: from,
            fd,
            parked: Mutex::new(None),
            in_flight: AtomicUsize::new(0),
            last_used: AtomicU64::new(0),
            acquire: Arc::default(),
        });
        let (ask, asked) = oneshot::channel();
        *lane.parked.lock().unwrap_or_else(|p| p.into_inner()) = Some(ask);
        let id = lane.id;
        metrics::DIALOUT_REGISTRATIONS.with_label_values(&["registered"]).inc();
        log::info!("tunnel {tunnel}: lane {} of {} from {from} connected", hello.lane, hello.replica);
        // In its tunnel before anything can end it (the watcher's end takes it out).
        let tunnel = Arc::downgrade(&t);
        t.add(lane);
        tokio::spawn(watch_parked(LaneIo { tls, fd, id, tunnel, early: Vec::new() }, asked));
    }

    /// Accepts until its task is aborted (which closes the socket).
    async fn serve(self: Arc<Self>, listener: TcpListener) {
        let pending = Arc::new(Pending::default());
        loop {
            let (tcp, from) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, say: accepting again at once would spin.
                    log::warn!("connector listener: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if let Err(e) = super::tcp::tune(
                &tcp,
                self.congestion_control.as_deref(),
                super::tcp::dead_after(self.registry.settings.ping_interval),
            ) {
                log::debug!("connector listener: socket options of {from}: {e}");
            }
            let (me, pending) = (self.clone(), pending.clone());
            // On any of the service's threads (Pingora's runtime may be one per thread, where
            // `tokio::spawn` would keep every handshake and WebSocket lane on this one).
            pingora_runtime::current_handle().spawn(async move { me.admit(tcp, from, pending).await });
        }
    }
}

/// Binds a connector listener's address now (a taken port fails the start, not a request),
/// with SO_REUSEPORT: an edge upgraded in place (`--upgrade`) binds it beside the old process,
/// whose lanes end with it and are dialled again to the new one.
pub fn bind(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    use anyhow::Context as _;
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt, socket, sockopt,
    };
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)
        .with_context(|| format!("connectors.listen {addr}: socket"))?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).with_context(|| format!("connectors.listen {addr}: SO_REUSEADDR"))?;
    setsockopt(&fd, sockopt::ReusePort, &true).with_context(|| format!("connectors.listen {addr}: SO_REUSEPORT"))?;
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).with_context(|| format!("connectors.listen {addr}: bind"))?;
    listen(&fd, Backlog::new(1024).unwrap_or(Backlog::MAXCONN))
        .with_context(|| format!("connectors.listen {addr}: listen"))?;
    Ok(std::net::TcpListener::from(fd))
}

/// The connector listener's sockets, served until shutdown.
pub struct ConnectorService {
    listener: Arc<ConnectorListener>,
    sockets: Mutex<Vec<std::net::TcpListener>>,
    /// How long lanes with requests in flight are kept after shutdown begins.
    grace: Duration,
}

impl ConnectorService {
    pub fn new(listener: ConnectorListener, sockets: Vec<std::net::TcpListener>, grace: Duration) -> Self {
        ConnectorService { listener: Arc::new(listener), sockets: Mutex::new(sockets), grace }
    }
}

#[async_trait]
impl BackgroundService for ConnectorService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Accepting stops on the first of SIGQUIT, SIGTERM and the server's shutdown: on an
        // upgrade (SIGQUIT) the new process has bound the port beside this one already (see
        // `run::edge`), and redialled lanes must reach it, not this one.
        let sockets = std::mem::take(&mut *self.sockets.lock().unwrap_or_else(|p| p.into_inner()));
        let mut accepting: Vec<tokio::task::JoinHandle<()>> = Vec::new();
        for socket in sockets {
            match TcpListener::from_std(socket) {
                Ok(l) => accepting.push(tokio::spawn(self.listener.clone().serve(l))),
                Err(e) => log::error!("connector listener: {e}"),
            }
        }
        // Each socket closed before its lanes are ended: a lane dialled again at once must not
        // land in this process's backlog (reset when it closes) instead of the new one's.
        let stop = async move {
            for task in accepting {
                task.abort();
                let _ = task.await;
            }
        };
        use tokio::signal::unix::{SignalKind, signal};
        let registry = &self.listener.registry;
        if let (Ok(mut quit), Ok(mut term)) = (signal(SignalKind::quit()), signal(SignalKind::terminate())) {
            let why = tokio::select! {
                _ = quit.recv() => "SIGQUIT",
                _ = term.recv() => "SIGTERM",
                _ = shutdown.changed() => "shutdown",
            };
            stop.await;
            log::info!("connector listener: {why}: no more lanes accepted; idle lanes end, one per tunnel stays");
            // Pingora keeps serving this process's clients until it broadcasts its shutdown
            // (on an upgrade, seconds after SIGQUIT): one lane per tunnel serves them, the
            // others go to the new process now.
            if !*shutdown.borrow() {
                loop {
                    registry.close_idle(1);
                    tokio::select! {
                        _ = shutdown.changed() => break,
                        _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    }
                }
            }
        } else {
            log::error!("connector listener: cannot watch SIGQUIT and SIGTERM; lanes drain at the server's shutdown");
            let _ = shutdown.changed().await;
            stop.await;
        }
        registry.drain(self.grace).await;
    }
}

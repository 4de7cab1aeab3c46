//! The tunnel connections that carry WebSockets as streams (see `tunnel::websocket`): HTTP/2
//! clients of the edge's own, beside Pingora's pool, whose connections carry requests and give
//! no stream to anything but a proxied request. One such connection carries up to the origin's
//! `max_streams` sockets at a few KB each, where a connection per socket cost ~280 KB.
//!
//! * Dial-in: the edge dials one to each origin listener it has sockets for (another once one
//!   is full, or after one ended), with the tunnel's mutual TLS 1.3.
//! * Dial-out: origins dial a lane marked for sockets ([`super::lane_hello::SOCKET_LANE`])
//!   beside their request lanes; the connector listener hands it here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::edge::TunnelClient;

/// One HTTP/2 connection carrying sockets.
#[derive(Debug, Clone)]
struct Conn {
    send: h2::client::SendRequest<Bytes>,
    /// Its connection task has ended, or it refused a stream (GOAWAY): no new socket goes here.
    closed: Arc<AtomicBool>,
    open: Arc<AtomicUsize>,
}

impl Conn {
    /// Whether the peer takes another stream now (its SETTINGS say how many, once they came).
    fn has_room(&self) -> bool {
        self.open.load(Ordering::Relaxed) < self.send.current_max_send_streams().max(1)
    }
}

/// A socket's stream: its answer, its request body (the client's bytes), and its place on the
/// connection, given back when `held` is dropped.
pub struct Opened {
    pub response: h2::client::ResponseFuture,
    pub body: h2::SendStream<Bytes>,
    pub held: Held,
}

/// A socket's place on its connection, counted until dropped.
pub struct Held(Arc<AtomicUsize>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The HTTP/2 client over `io`, its connection driven by a task of its own until it ends.
pub async fn handshake<T>(io: T, window: u32) -> Result<SocketConn, String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = h2::client::Builder::new()
        .enable_push(false)
        .initial_window_size(window)
        .initial_connection_window_size(window)
        .handshake(io)
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    let closed = Arc::new(AtomicBool::new(false));
    let ended = closed.clone();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            log::debug!("websocket connection ended: {e}");
        }
        ended.store(true, Ordering::Relaxed);
    });
    Ok(SocketConn(Conn { send, closed, open: Arc::default() }))
}

/// A connection made by [`handshake`], to be added to a [`Conns`].
pub struct SocketConn(Conn);

/// The connections to one origin listener, or of one tunnel's origins.
#[derive(Debug, Default)]
pub struct Conns {
    conns: Mutex<Vec<Conn>>,
    arrived: tokio::sync::Notify,
}

impl Conns {
    pub fn add(&self, conn: SocketConn) {
        self.list().push(conn.0);
        self.arrived.notify_waiters();
    }

    fn list(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connections that are still up.
    pub fn count(&self) -> usize {
        self.list().iter().filter(|c| !c.closed.load(Ordering::Relaxed)).count()
    }

    /// The open connection with the fewest sockets and room for one more.
    fn least_busy(&self) -> Option<Conn> {
        let mut list = self.list();
        list.retain(|c| !c.closed.load(Ordering::Relaxed));
        list.iter().filter(|c| c.has_room()).min_by_key(|c| c.open.load(Ordering::Relaxed)).cloned()
    }

    /// A stream for `request` on one of the connections; `Err` when none takes it now.
    pub async fn open(&self, request: &http::Request<()>) -> Result<Opened, String> {
        let mut last = "no connection for sockets".to_string();
        while let Some(conn) = self.least_busy() {
            conn.open.fetch_add(1, Ordering::Relaxed);
            let held = Held(conn.open.clone());
            let sent = async {
                let mut send = conn.send.clone().ready().await?;
                send.send_request(request.clone(), false)
            };
            match sent.await {
                Ok((response, body)) => return Ok(Opened { response, body, held }),
                Err(e) => {
                    // Closing (GOAWAY) or gone: the next socket goes elsewhere.
                    conn.closed.store(true, Ordering::Relaxed);
                    last = e.to_string();
                }
            }
        }
        Err(last)
    }

    /// As [`Conns::open`], waiting up to `wait` for a connection to arrive when none takes it.
    pub async fn open_within(&self, wait: Duration, request: &http::Request<()>) -> Result<Opened, String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let arrived = self.arrived.notified();
            match self.open(request).await {
                Ok(opened) => return Ok(opened),
                Err(e) if tokio::time::timeout_at(deadline, arrived).await.is_err() => return Err(e),
                Err(_) => {}
            }
        }
    }
}

/// One listener's socket connections, and the turn to dial another.
type ListenerConns = Arc<(Conns, tokio::sync::Mutex<()>)>;

/// Dial-in: the edge's socket connections to each origin listener, dialled on demand.
pub struct ListenerSockets {
    by_listener: Mutex<HashMap<SocketAddr, ListenerConns>>,
    settings: TunnelClient,
    tcp: Option<String>,
}

impl ListenerSockets {
    pub fn new(settings: &TunnelClient) -> Self {
        ListenerSockets {
            by_listener: Mutex::default(),
            settings: settings.clone(),
            tcp: settings.congestion_control.clone(),
        }
    }

    /// A stream to the listener at `addr`, on a connection there, dialled if none has room.
    pub async fn open(
        &self,
        addr: SocketAddr,
        server_name: &str,
        request: &http::Request<()>,
    ) -> Result<Opened, String> {
        let entry = self.by_listener.lock().unwrap_or_else(|p| p.into_inner()).entry(addr).or_default().clone();
        let (conns, dialling) = &*entry;
        if let Ok(opened) = conns.open(request).await {
            return Ok(opened);
        }
        // One dial at a time per listener: sockets arriving together share what it makes.
        let _turn = dialling.lock().await;
        if let Ok(opened) = conns.open(request).await {
            return Ok(opened);
        }
        let conn = tokio::time::timeout(self.settings.connect_timeout, self.dial(addr, server_name)).await.map_err(
            |_| format!("connecting to the origin listener took over {:?}", self.settings.connect_timeout),
        )??;
        conns.add(conn);
        conns.open(request).await
    }

    async fn dial(&self, addr: SocketAddr, server_name: &str) -> Result<SocketConn, String> {
        let t = &self.settings;
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connecting: {e}"))?;
        let _ = tcp.set_nodelay(true);
        // Ended, as a lane is, once the path is dead for this long.
        if let Err(e) = super::tcp::tune(&tcp, self.tcp.as_deref(), super::tcp::dead_after(t.ping_interval)) {
            log::debug!("websocket connection to {addr}: {e}");
        }
        let config = super::tls::socket_client_config(&t.ca, &t.cert, &t.key).map_err(|e| format!("{e:#}"))?;
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
            .map_err(|e| format!("server name {server_name:?}: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
        if tls.get_ref().1.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
            return Err("the origin listener did not negotiate TLS 1.3".into());
        }
        crate::metrics::TUNNEL_CONNECTIONS.with_label_values(&["edge"]).inc();
        handshake(tls, WINDOW).await
    }
}

/// HTTP/2 windows of the socket connections: a socket's messages are small and interactive,
/// and a large one crosses at the link's rate once the window opened.
pub const WINDOW: u32 = 1 << 20;

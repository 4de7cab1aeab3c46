//! Dial-out: the origin dials its edges' connector listeners (`tunnel.dial`) and serves the
//! edges' requests over those connections, so it needs no inbound port at all.
//!
//! Each lane is TCP and TLS 1.3 as a client (Pingora's connector, the tunnel certificate as the
//! client certificate, the edge's connector certificate checked against `tunnel.ca` and
//! `tunnel.edge_name`), then the lane hello, then the origin's own HTTP/2 server on it (the
//! same app as the dial-in listener's: the request path is one). A lane that ends is dialled
//! again after a full-jitter wait, up to `tunnel.reconnect_cap`, forever; a lane that was up a
//! second or more (the edge took it) starts its waits over. On shutdown (SIGQUIT or SIGTERM) the server sends GOAWAY on
//! every lane, finishes what is in flight within the grace period, and no lane is dialled
//! again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::connectors::TransportConnector;
use pingora_core::protocols::ALPN;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::upstreams::peer::HttpPeer;
use rand::Rng as _;
use tokio::io::AsyncWriteExt as _;

use crate::config::origin::TunnelListener;
use crate::metrics;
use crate::resolve::Names;
use crate::tunnel::lane_hello::{LaneHello, SOCKET_LANE, SOCKET_LANES, carries_sockets, valid_replica};
use crate::tunnel::tcp;
use crate::tunnel::tls::PeerTls;

/// A lane up this long worked (the edge took it and kept it): its next dial waits from the
/// start of the backoff. One that ends sooner counts as a failure, so that an edge that drops
/// lanes at once is not dialled in a tight loop. (A lane is ended by an edge that restarts or
/// upgrades, and its successor must get the lane back within `connectors.wait`.)
const WORKED: Duration = Duration::from_secs(1);
/// The first wait's ceiling; each failure in a row doubles it, up to `reconnect_cap`.
const BACKOFF_BASE: Duration = Duration::from_secs(1);

/// Full jitter: uniform in [0, min(cap, base × 2^failures)].
pub fn backoff(failures: u32, cap: Duration) -> Duration {
    let ceiling = BACKOFF_BASE.saturating_mul(1u32 << failures.min(16)).min(cap);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX).max(1);
    Duration::from_nanos(rand::thread_rng().gen_range(0..nanos))
}

/// This process's name on its lanes: `tunnel.replica`, else the host's name and the process id.
pub fn replica_name(configured: Option<&str>) -> String {
    if let Some(name) = configured {
        return name.to_string();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String =
        host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')).collect();
    let mut name = format!("{}-{}", if host.is_empty() { "origin" } else { &host }, std::process::id());
    name.truncate(64);
    debug_assert!(valid_replica(&name));
    name
}

/// Lanes connected to each edge, for `/ready` and the metric.
#[derive(Debug, Default)]
pub struct Connected(Vec<(String, AtomicUsize)>);

impl Connected {
    /// Ready once every edge has a lane; otherwise which have none.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let none: Vec<String> = self
            .0
            .iter()
            .filter(|(_, n)| n.load(Ordering::Relaxed) == 0)
            .map(|(edge, _)| format!("tunnel.dial {edge}: no lane connected"))
            .collect();
        if none.is_empty() { Ok(()) } else { Err(none) }
    }

    fn change(&self, edge: usize, up: bool) {
        let (name, n) = &self.0[edge];
        let now = if up { n.fetch_add(1, Ordering::Relaxed) + 1 } else { n.fetch_sub(1, Ordering::Relaxed) - 1 };
        metrics::DIALOUT_CONNECTED.with_label_values(&[name]).set(now as i64);
    }
}

/// The lanes to every edge of `tunnel.dial`, as a background service of the origin.
pub struct Dialer<A> {
    app: Arc<A>,
    settings: TunnelListener,
    tls: PeerTls,
    replica: String,
    names: Arc<Names>,
    connector: TransportConnector,
    pub connected: Arc<Connected>,
}

impl<A: ServerApp + Send + Sync + 'static> Dialer<A> {
    pub fn new(app: Arc<A>, settings: &TunnelListener, names: Arc<Names>) -> anyhow::Result<Self> {
        let tls = PeerTls::load(&settings.ca, &settings.cert, &settings.key)?;
        let connected =
            Arc::new(Connected(settings.dial.iter().map(|e| (e.to_string(), AtomicUsize::new(0))).collect()));
        for (edge, _) in &connected.0 {
            metrics::DIALOUT_CONNECTED.with_label_values(&[edge]).set(0);
        }
        Ok(Dialer {
            app,
            replica: replica_name(settings.replica.as_deref()),
            settings: settings.clone(),
            tls,
            names,
            connector: TransportConnector::new(None),
            connected,
        })
    }

    fn peer(&self, addr: SocketAddr) -> HttpPeer {
        let t = &self.settings;
        let mut peer = HttpPeer::new(addr, true, t.edge_name.clone());
        peer.options.set_http_version(2, 2);
        peer.options.ca = Some(self.tls.ca.clone());
        peer.client_cert_key = self.tls.client.clone();
        peer.options.connection_timeout = Some(CONNECT_TIMEOUT);
        peer.options.total_connection_timeout = Some(CONNECT_TIMEOUT);
        // A path that dies without a packet back: sent bytes unacknowledged, or idle probes
        // unanswered, for `dead_after` end the lane (the edge's PINGs keep it from idling).
        peer.options.tcp_keepalive = Some(tcp::keepalive(t.dead_after));
        peer.options.upstream_tcp_sock_tweak_hook = Some(tcp::hook(t.congestion_control.as_deref()));
        peer
    }

    /// One lane, dialled and served; `Ok` with how long it was up once it ends.
    async fn lane(&self, edge: usize, lane: u8, shutdown: &ShutdownWatch) -> Result<Duration, String> {
        let edge_index = edge;
        let edge = &self.settings.dial[edge];
        let addrs = self.names.addresses(edge).await?;
        let addr = *addrs.get(usize::from(lane) % addrs.len().max(1)).ok_or("no address")?;
        let peer = self.peer(addr);
        let mut stream = self.connector.new_stream(&peer).await.map_err(|e| format!("{addr}: {e}"))?;
        if stream.selected_alpn_proto() != Some(ALPN::H2) {
            return Err(format!("{addr}: the edge did not take HTTP/2 (ALPN)"));
        }
        let hello = LaneHello { replica: self.replica.clone(), lane };
        stream.write_all(&hello.encode()).await.map_err(|e| format!("{addr}: {e}"))?;
        stream.flush().await.map_err(|e| format!("{addr}: {e}"))?;
        // Counted from the hello on: the edge has the lane from then.
        metrics::DIALOUT_DIALS.with_label_values(&[&edge.to_string(), "ok"]).inc();
        // The WebSocket lane is not one of the request lanes `/ready` and the gauge count.
        let _counted = (!carries_sockets(lane)).then(|| CountedLane::new(&self.connected, edge_index));
        let up = Instant::now();
        self.app.process_new(stream, shutdown).await;
        Ok(up.elapsed())
    }

    async fn keep_lane(self: Arc<Self>, edge: usize, lane: u8, shutdown: ShutdownWatch) {
        let label = self.settings.dial[edge].to_string();
        let mut failures = 0u32;
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.lane(edge, lane, &shutdown).await {
                Ok(up) => {
                    log::info!("tunnel.dial {label}: lane {lane} ended after {up:?}");
                    failures = if up >= WORKED { 0 } else { failures.saturating_add(1) };
                }
                Err(e) => {
                    metrics::DIALOUT_DIALS.with_label_values(&[&label, "error"]).inc();
                    log::warn!("tunnel.dial {label}: lane {lane}: {e}");
                    failures = failures.saturating_add(1);
                }
            }
            let wait = backoff(failures, self.settings.reconnect_cap);
            let mut stop = shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

/// How long dialling one lane (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

struct CountedLane<'a> {
    connected: &'a Connected,
    edge: usize,
}

impl<'a> CountedLane<'a> {
    fn new(connected: &'a Connected, edge: usize) -> Self {
        connected.change(edge, true);
        CountedLane { connected, edge }
    }
}

impl Drop for CountedLane<'_> {
    fn drop(&mut self) {
        self.connected.change(self.edge, false);
    }
}

/// The service's handle: `Dialer` shared by its lanes.
pub struct DialService<A>(pub Arc<Dialer<A>>);

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> BackgroundService for DialService<A> {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let d = &self.0;
        log::info!(
            "tunnel: dialling {} edge(s), {} lanes each, as replica {}",
            d.settings.dial.len(),
            d.settings.lanes,
            d.replica
        );
        // The lanes stop on the first of SIGQUIT, SIGTERM and the server's shutdown: Pingora
        // broadcasts its shutdown on SIGQUIT only after offering its listening sockets to a new
        // process (seconds when none waits), and the edges should send requests elsewhere at
        // once, not while this process is on its way out.
        let (drain, draining) = tokio::sync::watch::channel(false);
        for edge in 0..d.settings.dial.len() {
            // The request lanes, and the lanes for WebSockets.
            for lane in (0..d.settings.lanes as u8).chain((0..SOCKET_LANES).map(|i| SOCKET_LANE + i)) {
                // On any of the service's threads (`server.threads`): each lane's HTTP/2
                // server, and the streams it spawns, run where its task does.
                pingora_runtime::current_handle().spawn(d.clone().keep_lane(edge, lane, draining.clone()));
            }
        }
        use tokio::signal::unix::{SignalKind, signal};
        let (mut quit, mut term) = match (signal(SignalKind::quit()), signal(SignalKind::terminate())) {
            (Ok(q), Ok(t)) => (q, t),
            _ => {
                log::error!("tunnel: cannot watch SIGQUIT and SIGTERM; lanes drain at the server's shutdown");
                let _ = shutdown.changed().await;
                let _ = drain.send(true);
                return;
            }
        };
        let why = tokio::select! {
            _ = quit.recv() => "SIGQUIT",
            _ = term.recv() => "SIGTERM",
            _ = shutdown.changed() => "shutdown",
        };
        log::info!("tunnel: {why}: GOAWAY on every lane, in-flight requests finish, no lane is dialled again");
        let _ = drain.send(true);
        let _ = shutdown.changed().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_full_jitter_under_a_doubling_ceiling_up_to_the_cap() {
        let cap = Duration::from_secs(30);
        for failures in 0..12u32 {
            let ceiling = BACKOFF_BASE.saturating_mul(1 << failures).min(cap);
            let waits: Vec<Duration> = (0..200).map(|_| backoff(failures, cap)).collect();
            assert!(waits.iter().all(|w| *w < ceiling), "{failures}: under {ceiling:?}");
            // Spread over the whole range, not bunched at its top (full jitter, no herd).
            assert!(waits.iter().any(|w| *w < ceiling / 4) && waits.iter().any(|w| *w > ceiling * 3 / 4), "{failures}");
        }
    }

    #[test]
    fn a_replica_names_itself_by_host_and_process() {
        assert_eq!(replica_name(Some("web-1")), "web-1");
        let own = replica_name(None);
        assert!(valid_replica(&own) && own.ends_with(&format!("-{}", std::process::id())), "{own}");
    }
}

//! Probes of origin listeners, sent over the tunnel as requests are: those up every
//! `probe_interval`, those down on their backoff.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::connectors::http::Connector;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::upstreams::peer::HttpPeer;

use super::listeners::{Listener, Listeners};
use super::peer::tunnel_peer;
use super::protocol::Probe;
use super::tls::SharedPeerTls;
use crate::config::EdgeConfig;

/// Probes listeners over the tunnel: those up every `probe_interval`, those down on their backoff.
pub struct Prober {
    pub listeners: Arc<Listeners>,
    pub config: Arc<EdgeConfig>,
    pub tls: SharedPeerTls,
    connector: Connector,
}

impl Prober {
    pub fn new(listeners: Arc<Listeners>, config: Arc<EdgeConfig>, tls: SharedPeerTls) -> Self {
        Prober { listeners, config, tls, connector: Connector::new(None) }
    }

    /// Ok if the listener answered the probe with 200 over a TLS 1.3 tunnel; otherwise why not.
    /// A probe that failed on a pooled connection is tried once more on a new one: a listener
    /// handing over to its upgraded process closes the old connections, and that alone must not
    /// take it out of rotation.
    async fn probe(&self, l: &Listener) -> Result<(), String> {
        let mut peer = tunnel_peer(&self.config.tunnel, &self.tls.load(), l.addr, &l.server_name);
        let limit = self.config.failover.probe_timeout;
        peer.options.read_timeout = Some(limit);
        peer.options.connection_timeout = Some(limit);
        match self.probe_with(&self.connector, &peer).await {
            Err((why, true)) => {
                log::debug!(
                    "origin listener {}: probe on a pooled connection failed ({why}); again on a new one",
                    l.addr
                );
                self.probe_with(&Connector::new(None), &peer).await.map_err(|(why, _)| why)
            }
            other => other.map_err(|(why, _)| why),
        }
    }

    /// One probe; an error says whether the connection came from the pool.
    async fn probe_with(&self, connector: &Connector, peer: &HttpPeer) -> Result<(), (String, bool)> {
        let limit = self.config.failover.probe_timeout;
        let mut reused = false;
        let attempt = async {
            let (mut session, pooled) = connector.get_http_session(peer).await.map_err(|e| format!("connect: {e}"))?;
            reused = pooled;
            if !pooled && let Some(version) = super::tls::not_tls13(session.digest()) {
                return Err(format!("negotiated {version}; the tunnel is TLS 1.3 only"));
            }
            let req = Probe::request().map_err(|e| e.to_string())?;
            session.write_request_header(Box::new(req)).await.map_err(|e| format!("request: {e}"))?;
            session.finish_request_body().await.map_err(|e| format!("request: {e}"))?;
            session.read_response_header().await.map_err(|e| format!("response: {e}"))?;
            let status = session.response_header().map(|r| r.status.as_u16());
            while let Ok(Some(_)) = session.read_response_body().await {}
            connector.release_http_session(session, peer, self.config.tunnel.idle_timeout.into()).await;
            match status {
                Some(200) => Ok(()),
                other => Err(format!("answered {other:?}")),
            }
        };
        let result =
            tokio::time::timeout(limit, attempt).await.unwrap_or_else(|_| Err(format!("no answer within {limit:?}")));
        result.map_err(|why| (why, reused))
    }
}

#[async_trait]
impl BackgroundService for Prober {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let tick = Duration::from_millis(100).min(self.config.failover.probe_interval);
        loop {
            let now = Instant::now();
            for l in self.listeners.due(now) {
                let result = self.probe(l).await;
                self.listeners.probe_result(l, &result);
            }
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

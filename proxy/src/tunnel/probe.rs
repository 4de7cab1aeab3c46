//! Probes of origin listeners, lane by lane, over the connections requests use: each probe is a
//! request the prober hands to the edge's own proxy (through an in-process socket pair), which
//! sends it on the lane it names, through the same Pingora connector and pool as requests. A
//! probe therefore warms the lane it checks (at start every lane is dialled this way), and a lane
//! that probes well is one requests can use. Serving lanes are probed every `probe_interval`,
//! retired ones on their backoff.
//!
//! The proxy bounds a probe's connect and TLS handshake by `tunnel.connect_timeout` and its
//! answer by `failover.probe_timeout`, as it bounds a request's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::HttpServerApp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::l4::stream::Stream;
use pingora_core::server::ShutdownWatch;
use pingora_core::server::{ListenFds, RuntimeOpts};
use pingora_core::services::Service;
use pingora_core::services::background::BackgroundService;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::listeners::{Listener, Listeners};
use super::protocol::LaneProbe;
use crate::config::EdgeConfig;

/// What the prober hands probes to: the edge's proxy, serving one session (a connection).
pub type Serve = Arc<dyn Fn(ServerSession, ShutdownWatch) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// [`Serve`] for a Pingora HTTP app (the edge's `HttpProxy`).
pub fn serve_with<A: HttpServerApp + Send + Sync + 'static>(app: Arc<A>) -> Serve {
    Arc::new(move |session, shutdown| {
        let app = app.clone();
        Box::pin(async move {
            app.process_new_http(session, &shutdown).await;
        })
    })
}

/// The proxy's service, telling the prober which runtime it runs on. Probes are served there, so
/// the tunnel connections they dial (and the tasks that drive them) live beside the requests that
/// use them: served on the prober's own thread, every lane dialled at start would have all its
/// frames encrypted, decrypted and handed across threads by that one thread.
pub struct OnProxyRuntime<S> {
    inner: S,
    runtime: watch::Sender<Option<Handle>>,
}

impl<S> OnProxyRuntime<S> {
    pub fn new(inner: S) -> (Self, watch::Receiver<Option<Handle>>) {
        let (runtime, rx) = watch::channel(None);
        (OnProxyRuntime { inner, runtime }, rx)
    }
}

#[async_trait]
impl<S: Service> Service for OnProxyRuntime<S> {
    async fn start_service(
        &mut self,
        #[cfg(unix)] fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        self.runtime.send_replace(Some(Handle::current()));
        self.inner.start_service(fds, shutdown, listeners_per_fd).await
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }

    fn runtime_opts_override(&self, global: &RuntimeOpts) -> Option<RuntimeOpts> {
        self.inner.runtime_opts_override(global)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.inner.listen_addresses()
    }
}

pub struct Prober {
    listeners: Arc<Listeners>,
    config: Arc<EdgeConfig>,
    serve: Serve,
    secret: Arc<str>,
    limit: Duration,
    runtime: watch::Receiver<Option<Handle>>,
}

/// Sends one probe through the proxy.
#[derive(Clone)]
struct Sender {
    serve: Serve,
    /// Proves to the proxy that a probe comes from here (see [`LaneProbe`]).
    secret: Arc<str>,
    /// The proxy bounds each step; this bounds a proxy that does not answer at all.
    limit: Duration,
    /// Where probes are served: the proxy's runtime.
    runtime: Handle,
}

impl Prober {
    /// `runtime` says where the proxy runs (see [`OnProxyRuntime`]); probing starts once it does.
    pub fn new(
        listeners: Arc<Listeners>,
        config: Arc<EdgeConfig>,
        serve: Serve,
        secret: &str,
        runtime: watch::Receiver<Option<Handle>>,
    ) -> Self {
        // A probe is sent once (a lane's second connection would join it in slow start).
        let limit = config.tunnel.connect_timeout + config.failover.probe_timeout + Duration::from_secs(1);
        Prober { listeners, config, serve, secret: secret.into(), limit, runtime }
    }
}

impl Sender {
    /// Ok if the listener answered the probe on this lane with 200; otherwise why not.
    async fn probe(&self, l: &Listener, lane: usize, shutdown: &ShutdownWatch) -> Result<(), String> {
        let (mut ours, theirs) = tokio::net::UnixStream::pair().map_err(|e| format!("socket pair: {e}"))?;
        let session = ServerSession::new_http1(Box::new(Stream::from(theirs)));
        let served = self.runtime.spawn((self.serve)(session, shutdown.clone()));
        let request = LaneProbe { listener: l.addr, lane }.request_bytes(&self.secret);
        let exchange = async {
            ours.write_all(request.as_bytes()).await.map_err(|e| format!("writing the probe: {e}"))?;
            let mut answer = Vec::new();
            ours.read_to_end(&mut answer).await.map_err(|e| format!("reading the answer: {e}"))?;
            Ok::<_, String>(answer)
        };
        let answer = tokio::time::timeout(self.limit, exchange).await;
        served.abort();
        let answer = answer.map_err(|_| format!("no answer within {:?}", self.limit))??;
        let text = String::from_utf8_lossy(&answer);
        match text.split(' ').nth(1) {
            Some("200") => Ok(()),
            _ => {
                // The edge's error page says why (connect refused, TLS, timeout, …).
                let why = text.split("\r\n\r\n").nth(1).unwrap_or(&text).trim();
                Err(if why.is_empty() { "no answer".to_string() } else { why.to_string() })
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Prober {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let tick = Duration::from_millis(100).min(self.config.failover.probe_interval);
        let mut runtime = self.runtime.clone();
        let sender = tokio::select! {
            r = runtime.wait_for(Option::is_some) => match r {
                Ok(handle) => Sender {
                    serve: self.serve.clone(),
                    secret: self.secret.clone(),
                    limit: self.limit,
                    runtime: handle.clone().expect("waited for"),
                },
                Err(_) => return,
            },
            _ = shutdown.changed() => return,
        };
        loop {
            let mut probes = JoinSet::new();
            for (l, lane) in self.listeners.due(std::time::Instant::now()) {
                let (sender, listeners, shutdown) = (sender.clone(), self.listeners.clone(), shutdown.clone());
                probes.spawn(async move {
                    let before = l.progress(lane);
                    let result = sender.probe(&l, lane, &shutdown).await;
                    listeners.probe_result(&l, lane, &result, before);
                });
            }
            // Lanes are probed side by side; the next round starts once every probe answered.
            while probes.join_next().await.is_some() {}
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

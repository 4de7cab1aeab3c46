//! Starting a process in either mode from a validated configuration.

use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use delta::VersionId;
use delta::store::{MemoryStore, VersionStore};
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::protocols::http::v2::server::H2Options;

use crate::admin::{self, Admin};
use crate::config::origin::StoreKind;
use crate::config::{EdgeConfig, OriginConfig};
use crate::edge::Edge;
use crate::edge::limits::{ConnectionCaps, HeadTimeout};
use crate::metrics::{self, StoreCollector};
use crate::origin::Origin;
use crate::origin::backends::Upstreams;
use crate::origin::dial::{DialService, Dialer};
use crate::origin::redis_store::RedisStore;
use crate::tunnel::allow::AllowList;
use crate::tunnel::connectors::{self, ConnectorListener, ConnectorService, Registry};
use crate::tunnel::listeners::Listeners;
use crate::tunnel::probe::{self, Prober};
use crate::tunnel::{peer, tcp, tls as tunnel_tls};
use crate::{server, tls};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::{BackgroundService, background_service};
use pingora_core::services::listening::Service;
use std::time::Duration;

/// Drops versions that outlived `delta.version_ttl` from an in-memory store, so that they are
/// not held (nor counted) until their key is asked for again.
struct Sweeper<K: std::hash::Hash + Eq> {
    store: Arc<MemoryStore<K>>,
    every: Duration,
}

impl<K: std::hash::Hash + Eq> Sweeper<K> {
    fn new(store: Arc<MemoryStore<K>>, ttl: Duration) -> Self {
        // An entry outlives its ttl by at most a tenth of it (10 s at most).
        Sweeper { store, every: (ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(10)) }
    }
}

#[async_trait::async_trait]
impl<K: std::hash::Hash + Eq + Send + Sync + 'static> BackgroundService for Sweeper<K> {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.every);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.store.expire();
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Runs the edge until it is told to stop; never returns on success.
pub fn edge(config: EdgeConfig, upgrade: bool) -> anyhow::Result<()> {
    pingora_core::tls::install_default_crypto_provider();
    metrics::init("edge");
    let config = Arc::new(config);
    let t = &config.tunnel;
    // None configured when every origin dials out: peers then carry no client certificate,
    // and there are none to dial anyway.
    let dials_listeners = !t.ca.as_os_str().is_empty();
    let load_peer_tls = move |t: &crate::config::edge::TunnelClient| match dials_listeners {
        true => tunnel_tls::PeerTls::load(&t.ca, &t.cert, &t.key),
        false => Ok(tunnel_tls::PeerTls::empty()),
    };
    let peer_tls = load_peer_tls(t)?;
    peer_tls.in_use();
    let peer_tls: tunnel_tls::SharedPeerTls = Arc::new(ArcSwap::from_pointee(peer_tls));
    let https = match &config.https {
        Some(h) => Some(tls::ServerCert::load("https", &h.cert, &h.key).context("https certificate")?),
        None => None,
    };
    let reloader = {
        let (shared, t, https) = (peer_tls.clone(), t.clone(), https.clone());
        let what = if https.is_some() {
            "tunnel CA and client certificate, HTTPS certificate"
        } else {
            "tunnel CA and client certificate"
        };
        tls::Reloader::new(what, move || {
            // The tunnel's files first: the HTTPS certificate is swapped as it loads, so nothing
            // is swapped unless both load.
            let peer = load_peer_tls(&t)?;
            if let Some(h) = &https {
                h.reload()?;
            }
            peer.in_use();
            shared.store(Arc::new(peer));
            Ok(())
        })
    };
    let store = Arc::new(MemoryStore::<String>::with_ttl(config.delta.store_size, config.delta.version_ttl));
    let stats = store.clone();
    StoreCollector::register("edge", Arc::new(move || stats.stats()));
    let sweeper = Sweeper::new(store.clone(), config.delta.version_ttl);

    // Bound before Pingora's bootstrap, which on `--upgrade` waits for the old process's
    // SIGQUIT: the new socket joins the port's SO_REUSEPORT group first, so that lanes the old
    // process ends (it stops accepting at SIGQUIT) are dialled again into this one's backlog,
    // never to a port with no listener (refused, and the origin backs off past `connectors.wait`).
    let connector_sockets = match &config.connectors {
        Some(c) => c.listen.iter().map(|a| connectors::bind(*a)).collect::<anyhow::Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    let mut server = server::build(&config.server, upgrade);
    // Names were resolved when the file was read; looked up again as answers age.
    let names = Arc::new(crate::resolve::Names::new(&config.dns)?);
    let listeners = Arc::new(Listeners::new(&config, Some(names.clone())));
    let ready_listeners = listeners.clone();
    let listeners_resolver = listeners.resolver();
    // Probes are handed to the proxy itself and carry this, which no client can know.
    let probe_secret = format!("{:032x}", rand::random::<u128>());
    let connectors = match &config.connectors {
        Some(c) => {
            let names: Vec<String> = c.tunnels.iter().map(|t| t.certificate_name()).collect();
            let tls = Arc::new(tunnel_tls::ConnectorTls::load(&c.cert, &c.key, &c.ca, &names).context("connectors")?);
            let registry = Registry::new(c);
            let listener = ConnectorListener::new(registry.clone(), tls.clone(), t.congestion_control.as_deref());
            let grace = config.server.grace_period;
            Some((registry, tls, ConnectorService::new(listener, connector_sockets, grace)))
        }
        None => None,
    };
    let registry = connectors.as_ref().map(|(r, _, _)| r.clone());
    let mut app = pingora_proxy::HttpProxy::new(
        Edge::new(
            config.clone(),
            peer_tls,
            store.clone(),
            listeners.clone(),
            probe_secret.clone(),
            names,
            registry.clone(),
        ),
        server.configuration.clone(),
    );
    app.handle_init_modules();
    let mut options = HttpServerOptions::default();
    options.h2c = true;
    app.server_options = Some(options);
    let l = &config.limits;
    let mut h2 = H2Options::new();
    h2.max_concurrent_streams(l.h2_max_streams)
        .max_pending_accept_reset_streams(l.h2_max_resets)
        .max_local_error_reset_streams(Some(l.h2_max_resets));
    app.h2_options = Some(h2);
    let app = Arc::new(app);
    let probed = app.clone();
    let app = HeadTimeout::new(app, l.head_timeout, l.keepalive_timeout);
    let mut proxy = Service::new(
        "edge".to_string(),
        ConnectionCaps::new(app, l.max_connections, l.max_connections_per_ip, l.head_timeout),
    );
    let mut probe = Vec::new();
    for addr in &config.listen {
        proxy.add_listener(ListenerConfig::tcp(addr.to_string()).l4_buffer(L4BufferSettings::default().read(0)));
        probe.push(*addr);
    }
    if let (Some(h), Some(https)) = (&config.https, &https) {
        for addr in &h.listen {
            proxy.add_tls_with_settings(&addr.to_string(), None, https.settings()?);
            probe.push(*addr);
        }
    }
    let corrupt = config.admin.fault_injection.then(|| {
        let store = store.clone();
        Arc::new(move || store.corrupt_bodies_for_testing()) as admin::Fault
    });
    let (proxy, runtime) = probe::OnProxyRuntime::new(proxy);
    let prober = Prober::new(listeners, config.clone(), probe::serve_with(probed), &probe_secret, runtime);
    server.add_service(proxy);
    server.add_service(background_service("origin listener probes", prober));
    server.add_service(background_service("origin listener names", listeners_resolver));
    server.add_service(background_service("expired versions", sweeper));
    server.add_service(background_service("TLS reload", reloader));
    if let Some((_, tls, service)) = connectors {
        // Its handshakes, and the HTTP/2 of WebSocket lanes, on as many threads as the edge's
        // listeners (a background service gets one otherwise).
        let mut service = background_service("connector listener", service);
        service.threads = Some(config.server.threads);
        server.add_service(service);
        server.add_service(background_service(
            "TLS reload",
            tls::Reloader::new("connector certificate and tunnel CA", move || tls.reload()),
        ));
    }
    server.add_service(admin::service(
        config.admin.listen,
        Admin {
            ready_probe: probe,
            corrupt_store: corrupt,
            readiness: Some(Arc::new(move || {
                admin::all_ready(
                    [ready_listeners.readiness()].into_iter().chain(registry.iter().map(|r| r.readiness())),
                )
            })),
        },
    ));
    log::info!(
        "edge: clients on {:?}, admin on {}, {} hosts",
        config.listen,
        config.admin.listen,
        config.origins.len()
    );
    server.run_forever()
}

/// Runs the origin listener until it is told to stop; never returns on success.
pub fn origin(config: OriginConfig, upgrade: bool) -> anyhow::Result<()> {
    tunnel_tls::install_origin_provider();
    metrics::init("origin");
    let config = Arc::new(config);
    let t = &config.tunnel;
    let ttl = config.delta.version_ttl;
    let mut sweeper = None;
    let store: Arc<dyn VersionStore<VersionId>> = match &config.store {
        StoreKind::Memory => {
            let memory = Arc::new(MemoryStore::with_ttl(config.delta.store_size, ttl));
            sweeper = Some(Sweeper::new(memory.clone(), ttl));
            memory
        }
        // Redis expires what it holds itself (SET EX).
        StoreKind::Redis(redis) => Arc::new(RedisStore::new(redis, ttl)?),
    };
    let stats = store.clone();
    StoreCollector::register("origin", Arc::new(move || stats.stats()));

    let mut server = server::build(&config.server, upgrade);
    if let Some(sweeper) = sweeper {
        server.add_service(background_service("expired versions", sweeper));
    }
    let names = Arc::new(crate::resolve::Names::new(&config.dns)?);
    let upstreams = Arc::new(Upstreams::new(&config.hosts, &config.backend, &names)?);
    let pools = server.add_service(background_service("backends", upstreams.service()));
    let origin = Origin::new(config.clone(), store, upstreams.clone());
    let mut app = pingora_proxy::HttpProxy::new(origin, server.configuration.clone());
    app.handle_init_modules();
    app.h2_options = Some(peer::server_options(t));
    // Edges open WebSockets as extended CONNECT streams (`origin::websocket`); a plain CONNECT
    // is still refused (405) by the origin's own checks.
    let mut options = app.server_options.take().unwrap_or_default();
    options.allow_connect_method_proxying = true;
    app.server_options = Some(options);
    let app = tcp::Accepted::new(app, t.congestion_control.as_deref());
    if !t.listen.is_empty() {
        let origin_tls = Arc::new(tunnel_tls::OriginTls::load(&t.cert, &t.key, &t.client_ca, &t.client_names)?);
        let mut proxy = Service::new("origin".to_string(), app.share());
        for addr in &t.listen {
            proxy.add_tls_with_settings(&addr.to_string(), None, origin_tls.settings()?);
        }
        if !t.allow.is_empty() {
            proxy.set_connection_filter(Arc::new(AllowList::new(t.allow.clone())));
        }
        // Requests are taken once every name has had its first answer.
        server.add_service(proxy).add_dependency(&pools);
        server.add_service(background_service(
            "TLS reload",
            tls::Reloader::new("tunnel certificate and client CA", move || origin_tls.reload()),
        ));
    }
    let mut dialled = None;
    if !t.dial.is_empty() {
        let dialer = Arc::new(Dialer::new(Arc::new(app.share()), t, names).context("tunnel.dial")?);
        dialled = Some(dialer.connected.clone());
        // A background service gets one thread unless told otherwise; this one serves every
        // request that reaches the origin, so it gets the workers a listener would.
        let mut lanes = background_service("dial-out lanes", DialService(dialer));
        lanes.threads = Some(config.server.threads);
        server.add_service(lanes).add_dependency(&pools);
    }
    server.add_service(admin::service(
        config.admin.listen,
        Admin {
            ready_probe: t.listen.clone(),
            corrupt_store: None,
            readiness: Some(Arc::new(move || {
                admin::all_ready([upstreams.readiness()].into_iter().chain(dialled.iter().map(|d| d.readiness())))
            })),
        },
    ));
    log::info!(
        "origin: tunnel on {:?}, dialling {:?}, admin on {}, {} hosts",
        t.listen,
        t.dial.iter().map(ToString::to_string).collect::<Vec<_>>(),
        config.admin.listen,
        config.hosts.len()
    );
    server.run_forever()
}

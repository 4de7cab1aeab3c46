//! Starting a process in either mode from a validated configuration.

use std::sync::Arc;

use anyhow::Context as _;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::protocols::http::v2::server::H2Options;
use tunnel::VersionId;
use tunnel::store::{MemoryStore, VersionStore};

use crate::admin::{self, Admin};
use crate::config::origin::StoreKind;
use crate::config::{EdgeConfig, OriginConfig};
use crate::edge::Edge;
use crate::edge::listeners::{Listeners, Prober};
use crate::metrics::{self, StoreCollector};
use crate::origin::Origin;
use crate::redis_store::RedisStore;
use crate::{server, tls};
use pingora_core::services::background::{GenBackgroundService, background_service};

/// Runs the edge until it is told to stop; never returns on success.
pub fn edge(config: EdgeConfig, upgrade: bool) -> anyhow::Result<()> {
    pingora_core::tls::install_default_crypto_provider();
    metrics::init("edge");
    let config = Arc::new(config);
    let t = &config.tunnel;
    let peer_tls = tls::edge_peer_tls(&t.ca, t.cert.as_deref(), t.key.as_deref())?;
    let store = Arc::new(MemoryStore::<String>::new(config.delta.store_size));
    let stats = store.clone();
    StoreCollector::register("edge", Arc::new(move || stats.stats()));

    let mut server = server::build(&config.server, upgrade);
    let listeners = Arc::new(Listeners::new(&config));
    let prober = Prober::new(listeners.clone(), config.clone(), peer_tls.clone());
    let mut proxy = pingora_proxy::http_proxy_service_with_name(
        &server.configuration,
        Edge::new(config.clone(), peer_tls, store.clone(), listeners),
        "edge",
    );
    let mut options = HttpServerOptions::default();
    options.h2c = true;
    proxy.app_logic_mut().expect("proxy app").server_options = Some(options);
    let mut probe = Vec::new();
    for addr in &config.listen {
        proxy.add_tcp(&addr.to_string());
        probe.push(*addr);
    }
    if let Some(https) = &config.https {
        for addr in &https.listen {
            let mut settings = TlsSettings::intermediate(&path(&https.cert)?, &path(&https.key)?)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("https certificate")?;
            settings.enable_h2();
            proxy.add_tls_with_settings(&addr.to_string(), None, settings);
            probe.push(*addr);
        }
    }
    let corrupt = config.admin.fault_injection.then(|| {
        let store = store.clone();
        Arc::new(move || store.corrupt_bodies_for_testing()) as admin::Fault
    });
    server.add_service(proxy);
    server.add_service(background_service("origin listener probes", prober));
    server.add_service(admin::service(config.admin.listen, Admin { ready_probe: probe, corrupt_store: corrupt }));
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
    pingora_core::tls::install_default_crypto_provider();
    metrics::init("origin");
    let config = Arc::new(config);
    let t = &config.tunnel;
    let store: Arc<dyn VersionStore<VersionId>> = match &config.store {
        StoreKind::Memory => Arc::new(MemoryStore::new(config.delta.store_size)),
        StoreKind::Redis { url, ttl, timeout } => Arc::new(RedisStore::new(url, *ttl, *timeout)?),
    };
    let stats = store.clone();
    StoreCollector::register("origin", Arc::new(move || stats.stats()));

    let mut server = server::build(&config.server, upgrade);
    let (origin, backends) = Origin::new(config.clone(), store)?;
    for (host, lb) in backends {
        server.add_service(GenBackgroundService::new(format!("health checks for {host}"), lb));
    }
    let mut proxy = pingora_proxy::http_proxy_service_with_name(&server.configuration, origin, "origin");
    let mut h2 = H2Options::new();
    h2.max_concurrent_streams(t.max_streams);
    proxy.app_logic_mut().expect("proxy app").h2_options = Some(h2);
    for addr in &t.listen {
        let settings = tls::origin_tls_settings(&t.cert, &t.key, t.client_ca.as_deref())?;
        proxy.add_tls_with_settings(&addr.to_string(), None, settings);
    }
    server.add_service(proxy);
    server
        .add_service(admin::service(config.admin.listen, Admin { ready_probe: t.listen.clone(), corrupt_store: None }));
    log::info!("origin: tunnel on {:?}, admin on {}, {} hosts", t.listen, config.admin.listen, config.hosts.len());
    server.run_forever()
}

fn path(p: &std::path::Path) -> anyhow::Result<String> {
    p.to_str().map(str::to_string).with_context(|| format!("{} is not valid UTF-8", p.display()))
}

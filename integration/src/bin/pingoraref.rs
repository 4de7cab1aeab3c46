//! The reference the bench issue names: "bare Pingora two hops". A Pingora proxy with no
//! hooks beyond `upstream_peer`, one worker thread, forwarding to one upstream: run twice, as an
//! edge (HTTP/1 in, HTTP/2 out) and an origin (HTTP/2 in, HTTP/1 out), it measures what
//! Pingora's two hops cost before anything railproxy adds.
//!
//!   railproxy-pingora-reference --listen ADDR --upstream ADDR [--h2-upstream] [--tls DIR] [--cache]
//!
//! With `--tls DIR` (a `railproxy certs` directory), the listener serves TLS 1.3 with the
//! origin's certificate and the HTTP/2 upstream is reached over TLS, as railproxy's tunnel is;
//! without it, HTTP/2 runs in cleartext (h2c), the reference.
//!
//! With `--cache`, it is the reference for edge cache hits: Pingora's own in-memory cache
//! (`MemCache`, the LRU eviction manager and the cache lock railproxy's edge uses) keyed on host
//! and path, storing what Cache-Control allows, and nothing else.

use std::net::SocketAddr;
use std::path::PathBuf;

use async_trait::async_trait;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::Server;
use pingora_core::server::configuration::ServerConf;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::ResponseHeader;
use pingora_proxy::{ProxyHttp, Session};

// The allocator railproxy runs with, so that the two differ only in what railproxy adds.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Hop {
    upstream: SocketAddr,
    h2: bool,
    tls: bool,
    cache: Option<cache::Parts>,
}

#[async_trait]
impl ProxyHttp for Hop {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> pingora_core::Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream, self.tls, "origin.railproxy.internal".into());
        if self.h2 {
            peer.options.set_http_version(2, 2);
            // One connection carries every concurrent request, as railproxy's tunnel does.
            peer.options.max_h2_streams = 128;
        }
        // The reference measures per-request cost on a pooled connection; the certificate
        // check happens once per connection and is not what is being measured.
        peer.options.verify_cert = false;
        peer.options.verify_hostname = false;
        Ok(Box::new(peer))
    }

    fn request_cache_filter(&self, session: &mut Session, _: &mut ()) -> pingora_core::Result<()> {
        if let Some(parts) = &self.cache {
            parts.enable(session);
        }
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, _: &mut ()) -> pingora_core::Result<pingora_cache::CacheKey> {
        Ok(cache::key(session))
    }

    fn response_cache_filter(
        &self,
        _: &Session,
        resp: &ResponseHeader,
        _: &mut (),
    ) -> pingora_core::Result<pingora_cache::RespCacheable> {
        Ok(cache::cacheable(resp))
    }
}

mod cache {
    use std::time::Duration;

    use pingora_cache::cache_control::CacheControl;
    use pingora_cache::eviction::lru::Manager;
    use pingora_cache::filters::resp_cacheable;
    use pingora_cache::lock::{CacheKeyLockImpl, CacheLock};
    use pingora_cache::{CacheKey, CacheMetaDefaults, MemCache, RespCacheable};
    use pingora_http::ResponseHeader;
    use pingora_proxy::Session;

    const DEFAULTS: CacheMetaDefaults = CacheMetaDefaults::new(|_| None, 0, 0);
    const SHARDS: usize = 16;

    pub struct Parts {
        storage: &'static MemCache,
        eviction: &'static Manager<SHARDS>,
        lock: &'static CacheKeyLockImpl,
    }

    impl Parts {
        pub fn new() -> Self {
            Parts {
                storage: Box::leak(Box::new(MemCache::new())),
                eviction: Box::leak(Box::new(Manager::with_capacity(64 << 20, 8192 / SHARDS))),
                lock: Box::leak(CacheLock::new_boxed(Duration::from_secs(2))),
            }
        }

        pub fn enable(&self, session: &mut Session) {
            session.cache.enable(self.storage, Some(self.eviction), None, Some(self.lock), None);
        }
    }

    pub fn key(session: &Session) -> CacheKey {
        let req = session.req_header();
        let host = req.headers.get(http::header::HOST).map_or(&b""[..], |h| h.as_bytes());
        let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
        CacheKey::new(format!("{}{path}", String::from_utf8_lossy(host)), "")
    }

    pub fn cacheable(resp: &ResponseHeader) -> RespCacheable {
        resp_cacheable(CacheControl::from_resp_headers(resp).as_ref(), resp.clone(), false, &DEFAULTS)
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut listen, mut upstream, mut h2, mut tls, mut cache) = (None, None, false, None::<PathBuf>, false);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = Some(address(&a, args.next())),
            "--upstream" => upstream = Some(address(&a, args.next())),
            "--h2-upstream" => h2 = true,
            "--tls" => tls = args.next().map(PathBuf::from),
            "--cache" => cache = true,
            other => exit_usage(&format!("unknown argument {other}")),
        }
    }
    let (Some(listen), Some(upstream)) = (listen, upstream) else { exit_usage("--listen and --upstream are required") };
    pingora_core::tls::install_default_crypto_provider();
    // One worker on Pingora's single-threaded runtime, as railproxy runs in the bench.
    let conf = ServerConf { threads: 1, work_stealing: false, ..ServerConf::default() };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let hop = Hop { upstream, h2, tls: h2 && tls.is_some(), cache: cache.then(cache::Parts::new) };
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, hop);
    let app = proxy.app_logic_mut().expect("proxy app");
    let mut options = HttpServerOptions::default();
    options.h2c = true;
    app.server_options = Some(options);
    match &tls {
        Some(dir) if !h2 => {
            let path = |f: &str| dir.join(f).display().to_string();
            let mut settings =
                TlsSettings::intermediate(&path("origin.pem"), &path("origin.key")).expect("TLS settings");
            settings.enable_h2();
            proxy.add_tls_with_settings(&listen.to_string(), None, settings);
        }
        _ => proxy.add_tcp(&listen.to_string()),
    }
    server.add_service(proxy);
    server.run_forever()
}

fn address(flag: &str, value: Option<String>) -> SocketAddr {
    let value = value.unwrap_or_else(|| exit_usage(&format!("{flag} needs an address")));
    value.parse().unwrap_or_else(|_| exit_usage(&format!("{flag}: {value:?} is not an address such as 127.0.0.1:8080")))
}

fn exit_usage(why: &str) -> ! {
    eprintln!(
        "railproxy-pingora-reference: {why}\nusage: --listen ADDR --upstream ADDR [--h2-upstream] [--tls DIR] [--cache]"
    );
    std::process::exit(64)
}

//! The reference the bench issue names: "bare Pingora two hops". A Pingora proxy with no
//! hooks beyond `upstream_peer`, one worker thread, forwarding to one upstream: run twice, as an
//! edge (HTTP/1 in, HTTP/2 out) and an origin (HTTP/2 in, HTTP/1 out), it measures what
//! Pingora's two hops cost before anything railproxy adds.
//!
//!   railproxy-pingora-reference --listen ADDR --upstream ADDR [--h2-upstream] [--tls DIR]
//!
//! With `--tls DIR` (a `railproxy certs` directory), the listener serves TLS 1.3 with the
//! origin's certificate and the HTTP/2 upstream is reached over TLS, as railproxy's tunnel is;
//! without it, HTTP/2 runs in cleartext (h2c), the reference.

use std::net::SocketAddr;
use std::path::PathBuf;

use async_trait::async_trait;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::Server;
use pingora_core::server::configuration::ServerConf;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};

// The allocator railproxy runs with, so that the two differ only in what railproxy adds.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Hop {
    upstream: SocketAddr,
    h2: bool,
    tls: bool,
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
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut listen, mut upstream, mut h2, mut tls) = (None, None, false, None::<PathBuf>);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = Some(address(&a, args.next())),
            "--upstream" => upstream = Some(address(&a, args.next())),
            "--h2-upstream" => h2 = true,
            "--tls" => tls = args.next().map(PathBuf::from),
            other => exit_usage(&format!("unknown argument {other}")),
        }
    }
    let (Some(listen), Some(upstream)) = (listen, upstream) else { exit_usage("--listen and --upstream are required") };
    pingora_core::tls::install_default_crypto_provider();
    // One worker on Pingora's single-threaded runtime, as railproxy runs in the bench.
    let conf = ServerConf { threads: 1, work_stealing: false, ..ServerConf::default() };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let hop = Hop { upstream, h2, tls: h2 && tls.is_some() };
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
    eprintln!("railproxy-pingora-reference: {why}\nusage: --listen ADDR --upstream ADDR [--h2-upstream] [--tls DIR]");
    std::process::exit(64)
}

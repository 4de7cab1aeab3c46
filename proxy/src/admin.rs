//! The admin listener: `/metrics` (Prometheus text), `/health` (200 once the proxy listeners
//! accept connections), and, only when `admin.fault_injection` is on, fault injection for tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora_core::apps::http_app::{HttpServer, ServeHttp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::services::listening::Service;

use crate::metrics;

/// A fault an admin endpoint can inject; returns how many things it affected.
pub type Fault = Arc<dyn Fn() -> usize + Send + Sync>;

pub struct Admin {
    /// Listeners that must accept before `/health` says ready.
    pub ready_probe: Vec<SocketAddr>,
    /// `POST /debug/corrupt-store`, when fault injection is enabled.
    pub corrupt_store: Option<Fault>,
    /// For `/ready`: whether every configured host has an upstream that is up, or why not.
    pub readiness: Option<Readiness>,
}

/// Ok when every host has an upstream that is up; otherwise one line per host that has none.
pub type Readiness = Arc<dyn Fn() -> Result<(), Vec<String>> + Send + Sync>;

/// Ready when every check is; otherwise every reason any of them gives.
pub fn all_ready(checks: impl IntoIterator<Item = Result<(), Vec<String>>>) -> Result<(), Vec<String>> {
    let why: Vec<String> = checks.into_iter().filter_map(Result::err).flatten().collect();
    if why.is_empty() { Ok(()) } else { Err(why) }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Vec<u8>>) -> Response<Vec<u8>> {
    let body = body.into();
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .expect("static response parts are valid")
}

/// A wildcard listen address is probed on loopback.
fn probe_addr(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => SocketAddr::from(([127, 0, 0, 1], v4.port())),
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, v6.port())),
        other => other,
    }
}

impl Admin {
    async fn health(&self) -> Response<Vec<u8>> {
        for addr in &self.ready_probe {
            let probe =
                tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(probe_addr(*addr)));
            if !matches!(probe.await, Ok(Ok(_))) {
                return reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("starting: {addr} not accepting yet\n"),
                );
            }
        }
        reply(StatusCode::OK, "text/plain", "ok\n")
    }

    /// Liveness (`/health`) and, past it, whether this process can serve every host it is
    /// configured for: what a load balancer or orchestrator should route by.
    async fn ready(&self) -> Response<Vec<u8>> {
        let live = self.health().await;
        if live.status() != StatusCode::OK {
            return live;
        }
        match self.readiness.as_ref().map_or(Ok(()), |r| r()) {
            Ok(()) => reply(StatusCode::OK, "text/plain", "ready\n"),
            Err(reasons) => {
                let mut body = String::from("not ready:\n");
                for r in reasons {
                    body.push_str(&format!("  {r}\n"));
                }
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", body)
            }
        }
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let (method, path) = (req.method.clone(), req.uri.path().to_string());
        match (method, path.as_str()) {
            (Method::GET, "/metrics") => reply(StatusCode::OK, "text/plain; version=0.0.4", metrics::render()),
            (Method::GET, "/health") => self.health().await,
            (Method::GET, "/ready") => self.ready().await,
            (Method::POST, "/debug/corrupt-store") => match &self.corrupt_store {
                Some(fault) => {
                    let n = fault();
                    log::warn!("fault injection: corrupted {n} stored versions");
                    reply(StatusCode::OK, "text/plain", format!("corrupted {n} versions\n"))
                }
                None => reply(StatusCode::NOT_FOUND, "text/plain", "fault injection is disabled\n"),
            },
            _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found: try /metrics, /health or /ready\n"),
        }
    }
}

/// The admin listener as a Pingora service.
pub fn service(listen: SocketAddr, admin: Admin) -> Service<HttpServer<Admin>> {
    let mut service = Service::new("admin".to_string(), HttpServer::new_app(admin));
    service.add_tcp(&listen.to_string());
    service
}

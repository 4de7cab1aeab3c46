//! A scripted origin listener: real TLS (the `railproxy certs` origin certificate) and real
//! HTTP/2, answering each tunnel request with whatever the test decides — a crafted dcz body,
//! a lie about the base, a bomb — to prove the edge never serves what it cannot verify.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{HeaderMap, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What the fake origin saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
}

/// Decides the response to a request; called once per request, in order.
pub type Script = Box<dyn Fn(&Seen, usize) -> Response<Full<Bytes>> + Send + Sync>;

pub struct FakeOrigin {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FakeOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeOrigin").field("addr", &self.addr).finish()
    }
}

fn tls_config(certs: &Path, versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<rustls::ServerConfig> {
    let chain =
        rustls_pemfile::certs(&mut std::io::BufReader::new(std::fs::File::open(certs.join("origin.pem")).unwrap()))
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(certs.join("origin.key")).unwrap(),
    ))
    .unwrap()
    .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

impl FakeOrigin {
    /// Listens on an ephemeral loopback port with the origin certificate from `certs`.
    pub async fn start(certs: &Path, script: Script) -> FakeOrigin {
        Self::start_with(certs, &[&rustls::version::TLS13], script).await
    }

    /// The same, speaking only the given TLS versions (to prove the edge refuses TLS 1.2).
    pub async fn start_with(
        certs: &Path,
        versions: &[&'static rustls::SupportedProtocolVersion],
        script: Script,
    ) -> FakeOrigin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls_config(certs, versions));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(script);
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, script, seen) = (acceptor.clone(), script.clone(), seen2.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (script, seen) = (script.clone(), seen.clone());
                        async move {
                            if req.headers().contains_key("railproxy-probe") {
                                // Edges probe their listeners; answered like the real origin does.
                                let ok = Full::new(Bytes::from_static(b"ok\n")).boxed();
                                return Ok::<_, Infallible>(Response::new(ok));
                            }
                            let s = Seen { path: req.uri().path().to_string(), headers: req.headers().clone() };
                            let _ = req.into_body().collect().await;
                            let n = {
                                let mut all = seen.lock().unwrap();
                                all.push(s.clone());
                                all.len() - 1
                            };
                            Ok::<_, Infallible>(paused(script(&s, n)).await)
                        }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        FakeOrigin { addr, seen, task }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A script's response as sent: whole, or — when it carries [`PAUSE_AT`] — in pieces cut at
/// the given offsets, 100 ms apart (as an origin flushing a segment when its backend pauses).
async fn paused(response: Response<Full<Bytes>>) -> Response<BoxBody<Bytes, Infallible>> {
    let (mut parts, body) = response.into_parts();
    let Some(at) = parts.headers.remove(PAUSE_AT) else {
        return Response::from_parts(parts, body.boxed());
    };
    let cuts: Vec<usize> = at.to_str().unwrap().split(',').map(|a| a.parse().expect("byte offsets")).collect();
    let mut rest = body.collect().await.unwrap_or_else(|e: Infallible| match e {}).to_bytes();
    let (mut pieces, mut done) = (Vec::new(), 0);
    for cut in cuts {
        pieces.push(rest.split_to(cut.clamp(done, done + rest.len()) - done));
        done = cut.max(done);
    }
    pieces.push(rest);
    let first = pieces.len();
    let frames = futures_util::stream::iter(pieces).enumerate().then(move |(i, piece)| async move {
        if i > 0 && i < first {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Ok::<_, Infallible>(hyper::body::Frame::data(piece))
    });
    Response::from_parts(parts, http_body_util::BodyExt::boxed(StreamBody::new(frames)))
}

/// A response header (removed before sending) asking the fake origin to send the body in
/// pieces cut at these byte offsets (`8192,8217`), pausing between them.
pub const PAUSE_AT: &str = "fake-pause-at";

/// A tunnel response: status 200, text/html, the given encoding and extra headers.
pub fn tunnel_response(encoding: Option<&str>, headers: &[(&str, String)], body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::builder().status(200).header("content-type", "text/html; charset=utf-8");
    if let Some(e) = encoding {
        r = r.header("content-encoding", e);
    }
    for (k, v) in headers {
        r = r.header(*k, v.as_str());
    }
    r.body(Full::new(Bytes::from(body))).unwrap()
}

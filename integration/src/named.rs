//! Backends that say who they are: each answers any request with its name, the HTTP version it
//! was spoken to in and the path (`b1 HTTP/2.0 /x`), so a test sees where a request went and
//! how. One port serves HTTP/1.1 and h2c (prior knowledge), or TLS with ALPN h2 and http/1.1.
//! `/slow` answers after 1.5 s (a backend busy with a request).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};

pub struct Named {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Named {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Named").field("addr", &self.addr).finish()
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn tls_acceptor(cert: &Path, key: &Path) -> tokio_rustls::TlsAcceptor {
    let chain = rustls_pemfile::certs(&mut std::io::BufReader::new(std::fs::File::open(cert).expect("cert")))
        .collect::<Result<Vec<_>, _>>()
        .expect("certificates");
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(std::fs::File::open(key).expect("key")))
        .expect("key file")
        .expect("a key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("certificate and key");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

impl Named {
    /// Listens on `at` (port 0 for any); with `tls`, the certificate and key it presents.
    pub async fn start(name: &str, at: SocketAddr, tls: Option<(&Path, &Path)>) -> Named {
        let listener = tokio::net::TcpListener::bind(at).await.expect("bind a named backend");
        let addr = listener.local_addr().expect("address");
        let acceptor = tls.map(|(c, k)| tls_acceptor(c, k));
        let hits = Arc::new(AtomicUsize::new(0));
        let (name, counted) = (Arc::<str>::from(name), hits.clone());
        let task = tokio::spawn(async move {
            // Connections live in here: dropping the backend closes them too, as a process
            // that died would.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (name, counted, acceptor) = (name.clone(), counted.clone(), acceptor.clone());
                while connections.try_join_next().is_some() {}
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (name, counted) = (name.clone(), counted.clone());
                        async move {
                            counted.fetch_add(1, Ordering::Relaxed);
                            if req.uri().path() == "/slow" {
                                tokio::time::sleep(Duration::from_millis(1500)).await;
                            }
                            let body = format!("{name} {:?} {}\n", req.version(), req.uri().path());
                            let resp = Response::builder()
                                .header("content-type", "text/plain")
                                .header("x-backend", &*name)
                                .body(Full::new(Bytes::from(body)))
                                .expect("response");
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let auto = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        None => {
                            let _ = auto.serve_connection(TokioIo::new(tcp), service).await;
                        }
                        Some(acceptor) => {
                            let Ok(tls) = acceptor.accept(tcp).await else { return };
                            let _ = auto.serve_connection(TokioIo::new(tls), service).await;
                        }
                    }
                });
            }
        });
        Named { addr, hits, task }
    }

    /// Requests it answered (or began to).
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }
}

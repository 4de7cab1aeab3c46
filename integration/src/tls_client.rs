//! A raw TLS client for knocking on the tunnel port: with or without a client certificate, any
//! CA, TLS 1.2 or 1.3. It reports what came back, so tests can tell a refused handshake from an
//! HTTP answer.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// How to connect.
#[derive(Debug, Clone, Copy)]
pub struct Knock<'a> {
    /// CA the server's certificate must chain to.
    pub ca: &'a Path,
    /// Client certificate and key to present, if any.
    pub client: Option<(&'a Path, &'a Path)>,
    /// Offer TLS 1.2 only (otherwise 1.3 only).
    pub tls12: bool,
    pub server_name: &'a str,
}

/// The certificates in a PEM file, in order.
pub fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    let mut r = std::io::BufReader::new(std::fs::File::open(path).expect("certificate file"));
    rustls_pemfile::certs(&mut r).collect::<Result<_, _>>().expect("PEM certificates")
}

/// When the first certificate in a PEM file expires, Unix seconds.
pub fn not_after(path: &Path) -> i64 {
    let first = certs(path).into_iter().next().expect("a certificate");
    x509_parser::parse_x509_certificate(&first).expect("an X.509 certificate").1.validity().not_after.timestamp()
}

fn key(path: &Path) -> PrivateKeyDer<'static> {
    let mut r = std::io::BufReader::new(std::fs::File::open(path).expect("key file"));
    rustls_pemfile::private_key(&mut r).expect("PEM key").expect("a key")
}

fn config(k: &Knock<'_>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(k.ca) {
        roots.add(c).expect("CA certificate");
    }
    let version: &[&'static rustls::SupportedProtocolVersion] =
        if k.tls12 { &[&rustls::version::TLS12] } else { &[&rustls::version::TLS13] };
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(version)
        .expect("protocol versions")
        .with_root_certificates(roots);
    let mut config = match k.client {
        Some((cert, k)) => builder.with_client_auth_cert(certs(cert), key(k)).expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// What a knock got back.
#[derive(Debug)]
pub struct Answer {
    /// The handshake as the client saw it (in TLS 1.3 the server refuses a client certificate
    /// after the client's side of the handshake is done, so this alone proves little).
    pub handshake: Result<(), String>,
    /// Bytes read after sending one HTTP/1.1 request, and how reading ended.
    pub response: Vec<u8>,
    pub read_end: String,
    /// The server's certificate, when the handshake got that far.
    pub server_cert: Option<Vec<u8>>,
}

impl Answer {
    /// True when the server answered HTTP: the connection was accepted.
    pub fn served(&self) -> bool {
        self.response.starts_with(b"HTTP/1.1 ")
    }
}

/// Connects to `addr`, sends `GET path` for `host`, and reads until the server closes (5 s at
/// most).
pub async fn knock(addr: std::net::SocketAddr, k: Knock<'_>, host: &str, path: &str) -> Answer {
    knock_with(addr, k, &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")).await
}

/// The same with a request of the caller's making (raw bytes after the handshake).
pub async fn knock_with(addr: std::net::SocketAddr, k: Knock<'_>, req: &str) -> Answer {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("TCP connect");
    knock_over(tcp, addr, k, req).await
}

/// `knock` from a given local address (another loopback address, say 127.0.0.2, is another
/// client to the server).
pub async fn knock_from(from: std::net::IpAddr, addr: std::net::SocketAddr, k: Knock<'_>, host: &str) -> Answer {
    let socket = tokio::net::TcpSocket::new_v4().expect("TCP socket");
    socket.bind(std::net::SocketAddr::new(from, 0)).unwrap_or_else(|e| panic!("binding {from}: {e}"));
    let tcp = socket.connect(addr).await.expect("TCP connect");
    knock_over(tcp, addr, k, &format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")).await
}

async fn knock_over(tcp: tokio::net::TcpStream, addr: std::net::SocketAddr, k: Knock<'_>, req: &str) -> Answer {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config(&k)));
    let name = ServerName::try_from(k.server_name.to_string()).expect("server name");
    let mut tls = match tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Answer {
                handshake: Err(e.to_string()),
                response: Vec::new(),
                read_end: String::new(),
                server_cert: None,
            };
        }
        Err(_) => panic!("TLS handshake with {addr} hung"),
    };
    let server_cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec());
    let mut response = Vec::new();
    let read_end = match tls.write_all(req.as_bytes()).await {
        Err(e) => format!("write: {e}"),
        Ok(()) => match tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut response)).await {
            Ok(Ok(_)) => "closed".to_string(),
            Ok(Err(e)) => format!("read: {e}"),
            Err(_) => panic!("no answer from {addr} within 5 s"),
        },
    };
    Answer { handshake: Ok(()), response, read_end, server_cert }
}

/// Sends `bytes` over plain TCP and returns whatever comes back before the server closes (5 s
/// at most).
pub async fn plain(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("TCP connect");
    let _ = tcp.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
    out
}

/// One GET over HTTPS as a browser makes it: the server's certificate checked against `ca` for
/// `server_name`, HTTP/2 or HTTP/1.1 as ALPN settles (`h2` offers both, h2 first), for `path`
/// on `host`. Returns the protocol ALPN chose and the response, fully read.
pub async fn https_get(
    addr: std::net::SocketAddr,
    ca: &Path,
    server_name: &str,
    h2: bool,
    (host, path): (&str, &str),
    headers: &[(&str, &str)],
) -> Result<(String, crate::client::Resp), String> {
    use http_body_util::BodyExt as _;
    let mut config = config(&Knock { ca, client: None, tls12: false, server_name });
    config.alpn_protocols = if h2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("TCP connect to {addr}: {e}"))?;
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
    let alpn = String::from_utf8_lossy(tls.get_ref().1.alpn_protocol().unwrap_or(b"none")).into_owned();
    // HTTP/2 carries the host in `:authority`, HTTP/1.1 in `Host`.
    let mut req = if alpn == "h2" {
        http::Request::get(format!("https://{host}{path}"))
    } else {
        http::Request::get(path).header(http::header::HOST, host)
    };
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(http_body_util::Empty::<bytes::Bytes>::new()).map_err(|e| e.to_string())?;
    let io = hyper_util::rt::TokioIo::new(tls);
    let exchange = async {
        let resp = if alpn == "h2" {
            let (mut send, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("h2 handshake: {e}"))?;
            tokio::spawn(conn);
            send.send_request(req).await
        } else {
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
            tokio::spawn(conn);
            send.send_request(req).await
        }
        .map_err(|e| format!("request: {e}"))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| format!("reading body: {e}"))?.to_bytes();
        Ok((alpn, crate::client::Resp { status: parts.status, headers: parts.headers, body }))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| format!("no answer from {addr} in 10 s"))?
}

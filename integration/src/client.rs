//! HTTP clients for tests: HTTP/1.1 with keep-alive, or HTTP/2 with prior knowledge (h2c).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A response, fully read.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Clone)]
#[allow(missing_debug_implementations)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    pub timeout: Duration,
}

impl Http {
    /// HTTP/1.1, pooled keep-alive connections.
    pub fn h1() -> Self {
        Http { client: Client::builder(TokioExecutor::new()).build_http(), timeout: Duration::from_secs(30) }
    }

    /// HTTP/2 over cleartext with prior knowledge.
    pub fn h2c() -> Self {
        Http {
            client: Client::builder(TokioExecutor::new()).http2_only(true).build_http(),
            timeout: Duration::from_secs(30),
        }
    }

    pub async fn send(&self, method: Method, url: &str, headers: &[(&str, &str)], body: Bytes) -> Result<Resp, String> {
        let mut req = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let fut = async {
            let resp = self.client.request(req).await.map_err(|e| format!("{e:?}"))?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(|e| format!("reading body: {e:?}"))?.to_bytes();
            Ok(Resp { status: parts.status, headers: parts.headers, body })
        };
        tokio::time::timeout(self.timeout, fut).await.map_err(|_| format!("timed out after {:?}", self.timeout))?
    }

    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Result<Resp, String> {
        self.send(Method::GET, url, headers, Bytes::new()).await
    }
}

/// GETs `url` for each version of `versions` in turn (`x-version: i`), round after round until
/// `at_least` were sent, each answer 200 and byte for byte that version; how many were sent.
pub async fn get_versions_byte_exact(http: &Http, url: &str, versions: &[Vec<u8>], at_least: usize) -> usize {
    let mut n = 0;
    while n < at_least {
        for (i, v) in versions.iter().enumerate() {
            let r = http.get(url, &[("x-version", &i.to_string())]).await.expect("GET");
            assert_eq!(r.status, 200, "version {i}: {}", String::from_utf8_lossy(&r.body));
            assert!(r.body == v[..], "version {i} differs");
            n += 1;
        }
    }
    n
}

/// The rule for a response whose tunnel body may fail verification: the exact `expected` bytes
/// with 200, or a server error, or a broken response — never other bytes.
pub fn assert_right_or_refused(result: Result<Resp, String>, expected: &[u8], what: &str) {
    match result {
        Ok(r) if r.status == 200 => assert!(r.body == expected, "{what}: wrong bytes served"),
        Ok(r) => assert!(r.status.is_server_error(), "{what}: {}", r.status),
        Err(e) => eprintln!("{what}: client saw an error, as it should: {e}"),
    }
}

/// A response read piece by piece, with when each piece arrived.
#[derive(Debug)]
pub struct Timed {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// From sending the request to the response head.
    pub head: Duration,
    /// Each body piece as it arrived: when (wall clock, and from sending the request), what.
    pub pieces: Vec<(std::time::SystemTime, Duration, Bytes)>,
}

impl Timed {
    pub fn body(&self) -> Vec<u8> {
        self.pieces.iter().flat_map(|(_, _, b)| b.iter().copied()).collect()
    }

    /// From sending the request to the first body byte.
    pub fn first_byte(&self) -> Option<Duration> {
        self.pieces.first().map(|(_, at, _)| *at)
    }
}

impl Http {
    /// GET, recording when each body piece arrives.
    pub async fn get_timed(&self, url: &str, headers: &[(&str, &str)]) -> Result<Timed, String> {
        let mut req = Request::builder().method(Method::GET).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
        let fut = async {
            let start = std::time::Instant::now();
            let resp = self.client.request(req).await.map_err(|e| format!("{e:?}"))?;
            let head = start.elapsed();
            let (parts, mut body) = resp.into_parts();
            let mut pieces = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| format!("reading body: {e:?}"))?;
                if let Ok(data) = frame.into_data()
                    && !data.is_empty()
                {
                    pieces.push((std::time::SystemTime::now(), start.elapsed(), data));
                }
            }
            Ok(Timed { status: parts.status, headers: parts.headers, head, pieces })
        };
        tokio::time::timeout(self.timeout, fut).await.map_err(|_| format!("timed out after {:?}", self.timeout))?
    }
}

//! The origin's end of a WebSocket carried as a tunnel stream (see `tunnel::websocket`): the
//! edge's extended CONNECT becomes the HTTP/1.1 upgrade the backend expects, on a backend
//! connection of its own (an upgraded connection is never pooled), and the two are joined until
//! either side ends or the socket stays silent for `websocket.idle_timeout`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use pingora_core::protocols::Stream;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{CONNECT_ATTEMPTS, MODE, Origin};
use crate::tunnel::{protocol, websocket};
use crate::{http_util, metrics};

/// The backend's handshake answer must fit this (nginx's `large_client_header_buffers`).
const MAX_HEAD: usize = 32 * 1024;
/// Read buffer of each socket's backend side: small, as most sockets are idle most of the time.
const READ_BUFFER: usize = 8 * 1024;

/// Answers the edge's extended CONNECT: 200 and the socket, or the backend's refusal as it
/// gave it, or 502 when no backend took the handshake.
pub(super) async fn carry(origin: &Origin, session: &mut Session) -> Result<bool> {
    let mut req = session.req_header().clone();
    protocol::strip_request(&mut req);
    let host = http_util::request_host(&req).unwrap_or_default();
    let path = req.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let Some(pool) = origin.upstreams.pool(&host, req.uri.path()).cloned() else {
        let message = format!("this origin listener does not serve host {host:?} (or no route takes {path})");
        return http_util::refuse(session, 421, "host", &message).await;
    };
    let idle = origin.config.websocket.idle_timeout;
    let b = &origin.config.backend;
    // The edge may give up (its client left) while the backend is reached: its stream's reset
    // (or any byte before the answer) ends this at once.
    let edge_gone = async {
        let _ = session.as_downstream_mut().read_request_body().await;
    };
    let handshake = async {
        let (mut backend, held) = connect(origin, &pool, &host).await?;
        let key = websocket::new_key();
        backend.write_all(&request_head(&req, &host, &path, &key)).await.map_err(|e| io_error("writing", e))?;
        backend.flush().await.map_err(|e| io_error("writing", e))?;
        let (head, rest) = tokio::time::timeout(b.response_timeout, read_head(&mut backend))
            .await
            .map_err(|_| Error::explain(ErrorType::ReadTimedout, "no handshake answer from the backend"))??;
        Ok::<_, Box<Error>>((backend, held, key, head, rest))
    };
    let (mut backend, _held, key, head, rest) = tokio::select! {
        r = handshake => r?,
        () = edge_gone => return Err(http_util::cancelled_error(MODE)),
    };
    let accepted = head.status.as_u16() == 101;
    let upgraded = accepted
        && head.headers.get(http::header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let answered = head.headers.get(http::header::SEC_WEBSOCKET_ACCEPT).map(|v| v.as_bytes().to_vec());
    if accepted && (!upgraded || answered.as_deref() != Some(websocket::accept_key(key.as_bytes()).as_bytes())) {
        let e = Error::explain(ErrorType::InvalidHTTPHeader, "the backend's 101 is not a WebSocket handshake's");
        metrics::UPSTREAM_ERRORS.with_label_values(&[MODE, "protocol"]).inc();
        return Err(e);
    }
    let mut resp = ResponseHeader::build(if accepted { 200 } else { head.status.as_u16() }, None)?;
    websocket::copy_answer_fields(&head.headers, &mut resp)?;
    if !accepted {
        // A refusal (401, 403, 404, or a page where a socket was asked for) reaches the client
        // as the backend wrote it, marked so that no 2xx of it reads as the socket.
        protocol::mark_websocket_refused(&mut resp)?;
        let body = refusal_body(&mut backend, &head, rest, b.response_timeout).await;
        resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(body), true).await?;
        return Ok(true);
    }
    session.write_response_header(Box::new(resp), false).await?;
    if !rest.is_empty() {
        session.write_response_body(Some(rest), false).await?;
    }
    join(session, &mut backend, idle).await;
    Ok(true)
}

/// A connection to one of the pool's backends, each tried in turn as for any request.
async fn connect(origin: &Origin, pool: &std::sync::Arc<super::Pool>, host: &str) -> Result<(Stream, super::InFlight)> {
    let b = &origin.config.backend;
    let wait = b.connect_timeout.saturating_mul(CONNECT_ATTEMPTS as u32);
    let mut tried: Vec<SocketAddr> = Vec::new();
    loop {
        let Some((backend, held)) = pool.select(&tried, tried.len() < CONNECT_ATTEMPTS) else {
            let why =
                format!("no backend of {host} could be reached for a WebSocket ({} connects failed)", tried.len());
            return Err(Error::explain(ErrorType::HTTPStatus(502), why));
        };
        let Some(_slot) = pool.connect_slot(&backend, wait).await else {
            let why = format!("backend {} of {host}: no turn to connect within {wait:?}", backend.addr);
            return Err(Error::explain(ErrorType::HTTPStatus(502), why));
        };
        let mut peer = pool.peer(&backend, true);
        peer.options.connection_timeout = Some(b.connect_timeout);
        match origin.connector.new_stream(&peer).await {
            Ok(stream) => return Ok((stream, held)),
            Err(e) => {
                metrics::BACKEND_CONNECT_FAILURES.inc();
                log::warn!("backend {} of {host} unreachable for a WebSocket: {e}", backend.addr);
                pool.failed(&backend);
                tried.extend(backend.addr.as_inet().copied());
            }
        }
    }
}

/// The HTTP/1.1 upgrade for the backend: the edge's fields but the tunnel's and one hop's.
fn request_head(req: &pingora_http::RequestHeader, host: &str, path: &str, key: &str) -> Vec<u8> {
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
    )
    .into_bytes();
    if !req.headers.contains_key(http::header::SEC_WEBSOCKET_VERSION) {
        head.extend_from_slice(b"Sec-WebSocket-Version: 13\r\n");
    }
    for (name, value) in req.headers.iter().filter(|(n, _)| !websocket::hop_only(n)) {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// The backend's answer head, and whatever of the socket came behind it in the same reads.
async fn read_head(backend: &mut Stream) -> Result<(http::response::Parts, Bytes)> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 1024];
        let n = backend.read(&mut chunk).await.map_err(|e| io_error("reading the handshake answer", e))?;
        if n == 0 {
            return Err(Error::explain(ErrorType::ConnectionClosed, "the backend closed before answering"));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut fields = [httparse::EMPTY_HEADER; 100];
        let mut parsed = httparse::Response::new(&mut fields);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let mut resp = http::Response::builder().status(parsed.code.unwrap_or(502));
                for f in parsed.headers.iter() {
                    resp = resp.header(f.name, f.value);
                }
                let (parts, ()) = resp
                    .body(())
                    .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "the backend's handshake answer", e))?
                    .into_parts();
                return Ok((parts, Bytes::copy_from_slice(&buf[len..])));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => {
                return Err(Error::explain(ErrorType::InvalidHTTPHeader, "the backend's answer head is too large"));
            }
            Err(e) => return Err(Error::because(ErrorType::InvalidHTTPHeader, "the backend's handshake answer", e)),
        }
    }
}

/// A refusal's body: its Content-Length's worth, or what comes before the backend closes,
/// at most [`websocket::MAX_REFUSAL_BODY`].
async fn refusal_body(backend: &mut Stream, head: &http::response::Parts, rest: Bytes, limit: Duration) -> Bytes {
    let length = head
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .map_or(websocket::MAX_REFUSAL_BODY, |n| n.min(websocket::MAX_REFUSAL_BODY));
    let mut body = rest.to_vec();
    let _ = tokio::time::timeout(limit, async {
        let mut chunk = [0u8; 4096];
        while body.len() < length {
            match backend.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    body.truncate(length);
    Bytes::from(body)
}

/// Both directions until each side has ended, or either fails, or nothing moved for `idle`.
async fn join(session: &mut Session, backend: &mut Stream, idle: Duration) {
    let (mut from_edge, mut from_backend) = (true, true);
    let mut buf = vec![0u8; READ_BUFFER];
    while from_edge || from_backend {
        let step = tokio::time::timeout(idle, async {
            tokio::select! {
                r = session.as_downstream_mut().read_request_body(), if from_edge => Side::Edge(r),
                r = backend.read(&mut buf), if from_backend => Side::Backend(r),
            }
        });
        let moved = match step.await {
            Err(_) => {
                log::debug!("websocket idle for {idle:?}: closed");
                return;
            }
            Ok(Side::Edge(Ok(Some(data)))) => backend.write_all(&data).await.is_ok() && backend.flush().await.is_ok(),
            Ok(Side::Edge(Ok(None))) => {
                // The edge's half is done (its client closed): the backend hears so.
                from_edge = false;
                let _ = backend.shutdown().await;
                true
            }
            Ok(Side::Edge(Err(_))) => return,
            Ok(Side::Backend(Ok(0) | Err(_))) => {
                from_backend = false;
                session.write_response_body(None, true).await.is_ok()
            }
            Ok(Side::Backend(Ok(n))) => {
                session.write_response_body(Some(Bytes::copy_from_slice(&buf[..n])), false).await.is_ok()
            }
        };
        if !moved {
            return;
        }
    }
}

enum Side {
    Edge(Result<Option<Bytes>>),
    Backend(std::io::Result<usize>),
}

fn io_error(what: &str, e: std::io::Error) -> Box<Error> {
    Error::because(ErrorType::ReadError, format!("backend WebSocket: {what}"), e)
}

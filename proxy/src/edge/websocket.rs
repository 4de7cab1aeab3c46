//! The edge's end of a client's WebSocket: an HTTP/2 stream of a tunnel connection (see
//! `tunnel::websocket` and `tunnel::socket_lanes`), dial-in or dial-out alike. The client's
//! HTTP/1.1 upgrade is answered here with 101 once the origin's 200 says the backend took the
//! socket (or with the backend's refusal as it gave it), then bytes cross both ways at the
//! socket's pace until either side ends or it stays silent for `websocket.idle_timeout`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::{Edge, EdgeCtx, MODE};
use crate::config::edge::{Fallback, OriginRoute};
use crate::http_util;
use crate::tunnel::socket_lanes::{Held, Opened};
use crate::tunnel::{protocol, websocket};

/// Carries the WebSocket in `session` over the tunnel: `Some` with what `request_filter`
/// returns once done; `None` when no tunnel stream could be had and the host falls back to
/// its origin directly (Pingora's own upgrade, `ctx.direct`).
pub(super) async fn carry(edge: &Edge, session: &mut Session, ctx: &mut EdgeCtx, host: &str) -> Result<Option<bool>> {
    let Some(route) = edge.config.route(host) else { return Ok(None) };
    let Some(key) = session.req_header().headers.get(http::header::SEC_WEBSOCKET_KEY).map(|k| k.as_bytes().to_vec())
    else {
        return http_util::refuse(session, 400, "framing", "a WebSocket handshake needs Sec-WebSocket-Key")
            .await
            .map(Some);
    };
    let request = connect_request(session, host)?;
    // Boxed, as the handshake below: an idle socket's task holds only `join`'s state, not the
    // largest state of dialling a connection (TLS, HTTP/2 handshake), ~5 KB per socket.
    let opened = match Box::pin(open(edge, route, host, &request)).await {
        Ok(o) => o,
        Err(_) if matches!(route.fallback, Fallback::Direct(_)) => return Ok(None),
        Err(why) => return Err(Error::explain(ErrorType::HTTPStatus(502), why)),
    };
    let Some((mut up, mut down, _held)) = Box::pin(answer(edge, session, opened, &key)).await? else {
        return Ok(Some(true));
    };
    join(session, ctx, &mut up, &mut down, edge.config.websocket.idle_timeout).await;
    Ok(Some(true))
}

/// A stream for the socket on a tunnel connection: the tunnel's dial-out origins, or a
/// listener of the host's; `Err` says why none took it, without the tunnel's addresses.
async fn open(
    edge: &Edge,
    route: &OriginRoute,
    host: &str,
    request: &http::Request<()>,
) -> std::result::Result<Opened, String> {
    match &route.tunnel {
        Some(tunnel) => {
            let (Some(registry), Some(c)) = (&edge.connectors, &edge.config.connectors) else {
                return Err(format!("no connector listener for tunnel {tunnel}"));
            };
            let Some(t) = registry.tunnel(tunnel) else { return Err(format!("no tunnel {tunnel}")) };
            t.sockets.open_within(c.wait, request).await.map_err(|e| {
                log::debug!("websocket to {host}: tunnel {tunnel}: {e}");
                format!("no origin of tunnel {tunnel} is connected for WebSockets (waited {:?})", c.wait)
            })
        }
        None => match edge.listeners.pick(host, &[], false) {
            Some(lane) => {
                let (addr, name) = (lane.listener.addr, lane.listener.server_name.clone());
                drop(lane);
                edge.sockets.open(addr, &name, request).await.map_err(|e| {
                    log::warn!("websocket to {host}: origin listener {addr}: {e}");
                    format!("no origin listener for {host} took the WebSocket")
                })
            }
            None => Err(format!("no origin listener for {host} is up")),
        },
    }
}

/// The extended CONNECT for the client's handshake: its fields but one hop's and the tunnel's,
/// and the client's address in `X-Forwarded-For`, as any request gets.
fn connect_request(session: &Session, host: &str) -> Result<http::Request<()>> {
    let mut req = session.req_header().clone();
    protocol::strip_request(&mut req);
    let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri = http::Uri::builder()
        .scheme("https")
        .authority(host)
        .path_and_query(path)
        .build()
        .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "the WebSocket's target", e))?;
    let mut builder = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(uri)
        .version(http::Version::HTTP_2)
        .extension(h2::ext::Protocol::from_static("websocket"));
    let client = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
    let forwarded = http_util::forwarded_for(req.headers.get("x-forwarded-for"), client);
    for (name, value) in req.headers.iter().filter(|(n, _)| !websocket::hop_only(n) && n.as_str() != "x-forwarded-for")
    {
        builder = builder.header(name, value);
    }
    if let Some(f) = forwarded {
        builder = builder.header("x-forwarded-for", f);
    }
    builder.body(()).map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "the WebSocket's request", e))
}

/// The origin's answer to the client: the 101 and the socket's two directions (with its place
/// on the connection, held until the socket ends), or `None` once a refusal was passed on.
async fn answer(
    edge: &Edge,
    session: &mut Session,
    opened: Opened,
    key: &[u8],
) -> Result<Option<(h2::SendStream<Bytes>, h2::RecvStream, Held)>> {
    let Opened { response, body: up, held } = opened;
    let limit = edge.config.tunnel.response_timeout;
    // A client that leaves while the backend thinks costs nothing past this: its stream is
    // reset (dropped), and the origin drops the backend's connection.
    let answer = tokio::select! {
        r = tokio::time::timeout(limit, response) => r,
        _ = session.as_downstream_mut().read_body_or_idle(true) => return Err(http_util::cancelled_error(MODE)),
    };
    let answer = match answer {
        Err(_) => {
            return Err(Error::explain(ErrorType::HTTPStatus(504), "no WebSocket answer from the origin in time"));
        }
        Ok(Err(e)) => return Err(Error::because(ErrorType::HTTPStatus(502), "the origin's WebSocket stream", e)),
        Ok(Ok(a)) => a,
    };
    let (head, mut down) = answer.into_parts();
    if head.status != http::StatusCode::OK || protocol::websocket_refused(&head.headers) {
        // The backend's answer instead of a socket (or the origin's own 4xx/5xx).
        let mut resp = ResponseHeader::build(head.status, None)?;
        websocket::copy_answer_fields(&head.headers, &mut resp)?;
        let body = refusal_body(&mut down, limit).await;
        resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(body), true).await?;
        return Ok(None);
    }
    // Sized for the handshake's few fields: the session keeps it as long as the socket lasts.
    let mut resp = ResponseHeader::build(101, Some(3 + head.headers.len()))?;
    resp.insert_header(http::header::UPGRADE, "websocket")?;
    resp.insert_header(http::header::CONNECTION, "Upgrade")?;
    resp.insert_header(http::header::SEC_WEBSOCKET_ACCEPT, websocket::accept_key(key))?;
    websocket::copy_answer_fields(&head.headers, &mut resp)?;
    session.write_response_header(Box::new(resp), false).await?;
    Ok(Some((up, down, held)))
}

async fn refusal_body(down: &mut h2::RecvStream, limit: Duration) -> Bytes {
    let mut body = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        while let Some(Ok(d)) = down.data().await {
            let _ = down.flow_control().release_capacity(d.len());
            body.extend_from_slice(&d);
            if body.len() >= websocket::MAX_REFUSAL_BODY {
                break;
            }
        }
    })
    .await;
    body.truncate(websocket::MAX_REFUSAL_BODY);
    Bytes::from(body)
}

enum Side {
    Client(Result<Option<Bytes>>),
    Origin(Option<std::result::Result<Bytes, h2::Error>>),
}

/// Both directions until each has ended, or either fails, or nothing moved for `idle`.
async fn join(
    session: &mut Session,
    ctx: &mut EdgeCtx,
    up: &mut h2::SendStream<Bytes>,
    down: &mut h2::RecvStream,
    idle: Duration,
) {
    let (mut from_client, mut from_origin) = (true, true);
    while from_client || from_origin {
        let step = tokio::time::timeout(idle, async {
            tokio::select! {
                r = session.as_downstream_mut().read_request_body(), if from_client => Side::Client(r),
                r = down.data(), if from_origin => Side::Origin(r),
            }
        });
        let moved = match step.await {
            Err(_) => {
                log::debug!("websocket idle for {idle:?}: closed");
                return;
            }
            Ok(Side::Client(Ok(Some(data)))) => {
                if let Some(wait) = ctx.pace.as_mut().and_then(|(p, _)| p.take(data.len(), Instant::now())) {
                    tokio::time::sleep(wait).await;
                }
                send_all(up, data).await
            }
            Ok(Side::Client(Ok(None))) => {
                // The client's half ended: the origin hears so, and its answers still come.
                from_client = false;
                up.send_data(Bytes::new(), true).is_ok()
            }
            Ok(Side::Client(Err(_))) => return,
            Ok(Side::Origin(Some(Ok(data)))) => {
                let _ = down.flow_control().release_capacity(data.len());
                if let Some(wait) = ctx.pace.as_mut().and_then(|(_, p)| p.take(data.len(), Instant::now())) {
                    tokio::time::sleep(wait).await;
                }
                session.as_downstream_mut().write_response_body(data, false).await.is_ok()
            }
            Ok(Side::Origin(None)) => {
                from_origin = false;
                session.as_downstream_mut().write_response_body(Bytes::new(), true).await.is_ok()
            }
            Ok(Side::Origin(Some(Err(_)))) => return,
        };
        if !moved {
            return;
        }
    }
}

/// Sends `data` as the stream's flow control lets it.
async fn send_all(up: &mut h2::SendStream<Bytes>, mut data: Bytes) -> bool {
    while !data.is_empty() {
        up.reserve_capacity(data.len());
        let granted = match std::future::poll_fn(|cx| up.poll_capacity(cx)).await {
            Some(Ok(n)) => n,
            _ => return false,
        };
        let chunk = data.split_to(granted.min(data.len()));
        if up.send_data(chunk, false).is_err() {
            return false;
        }
    }
    true
}

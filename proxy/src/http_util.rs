//! Small request/response helpers both modes use.

use http::HeaderValue;
use pingora_http::{RequestHeader, ResponseHeader};

/// The request's host, lower case, port removed: `:authority` for HTTP/2, else `Host`.
pub fn request_host(req: &RequestHeader) -> Option<String> {
    let raw = match req.uri.authority() {
        Some(a) => a.as_str().to_string(),
        None => req.headers.get(http::header::HOST)?.to_str().ok()?.to_string(),
    };
    let host = strip_port(raw.trim());
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

fn strip_port(authority: &str) -> &str {
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(rest) = authority.strip_prefix('[') {
        // [v6]:port
        return rest.split_once(']').map_or(authority, |(h, _)| h);
    }
    match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// Why an HTTP/1.x request's framing is refused (RFC 9112 §6, as nginx does): anything that two
/// parsers could read as different message boundaries. Pingora refuses the rest (invalid
/// Content-Length values, non-chunked final codings, obs-fold, bad chunk sizes).
pub fn framing_problem(req: &RequestHeader) -> Option<&'static str> {
    let h = &req.headers;
    let cl = h.get_all(http::header::CONTENT_LENGTH).iter().count();
    let te: Vec<&HeaderValue> = h.get_all(http::header::TRANSFER_ENCODING).iter().collect();
    if h.get_all(http::header::HOST).iter().count() > 1 {
        return Some("more than one Host header");
    }
    if cl > 1 {
        return Some("more than one Content-Length");
    }
    if cl == 1
        && header_str(h.get(http::header::CONTENT_LENGTH))
            .is_none_or(|v| !v.bytes().all(|b| b.is_ascii_digit()) || v.is_empty())
    {
        return Some("Content-Length is not a number");
    }
    if te.is_empty() {
        return None;
    }
    if cl > 0 {
        return Some("Content-Length together with Transfer-Encoding");
    }
    if req.version < http::Version::HTTP_11 {
        return Some("Transfer-Encoding in an HTTP/1.0 request");
    }
    if te.len() > 1 || !te[0].as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") {
        return Some("Transfer-Encoding other than a single chunked");
    }
    None
}

/// The framing problem of an HTTP/1.x request as it arrived: Pingora drops Content-Length when
/// Transfer-Encoding is present (RFC 9112 §6.3 allows a recipient that), but a request carrying
/// both is refused, as nginx does, since another hop may have read the other one.
pub fn session_framing_problem(session: &pingora_proxy::Session) -> Option<&'static str> {
    let req = session.req_header();
    if req.headers.contains_key(http::header::TRANSFER_ENCODING)
        && let Some(h1) = session.as_downstream().as_http1()
        && raw_has_header(&h1.get_headers_raw_bytes(), b"content-length")
    {
        return Some("Content-Length together with Transfer-Encoding");
    }
    framing_problem(req)
}

/// True if a raw request head has a header line named `name` (lower case).
fn raw_has_header(head: &[u8], name: &[u8]) -> bool {
    head.split(|&b| b == b'\n').skip(1).any(|line| {
        line.len() > name.len() && line[..name.len()].eq_ignore_ascii_case(name) && line[name.len()] == b':'
    })
}

/// Why a request is refused before routing: methods and targets that would make a reverse proxy
/// an open one, or let two components disagree on the host.
///
/// An HTTP/1.x target in absolute-form names the host and its Host header is replaced by it
/// ([`absolute_form_to_origin_form`]); over HTTP/2 `:authority` and a Host that disagree are
/// refused, since hops may read either.
pub fn target_problem(req: &RequestHeader) -> Option<(u16, &'static str)> {
    if req.method == http::Method::CONNECT {
        return Some((405, "CONNECT is not served: this is a reverse proxy"));
    }
    if let Some(problem) = target_form_problem(req.raw_path()) {
        return Some((400, problem));
    }
    let authority = req.uri.authority()?;
    if authority.as_str().contains('@') {
        return Some((400, "user information in the request target"));
    }
    if req.version < http::Version::HTTP_2 {
        return None;
    }
    if let Some(host) = header_str(req.headers.get(http::header::HOST)) {
        let (a, b) = (strip_port(authority.as_str()), strip_port(host.trim()));
        if !a.eq_ignore_ascii_case(b) {
            return Some((400, "Host does not match the request target"));
        }
    } else if req.headers.contains_key(http::header::HOST) {
        return Some((400, "Host is not valid text"));
    }
    None
}

/// Why a request target is refused as nginx refuses it: a reverse proxy takes a path
/// (origin-form) or an `http`/`https` URL (absolute-form, RFC 9112 §3.2.2), nothing else. The
/// asterisk-form asks the server itself, not a resource (and only OPTIONS may use it); the
/// authority-form is CONNECT's; other schemes are not HTTP's to serve. Control characters have
/// no place in a URI (RFC 3986) and a backend may cut a path at a NUL, raw or encoded; a path
/// whose dot segments climb above the root (`/../`, `%2e%2e` included) asks a backend that
/// joins paths to files for something outside its tree.
pub fn target_form_problem(target: &[u8]) -> Option<&'static str> {
    if target == b"*" {
        return Some("the asterisk-form (*) asks the server itself: not served by a reverse proxy");
    }
    if target.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Some("a control character in the request target");
    }
    let path = if target.starts_with(b"/") {
        target
    } else {
        let Some(at) = target.windows(3).position(|w| w == b"://") else {
            return Some("a request target that is neither a path nor an http(s) URL");
        };
        let scheme = &target[..at];
        if !scheme.eq_ignore_ascii_case(b"http") && !scheme.eq_ignore_ascii_case(b"https") {
            return Some("a request target whose scheme is not http or https");
        }
        let rest = &target[at + 3..];
        rest.iter().position(|&b| b == b'/').map_or(&b"/"[..], |i| &rest[i..])
    };
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    if path.windows(3).any(|w| w == b"%00") {
        return Some("an encoded NUL in the request path");
    }
    let mut depth = 0usize;
    for segment in path.split(|&b| b == b'/').skip(1) {
        match percent_decoded_dots(segment) {
            Some(1) => {}
            Some(2) if depth == 0 => return Some("a request path above the root (..)"),
            Some(2) => depth -= 1,
            _ => depth += 1,
        }
    }
    None
}

/// For a path segment made only of dots, raw or encoded (`%2e`), how many; else None.
fn percent_decoded_dots(segment: &[u8]) -> Option<usize> {
    let (mut dots, mut i) = (0, 0);
    while i < segment.len() {
        if segment[i] == b'.' {
            i += 1;
        } else if segment.get(i..i + 3).is_some_and(|e| e.eq_ignore_ascii_case(b"%2e")) {
            i += 3;
        } else {
            return None;
        }
        dots += 1;
    }
    (dots > 0).then_some(dots)
}

/// RFC 9112 §3.2.2: an HTTP/1.x request in absolute-form is for the target's host; the Host
/// header is set from it and the request goes on in origin-form, as every hop after this one
/// expects. Call after [`target_problem`].
pub fn absolute_form_to_origin_form(req: &mut RequestHeader) -> pingora_error::Result<()> {
    if req.version >= http::Version::HTTP_2 {
        return Ok(());
    }
    // Pingora keeps an HTTP/1.x target's path in `uri` and the target as sent in `raw_path`
    // (it has already refused user information, and a Host that differs from the authority).
    let Ok(target) = http::Uri::try_from(req.raw_path()) else { return Ok(()) };
    let Some(authority) = target.authority().map(|a| a.as_str().to_string()) else { return Ok(()) };
    let path = target.path_and_query().map_or("/", |p| p.as_str()).to_string();
    req.insert_header(http::header::HOST, authority)?;
    let uri = path
        .parse()
        .map_err(|_| pingora_error::Error::explain(pingora_error::ErrorType::InvalidHTTPHeader, "bad path"))?;
    req.set_uri(uri);
    Ok(())
}

/// Answers a request railproxy refuses itself (plain text saying why) and closes the connection:
/// after a framing error nothing more on it can be trusted. Counted in
/// `railproxy_refusals_total{reason}`.
pub async fn refuse(
    session: &mut pingora_proxy::Session,
    status: u16,
    reason: &'static str,
    message: &str,
) -> pingora_error::Result<bool> {
    refuse_with(session, status, reason, message, "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS").await
}

/// [`refuse`], with the `Allow` value a 405 carries.
pub async fn refuse_with(
    session: &mut pingora_proxy::Session,
    status: u16,
    reason: &'static str,
    message: &str,
    allow: &str,
) -> pingora_error::Result<bool> {
    crate::metrics::REFUSALS.with_label_values(&[reason]).inc();
    let reason = http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error");
    let body = bytes::Bytes::from(format!("{status} {reason}: {message}\n"));
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header("content-type", "text/plain; charset=utf-8")?;
    resp.insert_header("content-length", body.len().to_string())?;
    if status == 405 {
        resp.insert_header("allow", allow)?;
    }
    session.set_keepalive(None);
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(true)
}

/// Makes a body's last piece `None` when it carries no bytes. Pingora writes an empty piece to
/// an HTTP/1.1 upstream as a zero-size chunk, which is the last chunk, and then writes the last
/// chunk again at the end: the backend would read the second as the start of another request,
/// and its answer to that as the answer to whichever request comes next on the connection. An
/// empty last piece arrives with every body that ends on an empty DATA frame (h2 clients, and
/// the tunnel when a chunked body's end comes alone).
pub fn no_empty_last_piece(body: &mut Option<bytes::Bytes>, end_of_stream: bool) {
    if end_of_stream && body.as_ref().is_some_and(bytes::Bytes::is_empty) {
        *body = None;
    }
}

/// Whether a request head announces a body: a Content-Length above 0, or a Transfer-Encoding.
/// (An HTTP/2 request may also send DATA it did not announce.)
pub fn declares_body(req: &RequestHeader) -> bool {
    req.headers.contains_key(http::header::TRANSFER_ENCODING)
        || header_str(req.headers.get(http::header::CONTENT_LENGTH))
            .is_some_and(|v| v.trim().parse::<u64>().map_or(true, |n| n > 0))
}

/// Whether the client has already cancelled this request: an HTTP/2 stream it reset (or that
/// closed with its connection). h2 hands a server streams that were reset before it took them
/// up, so a rapid-reset client's streams reach the proxy already cancelled; such a request must
/// cost no upstream anything. Checked without waiting. HTTP/1.x has no such signal before the
/// response (Pingora notices a closed connection while it waits for one).
pub fn client_cancelled(session: &mut pingora_proxy::Session) -> bool {
    use std::future::Future as _;
    let Some(mut closed) = session.as_downstream_mut().watch_h2_stream_close() else { return false };
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    std::pin::Pin::new(&mut closed).poll(&mut cx).is_ready()
}

/// The error a cancelled request ends with: the client's doing, so nothing is answered, no
/// upstream is blamed, and it is not logged as a failure (see [`is_cancellation`]).
pub fn cancelled_error(mode: &str) -> Box<pingora_error::Error> {
    crate::metrics::CANCELLED.with_label_values(&[mode]).inc();
    pingora_error::Error::explain(pingora_error::ErrorType::ConnectionClosed, CANCELLED_BY_CLIENT).into_down()
}

const CANCELLED_BY_CLIENT: &str = "the client cancelled the request";

/// Whether `e` says the client went away (its stream reset or its connection closed): a
/// downstream error that is no one's failure but the client's, logged at debug level only, so
/// that a client resetting streams by the thousand cannot fill the error log.
pub fn is_cancellation(e: &pingora_error::Error) -> bool {
    use pingora_error::ErrorType::{ConnectionClosed, H2Error, ReadError, WriteError};
    *e.esource() == pingora_error::ErrorSource::Downstream
        && matches!(e.etype(), ConnectionClosed | H2Error | ReadError | WriteError)
}

/// Pingora's own retry policy after an upstream error: only idempotent requests whose body it
/// still holds, and only when a kept-alive connection failed (a fresh one may then serve).
pub fn pingora_retry_policy(session: &pingora_proxy::Session, e: &mut pingora_error::Error, client_reused: bool) {
    if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated() {
        e.set_retry(false);
    } else {
        e.retry.decide_reuse(client_reused);
    }
}

/// Names of header fields holding `_` (see `limits.underscores_in_headers`).
/// A `text/event-stream` response (server-sent events): a stream of messages, each for now.
pub fn is_event_stream(resp: &ResponseHeader) -> bool {
    header_str(resp.headers.get(http::header::CONTENT_TYPE))
        .and_then(|t| t.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// An HTTP/1.1 `GET` asking to switch to WebSocket (RFC 6455 §4.1): the one upgrade railproxy
/// carries (as a tunnel stream, see `tunnel::websocket`). Other upgrades (h2c, …) are
/// answered as plain requests, as Pingora strips their `Upgrade`.
pub fn is_websocket_upgrade(req: &RequestHeader) -> bool {
    req.version == http::Version::HTTP_11
        && req.method == http::Method::GET
        // Pingora forwards `Upgrade` exactly when it is this one token.
        && req.headers.get(http::header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// The elements of a comma-separated list header (RFC 9110 §5.6.1), across all its fields,
/// trimmed; empty elements are skipped, fields that are not text ignored.
pub fn list_items(headers: &http::HeaderMap, name: http::header::HeaderName) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Adds each of `names` to the response's `Vary` unless it is there already (in any case) or
/// the response varies on everything (`*`).
pub fn vary_on(resp: &mut ResponseHeader, names: &[&str]) -> pingora_error::Result<()> {
    let named: Vec<String> = list_items(&resp.headers, http::header::VARY).map(str::to_ascii_lowercase).collect();
    if named.iter().any(|v| v == "*") {
        return Ok(());
    }
    for name in names {
        if !named.iter().any(|v| v.eq_ignore_ascii_case(name)) {
            resp.append_header(http::header::VARY, *name)?;
        }
    }
    Ok(())
}

/// Removes an upgrade offer from a request: its `Upgrade` header and the `upgrade` token of its
/// `Connection` (a Connection left empty goes too).
pub fn drop_upgrade(req: &mut RequestHeader) {
    req.remove_header(&http::header::UPGRADE);
    let tokens: Vec<String> = list_items(&req.headers, http::header::CONNECTION)
        .filter(|t| !t.eq_ignore_ascii_case("upgrade"))
        .map(str::to_string)
        .collect();
    req.remove_header(&http::header::CONNECTION);
    if !tokens.is_empty() {
        // Tokens are header names and keywords: valid header text.
        let _ = req.insert_header(http::header::CONNECTION, tokens.join(", "));
    }
}

pub fn underscored_names(req: &RequestHeader) -> Vec<http::HeaderName> {
    // `keys` yields a name once, however many fields carry it.
    req.headers.keys().filter(|n| n.as_str().contains('_')).cloned().collect()
}

/// A header as text, if present and valid.
pub fn header_str(value: Option<&HeaderValue>) -> Option<&str> {
    value.and_then(|v| v.to_str().ok())
}

/// `X-Forwarded-For` with the client's address appended to what it already said, as nginx's
/// `$proxy_add_x_forwarded_for` does; `None` when there is neither.
pub fn forwarded_for(prev: Option<&HeaderValue>, client: Option<std::net::IpAddr>) -> Option<String> {
    let prev = header_str(prev);
    match (prev, client) {
        (Some(prev), Some(ip)) => Some(format!("{prev}, {ip}")),
        (None, Some(ip)) => Some(ip.to_string()),
        (prev, None) => prev.map(str::to_string),
    }
}

/// `Content-Length` if present and a plain number.
pub fn content_length(resp: &ResponseHeader) -> Option<u64> {
    header_str(resp.headers.get(http::header::CONTENT_LENGTH)).and_then(|v| v.trim().parse().ok())
}

/// True if an `Accept-Encoding` value lists `token` with a non-zero weight.
pub fn accepts(accept_encoding: Option<&str>, token: &str) -> bool {
    accept_encoding.is_some_and(|v| {
        v.split(',').any(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let zero = parts
                .any(|p| p.trim().strip_prefix("q=").is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q == 0.0)));
            name.eq_ignore_ascii_case(token) && !zero
        })
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_client_is_appended_to_x_forwarded_for() {
        use super::forwarded_for;
        let ip = Some(std::net::IpAddr::from([192, 0, 2, 7]));
        let prev = http::HeaderValue::from_static("198.51.100.1");
        assert_eq!(forwarded_for(Some(&prev), ip).as_deref(), Some("198.51.100.1, 192.0.2.7"));
        assert_eq!(forwarded_for(None, ip).as_deref(), Some("192.0.2.7"));
        assert_eq!(forwarded_for(Some(&prev), None).as_deref(), Some("198.51.100.1"));
        assert_eq!(forwarded_for(None, None), None);
    }

    #[test]
    fn raw_header_lines_are_matched_by_name_only() {
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nX-Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(!super::raw_has_header(head, b"content-length"));
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nCONTENT-LENGTH: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(super::raw_has_header(head, b"content-length"));
        // The request line is not a header, whatever its target.
        assert!(!super::raw_has_header(b"content-length: 1 HTTP/1.1\r\n\r\n", b"content-length"));
    }

    use super::*;

    fn req(host: Option<&str>, uri: &str) -> RequestHeader {
        let mut r = RequestHeader::build("GET", uri.as_bytes(), None).unwrap();
        if let Some(h) = host {
            r.insert_header("host", h).unwrap();
        }
        r
    }

    #[test]
    fn host_from_header_or_authority() {
        assert_eq!(request_host(&req(Some("Example.COM:8080"), "/")), Some("example.com".into()));
        assert_eq!(request_host(&req(Some("127.0.0.1"), "/")), Some("127.0.0.1".into()));
        assert_eq!(request_host(&req(Some("[::1]:80"), "/")), Some("::1".into()));
        let mut h2 = req(None, "/x");
        h2.set_uri("https://a.example/x".parse().unwrap());
        assert_eq!(request_host(&h2), Some("a.example".into()));
        assert_eq!(request_host(&req(None, "/")), None);
        assert_eq!(request_host(&req(Some(""), "/")), None);
    }

    #[test]
    fn an_upgrade_offer_is_dropped_with_its_connection_token() {
        let mut r = req(Some("a"), "/");
        r.insert_header("upgrade", "h2c").unwrap();
        r.insert_header("connection", "Upgrade, HTTP2-Settings").unwrap();
        drop_upgrade(&mut r);
        assert!(r.headers.get("upgrade").is_none());
        assert_eq!(r.headers.get("connection").unwrap(), "HTTP2-Settings");
        let mut r = req(Some("a"), "/");
        r.insert_header("upgrade", "foo").unwrap();
        r.insert_header("connection", "upgrade").unwrap();
        drop_upgrade(&mut r);
        assert!(r.headers.get("connection").is_none() && r.headers.get("upgrade").is_none());
    }

    #[test]
    fn targets_as_nginx_takes_them() {
        for ok in [
            &b"/"[..],
            b"/a/b?x=1",
            b"/a/../b",
            b"/a/./b/..",
            b"/.well-known/x",
            b"/a/...",
            b"/a%2fb",
            b"http://h/x",
            b"HTTPS://h",
            b"/caf\xc3\xa9",
            b"/a?q=../../..",
        ] {
            assert_eq!(target_form_problem(ok), None, "{}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b"*"[..],
            b"host:80",
            b"relative/path",
            b"ftp://h/x",
            b"/a\0b",
            b"/a\x01b",
            b"/a\x7fb",
            b"/a%00b",
            b"/..",
            b"/../x",
            b"/a/../../x",
            b"/%2e%2e/x",
            b"/a/%2E./%2e%2E/x",
            b"http://h/../x",
        ] {
            assert!(target_form_problem(bad).is_some(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn accept_encoding_tokens() {
        assert!(accepts(Some("dcz, zstd"), "zstd"));
        assert!(accepts(Some("gzip, DCZ;q=0.5"), "dcz"));
        assert!(!accepts(Some("gzip, zstd;q=0"), "zstd"));
        assert!(!accepts(Some("gzip"), "zstd"));
        assert!(!accepts(None, "zstd"));
    }
}

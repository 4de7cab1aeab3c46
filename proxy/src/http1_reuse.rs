//! When a kept-alive HTTP/1.1 connection to an upstream (a backend, or the origin behind the
//! edge's `direct` fallback) may carry the next request. HTTP/1.1 pairs answers with requests by
//! order alone, so a connection on which the upstream sent, or will send, anything no request
//! asked for would hand that to the next request on it: another client's (DESIGN.md, "one
//! request, one request"). Two ways that happens, and what railproxy does about each:
//!
//! * **A body the upstream did not read.** Many backends answer a GET without reading its body
//!   (Python's `http.server` and its family), then take the body for the next request and answer
//!   it too. Content on GET, HEAD, DELETE, OPTIONS and TRACE has no defined meaning (RFC 9110
//!   §9.3), so any backend may do that. Such a request is still forwarded with its body (some
//!   APIs search with a GET body, and RFC 9110 lets a server ignore it), but with
//!   `Connection: close`: its connection serves it alone, whatever the backend does with the
//!   body. Other methods' bodies are for the backend to read; one that answers a POST before
//!   reading it has Pingora's own rule (a connection is reused only after the request was
//!   sent whole and the answer read whole, with no byte beyond it).
//! * **Bytes waiting on an idle connection.** Pingora drops a pooled connection that becomes
//!   readable while idle, but a request may take it up in between. Before a request is written on
//!   a reused connection, the socket is asked whether anything waits on it; if so the connection
//!   is dropped and the request goes on a fresh one (nothing of it was sent, so any request may).

use pingora_error::{Error, ErrorType, Result};
use pingora_http::RequestHeader;

use crate::metrics;

/// Methods whose content has no generally defined meaning (RFC 9110 §9.3.1, 9.3.2, 9.3.5,
/// 9.3.7, 9.3.8): a backend may answer them without reading a body.
pub fn body_may_go_unread(method: &http::Method) -> bool {
    use http::Method;
    [Method::GET, Method::HEAD, Method::DELETE, Method::OPTIONS, Method::TRACE].contains(method)
}

/// Marks `upstream_request`, about to go to an HTTP/1.1 upstream, `Connection: close` when it
/// carries a body the upstream may leave unread (see the module's doc). Call from
/// `upstream_request_filter`, where Pingora has set the upstream request's version (2 for an h2
/// upstream, which frames every message and needs none of this).
pub fn close_after_unread_body(
    session: &mut pingora_proxy::Session,
    upstream_request: &mut RequestHeader,
    mode: &'static str,
) -> Result<()> {
    if upstream_request.version != http::Version::HTTP_11
        || !body_may_go_unread(&upstream_request.method)
        || session.as_mut().is_body_empty()
    {
        return Ok(());
    }
    upstream_request.insert_header(http::header::CONNECTION, "close")?;
    metrics::UPSTREAM_DISCARDED.with_label_values(&[mode, "unread_body"]).inc();
    Ok(())
}

/// The context of the error [`stray_bytes`] returns.
const STRAY: &str = "a kept-alive upstream connection held bytes no request asked for";

/// For a reused HTTP/1 connection (`fd`) with bytes waiting before a request was written on it,
/// the error that drops it; the request is to be sent again ([`is_stray`]). Call from
/// `connected_to_upstream`. Only for HTTP/1: a pooled HTTP/2 connection is read by a task of its
/// own, and bytes on it are other streams'.
pub fn stray_bytes(reused: bool, http1: bool, fd: std::os::unix::io::RawFd, mode: &'static str) -> Option<Box<Error>> {
    if !reused || !http1 {
        return None;
    }
    let waiting = crate::sockets::bytes_waiting(fd).filter(|&n| n > 0)?;
    metrics::UPSTREAM_DISCARDED.with_label_values(&[mode, "stray_bytes"]).inc();
    let mut e = Error::explain(ErrorType::Custom(STRAY), format!("{STRAY} ({waiting} bytes): closed"));
    e.set_retry(true);
    Some(e)
}

/// Whether `e` is [`stray_bytes`]'s: nothing of the request was sent, so it may go again on
/// another connection whatever its method.
pub fn is_stray(e: &Error) -> bool {
    matches!(e.etype(), ErrorType::Custom(s) if *s == STRAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_of_methods_without_body_semantics_may_go_unread() {
        for m in ["GET", "HEAD", "DELETE", "OPTIONS", "TRACE"] {
            assert!(body_may_go_unread(&m.parse().unwrap()), "{m}");
        }
        for m in ["POST", "PUT", "PATCH"] {
            assert!(!body_may_go_unread(&m.parse().unwrap()), "{m}");
        }
    }

    #[test]
    fn bytes_on_a_reused_http1_connection_drop_it() {
        use std::io::Write as _;
        use std::os::unix::io::AsRawFd as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut backend = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (proxy_side, _) = listener.accept().unwrap();
        let fd = proxy_side.as_raw_fd();
        assert!(stray_bytes(true, true, fd, "origin").is_none(), "a quiet connection is fine");
        backend.write_all(b"HTTP/1.1 200 OK\r\n").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while crate::sockets::bytes_waiting(fd) == Some(0) {
            assert!(std::time::Instant::now() < deadline, "the bytes never arrived");
            std::thread::yield_now();
        }
        let e = stray_bytes(true, true, fd, "origin").expect("bytes waiting drop the connection");
        assert!(is_stray(&e) && e.retry(), "{e}");
        assert!(stray_bytes(false, true, fd, "origin").is_none(), "a new connection is not checked");
        assert!(stray_bytes(true, false, fd, "origin").is_none(), "HTTP/2 is not checked");
    }
}

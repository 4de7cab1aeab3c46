//! What both ProxyHttp implementations share: error classification and the access log line.

use std::time::Duration;

use pingora_error::{Error, ErrorType};
use pingora_proxy::Session;

/// A short label for an error, for `railproxy_upstream_errors_total{kind}`.
pub fn error_kind(e: &Error) -> &'static str {
    match e.etype() {
        ErrorType::ConnectTimedout => "connect_timeout",
        ErrorType::ConnectRefused => "connect_refused",
        ErrorType::ConnectNoRoute => "no_route",
        ErrorType::TLSHandshakeFailure | ErrorType::TLSHandshakeTimedout | ErrorType::InvalidCert => "tls",
        ErrorType::ConnectError | ErrorType::BindError | ErrorType::SocketError => "connect",
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => "timeout",
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError => "io",
        ErrorType::H2Error | ErrorType::InvalidH2 | ErrorType::H2Downgrade => "h2",
        ErrorType::Custom(_) => "verify",
        _ => "other",
    }
}

/// One line per request: method, host and path, status, tunnel encoding, body bytes before and
/// after the tunnel, whether a base was used, duration, and the error if any.
#[allow(clippy::too_many_arguments)]
pub fn access_log(
    mode: &str,
    session: &Session,
    status: u16,
    encoding: &str,
    raw: u64,
    wire: u64,
    base: bool,
    elapsed: Duration,
    error: Option<&Error>,
) {
    if !log::log_enabled!(target: "access", log::Level::Info) {
        return;
    }
    let req = session.req_header();
    let host = crate::http_util::request_host(req).unwrap_or_default();
    let client = session.client_addr().map(ToString::to_string).unwrap_or_default();
    let err = error.map(|e| format!(" error=\"{e}\"")).unwrap_or_default();
    log::info!(
        target: "access",
        "{mode} {client} \"{} {host}{}\" {status} enc={encoding} raw={raw} wire={wire} base={} {:.2}ms{err}",
        req.method,
        req.uri.path_and_query().map_or("/", |p| p.as_str()),
        if base { "yes" } else { "no" },
        elapsed.as_secs_f64() * 1000.0,
    );
}

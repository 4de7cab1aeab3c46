//! What every request through either mode records, kept in one envelope per request: its
//! duration, the in-flight gauge, body bytes before and after the tunnel, and at the end the
//! request metrics and the access log line.

use std::time::Instant;

use delta::VersionId;
use delta::codec::Encoding;
use pingora_error::{Error, ErrorType};
use pingora_proxy::Session;

use crate::metrics;

pub struct Envelope {
    mode: &'static str,
    start: Instant,
    /// Dropped with the envelope, after the request was recorded.
    _in_flight: metrics::InFlight,
    /// How the body crossed the tunnel.
    pub encoding: Encoding,
    /// Body bytes as the backend sent them, and as they crossed the tunnel.
    pub raw_bytes: u64,
    pub wire_bytes: u64,
}

impl Envelope {
    pub fn open(mode: &'static str) -> Self {
        Envelope {
            mode,
            start: Instant::now(),
            _in_flight: metrics::InFlight::start(mode),
            encoding: Encoding::Identity,
            raw_bytes: 0,
            wire_bytes: 0,
        }
    }

    /// Records the finished request: metrics, and one access log line with method, host and
    /// path, status, tunnel encoding, body bytes before and after the tunnel, the base named
    /// (edge) or used (origin) as the first 12 hex digits of its SHA-256, or `no`, duration, and
    /// the error if any.
    pub fn close(&self, session: &Session, error: Option<&Error>, base: Option<&VersionId>) {
        let client_left = error.is_some_and(crate::http_util::is_cancellation);
        // Nothing was answered: the client went away first (499, as nginx logs it), or the
        // upstream failed.
        let status = match session.response_written() {
            Some(r) => r.status.as_u16(),
            None if client_left => 499,
            None => 0,
        };
        let elapsed = self.start.elapsed();
        let mode = self.mode;
        metrics::request_done(mode, if status == 0 { 502 } else { status }, elapsed.as_secs_f64());
        let enc = self.encoding.as_str();
        metrics::RAW_BYTES.with_label_values(&[mode, enc]).inc_by(self.raw_bytes);
        metrics::WIRE_BYTES.with_label_values(&[mode, enc]).inc_by(self.wire_bytes);
        if let Some(e) = error.filter(|_| !client_left) {
            metrics::UPSTREAM_ERRORS.with_label_values(&[mode, error_kind(e)]).inc();
        }
        if !log::log_enabled!(target: "access", log::Level::Info) {
            return;
        }
        let req = session.req_header();
        let host = crate::http_util::request_host(req).unwrap_or_default();
        let client = session.client_addr().map(ToString::to_string).unwrap_or_default();
        let err = error.map(|e| format!(" error=\"{e}\"")).unwrap_or_default();
        log::info!(
            target: "access",
            "{mode} {client} \"{} {host}{}\" {status} enc={enc} raw={} wire={} base={} {:.2}ms{err}",
            req.method,
            req.uri.path_and_query().map_or("/", |p| p.as_str()),
            self.raw_bytes,
            self.wire_bytes,
            base.map_or_else(|| "no".to_string(), |b| b.to_hex()[..12].to_string()),
            elapsed.as_secs_f64() * 1000.0,
        );
    }
}

/// A short label for an error, for `railproxy_upstream_errors_total{kind}`.
fn error_kind(e: &Error) -> &'static str {
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

//! The tunnel as HTTP/2 connections: the peer the edge dials (Pingora's own h2 connector and
//! pool, mutual TLS 1.3), the origin's h2 server settings, and which errors say that the tunnel
//! failed rather than one request.

use std::net::SocketAddr;

use pingora_core::protocols::http::v2::server::H2Options;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType};

use super::tls::PeerTls;
use crate::config::edge::TunnelClient;

/// The tunnel peer for a listener, shared by requests and probes.
pub fn tunnel_peer(t: &TunnelClient, tls: &PeerTls, addr: SocketAddr, server_name: &str) -> HttpPeer {
    let mut peer = HttpPeer::new(addr, true, server_name.to_string());
    peer.options.set_http_version(2, 2);
    peer.options.max_h2_streams = t.max_streams;
    peer.options.h2_ping_interval = Some(t.ping_interval);
    peer.options.idle_timeout = Some(t.idle_timeout);
    peer.options.connection_timeout = Some(t.connect_timeout);
    peer.options.read_timeout = Some(t.response_timeout);
    peer.options.ca = Some(tls.ca.clone());
    peer.client_cert_key = tls.client.clone();
    // Only TLS 1.3 is accepted from the origin: checked in `Edge::connected_to_upstream`.
    peer
}

/// The origin's HTTP/2 server settings for tunnel connections.
pub fn server_options(max_streams: u32) -> H2Options {
    let mut h2 = H2Options::new();
    h2.max_concurrent_streams(max_streams);
    h2
}

/// GOAWAY(NO_ERROR) or REFUSED_STREAM from the origin: it is closing the connection in order and
/// did not process the request (RFC 9113 §8.7).
pub fn graceful_shutdown(e: &Error) -> bool {
    e.root_cause().downcast_ref::<h2::Error>().is_some_and(|h2e| {
        h2e.is_remote()
            && ((h2e.is_go_away() && h2e.reason() == Some(h2::Reason::NO_ERROR))
                || (h2e.is_reset() && h2e.reason() == Some(h2::Reason::REFUSED_STREAM)))
    })
}

/// Errors that say the tunnel (not the request) failed: connecting, TLS, the connection closing
/// or resetting, HTTP/2 connection errors and GOAWAY. What a client did (a broken request body,
/// a reset of its own stream) never marks a listener down: clients cannot take listeners out.
pub fn tunnel_failure(e: &Error) -> bool {
    if *e.esource() == ErrorSource::Downstream {
        return false;
    }
    if let Some(h2e) = e.root_cause().downcast_ref::<h2::Error>() {
        // A stream reset or a request h2 refused to send concerns one request only.
        return h2e.is_io() || h2e.is_go_away();
    }
    matches!(
        e.etype(),
        ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectError
            | ErrorType::TLSHandshakeFailure
            | ErrorType::TLSHandshakeTimedout
            | ErrorType::ConnectionClosed
            | ErrorType::ReadError
            | ErrorType::WriteError
            | ErrorType::H2Error
            | ErrorType::InvalidH2
    )
}

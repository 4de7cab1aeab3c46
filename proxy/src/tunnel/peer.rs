//! The tunnel as HTTP/2 connections: the peer the edge dials (Pingora's own h2 connector and
//! pool, mutual TLS 1.3), the origin's h2 server settings, and which errors say that the tunnel
//! failed rather than one request.

use std::net::SocketAddr;

use pingora_core::protocols::http::v2::server::H2Options;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType};

use super::tls::PeerTls;
use crate::config::edge::TunnelClient;
use crate::config::origin::TunnelListener;

/// The tunnel peer for one lane of a listener, shared by requests and probes. Each lane is its
/// own Pingora pool (`group_key`), so that a listener is reached over as many connections.
pub fn tunnel_peer(t: &TunnelClient, tls: &PeerTls, addr: SocketAddr, server_name: &str, lane: usize) -> HttpPeer {
    let mut peer = HttpPeer::new(addr, true, server_name.to_string());
    peer.group_key = lane as u64;
    peer.options.set_http_version(2, 2);
    peer.options.max_h2_streams = t.max_streams;
    peer.options.h2_ping_interval = Some(t.ping_interval);
    peer.options.idle_timeout = Some(t.idle_timeout);
    // TCP, and TCP with the TLS handshake: three round trips in all are bounded by this.
    peer.options.connection_timeout = Some(t.connect_timeout);
    peer.options.total_connection_timeout = Some(t.connect_timeout);
    peer.options.read_timeout = Some(t.response_timeout);
    peer.options.ca = Some(tls.ca.clone());
    peer.client_cert_key = tls.client.clone();
    // Only TLS 1.3 is accepted from the origin: checked in `Edge::connected_to_upstream`.
    peer
}

/// The origin's HTTP/2 server settings for tunnel connections. Its peers are edges that
/// authenticated with a certificate, not anonymous clients, so the limits are set for throughput
/// on a long link rather than against a hostile peer:
/// * windows (`stream_window`, `connection_window`, 8 MB by default as the edge's): request
///   bodies move one window per round trip; h2's default of 64 KB holds a 2 MB upload to ~30
///   round trips;
/// * the budget for small DATA frames (h2 closes the whole connection with ENHANCE_YOUR_CALM once
///   unread small frames cost more than it): h2 sets it from the connection window, half of it,
///   which the larger window raises from 32 KB to 4 MB of framing overhead. The edge coalesces
///   request bodies anyway, so a client's tiny writes reach the tunnel as few frames;
/// * resets: h2 closes a connection (GOAWAY `ENHANCE_YOUR_CALM`, "too_many_resets") once 20
///   streams were reset before the server took them up, a limit for one client. An edge resets a
///   stream whenever one of its thousands of clients goes away while its request crosses, and a
///   burst of such streams can reach this listener before its accept loop has run; each client
///   is limited at the edge (`limits.h2_max_resets`). So a lane may hold [`RESETS_PER_STREAM`]
///   times `max_streams` such streams, and as many streams reset for errors, before it closes.
pub fn server_options(t: &TunnelListener) -> H2Options {
    let resets = (t.max_streams as usize).saturating_mul(RESETS_PER_STREAM);
    let mut h2 = H2Options::new();
    h2.max_concurrent_streams(t.max_streams)
        .initial_window_size(t.stream_window)
        .initial_connection_window_size(t.connection_window)
        .max_pending_accept_reset_streams(resets)
        .max_local_error_reset_streams(Some(resets))
        // Edges open WebSockets as streams (RFC 8441, see `tunnel::websocket`).
        .enable_connect_protocol();
    h2
}

/// Reset streams a tunnel connection may hold per stream it may have open (see
/// [`server_options`]).
pub const RESETS_PER_STREAM: usize = 4;

/// GOAWAY(NO_ERROR) or REFUSED_STREAM from the origin: it is closing the connection in order and
/// did not process the request (RFC 9113 §8.7).
pub fn graceful_shutdown(e: &Error) -> bool {
    e.root_cause().downcast_ref::<h2::Error>().is_some_and(|h2e| {
        h2e.is_remote()
            && ((h2e.is_go_away() && h2e.reason() == Some(h2::Reason::NO_ERROR))
                || (h2e.is_reset() && h2e.reason() == Some(h2::Reason::REFUSED_STREAM)))
    })
}

/// The error code of a GOAWAY the origin listener sent, when that is what ended this request's
/// stream. A listener that sends GOAWAY is alive: whatever the reason (a graceful shutdown, or
/// `ENHANCE_YOUR_CALM` for resets that clients caused), the lane dials a new connection and is
/// not retired; a request the listener did not process may go again.
pub fn remote_goaway(e: &Error) -> Option<h2::Reason> {
    let h2e = e.root_cause().downcast_ref::<h2::Error>()?;
    (h2e.is_go_away() && h2e.is_remote()).then(|| h2e.reason()).flatten()
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use pingora_core::upstreams::peer::Peer as _;

    use super::*;

    #[test]
    fn each_lane_is_a_pool_of_its_own_and_connecting_is_bounded_whole() {
        let t = TunnelClient {
            ca: "ca.pem".into(),
            cert: "edge.pem".into(),
            key: "edge.key".into(),
            server_name: "origin.example".into(),
            connect_timeout: Duration::from_millis(1500),
            response_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(600),
            ping_interval: Duration::from_secs(30),
            max_streams: 128,
            lanes: 4,
            congestion_control: None,
            balance: crate::config::origin::Balance::RoundRobin,
        };
        let (tls, addr) = (PeerTls::empty(), "127.0.0.1:2408".parse().unwrap());
        let hashes: Vec<u64> =
            (0..4).map(|lane| tunnel_peer(&t, &tls, addr, "origin.example", lane).reuse_hash()).collect();
        for (i, h) in hashes.iter().enumerate() {
            assert_eq!(hashes.iter().filter(|x| *x == h).count(), 1, "lane {i} shares a pool");
        }
        let again = tunnel_peer(&t, &tls, addr, "origin.example", 2);
        assert_eq!(again.reuse_hash(), hashes[2], "a lane's requests share its connections");
        assert_eq!(again.options.total_connection_timeout, Some(t.connect_timeout), "TLS handshake bounded too");
    }
}

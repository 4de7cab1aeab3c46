//! The tunnel between edge and origin: HTTP/2 over mutual TLS 1.3, pooled and persistent.
//!
//! * [`protocol`]: what edge and origin say to each other (typed, written and read here only).
//! * [`peer`]: the connection the edge dials, the origin's h2 settings, which errors are the
//!   tunnel's.
//! * [`listeners`], [`probe`]: the edge's view of origin listeners (up, down, backoff) and the
//!   probes that keep it.
//! * [`tls`]: mutual TLS 1.3 anchored in the private CA.
//! * [`allow`]: the origin's listener locked to its edges' addresses (before TLS).
//! * [`socket_lanes`]: the edge's own HTTP/2 connections that carry WebSockets.
//! * [`websocket`]: WebSockets as HTTP/2 streams of the tunnel (RFC 8441 extended CONNECT).
//! * [`tcp`]: the tunnel's TCP sockets: congestion control, unsent data held by the kernel.

pub mod allow;
pub mod connectors;
pub mod lane_hello;
pub mod listeners;
pub mod peer;
pub mod probe;
pub mod protocol;
pub mod socket_lanes;
pub mod tcp;
pub mod tls;
pub mod websocket;

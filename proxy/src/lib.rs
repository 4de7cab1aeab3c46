//! railproxy: one binary, two modes (edge and origin) joined by a delta-compressing tunnel.
//! The binary (`main.rs`) is the command line over this library; the library exists so that the
//! fuzz targets in `proxy/fuzz` reach the parsers railproxy owns (`fuzzing`, feature `testing`).
//!
//! * [`edge`], [`origin`]: the two modes' Pingora hooks and what only each of them does.
//! * [`tunnel`]: what joins them: the typed protocol, peers, listener health and probes, TLS.
//! * [`ops`]: operator tools: certificates, fleet rendering, the delta command line.
//! * the rest is shared: configuration, the per-request envelope, metrics, admin, server start.

mod admin;
pub mod config;
pub mod daemon;
mod edge;
mod envelope;
pub mod exit;
#[cfg(feature = "testing")]
pub mod fuzzing;
pub mod hosts;
mod http1_reuse;
mod http_util;
pub mod logging;
mod metrics;
pub mod ops;
mod origin;
mod resolve;
pub mod run;
mod server;
mod sockets;
mod tls;
mod tunnel;
mod units;
mod versions;

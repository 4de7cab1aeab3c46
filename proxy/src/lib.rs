//! railproxy: one binary, two modes (edge and origin) joined by a delta-compressing tunnel.
//! The binary (`main.rs`) is the command line over this library; the library exists so that the
//! fuzz targets in `proxy/fuzz` reach the parsers railproxy owns (`fuzzing`).

mod admin;
pub mod certs;
pub mod config;
pub mod daemon;
pub mod delta;
mod edge;
pub mod exit;
pub mod fleet;
pub mod fuzzing;
mod http_util;
mod limits;
pub mod logging;
mod metrics;
mod origin;
mod proxy_common;
mod redis_store;
pub mod run;
mod server;
mod tls;
mod units;

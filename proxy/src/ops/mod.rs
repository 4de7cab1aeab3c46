//! Operator tools around the proxy: certificates, fleet rendering, the delta codec's command line.

pub mod certs;
pub mod delta_cli;
pub mod fleet;

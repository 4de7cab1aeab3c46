//! The edge's `connectors:`: where origins that dial out reach it (origins with no inbound
//! port), and which hosts each tunnel may serve.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::reader::{Secs, Section};
use crate::hosts::HostPattern;

/// The connector listener and the tunnels it admits.
#[derive(Debug, Clone)]
pub struct Connectors {
    pub listen: Vec<SocketAddr>,
    /// The CA that signs tunnel certificates (only it, never the system roots).
    pub ca: PathBuf,
    /// The listener's own certificate, which dialling origins check (`tunnel.edge_name`).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// How long a request for a host whose tunnel has no lane waits for one before its 502.
    pub wait: Duration,
    /// A connection that has not completed TLS and said which lane it is by then is closed.
    pub handshake_timeout: Duration,
    /// Connections from one address that may be in their handshake at once; more are closed
    /// unread.
    pub max_handshakes_per_address: usize,
    /// Lanes one tunnel may hold (every replica's together); more are refused.
    pub max_lanes_per_tunnel: usize,
    /// HTTP/2 PING interval on every lane: a lane whose PING is not answered within 5 s more
    /// (while nothing else arrives either) is closed and its origin dials again.
    pub ping_interval: Duration,
    pub tunnels: Vec<TunnelGrant>,
}

/// `connectors.tunnels.NAME`: a tunnel (named in its certificate) and the hosts it may serve.
#[derive(Debug, Clone)]
pub struct TunnelGrant {
    pub name: String,
    pub hosts: Vec<HostPattern>,
}

impl TunnelGrant {
    /// The name a certificate carries for this tunnel (a DNS SAN only tunnel certificates have).
    pub fn certificate_name(&self) -> String {
        certificate_name(&self.name)
    }
}

/// A tunnel's name as its certificate carries it.
pub fn certificate_name(tunnel: &str) -> String {
    format!("{tunnel}.{}", crate::ops::certs::TUNNEL_SUFFIX)
}

/// Whether `name` can name a tunnel: one DNS label, lower case.
pub fn valid_tunnel_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

impl Connectors {
    pub fn read(s: &Section<'_>) -> Self {
        let mut tunnels: Vec<TunnelGrant> = Vec::new();
        for (name, t) in s.entries("tunnels") {
            if !valid_tunnel_name(&name) {
                t.problem("", format!("{name:?} is not a tunnel name (one DNS label: a-z, 0-9 and -)"));
            }
            let mut hosts = Vec::new();
            for h in t.req_list::<String>("hosts", "the hosts this tunnel may serve") {
                match HostPattern::parse(&h) {
                    Ok(p) => hosts.push(p),
                    Err(e) => t.problem("hosts", e),
                }
            }
            tunnels.push(TunnelGrant { name, hosts });
        }
        if tunnels.is_empty() {
            s.problem("tunnels", "required: tunnel names, each with the hosts it may serve");
        }
        let c = Connectors {
            listen: s.req_list("listen", "addresses where origins dial in, e.g. 127.0.0.1:2409"),
            ca: s.req("ca").unwrap_or_default(),
            cert: s.req("cert").unwrap_or_default(),
            key: s.req("key").unwrap_or_default(),
            wait: s.or("wait", Secs(Duration::from_secs(2))).0,
            handshake_timeout: s.or("handshake_timeout", Secs(Duration::from_secs(5))).0,
            max_handshakes_per_address: s.or("max_handshakes_per_address", 16usize),
            max_lanes_per_tunnel: s.or("max_lanes_per_tunnel", 256usize),
            ping_interval: s.or("ping_interval", Secs(Duration::from_secs(5))).0,
            tunnels,
        };
        for (key, d) in [("handshake_timeout", c.handshake_timeout), ("ping_interval", c.ping_interval)] {
            if d.is_zero() {
                s.problem(key, "must be more than 0");
            }
        }
        if c.max_handshakes_per_address == 0 {
            s.problem("max_handshakes_per_address", "must be at least 1");
        }
        if c.max_lanes_per_tunnel == 0 {
            s.problem("max_lanes_per_tunnel", "must be at least 1");
        }
        c
    }

    pub fn tunnel(&self, name: &str) -> Option<&TunnelGrant> {
        self.tunnels.iter().find(|t| t.name == name)
    }

    pub fn files(&self) -> Vec<(String, &Path)> {
        vec![
            ("connectors.ca".into(), &self.ca),
            ("connectors.cert".into(), &self.cert),
            ("connectors.key".into(), &self.key),
        ]
    }

    pub fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        vec![&mut self.ca, &mut self.cert, &mut self.key]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_names_are_one_lower_case_label() {
        for ok in ["demo", "shop-1", "a"] {
            assert!(valid_tunnel_name(ok), "{ok}");
        }
        for bad in ["", "Demo", "a.b", "-a", "a-", "a_b", &"x".repeat(64)] {
            assert!(!valid_tunnel_name(bad), "{bad}");
        }
        assert_eq!(certificate_name("demo"), "demo.tunnel.railproxy.internal");
    }
}

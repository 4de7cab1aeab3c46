//! `tunnel.allow`: the origin's listener locked to its edges' addresses.
//!
//! Checked when a connection is accepted, before TLS: a scanner outside the list costs the
//! origin an accept and a close, never a handshake, and learns nothing of its certificate.

use std::net::{IpAddr, SocketAddr};

use async_trait::async_trait;
use ipnet::IpNet;
use pingora_core::listeners::ConnectionFilter;

use crate::metrics;

#[derive(Debug)]
pub struct AllowList(Vec<IpNet>);

impl AllowList {
    pub fn new(blocks: Vec<IpNet>) -> Self {
        AllowList(blocks)
    }

    pub fn admits(&self, ip: IpAddr) -> bool {
        // A dual-stack listener sees IPv4 edges as ::ffff:a.b.c.d; the list names them as IPv4.
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

#[async_trait]
impl ConnectionFilter for AllowList {
    async fn should_accept(&self, addr: Option<&SocketAddr>) -> bool {
        // Pingora passes no address for Unix sockets, which the tunnel never listens on.
        let Some(addr) = addr else { return true };
        let admitted = self.admits(addr.ip());
        if !admitted {
            metrics::TUNNEL_AUTH_FAILURES.with_label_values(&["address"]).inc();
            log::debug!("tunnel: connection from {addr} closed before TLS: outside tunnel.allow");
        }
        admitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(blocks: &[&str]) -> AllowList {
        AllowList::new(blocks.iter().map(|b| b.parse().unwrap()).collect())
    }

    #[test]
    fn addresses_inside_a_block_are_admitted_and_others_are_not() {
        let allow = list(&["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]);
        assert!(allow.admits("10.200.3.4".parse().unwrap()));
        assert!(allow.admits("192.0.2.7".parse().unwrap()));
        assert!(!allow.admits("192.0.2.8".parse().unwrap()));
        assert!(!allow.admits("11.0.0.1".parse().unwrap()));
        assert!(allow.admits("2001:db8:1::5".parse().unwrap()));
        assert!(!allow.admits("2001:db9::1".parse().unwrap()));
    }

    #[test]
    fn an_ipv4_edge_on_a_dual_stack_listener_matches_its_ipv4_block() {
        let allow = list(&["127.0.0.1/32"]);
        assert!(allow.admits("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!allow.admits("::ffff:127.0.0.2".parse().unwrap()));
    }
}

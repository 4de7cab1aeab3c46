//! Upstreams as operators write them: `host:port` where the host is an IP literal or a DNS
//! name, backends with a scheme (`http://`, `https://`, `h2c://`) and a weight, and how names
//! are resolved (`dns:`).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde_yaml::Value;

use super::reader::{FromYaml, Secs, Section};

/// An address as configured: an IP literal or a DNS name, and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    /// Lower case; an IPv6 literal without its brackets.
    pub host: String,
    pub port: u16,
}

impl HostPort {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(HostPort { host: a.ip().to_string(), port: a.port() });
        }
        let bad = || format!("{s:?} is not host:port (an IP address or a DNS name, and a port)");
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || host.len() > 253 || host.contains(['[', ']', ':']) {
            return Err(bad());
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !host.trim_end_matches('.').split('.').all(label_ok) {
            return Err(format!("{s:?}: {host:?} is not a DNS name"));
        }
        Ok(HostPort { host: host.to_ascii_lowercase(), port })
    }

    /// The address itself, when the host is an IP literal (nothing to resolve).
    pub fn literal(&self) -> Option<SocketAddr> {
        self.host.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, self.port))
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

impl FromYaml for HostPort {
    const EXPECTED: &'static str = "host:port, such as 127.0.0.1:8000 or app.internal:8000";
    fn from_yaml(v: &Value) -> Result<Self, String> {
        match v {
            Value::String(s) => HostPort::parse(s),
            other => Err(format!("expected {}, found {other:?}", Self::EXPECTED)),
        }
    }
}

/// How the origin speaks to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// HTTP/1.1 in the clear (`host:port` or `http://host:port`).
    Http,
    /// TLS, verified; HTTP/2 or HTTP/1.1 by ALPN.
    Https,
    /// HTTP/2 in the clear, prior knowledge.
    H2c,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::H2c => "h2c",
        }
    }
}

/// One configured backend: where, how, and its share of requests.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendSpec {
    pub scheme: Scheme,
    pub at: HostPort,
    /// Relative share of requests (default 1).
    pub weight: usize,
    /// A name that may not resolve (yet): not an error at start.
    pub optional: bool,
}

impl BackendSpec {
    pub fn parse_url(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (scheme, rest) = match s.split_once("://") {
            None => (Scheme::Http, s),
            Some(("http", r)) => (Scheme::Http, r),
            Some(("https", r)) => (Scheme::Https, r),
            Some(("h2c", r)) => (Scheme::H2c, r),
            Some((other, _)) => return Err(format!("{s:?}: {other}:// is not a backend scheme (http, https or h2c)")),
        };
        if rest.contains('/') {
            return Err(format!("{s:?}: a backend is scheme://host:port, without a path"));
        }
        Ok(BackendSpec { scheme, at: HostPort::parse(rest)?, weight: 1, optional: false })
    }
}

impl fmt::Display for BackendSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.at)
    }
}

impl FromYaml for BackendSpec {
    const EXPECTED: &'static str =
        "a backend: host:port, http://, https:// or h2c://host:port, or {address: …, weight: N, optional: true}";
    fn from_yaml(v: &Value) -> Result<Self, String> {
        match v {
            Value::String(s) => BackendSpec::parse_url(s),
            Value::Mapping(m) => {
                let mut spec = None;
                let (mut weight, mut optional) = (1, false);
                for (k, v) in m {
                    match (k.as_str(), v) {
                        (Some("address"), Value::String(s)) => spec = Some(BackendSpec::parse_url(s)?),
                        (Some("weight"), Value::Number(n)) => match n.as_u64() {
                            Some(w @ 1..=1000) => weight = w as usize,
                            _ => return Err(format!("weight {n} is not a whole number from 1 to 1000")),
                        },
                        (Some("optional"), Value::Bool(b)) => optional = *b,
                        (Some(key @ ("address" | "weight" | "optional")), other) => {
                            return Err(format!("{key}: unexpected {other:?}"));
                        }
                        (key, _) => return Err(format!("unknown key {key:?} (known: address, weight, optional)")),
                    }
                }
                let mut spec = spec.ok_or("address is required")?;
                spec.weight = weight;
                spec.optional = optional;
                Ok(spec)
            }
            other => Err(format!("expected {}, found {other:?}", Self::EXPECTED)),
        }
    }
}

/// TLS to a host's `https://` backends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendTls {
    /// CAs that verify the backends' certificates; the system roots when unset.
    pub ca: Option<PathBuf>,
    /// A client certificate and key, for backends that ask for one.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl BackendTls {
    pub fn read(s: &Section<'_>) -> Self {
        let tls = BackendTls { ca: s.opt("ca"), cert: s.opt("cert"), key: s.opt("key") };
        if tls.cert.is_some() != tls.key.is_some() {
            s.problem(if tls.cert.is_some() { "key" } else { "cert" }, "cert and key go together");
        }
        tls
    }

    pub fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        [&mut self.ca, &mut self.cert, &mut self.key].into_iter().flatten().collect()
    }
}

/// How names are resolved (both modes): `dns:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// Name servers (`ip` or `ip:port`); the system's (`/etc/resolv.conf`) when empty. The
    /// hosts file (`/etc/hosts`) is read either way.
    pub servers: Vec<SocketAddr>,
    /// An answer's TTL is honoured within these bounds: a name is looked up again no sooner
    /// than `min_ttl` and no later than `max_ttl` after its last answer.
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    /// A name that failed to resolve, or one of whose addresses failed, is asked again after this.
    pub retry: Duration,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            servers: Vec::new(),
            min_ttl: Duration::from_secs(5),
            max_ttl: Duration::from_secs(300),
            retry: Duration::from_secs(1),
        }
    }
}

/// A name server: `ip` (port 53) or `ip:port`.
struct NameServer(SocketAddr);

impl FromYaml for NameServer {
    const EXPECTED: &'static str = "a name server address such as 10.0.0.2 or 127.0.0.1:5353";
    fn from_yaml(v: &Value) -> Result<Self, String> {
        let s = v.as_str().ok_or_else(|| format!("expected {}", Self::EXPECTED))?.trim();
        s.parse::<SocketAddr>()
            .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
            .map(NameServer)
            .map_err(|_| format!("{s:?} is not an IP address (with an optional port)"))
    }
}

impl DnsSettings {
    pub fn read(s: &Section<'_>) -> Self {
        let d = DnsSettings::default();
        let dns = DnsSettings {
            servers: s.list::<NameServer>("servers").into_iter().map(|n| n.0).collect(),
            min_ttl: s.or("min_ttl", Secs(d.min_ttl)).0,
            max_ttl: s.or("max_ttl", Secs(d.max_ttl)).0,
            retry: s.or("retry", Secs(d.retry)).0,
        };
        if dns.min_ttl.is_zero() {
            s.problem("min_ttl", "must be more than 0");
        }
        if dns.max_ttl < dns.min_ttl {
            s.problem("max_ttl", "must be at least min_ttl");
        }
        if dns.retry.is_zero() {
            s.problem("retry", "must be more than 0");
        }
        dns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_literals_or_names() {
        let a = HostPort::parse("127.0.0.1:8000").unwrap();
        assert_eq!(a.literal(), Some("127.0.0.1:8000".parse().unwrap()));
        let v6 = HostPort::parse("[::1]:443").unwrap();
        assert_eq!((v6.host.as_str(), v6.to_string().as_str()), ("::1", "[::1]:443"));
        let n = HostPort::parse("App.Internal:8000").unwrap();
        assert_eq!((n.host.as_str(), n.port, n.literal()), ("app.internal", 8000, None));
        for bad in ["app.internal", "app.internal:http", ":80", "a b:80", "-x.y:80", "x..y:80", "::1:80", "h:70000"] {
            assert!(HostPort::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backends_carry_a_scheme_and_a_weight() {
        let b = BackendSpec::parse_url("https://api.internal:8443").unwrap();
        assert_eq!((b.scheme, b.at.to_string(), b.weight), (Scheme::Https, "api.internal:8443".into(), 1));
        assert_eq!(BackendSpec::parse_url("app:80").unwrap().scheme, Scheme::Http);
        assert_eq!(BackendSpec::parse_url("h2c://10.0.0.1:50051").unwrap().scheme, Scheme::H2c);
        assert!(BackendSpec::parse_url("ftp://x:1").unwrap_err().contains("not a backend scheme"));
        assert!(BackendSpec::parse_url("http://x:1/path").unwrap_err().contains("without a path"));
        let v: Value = serde_yaml::from_str("{address: 'h2c://g:1', weight: 3, optional: true}").unwrap();
        let b = BackendSpec::from_yaml(&v).unwrap();
        assert_eq!((b.scheme, b.weight, b.optional), (Scheme::H2c, 3, true));
        let v: Value = serde_yaml::from_str("{address: 'g:1', wieght: 3}").unwrap();
        assert!(BackendSpec::from_yaml(&v).unwrap_err().contains("unknown key"));
        let v: Value = serde_yaml::from_str("{address: 'g:1', weight: 0}").unwrap();
        assert!(BackendSpec::from_yaml(&v).is_err());
    }
}

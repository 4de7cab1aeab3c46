//! The fleet inventory (`deploy/fleet.example.yaml`): edges, origin sites and their listeners,
//! the fleet CA and defaults, read with every problem reported at once by key path.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::config::upstream::{BackendSpec, HostPort};
use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

use crate::config::reader::{self, Problem, Problems, Section};

/// Where rendered files go on each host, and what runs them.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// The installed binary.
    pub binary: String,
    /// Each host's configuration folder: its YAML, and `tls/`.
    pub config_dir: String,
    /// Pid file and upgrade socket (systemd `RuntimeDirectory`).
    pub run_dir: String,
    /// The account the service runs as.
    pub user: String,
    /// Validity of issued host certificates.
    pub cert_days: u32,
    /// Settings merged into every edge.yaml / origin.yaml (any key those files take).
    pub edge: Mapping,
    pub origin: Mapping,
}

#[derive(Debug, Clone)]
pub struct Edge {
    pub name: String,
    /// How Ansible reaches the host (`ansible_host`).
    pub address: String,
    pub listen: Vec<SocketAddr>,
    pub admin: SocketAddr,
    pub hosts: Vec<String>,
    pub https: Option<Https>,
    /// Where its connector listener binds, for the origins of dial-out sites, and where they
    /// dial it (the edge's name when its address is one).
    pub connector: SocketAddr,
    pub connector_connect: HostPort,
    /// Per-host settings, merged over `defaults.edge`.
    pub config: Mapping,
}

/// An edge's HTTPS client listeners. The certificate (chain) and key are files on the machine
/// that renders, copied into the host's rendered folder, so that the rendered configuration
/// checks and the playbook installs them with the rest.
#[derive(Debug, Clone)]
pub struct Https {
    pub listen: Vec<SocketAddr>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub address: String,
    /// Where the listener binds its tunnel.
    pub tunnel: SocketAddr,
    /// Where edges connect: `tunnel`, or the listener's name and the tunnel's port when its
    /// address is a DNS name.
    pub connect: HostPort,
    pub admin: SocketAddr,
    pub config: Mapping,
}

/// An origin process of a dial-out site: it listens on its admin port only and dials every
/// edge that serves one of the site's hosts.
#[derive(Debug, Clone)]
pub struct Dialer {
    pub name: String,
    pub address: String,
    pub admin: SocketAddr,
    pub config: Mapping,
}

#[derive(Debug, Clone)]
pub struct Site {
    pub name: String,
    /// Name in every listener certificate of the site, which edges check.
    pub server_name: String,
    /// Origins edges connect to (dial-in) …
    pub listeners: Vec<Listener>,
    /// … or origins that dial the edges (dial-out: the site is a tunnel of that name).
    pub dialers: Vec<Dialer>,
    /// `redis://…` shared by the site's listeners; none: each keeps its own versions.
    pub store: Option<String>,
    /// Host -> backends.
    pub hosts: Vec<(String, Vec<BackendSpec>)>,
}

#[derive(Debug, Clone)]
pub struct Fleet {
    /// Folder with ca.pem and ca.key.
    pub ca: PathBuf,
    pub defaults: Defaults,
    pub edges: Vec<Edge>,
    pub sites: Vec<Site>,
}

impl Fleet {
    /// Reads and validates an inventory; relative paths are relative to `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Fleet, Vec<Problem>> {
        let value = reader::parse_yaml(text)?;
        let problems = Problems::default();
        let fleet = {
            let root = Section::root(&value, &problems);
            read(&root, base)
        };
        validate(&fleet, &problems);
        if problems.is_empty() { Ok(fleet) } else { Err(problems.into_vec()) }
    }

    /// The site that serves `host`.
    pub fn site_of(&self, host: &str) -> Option<&Site> {
        self.sites.iter().find(|s| s.hosts.iter().any(|(h, _)| h == host))
    }

    /// Names of the edges that send requests to `site`: the names its listeners accept.
    pub fn edges_of<'a>(&'a self, site: &'a Site) -> Vec<&'a str> {
        self.serving(site).map(|e| e.name.as_str()).collect()
    }

    /// The edges that serve one of `site`'s hosts.
    pub fn serving<'a>(&'a self, site: &'a Site) -> impl Iterator<Item = &'a Edge> + 'a {
        self.edges.iter().filter(|e| e.hosts.iter().any(|h| site.hosts.iter().any(|(sh, _)| sh == h)))
    }

    /// The dial-out sites `edge` serves a host of: the tunnels its connector listener takes.
    pub fn dial_out_sites_of<'a>(&'a self, edge: &'a Edge) -> impl Iterator<Item = &'a Site> + 'a {
        self.sites.iter().filter(|s| !s.dialers.is_empty() && self.serving(s).any(|e| e.name == edge.name))
    }
}

fn read(root: &Section<'_>, base: &Path) -> Fleet {
    let ca = root.req::<PathBuf>("ca").map(|p| base.join(p)).unwrap_or_default();
    let d = root.section("defaults");
    let defaults = Defaults {
        binary: absolute(&d, "binary", "/usr/local/bin/railproxy"),
        config_dir: absolute(&d, "config_dir", "/etc/railproxy"),
        run_dir: absolute(&d, "run_dir", "/run/railproxy"),
        user: d.or("user", "railproxy".to_string()),
        cert_days: d.or("cert_days", 365u32),
        edge: mapping(&d, "edge"),
        origin: mapping(&d, "origin"),
    };
    if defaults.cert_days == 0 || defaults.cert_days > 3650 {
        d.problem("cert_days", "must be 1 to 3650");
    }
    let edges: Vec<Edge> = root
        .entries("edges")
        .into_iter()
        .map(|(name, e)| {
            let address: String = e.req("address").unwrap_or_default();
            let admin = e.opt("admin").or_else(|| default_addr(&e, &address, 9101)).unwrap_or(UNSET);
            let listen = if e.has("listen") {
                e.req_list("listen", "client listeners such as 0.0.0.0:80")
            } else {
                vec![SocketAddr::from(([0, 0, 0, 0], 80))]
            };
            let hosts: Vec<String> = e.req_list("hosts", "the hosts this edge serves");
            let hosts = hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
            let https = e.has("https").then(|| {
                let s = e.section("https");
                let file = |key: &str| s.req::<PathBuf>(key).map(|p| base.join(p)).unwrap_or_default();
                Https {
                    listen: s.req_list("listen", "HTTPS client listeners such as 0.0.0.0:443"),
                    cert: file("cert"),
                    key: file("key"),
                }
            });
            let named = !address.is_empty() && address.parse::<std::net::IpAddr>().is_err();
            // A named edge's connector binds every address and is dialled by name.
            let connector = match e.opt("connector") {
                Some(c) => c,
                None if named => SocketAddr::from(([0, 0, 0, 0], CONNECTOR_PORT)),
                None => default_addr(&e, &address, CONNECTOR_PORT).unwrap_or(UNSET),
            };
            let connector_connect = match e.opt::<HostPort>("connector_connect") {
                Some(c) => c,
                None if named => HostPort { host: address.to_ascii_lowercase(), port: connector.port() },
                None => HostPort { host: connector.ip().to_string(), port: connector.port() },
            };
            let config = mapping(&e, "config");
            Edge { name, address, listen, admin, hosts, https, connector, connector_connect, config }
        })
        .collect();
    let sites = root
        .entries("sites")
        .into_iter()
        .map(|(name, s)| {
            let server_name = s.or("server_name", format!("{name}.origin.railproxy.internal"));
            let listeners = s
                .entries("listeners")
                .into_iter()
                .map(|(lname, l)| {
                    let address: String = l.req("address").unwrap_or_default();
                    let named = !address.is_empty() && address.parse::<std::net::IpAddr>().is_err();
                    // A listener known by name binds every address and is dialled by name.
                    let tunnel = match l.opt("tunnel") {
                        Some(t) => t,
                        None if named => SocketAddr::from(([0, 0, 0, 0], 2408)),
                        None => default_addr(&l, &address, 2408).unwrap_or(UNSET),
                    };
                    let connect = match l.opt::<HostPort>("connect") {
                        Some(c) => c,
                        None if named => HostPort { host: address.to_ascii_lowercase(), port: tunnel.port() },
                        None => HostPort { host: tunnel.ip().to_string(), port: tunnel.port() },
                    };
                    let admin = l.opt("admin").or_else(|| default_addr(&l, &address, 9102)).unwrap_or(UNSET);
                    let config = mapping(&l, "config");
                    Listener { name: lname, address, tunnel, connect, admin, config }
                })
                .collect::<Vec<_>>();
            let dialers = s
                .entries("origins")
                .into_iter()
                .map(|(oname, o)| {
                    let address: String = o.req("address").unwrap_or_default();
                    let admin = o.opt("admin").or_else(|| default_addr(&o, &address, 9102)).unwrap_or(UNSET);
                    Dialer { name: oname, address, admin, config: mapping(&o, "config") }
                })
                .collect::<Vec<_>>();
            match (listeners.is_empty(), dialers.is_empty()) {
                (true, true) => s.problem(
                    "listeners",
                    "required: origin listeners edges connect to, or origins: that dial out to the edges",
                ),
                (false, false) => s.problem(
                    "origins",
                    "a site's origins listen (listeners:) or dial out (origins:), not both: make two sites",
                ),
                _ => {}
            }
            if !dialers.is_empty() && !crate::config::connectors::valid_tunnel_name(&name) {
                s.problem("", "a dial-out site's name is its tunnel's: one DNS label (a-z, 0-9 and -)");
            }
            let store = s.opt::<String>("store");
            let hosts = s
                .entries("hosts")
                .into_iter()
                .map(|(host, h)| {
                    let backends =
                        h.req_list("backends", "backends such as 10.0.0.5:8080, app.internal:8080 or https://api:8443");
                    (host.to_ascii_lowercase(), backends)
                })
                .collect::<Vec<_>>();
            if hosts.is_empty() {
                s.problem("hosts", "required: the hosts this site serves, each with its backends");
            }
            Site { name, server_name, listeners, dialers, store, hosts }
        })
        .collect::<Vec<_>>();
    if edges.is_empty() {
        root.problem("edges", "required: at least one edge");
    }
    if sites.is_empty() {
        root.problem("sites", "required: at least one origin site");
    }
    Fleet { ca, defaults, edges, sites }
}

/// The connector listener's port (the tunnel's, 2408, plus one).
const CONNECTOR_PORT: u16 = 2409;

/// Stands in for an address already reported as a problem.
const UNSET: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// `address:port` when the host's address is an IP; otherwise the key is required.
fn default_addr(s: &Section<'_>, address: &str, port: u16) -> Option<SocketAddr> {
    match address.parse::<std::net::IpAddr>() {
        Ok(ip) => Some(SocketAddr::new(ip, port)),
        Err(_) if address.is_empty() => None,
        Err(_) => {
            s.problem("", format!("address {address:?} is a name, not an IP: give the listening addresses (default port {port}) explicitly"));
            None
        }
    }
}

fn absolute(s: &Section<'_>, key: &str, default: &str) -> String {
    let v: String = s.or(key, default.to_string());
    if !v.starts_with('/') {
        s.problem(key, format!("{v:?}: must be an absolute path on the hosts"));
    }
    v.trim_end_matches('/').to_string()
}

fn mapping(s: &Section<'_>, key: &str) -> Mapping {
    match s.value(key) {
        None => Mapping::new(),
        Some(Value::Mapping(m)) => m.clone(),
        Some(_) => {
            s.problem(key, "expected a map of configuration settings");
            Mapping::new()
        }
    }
}

/// Checks across the whole inventory.
fn validate(f: &Fleet, problems: &Problems) {
    if !f.ca.as_os_str().is_empty() {
        let unreadable: Vec<String> = ["ca.pem", "ca.key"]
            .iter()
            .filter_map(|file| std::fs::File::open(f.ca.join(file)).err().map(|e| format!("{file}: {e}")))
            .collect();
        if !unreadable.is_empty() {
            problems.add(
                "ca",
                format!(
                    "no fleet CA in {} ({}); create it with `railproxy certs ca --out {}`",
                    f.ca.display(),
                    unreadable.join(", "),
                    f.ca.display()
                ),
            );
        }
    }
    // Host names become certificate names and file names.
    let mut names: HashMap<&str, String> = HashMap::new();
    let machines =
        f.edges.iter().map(|e| (e.name.as_str(), format!("edges.{}", e.name))).chain(f.sites.iter().flat_map(|s| {
            let listeners =
                s.listeners.iter().map(move |l| (l.name.as_str(), format!("sites.{}.listeners.{}", s.name, l.name)));
            listeners
                .chain(s.dialers.iter().map(move |o| (o.name.as_str(), format!("sites.{}.origins.{}", s.name, o.name))))
        }));
    for (name, path) in machines {
        if !is_dns_name(name) {
            problems.add(&path, "not usable as a host name: lower-case letters, digits, '-' and '.'");
        }
        if let Some(first) = names.insert(name, path.clone()) {
            problems.add(&path, format!("duplicate host name: {first} has it too"));
        }
    }
    for s in &f.sites {
        if !is_dns_name(&s.server_name) {
            problems.add(&format!("sites.{}.server_name", s.name), "not a DNS name");
        }
    }
    // Addresses taken twice: the same listener declared twice, or two services on one port.
    let mut seen: HashMap<SocketAddr, String> = HashMap::new();
    let mut claim = |addr: SocketAddr, path: String| {
        if addr.ip().is_unspecified() {
            return; // 0.0.0.0:80 on every edge is how it should be
        }
        if let Some(first) = seen.get(&addr) {
            problems.add(&path, format!("duplicate listener: {addr} is also {first}"));
        } else {
            seen.insert(addr, path);
        }
    };
    for e in &f.edges {
        for (i, a) in e.listen.iter().enumerate() {
            claim(*a, format!("edges.{}.listen[{i}]", e.name));
        }
        for (i, a) in e.https.iter().flat_map(|h| h.listen.iter().enumerate()) {
            claim(*a, format!("edges.{}.https.listen[{i}]", e.name));
        }
        claim(e.admin, format!("edges.{}.admin", e.name));
        if f.dial_out_sites_of(e).next().is_some() {
            claim(e.connector, format!("edges.{}.connector", e.name));
        }
    }
    // Render copies these; say now, beside the other problems, when one cannot be read.
    for e in &f.edges {
        let files = e.https.iter().flat_map(|h| [("cert", &h.cert), ("key", &h.key)]);
        for (key, file) in files.filter(|(_, file)| !file.as_os_str().is_empty()) {
            if let Err(err) = std::fs::File::open(file) {
                problems
                    .add(&format!("edges.{}.https.{key}", e.name), format!("cannot read {}: {err}", file.display()));
            }
        }
    }
    for s in &f.sites {
        for l in &s.listeners {
            claim(l.tunnel, format!("sites.{}.listeners.{}.tunnel", s.name, l.name));
            claim(l.admin, format!("sites.{}.listeners.{}.admin", s.name, l.name));
        }
        for o in &s.dialers {
            claim(o.admin, format!("sites.{}.origins.{}.admin", s.name, o.name));
        }
    }
    // Every host an edge serves belongs to exactly one site.
    let mut served: HashMap<&str, &str> = HashMap::new();
    for s in &f.sites {
        for (h, _) in &s.hosts {
            if let Some(other) = served.insert(h, &s.name) {
                problems.add(&format!("sites.{}.hosts.{h}", s.name), format!("also served by site {other}"));
            }
        }
    }
    for s in &f.sites {
        if !s.hosts.is_empty() && f.edges_of(s).is_empty() {
            problems.add(&format!("sites.{}", s.name), "no edge serves any of its hosts, so no edge could connect");
        }
    }
    for e in &f.edges {
        for (i, h) in e.hosts.iter().enumerate() {
            if !served.contains_key(h.as_str()) {
                problems.add(&format!("edges.{}.hosts[{i}]", e.name), format!("unknown host {h:?}: no site serves it"));
            }
        }
    }
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

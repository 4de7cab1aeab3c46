//! What each host of a fleet gets: its edge.yaml or origin.yaml and its systemd unit, as text.
//! Pure: certificates and files are written by the caller.

use crate::config::upstream::BackendSpec;
use serde_yaml::{Mapping, Value};

use super::inventory::{Defaults, Fleet};
use crate::config::Mode;
use crate::config::reader::Problem;
use crate::ops::certs::{self, CONNECTOR_NAME, Role};

/// One host's rendered files.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub mode: Mode,
    /// `ansible_host`.
    pub address: String,
    /// The admin listener (`/metrics`), for Prometheus.
    pub admin: std::net::SocketAddr,
    /// The certificates issued into its `tls/`.
    pub certs: Vec<Cert>,
    pub config: String,
    pub unit: String,
    /// Files of the inventory's to copy into the host's folder.
    pub copies: Vec<Copied>,
}

/// A certificate render issues for a host from the fleet CA.
#[derive(Debug, Clone)]
pub struct Cert {
    /// The names it is valid for (a tunnel's: its name only).
    pub names: Vec<String>,
    pub role: Role,
}

impl Cert {
    fn new(names: &[&str], role: Role) -> Self {
        Cert { names: names.iter().map(|n| n.to_string()).collect(), role }
    }

    /// Its files, relative to the host's folder: certificate, key.
    pub fn files(&self) -> [String; 2] {
        let stem = certs::stem_of(&self.names, self.role);
        [format!("tls/{stem}.pem"), format!("tls/{stem}.key")]
    }

    fn config(&self, cert_key: &str) -> Value {
        let [cert, key] = self.files();
        map([("ca", "tls/ca.pem".into()), (cert_key, cert.into()), ("key", key.into())])
    }
}

/// A file copied into a host's rendered folder.
#[derive(Debug, Clone)]
pub struct Copied {
    /// On the machine that renders.
    pub from: std::path::PathBuf,
    /// Relative to the host's folder, as its configuration names it.
    pub to: &'static str,
    /// Readable by its owner only (a private key).
    pub private: bool,
}

/// In the first line of every file render writes for a host, so that render can tell its own.
pub const WRITTEN_BY: &str = "written by `railproxy fleet render`";

/// Where an edge's HTTPS certificate and key go: a folder of their own, so that no host name
/// can collide with them in `tls/`.
pub const HTTPS_CERT: &str = "https/cert.pem";
pub const HTTPS_KEY: &str = "https/key.pem";

/// Every host's files, or the problems found merging the inventory's settings.
pub fn render(fleet: &Fleet) -> Result<Vec<Host>, Vec<Problem>> {
    let mut problems: Vec<Problem> = Vec::new();
    let mut hosts = Vec::new();
    let d = &fleet.defaults;
    for e in &fleet.edges {
        let mut origins = Mapping::new();
        for h in &e.hosts {
            let Some(site) = fleet.site_of(h) else { continue };
            let route = if site.dialers.is_empty() {
                let listeners: Vec<Value> = site.listeners.iter().map(|l| l.connect.to_string().into()).collect();
                map([("listeners", listeners.into()), ("server_name", site.server_name.as_str().into())])
            } else {
                map([("tunnel", site.name.as_str().into())])
            };
            origins.insert(h.as_str().into(), route);
        }
        let client = Cert::new(&[&e.name], Role::Edge);
        let mut certs = vec![client.clone()];
        let mut generated = map([
            ("mode", "edge".into()),
            ("server", server(d, Mode::Edge)),
            ("listen", e.listen.iter().map(|a| addr(*a)).collect::<Vec<_>>().into()),
            ("admin", map([("listen", addr(e.admin))])),
            ("tunnel", client.config("cert")),
            ("origins", Value::Mapping(origins)),
        ]);
        // The dial-out sites among its hosts' are tunnels its connector listener takes, each
        // for the hosts of the site this edge serves.
        let tunnels: Mapping = fleet
            .dial_out_sites_of(e)
            .map(|s| {
                let hosts: Vec<Value> =
                    s.hosts.iter().filter(|(h, _)| e.hosts.contains(h)).map(|(h, _)| h.as_str().into()).collect();
                (s.name.as_str().into(), map([("hosts", hosts.into())]))
            })
            .collect();
        if let (false, Value::Mapping(m)) = (tunnels.is_empty(), &mut generated) {
            // Its connector certificate carries the name every dialling origin checks
            // (`tunnel.edge_name`'s default) and the edge's own.
            let connector = Cert::new(&[CONNECTOR_NAME, &e.name], Role::Connector);
            let Value::Mapping(mut c) = connector.config("cert") else { unreachable!("a map") };
            c.insert("listen".into(), vec![addr(e.connector)].into());
            c.insert("tunnels".into(), Value::Mapping(tunnels));
            m.insert("connectors".into(), Value::Mapping(c));
            certs.push(connector);
        }
        let mut copies = Vec::new();
        if let (Some(h), Value::Mapping(m)) = (&e.https, &mut generated) {
            let listen: Vec<Value> = h.listen.iter().map(|a| addr(*a)).collect();
            m.insert(
                "https".into(),
                map([("listen", listen.into()), ("cert", HTTPS_CERT.into()), ("key", HTTPS_KEY.into())]),
            );
            copies.push(Copied { from: h.cert.clone(), to: HTTPS_CERT, private: false });
            copies.push(Copied { from: h.key.clone(), to: HTTPS_KEY, private: true });
        }
        let own_at = format!("edges.{}.config", e.name);
        // HTTPS names files to copy, which only the edge's own `https` does: paths written in
        // `config` would name files that the render machine may not have, and nothing installs.
        let (mut defaults, mut own) = (d.edge.clone(), e.config.clone());
        for (settings, at) in [(&mut defaults, "defaults.edge"), (&mut own, own_at.as_str())] {
            let path = format!("{at}.https");
            if settings.remove("https").is_some() && !problems.iter().any(|p| p.path == path) {
                let message = format!(
                    "give HTTPS as edges.{}.https (listen, cert, key): render copies the certificate and key into the host's folder",
                    e.name
                );
                problems.push(Problem { path, message });
            }
        }
        let config = merged((&defaults, "defaults.edge"), (&own, &own_at), &generated, &mut problems);
        hosts.push(Host {
            name: e.name.clone(),
            mode: Mode::Edge,
            address: e.address.clone(),
            admin: e.admin,
            certs,
            config: document(&e.name, Mode::Edge, &config),
            unit: unit(d, Mode::Edge, &e.name),
            copies,
        });
    }
    for s in &fleet.sites {
        let client_names: Vec<Value> = fleet.edges_of(s).into_iter().map(Value::from).collect();
        let backends: Mapping = s
            .hosts
            .iter()
            .map(|(h, b)| (h.as_str().into(), map([("backends", b.iter().map(backend).collect::<Vec<_>>().into())])))
            .collect();
        for l in &s.listeners {
            let tunnel = map([
                ("listen", vec![addr(l.tunnel)].into()),
                ("cert", format!("tls/{}.pem", l.name).into()),
                ("key", format!("tls/{}.key", l.name).into()),
                ("client_ca", "tls/ca.pem".into()),
                ("client_names", client_names.clone().into()),
            ]);
            let origin = OriginHost { name: &l.name, address: &l.address, admin: l.admin, config: &l.config };
            let own_at = format!("sites.{}.listeners.{}.config", s.name, l.name);
            let cert = Cert::new(&[&l.name, &s.server_name], Role::Origin);
            hosts.push(origin_host(d, s, origin, &own_at, (tunnel, cert), &backends, &mut problems));
        }
        // A dial-out site: every origin holds lanes to every edge that serves one of its hosts,
        // with the site's tunnel certificate; it listens on its admin port only.
        let dial: Vec<Value> = fleet.serving(s).map(|e| e.connector_connect.to_string().into()).collect();
        let tunnel = Cert::new(&[&s.name], Role::Tunnel);
        for o in &s.dialers {
            let Value::Mapping(mut t) = tunnel.config("cert") else { unreachable!("a map") };
            t.insert("dial".into(), dial.clone().into());
            t.insert("replica".into(), o.name.as_str().into());
            let origin = OriginHost { name: &o.name, address: &o.address, admin: o.admin, config: &o.config };
            let own_at = format!("sites.{}.origins.{}.config", s.name, o.name);
            let tunnel = (Value::Mapping(t), tunnel.clone());
            hosts.push(origin_host(d, s, origin, &own_at, tunnel, &backends, &mut problems));
        }
    }
    if problems.is_empty() { Ok(hosts) } else { Err(problems) }
}

/// An origin process of a site, as the inventory names it.
#[derive(Clone, Copy)]
struct OriginHost<'a> {
    name: &'a str,
    address: &'a str,
    admin: std::net::SocketAddr,
    config: &'a Mapping,
}

/// An origin's files: its `tunnel` section and certificate (a listener's or the site's tunnel's),
/// the site's hosts and store, `defaults.origin` and its own `config` merged in.
fn origin_host(
    d: &Defaults,
    site: &super::inventory::Site,
    o: OriginHost<'_>,
    own_at: &str,
    (tunnel, cert): (Value, Cert),
    backends: &Mapping,
    problems: &mut Vec<Problem>,
) -> Host {
    let mut generated = map([
        ("mode", "origin".into()),
        ("server", server(d, Mode::Origin)),
        ("admin", map([("listen", addr(o.admin))])),
        ("tunnel", tunnel),
        ("hosts", Value::Mapping(backends.clone())),
    ]);
    if let (Some(store), Value::Mapping(m)) = (&site.store, &mut generated) {
        m.insert("delta".into(), map([("store", store.as_str().into())]));
    }
    let config = merged((&d.origin, "defaults.origin"), (o.config, own_at), &generated, problems);
    Host {
        name: o.name.to_string(),
        mode: Mode::Origin,
        address: o.address.to_string(),
        admin: o.admin,
        certs: vec![cert],
        config: document(o.name, Mode::Origin, &config),
        unit: unit(d, Mode::Origin, o.name),
        copies: Vec::new(),
    }
}

fn addr(a: std::net::SocketAddr) -> Value {
    a.to_string().into()
}

/// A backend as `conf/origin.yaml` takes it: its URL, or a map when it has a weight or is optional.
fn backend(b: &BackendSpec) -> Value {
    if b.weight == 1 && !b.optional {
        return b.to_string().into();
    }
    let mut m = Mapping::new();
    m.insert("address".into(), b.to_string().into());
    m.insert("weight".into(), (b.weight as u64).into());
    if b.optional {
        m.insert("optional".into(), true.into());
    }
    Value::Mapping(m)
}

fn map<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Mapping(entries.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
}

fn server(d: &Defaults, mode: Mode) -> Value {
    map([
        ("upgrade_sock", format!("{}/{mode}-upgrade.sock", d.run_dir).into()),
        ("pid_file", format!("{}/{mode}.pid", d.run_dir).into()),
    ])
}

/// `defaults`, then the host's own `config` over it, then what the inventory decides over both;
/// a setting of the inventory's own (addresses, certificates, routes) may not be overridden.
/// Problems name where the setting was written (`defaults_at` or `own_at`), once.
fn merged(
    (defaults, defaults_at): (&Mapping, &str),
    (own, own_at): (&Mapping, &str),
    generated: &Value,
    problems: &mut Vec<Problem>,
) -> Value {
    let mut config = Value::Mapping(defaults.clone());
    overlay(&mut config, &Value::Mapping(own.clone()), "", &mut |_| {});
    overlay(&mut config, generated, "", &mut |key| {
        let at = if lookup(own, key).is_some() { own_at } else { defaults_at };
        let path = format!("{at}.{key}");
        if !problems.iter().any(|p| p.path == path) {
            let message = "set by the inventory (addresses, certificates, hosts): remove it here".into();
            problems.push(Problem { path, message });
        }
    });
    config
}

/// The value at a dotted key path.
fn lookup<'a>(map: &'a Mapping, path: &str) -> Option<&'a Value> {
    let (first, rest) = path.split_once('.').map_or((path, None), |(a, b)| (a, Some(b)));
    match (map.get(first)?, rest) {
        (v, None) => Some(v),
        (Value::Mapping(m), Some(rest)) => lookup(m, rest),
        _ => None,
    }
}

/// Deep-merges `top` into `base`; `clash` hears of every leaf `top` replaces.
fn overlay(base: &mut Value, top: &Value, at: &str, clash: &mut dyn FnMut(&str)) {
    match (base, top) {
        (Value::Mapping(b), Value::Mapping(t)) => {
            for (k, v) in t {
                let key = k.as_str().map_or_else(|| format!("{k:?}"), str::to_string);
                let path = if at.is_empty() { key } else { format!("{at}.{key}") };
                match b.get_mut(k) {
                    Some(existing) => overlay(existing, v, &path, clash),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, t) => {
            clash(at);
            *b = t.clone();
        }
    }
}

fn document(name: &str, mode: Mode, config: &Value) -> String {
    // `mode` first, as in every configuration file.
    let mut ordered = Mapping::new();
    if let Value::Mapping(m) = config {
        ordered.extend(m.get("mode").map(|v| (Value::from("mode"), v.clone())));
        ordered.extend(m.iter().filter(|(k, _)| k.as_str() != Some("mode")).map(|(k, v)| (k.clone(), v.clone())));
    }
    let yaml = serde_yaml::to_string(&ordered).expect("a YAML value serialises");
    format!(
        "# {mode}.yaml for {name}: {WRITTEN_BY}; edit the fleet inventory, not this file.\n\
         # Relative paths are relative to this file's folder. See conf/{mode}.yaml for every setting.\n{yaml}"
    )
}

/// A hardened unit: `Type=forking` with the pid file, so that `systemctl reload` is a zero-downtime
/// upgrade (a new process takes the sockets over, the old one drains), refused before it starts
/// when the configuration does not check.
fn unit(d: &Defaults, mode: Mode, name: &str) -> String {
    let (bin, conf, run) = (&d.binary, format!("{}/{mode}.yaml", d.config_dir), &d.run_dir);
    // systemd creates (and makes writable) a runtime folder only under /run.
    let run_dir = match run.strip_prefix("/run/") {
        Some(rel) => format!("RuntimeDirectory={rel}\nRuntimeDirectoryPreserve=restart\n"),
        None => format!("ReadWritePaths={run}\n"),
    };
    let bind = if mode == Mode::Edge {
        "# Edges listen on ports below 1024.\nAmbientCapabilities=CAP_NET_BIND_SERVICE\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\n"
    } else {
        "AmbientCapabilities=\nCapabilityBoundingSet=\n"
    };
    format!(
        "# railproxy {mode} on {name}: {WRITTEN_BY}.\n\
[Unit]\n\
Description=railproxy {mode} ({name})\n\
Wants=network-online.target\n\
After=network-online.target\n\
\n\
[Service]\n\
Type=forking\n\
PIDFile={run}/{mode}.pid\n\
User={user}\n\
Group={user}\n\
{run_dir}\
ExecStartPre={bin} check -c {conf}\n\
ExecStart={bin} --mode {mode} -c {conf} --daemon\n\
# Zero-downtime upgrade: check; start the new process (the command returns once it has\n\
# written the pid file; it then waits for the sockets); the old one hands them over on SIGQUIT.\n\
ExecReload={bin} check -c {conf}\n\
ExecReload={bin} --mode {mode} -c {conf} --daemon --upgrade\n\
ExecReload=/bin/kill -QUIT $MAINPID\n\
# SIGTERM: stop accepting, finish requests in flight (server.graceful_shutdown_timeout).\n\
KillSignal=SIGTERM\n\
TimeoutStopSec=60\n\
Restart=on-failure\n\
RestartSec=2\n\
LimitNOFILE=1048576\n\
{bind}\
NoNewPrivileges=yes\n\
ProtectSystem=strict\n\
ProtectHome=yes\n\
PrivateTmp=yes\n\
PrivateDevices=yes\n\
ProtectKernelTunables=yes\n\
ProtectKernelModules=yes\n\
ProtectKernelLogs=yes\n\
ProtectControlGroups=yes\n\
ProtectClock=yes\n\
ProtectHostname=yes\n\
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\n\
RestrictNamespaces=yes\n\
RestrictRealtime=yes\n\
RestrictSUIDSGID=yes\n\
LockPersonality=yes\n\
MemoryDenyWriteExecute=yes\n\
SystemCallArchitectures=native\n\
SystemCallFilter=@system-service\n\
UMask=0077\n\
\n\
[Install]\n\
WantedBy=multi-user.target\n",
        user = d.user,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_merges_deeply_and_reports_replaced_leaves() {
        let mut base: Value = serde_yaml::from_str("a: {b: 1, c: 2}\nd: 3").unwrap();
        let top: Value = serde_yaml::from_str("a: {c: 5, e: 6}\nf: 7").unwrap();
        let mut clashes = Vec::new();
        overlay(&mut base, &top, "", &mut |k| clashes.push(k.to_string()));
        let want: Value = serde_yaml::from_str("a: {b: 1, c: 5, e: 6}\nd: 3\nf: 7").unwrap();
        assert_eq!(base, want);
        assert_eq!(clashes, ["a.c"]);
    }
}

//! `railproxy fleet render`: from one inventory, every host's configuration, certificates (issued
//! from the fleet CA) and systemd unit, plus an Ansible inventory and Prometheus targets.

mod inventory;
mod render;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::config::reader::Problem;
use crate::config::{Config, ConfigError, Mode};
use crate::exit::{CANT_CREATE, CmdResult, Failure, USAGE};
use crate::ops::certs;
pub use inventory::Fleet;
use render::{Copied, HTTPS_CERT, WRITTEN_BY};
pub use render::{Host, render};

/// `railproxy fleet …`.
#[derive(Debug, clap::Subcommand)]
pub enum FleetCmd {
    /// Write every host's files into DIR/<host>/ and check each rendered configuration.
    #[command(after_help = RENDER_HELP)]
    Render {
        /// The fleet inventory (see deploy/fleet.example.yaml).
        #[arg(short = 'f', long = "file", value_name = "FLEET")]
        file: PathBuf,
        /// Output folder (created if missing). Certificates already there are kept while they fit
        /// (names, role, CA) with more than a third of `cert_days` left; otherwise renewed.
        #[arg(short = 'o', long = "out", value_name = "DIR")]
        out: PathBuf,
    },
}

const RENDER_HELP: &str = "Writes, for each edge and origin listener of the inventory:
  DIR/<host>/edge.yaml or origin.yaml    install as <config_dir>/ (paths inside are relative)
  DIR/<host>/tls/ca.pem, <host>.pem, <host>.key   issued from the fleet CA (kept while they fit;
                                         renewed, saying why, in the last third of cert_days);
                                         an edge serving a dial-out site also gets its connector
                                         certificate, a dial-out site's origins its tunnel's
  DIR/<host>/railproxy-edge.service or railproxy-origin.service   hardened systemd unit
  DIR/<host>/https/cert.pem, key.pem     an edge's HTTPS files, copied from the inventory's
and DIR/inventory.ini (Ansible: groups edges and origins) and DIR/prometheus-targets.yml
(Prometheus file_sd). What it wrote earlier and the inventory no longer asks for (the other
mode's files, an edge's https/) is removed; folders of hosts no longer in the inventory are
named, not removed. Exit 64 listing every problem of an invalid inventory or rendered config.";

pub fn run(cmd: FleetCmd) -> CmdResult {
    match cmd {
        FleetCmd::Render { file, out } => render_fleet(&file, &out),
    }
}

fn render_fleet(file: &Path, out: &Path) -> CmdResult {
    let invalid =
        |problems: Vec<Problem>| Failure::new(USAGE, ConfigError { file: file.display().to_string(), problems });
    let text = std::fs::read_to_string(file)
        .map_err(|e| invalid(vec![Problem { path: String::new(), message: format!("cannot read: {e}") }]))?;
    let base = std::path::absolute(file.parent().unwrap_or(Path::new(""))).unwrap_or_default();
    let fleet = Fleet::parse(&text, &base).map_err(invalid)?;
    let hosts = render(&fleet).map_err(invalid)?;
    write_all(&fleet, &hosts, out).map_err(|e| Failure::new(CANT_CREATE, e))?;
    // Every rendered file must pass `railproxy check` where it was written (its certificates
    // are beside it), so that a deploy never ships a configuration the process would refuse.
    // Names are not resolved here: they resolve where the hosts run (the playbook checks there).
    let mut failed = Vec::new();
    for h in &hosts {
        let path = out.join(&h.name).join(format!("{}.yaml", h.mode));
        match Config::load_with(&path, false) {
            Ok(c) if c.mode() == h.mode => {
                println!("checked {}: ok ({} configuration; names are resolved on the host)", path.display(), h.mode)
            }
            Ok(c) => failed.push(format!("{}: renders a {} configuration", path.display(), c.mode())),
            Err(e) => failed.push(e.to_string()),
        }
    }
    if !failed.is_empty() {
        return Err(Failure::new(
            USAGE,
            anyhow::anyhow!("rendered configurations do not check:\n{}", failed.join("\n")),
        ));
    }
    println!(
        "rendered {} edges and {} origins into {}",
        hosts.iter().filter(|h| h.mode == Mode::Edge).count(),
        hosts.iter().filter(|h| h.mode == Mode::Origin).count(),
        out.display()
    );
    Ok(())
}

fn write_all(fleet: &Fleet, hosts: &[Host], out: &Path) -> anyhow::Result<()> {
    warn_ca_expiry(fleet);
    for h in hosts {
        let dir = out.join(&h.name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        write(&dir.join(format!("{}.yaml", h.mode)), &h.config)?;
        write(&dir.join(format!("railproxy-{}.service", h.mode)), &h.unit)?;
        for c in &h.certs {
            certs::issue(&fleet.ca, &c.names, c.role, &dir.join("tls"), fleet.defaults.cert_days)
                .with_context(|| format!("issuing the certificate of {} ({})", h.name, c.names.join(", ")))?;
        }
        for c in &h.copies {
            copy(c, &dir)?;
        }
        remove_stale(h, &dir)?;
    }
    warn_retired(hosts, out)?;
    write(&out.join("inventory.ini"), &ansible_inventory(fleet, hosts))?;
    write(&out.join("prometheus-targets.yml"), &prometheus_targets(hosts))
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote   {}", path.display());
    Ok(())
}

/// Says so when the fleet CA ends before the certificates issued now would: they stop verifying
/// with it, whatever their own dates. Render cannot fix that; rotating the CA does.
fn warn_ca_expiry(fleet: &Fleet) {
    let path = fleet.ca.join("ca.pem");
    // An unreadable CA fails the render when the first certificate is issued.
    let Some(end) = crate::tls::file_expiry(&path) else { return };
    let days = fleet.defaults.cert_days;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if end < now + i64::from(days) * 86_400 {
        println!(
            "warning: the fleet CA {} expires on {}, before certificates issued now ({days} days) would: \
             create a new CA and rotate to it (docs/operations.md, Rotate certificates)",
            path.display(),
            crate::tls::date_of(end)
        );
    }
}

/// Removes what render wrote into a host's folder earlier that the inventory no longer asks for:
/// the other mode's files after the host changed role, the HTTPS files (a private key among them)
/// after an edge lost `https`. Left there, they read as current.
fn remove_stale(h: &Host, dir: &Path) -> anyhow::Result<()> {
    let other = if h.mode == Mode::Edge { Mode::Origin } else { Mode::Edge };
    for name in [format!("{other}.yaml"), format!("railproxy-{other}.service")] {
        let path = dir.join(name);
        if path.exists() {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            println!("removed {}: {} is an {} now", path.display(), h.name, h.mode);
        }
    }
    let https = dir.join(Path::new(HTTPS_CERT).parent().expect("HTTPS files are in a folder"));
    if https.exists() && !h.copies.iter().any(|c| c.to == HTTPS_CERT) {
        std::fs::remove_dir_all(&https).with_context(|| format!("removing {}", https.display()))?;
        println!("removed {}: the inventory gives {} no HTTPS", https.display(), h.name);
    }
    Ok(())
}

/// Says which folders of `out` hold a host render wrote earlier that the inventory no longer
/// has. They are left alone: they hold that host's keys, and retiring a host is the operator's
/// step (stop its service first).
fn warn_retired(hosts: &[Host], out: &Path) -> anyhow::Result<()> {
    let current: std::collections::HashSet<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    let entries = std::fs::read_dir(out).with_context(|| format!("listing {}", out.display()))?;
    let mut retired: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| !current.contains(n)))
        .filter(|p| [Mode::Edge, Mode::Origin].iter().any(|m| rendered_by_us(&p.join(format!("{m}.yaml")))))
        .collect();
    retired.sort();
    for p in retired {
        println!("warning: {} is a host no longer in the inventory; remove it once the host is retired", p.display());
    }
    Ok(())
}

/// Whether `path` is a configuration render wrote (its first line says so).
fn rendered_by_us(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.lines().next().is_some_and(|l| l.contains(WRITTEN_BY)))
}

/// Copies on every render: the inventory's file is the one to deploy (a renewed certificate
/// reaches the hosts by rendering again).
fn copy(c: &Copied, dir: &Path) -> anyhow::Result<()> {
    let to = dir.join(c.to);
    let bytes = std::fs::read(&c.from).with_context(|| format!("reading {}", c.from.display()))?;
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    // Written anew, as render writes the certificates it issues, whatever mode an earlier
    // copy had.
    certs::replace(&to, &bytes, c.private)?;
    println!("copied  {} (from {})", to.display(), c.from.display());
    Ok(())
}

/// Groups `edges` and `origins`, and the install paths as group variables of `railproxy`.
fn ansible_inventory(fleet: &Fleet, hosts: &[Host]) -> String {
    let mut s = String::from("# Written by `railproxy fleet render`.\n");
    for (group, mode) in [("edges", Mode::Edge), ("origins", Mode::Origin)] {
        let _ = writeln!(s, "\n[{group}]");
        for h in hosts.iter().filter(|h| h.mode == mode) {
            let _ =
                write!(s, "{} ansible_host={} railproxy_mode={mode} railproxy_admin={}", h.name, h.address, h.admin);
            // Its certificates and keys, which the role installs beside tls/ca.pem.
            let tls: Vec<String> = h.certs.iter().flat_map(|c| c.files()).collect();
            let _ = write!(s, " railproxy_tls={}", tls.join(","));
            // The role installs these beside the host's own files.
            if h.copies.iter().any(|c| c.to == HTTPS_CERT) {
                let _ = write!(s, " railproxy_https=true");
            }
            s.push('\n');
        }
    }
    let d = &fleet.defaults;
    let _ = write!(
        s,
        "\n[railproxy:children]\nedges\norigins\n\n[railproxy:vars]\nrailproxy_binary_path={}\nrailproxy_config_dir={}\nrailproxy_user={}\n",
        d.binary, d.config_dir, d.user
    );
    s
}

/// Prometheus `file_sd_configs` targets: every admin listener, labelled with mode and host.
fn prometheus_targets(hosts: &[Host]) -> String {
    let mut s = String::from("# Written by `railproxy fleet render`: Prometheus file_sd targets.\n");
    for h in hosts {
        let _ = write!(
            s,
            "- targets: [\"{}\"]\n  labels: {{railproxy_mode: {}, railproxy_host: {}}}\n",
            h.admin, h.mode, h.name
        );
    }
    s
}

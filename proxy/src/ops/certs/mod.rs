//! `railproxy certs`: a private CA and the certificates the tunnel needs, for the demo and for
//! small deployments. Idempotent: existing files are kept while they are what would be issued
//! now, and renewed in the last third of their validity.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, UnixTime};

use crate::exit::CmdResult;

mod renewal;

/// Name in the origin listener's certificate, which edges check (`tunnel.server_name`).
pub const ORIGIN_NAME: &str = "origin.railproxy.internal";
/// Name in the edge's client certificate, which origins can check.
pub const EDGE_NAME: &str = "edge.railproxy.internal";
/// Name in an edge's connector listener certificate, which origins that dial out check
/// (`tunnel.edge_name`).
pub const CONNECTOR_NAME: &str = "connector.railproxy.internal";
/// A tunnel certificate names its tunnel as `NAME.` followed by this: only tunnel
/// certificates carry it, so no edge or origin certificate of the same CA passes for a tunnel.
pub const TUNNEL_SUFFIX: &str = "tunnel.railproxy.internal";

pub const HELP: &str = "Writes into DIR (created if missing):
  ca.pem, ca.key          private CA (valid 10 years; `certs ca --days N` for another); keep ca.key offline
  origin.pem, origin.key  origin listener (2 years): DNS origin.railproxy.internal, localhost, IP 127.0.0.1
  edge.pem, edge.key      edge client certificate (2 years): DNS edge.railproxy.internal
  connector.pem, .key     an edge's connector listener, where origins dial out to (2 years):
                          DNS connector.railproxy.internal, localhost, IP 127.0.0.1
  tunnel-demo.pem, .key   tunnel certificate of the tunnel named demo (2 years), which an
                          origin that dials out presents: DNS demo.tunnel.railproxy.internal
Existing files are kept; missing certificates are issued from the existing CA, and certificates
that no longer fit (other names, role or CA, or less than a third of their validity left) are
renewed.
Keys are written with mode 0600.

For a fleet, `railproxy certs ca --out DIR` creates just a CA; `railproxy fleet render` issues
every host's certificate from it. By hand, issue each host its own certificate from the CA:
  railproxy certs issue --ca DIR --role origin --name origin-1.example.net --out HOSTDIR
  railproxy certs issue --ca DIR --role edge --name edge-fra-1.example.net --out HOSTDIR
  railproxy certs issue --ca DIR --role connector --name edge-fra-1.example.net --out HOSTDIR
  railproxy certs issue --ca DIR --role tunnel --name shop --out HOSTDIR
writes NAME.pem and NAME.key (tunnel-NAME.pem and .key for a tunnel, valid for
NAME.tunnel.railproxy.internal) and a copy of ca.pem into HOSTDIR. Origins accept the edges whose
names their `tunnel.client_names` lists; edges check the origin name in `server_name`.";

/// `railproxy certs issue`.
#[derive(Debug, clap::Subcommand)]
pub enum CertsCmd {
    /// Issue one host's certificate from an existing CA (ca.pem and ca.key in --ca).
    Issue {
        /// Folder holding ca.pem and ca.key.
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// Names the certificate is valid for (DNS names or IP addresses); the first names the files.
        #[arg(long = "name", value_name = "NAME", required = true)]
        names: Vec<String>,
        /// `origin`: a server certificate for an origin listener; `edge`: a client certificate;
        /// `connector`: a server certificate for an edge's connector listener; `tunnel`: the
        /// client certificate of the tunnel --name names, for origins that dial out.
        #[arg(long, value_enum)]
        role: Role,
        /// Folder to write NAME.pem, NAME.key and ca.pem into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 730, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
    },
    /// Create only a private CA (ca.pem, ca.key) in --out, e.g. a fleet's; kept if it exists.
    Ca {
        /// Folder to write ca.pem and ca.key into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Validity in days (of a new CA; an existing one is kept as it is).
        #[arg(long, default_value_t = CA_DAYS, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Role {
    Origin,
    Edge,
    Connector,
    Tunnel,
}

impl Role {
    fn usage(self) -> ExtendedKeyUsagePurpose {
        match self {
            Role::Origin | Role::Connector => ExtendedKeyUsagePurpose::ServerAuth,
            Role::Edge | Role::Tunnel => ExtendedKeyUsagePurpose::ClientAuth,
        }
    }
}

pub fn run_cmd(cmd: CertsCmd) -> CmdResult {
    match cmd {
        CertsCmd::Issue { ca, names, role, out, days } => issue(&ca, &names, role, &out, days).map_err(Into::into),
        CertsCmd::Ca { out, days } => ca(&out, days).map(|_| ()).map_err(Into::into),
    }
}

/// The files [`issue`] writes are `STEM.pem` and `STEM.key`: a tunnel's `tunnel-NAME`, any other
/// certificate's its first name.
pub fn stem_of(names: &[String], role: Role) -> String {
    match role {
        Role::Tunnel => format!("tunnel-{}", names.first().map_or("", String::as_str)),
        _ => names.first().cloned().unwrap_or_default(),
    }
}

/// Issues `names[0].pem` and `.key` into `out` from the CA in `ca_dir` (kept while they fit, see
/// `renewal`), with a copy of ca.pem (kept while it holds that CA, e.g. in a rotation bundle).
pub fn issue(ca_dir: &Path, names: &[String], role: Role, out: &Path, days: u32) -> anyhow::Result<()> {
    let (stem, names) = match role {
        Role::Tunnel => {
            let [tunnel] = names else { bail!("--role tunnel takes one --name: the tunnel's") };
            if !crate::config::connectors::valid_tunnel_name(tunnel) {
                bail!("--name {tunnel:?}: a tunnel name is one DNS label (a-z, 0-9 and -)");
            }
            (stem_of(names, role), vec![crate::config::connectors::certificate_name(tunnel)])
        }
        _ => (stem_of(names, role), names.to_vec()),
    };
    let (stem, names) = (&stem, &names[..]);
    if stem.is_empty() || stem.contains(['/', '\\']) || stem.starts_with('.') {
        bail!("--name {stem:?}: not usable as a file name");
    }
    let (ca_pem, ca_key_path) = (ca_dir.join("ca.pem"), ca_dir.join("ca.key"));
    let ca_key =
        KeyPair::from_pem(&read(&ca_key_path)?).with_context(|| format!("parsing {}", ca_key_path.display()))?;
    let ca_text = read(&ca_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_text, &ca_key).context("reading the CA certificate")?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    ensure_leaf(out, stem, names, role, days, (&issuer, &ca_text))?;
    let ca_copy = out.join("ca.pem");
    if !ca_copy.exists() {
        write(&ca_copy, ca_text.as_bytes(), false)?;
        println!("created {}", ca_copy.display());
    } else if !holds(&read(&ca_copy)?, &ca_text) {
        replace(&ca_copy, ca_text.as_bytes(), false)?;
        println!("replaced {}: it did not hold the CA that issues the certificates", ca_copy.display());
    }
    Ok(())
}

/// Writes `stem.pem` and `.key` into `out`, unless the pair there may be kept as it is.
fn ensure_leaf(
    out: &Path,
    stem: &str,
    names: &[String],
    role: Role,
    days: u32,
    (issuer, ca_pem): (&Issuer<'_, &KeyPair>, &str),
) -> anyhow::Result<()> {
    let (pem, key_path) = (out.join(format!("{stem}.pem")), out.join(format!("{stem}.key")));
    let renewing = if pem.exists() && key_path.exists() {
        let mismatched = crate::tls::check_pair(&pem, &key_path).err().map(|e| format!("{}", e.root_cause()));
        let mismatched = mismatched.map(|e| format!("it and {} are not a usable pair ({e})", key_path.display()));
        match mismatched.or_else(|| renewal::unfit(&read(&pem).ok()?, ca_pem, names, role, days, UnixTime::now())) {
            None => {
                println!("kept    {}", pem.display());
                return Ok(());
            }
            why => why,
        }
    } else {
        None
    };
    let (cert, key) = leaf(names, role.usage(), validity(days), issuer)?;
    // The key first: a process reloading in between finds a pair that does not match and keeps
    // the one in use.
    replace(&key_path, key.as_bytes(), true)?;
    replace(&pem, cert.as_bytes(), false)?;
    match renewing {
        Some(why) => println!("renewed {}: {why}", pem.display()),
        None => println!("created {}", pem.display()),
    }
    Ok(())
}

/// Whether the PEM bundle `bundle` holds the (first) certificate of `ca_pem`.
fn holds(bundle: &str, ca_pem: &str) -> bool {
    let Ok(ca) = CertificateDer::from_pem_slice(ca_pem.as_bytes()) else { return false };
    CertificateDer::pem_slice_iter(bundle.as_bytes()).any(|c| c.is_ok_and(|c| c == ca))
}

/// A leaf certificate and its key, PEM.
fn leaf(
    names: &[String],
    usage: ExtendedKeyUsagePurpose,
    (not_before, not_after): (time::OffsetDateTime, time::OffsetDateTime),
    issuer: &Issuer<'_, &KeyPair>,
) -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec()).context("certificate names")?;
    params.distinguished_name = dn(&names[0]);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    (params.not_before, params.not_after) = (not_before, not_after);
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

struct Leaf {
    stem: &'static str,
    names: &'static [&'static str],
    role: Role,
}

/// The demo's certificates: two years.
const DEMO_DAYS: u32 = 730;

const LEAVES: [Leaf; 4] = [
    Leaf { stem: "origin", names: &[ORIGIN_NAME, "localhost", "127.0.0.1"], role: Role::Origin },
    Leaf { stem: "edge", names: &[EDGE_NAME], role: Role::Edge },
    Leaf { stem: "connector", names: &[CONNECTOR_NAME, "localhost", "127.0.0.1"], role: Role::Connector },
    Leaf { stem: "tunnel-demo", names: &["demo.tunnel.railproxy.internal"], role: Role::Tunnel },
];

pub fn run(out: &Path) -> CmdResult {
    issue_all(out).map_err(Into::into)
}

fn issue_all(out: &Path) -> anyhow::Result<()> {
    if !(out.join("ca.pem").exists() && out.join("ca.key").exists())
        && LEAVES.iter().any(|l| out.join(format!("{}.pem", l.stem)).exists())
    {
        bail!("{} has certificates but no CA (ca.pem and ca.key); move them away or restore the CA", out.display());
    }
    let ca_key = ca(out, CA_DAYS)?;
    let ca_pem = out.join("ca.pem");
    let ca_text = read(&ca_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_text, &ca_key).context("reading the CA certificate")?;
    for leaf in &LEAVES {
        let names: Vec<String> = leaf.names.iter().map(|s| s.to_string()).collect();
        ensure_leaf(out, leaf.stem, &names, leaf.role, DEMO_DAYS, (&issuer, &ca_text))?;
    }
    Ok(())
}

/// A new CA's validity: ten years.
const CA_DAYS: u32 = 3650;

/// The CA in `out` (ca.pem, ca.key), created (valid `days`) unless both exist; its key.
pub fn ca(out: &Path, days: u32) -> anyhow::Result<KeyPair> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let (ca_pem, ca_key_path) = (out.join("ca.pem"), out.join("ca.key"));
    if ca_pem.exists() && ca_key_path.exists() {
        println!("kept    {}", ca_pem.display());
        Ok(KeyPair::from_pem(&read(&ca_key_path)?).with_context(|| format!("parsing {}", ca_key_path.display()))?)
    } else {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn("railproxy private CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        (params.not_before, params.not_after) = validity(days);
        let cert = params.self_signed(&key)?;
        write(&ca_pem, cert.pem().as_bytes(), false)?;
        write(&ca_key_path, key.serialize_pem().as_bytes(), true)?;
        println!("created {}", ca_pem.display());
        Ok(key)
    }
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "railproxy");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// From a day ago (clock skew between hosts) for `days`.
fn validity(days: u32) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (now - time::Duration::days(1), now + time::Duration::days(i64::from(days)))
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Creates `path` with its mode from the start (0600 for a secret): a key is never readable by
/// others, not even for a moment.
pub(crate) fn write(path: &Path, bytes: &[u8], secret: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mode = if secret { 0o600 } else { 0o644 };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes).with_context(|| format!("writing {}", path.display()))
}

/// Replaces `path` whole: written beside it, then renamed over it, so a reader finds the old
/// file or the new one, never part of one, and the new file has its mode from the start.
pub(crate) fn replace(path: &Path, bytes: &[u8], secret: bool) -> anyhow::Result<()> {
    let mut name = path.file_name().with_context(|| format!("{} names no file", path.display()))?.to_os_string();
    name.push(".new");
    let next = path.with_file_name(name);
    // Left over from an interrupted run.
    let _ = std::fs::remove_file(&next);
    write(&next, bytes, secret)?;
    std::fs::rename(&next, path).with_context(|| format!("renaming {} to {}", next.display(), path.display()))
}

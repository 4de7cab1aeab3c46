//! `railproxy certs`: a private CA and the certificates the tunnel needs, for the demo and for
//! small deployments. Idempotent: existing files are kept.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::exit::CmdResult;

/// Name in the origin listener's certificate, which edges check (`tunnel.server_name`).
pub const ORIGIN_NAME: &str = "origin.railproxy.internal";
/// Name in the edge's client certificate, which origins can check.
pub const EDGE_NAME: &str = "edge.railproxy.internal";

pub const HELP: &str = "Writes into DIR (created if missing):
  ca.pem, ca.key          private CA (valid 10 years); keep ca.key offline in production
  origin.pem, origin.key  origin listener (2 years): DNS origin.railproxy.internal, localhost, IP 127.0.0.1
  edge.pem, edge.key      edge client certificate (2 years): DNS edge.railproxy.internal
Existing files are kept; missing certificates are issued from the existing CA.
Keys are written with mode 0600.

For a fleet, `railproxy certs ca --out DIR` creates just a CA; `railproxy fleet render` issues
every host's certificate from it. By hand, issue each host its own certificate from the CA:
  railproxy certs issue --ca DIR --role origin --name origin-1.example.net --out HOSTDIR
  railproxy certs issue --ca DIR --role edge --name edge-fra-1.example.net --out HOSTDIR
writes NAME.pem and NAME.key (and a copy of ca.pem) into HOSTDIR. Origins accept the edges whose
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
        /// `origin`: a server certificate for an origin listener; `edge`: a client certificate.
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
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Role {
    Origin,
    Edge,
}

pub fn run_cmd(cmd: CertsCmd) -> CmdResult {
    match cmd {
        CertsCmd::Issue { ca, names, role, out, days } => issue(&ca, &names, role, &out, days).map_err(Into::into),
        CertsCmd::Ca { out } => ca(&out).map(|_| ()).map_err(Into::into),
    }
}

/// Issues `names[0].pem` and `.key` into `out` from the CA in `ca_dir` (kept if both exist), with
/// a copy of ca.pem.
pub fn issue(ca_dir: &Path, names: &[String], role: Role, out: &Path, days: u32) -> anyhow::Result<()> {
    let stem = &names[0];
    if stem.is_empty() || stem.contains(['/', '\\']) || stem.starts_with('.') {
        bail!("--name {stem:?}: not usable as a file name");
    }
    let (ca_pem, ca_key_path) = (ca_dir.join("ca.pem"), ca_dir.join("ca.key"));
    let ca_key =
        KeyPair::from_pem(&read(&ca_key_path)?).with_context(|| format!("parsing {}", ca_key_path.display()))?;
    let ca_text = read(&ca_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_text, &ca_key).context("reading the CA certificate")?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let (pem, key_path) = (out.join(format!("{stem}.pem")), out.join(format!("{stem}.key")));
    if pem.exists() && key_path.exists() {
        println!("kept    {}", pem.display());
    } else {
        let usage = match role {
            Role::Origin => ExtendedKeyUsagePurpose::ServerAuth,
            Role::Edge => ExtendedKeyUsagePurpose::ClientAuth,
        };
        let now = time::OffsetDateTime::now_utc();
        let validity = (now - time::Duration::days(1), now + time::Duration::days(i64::from(days)));
        let (cert, key) = leaf(names, usage, validity, &issuer)?;
        write(&pem, cert.as_bytes(), false)?;
        write(&key_path, key.as_bytes(), true)?;
        println!("created {}", pem.display());
    }
    let ca_copy = out.join("ca.pem");
    if !ca_copy.exists() {
        write(&ca_copy, ca_text.as_bytes(), false)?;
        println!("created {}", ca_copy.display());
    }
    Ok(())
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
    usage: ExtendedKeyUsagePurpose,
}

const LEAVES: [Leaf; 2] = [
    Leaf {
        stem: "origin",
        names: &[ORIGIN_NAME, "localhost", "127.0.0.1"],
        usage: ExtendedKeyUsagePurpose::ServerAuth,
    },
    Leaf { stem: "edge", names: &[EDGE_NAME], usage: ExtendedKeyUsagePurpose::ClientAuth },
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
    let ca_key = ca(out)?;
    let ca_pem = out.join("ca.pem");
    let issuer = Issuer::from_ca_cert_pem(&read(&ca_pem)?, &ca_key).context("reading the CA certificate")?;
    for leaf in &LEAVES {
        let (pem, key_path) = (out.join(format!("{}.pem", leaf.stem)), out.join(format!("{}.key", leaf.stem)));
        if pem.exists() && key_path.exists() {
            println!("kept    {}", pem.display());
            continue;
        }
        let names: Vec<String> = leaf.names.iter().map(|s| s.to_string()).collect();
        let (cert, key) = self::leaf(&names, leaf.usage.clone(), validity(2), &issuer)?;
        write(&pem, cert.as_bytes(), false)?;
        write(&key_path, key.as_bytes(), true)?;
        println!("created {}", pem.display());
    }
    Ok(())
}

/// The CA in `out` (ca.pem, ca.key), created (valid 10 years) unless both exist; its key.
pub fn ca(out: &Path) -> anyhow::Result<KeyPair> {
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
        (params.not_before, params.not_after) = validity(10);
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

/// From a day ago (clock skew between hosts) for `years`.
fn validity(years: i64) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (now - time::Duration::days(1), now + time::Duration::days(365 * years))
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

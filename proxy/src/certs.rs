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
Keys are written with mode 0600.";

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
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let (ca_pem, ca_key_path) = (out.join("ca.pem"), out.join("ca.key"));
    let ca_key = if ca_pem.exists() && ca_key_path.exists() {
        println!("kept    {}", ca_pem.display());
        KeyPair::from_pem(&read(&ca_key_path)?).with_context(|| format!("parsing {}", ca_key_path.display()))?
    } else {
        if LEAVES.iter().any(|l| out.join(format!("{}.pem", l.stem)).exists()) {
            bail!("{} has certificates but no CA (ca.pem and ca.key); move them away or restore the CA", out.display());
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn("railproxy private CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        (params.not_before, params.not_after) = validity(10);
        let cert = params.self_signed(&key)?;
        write(&ca_pem, &cert.pem(), false)?;
        write(&ca_key_path, &key.serialize_pem(), true)?;
        println!("created {}", ca_pem.display());
        key
    };
    let issuer = Issuer::from_ca_cert_pem(&read(&ca_pem)?, &ca_key).context("reading the CA certificate")?;
    for leaf in &LEAVES {
        let (pem, key_path) = (out.join(format!("{}.pem", leaf.stem)), out.join(format!("{}.key", leaf.stem)));
        if pem.exists() && key_path.exists() {
            println!("kept    {}", pem.display());
            continue;
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(leaf.names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name = dn(leaf.names[0]);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![leaf.usage.clone()];
        (params.not_before, params.not_after) = validity(2);
        let cert = params.signed_by(&key, &issuer)?;
        write(&pem, &cert.pem(), false)?;
        write(&key_path, &key.serialize_pem(), true)?;
        println!("created {}", pem.display());
    }
    Ok(())
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

fn read(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn write(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mode = if secret { 0o600 } else { 0o644 };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

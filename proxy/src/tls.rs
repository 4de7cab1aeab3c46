//! TLS for the tunnel: the origin's rustls server config and the edge's peer settings, both
//! anchored in the private CA (never the system roots).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::tls::{self, CertificateDer, PrivateKeyDer, RootCertStore, WebPkiClientVerifier};
use pingora_core::utils::tls::{CertKey, WrappedX509, parse_x509};

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str().with_context(|| format!("{} is not valid UTF-8", p.display()))
}

fn certs_and_key(cert: &Path, key: &Path) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    tls::load_certs_and_key_files(path_str(cert)?, path_str(key)?)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("loading {} and {}", cert.display(), key.display()))?
        .with_context(|| format!("{} holds no certificate or {} no private key", cert.display(), key.display()))
}

fn ca_der(ca: &Path) -> anyhow::Result<Vec<u8>> {
    let der = tls::load_pem_file_ca(&path_str(ca)?.to_string())
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("loading CA {}", ca.display()))?;
    if der.is_empty() {
        bail!("{} holds no certificate", ca.display());
    }
    Ok(der)
}

/// The origin's TLS listener settings: its certificate, ALPN h2 (HTTP/1.1 allowed for
/// debugging with curl), and client certificates from `client_ca` required when it is set.
/// Pingora's rustls acceptor offers TLS 1.2 and 1.3; railproxy's edge negotiates 1.3.
pub fn origin_tls_settings(cert: &Path, key: &Path, client_ca: Option<&Path>) -> anyhow::Result<TlsSettings> {
    // Load once here so that a bad file is an error, not a panic inside Pingora's build().
    certs_and_key(cert, key)?;
    let mut settings =
        TlsSettings::intermediate(path_str(cert)?, path_str(key)?).map_err(|e| anyhow::anyhow!("{e}"))?;
    settings.enable_h2();
    if let Some(ca) = client_ca {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(ca_der(ca)?)).context("adding the client CA")?;
        let verifier = WebPkiClientVerifier::builder(Arc::new(roots)).build().context("client verifier")?;
        settings.set_client_cert_verifier(verifier);
    }
    Ok(settings)
}

/// What the edge's peers carry: the CA that must have signed the origin, and the edge's own
/// client certificate if configured.
#[derive(Clone)]
pub struct PeerTls {
    pub ca: Arc<[WrappedX509]>,
    pub client: Option<Arc<CertKey>>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls").field("client_cert", &self.client.is_some()).finish()
    }
}

pub fn edge_peer_tls(ca: &Path, cert: Option<&Path>, key: Option<&Path>) -> anyhow::Result<PeerTls> {
    let ca = vec![WrappedX509::new(ca_der(ca)?, parse_x509)];
    let client = match (cert, key) {
        (Some(c), Some(k)) => {
            let (chain, key) = certs_and_key(c, k)?;
            let chain = chain.into_iter().map(|c| c.to_vec()).collect();
            Some(Arc::new(CertKey::new(chain, key.secret_der().to_vec())))
        }
        _ => None,
    };
    Ok(PeerTls { ca: ca.into(), client })
}

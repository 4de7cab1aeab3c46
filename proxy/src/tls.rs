//! Certificate files as both modes use them: loading a chain and key (refused unless the key is
//! the certificate's), their expiry (metric and warnings), a listener certificate that reloads in
//! place, and the SIGHUP reloader. The tunnel's own policy (mutual TLS 1.3, the edge's identity)
//! is in `tunnel::tls`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::tls::{self, CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::metrics;

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str().with_context(|| format!("{} is not valid UTF-8", p.display()))
}

pub(crate) fn certs_and_key(
    cert: &Path,
    key: &Path,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    tls::load_certs_and_key_files(path_str(cert)?, path_str(key)?)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("loading {} and {}", cert.display(), key.display()))?
        .with_context(|| format!("{} holds no certificate or {} no private key", cert.display(), key.display()))
}

/// A certificate's last valid moment, Unix seconds.
pub fn not_after(der: &[u8]) -> anyhow::Result<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).context("parsing the certificate")?;
    Ok(cert.validity().not_after.timestamp())
}

/// The UTC date of a Unix time, for messages about expiry.
pub fn date_of(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map_or_else(|_| format!("{unix} (Unix time)"), |t| t.date().to_string())
}

/// The earliest expiry among `certs` (a chain, or the CAs of a bundle), for the expiry metric:
/// the chain stops verifying then. A certificate rustls accepted that the parser
/// does not is used anyway, unmeasured.
pub(crate) fn expiry_of(certs: &[CertificateDer<'_>], file: &Path) -> Option<i64> {
    certs
        .iter()
        .filter_map(|c| not_after(c).map_err(|e| log::warn!("{}: expiry not measured: {e:#}", file.display())).ok())
        .min()
}

/// The earliest expiry among the certificates of a PEM file, if it holds any that parse.
pub fn file_expiry(path: &Path) -> Option<i64> {
    use rustls::pki_types::pem::PemObject as _;
    let certs: Vec<_> = CertificateDer::pem_file_iter(path).ok()?.filter_map(Result::ok).collect();
    expiry_of(&certs, path)
}

/// Publishes when the certificates `cert` (`tunnel`, `https`, `ca`) now in use expire.
pub(crate) fn publish_expiry(cert: &'static str, not_after: Option<i64>) {
    if let Some(t) = not_after {
        metrics::TLS_CERT_EXPIRY.with_label_values(&[cert]).set(t);
    }
}

/// Every certificate in a CA file: one CA, or several while a CA is being rotated.
pub(crate) fn ca_certs(ca: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject as _;
    let certs = CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("reading CA {}", ca.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing CA {}", ca.display()))?;
    if certs.is_empty() {
        bail!("{} holds no certificate", ca.display());
    }
    Ok(certs)
}

/// A listener's certificate and the files it comes from, swapped in place on reload: the
/// origin's tunnel listener and the edge's HTTPS listeners.
#[derive(Debug)]
pub struct ServerCert {
    /// Its label in the expiry metric.
    label: &'static str,
    cert_path: PathBuf,
    key_path: PathBuf,
    live: ArcSwap<CertifiedKey>,
}

/// Whether a certificate file and a key file make a usable pair (the key is the certificate's),
/// as a listener or the tunnel's client side would load them.
pub fn check_pair(cert: &Path, key: &Path) -> anyhow::Result<()> {
    let (chain, key_der) = certs_and_key(cert, key)?;
    certified(chain, key_der, cert, key).map(|_| ())
}

/// A loaded chain and key as one, refused unless the key is the certificate's.
pub(crate) fn certified(
    chain: Vec<CertificateDer<'static>>,
    key_der: PrivateKeyDer<'static>,
    cert: &Path,
    key: &Path,
) -> anyhow::Result<CertifiedKey> {
    // Only the provider's key loader is used here, which all providers share.
    CertifiedKey::from_der(chain, key_der, &rustls::crypto::ring::default_provider())
        .with_context(|| format!("{} and {} do not make a usable certificate", cert.display(), key.display()))
}

impl ServerCert {
    /// `label` names it in the expiry metric (`tunnel`, `https`).
    pub fn load(label: &'static str, cert: &Path, key: &Path) -> anyhow::Result<Arc<Self>> {
        let (live, expiry) = Self::read(cert, key)?;
        publish_expiry(label, expiry);
        Ok(Arc::new(Self {
            label,
            live: ArcSwap::from_pointee(live),
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
        }))
    }

    fn read(cert: &Path, key: &Path) -> anyhow::Result<(CertifiedKey, Option<i64>)> {
        let (chain, key_der) = certs_and_key(cert, key)?;
        let expiry = expiry_of(&chain, cert);
        Ok((certified(chain, key_der, cert, key)?, expiry))
    }

    /// Rereads certificate and key; on any error the ones in use stay.
    pub fn reload(&self) -> anyhow::Result<()> {
        let (live, expiry) = Self::read(&self.cert_path, &self.key_path)?;
        self.live.store(Arc::new(live));
        publish_expiry(self.label, expiry);
        Ok(())
    }

    /// Listener settings presenting this certificate, reloadable: HTTP/2 and HTTP/1.1 by ALPN.
    /// The edge's HTTPS listeners use them as they are (TLS 1.2 and 1.3, for browsers).
    pub fn settings(self: &Arc<Self>) -> anyhow::Result<TlsSettings> {
        let mut settings = TlsSettings::intermediate(path_str(&self.cert_path)?, path_str(&self.key_path)?)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("certificate {}", self.cert_path.display()))?;
        settings.enable_h2();
        settings.set_cert_resolver(self.clone());
        Ok(settings)
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.live.load_full())
    }
}

/// Rereads TLS files on SIGHUP.
pub struct Reloader {
    what: &'static str,
    reload: Box<dyn Fn() -> anyhow::Result<()> + Send + Sync>,
}

impl Reloader {
    pub fn new(what: &'static str, reload: impl Fn() -> anyhow::Result<()> + Send + Sync + 'static) -> Self {
        Self { what, reload: Box::new(reload) }
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot watch SIGHUP, {} will not reload: {e}", self.what);
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hup.recv() => match (self.reload)() {
                    Ok(()) => {
                        metrics::TLS_RELOADS.with_label_values(&["ok"]).inc();
                        log::info!("SIGHUP: reloaded {}", self.what);
                    }
                    Err(e) => {
                        metrics::TLS_RELOADS.with_label_values(&["error"]).inc();
                        log::error!("SIGHUP: {} not reloaded, the previous ones stay in use: {e:#}", self.what);
                    }
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}

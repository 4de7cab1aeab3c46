//! The tunnel's TLS: mutual TLS 1.3 anchored in the private CA (never the system roots).
//!
//! The origin presents its certificate and requires the edge's, issued by the CA and carrying
//! one of the names the configuration lists; the edge pins the same CA and checks the origin's
//! name. Both sides reread their files on SIGHUP: new handshakes use them, established tunnel
//! connections stay up.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::tls::{CertificateDer, RootCertStore, ServerName, UnixTime};
use pingora_core::utils::tls::{CertKey, WrappedX509, parse_x509};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::metrics;
use crate::tls::{ServerCert, ca_certs, certified, certs_and_key, expiry_of, publish_expiry};

/// The negotiated version string Pingora reports for TLS 1.3.
const TLS13: &str = "TLSv1_3";

/// The TLS version a tunnel connection negotiated, when it is not 1.3 (Pingora's connector
/// offers 1.2 too; the tunnel takes 1.3 only).
pub fn not_tls13(digest: Option<&pingora_core::protocols::Digest>) -> Option<String> {
    // Checked on every request: allocates only when refusing.
    match digest.and_then(|d| d.ssl_digest.as_ref()).map(|s| &*s.version) {
        Some(TLS13) => None,
        Some(other) => Some(other.to_string()),
        None => Some("no TLS".into()),
    }
}

/// ring with the TLS 1.3 cipher suites only. Pingora's rustls listener offers TLS 1.2 and 1.3
/// and has no setting for it, but it builds its config from the process's default provider:
/// with no TLS 1.2 suite there, TLS 1.2 cannot be negotiated.
pub(crate) fn tls13_only() -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.retain(|s| s.version() == &rustls::version::TLS13);
    provider
}

/// Origin mode: its only TLS listener is the tunnel, so the whole process speaks TLS 1.3 only.
pub fn install_origin_provider() {
    // Fails only if a provider is installed already, which would be a startup-order bug.
    if CryptoProvider::install_default(tls13_only()).is_err() {
        log::error!("a TLS provider was installed before the tunnel's; TLS 1.2 may be offered");
    }
}

/// What the origin checks in an edge's certificate.
#[derive(Debug)]
struct EdgePolicy {
    chain: Arc<dyn ClientCertVerifier>,
    names: Vec<ServerName<'static>>,
    ca_not_after: Option<i64>,
    /// Whose certificates these are, for the log: `edge` (at an origin listener) or `tunnel`
    /// (at an edge's connector listener).
    who: &'static str,
}

/// Verifies edge certificates: issued by the configured CA (WebPKI path validation) and valid
/// for one of the configured names. TLS 1.2 signatures are refused outright.
#[derive(Debug)]
pub struct EdgeVerifier(ArcSwap<EdgePolicy>);

impl EdgeVerifier {
    fn policy(ca: &Path, names: &[String], who: &'static str) -> anyhow::Result<EdgePolicy> {
        let mut roots = RootCertStore::empty();
        let cas = ca_certs(ca)?;
        let ca_not_after = expiry_of(&cas, ca);
        for cert in cas {
            roots.add(cert).with_context(|| format!("{} holds a certificate that is not a CA", ca.display()))?;
        }
        let chain = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::new(tls13_only()))
            .build()
            .context("building the client certificate verifier")?;
        let names = names
            .iter()
            .map(|n| ServerName::try_from(n.clone()).with_context(|| format!("{n:?} is not a DNS name or IP address")))
            .collect::<anyhow::Result<_>>()?;
        Ok(EdgePolicy { chain, names, ca_not_after, who })
    }
}

fn refused(who: &str, reason: &'static str, e: rustls::Error) -> rustls::Error {
    metrics::TUNNEL_AUTH_FAILURES.with_label_values(&[reason]).inc();
    log::warn!("tunnel: {who} certificate refused ({reason}): {e}");
    e
}

impl ClientCertVerifier for EdgeVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional (RFC 8446 §4.2.4) and edges hold one certificate anyway.
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let policy = self.0.load();
        let who = policy.who;
        policy.chain.verify_client_cert(end_entity, intermediates, now).map_err(|e| refused(who, "ca", e))?;
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| refused(who, "name", rustls::Error::InvalidCertificate(CertificateError::BadEncoding)))?;
        if policy.names.iter().any(|n| cert.verify_is_valid_for_subject_name(n).is_ok()) {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(refused(who, "name", rustls::Error::InvalidCertificate(CertificateError::NotValidForName)))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(refused(self.0.load().who, "tls12", rustls::Error::General("the tunnel is TLS 1.3 only".into())))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.load().chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.load().chain.supported_verify_schemes()
    }
}

/// The origin's side of the tunnel's TLS: its certificate, and the live verifier of edges.
#[derive(Debug)]
pub struct OriginTls {
    ca_path: PathBuf,
    names: Vec<String>,
    cert: Arc<ServerCert>,
    verifier: Arc<EdgeVerifier>,
}

impl OriginTls {
    pub fn load(cert: &Path, key: &Path, client_ca: &Path, client_names: &[String]) -> anyhow::Result<Self> {
        let policy = EdgeVerifier::policy(client_ca, client_names, "edge")?;
        publish_expiry("ca", policy.ca_not_after);
        Ok(Self {
            cert: ServerCert::load("tunnel", cert, key)?,
            verifier: Arc::new(EdgeVerifier(ArcSwap::from_pointee(policy))),
            ca_path: client_ca.to_path_buf(),
            names: client_names.to_vec(),
        })
    }

    /// Listener settings: ALPN h2 (HTTP/1.1 allowed, for debugging with curl), the reloadable
    /// certificate, mutual TLS. Early data stays off (rustls's default: no 0-RTT replays).
    pub fn settings(&self) -> anyhow::Result<TlsSettings> {
        let mut settings = self.cert.settings()?;
        settings.set_client_cert_verifier(self.verifier.clone());
        Ok(settings)
    }

    /// Rereads certificate, key and CA; on any error the ones in use stay.
    pub fn reload(&self) -> anyhow::Result<()> {
        // The CA first: the certificate is swapped as it loads, so nothing is swapped unless
        // both load.
        let policy = EdgeVerifier::policy(&self.ca_path, &self.names, "edge")?;
        self.cert.reload()?;
        publish_expiry("ca", policy.ca_not_after);
        self.verifier.0.store(Arc::new(policy));
        Ok(())
    }
}

/// What the edge's peers carry: the CA that must have signed the origin, and the edge's own
/// client certificate.
#[derive(Clone)]
pub struct PeerTls {
    pub ca: Arc<[WrappedX509]>,
    pub client: Option<Arc<CertKey>>,
    not_after: Option<i64>,
    ca_not_after: Option<i64>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls").field("client_cert", &self.client.is_some()).finish()
    }
}

impl PeerTls {
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let cas = ca_certs(ca)?;
        let ca_not_after = expiry_of(&cas, ca);
        let ca: Vec<WrappedX509> = cas.into_iter().map(|c| WrappedX509::new(c.to_vec(), parse_x509)).collect();
        let (chain, key_der) = certs_and_key(cert, key)?;
        let not_after = expiry_of(&chain, cert);
        let secret = key_der.secret_der().to_vec();
        // The pair is checked here, as the origin's is: a client certificate with another key
        // would load and then fail every tunnel handshake.
        let chain = certified(chain, key_der, cert, key)?.cert.iter().map(|c| c.to_vec()).collect();
        let client = Some(Arc::new(CertKey::new(chain, secret)));
        Ok(PeerTls { ca: ca.into(), client, not_after, ca_not_after })
    }

    /// No CA and no client certificate: an edge whose origins all dial out (and tests' peers
    /// that never connect).
    pub fn empty() -> Self {
        PeerTls { ca: Arc::new([]), client: None, not_after: None, ca_not_after: None }
    }

    /// Publishes when the client certificate and the CA expire, once these files are the ones in
    /// use.
    pub fn in_use(&self) {
        publish_expiry("tunnel", self.not_after);
        publish_expiry("ca", self.ca_not_after);
    }
}

/// The edge's tunnel TLS, swapped on reload; peers built afterwards (new connections) use the
/// new files.
pub type SharedPeerTls = Arc<ArcSwap<PeerTls>>;

/// The edge's connector listener's TLS: its certificate, and the verifier of tunnel
/// certificates (from the CA, valid for one configured tunnel's name). TLS 1.3 only, ALPN h2.
#[derive(Debug)]
pub struct ConnectorTls {
    ca_path: PathBuf,
    names: Vec<String>,
    cert: Arc<ServerCert>,
    verifier: Arc<EdgeVerifier>,
}

impl ConnectorTls {
    /// `names`: every configured tunnel's certificate name.
    pub fn load(cert: &Path, key: &Path, ca: &Path, names: &[String]) -> anyhow::Result<Self> {
        let policy = EdgeVerifier::policy(ca, names, "tunnel")?;
        Ok(Self {
            cert: ServerCert::load("connector", cert, key)?,
            verifier: Arc::new(EdgeVerifier(ArcSwap::from_pointee(policy))),
            ca_path: ca.to_path_buf(),
            names: names.to_vec(),
        })
    }

    /// A rustls server configuration over the live certificate and verifier (reloads apply to
    /// later handshakes).
    pub fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(tls13_only()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("TLS 1.3 with the ring provider")?
            .with_client_cert_verifier(self.verifier.clone())
            .with_cert_resolver(self.cert.clone());
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// Rereads certificate, key and CA; on any error the ones in use stay.
    pub fn reload(&self) -> anyhow::Result<()> {
        let policy = EdgeVerifier::policy(&self.ca_path, &self.names, "tunnel")?;
        self.cert.reload()?;
        self.verifier.0.store(Arc::new(policy));
        Ok(())
    }
}

/// Which of `tunnels` (names as `connectors.tunnels` has them) the certificate `der` names.
pub fn tunnel_of(der: &CertificateDer<'_>, tunnels: &[String]) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(der).ok()?;
    tunnels
        .iter()
        .find(|t| {
            let name = crate::config::connectors::certificate_name(t);
            ServerName::try_from(name).is_ok_and(|n| cert.verify_is_valid_for_subject_name(&n).is_ok())
        })
        .cloned()
}

/// The edge's client configuration for its WebSocket connections to an origin listener (see
/// `socket_lanes`): the tunnel's CA only, its client certificate, TLS 1.3, HTTP/2. Read from
/// the files at each dial, so that a certificate replaced and SIGHUPed is the one used.
pub fn socket_client_config(ca: &Path, cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in crate::tls::ca_certs(ca)? {
        roots.add(c).with_context(|| format!("a CA certificate of {}", ca.display()))?;
    }
    let (chain, key_der) = crate::tls::certs_and_key(cert, key)?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(tls13_only()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3")?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key_der)
        .context("the tunnel's client certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

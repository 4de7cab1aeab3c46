//! Whether a certificate already on disk may be kept. `certs` and `fleet render` keep the
//! certificates they find so that rendering again does not churn every host, but a kept
//! certificate must still be the one they would issue now: otherwise a renamed site, a host that
//! changed role, a new CA or plain expiry would surface only as failed handshakes in production.

use std::collections::BTreeSet;
use std::net::IpAddr;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, UnixTime};
use x509_parser::extensions::GeneralName;

use super::Role;

/// Why the certificate in `cert_pem` may not be kept for `names` and `role`, issued from the CA in
/// `ca_pem`, with certificates valid `days`; `None` if it may. It is renewed once less than a
/// third of `days` is left: rendering and deploying at any time in the last third gets a host a
/// new one, well before the expiry alert's three weeks at the usual validities.
pub fn unfit(cert_pem: &str, ca_pem: &str, names: &[String], role: Role, days: u32, now: UnixTime) -> Option<String> {
    let der = match CertificateDer::from_pem_slice(cert_pem.as_bytes()) {
        Ok(d) => d,
        Err(e) => return Some(format!("not a PEM certificate ({e})")),
    };
    let (_, cert) = match x509_parser::parse_x509_certificate(&der) {
        Ok(c) => c,
        Err(e) => return Some(format!("not an X.509 certificate ({e})")),
    };
    if let Some(why) = issued_by(&der, ca_pem, role, now) {
        return Some(why);
    }
    let want: BTreeSet<String> = names.iter().map(|n| normal(n)).collect();
    let have = subject_names(&cert);
    if have != want {
        return Some(format!("names {} instead of {}", list(&have), list(&want)));
    }
    let not_after = cert.validity().not_after.timestamp();
    let left = not_after - now.as_secs() as i64;
    let renew_within = i64::from(days.div_ceil(3)) * 86_400;
    (left < renew_within).then(|| {
        format!(
            "expires {} (in {} days), less than a third of {days} days left",
            cert.validity().not_after,
            left / 86_400
        )
    })
}

/// Whether the CA signed it for `role`, and it is valid now.
fn issued_by(der: &CertificateDer<'_>, ca_pem: &str, role: Role, now: UnixTime) -> Option<String> {
    let ca = match CertificateDer::from_pem_slice(ca_pem.as_bytes()) {
        Ok(c) => c,
        Err(e) => return Some(format!("the CA is not a PEM certificate ({e})")),
    };
    let anchor = match webpki::anchor_from_trusted_cert(&ca) {
        Ok(a) => a,
        Err(e) => return Some(format!("the CA does not parse ({e})")),
    };
    let leaf = match webpki::EndEntityCert::try_from(der) {
        Ok(l) => l,
        Err(e) => return Some(format!("does not parse as a leaf certificate ({e})")),
    };
    let usage = match role {
        Role::Origin | Role::Connector => webpki::KeyUsage::server_auth(),
        Role::Edge | Role::Tunnel => webpki::KeyUsage::client_auth(),
    };
    let provider = rustls::crypto::ring::default_provider();
    let algs = provider.signature_verification_algorithms.all;
    let anchors = [anchor];
    let verified = leaf.verify_for_usage(algs, &anchors, &[], now, usage, None, None);
    verified.err().map(|e| match e {
        webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => "not issued by this CA".into(),
        webpki::Error::RequiredEkuNotFoundContext(_) => format!("not a {} certificate", role_name(role)),
        webpki::Error::CertExpired { .. } => "expired".into(),
        other => format!("does not verify against the CA ({other})"),
    })
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Origin => "server (origin)",
        Role::Edge => "client (edge)",
        Role::Connector => "server (connector)",
        Role::Tunnel => "client (tunnel)",
    }
}

/// DNS names and IP addresses the certificate is valid for, as `normal` writes them.
fn subject_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> BTreeSet<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else { return BTreeSet::new() };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(normal(d)),
            GeneralName::IPAddress(b) => match b.len() {
                4 => Some(IpAddr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                16 => Some(IpAddr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// DNS names compare without case; addresses in their canonical text.
fn normal(name: &str) -> String {
    name.parse::<IpAddr>().map_or_else(|_| name.to_ascii_lowercase(), |ip| ip.to_string())
}

fn list(names: &BTreeSet<String>) -> String {
    names.iter().cloned().collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, Issuer, KeyPair};

    use super::*;

    const DAY: u64 = 86_400;

    struct Ca {
        pem: String,
        key: KeyPair,
    }

    fn ca() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        Ca { pem: params.self_signed(&key).unwrap().pem(), key }
    }

    /// A leaf as `certs` issues it, valid from a day ago for `days`.
    fn leaf(ca: &Ca, names: &[&str], role: Role, days: u64) -> String {
        let issuer = Issuer::from_ca_cert_pem(&ca.pem, &ca.key).unwrap();
        let now = time::OffsetDateTime::now_utc();
        let usage = match role {
            Role::Origin | Role::Connector => ExtendedKeyUsagePurpose::ServerAuth,
            Role::Edge | Role::Tunnel => ExtendedKeyUsagePurpose::ClientAuth,
        };
        let validity = (now - Duration::from_secs(DAY), now + Duration::from_secs(days * DAY));
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        super::super::leaf(&names, usage, validity, &issuer).unwrap().0
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_certificate_as_it_would_be_issued_now_is_kept() {
        let ca = ca();
        let cert = leaf(&ca, &["origin-1", "dc1.example", "127.0.0.1"], Role::Origin, 365);
        // Names in another order and case are the same names.
        let want = names(&["DC1.example", "127.0.0.1", "origin-1"]);
        assert_eq!(unfit(&cert, &ca.pem, &want, Role::Origin, 365, UnixTime::now()), None);
    }

    #[test]
    fn what_changed_is_the_reason_to_renew() {
        let (ca, other) = (ca(), ca());
        let edge = leaf(&ca, &["edge-1"], Role::Edge, 365);
        let now = UnixTime::now();
        let why = |cert: &str, ca: &str, n: &[&str], role| unfit(cert, ca, &names(n), role, 365, now);
        assert_eq!(why(&edge, &other.pem, &["edge-1"], Role::Edge).as_deref(), Some("not issued by this CA"));
        assert_eq!(
            why(&edge, &ca.pem, &["edge-1"], Role::Origin).as_deref(),
            Some("not a server (origin) certificate")
        );
        assert_eq!(why(&edge, &ca.pem, &["edge-2"], Role::Edge).as_deref(), Some("names edge-1 instead of edge-2"));
        let origin = leaf(&ca, &["o-1", "old.example"], Role::Origin, 365);
        let renamed = why(&origin, &ca.pem, &["o-1", "new.example"], Role::Origin).unwrap();
        assert_eq!(renamed, "names o-1, old.example instead of new.example, o-1");
        assert!(why("garbage", &ca.pem, &["edge-1"], Role::Edge).unwrap().starts_with("not a PEM certificate"));
    }

    #[test]
    fn it_is_renewed_in_the_last_third_of_its_validity() {
        let ca = ca();
        let at = |days: u64| UnixTime::since_unix_epoch(Duration::from_secs(UnixTime::now().as_secs() + days * DAY));
        let cert = leaf(&ca, &["edge-1"], Role::Edge, 90);
        let n = names(&["edge-1"]);
        // 90 days of validity: kept while more than 30 are left.
        assert_eq!(unfit(&cert, &ca.pem, &n, Role::Edge, 90, at(59)), None);
        let why = unfit(&cert, &ca.pem, &n, Role::Edge, 90, at(61)).unwrap();
        assert!(why.ends_with("days), less than a third of 90 days left"), "{why}");
        assert_eq!(unfit(&cert, &ca.pem, &n, Role::Edge, 90, at(91)).as_deref(), Some("expired"));
    }
}

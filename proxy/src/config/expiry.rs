//! Certificates near their end, as `check` and a starting process report them.

use super::Config;

/// How long before a certificate expires `check` and the processes start warning: as the
/// shipped alert (deploy/prometheus/alerts.yml).
const WARN_WITHIN_SECS: i64 = 21 * 86_400;

impl Config {
    /// Certificates and CAs that have expired or expire within three weeks, one line each,
    /// naming the key. Not errors: an edge whose tunnel certificate expired still serves its
    /// cache and fallback, and a process refusing to start would serve nothing.
    pub fn certificate_warnings(&self, now: i64) -> Vec<String> {
        let files = match self {
            Config::Edge(e) => e.files(),
            Config::Origin(o) => o.files(),
        };
        let mut warnings = Vec::new();
        let certificates = |(k, f): &(String, &std::path::Path)| {
            (k.ends_with(".cert") || k.ends_with("ca")) && std::fs::metadata(f).is_ok_and(|m| m.is_file())
        };
        for (key, file) in files.into_iter().filter(certificates) {
            // Unreadable files are problems already; a certificate that does not parse fails to
            // load. Of a chain or a CA bundle, the first to expire.
            let Some(not_after) = crate::tls::file_expiry(file) else { continue };
            let on = crate::tls::date_of(not_after);
            let left = not_after - now;
            if left <= 0 {
                warnings.push(format!("{key}: {} expired on {on}", file.display()));
            } else if left < WARN_WITHIN_SECS {
                warnings.push(format!("{key}: {} expires on {on}, in {} days", file.display(), left / 86_400));
            }
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    use super::*;

    const DAY: i64 = 86_400;

    /// A CA valid for `ca_days` and an edge certificate from it valid for `leaf_days`, where
    /// conf/edge.yaml looks for them (../certs from conf/).
    fn certs(dir: &std::path::Path, ca_days: u64, leaf_days: u64) {
        let now = time::OffsetDateTime::now_utc();
        let day = Duration::from_secs(DAY as u64);
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        (ca.not_before, ca.not_after) = (now - day, now + day * ca_days as u32);
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, &ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["edge.railproxy.internal".to_string()]).unwrap();
        (leaf.not_before, leaf.not_after) = (now - day, now + day * leaf_days as u32);
        let leaf_pem = leaf.signed_by(&key, &issuer).unwrap().pem();
        let certs = dir.join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        std::fs::write(certs.join("ca.pem"), ca_pem).unwrap();
        std::fs::write(certs.join("edge.pem"), leaf_pem).unwrap();
        std::fs::write(certs.join("edge.key"), key.serialize_pem()).unwrap();
    }

    fn demo_edge(dir: &std::path::Path) -> Config {
        let text = include_str!("../../../conf/edge.yaml");
        std::fs::create_dir_all(dir.join("conf")).unwrap();
        Config::parse_in(text, &dir.join("conf")).expect("conf/edge.yaml")
    }

    #[test]
    fn certificates_and_cas_near_their_end_are_named_by_key() {
        let dir = tempfile::tempdir().unwrap();
        certs(dir.path(), 10, 400);
        let config = demo_edge(dir.path());
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        assert_eq!(config.certificate_warnings(now - 30 * DAY), Vec::<String>::new(), "40 days ahead");
        let soon = config.certificate_warnings(now);
        assert_eq!(soon.len(), 1, "{soon:?}");
        assert!(soon[0].starts_with("tunnel.ca: ") && soon[0].contains("ca.pem expires on "), "{soon:?}");
        assert!(soon[0].ends_with(", in 9 days") || soon[0].ends_with(", in 10 days"), "{soon:?}");
        let later = config.certificate_warnings(now + 390 * DAY);
        assert_eq!(later.len(), 2, "{later:?}");
        assert!(later[0].starts_with("tunnel.ca: ") && later[0].contains(" expired on "), "{later:?}");
        assert!(later[1].starts_with("tunnel.cert: ") && later[1].contains("edge.pem expires on "), "{later:?}");
    }
}

//! `origins.HOST.client_dictionaries`: a host's pages offered to browsers as RFC 9842
//! dictionaries, and answered with deltas against them (see `edge::browser_dictionaries`).

use std::time::Duration;

use serde_yaml::Value;

use super::reader::{Secs, Section};

/// A host's browser dictionaries. Off unless configured: see the README ("Deltas to browsers")
/// for what an operator accepts by turning them on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientDictionaries {
    /// How long a browser keeps a page as its dictionary: the `stale-while-revalidate` the edge
    /// gives pages that would otherwise be kept for no time at all. At most `delta.version_ttl`,
    /// which is how long the edge keeps the page to answer against it.
    pub lifetime: Duration,
    /// Path prefixes never offered nor answered with a delta: pages that reflect request input
    /// (a search's terms), where sizes on the wire could tell an observer what the page held.
    pub except: Vec<String>,
}

impl ClientDictionaries {
    /// `client_dictionaries: true`, `false`, or a map (`enabled`, `lifetime`, `except`).
    /// `version_ttl` is the default and the ceiling of `lifetime`.
    pub fn read(s: &Section<'_>, key: &str, version_ttl: Duration) -> Option<Self> {
        match s.value(key)? {
            Value::Bool(on) => on.then(|| ClientDictionaries { lifetime: version_ttl, except: Vec::new() }),
            _ => {
                let c = s.section(key);
                if !c.or("enabled", true) {
                    return None;
                }
                let lifetime = c.or("lifetime", Secs(version_ttl)).0;
                if lifetime < Duration::from_secs(1) {
                    c.problem("lifetime", "must be at least 1s");
                }
                if lifetime > version_ttl {
                    c.problem(
                        "lifetime",
                        format!(
                            "{}s is longer than delta.version_ttl ({}s), for which the edge keeps a page to answer against",
                            lifetime.as_secs(),
                            version_ttl.as_secs()
                        ),
                    );
                }
                let except: Vec<String> = c.list("except");
                if let Some(p) = except.iter().find(|p| !p.starts_with('/')) {
                    c.problem("except", format!("{p:?} must start with /"));
                }
                Some(ClientDictionaries { lifetime, except })
            }
        }
    }

    /// Whether pages under `path` may be dictionaries and deltas.
    pub fn covers(&self, path: &str) -> bool {
        !self.except.iter().any(|p| path.starts_with(p.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::reader::{Problems, parse_yaml};

    fn read(yaml: &str) -> (Option<ClientDictionaries>, Vec<String>) {
        let value = parse_yaml(yaml).unwrap();
        let problems = Problems::default();
        let got = {
            let root = Section::root(&value, &problems);
            ClientDictionaries::read(&root, "client_dictionaries", Duration::from_secs(600))
        };
        (got, problems.into_vec().into_iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn off_unless_turned_on() {
        assert_eq!(read("other: 1\n").0, None);
        assert_eq!(read("client_dictionaries: false\n").0, None);
        assert_eq!(read("client_dictionaries: {enabled: false}\n").0, None);
        let on = read("client_dictionaries: true\n").0.unwrap();
        assert_eq!(on.lifetime, Duration::from_secs(600));
        let (map, problems) = read("client_dictionaries: {lifetime: 5m, except: [/search]}\n");
        assert!(problems.is_empty(), "{problems:?}");
        let map = map.unwrap();
        assert_eq!(map.lifetime, Duration::from_secs(300));
        assert!(!map.covers("/search?q=x") && map.covers("/"));
    }

    #[test]
    fn bad_settings_name_their_key() {
        let (_, problems) = read("client_dictionaries: {lifetime: 1h, except: [search]}\n");
        assert!(problems.iter().any(|p| p.contains("client_dictionaries.lifetime") && p.contains("version_ttl")));
        assert!(problems.iter().any(|p| p.contains("client_dictionaries.except")));
        let (_, problems) = read("client_dictionaries: {lifetim: 1m}\n");
        assert!(problems.iter().any(|p| p.contains("lifetim")), "{problems:?}");
        let (_, problems) = read("client_dictionaries: yes please\n");
        assert!(!problems.is_empty());
    }
}

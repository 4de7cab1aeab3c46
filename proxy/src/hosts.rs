//! Which configured host serves a request: exact names, `*.example.com` wildcards (one or more
//! labels, the most specific wins) and `default` (anything else), as `hosts:` (origin) and
//! `origins:` (edge) are keyed; and, within a host, the longest matching path prefix.

use std::fmt;

/// A key of `hosts:` or `origins:`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// A name (or IP literal) as clients send it, lower case, without port.
    Exact(String),
    /// `*.example.com`: held as `.example.com`; matches names with one or more labels before it.
    Wildcard(String),
    /// `default`: any host no other key matches.
    Default,
}

impl HostPattern {
    pub fn parse(key: &str) -> Result<Self, String> {
        let key = key.trim().to_ascii_lowercase();
        if key == "default" {
            return Ok(HostPattern::Default);
        }
        let (wild, name) = match key.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, key.as_str()),
        };
        let ok = !name.is_empty()
            && name.parse::<std::net::IpAddr>().map_or_else(
                |_| {
                    name.split('.').all(|l| {
                        !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    })
                },
                |_| !wild,
            );
        if !ok {
            return Err(format!("{key:?} is not a host name, *.name (any subdomain) or default (any other host)"));
        }
        Ok(if wild { HostPattern::Wildcard(format!(".{name}")) } else { HostPattern::Exact(name.to_string()) })
    }

    /// How well this matches `host` (lower case, no port): higher is more specific.
    fn rank(&self, host: &str) -> Option<usize> {
        match self {
            HostPattern::Exact(name) => (name == host).then_some(usize::MAX),
            HostPattern::Wildcard(suffix) => {
                (host.len() > suffix.len() && host.ends_with(suffix.as_str())).then(|| suffix.matches('.').count())
            }
            HostPattern::Default => Some(0),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Wildcard(suffix) => write!(f, "*{suffix}"),
            HostPattern::Default => f.write_str("default"),
        }
    }
}

/// The entry whose pattern matches `host` best.
pub fn best<'a, T>(entries: impl IntoIterator<Item = (&'a HostPattern, T)>, host: &str) -> Option<T> {
    entries.into_iter().filter_map(|(p, t)| p.rank(host).map(|r| (r, t))).max_by_key(|(r, _)| *r).map(|(_, t)| t)
}

/// The entry whose prefix is the longest that `path` starts with.
pub fn longest_prefix<'a, T>(entries: impl IntoIterator<Item = (&'a str, T)>, path: &str) -> Option<T> {
    entries.into_iter().filter(|(p, _)| path.starts_with(p)).max_by_key(|(p, _)| p.len()).map(|(_, t)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Vec<HostPattern> {
        ["default", "*.example.com", "*.eu.example.com", "www.example.com", "127.0.0.1"]
            .iter()
            .map(|k| HostPattern::parse(k).unwrap())
            .collect()
    }

    fn pick(host: &str) -> String {
        let t = table();
        best(t.iter().map(|p| (p, p.to_string())), host).unwrap()
    }

    #[test]
    fn the_most_specific_pattern_wins() {
        assert_eq!(pick("www.example.com"), "www.example.com");
        assert_eq!(pick("shop.example.com"), "*.example.com");
        assert_eq!(pick("a.b.example.com"), "*.example.com", "one or more labels");
        assert_eq!(pick("shop.eu.example.com"), "*.eu.example.com");
        assert_eq!(pick("example.com"), "default", "a wildcard needs a label before it");
        assert_eq!(pick("badexample.com"), "default");
        assert_eq!(pick("127.0.0.1"), "127.0.0.1");
        let no_default: Vec<HostPattern> = table().into_iter().filter(|p| *p != HostPattern::Default).collect();
        assert_eq!(best(no_default.iter().map(|p| (p, ())), "other.org"), None);
    }

    #[test]
    fn bad_keys_are_refused() {
        for bad in ["", "*.", "*", "a..b", "*.127.0.0.1", "exa mple.com", "*.*.x"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(HostPattern::parse("WWW.Example.com").unwrap(), HostPattern::Exact("www.example.com".into()));
    }

    #[test]
    fn the_longest_prefix_wins() {
        let routes = [("/api/", 1), ("/api/v2/", 2), ("/", 3)];
        assert_eq!(longest_prefix(routes.iter().map(|(p, n)| (*p, *n)), "/api/v2/x"), Some(2));
        assert_eq!(longest_prefix(routes.iter().map(|(p, n)| (*p, *n)), "/api/v1"), Some(1));
        assert_eq!(longest_prefix(routes.iter().map(|(p, n)| (*p, *n)), "/apix"), Some(3));
        assert_eq!(longest_prefix(routes[..2].iter().map(|(p, n)| (*p, *n)), "/static"), None);
    }
}

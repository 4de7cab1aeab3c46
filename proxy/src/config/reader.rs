//! Reads a parsed YAML tree into typed settings, collecting every problem with its key path
//! instead of stopping at the first, and rejecting keys nobody asked for.

use std::cell::RefCell;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_yaml::{Mapping, Value};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `origins.localhost.listeners[0]`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// Parses YAML text; a syntax error is one problem at its line and column.
pub fn parse_yaml(text: &str) -> Result<Value, Vec<Problem>> {
    serde_yaml::from_str(text).map_err(|e| {
        let at = e.location().map(|l| format!("line {} column {}", l.line(), l.column())).unwrap_or_default();
        vec![Problem { path: at, message: format!("not valid YAML: {e}") }]
    })
}

/// Problems found so far; reading goes on after each.
#[derive(Debug, Default)]
pub struct Problems(RefCell<Vec<Problem>>);

impl Problems {
    pub fn add(&self, path: &str, message: impl Into<String>) {
        self.0.borrow_mut().push(Problem { path: path.to_string(), message: message.into() });
    }

    pub fn into_vec(self) -> Vec<Problem> {
        self.0.into_inner()
    }

    pub fn is_empty(&self) -> bool {
        self.0.borrow().is_empty()
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing".into(),
        Value::Bool(b) => format!("{b}"),
        Value::Number(n) => format!("{n}"),
        Value::String(s) => format!("{s:?}"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a map".into(),
        Value::Tagged(t) => format!("a {} tag", t.tag),
    }
}

/// A mapping in the file. Dropping it reports keys that were present but never read.
#[derive(Debug)]
pub struct Section<'a> {
    path: String,
    map: Option<&'a Mapping>,
    asked: RefCell<Vec<String>>,
    problems: &'a Problems,
}

impl<'a> Section<'a> {
    /// The document root, which must be a mapping.
    pub fn root(value: &'a Value, problems: &'a Problems) -> Self {
        Self::at(String::new(), Some(value), problems)
    }

    fn at(path: String, value: Option<&'a Value>, problems: &'a Problems) -> Self {
        let map = match value {
            None | Some(Value::Null) => None,
            Some(Value::Mapping(m)) => Some(m),
            Some(other) => {
                problems.add(&path, format!("expected a map of settings, found {}", describe(other)));
                None
            }
        };
        Section { path, map, asked: RefCell::new(Vec::new()), problems }
    }

    pub fn problem(&self, key: &str, message: impl Into<String>) {
        let path = if key.is_empty() { self.path.clone() } else { join(&self.path, key) };
        self.problems.add(&path, message);
    }

    fn raw(&self, key: &str) -> Option<&'a Value> {
        self.asked.borrow_mut().push(key.to_string());
        self.map?.get(key).filter(|v| !v.is_null())
    }

    /// The value as written, for settings passed through unread (a fleet's config overrides).
    pub fn value(&self, key: &str) -> Option<&'a Value> {
        self.raw(key)
    }

    /// True if the key is present (and not null).
    pub fn has(&self, key: &str) -> bool {
        self.raw(key).is_some()
    }

    /// A nested section; absent means empty.
    pub fn section(&self, key: &str) -> Section<'a> {
        Section::at(join(&self.path, key), self.raw(key), self.problems)
    }

    /// An optional value.
    pub fn opt<T: FromYaml>(&self, key: &str) -> Option<T> {
        let v = self.raw(key)?;
        match T::from_yaml(v) {
            Ok(t) => Some(t),
            Err(msg) => {
                self.problem(key, msg);
                None
            }
        }
    }

    /// A value with a default when absent (a bad value is a problem, not the default).
    pub fn or<T: FromYaml>(&self, key: &str, default: T) -> T {
        if self.has(key) { self.opt(key).unwrap_or(default) } else { default }
    }

    /// A required value.
    pub fn req<T: FromYaml>(&self, key: &str) -> Option<T> {
        if !self.has(key) {
            self.problem(key, format!("required ({})", T::EXPECTED));
            return None;
        }
        self.opt(key)
    }

    /// A list of values; a single value is taken as a list of one.
    pub fn list<T: FromYaml>(&self, key: &str) -> Vec<T> {
        let Some(v) = self.raw(key) else {
            return Vec::new();
        };
        let items: Vec<&Value> = match v {
            Value::Sequence(s) => s.iter().collect(),
            one => vec![one],
        };
        let mut out = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            match T::from_yaml(item) {
                Ok(t) => out.push(t),
                Err(msg) => self.problems.add(&format!("{}[{i}]", join(&self.path, key)), msg),
            }
        }
        out
    }

    /// A list that must have at least one valid entry: "required" when absent, "must not be
    /// empty" for `[]`; invalid entries are reported one by one and not again.
    pub fn req_list<T: FromYaml>(&self, key: &str, what: &str) -> Vec<T> {
        let present = self.raw(key).map(|v| !matches!(v, Value::Sequence(s) if s.is_empty()));
        let items = self.list(key);
        match present {
            None => self.problem(key, format!("required: {what}")),
            Some(false) => self.problem(key, format!("must not be empty: {what}")),
            Some(true) => {}
        }
        items
    }

    /// The `i`th item of the list under `key`, as a section of its own.
    pub fn item(&self, key: &str, i: usize, value: &'a Value) -> Section<'a> {
        Section::at(format!("{}[{i}]", join(&self.path, key)), Some(value), self.problems)
    }

    /// The entries of a map whose keys are names chosen by the user (hosts, listeners).
    pub fn entries(&self, key: &str) -> Vec<(String, Section<'a>)> {
        let path = join(&self.path, key);
        let Some(v) = self.raw(key) else {
            return Vec::new();
        };
        let Value::Mapping(m) = v else {
            self.problems.add(&path, format!("expected a map, found {}", describe(v)));
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in m {
            let name = match k {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => {
                    self.problems.add(&path, format!("{} is not a name", describe(other)));
                    continue;
                }
            };
            out.push((name.clone(), Section::at(join(&path, &name), Some(v), self.problems)));
        }
        out
    }
}

impl Drop for Section<'_> {
    fn drop(&mut self) {
        let Some(map) = self.map else { return };
        let asked = self.asked.borrow();
        for key in map.keys() {
            let name = match key {
                Value::String(s) => s.clone(),
                other => describe(other),
            };
            if !asked.contains(&name) {
                let mut known: Vec<&str> = asked.iter().map(String::as_str).collect();
                known.sort_unstable();
                known.dedup();
                self.problems.add(&join(&self.path, &name), format!("unknown key (known here: {})", known.join(", ")));
            }
        }
    }
}

/// A type that can be read from one YAML value.
pub trait FromYaml: Sized {
    /// What the value should look like, for "required" messages.
    const EXPECTED: &'static str;
    fn from_yaml(v: &Value) -> Result<Self, String>;
}

fn as_text(v: &Value, expected: &str) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(format!("expected {expected}, found {}", describe(other))),
    }
}

impl FromYaml for String {
    const EXPECTED: &'static str = "a string";
    fn from_yaml(v: &Value) -> Result<Self, String> {
        let s = as_text(v, Self::EXPECTED)?;
        if s.trim().is_empty() { Err("must not be empty".into()) } else { Ok(s) }
    }
}

impl FromYaml for PathBuf {
    const EXPECTED: &'static str = "a file path";
    fn from_yaml(v: &Value) -> Result<Self, String> {
        String::from_yaml(v).map(PathBuf::from)
    }
}

impl FromYaml for bool {
    const EXPECTED: &'static str = "true or false";
    fn from_yaml(v: &Value) -> Result<Self, String> {
        v.as_bool().ok_or_else(|| format!("expected true or false, found {}", describe(v)))
    }
}

impl FromYaml for u64 {
    const EXPECTED: &'static str = "a whole number";
    fn from_yaml(v: &Value) -> Result<Self, String> {
        v.as_u64().ok_or_else(|| format!("expected a whole number, found {}", describe(v)))
    }
}

impl FromYaml for usize {
    const EXPECTED: &'static str = "a whole number";
    fn from_yaml(v: &Value) -> Result<Self, String> {
        u64::from_yaml(v).and_then(|n| usize::try_from(n).map_err(|_| "too large".into()))
    }
}

impl FromYaml for u32 {
    const EXPECTED: &'static str = "a whole number";
    fn from_yaml(v: &Value) -> Result<Self, String> {
        u64::from_yaml(v).and_then(|n| u32::try_from(n).map_err(|_| "too large".into()))
    }
}

impl FromYaml for i32 {
    const EXPECTED: &'static str = "a whole number";
    fn from_yaml(v: &Value) -> Result<Self, String> {
        v.as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| format!("expected a whole number, found {}", describe(v)))
    }
}

impl FromYaml for SocketAddr {
    const EXPECTED: &'static str = "an address such as 127.0.0.1:8080";
    fn from_yaml(v: &Value) -> Result<Self, String> {
        let s = as_text(v, Self::EXPECTED)?;
        s.trim().parse().map_err(|_| format!("{s:?} is not an IP address and port such as 127.0.0.1:8080"))
    }
}

/// An address block (`10.0.0.0/8`, `2001:db8::/32`); a bare address is a block of one.
impl FromYaml for ipnet::IpNet {
    const EXPECTED: &'static str = "an address block such as 10.0.0.0/8 or an address";
    fn from_yaml(v: &Value) -> Result<Self, String> {
        let s = as_text(v, Self::EXPECTED)?;
        let s = s.trim();
        match s.parse::<ipnet::IpNet>() {
            Ok(net) if net.trunc() != net => {
                Err(format!("{s:?} has bits set past its prefix length: did you mean {}?", net.trunc()))
            }
            Ok(net) => Ok(net),
            Err(_) => s
                .parse::<std::net::IpAddr>()
                .map(ipnet::IpNet::from)
                .map_err(|_| format!("{s:?} is not an address block such as 10.0.0.0/8 or an address")),
        }
    }
}

/// A byte size: a number, or a string with a binary suffix (`64k`, `8M`, `1G`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromYaml for ByteSize {
    const EXPECTED: &'static str = "a size such as 65536, 512k, 8M or 1G";
    fn from_yaml(v: &Value) -> Result<Self, String> {
        match v {
            Value::Number(_) => u64::from_yaml(v).map(ByteSize),
            Value::String(s) => crate::units::parse_size(s).map(ByteSize),
            other => Err(format!("expected {}, found {}", Self::EXPECTED, describe(other))),
        }
    }
}

/// A duration: a number of seconds, or a string with a unit (`250ms`, `5s`, `2m`, `1h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Secs(pub Duration);

impl FromYaml for Secs {
    const EXPECTED: &'static str = "a duration such as 250ms, 5s, 2m or 1h";
    fn from_yaml(v: &Value) -> Result<Self, String> {
        match v {
            Value::Number(_) => u64::from_yaml(v).map(|n| Secs(Duration::from_secs(n))),
            Value::String(s) => crate::units::parse_duration(s).map(Secs),
            other => Err(format!("expected {}, found {}", Self::EXPECTED, describe(other))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(yaml: &str, f: impl FnOnce(&Section<'_>)) -> Vec<String> {
        let v: Value = serde_yaml::from_str(yaml).unwrap();
        let p = Problems::default();
        {
            let root = Section::root(&v, &p);
            f(&root);
        }
        p.into_vec().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn collects_every_problem_with_paths() {
        let problems = read("a: x\nb: {c: -1, d: [1.2.3.4:5, nope]}\nextra: 1\n", |r| {
            let _: Option<u64> = r.opt("a");
            let b = r.section("b");
            let _: Option<u64> = b.opt("c");
            let _: Vec<SocketAddr> = b.list("d");
            let _: Option<String> = r.req("missing");
        });
        assert_eq!(
            problems,
            vec![
                "a: expected a whole number, found \"x\"",
                "b.c: expected a whole number, found -1",
                "b.d[1]: \"nope\" is not an IP address and port such as 127.0.0.1:8080",
                "missing: required (a string)",
                "extra: unknown key (known here: a, b, missing)",
            ]
        );
    }

    #[test]
    fn required_lists_report_once() {
        let problems = read("a: [x]\nb: []\n", |r| {
            let _: Vec<SocketAddr> = r.req_list("a", "addresses");
            let _: Vec<SocketAddr> = r.req_list("b", "addresses");
            let _: Vec<SocketAddr> = r.req_list("c", "addresses");
        });
        assert_eq!(
            problems,
            vec![
                "a[0]: \"x\" is not an IP address and port such as 127.0.0.1:8080",
                "b: must not be empty: addresses",
                "c: required: addresses",
            ]
        );
    }

    #[test]
    fn sizes_and_durations() {
        let problems = read("s: 8M\nn: 100\nd: 250ms\ne: 3\nbad: 5 parsecs\n", |r| {
            assert_eq!(r.opt::<ByteSize>("s"), Some(ByteSize(8 << 20)));
            assert_eq!(r.opt::<ByteSize>("n"), Some(ByteSize(100)));
            assert_eq!(r.opt::<Secs>("d"), Some(Secs(Duration::from_millis(250))));
            assert_eq!(r.opt::<Secs>("e"), Some(Secs(Duration::from_secs(3))));
            assert_eq!(r.opt::<Secs>("bad"), None);
        });
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("bad: "), "{problems:?}");
    }

    #[test]
    fn user_named_entries() {
        let problems = read("hosts:\n  a.example: {port: 1}\n  127.0.0.1: {port: 2, typo: 3}\n", |r| {
            let entries = r.entries("hosts");
            let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["a.example", "127.0.0.1"]);
            for (_, s) in &entries {
                let _: Option<u64> = s.opt("port");
            }
        });
        assert_eq!(problems, vec!["hosts.127.0.0.1.typo: unknown key (known here: port)"]);
    }
}

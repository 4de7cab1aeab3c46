//! Configuration: one YAML file per process, parsed from a string, validated, every problem
//! reported at once with its key path. Relative paths in a file are relative to the folder the
//! file is in, so a rendered config folder works wherever it is installed.

pub mod client_dictionaries;
mod common;
pub mod connectors;
pub mod edge;
mod expiry;
pub mod limits;
pub mod origin;
pub mod reader;
pub mod upstream;

use std::fmt;
use std::path::{Path, PathBuf};

pub use common::{DeltaSettings, ServerSettings, WebSocketSettings};
pub use edge::EdgeConfig;
pub use origin::OriginConfig;
use reader::{Problem, Problems, Section};

/// Which side of the tunnel a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The reverse proxy near users.
    Edge,
    /// The listener beside the origin's backends.
    Origin,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Edge => "edge",
            Mode::Origin => "origin",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A whole configuration file.
#[derive(Debug, Clone)]
pub enum Config {
    Edge(Box<EdgeConfig>),
    Origin(Box<OriginConfig>),
}

impl Config {
    pub fn mode(&self) -> Mode {
        match self {
            Config::Edge(_) => Mode::Edge,
            Config::Origin(_) => Mode::Origin,
        }
    }

    /// Reads and validates a file.
    /// Reads and checks a file, resolving the names it configures.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with(path, true)
    }

    /// As [`Config::load`]; `resolve: false` checks everything but whether names resolve here
    /// (`fleet render`: backends' names resolve where the listeners run, not where one renders).
    pub fn load_with(path: &Path, resolve: bool) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            problems: vec![Problem { path: String::new(), message: format!("cannot read: {e}") }],
        })?;
        // Absolute, so that paths stay right when a daemon changes its working directory.
        let base = std::path::absolute(path.parent().unwrap_or(Path::new(""))).unwrap_or_default();
        let error = |problems| ConfigError { file: path.display().to_string(), problems };
        let mut config = Self::parse_in(&text, &base).map_err(error)?;
        if !resolve {
            return Ok(config);
        }
        let problems = config.resolve_names();
        if problems.is_empty() { Ok(config) } else { Err(error(problems)) }
    }

    /// Resolves every configured name once: a name that does not resolve (and is not marked
    /// optional) is a problem. The edge's listeners become the addresses their names stand for.
    fn resolve_names(&mut self) -> Vec<Problem> {
        let (dns, names) = match self {
            Config::Edge(e) => (&e.dns, e.names()),
            Config::Origin(o) => (&o.dns, o.names()),
        };
        let mut problems: Vec<Problem> = crate::resolve::Names::check_blocking(dns, &names)
            .into_iter()
            .map(|(path, message)| Problem { path, message })
            .collect();
        if let Config::Edge(e) = self
            && problems.is_empty()
        {
            let dns = e.dns.clone();
            for route in &mut e.origins {
                match crate::resolve::Names::resolve_all_blocking(&dns, &route.listener_names) {
                    Ok(addrs) => route.listeners = addrs,
                    Err(message) => {
                        problems.push(Problem { path: format!("origins.{}.listeners", route.pattern), message })
                    }
                }
            }
        }
        problems
    }

    /// Parses and validates YAML text; relative paths are relative to the working directory.
    pub fn parse(text: &str) -> Result<Self, Vec<Problem>> {
        Self::parse_in(text, Path::new(""))
    }

    /// Parses and validates YAML text whose relative paths are relative to `base`.
    pub fn parse_in(text: &str, base: &Path) -> Result<Self, Vec<Problem>> {
        let value = reader::parse_yaml(text)?;
        let problems = Problems::default();
        let mut config = {
            let root = Section::root(&value, &problems);
            match root.req::<String>("mode").as_deref() {
                Some("edge") => Some(Config::Edge(Box::new(EdgeConfig::read(&root)))),
                Some("origin") => Some(Config::Origin(Box::new(OriginConfig::read(&root)))),
                Some(other) => {
                    root.problem("mode", format!("{other:?} is not a mode (edge or origin)"));
                    None
                }
                None => None,
            }
        };
        if let Some(c) = &mut config {
            for p in c.paths_mut() {
                rebase(p, base);
            }
            c.validate(&problems);
        }
        match config {
            Some(c) if problems.is_empty() => Ok(c),
            _ => Err(problems.into_vec()),
        }
    }

    /// Every file path in the configuration.
    fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        match self {
            Config::Edge(e) => e.paths_mut(),
            Config::Origin(o) => o.paths_mut(),
        }
    }

    /// Checks that need the file system: certificates and keys must be readable.
    fn validate(&self, problems: &Problems) {
        let files: Vec<(String, &Path)> = match self {
            Config::Edge(e) => e.files(),
            Config::Origin(o) => o.files(),
        };
        // An empty path is a required key that is missing, reported as such already.
        let mut readable = Vec::new();
        for (key, file) in files.into_iter().filter(|(_, f)| !f.as_os_str().is_empty()) {
            match std::fs::File::open(file) {
                Ok(_) => readable.push((key, file)),
                Err(e) => problems.add(&key, format!("cannot read {}: {e}", file.display())),
            }
        }
        // A certificate and the key beside it must make a pair, or the process would fail to
        // start (or, for the edge's client certificate, every tunnel handshake would). Only
        // files of a certificate's size are read: a device or a huge file is left to fail at
        // start rather than stall `check`.
        let small_file = |f: &Path| std::fs::metadata(f).is_ok_and(|m| m.is_file() && m.len() <= 1 << 20);
        for (cert_key, cert) in readable.iter().filter(|(k, f)| k.ends_with(".cert") && small_file(f)) {
            let key_key = cert_key.replace(".cert", ".key");
            let Some(&(_, key)) = readable.iter().find(|(k, f)| *k == key_key && small_file(f)) else { continue };
            if let Err(e) = crate::tls::check_pair(cert, key) {
                problems.add(cert_key, format!("{e:#}"));
            }
        }
    }
}

/// `path` relative to `base` unless absolute (or empty: a missing required key).
fn rebase(path: &mut PathBuf, base: &Path) {
    if path.is_relative() && !path.as_os_str().is_empty() && !base.as_os_str().is_empty() {
        *path = base.join(&*path);
    }
}

/// A configuration that did not validate.
#[derive(Debug)]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(f, "{}: {n} problem{}", self.file, if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

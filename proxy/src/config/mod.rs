//! Configuration: one YAML file per process, parsed from a string, validated, every problem
//! reported at once with its key path. Relative paths in a file are relative to the folder the
//! file is in, so a rendered config folder works wherever it is installed.

mod common;
pub mod edge;
pub mod limits;
pub mod origin;
pub mod reader;

use std::fmt;
use std::path::{Path, PathBuf};

pub use common::ServerSettings;
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

/// How long before a certificate expires `check` and the processes start warning: as the
/// shipped alert (deploy/prometheus/alerts.yml).
const EXPIRY_WARNING_SECS: i64 = 21 * 86_400;

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
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            problems: vec![Problem { path: String::new(), message: format!("cannot read: {e}") }],
        })?;
        // Absolute, so that paths stay right when a daemon changes its working directory.
        let base = std::path::absolute(path.parent().unwrap_or(Path::new(""))).unwrap_or_default();
        Self::parse_in(&text, &base).map_err(|problems| ConfigError { file: path.display().to_string(), problems })
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

    /// Certificates that have expired or expire within three weeks (the expiry alert's warning),
    /// one line each, naming the key. Not errors: an edge whose tunnel certificate expired still
    /// serves its cache and fallback, and a process refusing to start would serve nothing.
    pub fn certificate_warnings(&self, now: i64) -> Vec<String> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        let files = match self {
            Config::Edge(e) => e.files(),
            Config::Origin(o) => o.files(),
        };
        let mut warnings = Vec::new();
        for (key, file) in files.into_iter().filter(|(k, _)| k.ends_with(".cert")) {
            // Unreadable files are problems already; a certificate that does not parse fails to load.
            let Ok(der) = CertificateDer::from_pem_file(file) else { continue };
            let Ok(not_after) = crate::tls::not_after(&der) else { continue };
            let on = time::OffsetDateTime::from_unix_timestamp(not_after)
                .map_or_else(|_| "?".into(), |t| t.date().to_string());
            let left = not_after - now;
            if left <= 0 {
                warnings.push(format!("{key}: {} expired on {on}", file.display()));
            } else if left < EXPIRY_WARNING_SECS {
                warnings.push(format!("{key}: {} expires on {on}, in {} days", file.display(), left / 86_400));
            }
        }
        warnings
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
        let files: Vec<(&str, &Path)> = match self {
            Config::Edge(e) => e.files(),
            Config::Origin(o) => o.files(),
        };
        // An empty path is a required key that is missing, reported as such already.
        for (key, file) in files.into_iter().filter(|(_, f)| !f.as_os_str().is_empty()) {
            if let Err(e) = std::fs::File::open(file) {
                problems.add(key, format!("cannot read {}: {e}", file.display()));
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

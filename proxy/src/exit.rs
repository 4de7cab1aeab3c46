//! Process exit statuses (BSD sysexits, as linkerd and most daemons use) and the error that
//! carries one to `main`.

use std::fmt;
use std::process::ExitCode;

/// Something failed that has no better code.
pub const FAILURE: u8 = 1;
/// Bad configuration or command-line usage.
pub const USAGE: u8 = 64;
/// Input data was malformed (e.g. a delta that does not verify).
pub const DATA_ERR: u8 = 65;
/// An input file could not be read.
pub const NO_INPUT: u8 = 66;
/// An output file could not be created.
pub const CANT_CREATE: u8 = 73;

/// An error with the exit status it should end the process with.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn new(code: u8, error: impl Into<anyhow::Error>) -> Self {
        Failure { code, error: error.into() }
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure { code: FAILURE, error }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `{:#}` prints the whole context chain on one line: "reading X: No such file".
        write!(f, "{:#}", self.error)
    }
}

/// Result of a command.
pub type CmdResult = Result<(), Failure>;

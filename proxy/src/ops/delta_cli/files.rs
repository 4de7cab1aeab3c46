//! Reading inputs and writing outputs for the delta commands, with `-` for stdout.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use bytes::Bytes;

use crate::exit::{CANT_CREATE, Failure, NO_INPUT};

pub fn read(path: &Path) -> Result<Bytes, Failure> {
    std::fs::read(path)
        .map(Bytes::from)
        .with_context(|| format!("reading {}", path.display()))
        .map_err(|e| Failure::new(NO_INPUT, e))
}

pub fn write(path: &Path, data: &[u8]) -> Result<(), Failure> {
    let result = if path.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        out.write_all(data).and_then(|()| out.flush())
    } else {
        std::fs::write(path, data)
    };
    result.with_context(|| format!("writing {}", path.display())).map_err(|e| Failure::new(CANT_CREATE, e))
}

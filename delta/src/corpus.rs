//! Real page versions read from a corpus folder: `000.*`, `001.*`, … in order.

use std::io;
use std::path::{Path, PathBuf};

/// One source of consecutive versions: `000.*`, `001.*`, … in one folder.
#[derive(Debug, Clone)]
pub struct VersionSet {
    /// Folder name.
    pub name: String,
    /// Bodies in order.
    pub versions: Vec<Vec<u8>>,
}

/// Reads version sets from `dir`: the folder itself if it holds `NNN.*` files, else each
/// sub-folder that does, in name order.
pub fn load_version_sets(dir: &Path) -> io::Result<Vec<VersionSet>> {
    let files = numbered_files(dir)?;
    if !files.is_empty() {
        return Ok(vec![read_set(dir, &files)?]);
    }
    let mut subdirs: Vec<PathBuf> =
        std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
    subdirs.sort();
    let mut sets = Vec::new();
    for sub in subdirs {
        let files = numbered_files(&sub)?;
        if !files.is_empty() {
            sets.push(read_set(&sub, &files)?);
        }
    }
    if sets.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{}: no 000.*, 001.*, … version files in it or its sub-folders", dir.display()),
        ));
    }
    Ok(sets)
}

fn numbered_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.split('.').next())
                    .is_some_and(|stem| !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn read_set(dir: &Path, files: &[PathBuf]) -> io::Result<VersionSet> {
    let versions = files
        .iter()
        .map(|f| std::fs::read(f).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", f.display()))))
        .collect::<io::Result<Vec<_>>>()?;
    let name = dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
    Ok(VersionSet { name, versions })
}

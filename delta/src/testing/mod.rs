//! Test support, built only with the `testing` feature: generated page versions, the dev
//! corpus when the checkout has one, and the bodies of the fuzz targets.

pub mod fuzzing;
pub mod pages;

use std::path::{Path, PathBuf};

pub use pages::{PageGenerator, Rng};

use crate::corpus::VersionSet;

/// The development corpus (`../shared/corpus/dev` beside the repository), if this checkout
/// has one. `manifest_dir` is a crate's `CARGO_MANIFEST_DIR`.
pub fn dev_corpus(manifest_dir: &str) -> Option<PathBuf> {
    let mut dir = Path::new(manifest_dir);
    // Walk up to the workspace root (the folder with Cargo.lock), then beside it.
    while !dir.join("Cargo.lock").exists() {
        dir = dir.parent()?;
    }
    let corpus = dir.parent()?.join("shared/corpus/dev");
    corpus.is_dir().then_some(corpus)
}

/// Generated version sets in the shape of the dev corpus: small and large HTML pages.
pub fn generated_sets() -> Vec<VersionSet> {
    vec![
        VersionSet { name: "generated-10k".into(), versions: PageGenerator::versions(1, 10_000, 30) },
        VersionSet { name: "generated-100k".into(), versions: PageGenerator::versions(2, 100_000, 30) },
        VersionSet { name: "generated-700k".into(), versions: PageGenerator::versions(3, 700_000, 8) },
    ]
}

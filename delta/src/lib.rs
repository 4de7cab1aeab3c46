//! railproxy's delta library: what a page becomes when it crosses between edge and origin,
//! with no sockets.
//!
//! * [`codec`]: RFC 9842 `dcz` deltas and `zstd` bodies, one-shot and streaming, verified.
//! * [`version`]: version ids (SHA-256 of a body) and their `Available-Dictionary` form.
//! * [`store`]: byte-bounded version stores behind one trait.
//! * [`policy`]: which content types are encoded.
//! * [`corpus`]: real page versions read from a folder, for `railproxy delta bench`.
//! * `testing` (feature `testing`): generated page versions and the fuzz targets' bodies, for
//!   tests, benchmarks and the demo; never in the `railproxy` binary's own code paths.

pub mod codec;
pub mod corpus;
pub mod error;
pub mod policy;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod version;

pub use error::{Error, Result};
pub use version::{Version, VersionId};

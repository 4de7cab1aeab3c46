//! railproxy's tunnel library: what crosses between edge and origin, with no sockets: codec, version ids, stores.
//!
//! * [`codec`]: RFC 9842 `dcz` deltas and `zstd` bodies, one-shot and streaming, verified.
//! * [`version`]: version ids (SHA-256 of a body) and their `Available-Dictionary` form.
//! * [`store`]: byte-bounded version stores behind one trait.
//! * [`protocol`], [`policy`]: tunnel header names; which content types are encoded.
//! * [`sample`]: realistic page versions for tests, benchmarks and the demo.
//! * [`fuzzing`]: the fuzz targets' bodies, shared with the tests that replay their seeds.

pub mod codec;
pub mod error;
pub mod fuzzing;
pub mod policy;
pub mod protocol;
pub mod sample;
pub mod store;
pub mod version;

pub use error::{Error, Result};
pub use version::{Version, VersionId};

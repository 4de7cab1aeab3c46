//! The one error type of the tunnel crate.

use crate::version::VersionId;

/// Everything the tunnel library can refuse.
///
/// Decoding errors are split finely because the edge reacts differently to them: a
/// [`Error::BaseMismatch`] seen before any output is worth a retry without a base, while
/// anything else means the bytes on the wire are wrong and nothing decoded may be served.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// The dcz header names a dictionary other than the base the decoder was given.
    #[error("delta is against base {found}, but the base held is {expected}")]
    BaseMismatch {
        /// Version id of the base the decoder holds.
        expected: VersionId,
        /// Version id named in the delta's header.
        found: VersionId,
    },
    /// The first bytes are not a dcz header or not a zstd frame.
    #[error("not a {encoding} body: {detail}")]
    BadHeader {
        /// Content encoding that was expected.
        encoding: &'static str,
        /// What was wrong.
        detail: &'static str,
    },
    /// The frame does not carry zstd's content checksum, so the output could not be verified.
    #[error("zstd frame has no content checksum; refusing unverifiable output")]
    MissingChecksum,
    /// The input ended before the frame did.
    #[error("input truncated: the zstd frame did not end")]
    Truncated,
    /// Bytes follow the end of the frame.
    #[error("{0} unexpected bytes after the end of the zstd frame")]
    TrailingData(usize),
    /// zstd's content checksum does not match the decoded output.
    #[error("content checksum mismatch: decoded bytes are not what was encoded")]
    ChecksumMismatch,
    /// The frame asks for a window larger than the limit for its base.
    #[error("frame window exceeds the limit of {limit} bytes")]
    WindowTooLarge {
        /// Largest window accepted for this base.
        limit: u64,
    },
    /// Decoding would produce more than the configured limit (decompression bomb).
    #[error("decoded output exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The configured output limit.
        limit: u64,
    },
    /// zstd rejected the frame as corrupt.
    #[error("corrupt zstd data: {0}")]
    Corrupt(&'static str),
    /// zstd failed while encoding (allocation failure or bad parameters).
    #[error("zstd encoder failed: {0}")]
    Encode(&'static str),
    /// The decoder or encoder was used after it finished or failed.
    #[error("codec used after it {0}")]
    Finished(&'static str),
    /// A version id could not be parsed.
    #[error("invalid version id: {0}")]
    InvalidVersionId(&'static str),
}

impl Error {
    /// True when the error is a wrong base seen in the header, before any byte was produced:
    /// the one case in which asking again without a base is the right reaction.
    pub fn is_base_mismatch(&self) -> bool {
        matches!(self, Error::BaseMismatch { .. })
    }
}

/// Result alias of the tunnel crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

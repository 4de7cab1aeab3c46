//! The delta codec: RFC 9842 `dcz` bodies and plain `zstd` bodies, one-shot and streaming.
//!
//! Pure: buffers in, buffers out, no I/O, so it can be unit-tested and fuzzed alone.
//!
//! A dcz body is the 40-byte dcz header (a zstd skippable frame holding the SHA-256 of the
//! base) followed by one zstd frame compressed with the base as a raw prefix
//! (`zstd --patch-from`), with zstd's content checksum. The decoder checks the header names
//! the base it holds, that the frame carries a checksum, that the checksum matches, that
//! the frame ends and nothing follows it but, optionally, a version frame (a zstd skippable
//! frame naming the decoded body's SHA-256, which standard decoders skip), and that the output
//! stays under a limit.
//!
//! In place of a dcz body, a decoder against a base also takes the 40-byte unchanged frame
//! naming that base (see [`UNCHANGED_MAGIC`]): its output is the base itself.

mod context;
mod decoder;
mod encoder;
mod header;
mod params;
mod sampled;
pub mod segments;
mod sequences;

pub use decoder::{DecodeOptions, Decoder, decode, decode_with, decompress};
pub use encoder::{Encoder, compress, encode, encode_with};
pub use header::{
    DCZ_HEADER_LEN, DCZ_MAGIC, UNCHANGED_LEN, UNCHANGED_MAGIC, VERSION_FRAME_LEN, VERSION_FRAME_MAGIC, dcz_header,
    parse_dcz_header, parse_unchanged_frame, parse_version_frame, unchanged_frame, version_frame,
};
pub use params::{DeltaParams, Strategy, Tuning, dcz_window_limit};

/// zstd level for bodies sent in full: zstd's default, ~2.5× faster than gzip -6 and smaller.
pub const FULL_LEVEL: i32 = 3;

/// Content codings railproxy puts on the tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// RFC 9842 dictionary-compressed zstd: a delta against a base.
    Dcz,
    /// RFC 8878 zstd: the full body, compressed.
    Zstd,
    /// The body as the backend sent it.
    Identity,
}

impl Encoding {
    /// The `Content-Encoding` token (and metric label).
    pub const fn as_str(self) -> &'static str {
        match self {
            Encoding::Dcz => "dcz",
            Encoding::Zstd => "zstd",
            Encoding::Identity => "identity",
        }
    }

    /// Parses a `Content-Encoding` value railproxy can decode.
    pub fn from_token(token: &str) -> Option<Self> {
        let token = token.trim();
        [Encoding::Dcz, Encoding::Zstd, Encoding::Identity].into_iter().find(|e| token.eq_ignore_ascii_case(e.as_str()))
    }
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

//! The dcz header (RFC 9842 §4.2) and the bits of the zstd frame header the decoder checks.

use crate::version::{VERSION_ID_LEN, VersionId};

/// A zstd skippable frame (magic `0x184D2A5E`, little-endian) whose 32-byte payload is the
/// SHA-256 of the dictionary.
pub const DCZ_MAGIC: [u8; 8] = [0x5e, 0x2a, 0x4d, 0x18, 0x20, 0x00, 0x00, 0x00];
/// Length of the dcz header: the magic and the dictionary hash.
pub const DCZ_HEADER_LEN: usize = DCZ_MAGIC.len() + VERSION_ID_LEN;

/// Magic number of a zstd frame (RFC 8878 §3.1.1), little-endian.
pub(crate) const ZSTD_FRAME_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Bytes of a zstd frame the decoder inspects before decoding: magic and descriptor.
pub(crate) const ZSTD_FRAME_PEEK: usize = 5;
const CONTENT_CHECKSUM_FLAG: u8 = 0x04;

/// The dcz header for a delta against `base`.
pub fn dcz_header(base: &VersionId) -> [u8; DCZ_HEADER_LEN] {
    let mut h = [0u8; DCZ_HEADER_LEN];
    h[..DCZ_MAGIC.len()].copy_from_slice(&DCZ_MAGIC);
    h[DCZ_MAGIC.len()..].copy_from_slice(base.as_bytes());
    h
}

/// The dictionary a dcz header names, or `None` if `header` is not a dcz header.
pub fn parse_dcz_header(header: &[u8; DCZ_HEADER_LEN]) -> Option<VersionId> {
    if header[..DCZ_MAGIC.len()] != DCZ_MAGIC {
        return None;
    }
    let mut id = [0u8; VERSION_ID_LEN];
    id.copy_from_slice(&header[DCZ_MAGIC.len()..]);
    Some(VersionId::from_bytes(id))
}

/// What the first bytes of a zstd frame say.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FramePeek {
    NotZstd,
    NoChecksum,
    Ok,
}

pub(crate) fn peek_frame(head: &[u8; ZSTD_FRAME_PEEK]) -> FramePeek {
    if head[..4] != ZSTD_FRAME_MAGIC {
        FramePeek::NotZstd
    } else if head[4] & CONTENT_CHECKSUM_FLAG == 0 {
        FramePeek::NoChecksum
    } else {
        FramePeek::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let id = VersionId::of(b"base");
        let h = dcz_header(&id);
        assert_eq!(&h[..8], &[0x5e, 0x2a, 0x4d, 0x18, 0x20, 0, 0, 0]);
        assert_eq!(parse_dcz_header(&h), Some(id));
        let mut bad = h;
        bad[3] ^= 1;
        assert_eq!(parse_dcz_header(&bad), None);
    }
}

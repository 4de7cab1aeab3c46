//! The dcz header (RFC 9842 §4.2) and the bits of the zstd frame header the decoder checks.

use crate::version::{VERSION_ID_LEN, VersionId};

/// A zstd skippable frame (magic `0x184D2A5E`, little-endian) whose 32-byte payload is the
/// SHA-256 of the dictionary.
pub const DCZ_MAGIC: [u8; 8] = [0x5e, 0x2a, 0x4d, 0x18, 0x20, 0x00, 0x00, 0x00];
/// Length of the dcz header: the magic and the dictionary hash.
pub const DCZ_HEADER_LEN: usize = DCZ_MAGIC.len() + VERSION_ID_LEN;

/// A zstd skippable frame (magic `0x184D2A5C`) after the body's frame, carrying the SHA-256 of the
/// decoded body: railproxy's origin sends the id it computed, so the edge need not hash again.
/// Standard dcz and zstd decoders skip it.
pub const VERSION_FRAME_MAGIC: [u8; 8] = [0x5c, 0x2a, 0x4d, 0x18, 0x20, 0x00, 0x00, 0x00];
/// Length of the version frame: magic, size, id.
pub const VERSION_FRAME_LEN: usize = VERSION_FRAME_MAGIC.len() + VERSION_ID_LEN;

/// The version frame naming `id`.
pub fn version_frame(id: &VersionId) -> [u8; VERSION_FRAME_LEN] {
    naming(&VERSION_FRAME_MAGIC, id)
}

/// The id a version frame carries, or `None` if `frame` is not one.
pub fn parse_version_frame(frame: &[u8; VERSION_FRAME_LEN]) -> Option<VersionId> {
    named(&VERSION_FRAME_MAGIC, frame)
}

/// A zstd skippable frame (magic `0x184D2A5D`) that stands instead of a whole dcz body: "the new
/// body is byte for byte the base named here". The origin sends it when the backend's body
/// equals the version the edge named, so nothing is encoded, sent or decoded but these 40
/// bytes. Only a railproxy edge holding that base reads it; it is never a client's body.
pub const UNCHANGED_MAGIC: [u8; 8] = [0x5d, 0x2a, 0x4d, 0x18, 0x20, 0x00, 0x00, 0x00];
/// Length of the unchanged frame: magic, size, the base's id (the same as a dcz header's).
pub const UNCHANGED_LEN: usize = UNCHANGED_MAGIC.len() + VERSION_ID_LEN;

/// The unchanged frame for a body equal to `base`.
pub fn unchanged_frame(base: &VersionId) -> [u8; UNCHANGED_LEN] {
    naming(&UNCHANGED_MAGIC, base)
}

/// The base an unchanged frame names, or `None` if `frame` is not one.
pub fn parse_unchanged_frame(frame: &[u8; UNCHANGED_LEN]) -> Option<VersionId> {
    named(&UNCHANGED_MAGIC, frame)
}

/// Magic number of a zstd frame (RFC 8878 §3.1.1), little-endian.
pub(crate) const ZSTD_FRAME_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Bytes of a zstd frame that say how long its header is: magic and descriptor.
pub(crate) const ZSTD_FRAME_PREFIX: usize = 5;
/// Longest zstd frame header: magic, descriptor, window, 4-byte dictionary id, 8-byte size.
pub(crate) const ZSTD_FRAME_HEADER_MAX: usize = 18;
const CONTENT_CHECKSUM_FLAG: u8 = 0x04;

/// The dcz header for a delta against `base`.
pub fn dcz_header(base: &VersionId) -> [u8; DCZ_HEADER_LEN] {
    naming(&DCZ_MAGIC, base)
}

/// The dictionary a dcz header names, or `None` if `header` is not a dcz header.
pub fn parse_dcz_header(header: &[u8; DCZ_HEADER_LEN]) -> Option<VersionId> {
    named(&DCZ_MAGIC, header)
}

/// The three frames railproxy writes (dcz header, version frame, unchanged frame) are all a
/// skippable frame's 8 bytes of magic and size, then a 32-byte id.
const NAMING_LEN: usize = 8 + VERSION_ID_LEN;

fn naming(magic: &[u8; 8], id: &VersionId) -> [u8; NAMING_LEN] {
    let mut f = [0u8; NAMING_LEN];
    f[..magic.len()].copy_from_slice(magic);
    f[magic.len()..].copy_from_slice(id.as_bytes());
    f
}

/// The id in `frame`, if it starts with `magic`.
fn named(magic: &[u8; 8], frame: &[u8; NAMING_LEN]) -> Option<VersionId> {
    if frame[..magic.len()] != *magic {
        return None;
    }
    let mut id = [0u8; VERSION_ID_LEN];
    id.copy_from_slice(&frame[magic.len()..]);
    Some(VersionId::from_bytes(id))
}

/// What the first bytes of a zstd frame say.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FramePeek {
    NotZstd,
    NoChecksum,
    Ok,
}

/// Length of a zstd frame header from its descriptor byte (RFC 8878 §3.1.1.1).
///
/// The decoder hands zstd whole headers: zstd 1.5.7's streaming decoder, given a header split
/// across calls, can take its single-pass shortcut on the bytes after the header and report an
/// empty, unverified frame (found by the decode_raw fuzz target).
pub(crate) fn frame_header_len(descriptor: u8) -> usize {
    let single_segment = descriptor & 0x20 != 0;
    let window = usize::from(!single_segment);
    let dictionary_id = [0, 1, 2, 4][usize::from(descriptor & 0x03)];
    let content_size = match descriptor >> 6 {
        0 => usize::from(single_segment),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    4 + 1 + window + dictionary_id + content_size
}

pub(crate) fn peek_frame(head: &[u8]) -> FramePeek {
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
    #[allow(unsafe_code)]
    fn frame_header_len_matches_zstd() {
        for descriptor in 0..=255u8 {
            if descriptor & 0x08 != 0 {
                continue; // reserved bit: not a valid frame
            }
            let mut frame = [0u8; ZSTD_FRAME_HEADER_MAX];
            frame[..4].copy_from_slice(&ZSTD_FRAME_MAGIC);
            frame[4] = descriptor;
            // SAFETY: reads at most the 5 bytes given.
            let zstd = unsafe { zstd_safe::zstd_sys::ZSTD_frameHeaderSize(frame.as_ptr().cast(), ZSTD_FRAME_PREFIX) };
            assert_eq!(frame_header_len(descriptor), zstd, "descriptor {descriptor:#04x}");
            assert!(frame_header_len(descriptor) <= ZSTD_FRAME_HEADER_MAX);
        }
    }

    #[test]
    fn header_round_trip() {
        let id = VersionId::of(b"base");
        let h = dcz_header(&id);
        assert_eq!(&h[..8], &[0x5e, 0x2a, 0x4d, 0x18, 0x20, 0, 0, 0]);
        assert_eq!(parse_dcz_header(&h), Some(id));
        let mut bad = h;
        bad[3] ^= 1;
        assert_eq!(parse_dcz_header(&bad), None);
        let u = unchanged_frame(&id);
        assert_eq!((parse_unchanged_frame(&u), parse_dcz_header(&u)), (Some(id), None));
        assert_eq!(parse_unchanged_frame(&h), None);
    }
}

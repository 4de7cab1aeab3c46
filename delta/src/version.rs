//! Version ids: the SHA-256 of a body, as RFC 9842 names dictionaries.

use std::fmt;

use crate::error::{Error, Result};

/// Length in bytes of a version id (SHA-256).
pub const VERSION_ID_LEN: usize = 32;

/// The identity of one version of a body: its SHA-256.
///
/// `Available-Dictionary` carries it as an RFC 8941 byte sequence (`:base64:`), and the dcz
/// header carries it raw.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VersionId([u8; VERSION_ID_LEN]);

impl VersionId {
    /// Hashes a body.
    pub fn of(body: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, body);
        let mut id = [0u8; VERSION_ID_LEN];
        id.copy_from_slice(digest.as_ref());
        VersionId(id)
    }

    /// Wraps raw digest bytes.
    pub const fn from_bytes(bytes: [u8; VERSION_ID_LEN]) -> Self {
        VersionId(bytes)
    }

    /// The raw digest.
    pub const fn as_bytes(&self) -> &[u8; VERSION_ID_LEN] {
        &self.0
    }

    /// Formats as an RFC 8941 byte sequence, the value of `Available-Dictionary`.
    pub fn to_sf(&self) -> String {
        use sfv::SerializeValue;
        sfv::Item::new(sfv::BareItem::ByteSeq(self.0.to_vec()))
            .serialize_value()
            .expect("a byte sequence always serialises")
    }

    /// Parses an `Available-Dictionary` value: an RFC 8941 item whose bare item is a byte
    /// sequence of exactly 32 bytes. Parameters, if any, are ignored as RFC 9842 allows.
    pub fn parse_sf(value: &[u8]) -> Result<Self> {
        let item = sfv::Parser::parse_item(value).map_err(|_| Error::InvalidVersionId("not an RFC 8941 item"))?;
        let bytes = match &item.bare_item {
            sfv::BareItem::ByteSeq(bytes) => bytes,
            _ => return Err(Error::InvalidVersionId("not a byte sequence")),
        };
        let id: [u8; VERSION_ID_LEN] =
            bytes.as_slice().try_into().map_err(|_| Error::InvalidVersionId("not 32 bytes (SHA-256)"))?;
        Ok(VersionId(id))
    }

    /// Lower-case hex, for logs and store keys.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(VERSION_ID_LEN * 2);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        s
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A body together with its version id; cloning shares the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Version {
    /// SHA-256 of `body`.
    pub id: VersionId,
    /// The body bytes.
    pub body: bytes::Bytes,
}

impl Version {
    /// Hashes `body` to make a version.
    pub fn new(body: impl Into<bytes::Bytes>) -> Self {
        let body = body.into();
        Version { id: VersionId::of(&body), body }
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version({}, {} bytes)", self.id, self.body.len())
    }
}

impl fmt::Debug for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VersionId({})", self.to_hex())
    }
}

impl fmt::Display for VersionId {
    /// Short form for messages: the first 12 hex digits are plenty to tell versions apart.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex()[..12])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_input() {
        // FIPS 180-2 test vector.
        assert_eq!(VersionId::of(b"abc").to_hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn sf_round_trip_and_matches_rfc_example_shape() {
        let id = VersionId::of(b"hello");
        let sf = id.to_sf();
        assert!(sf.starts_with(':') && sf.ends_with(':'));
        assert_eq!(sf.len(), 46, "32 bytes are 44 base64 characters plus two colons");
        assert_eq!(VersionId::parse_sf(sf.as_bytes()).unwrap(), id);
        // RFC 8941 §3.3.5: standard base64 with padding between colons.
        assert_eq!(VersionId::of(b"abc").to_sf(), ":ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=:");
    }

    #[test]
    fn sf_parse_accepts_whitespace_and_parameters() {
        let id = VersionId::of(b"x");
        let v = format!("  {};p=1 ", id.to_sf());
        assert_eq!(VersionId::parse_sf(v.as_bytes()).unwrap(), id);
    }

    #[test]
    fn sf_parse_rejects_bad_values() {
        for bad in [
            &b""[..],
            b"abc",
            b":YWJj:",     // 3 bytes
            b"\"string\"", // a string, not bytes
            b":not base64!:",
            b"::",
            b":YWJj: :YWJj:", // a list, not an item
            "\u{e9}".as_bytes(),
        ] {
            assert!(VersionId::parse_sf(bad).is_err(), "accepted {:?}", String::from_utf8_lossy(bad));
        }
    }
}

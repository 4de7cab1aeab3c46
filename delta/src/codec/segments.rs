//! Segmented tunnel bodies: an encoded body (dcz or zstd) cut where the backend paused, each
//! cut carrying a check, so the receiver can release what it decoded up to there without
//! waiting for zstd's checksum at the end of the frame.
//!
//! zstd verifies a frame only at its end. A frame can be flushed at any point (the receiver can
//! then decode every byte given so far) but carries nothing there to verify those bytes against,
//! and a new frame per cut would lose every reference to the body before it. So the encoded
//! stream stays one frame, flushed at each cut, and travels in records:
//!
//! * `D` (0x44), a 4-byte big-endian length, that many bytes of the encoded stream;
//! * `C` (0x43), the 8-byte big-endian length of the body before the cut, and the first
//!   [`CHECK_HASH_LEN`] bytes of the SHA-256 of that whole prefix of the body.
//!
//! The receiver feeds `D` payloads to its decoder and, at each `C`, releases its output only if
//! it decoded exactly that many bytes and they hash to that value. The bytes after the last cut
//! are verified as before, by zstd's content checksum and the announced length. So no byte goes
//! out unverified, and a backend that sends its head early has it reach the client early.

use ring::digest::{Context, SHA256};

use crate::error::{Error, Result};
use crate::version::{VERSION_ID_LEN, VersionId};

/// A run of the encoded stream.
const DATA: u8 = b'D';
/// A cut: the body so far, verified.
const CHECK: u8 = b'C';
/// Bytes of the prefix's SHA-256 a check carries: 128 bits, far beyond an accidental match.
pub const CHECK_HASH_LEN: usize = 16;
const CHECK_LEN: usize = 8 + CHECK_HASH_LEN;
/// Record tag and data length.
const DATA_HEAD: usize = 5;

/// The SHA-256 of the body so far, as bytes go by.
#[derive(Clone)]
pub struct RunningHash {
    ctx: Context,
    len: u64,
}

impl std::fmt::Debug for RunningHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningHash").field("len", &self.len).finish()
    }
}

impl Default for RunningHash {
    fn default() -> Self {
        RunningHash { ctx: Context::new(&SHA256), len: 0 }
    }
}

impl RunningHash {
    pub fn update(&mut self, bytes: &[u8]) {
        self.ctx.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Body bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The SHA-256 of everything hashed: the body's version id, once the body is whole.
    pub fn finish(self) -> VersionId {
        let digest = self.ctx.finish();
        let mut id = [0; VERSION_ID_LEN];
        id.copy_from_slice(digest.as_ref());
        VersionId::from_bytes(id)
    }

    /// The check for the body so far (the hash goes on).
    fn check(&self) -> [u8; CHECK_HASH_LEN] {
        let digest = self.ctx.clone().finish();
        let mut h = [0; CHECK_HASH_LEN];
        h.copy_from_slice(&digest.as_ref()[..CHECK_HASH_LEN]);
        h
    }
}

/// Appends `encoded` as a data record (nothing for no bytes).
pub fn write_data(encoded: &[u8], out: &mut Vec<u8>) {
    // Records stay well within the 4-byte length: a body is cut at least every few megabytes.
    for run in encoded.chunks(u32::MAX as usize) {
        out.push(DATA);
        out.extend_from_slice(&(run.len() as u32).to_be_bytes());
        out.extend_from_slice(run);
    }
}

/// Appends a check record for the body hashed so far.
pub fn write_check(body: &RunningHash, out: &mut Vec<u8>) {
    out.push(CHECK);
    out.extend_from_slice(&body.len.to_be_bytes());
    out.extend_from_slice(&body.check());
}

/// What a segmented body holds, piece by piece.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Bytes of the encoded stream, for the decoder.
    Encoded(&'a [u8]),
    /// A cut: the body before it is `len` bytes long and hashes to `hash`.
    Check { len: u64, hash: [u8; CHECK_HASH_LEN] },
}

/// Reads records as they arrive, in any split.
#[derive(Debug, Default)]
pub struct Reader {
    /// A record's head (or a whole check) being gathered.
    head: [u8; CHECK_LEN + 1],
    filled: usize,
    /// Encoded bytes left in the current data record.
    data_left: usize,
}

impl Reader {
    /// Takes tunnel bytes; hands each piece to `piece` in order.
    pub fn feed(&mut self, mut input: &[u8], mut piece: impl FnMut(Piece<'_>) -> Result<()>) -> Result<()> {
        while !input.is_empty() {
            if self.data_left > 0 {
                let n = self.data_left.min(input.len());
                piece(Piece::Encoded(&input[..n]))?;
                self.data_left -= n;
                input = &input[n..];
                continue;
            }
            let wanted = match self.head[0] {
                _ if self.filled == 0 => 1,
                DATA => DATA_HEAD,
                CHECK => 1 + CHECK_LEN,
                _ => return Err(Error::Corrupt("not a segment record")),
            };
            let n = (wanted - self.filled).min(input.len());
            self.head[self.filled..self.filled + n].copy_from_slice(&input[..n]);
            self.filled += n;
            input = &input[n..];
            if self.filled == 1 && !matches!(self.head[0], DATA | CHECK) {
                return Err(Error::Corrupt("not a segment record"));
            }
            if self.filled < wanted || wanted == 1 {
                continue;
            }
            self.filled = 0;
            if self.head[0] == DATA {
                self.data_left = u32::from_be_bytes(self.head[1..5].try_into().expect("4 bytes")) as usize;
            } else {
                let len = u64::from_be_bytes(self.head[1..9].try_into().expect("8 bytes"));
                let hash = self.head[9..].try_into().expect("hash length");
                piece(Piece::Check { len, hash })?;
            }
        }
        Ok(())
    }

    /// Whether the input so far ended on a record boundary.
    pub fn at_boundary(&self) -> bool {
        self.filled == 0 && self.data_left == 0
    }
}

/// Whether the body hashed so far is what a check says.
pub fn verifies(body: &RunningHash, len: u64, hash: &[u8; CHECK_HASH_LEN]) -> bool {
    body.len == len && body.check() == *hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(wire: &[u8], split: usize) -> Result<Vec<(bool, Vec<u8>)>> {
        let mut r = Reader::default();
        let mut got: Vec<(bool, Vec<u8>)> = Vec::new();
        for part in wire.chunks(split) {
            r.feed(part, |p| {
                match p {
                    Piece::Encoded(b) => match got.last_mut() {
                        Some((false, v)) => v.extend_from_slice(b),
                        _ => got.push((false, b.to_vec())),
                    },
                    Piece::Check { len, hash } => {
                        let mut v = len.to_be_bytes().to_vec();
                        v.extend_from_slice(&hash);
                        got.push((true, v));
                    }
                }
                Ok(())
            })?;
        }
        assert!(r.at_boundary());
        Ok(got)
    }

    #[test]
    fn records_read_back_in_any_split() {
        let mut body = RunningHash::default();
        let mut wire = Vec::new();
        write_data(b"first encoded run", &mut wire);
        body.update(b"the head of the page");
        write_check(&body, &mut wire);
        write_data(b"second", &mut wire);
        write_data(b"", &mut wire);
        let whole = pieces(&wire, wire.len()).unwrap();
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0], (false, b"first encoded run".to_vec()));
        assert_eq!(&whole[1].1[..8], &20u64.to_be_bytes());
        assert_eq!(whole[2], (false, b"second".to_vec()));
        for split in 1..wire.len() {
            assert_eq!(pieces(&wire, split).unwrap(), whole, "split {split}");
        }
    }

    #[test]
    fn a_check_verifies_only_the_same_prefix() {
        let mut sent = RunningHash::default();
        sent.update(b"<head>early</head>");
        let mut wire = Vec::new();
        write_check(&sent, &mut wire);
        let check = |decoded: &[u8]| {
            let mut h = RunningHash::default();
            h.update(decoded);
            let mut ok = None;
            Reader::default()
                .feed(&wire, |p| {
                    if let Piece::Check { len, hash } = p {
                        ok = Some(verifies(&h, len, &hash));
                    }
                    Ok(())
                })
                .unwrap();
            ok.unwrap()
        };
        assert!(check(b"<head>early</head>"));
        assert!(!check(b"<head>earlY</head>"));
        assert!(!check(b"<head>early</head"));
    }

    #[test]
    fn anything_else_is_refused() {
        assert!(pieces(b"X", 1).is_err());
        let mut wire = Vec::new();
        write_data(b"ok", &mut wire);
        wire.push(0);
        assert!(pieces(&wire, 3).is_err());
    }
}

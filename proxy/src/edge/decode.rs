//! The edge's side of a tunnel body, the mirror of the origin's `encode`: what the origin's
//! header says (and whether its base is the one named), then the body, decoded as it arrives
//! and sent on as it is verified: at the end (zstd's checksum and the announced length), and,
//! in a segmented body, at each cut the origin made where the backend paused (a hash of the
//! body so far, see `delta::codec::segments`). Unverified output is held while it fits and
//! streams (aborted on failure) beyond that, which only an origin that does not cut can cause.

use bytes::Bytes;
use delta::codec::segments::{self, Piece, RunningHash};
use delta::codec::{DecodeOptions, Decoder, Encoding};
use delta::{Version, VersionId};
use pingora_error::{Error, ErrorType};
use pingora_http::ResponseHeader;

use crate::config::DeltaSettings;
use crate::metrics;
use crate::tunnel::protocol::TunnelResponse;

/// What to do with a tunnel response's body, decided from its header.
pub enum Start {
    /// Not encoded for the tunnel: it streams through as it is.
    Identity,
    /// Decoded and verified as it arrives.
    Decode(Box<BodyDecoder>),
    /// A delta against a base other than the one the edge named: nothing has gone to the client,
    /// so the request can be sent again without a base.
    BaseMismatch(Refused),
}

/// Reads the origin's statement off `resp` (which is the backend's header again afterwards) and
/// starts the decoder for it. `named` is the base the request named.
pub fn start(
    resp: &mut ResponseHeader,
    named: Option<&Version>,
    limits: &DeltaSettings,
) -> pingora_error::Result<Start> {
    let said = TunnelResponse::take(resp)?;
    let opts = DecodeOptions { max_output: said.raw_length.unwrap_or(limits.max_decoded), require_checksum: true };
    let decoder = match said.encoding {
        Encoding::Identity => return Ok(Start::Identity),
        Encoding::Zstd => Decoder::zstd(opts),
        Encoding::Dcz => match named.filter(|b| Some(b.id) == said.base) {
            Some(base) => Decoder::dcz(base, opts).map(Decoder::lending_unchanged),
            None => return Ok(Start::BaseMismatch(base_mismatch(named.map(|b| b.id), said.base))),
        },
    }
    .map_err(|e| Error::because(ErrorType::InternalError, "starting the tunnel decoder", e))?;
    Ok(Start::Decode(Box::new(BodyDecoder::new(decoder, limits.max_body, said.raw_length, said.segmented))))
}

fn base_mismatch(asked: Option<VersionId>, answered: Option<VersionId>) -> Refused {
    Refused {
        reason: "base_mismatch",
        detail: format!("asked against {asked:?}, answered against {answered:?}"),
        after_output: false,
    }
}

/// Why a tunnel body was refused; the label of `railproxy_delta_verify_failures_total`.
#[derive(Debug)]
pub struct Refused {
    pub reason: &'static str,
    pub detail: String,
    /// Some decoded bytes had already gone to the client.
    pub after_output: bool,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tunnel body refused ({}): {}", self.reason, self.detail)
    }
}

impl std::error::Error for Refused {}

impl Refused {
    /// Counted in `railproxy_delta_verify_failures_total{reason}`, as the request's error.
    pub fn into_error(self) -> Box<Error> {
        metrics::VERIFY_FAILURES.with_label_values(&[self.reason]).inc();
        Error::explain(ErrorType::Custom("tunnel body refused"), format!("{}: {}", self.reason, self.detail))
    }
}

fn reason(e: &delta::Error) -> &'static str {
    use delta::Error as E;
    match e {
        E::BaseMismatch { .. } => "base_mismatch",
        E::BadHeader { .. } => "bad_header",
        E::MissingChecksum => "no_checksum",
        E::Truncated => "truncated",
        E::TrailingData(_) => "trailing_data",
        E::ChecksumMismatch => "checksum",
        E::WindowTooLarge { .. } => "window",
        E::TooLarge { .. } => "too_large",
        E::Corrupt(_) | E::Encode(_) | E::Finished(_) | E::InvalidVersionId(_) => "corrupt",
    }
}

pub struct BodyDecoder {
    decoder: Decoder,
    /// Decoded bytes not sent on yet.
    out: Vec<u8>,
    /// How many of them are verified (at a segment's cut), and so may go.
    verified: usize,
    /// Unverified output is held while it stays within this; past it, it streams (a body from
    /// an origin that does not cut, larger than `delta.max_body`).
    hold_limit: usize,
    streaming: bool,
    /// What was sent on, kept to store the body as a version while it stays within
    /// `hold_limit` (pieces of the same buffers: no copy unless the body came in several).
    sent: Vec<Bytes>,
    sent_len: usize,
    /// The length the origin said the backend sent.
    expect_len: Option<u64>,
    /// A segmented body: its records, and the decoded body hashed so far.
    segments: Option<(segments::Reader, RunningHash)>,
    /// Where in `out` the bytes not hashed yet begin: a segmented body is hashed only as far
    /// as a check needs (or before it streams on unverified), so a body the origin did not cut
    /// is never hashed here.
    unhashed: usize,
}

impl BodyDecoder {
    fn new(decoder: Decoder, hold_limit: u64, expect_len: Option<u64>, segmented: bool) -> Self {
        // One more than the announced length: the decoder asks for room to see an overrun.
        let capacity = expect_len.map_or(16 * 1024, |n| n + 1).min(hold_limit + 1) as usize;
        BodyDecoder {
            decoder,
            out: Vec::with_capacity(capacity),
            verified: 0,
            hold_limit: hold_limit as usize,
            streaming: false,
            sent: Vec::new(),
            sent_len: 0,
            expect_len,
            segments: segmented.then(Default::default),
            unhashed: 0,
        }
    }

    /// The encoding being decoded.
    pub fn encoding(&self) -> Encoding {
        self.decoder.encoding()
    }

    /// The body is the base the request named, sent as the unchanged frame.
    pub fn unchanged(&self) -> bool {
        self.decoder.unchanged()
    }

    fn refuse(&self, reason: &'static str, detail: String) -> Refused {
        Refused { reason, detail, after_output: !self.sent.is_empty() || self.sent_len > 0 }
    }

    /// Decodes a tunnel chunk into `out`. In a segmented body, a cut whose check holds marks
    /// everything decoded so far verified; one that does not refuses the body.
    fn take(&mut self, chunk: &[u8]) -> Result<(), Refused> {
        let Some((reader, body)) = self.segments.as_mut() else {
            return self.decoder.write(chunk, &mut self.out).map_err(|e| self.refuse(reason(&e), e.to_string()));
        };
        let (decoder, out, verified, unhashed) =
            (&mut self.decoder, &mut self.out, &mut self.verified, &mut self.unhashed);
        let mut failed = None;
        let fed = reader.feed(chunk, |piece| {
            match piece {
                Piece::Encoded(encoded) => decoder.write(encoded, out)?,
                Piece::Check { len, hash } => {
                    body.update(&out[*unhashed..]);
                    *unhashed = out.len();
                    if !segments::verifies(body, len, &hash) {
                        let detail = format!("the body's first {len} bytes do not hash as the origin said");
                        failed = Some(("segment", detail));
                        return Err(delta::Error::ChecksumMismatch);
                    }
                    // Enforced here: only bytes up to a cut that verified become sendable.
                    *verified = out.len();
                }
            }
            Ok(())
        });
        match (fed, failed) {
            (Ok(()), _) => Ok(()),
            (Err(_), Some((reason, detail))) => Err(self.refuse(reason, detail)),
            (Err(e), None) => Err(self.refuse(reason(&e), e.to_string())),
        }
    }

    /// Takes a tunnel chunk; returns decoded bytes to send on, if any: verified bytes as soon as
    /// they are (at the end, or at each cut of a segmented body), or everything past the hold
    /// limit. At the end, returns the whole verified body when it was kept (so it can be
    /// stored), as `complete`.
    pub fn push(&mut self, chunk: Option<&[u8]>, end: bool) -> Result<Output, Refused> {
        if let Some(chunk) = chunk {
            self.take(chunk)?;
        }
        let produced = self.decoder.produced();
        if let Some(n) = self.expect_len.filter(|n| produced > *n) {
            return Err(self.refuse("length", format!("decoded {produced} bytes, origin announced {n}")));
        }
        if !self.streaming && self.out.len() - self.verified > self.hold_limit {
            self.streaming = true;
        }
        if end {
            self.decoder.finish().map_err(|e| self.refuse(reason(&e), e.to_string()))?;
            if self.segments.as_ref().is_some_and(|(r, _)| !r.at_boundary()) {
                return Err(self.refuse("truncated", "the body ended inside a segment record".into()));
            }
            if let Some(n) = self.expect_len.filter(|n| produced != *n) {
                return Err(self.refuse("length", format!("decoded {produced} bytes, origin announced {n}")));
            }
            if let Some(body) = self.decoder.unchanged_body().cloned() {
                // The stored version itself goes out and is stored again: nothing was decoded.
                let id = self.decoder.version_id().expect("an unchanged frame names its base");
                let complete = (body.len() <= self.hold_limit).then(|| Version { id, body: body.clone() });
                return Ok(Output { send: Some(body), complete });
            }
            let last = self.release(self.out.len(), true);
            let complete = self.complete();
            return Ok(Output { send: Some(last), complete });
        }
        let ready = if self.streaming { self.out.len() } else { self.verified };
        let send = (ready > 0).then(|| self.release(ready, false));
        Ok(Output { send, complete: None })
    }

    /// Takes the first `n` bytes of `out` to send, keeping them to store while the body fits.
    /// Unless `last`, a segmented body's bytes are hashed first, for the checks still to come.
    fn release(&mut self, n: usize, last: bool) -> Bytes {
        if let Some((_, body)) = self.segments.as_mut().filter(|_| !last) {
            if n > self.unhashed {
                body.update(&self.out[self.unhashed..n]);
            }
            self.unhashed = self.unhashed.max(n) - n;
        }
        let rest = self.out.split_off(n);
        let piece = Bytes::from(std::mem::replace(&mut self.out, rest));
        self.verified = self.verified.saturating_sub(n);
        self.sent_len += piece.len();
        if !self.streaming && self.sent_len <= self.hold_limit {
            self.sent.push(piece.clone());
        } else {
            self.sent.clear();
        }
        piece
    }

    /// The whole body, verified, as a version; `None` if it was streamed or too large to keep.
    fn complete(&mut self) -> Option<Version> {
        if self.streaming || self.sent_len > self.hold_limit {
            return None;
        }
        let body = match self.sent.len() {
            1 => self.sent.pop().expect("one piece"),
            _ => Bytes::from(self.sent.concat()),
        };
        // The id the origin sent, else computed here.
        Some(match self.decoder.version_id() {
            Some(id) => Version { id, body },
            None => Version::new(body),
        })
    }
}

pub struct Output {
    pub send: Option<Bytes>,
    pub complete: Option<Version>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use delta::codec::{self, DecodeOptions};
    use delta::testing::PageGenerator;

    fn pair() -> (Version, Vec<u8>, Vec<u8>) {
        let v = PageGenerator::versions(21, 50_000, 2);
        let base = Version::new(v[0].clone());
        let delta = codec::encode(&v[0], &v[1]).unwrap();
        (base, v[1].clone(), delta)
    }

    fn run(dec: &mut BodyDecoder, wire: &[u8], chunk: usize) -> Result<(Vec<u8>, Option<Version>, usize), Refused> {
        let mut sent = Vec::new();
        let mut sends = 0;
        let pieces: Vec<&[u8]> = wire.chunks(chunk).collect();
        for (i, piece) in pieces.iter().enumerate() {
            let out = dec.push(Some(piece), i + 1 == pieces.len())?;
            if let Some(b) = out.send {
                sent.extend_from_slice(&b);
                sends += 1;
            }
            if out.complete.is_some() {
                return Ok((sent, out.complete, sends));
            }
        }
        Ok((sent, None, sends))
    }

    #[test]
    fn the_origins_header_decides_and_another_base_is_a_mismatch() {
        let (base, new, _) = pair();
        let limits = DeltaSettings {
            store_size: 1 << 20,
            max_body: 1 << 20,
            max_decoded: 1 << 24,
            version_ttl: std::time::Duration::from_secs(600),
        };
        let said = |encoding, named: Option<VersionId>| {
            let mut resp = ResponseHeader::build(200, None).unwrap();
            let raw_length = Some(new.len() as u64);
            TunnelResponse { encoding, base: named, raw_length, segmented: false }.write(&mut resp).unwrap();
            resp
        };
        let mut resp = said(Encoding::Dcz, Some(base.id));
        assert!(matches!(start(&mut resp, Some(&base), &limits).unwrap(), Start::Decode(_)));
        assert_eq!(resp.headers.get("content-length").unwrap().to_str().unwrap(), new.len().to_string());
        let other = VersionId::of(b"another version");
        for named in [Some(&base), None] {
            let mut resp = said(Encoding::Dcz, Some(other));
            match start(&mut resp, named, &limits).unwrap() {
                Start::BaseMismatch(r) => assert_eq!((r.reason, r.after_output), ("base_mismatch", false)),
                _ => panic!("a delta against {other:?} decoded with {:?}", named.map(|b| b.id)),
            }
        }
        let mut resp = said(Encoding::Zstd, None);
        assert!(matches!(start(&mut resp, None, &limits).unwrap(), Start::Decode(_)));
        let mut resp = said(Encoding::Identity, None);
        assert!(matches!(start(&mut resp, Some(&base), &limits).unwrap(), Start::Identity));
    }

    #[test]
    fn holds_until_verified_then_sends_once() {
        let (base, new, delta) = pair();
        let mut d = BodyDecoder::new(
            Decoder::dcz(&base, DecodeOptions::default()).unwrap(),
            1 << 20,
            Some(new.len() as u64),
            false,
        );
        let (sent, complete, sends) = run(&mut d, &delta, 7).unwrap();
        assert!(sent == new);
        assert_eq!(sends, 1, "held output goes out in one piece at the end");
        let complete = complete.unwrap();
        assert!(complete.body == new);
        assert_eq!(complete.id, delta::VersionId::of(&new), "hashed at the edge when the origin sent no id");
    }

    #[test]
    fn uses_the_version_id_the_origin_sent() {
        let (base, new, mut delta) = pair();
        let named = delta::VersionId::of(b"any id the origin chose");
        delta.extend_from_slice(&codec::version_frame(&named));
        let mut d = BodyDecoder::new(
            Decoder::dcz(&base, DecodeOptions::default()).unwrap(),
            1 << 20,
            Some(new.len() as u64),
            false,
        );
        let (sent, complete, _) = run(&mut d, &delta, 1000).unwrap();
        assert!(sent == new);
        assert_eq!(complete.unwrap().id, named);
    }

    #[test]
    fn corrupt_held_body_sends_nothing() {
        let (base, new, mut delta) = pair();
        let n = delta.len();
        delta[n - 3] ^= 0x40; // in the checksum
        let mut d = BodyDecoder::new(
            Decoder::dcz(&base, DecodeOptions::default()).unwrap(),
            1 << 20,
            Some(new.len() as u64),
            false,
        );
        let mut sent = 0;
        let mut err = None;
        for (i, piece) in delta.chunks(5).enumerate() {
            match d.push(Some(piece), (i + 1) * 5 >= n) {
                Ok(o) => sent += o.send.map_or(0, |b| b.len()),
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        let err = err.expect("refused");
        assert_eq!(sent, 0);
        assert!(!err.after_output);
        assert_eq!(err.reason, "checksum");
    }

    #[test]
    fn streams_past_the_hold_limit_and_flags_late_failures() {
        // Several zstd blocks (128 KiB each), so output leaves before the checksum is checked.
        let v = PageGenerator::versions(22, 400_000, 2);
        let (base, new) = (Version::new(v[0].clone()), v[1].clone());
        let delta = codec::encode(&v[0], &v[1]).unwrap();
        let mut d = BodyDecoder::new(Decoder::dcz(&base, DecodeOptions::default()).unwrap(), 1000, None, false);
        let (sent, complete, _) = run(&mut d, &delta, 64).unwrap();
        assert!(sent == new);
        assert!(complete.is_none(), "a streamed body is not stored");

        let mut bad = delta.clone();
        let n = bad.len();
        bad[n - 2] ^= 1;
        let mut d = BodyDecoder::new(Decoder::dcz(&base, DecodeOptions::default()).unwrap(), 1000, None, false);
        let err = run(&mut d, &bad, 64).expect_err("refused");
        assert!(err.after_output, "failure after streamed output must abort the response");
    }

    #[test]
    fn announced_length_is_enforced() {
        let (base, new, delta) = pair();
        let mut d = BodyDecoder::new(
            Decoder::dcz(&base, DecodeOptions::default()).unwrap(),
            1 << 20,
            Some(new.len() as u64 - 1),
            false,
        );
        assert_eq!(run(&mut d, &delta, 1 << 20).err().unwrap().reason, "length");
        let mut d = BodyDecoder::new(
            Decoder::dcz(&base, DecodeOptions::default()).unwrap(),
            1 << 20,
            Some(new.len() as u64 + 1),
            false,
        );
        assert_eq!(run(&mut d, &delta, 1 << 20).err().unwrap().reason, "length");
    }

    /// A body cut after `cut` bytes, as the origin sends it when the backend paused there.
    fn segmented(base: &Version, new: &[u8], cut: usize) -> Vec<u8> {
        segmented_at(base, new, &[cut])
    }

    fn segmented_at(base: &Version, new: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut enc = delta::codec::Encoder::dcz(base, &delta::codec::DeltaParams::default(), None).unwrap();
        let (mut wire, mut hash, mut run, mut from) = (Vec::new(), RunningHash::default(), Vec::new(), 0);
        for &cut in cuts {
            enc.write(&new[from..cut], &mut run).unwrap();
            enc.flush(&mut run).unwrap();
            hash.update(&new[from..cut]);
            segments::write_data(&run, &mut wire);
            segments::write_check(&hash, &mut wire);
            run.clear();
            from = cut;
        }
        enc.write(&new[from..], &mut run).unwrap();
        enc.finish(&mut run).unwrap();
        segments::write_data(&run, &mut wire);
        wire
    }

    #[test]
    fn checks_hold_when_output_streamed_on_before_them() {
        // Past the hold limit, decoded bytes go before the next check: they are hashed first.
        let (base, new, _) = pair();
        let wire = segmented_at(&base, &new, &[8192, 30_000, 41_000]);
        for step in [1, 7, 1000, wire.len()] {
            let mut d = BodyDecoder::new(Decoder::dcz(&base, DecodeOptions::default()).unwrap(), 1000, None, true);
            let (sent, complete, err) = feed(&mut d, &wire, step);
            assert!(err.is_none(), "step {step}: {err:?}");
            assert!(sent.concat() == new);
            assert!(complete.is_none(), "streamed, so not stored");
        }
        // And a corrupt later check is still caught.
        let mut bad = segmented_at(&base, &new, &[8192, 30_000]);
        let at = bad.windows(9).rposition(|w| w[0] == b'C' && w[1..9] == 30_000u64.to_be_bytes()).expect("check");
        bad[at + 12] ^= 1;
        let mut d = BodyDecoder::new(Decoder::dcz(&base, DecodeOptions::default()).unwrap(), 1000, None, true);
        let (_, _, err) = feed(&mut d, &bad, 64);
        assert_eq!(err.expect("refused").reason, "segment");
    }

    #[test]
    fn an_unchanged_frame_sends_the_base_and_stores_it_again() {
        let (base, _, _) = pair();
        let mut wire = Vec::new();
        segments::write_data(&delta::codec::unchanged_frame(&base.id), &mut wire);
        // Copied out of the decoder, or lent by it as `start` makes it: the same bytes.
        for lend in [false, true] {
            let decoder = Decoder::dcz(&base, DecodeOptions::default()).unwrap();
            let decoder = if lend { decoder.lending_unchanged() } else { decoder };
            let mut d = BodyDecoder::new(decoder, 1 << 20, Some(base.body.len() as u64), true);
            let (sent, complete, err) = feed(&mut d, &wire, 3);
            assert!(err.is_none(), "{err:?}");
            assert!(d.unchanged());
            assert!(sent.concat() == base.body, "lent: {lend}");
            let complete = complete.expect("stored");
            assert_eq!(complete.id, base.id);
            assert!(complete.body == base.body);
        }
        // Announced as another length: refused.
        let mut d = BodyDecoder::new(
            Decoder::dcz(&base, DecodeOptions::default()).unwrap(),
            1 << 20,
            Some(base.body.len() as u64 + 1),
            true,
        );
        let (sent, _, err) = feed(&mut d, &wire, 3);
        assert_eq!((err.expect("refused").reason, sent.len()), ("length", 0));
    }

    fn feed(d: &mut BodyDecoder, wire: &[u8], step: usize) -> (Vec<Vec<u8>>, Option<Version>, Option<Refused>) {
        let (mut sent, mut complete) = (Vec::new(), None);
        let pieces: Vec<&[u8]> = wire.chunks(step).collect();
        for (i, piece) in pieces.iter().enumerate() {
            match d.push(Some(piece), i + 1 == pieces.len()) {
                Ok(o) => {
                    sent.extend(o.send.map(|b| b.to_vec()));
                    complete = complete.or(o.complete);
                }
                Err(e) => return (sent, complete, Some(e)),
            }
        }
        (sent, complete, None)
    }

    #[test]
    fn a_segment_goes_out_at_its_cut_once_verified() {
        let (base, new, _) = pair();
        let wire = segmented(&base, &new, 8192);
        for step in [1, 7, 1000, wire.len()] {
            let mut d = BodyDecoder::new(Decoder::dcz(&base, DecodeOptions::default()).unwrap(), 1 << 20, None, true);
            let (sent, complete, err) = feed(&mut d, &wire, step);
            assert!(err.is_none(), "{err:?}");
            if step < wire.len() {
                assert_eq!(sent[0], new[..8192], "step {step}: the head goes out at the cut, alone");
            }
            assert!(sent.concat() == new);
            assert!(complete.expect("stored").body == new);
        }
    }

    #[test]
    fn no_byte_of_a_segment_goes_out_unless_its_check_holds() {
        let (base, new, _) = pair();
        let wire = segmented(&base, &new, 8192);
        // The check's hash altered: nothing at all goes out.
        let check_at = wire.iter().position(|&b| b == b'C').filter(|&i| {
            let len = u32::from_be_bytes(wire[1..5].try_into().unwrap()) as usize;
            i == 5 + len
        });
        let at = check_at.expect("the check follows the first data record");
        let mut bad = wire.clone();
        bad[at + 12] ^= 1;
        let mut d = BodyDecoder::new(Decoder::dcz(&base, DecodeOptions::default()).unwrap(), 1 << 20, None, true);
        let (sent, _, err) = feed(&mut d, &bad, 64);
        let err = err.expect("refused");
        assert_eq!((err.reason, err.after_output, sent.len()), ("segment", false, 0));
        // The second segment corrupt: the verified head went out, nothing of the rest did,
        // and the failure says output went (the response is aborted, not retried).
        let mut bad = wire;
        let n = bad.len();
        bad[n - 3] ^= 0x40;
        let mut d = BodyDecoder::new(Decoder::dcz(&base, DecodeOptions::default()).unwrap(), 1 << 20, None, true);
        let (sent, complete, err) = feed(&mut d, &bad, 64);
        let err = err.expect("refused");
        assert!(err.after_output);
        assert!(complete.is_none());
        assert_eq!(sent.concat(), new[..8192]);
    }
}

//! What the origin does with a backend response, and the encoder that does it; the edge's
//! `decode` is its mirror.

use bytes::Bytes;
use delta::Version;
use delta::codec::segments::{self, RunningHash};
use delta::codec::{DeltaParams, Encoder, Encoding};
use pingora_error::{Error, ErrorType};
use pingora_http::{RequestHeader, ResponseHeader};

use crate::http_util::{content_length, header_str};
use crate::tunnel::protocol::TunnelResponse;
use crate::versions::Keep;

/// How one response crosses the tunnel.
pub enum Plan<'a> {
    /// Streams through as the backend sent it.
    Identity,
    /// zstd of the full body; `store` keeps it as a version; `refused`: it would have been one,
    /// but the response said not to keep it.
    Full { store: bool, refused: bool },
    /// dcz against `base`; the new body is stored.
    Delta { base: &'a Version },
}

impl<'a> Plan<'a> {
    /// Only GET/POST… responses with a body of a compressible type, not already encoded and not
    /// over the size limit, are encoded; only 200s to GETs that `keep` lets be kept are stored
    /// and delta-encoded (a response kept nowhere is never made from a base either).
    pub fn decide(
        req: &RequestHeader,
        resp: &ResponseHeader,
        max_body: u64,
        accepts_zstd: bool,
        base: Option<&'a Version>,
        keep: Keep,
    ) -> Plan<'a> {
        let status = resp.status.as_u16();
        let has_body = req.method != http::Method::HEAD && status >= 200 && !matches!(status, 204 | 304);
        let content_type = header_str(resp.headers.get(http::header::CONTENT_TYPE)).unwrap_or("");
        let already_encoded = header_str(resp.headers.get(http::header::CONTENT_ENCODING))
            .is_some_and(|ce| !ce.trim().eq_ignore_ascii_case(Encoding::Identity.as_str()));
        let partial = resp.headers.contains_key(http::header::CONTENT_RANGE);
        let within = content_length(resp).is_none_or(|n| n <= max_body);
        if !has_body
            // A stream of messages, each for now: never held, stored or a base.
            || crate::http_util::is_event_stream(resp)
            || !accepts_zstd
            || already_encoded
            || partial
            || !within
            || !delta::policy::is_compressible(content_type)
        {
            return Plan::Identity;
        }
        let version = status == 200 && req.method == http::Method::GET;
        let store = version && keep.stores();
        match base {
            Some(base) if store => Plan::Delta { base },
            _ => Plan::Full { store, refused: version && !store },
        }
    }

    pub fn encoding(&self) -> Encoding {
        match self {
            Plan::Identity => Encoding::Identity,
            Plan::Full { .. } => Encoding::Zstd,
            Plan::Delta { .. } => Encoding::Dcz,
        }
    }

    /// Rewrites the response header for the plan (the tunnel's statement of it) and returns the
    /// body encoder, if any.
    /// `segmented`: the edge reads segmented bodies (see `delta::codec::segments`), so the
    /// body is cut where the backend pauses.
    pub fn start(
        &self,
        resp: &mut ResponseHeader,
        params: &DeltaParams,
        full_level: i32,
        max_body: u64,
        segmented: bool,
    ) -> pingora_error::Result<Option<BodyEncoder>> {
        let length = content_length(resp);
        let segmented = segmented && !matches!(self, Plan::Identity);
        let said = TunnelResponse {
            encoding: self.encoding(),
            base: match self {
                Plan::Delta { base } => Some(base.id),
                _ => None,
            },
            raw_length: length,
            segmented,
        };
        said.write(resp)?;
        let started = match self {
            Plan::Identity => return Ok(None),
            Plan::Full { store, .. } => Encoder::zstd(full_level, length).map(|e| (e, *store)),
            Plan::Delta { base } => Encoder::dcz(base, params, length).map(|e| (e, true)),
        };
        let (encoder, store) =
            started.map_err(|e| Error::because(ErrorType::InternalError, "starting the tunnel encoder", e))?;
        let keep = match store {
            false => Held::Nothing,
            // Until a cut, after which the copy is made here (see `encode_segmented`).
            true if encoder.keeps_body() => Held::Encoder,
            true => Held::Copy(Vec::with_capacity(length.unwrap_or(16 * 1024).min(max_body) as usize)),
        };
        let segments = segmented.then(RunningHash::default);
        // A delta's body may turn out to be its base again: compared before anything is encoded.
        let same = match self {
            Plan::Delta { base } if length.is_none_or(|n| n == base.body.len() as u64) => {
                Some(SameSoFar { base: (*base).clone(), matched: 0 })
            }
            _ => None,
        };
        Ok(Some(BodyEncoder {
            encoder,
            keep,
            max_body: max_body as usize,
            segments,
            seen: 0,
            cut: 0,
            length,
            same,
            unchanged: false,
        }))
    }
}

/// Encodes one body as it streams, keeping it to store when it is a version.
pub struct BodyEncoder {
    encoder: Encoder,
    keep: Held,
    max_body: usize,
    /// The body hashed so far, when it goes out segmented.
    segments: Option<RunningHash>,
    /// Body bytes from the backend so far, and before the last cut.
    seen: u64,
    cut: u64,
    /// The backend's Content-Length, if it sent one.
    length: Option<u64>,
    /// A delta's body while it is still byte for byte its base: nothing of it is encoded or
    /// hashed until it differs (or must be cut), and a body that ends equal crosses as the
    /// 40-byte unchanged frame.
    same: Option<SameSoFar>,
    /// The body crossed as the unchanged frame.
    unchanged: bool,
}

struct SameSoFar {
    base: Version,
    /// The body so far is `base.body[..matched]`.
    matched: usize,
}

/// A segmented body is cut at least this often, so that an edge holds at most this much
/// decoded output before it can verify and release it.
const MAX_SEGMENT: u64 = 1 << 20;

/// Where the body to store is kept.
enum Held {
    /// Not a version, or too large after all (chunked responses have no length up front).
    Nothing,
    /// A copy made here, as it streams.
    Copy(Vec<u8>),
    /// The encoder's own (the sampled index keeps the whole body anyway).
    Encoder,
}

impl BodyEncoder {
    /// Takes a backend chunk; returns encoded bytes to send and, at the end, the version to store.
    /// `paused`: the backend has sent nothing more yet, so what it sent is cut off (when the
    /// body is segmented) and reaches the client now rather than with the rest.
    pub fn push(
        &mut self,
        chunk: Option<Bytes>,
        end: bool,
        paused: bool,
    ) -> pingora_error::Result<(Option<Bytes>, Option<Version>)> {
        let result = match self.segments.is_some() {
            true => self.encode_segmented(chunk, end, paused),
            false => self.encode(chunk, end, false),
        };
        result.map_err(|e| Error::because(ErrorType::InternalError, "tunnel encoder", e))
    }

    /// The body ended equal to the base the edge named, and crossed as the unchanged frame.
    pub fn unchanged(&self) -> bool {
        self.unchanged
    }

    /// As `encode`, in records, with a cut (a flush of the encoder and a check of the body so
    /// far) where the backend paused or the segment grew long.
    fn encode_segmented(
        &mut self,
        chunk: Option<Bytes>,
        end: bool,
        paused: bool,
    ) -> delta::Result<(Option<Bytes>, Option<Version>)> {
        let seen = self.seen + chunk.as_ref().map_or(0, |c| c.len() as u64);
        let uncut = seen - self.cut;
        // A body that has all its announced bytes is not paused, only not yet ended (Pingora
        // may hand over the last piece before it says the body is done): a cut there would
        // cost a flushed block and a check on every page.
        let whole = self.length == Some(seen);
        let cut = !end && !whole && uncut > 0 && (paused || uncut >= MAX_SEGMENT);
        let (encoded, version) = self.encode(chunk, end, cut)?;
        let mut out = Vec::new();
        segments::write_data(encoded.as_deref().unwrap_or_default(), &mut out);
        if cut {
            if let Held::Encoder = self.keep {
                // A flush makes the sampled index hand over to zstd's streaming encoder, which
                // keeps no body: from here on the body to store is copied as it comes.
                self.keep = self.encoder.body_so_far().map_or(Held::Nothing, |b| Held::Copy(b.to_vec()));
            }
            let mut flushed = Vec::new();
            self.encoder.flush(&mut flushed)?;
            segments::write_data(&flushed, &mut out);
            let body = self.segments.as_ref().expect("segmented");
            debug_assert_eq!(body.len(), seen, "a cut checks the whole body so far");
            segments::write_check(body, &mut out);
            self.cut = seen;
        }
        Ok(((!out.is_empty()).then(|| Bytes::from(out)), version))
    }

    /// `cut`: everything so far must be encoded now, even if it is still the base.
    fn encode(
        &mut self,
        mut chunk: Option<Bytes>,
        end: bool,
        cut: bool,
    ) -> delta::Result<(Option<Bytes>, Option<Version>)> {
        let mut out = Vec::new();
        if let Some(n) = chunk.as_ref().map(|c| c.len()) {
            self.seen += n as u64;
        }
        if let Some(same) = self.same.as_mut() {
            let piece = chunk.as_deref().unwrap_or_default();
            let equal = same.base.body.get(same.matched..same.matched + piece.len()) == Some(piece);
            if equal {
                same.matched += piece.len();
                chunk = None;
                if end && same.matched == same.base.body.len() {
                    let base = self.same.take().expect("same so far").base;
                    out.extend_from_slice(&delta::codec::unchanged_frame(&base.id));
                    self.unchanged = true;
                    // Stored again: its time to live starts over.
                    return Ok((Some(Bytes::from(out)), Some(base)));
                }
            }
            if !equal || end || cut {
                // The body left its base here (or must go out as it is): what matched is
                // encoded now, from the base's bytes, then the rest as usual.
                let SameSoFar { base, matched } = self.same.take().expect("same so far");
                self.feed(&base.body[..matched], &mut out)?;
            } else {
                return Ok((None, None));
            }
        }
        if let Some(chunk) = chunk {
            self.feed(&chunk, &mut out)?;
        }
        let mut version = None;
        if end {
            self.encoder.finish(&mut out)?;
            let body = match std::mem::replace(&mut self.keep, Held::Nothing) {
                Held::Nothing => None,
                Held::Copy(raw) => Some(raw),
                Held::Encoder => self.encoder.take_body(),
            };
            version = body.map(|body| match self.segments.take() {
                // The segments' running hash saw exactly this body: its SHA-256 is the id.
                Some(hash) if hash.len() == body.len() as u64 => Version { id: hash.finish(), body: body.into() },
                _ => Version::new(body),
            });
            // The id this origin computed anyway, so the edge does not hash the body again.
            if let Some(v) = &version {
                out.extend_from_slice(&delta::codec::version_frame(&v.id));
            }
        }
        let out = (!out.is_empty()).then(|| Bytes::from(out));
        Ok((out, version))
    }

    /// Body bytes into the encoder (and the segments' hash, and the copy kept to store).
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> delta::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if let Some(hash) = self.segments.as_mut() {
            hash.update(bytes);
        }
        self.encoder.write(bytes, out)?;
        let within = self.encoder.bytes_in() as usize <= self.max_body;
        match &mut self.keep {
            Held::Copy(raw) if within => raw.extend_from_slice(bytes),
            Held::Encoder if within => {}
            _ => self.keep = Held::Nothing,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use delta::VersionId;
    use delta::codec::segments::{Piece, Reader};
    use delta::codec::{DecodeOptions, Decoder, DeltaParams};
    use delta::testing::PageGenerator;

    struct Crossed {
        /// Encoded bytes, segment records taken off.
        encoded: Vec<u8>,
        checks: usize,
        decoded: Vec<u8>,
        stored: Option<Version>,
        unchanged: bool,
    }

    /// One body through the origin's encoder (as a delta against `base`, in `chunk`-byte
    /// pieces, the backend pausing after piece `pause`) and back through a decoder.
    fn cross(
        base: &Version,
        body: &[u8],
        length: bool,
        segmented: bool,
        chunk: usize,
        pause: Option<usize>,
    ) -> Crossed {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        if length {
            resp.insert_header("content-length", body.len().to_string()).unwrap();
        }
        let plan = Plan::Delta { base };
        let mut enc = plan.start(&mut resp, &DeltaParams::fast(), 3, 1 << 22, segmented).unwrap().unwrap();
        let pieces: Vec<&[u8]> = body.chunks(chunk).collect();
        let (mut wire, mut stored) = (Vec::new(), None);
        for (i, piece) in pieces.iter().enumerate() {
            let end = i + 1 == pieces.len();
            let (out, version) = enc.push(Some(Bytes::copy_from_slice(piece)), end, pause == Some(i)).unwrap();
            wire.extend_from_slice(out.as_deref().unwrap_or_default());
            stored = stored.or(version);
        }
        let (mut encoded, mut checks) = (Vec::new(), 0);
        let mut decoder = Decoder::dcz(base, DecodeOptions::default()).unwrap();
        let mut decoded = Vec::new();
        if segmented {
            Reader::default()
                .feed(&wire, |p| {
                    match p {
                        Piece::Encoded(e) => {
                            encoded.extend_from_slice(e);
                            decoder.write(e, &mut decoded)?;
                        }
                        Piece::Check { len, hash } => {
                            let mut h = RunningHash::default();
                            h.update(&decoded);
                            assert!(segments::verifies(&h, len, &hash), "a check holds");
                            checks += 1;
                        }
                    }
                    Ok(())
                })
                .unwrap();
        } else {
            encoded = wire;
            decoder.write(&encoded, &mut decoded).unwrap();
        }
        decoder.finish().unwrap();
        Crossed { encoded, checks, decoded, stored, unchanged: enc.unchanged() }
    }

    #[test]
    fn a_body_equal_to_its_base_crosses_as_the_unchanged_frame_and_any_other_as_a_delta() {
        let v = PageGenerator::versions(41, 100_000, 2);
        let base = Version::new(v[0].clone());
        let mut last_differs = v[0].clone();
        *last_differs.last_mut().unwrap() ^= 1;
        let mut first_differs = v[0].clone();
        first_differs[0] ^= 1;
        let shorter = v[0][..v[0].len() - 1].to_vec();
        let mut longer = v[0].clone();
        longer.extend_from_slice(b"<!-- more -->");
        for segmented in [false, true] {
            for chunk in [4096, 16 * 1024 + 7, v[0].len()] {
                for length in [true, false] {
                    let at = format!("segmented {segmented}, chunk {chunk}, length {length}");
                    let same = cross(&base, &v[0], length, segmented, chunk, None);
                    assert!(same.unchanged, "{at}");
                    assert_eq!(same.encoded, delta::codec::unchanged_frame(&base.id), "{at}");
                    assert!(same.decoded == v[0], "{at}");
                    assert_eq!(same.stored.map(|s| s.id), Some(base.id), "{at}: stored again");
                    for body in [&v[1], &last_differs, &first_differs, &shorter, &longer] {
                        let c = cross(&base, body, length, segmented, chunk, None);
                        assert!(!c.unchanged, "{at}");
                        assert!(c.decoded == *body, "{at}: {} bytes", body.len());
                        let stored = c.stored.expect("stored");
                        assert_eq!(stored.id, VersionId::of(body), "{at}: the id is the body's SHA-256");
                        assert!(stored.body == *body, "{at}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_pause_sends_what_came_even_when_it_is_still_the_base() {
        let v = PageGenerator::versions(42, 100_000, 2);
        let base = Version::new(v[0].clone());
        let c = cross(&base, &v[0], false, true, 8192, Some(0));
        assert!(!c.unchanged, "the head went out at the pause, so the body is a delta");
        assert_eq!(c.checks, 1);
        assert!(c.decoded == v[0]);
        let stored = c.stored.expect("stored");
        assert_eq!(stored.id, base.id);
        assert!(stored.body == v[0], "the body before the cut is kept too");
        // And a changed body cut at a pause: stored whole.
        let c = cross(&base, &v[1], true, true, 8192, Some(2));
        assert_eq!(c.checks, 1);
        assert!(c.decoded == v[1]);
        assert!(c.stored.expect("stored").body == v[1]);
    }
}

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
            // A cut makes the sampled index hand over to zstd's streaming encoder, which keeps
            // no body: a body that may be cut keeps its own copy.
            true if encoder.keeps_body() && !segmented => Held::Encoder,
            true => Held::Copy(Vec::with_capacity(length.unwrap_or(16 * 1024).min(max_body) as usize)),
        };
        let segments = segmented.then(RunningHash::default);
        Ok(Some(BodyEncoder { encoder, keep, max_body: max_body as usize, segments, cut: 0, length }))
    }
}

/// Encodes one body as it streams, keeping it to store when it is a version.
pub struct BodyEncoder {
    encoder: Encoder,
    keep: Held,
    max_body: usize,
    /// The body hashed so far, when it goes out segmented.
    segments: Option<RunningHash>,
    /// Body bytes before the last cut.
    cut: u64,
    /// The backend's Content-Length, if it sent one.
    length: Option<u64>,
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
            false => self.encode(chunk, end),
        };
        result.map_err(|e| Error::because(ErrorType::InternalError, "tunnel encoder", e))
    }

    /// As `encode`, in records, with a cut (a flush of the encoder and a check of the body so
    /// far) where the backend paused or the segment grew long.
    fn encode_segmented(
        &mut self,
        chunk: Option<Bytes>,
        end: bool,
        paused: bool,
    ) -> delta::Result<(Option<Bytes>, Option<Version>)> {
        let body = self.segments.as_mut().expect("segmented");
        if let Some(c) = &chunk {
            body.update(c);
        }
        let (encoded, version) = self.encode(chunk, end)?;
        let body = self.segments.as_ref().expect("segmented");
        let mut out = Vec::new();
        segments::write_data(encoded.as_deref().unwrap_or_default(), &mut out);
        let uncut = body.len() - self.cut;
        // A body that has all its announced bytes is not paused, only not yet ended (Pingora
        // may hand over the last piece before it says the body is done): a cut there would
        // cost a flushed block and a check on every page.
        let whole = self.length == Some(body.len());
        if !end && !whole && uncut > 0 && (paused || uncut >= MAX_SEGMENT) {
            let mut flushed = Vec::new();
            self.encoder.flush(&mut flushed)?;
            segments::write_data(&flushed, &mut out);
            segments::write_check(body, &mut out);
            self.cut = body.len();
        }
        Ok(((!out.is_empty()).then(|| Bytes::from(out)), version))
    }

    fn encode(&mut self, chunk: Option<Bytes>, end: bool) -> delta::Result<(Option<Bytes>, Option<Version>)> {
        let mut out = Vec::new();
        if let Some(chunk) = chunk {
            self.encoder.write(&chunk, &mut out)?;
            let within = self.encoder.bytes_in() as usize <= self.max_body;
            match &mut self.keep {
                Held::Copy(raw) if within => raw.extend_from_slice(&chunk),
                Held::Encoder if within => {}
                _ => self.keep = Held::Nothing,
            }
        }
        let mut version = None;
        if end {
            self.encoder.finish(&mut out)?;
            version = match std::mem::replace(&mut self.keep, Held::Nothing) {
                Held::Nothing => None,
                Held::Copy(raw) => Some(Version::new(raw)),
                Held::Encoder => self.encoder.take_body().map(Version::new),
            };
            // The id this origin computed anyway, so the edge does not hash the body again.
            if let Some(v) = &version {
                out.extend_from_slice(&delta::codec::version_frame(&v.id));
            }
        }
        let out = (!out.is_empty()).then(|| Bytes::from(out));
        Ok((out, version))
    }
}

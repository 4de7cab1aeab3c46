//! Streaming decoder: encoded chunks in as they arrive, verified body chunks out.

use bytes::Bytes;
use zstd_safe::{InBuffer, OutBuffer};

use super::Encoding;
use super::context::{Bounded, DecompressCtx};
use super::header::{
    DCZ_HEADER_LEN, FramePeek, UNCHANGED_LEN, VERSION_FRAME_LEN, VERSION_FRAME_MAGIC, ZSTD_FRAME_HEADER_MAX,
    ZSTD_FRAME_PREFIX, frame_header_len, parse_dcz_header, parse_unchanged_frame, parse_version_frame, peek_frame,
};
use super::params::{ZSTD_MAX_WINDOW_LOG, dcz_decoder_window_log, dcz_window_limit};
use crate::error::{Error, Result};
use crate::version::{Version, VersionId};

/// Output room per step when the frame does not declare its size, so a hostile frame cannot
/// make one step allocate more. A declared size (never past the limit) is reserved at once:
/// with the whole frame at hand, zstd then decodes straight into it instead of through its
/// window buffer, saving a copy of the body.
const OUT_STEP: usize = 64 * 1024;

/// Limits a decoder enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Largest decoded body accepted; more is a decompression bomb.
    pub max_output: u64,
    /// Refuse frames without zstd's content checksum (railproxy's origin always sets it).
    pub require_checksum: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions { max_output: 64 << 20, require_checksum: true }
    }
}

/// Decodes one `dcz` or `zstd` body, verifying it as it goes.
///
/// Errors come where they are detected. A [`Error::BaseMismatch`] always comes before any
/// output; any other error means the output so far must be discarded. The body is verified
/// only when [`Decoder::finish`] returns `Ok`.
#[derive(Debug)]
pub struct Decoder {
    ctx: DecompressCtx,
    encoding: Encoding,
    expected_base: Option<VersionId>,
    /// The base's body, the output of an unchanged frame.
    base_body: Option<Bytes>,
    /// The body was an unchanged frame.
    unchanged: bool,
    /// An unchanged frame's output is lent (`unchanged_body`), not copied into `out`.
    lend_unchanged: bool,
    opts: DecodeOptions,
    window_limit: u64,
    stage: Stage,
    header: [u8; DCZ_HEADER_LEN],
    /// The zstd frame header, gathered whole before zstd sees any of it.
    frame_header: [u8; ZSTD_FRAME_HEADER_MAX],
    /// Known once the descriptor byte is in.
    frame_header_len: Option<usize>,
    /// The decoded size the frame header declares, if it does.
    content_size: Option<u64>,
    filled: usize,
    produced: u64,
    /// The version frame after the body's frame, if one is arriving.
    trailer: [u8; VERSION_FRAME_LEN],
    trailer_filled: usize,
    version_id: Option<VersionId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    DczHeader,
    FramePeek,
    Frame,
    Done,
    Failed,
}

impl Decoder {
    /// A decoder for a dcz body against `base`.
    pub fn dcz(base: &Version, opts: DecodeOptions) -> Result<Self> {
        let log = dcz_decoder_window_log(base.body.len());
        let ctx = DecompressCtx::new(Some(base.body.clone()), log)?;
        let mut d = Self::with(ctx, Encoding::Dcz, Some(base.id), opts, dcz_window_limit(base.body.len()));
        d.base_body = Some(base.body.clone());
        Ok(d)
    }

    /// A decoder for a full zstd body.
    pub fn zstd(opts: DecodeOptions) -> Result<Self> {
        let ctx = DecompressCtx::new(None, ZSTD_MAX_WINDOW_LOG)?;
        Ok(Self::with(ctx, Encoding::Zstd, None, opts, 1 << ZSTD_MAX_WINDOW_LOG))
    }

    fn with(
        ctx: DecompressCtx,
        encoding: Encoding,
        expected_base: Option<VersionId>,
        opts: DecodeOptions,
        window_limit: u64,
    ) -> Self {
        let stage = if expected_base.is_some() { Stage::DczHeader } else { Stage::FramePeek };
        Decoder {
            ctx,
            encoding,
            expected_base,
            base_body: None,
            unchanged: false,
            lend_unchanged: false,
            opts,
            window_limit,
            stage,
            header: [0; DCZ_HEADER_LEN],
            frame_header: [0; ZSTD_FRAME_HEADER_MAX],
            frame_header_len: None,
            content_size: None,
            filled: 0,
            produced: 0,
            trailer: [0; VERSION_FRAME_LEN],
            trailer_filled: 0,
            version_id: None,
        }
    }

    /// The content encoding this decoder reads.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Decoded bytes produced so far.
    pub fn produced(&self) -> u64 {
        self.produced
    }

    /// True once the whole frame was decoded and its checksum verified.
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done && (self.trailer_filled == 0 || self.version_id.is_some())
    }

    /// The body was the unchanged frame: the output is the base.
    pub fn unchanged(&self) -> bool {
        self.unchanged
    }

    /// An unchanged frame's output is not copied into `out`: [`Decoder::unchanged_body`] lends
    /// the base itself, for a caller that sends it on as it is.
    pub fn lending_unchanged(mut self) -> Self {
        self.lend_unchanged = true;
        self
    }

    /// The decoded body, when it was the unchanged frame and this decoder lends it.
    pub fn unchanged_body(&self) -> Option<&Bytes> {
        self.base_body.as_ref().filter(|_| self.unchanged && self.lend_unchanged)
    }

    /// The id of the decoded body, when the encoder sent it in a version frame (or an
    /// unchanged frame).
    pub fn version_id(&self) -> Option<VersionId> {
        self.version_id
    }

    /// Takes a chunk of the encoded body; appends decoded bytes to `out`.
    pub fn write(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let result = self.step(input, out);
        if result.is_err() {
            self.stage = Stage::Failed;
        }
        result
    }

    /// Ends the body: fails unless the frame ended and verified.
    pub fn finish(&mut self) -> Result<()> {
        match self.stage {
            Stage::Done if self.is_done() => Ok(()),
            Stage::Failed => Err(Error::Finished("failed")),
            _ => {
                self.stage = Stage::Failed;
                Err(Error::Truncated)
            }
        }
    }

    fn step(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if self.stage == Stage::DczHeader {
            let n = take_into(&mut self.header, &mut self.filled, &mut input);
            if n < DCZ_HEADER_LEN {
                return Ok(());
            }
            let expected = self.expected_base.expect("dcz decoders have a base");
            const _: () = assert!(UNCHANGED_LEN == DCZ_HEADER_LEN, "one header buffer reads both");
            if let Some(found) = parse_unchanged_frame(&self.header) {
                return self.take_unchanged(expected, found, input, out);
            }
            let found =
                parse_dcz_header(&self.header).ok_or(Error::BadHeader { encoding: "dcz", detail: "no dcz magic" })?;
            if found != expected {
                return Err(Error::BaseMismatch { expected, found });
            }
            self.filled = 0;
            self.stage = Stage::FramePeek;
        }
        if self.stage == Stage::FramePeek {
            // First the magic and descriptor, which say how long the header is; then the rest.
            let wanted = self.frame_header_len.unwrap_or(ZSTD_FRAME_PREFIX);
            if take_into(&mut self.frame_header[..wanted], &mut self.filled, &mut input) < wanted {
                return Ok(());
            }
            if self.frame_header_len.is_none() {
                match peek_frame(&self.frame_header[..ZSTD_FRAME_PREFIX]) {
                    FramePeek::NotZstd => {
                        return Err(Error::BadHeader {
                            encoding: self.encoding.as_str(),
                            detail: "no zstd frame magic",
                        });
                    }
                    FramePeek::NoChecksum if self.opts.require_checksum => {
                        return Err(Error::MissingChecksum);
                    }
                    _ => {}
                }
                self.frame_header_len = Some(frame_header_len(self.frame_header[4]));
                return self.step(input, out);
            }
            self.stage = Stage::Frame;
            self.content_size = zstd_safe::get_frame_content_size(&self.frame_header[..wanted]).ok().flatten();
            // zstd gets the whole header and what follows in one call (see `frame_header_len`).
            let mut first = Vec::with_capacity(wanted + input.len());
            first.extend_from_slice(&self.frame_header[..wanted]);
            first.extend_from_slice(input);
            return self.decompress(&first, out);
        }
        match self.stage {
            Stage::Frame => self.decompress(input, out),
            Stage::Done => self.take_trailer(input),
            Stage::Failed => Err(Error::Finished("failed")),
            Stage::DczHeader | Stage::FramePeek => unreachable!("handled above"),
        }
    }

    /// The body is the base: nothing follows the frame, and it must name the base held.
    fn take_unchanged(&mut self, expected: VersionId, found: VersionId, rest: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if found != expected {
            return Err(Error::BaseMismatch { expected, found });
        }
        let base = self.base_body.as_ref().expect("dcz decoders have a base");
        if base.len() as u64 > self.opts.max_output {
            return Err(Error::TooLarge { limit: self.opts.max_output });
        }
        if !self.lend_unchanged {
            out.extend_from_slice(base);
        }
        self.produced = base.len() as u64;
        self.unchanged = true;
        self.version_id = Some(expected);
        self.stage = Stage::Done;
        self.take_trailer(rest)
    }

    fn decompress(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let mut inb = InBuffer::around(input);
        loop {
            // One byte beyond the limit is room enough to see that it was crossed.
            let room = (self.opts.max_output - self.produced.min(self.opts.max_output))
                .saturating_add(1)
                .min(self.content_size.map_or(OUT_STEP as u64, |n| n.saturating_add(1).max(OUT_STEP as u64)))
                as usize;
            let start = out.len();
            let mut bounded = Bounded::new(out, room);
            let mut outb = OutBuffer::around_pos(&mut bounded, start);
            let result = self.ctx.get().decompress_stream(&mut outb, &mut inb);
            let written = outb.pos() - start;
            self.produced += written as u64;
            if self.produced > self.opts.max_output {
                return Err(Error::TooLarge { limit: self.opts.max_output });
            }
            let hint = result.map_err(|code| self.map_zstd_error(code))?;
            if hint == 0 {
                self.stage = Stage::Done;
                return self.take_trailer(&input[inb.pos()..]);
            }
            if inb.pos() == input.len() && written < room {
                return Ok(());
            }
        }
    }

    /// After the frame, only one version frame may follow.
    fn take_trailer(&mut self, mut input: &[u8]) -> Result<()> {
        if input.is_empty() {
            return Ok(());
        }
        if self.version_id.is_some() {
            return Err(Error::TrailingData(input.len()));
        }
        take_into(&mut self.trailer, &mut self.trailer_filled, &mut input);
        let magic = VERSION_FRAME_MAGIC.len().min(self.trailer_filled);
        if self.trailer[..magic] != VERSION_FRAME_MAGIC[..magic] {
            return Err(Error::TrailingData(self.trailer_filled + input.len()));
        }
        if self.trailer_filled == VERSION_FRAME_LEN {
            self.version_id = parse_version_frame(&self.trailer);
        }
        if input.is_empty() { Ok(()) } else { Err(Error::TrailingData(input.len())) }
    }

    fn map_zstd_error(&self, code: usize) -> Error {
        use zstd_safe::zstd_sys::ZSTD_ErrorCode as Code;
        if zstd_safe::is_error_kind(code, Code::ZSTD_error_checksum_wrong) {
            Error::ChecksumMismatch
        } else if zstd_safe::is_error_kind(code, Code::ZSTD_error_frameParameter_windowTooLarge) {
            Error::WindowTooLarge { limit: self.window_limit }
        } else {
            Error::Corrupt(zstd_safe::get_error_name(code))
        }
    }
}

/// Moves bytes from `input` into `buf` until it is full; returns how full it is.
fn take_into(buf: &mut [u8], filled: &mut usize, input: &mut &[u8]) -> usize {
    let n = (buf.len() - *filled).min(input.len());
    buf[*filled..*filled + n].copy_from_slice(&input[..n]);
    *filled += n;
    *input = &input[n..];
    *filled
}

/// Decodes a complete dcz body against `base`; returns nothing unless it all verifies.
pub fn decode(base: &[u8], delta: &[u8], opts: DecodeOptions) -> Result<Vec<u8>> {
    decode_with(&Version::new(Bytes::copy_from_slice(base)), delta, opts)
}

/// Decodes a complete dcz body against a base version.
pub fn decode_with(base: &Version, delta: &[u8], opts: DecodeOptions) -> Result<Vec<u8>> {
    let mut dec = Decoder::dcz(base, opts)?;
    let mut out = Vec::with_capacity(base.body.len().min(opts.max_output as usize) + 1024);
    dec.write(delta, &mut out)?;
    dec.finish()?;
    Ok(out)
}

/// Decompresses a complete zstd body; returns nothing unless it all verifies.
pub fn decompress(body: &[u8], opts: DecodeOptions) -> Result<Vec<u8>> {
    let mut dec = Decoder::zstd(opts)?;
    let mut out = Vec::new();
    dec.write(body, &mut out)?;
    dec.finish()?;
    Ok(out)
}

//! Streaming encoder: body chunks in as they arrive, encoded chunks out.

use bytes::Bytes;
use zstd_safe::{InBuffer, OutBuffer, zstd_sys::ZSTD_EndDirective};

use super::Encoding;
use super::context::CompressCtx;
use super::header::{DCZ_HEADER_LEN, dcz_header};
use super::params::{DeltaParams, apply_full};
use super::sequences;
use crate::error::{Error, Result};
use crate::version::Version;

/// Output space reserved per step; zstd emits at most one 128 KiB block at a time.
const OUT_STEP: usize = 16 * 1024;

/// Encodes one body as `dcz` (against a base) or `zstd` (full).
///
/// Output does not depend on how the input is split into chunks, so a streamed body and
/// the same body encoded in one call give identical bytes (unless [`Encoder::flush`] is
/// used, which ends a block early: the bytes differ, the decoded body does not).
#[derive(Debug)]
pub struct Encoder {
    engine: Engine,
    encoding: Encoding,
    header: Option<[u8; DCZ_HEADER_LEN]>,
    state: State,
    /// zstd has been called at least once.
    started: bool,
    bytes_in: u64,
    bytes_out: u64,
}

/// Who finds the matches.
#[derive(Debug)]
enum Engine {
    /// zstd, as the body streams through.
    Stream(CompressCtx),
    /// The sampled index (`sampled.rs`), which needs the whole body: it is kept until `finish`.
    Sampled(Sampled),
}

#[derive(Debug)]
struct Sampled {
    base: Bytes,
    /// With `sample_stride` set.
    params: DeltaParams,
    body: Vec<u8>,
}

impl Sampled {
    /// zstd's streaming encoder with the same base and level, fed what was kept so far: a
    /// flush needs output before the body is complete, which the sampled index cannot give.
    fn start_streaming(&mut self, out: &mut Vec<u8>) -> Result<CompressCtx> {
        let params = DeltaParams { sample_stride: None, ..self.params };
        let base_len = self.base.len();
        let mut ctx = CompressCtx::new(Some(self.base.clone()), |cctx| params.apply(cctx, base_len, None))?;
        run(&mut ctx, &std::mem::take(&mut self.body), ZSTD_EndDirective::ZSTD_e_continue, out)?;
        Ok(ctx)
    }
}

/// The most body bytes reserved up front from a size hint.
const MAX_RESERVE: u64 = 8 << 20;
/// The longest body the sampled index buffers, and the longest base it indexes; a longer body
/// (a chunked response with no length up front) goes on through zstd's streaming encoder, in
/// bounded memory, and a longer base is left to zstd from the start.
const SAMPLED_MAX_BODY: usize = 32 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Finished,
    Failed,
}

impl Encoder {
    /// A dcz encoder against `base`. `size_hint` is the body size if known (Content-Length):
    /// it sizes zstd's tables, and a wrong hint costs only compression ratio.
    pub fn dcz(base: &Version, params: &DeltaParams, size_hint: Option<u64>) -> Result<Self> {
        let engine = match params.sample_stride {
            // Positions in base and body then fit the index's 32-bit entries with room to spare.
            Some(_) if base.body.len() <= SAMPLED_MAX_BODY => Engine::Sampled(Sampled {
                base: base.body.clone(),
                params: *params,
                body: Vec::with_capacity(size_hint.unwrap_or(0).min(MAX_RESERVE) as usize),
            }),
            _ => {
                let params = DeltaParams { sample_stride: None, ..*params };
                let base_len = base.body.len();
                Engine::Stream(CompressCtx::new(Some(base.body.clone()), |cctx| {
                    params.apply(cctx, base_len, size_hint)
                })?)
            }
        };
        Ok(Self::with(engine, Encoding::Dcz, Some(dcz_header(&base.id))))
    }

    /// A plain zstd encoder for a body sent in full.
    pub fn zstd(level: i32, size_hint: Option<u64>) -> Result<Self> {
        let ctx = CompressCtx::new(None, |cctx| apply_full(cctx, level, size_hint))?;
        Ok(Self::with(Engine::Stream(ctx), Encoding::Zstd, None))
    }

    fn with(engine: Engine, encoding: Encoding, header: Option<[u8; DCZ_HEADER_LEN]>) -> Self {
        Encoder { engine, encoding, header, state: State::Open, started: false, bytes_in: 0, bytes_out: 0 }
    }

    /// The content encoding this encoder produces.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Body bytes taken so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    /// Encoded bytes produced so far, header included.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out
    }

    /// Whether this encoder keeps the whole body (the sampled index needs all of it), so that
    /// a caller storing the body can take it with [`Encoder::take_body`] instead of copying it.
    pub fn keeps_body(&self) -> bool {
        matches!(self.engine, Engine::Sampled(_))
    }

    /// Before [`Encoder::flush`] or [`Encoder::finish`]: the body so far, if this encoder keeps
    /// it (a flush hands the sampled index's work to zstd's streaming encoder, which does not).
    pub fn body_so_far(&self) -> Option<&[u8]> {
        match &self.engine {
            Engine::Sampled(sampled) if self.state == State::Open => Some(&sampled.body),
            _ => None,
        }
    }

    /// After [`Encoder::finish`]: the body, if this encoder kept all of it.
    pub fn take_body(&mut self) -> Option<Vec<u8>> {
        match &mut self.engine {
            Engine::Sampled(sampled) if self.state == State::Finished => Some(std::mem::take(&mut sampled.body)),
            _ => None,
        }
    }

    /// Takes a chunk of the body; appends whatever encoded bytes are ready to `out`.
    pub fn write(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        self.step(input, ZSTD_EndDirective::ZSTD_e_continue, out)
    }

    /// Emits everything buffered so far, so a receiver can decode all input given until now.
    pub fn flush(&mut self, out: &mut Vec<u8>) -> Result<()> {
        self.step(&[], ZSTD_EndDirective::ZSTD_e_flush, out)
    }

    /// Ends the body: appends the rest of the frame, checksum included.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if !self.started {
            // If its first call is `e_end`, zstd takes the input as the whole body and writes
            // a different frame header; starting with `e_continue` keeps the bytes the same
            // whether or not `write` was ever called.
            self.step(&[], ZSTD_EndDirective::ZSTD_e_continue, out)?;
        }
        self.step(&[], ZSTD_EndDirective::ZSTD_e_end, out)?;
        self.state = State::Finished;
        Ok(())
    }

    fn step(&mut self, input: &[u8], directive: ZSTD_EndDirective, out: &mut Vec<u8>) -> Result<()> {
        match self.state {
            State::Open => {}
            State::Finished => return Err(Error::Finished("finished")),
            State::Failed => return Err(Error::Finished("failed")),
        }
        let start = out.len();
        if let Some(header) = self.header.take() {
            out.extend_from_slice(&header);
        }
        let result = self.run(input, directive, out);
        self.bytes_out += (out.len() - start) as u64;
        if result.is_err() {
            self.state = State::Failed;
        } else {
            self.bytes_in += input.len() as u64;
        }
        result
    }

    fn run(&mut self, input: &[u8], directive: ZSTD_EndDirective, out: &mut Vec<u8>) -> Result<()> {
        self.started = true;
        if let Engine::Sampled(sampled) = &mut self.engine {
            match directive {
                ZSTD_EndDirective::ZSTD_e_continue if sampled.body.len() + input.len() <= SAMPLED_MAX_BODY => {
                    sampled.body.extend_from_slice(input);
                    return Ok(());
                }
                ZSTD_EndDirective::ZSTD_e_end => {
                    let (base, body, p) = (&sampled.base, &sampled.body, &sampled.params);
                    let stride = p.sample_stride.unwrap_or(1) as usize;
                    return sequences::encode(base, body, stride, p.level, p.window_log_for(base.len()), out);
                }
                // Past the buffer limit, or a flush.
                _ => self.engine = Engine::Stream(sampled.start_streaming(out)?),
            }
        }
        match &mut self.engine {
            Engine::Stream(ctx) => run(ctx, input, directive, out),
            Engine::Sampled(_) => unreachable!("switched to streaming above"),
        }
    }
}

/// One zstd streaming call: takes all of `input`, and for a flush or end everything zstd holds.
fn run(ctx: &mut CompressCtx, input: &[u8], directive: ZSTD_EndDirective, out: &mut Vec<u8>) -> Result<()> {
    let cctx = ctx.get();
    let mut inb = InBuffer::around(input);
    loop {
        if out.capacity() - out.len() < OUT_STEP {
            out.reserve(OUT_STEP);
        }
        let pos = out.len();
        let mut outb = OutBuffer::around_pos(out, pos);
        let remaining = cctx
            .compress_stream2(&mut outb, &mut inb, directive)
            .map_err(|code| Error::Encode(zstd_safe::get_error_name(code)))?;
        let full = outb.pos() == outb.capacity();
        let consumed = inb.pos() == input.len();
        let done = match directive {
            // Input is buffered until a block fills; stop once it is all taken and the
            // output had room for what zstd wanted to emit.
            ZSTD_EndDirective::ZSTD_e_continue => consumed && !full,
            _ => consumed && remaining == 0,
        };
        if done {
            return Ok(());
        }
    }
}

/// Encodes `new` against `base` as a complete dcz body (header and frame).
pub fn encode(base: &[u8], new: &[u8]) -> Result<Vec<u8>> {
    encode_with(&Version::new(Bytes::copy_from_slice(base)), new, &DeltaParams::default())
}

/// Encodes `new` against `base` with explicit parameters.
pub fn encode_with(base: &Version, new: &[u8], params: &DeltaParams) -> Result<Vec<u8>> {
    let mut enc = Encoder::dcz(base, params, Some(new.len() as u64))?;
    let mut out = Vec::with_capacity(new.len() / 16 + 256);
    enc.write(new, &mut out)?;
    enc.finish(&mut out)?;
    Ok(out)
}

/// Compresses `body` in full as `Content-Encoding: zstd`.
pub fn compress(body: &[u8], level: i32) -> Result<Vec<u8>> {
    let mut enc = Encoder::zstd(level, Some(body.len() as u64))?;
    let mut out = Vec::with_capacity(body.len() / 4 + 256);
    enc.write(body, &mut out)?;
    enc.finish(&mut out)?;
    Ok(out)
}

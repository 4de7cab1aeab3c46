//! A dcz frame from matches found outside zstd: zstd's sequence API codes them against the base.
//!
//! zstd-safe does not wrap `ZSTD_compressSequences`, so this file drives a raw context. The base
//! is referenced as a prefix only for the duration of one call, and the context is reset
//! before returning, so no pointer into the caller's buffers outlives it.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ptr::NonNull;

use zstd_sys::{ZSTD_CCtx, ZSTD_ResetDirective, ZSTD_Sequence, ZSTD_cParameter, ZSTD_strategy};

use super::sampled::{Index, MIN_REPEAT, Match};
use crate::error::{Error, Result};

/// Table sizes of the context (log2, zstd's minimum). zstd indexes only the last
/// `1 << max(hashLog + 3, chainLog + 1)` bytes of a prefix, and its own match finder is not
/// used here, so small tables make referencing the base nearly free.
const TABLE_LOG: i32 = 6;
/// Index memory a thread keeps between bodies; a larger one (a base over 2 MiB) is freed.
const KEEP_INDEX_BYTES: usize = 4 << 20;

/// What one thread keeps between bodies: the context, the index and the sequence buffers.
struct Scratch {
    cctx: RawCCtx,
    index: Index,
    matches: Vec<Match>,
    sequences: Vec<ZSTD_Sequence>,
}

thread_local! {
    static SCRATCH: RefCell<Option<Scratch>> = const { RefCell::new(None) };
}

/// Encodes `new` against `base` as one zstd frame with a content checksum, appended to `out`.
/// `level` sets the entropy coder's effort; `window_log` bounds the distances.
pub(crate) fn encode(
    base: &[u8],
    new: &[u8],
    stride: usize,
    level: i32,
    window_log: u32,
    out: &mut Vec<u8>,
) -> Result<()> {
    SCRATCH.with(|cell| {
        let mut slot = cell.borrow_mut();
        let scratch = match slot.as_mut() {
            Some(scratch) => scratch,
            None => slot.insert(Scratch {
                cctx: RawCCtx::new()?,
                index: Index::default(),
                matches: Vec::new(),
                sequences: Vec::new(),
            }),
        };
        scratch.matches.clear();
        scratch.index.find(base, new, stride, 1 << window_log, &mut scratch.matches);
        scratch.sequences.clear();
        scratch.sequences.extend(scratch.matches.iter().map(|m| ZSTD_Sequence {
            offset: m.offset,
            litLength: m.literals,
            matchLength: m.len,
            rep: 0,
        }));
        let result = scratch.cctx.compress(base, new, &scratch.sequences, level, window_log, out);
        // One multi-megabyte page should not pin its index in every thread for good.
        if scratch.index.bytes() > KEEP_INDEX_BYTES {
            scratch.index = Index::default();
        }
        result
    })
}

/// An owned `ZSTD_CCtx`.
struct RawCCtx(NonNull<ZSTD_CCtx>);

impl RawCCtx {
    fn new() -> Result<Self> {
        // SAFETY: creating a context has no preconditions; null means allocation failed.
        let ptr = unsafe { zstd_sys::ZSTD_createCCtx() };
        NonNull::new(ptr).map(RawCCtx).ok_or(Error::Encode("cannot allocate a zstd compression context"))
    }

    fn compress(
        &mut self,
        base: &[u8],
        new: &[u8],
        sequences: &[ZSTD_Sequence],
        level: i32,
        window_log: u32,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        use ZSTD_cParameter::*;
        // Forgets the prefix (and parameters) whatever happens, before `base` can go away.
        let ctx = ResetOnDrop(self);
        ctx.0.reset();
        for (param, value) in [
            (ZSTD_c_compressionLevel, level),
            (ZSTD_c_checksumFlag, 1),
            (ZSTD_c_windowLog, window_log as i32),
            (ZSTD_c_strategy, ZSTD_strategy::ZSTD_fast as i32),
            (ZSTD_c_hashLog, TABLE_LOG),
            (ZSTD_c_chainLog, TABLE_LOG),
            (ZSTD_c_minMatch, MIN_REPEAT as i32),
        ] {
            // SAFETY: the context is valid; zstd checks the parameter and its bounds.
            check(unsafe { zstd_sys::ZSTD_CCtx_setParameter(ctx.ptr(), param, value) })?;
        }
        // SAFETY: `base` outlives this call, and `ctx` resets the context (dropping the
        // reference) when it goes out of scope.
        check(unsafe { zstd_sys::ZSTD_CCtx_refPrefix(ctx.ptr(), base.as_ptr().cast(), base.len()) })?;
        let bound = zstd_safe::compress_bound(new.len());
        out.reserve(bound);
        let start = out.len();
        // SAFETY: `out` has `bound` writable bytes from `start`, and zstd writes at most
        // `dstCapacity` bytes. The sequences are valid for `new` against `base`: every offset
        // reaches into the prefix or the body before it, every length stays inside `new`,
        // and every match is at least `minMatch` long (checked by the tests of `sampled`).
        let written = check(unsafe {
            zstd_sys::ZSTD_compressSequences(
                ctx.ptr(),
                out.as_mut_ptr().add(start).cast(),
                bound,
                sequences.as_ptr(),
                sequences.len(),
                new.as_ptr().cast(),
                new.len(),
            )
        })?;
        // SAFETY: zstd wrote `written <= bound` bytes after `start`.
        unsafe { out.set_len(start + written) };
        Ok(())
    }

    fn reset(&mut self) {
        // SAFETY: the context is valid; a reset between frames cannot fail.
        unsafe { zstd_sys::ZSTD_CCtx_reset(self.0.as_ptr(), ZSTD_ResetDirective::ZSTD_reset_session_and_parameters) };
    }
}

/// Resets the context it holds when dropped.
struct ResetOnDrop<'a>(&'a mut RawCCtx);

impl ResetOnDrop<'_> {
    fn ptr(&self) -> *mut ZSTD_CCtx {
        self.0.0.as_ptr()
    }
}

impl Drop for ResetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.reset();
    }
}

impl Drop for RawCCtx {
    fn drop(&mut self) {
        // SAFETY: the context was created by `ZSTD_createCCtx` and is freed once.
        unsafe { zstd_sys::ZSTD_freeCCtx(self.0.as_ptr()) };
    }
}

fn check(code: usize) -> Result<usize> {
    // SAFETY: a pure function of the code.
    if unsafe { zstd_sys::ZSTD_isError(code) } == 0 {
        return Ok(code);
    }
    Err(Error::Encode(zstd_safe::get_error_name(code)))
}

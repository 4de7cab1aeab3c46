//! zstd contexts that keep a reference to a base body they own, reused across bodies.
//!
//! zstd's `refPrefix` borrows the base for the whole frame, while a streaming encoder or
//! decoder lives inside a proxy's per-request state. The context and the `Bytes` it borrows
//! therefore travel together here; this is the only `unsafe` in the crate.
//!
//! Contexts are pooled per thread because creating one and sizing its tables costs as much
//! as encoding a small page (measured: ~20 % of the encode time of a 10 KB page).
#![allow(unsafe_code)]

use std::cell::RefCell;

use bytes::Bytes;
use zstd_safe::{CCtx, DCtx, ResetDirective};

use crate::error::{Error, Result};

/// Memory kept in pooled contexts per thread and kind; contexts beyond it are freed. Enough
/// for dozens of requests in flight on small pages, a few on multi-megabyte ones.
const POOL_BYTES_PER_THREAD: usize = 32 << 20;

/// Idle contexts and the memory they hold.
struct Pool<T> {
    idle: Vec<(T, usize)>,
    bytes: usize,
}

impl<T> Pool<T> {
    const fn new() -> Self {
        Pool { idle: Vec::new(), bytes: 0 }
    }

    fn take(&mut self) -> Option<T> {
        let (ctx, size) = self.idle.pop()?;
        self.bytes -= size;
        Some(ctx)
    }

    fn give(&mut self, ctx: T, size: usize) {
        if self.bytes + size <= POOL_BYTES_PER_THREAD {
            self.bytes += size;
            self.idle.push((ctx, size));
        }
    }
}

thread_local! {
    static CCTX_POOL: RefCell<Pool<CCtx<'static>>> = const { RefCell::new(Pool::new()) };
    static DCTX_POOL: RefCell<Pool<DCtx<'static>>> = const { RefCell::new(Pool::new()) };
}

/// A compression context, optionally referencing `base` as its prefix.
pub(crate) struct CompressCtx {
    // Declared before `base` so that zstd's pointer into `base` is gone before `base` is.
    cctx: Option<CCtx<'static>>,
    base: Option<Bytes>,
}

impl CompressCtx {
    /// Takes a pooled context, lets `configure` set its parameters, then references `base`.
    pub(crate) fn new(base: Option<Bytes>, configure: impl FnOnce(&mut CCtx<'static>) -> Result<()>) -> Result<Self> {
        let cctx = CCTX_POOL
            .with(|pool| pool.borrow_mut().take())
            .or_else(CCtx::try_create)
            .ok_or(Error::Encode("cannot allocate a zstd compression context"))?;
        let mut ctx = CompressCtx { cctx: Some(cctx), base: None };
        let cctx = ctx.cctx.as_mut().expect("just set");
        configure(cctx)?;
        if let Some(base) = base {
            // SAFETY: `Bytes` never moves or mutates its buffer while a handle exists, and
            // `ctx.base` holds one for as long as `ctx.cctx` may use the pointer: `Drop` resets
            // the context (zstd forgets the prefix) before `base` is released.
            let prefix: &'static [u8] = unsafe { std::slice::from_raw_parts(base.as_ptr(), base.len()) };
            cctx.ref_prefix(prefix).map_err(|code| Error::Encode(zstd_safe::get_error_name(code)))?;
            ctx.base = Some(base);
        }
        Ok(ctx)
    }

    pub(crate) fn get(&mut self) -> &mut CCtx<'static> {
        self.cctx.as_mut().expect("present until drop")
    }
}

impl Drop for CompressCtx {
    fn drop(&mut self) {
        // Resetting parameters drops the prefix too, so the next user starts clean.
        if let Some(mut cctx) = self.cctx.take()
            && cctx.reset(ResetDirective::SessionAndParameters).is_ok()
        {
            let size = cctx.sizeof();
            CCTX_POOL.with(|pool| pool.borrow_mut().give(cctx, size));
        }
        self.base = None;
    }
}

/// A decompression context, optionally referencing `base` as its prefix.
pub(crate) struct DecompressCtx {
    dctx: Option<DCtx<'static>>,
    base: Option<Bytes>,
}

impl DecompressCtx {
    pub(crate) fn new(base: Option<Bytes>, window_log_max: u32) -> Result<Self> {
        let dctx = DCTX_POOL
            .with(|pool| pool.borrow_mut().take())
            .or_else(DCtx::try_create)
            .ok_or(Error::Corrupt("cannot allocate a zstd decompression context"))?;
        let mut ctx = DecompressCtx { dctx: Some(dctx), base: None };
        let dctx = ctx.dctx.as_mut().expect("just set");
        dctx.set_parameter(zstd_safe::DParameter::WindowLogMax(window_log_max))
            .map_err(|code| Error::Corrupt(zstd_safe::get_error_name(code)))?;
        if let Some(base) = base {
            // SAFETY: as in `CompressCtx::new`; `Drop` resets the context before `base` goes.
            let prefix: &'static [u8] = unsafe { std::slice::from_raw_parts(base.as_ptr(), base.len()) };
            dctx.ref_prefix(prefix).map_err(|code| Error::Corrupt(zstd_safe::get_error_name(code)))?;
            ctx.base = Some(base);
        }
        Ok(ctx)
    }

    pub(crate) fn get(&mut self) -> &mut DCtx<'static> {
        self.dctx.as_mut().expect("present until drop")
    }
}

impl Drop for DecompressCtx {
    fn drop(&mut self) {
        // Resetting parameters drops the prefix too, so the next user starts clean.
        if let Some(mut dctx) = self.dctx.take()
            && dctx.reset(ResetDirective::SessionAndParameters).is_ok()
        {
            let size = dctx.sizeof();
            DCTX_POOL.with(|pool| pool.borrow_mut().give(dctx, size));
        }
        self.base = None;
    }
}

impl std::fmt::Debug for CompressCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompressCtx").field("base_len", &self.base.as_ref().map(Bytes::len)).finish()
    }
}

impl std::fmt::Debug for DecompressCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecompressCtx").field("base_len", &self.base.as_ref().map(Bytes::len)).finish()
    }
}

/// A vector zstd may fill into its spare capacity, but no more than `room` bytes past its
/// current length: output stays within the decoder's limit without zero-filling a buffer first.
pub(crate) struct Bounded<'a> {
    vec: &'a mut Vec<u8>,
    end: usize,
}

impl<'a> Bounded<'a> {
    /// Makes sure `room` bytes of capacity are there (amortised growth) and exposes exactly those.
    pub(crate) fn new(vec: &'a mut Vec<u8>, room: usize) -> Self {
        if vec.capacity() - vec.len() < room {
            vec.reserve(room);
        }
        let end = vec.len() + room;
        Bounded { vec, end }
    }
}

// SAFETY: `capacity` reports at most the vector's real capacity, so zstd only writes inside the
// allocation; `filled_until` is only called by zstd-safe with positions it has written up to.
unsafe impl zstd_safe::WriteBuf for Bounded<'_> {
    fn as_slice(&self) -> &[u8] {
        self.vec
    }
    fn capacity(&self) -> usize {
        self.end
    }
    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.vec.as_mut_ptr()
    }
    unsafe fn filled_until(&mut self, n: usize) {
        debug_assert!(n <= self.end);
        // SAFETY: zstd-safe guarantees bytes up to `n` were written, and `n <= end <= capacity`.
        unsafe { self.vec.set_len(n) }
    }
}

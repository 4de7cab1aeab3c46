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

/// Contexts kept per thread; beyond this they are freed.
const POOL_PER_THREAD: usize = 8;

thread_local! {
    static CCTX_POOL: RefCell<Vec<CCtx<'static>>> = const { RefCell::new(Vec::new()) };
    static DCTX_POOL: RefCell<Vec<DCtx<'static>>> = const { RefCell::new(Vec::new()) };
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
            .with(|pool| pool.borrow_mut().pop())
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
            CCTX_POOL.with(|pool| {
                let mut pool = pool.borrow_mut();
                if pool.len() < POOL_PER_THREAD {
                    pool.push(cctx);
                }
            });
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
            .with(|pool| pool.borrow_mut().pop())
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
            DCTX_POOL.with(|pool| {
                let mut pool = pool.borrow_mut();
                if pool.len() < POOL_PER_THREAD {
                    pool.push(dctx);
                }
            });
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

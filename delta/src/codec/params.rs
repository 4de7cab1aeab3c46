//! Encoder parameters, chosen by measurement (`railproxy delta bench --sweep`).

use zstd_safe::{CCtx, CParameter};

use crate::error::{Error, Result};

/// RFC 9842: a dcz decoder must accept windows up to max(8 MiB, 1.25 × dictionary)…
const DCZ_MIN_WINDOW: u64 = 8 << 20;
/// …and never more than 128 MiB.
const DCZ_MAX_WINDOW: u64 = 128 << 20;
/// RFC 9659: `Content-Encoding: zstd` windows are at most 8 MiB.
pub const ZSTD_MAX_WINDOW_LOG: u32 = 23;

/// The largest window a dcz frame against a base of `base_len` bytes may use (RFC 9842 §4.2).
pub fn dcz_window_limit(base_len: usize) -> u64 {
    let scaled = (base_len as u64).saturating_mul(5) / 4;
    scaled.clamp(DCZ_MIN_WINDOW, DCZ_MAX_WINDOW)
}

/// Window log the encoder uses: the largest power of two within the limit.
pub(crate) fn dcz_encoder_window_log(base_len: usize) -> u32 {
    63 - dcz_window_limit(base_len).leading_zeros()
}

/// Window log the decoder accepts: the limit rounded up, so that frames from any encoder
/// within the limit decode; memory stays under twice the limit.
pub(crate) fn dcz_decoder_window_log(base_len: usize) -> u32 {
    let limit = dcz_window_limit(base_len);
    64 - (limit - 1).leading_zeros()
}

/// zstd's match-finding strategies, fastest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Strategy {
    Fast,
    Dfast,
    Greedy,
    Lazy,
    Lazy2,
    Btlazy2,
    Btopt,
    Btultra,
    Btultra2,
}

impl Strategy {
    fn to_zstd(self) -> zstd_safe::Strategy {
        use zstd_safe::Strategy as S;
        match self {
            Strategy::Fast => S::ZSTD_fast,
            Strategy::Dfast => S::ZSTD_dfast,
            Strategy::Greedy => S::ZSTD_greedy,
            Strategy::Lazy => S::ZSTD_lazy,
            Strategy::Lazy2 => S::ZSTD_lazy2,
            Strategy::Btlazy2 => S::ZSTD_btlazy2,
            Strategy::Btopt => S::ZSTD_btopt,
            Strategy::Btultra => S::ZSTD_btultra,
            Strategy::Btultra2 => S::ZSTD_btultra2,
        }
    }
}

/// Match-finder tuning that overrides the parameters of the compression level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Match-finding strategy.
    pub strategy: Strategy,
    /// log2 of the hash table (and chain table) size, relative to log2 of the base size:
    /// tables must be about as large as the base, or the start of the base is evicted by
    /// its end before the new body, which mostly copies the start, is searched.
    pub table_log_bias: i8,
    /// log2 of the number of candidates searched per position.
    pub search_log: u32,
    /// Shortest match searched for.
    pub min_match: u32,
    /// Match length after which the search stops early.
    pub target_length: u32,
}

/// Bounds for the hash table log: 4 KiB tables for tiny bases, 4 MiB entries at most.
const MIN_TABLE_LOG: i32 = 12;
const MAX_TABLE_LOG: i32 = 20;

/// How the dcz encoder compresses a new body against a base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaParams {
    /// zstd compression level; `tuning`, when set, overrides its match finder.
    pub level: i32,
    /// Match-finder overrides.
    pub tuning: Option<Tuning>,
    /// zstd long-distance matching.
    pub long_distance: bool,
    /// Window log; `None` uses the RFC 9842 limit for the base.
    pub window_log: Option<u32>,
    /// Find matches through an index of one base position every `n` bytes instead of zstd's
    /// match finder (see `sampled.rs`); `level` then only sets the entropy coder's effort, and
    /// the body is encoded once it is complete.
    pub sample_stride: Option<u32>,
}

impl Default for DeltaParams {
    /// The parameters chosen on the development corpus (151 consecutive real page versions):
    /// 0.385 % of raw bytes sent at ~300 MB/s median, against 0.495 % for zstd level 3 and
    /// 0.383 % at ~265 MB/s for lazy2. See BENCHMARKS.md for the sweep.
    fn default() -> Self {
        DeltaParams {
            level: 3,
            tuning: Some(Tuning {
                strategy: Strategy::Lazy,
                table_log_bias: -1,
                search_log: 6,
                min_match: 5,
                target_length: 8,
            }),
            long_distance: false,
            window_log: None,
            sample_stride: None,
        }
    }
}

impl DeltaParams {
    /// 3–5× cheaper to encode than the default for ~20 % more bytes (0.461 % against 0.384 % of
    /// raw on the dev corpus, and smaller than zstd level 3's 0.494 % at several times its
    /// speed): matches from a sampled index of the base, coded by zstd's entropy coder at
    /// level 3. See BENCHMARKS.md for the sweep.
    pub fn fast() -> Self {
        DeltaParams::sampled(8, 3)
    }

    /// Plain zstd level with the base as prefix, like `zstd --patch-from -N`.
    pub fn level(level: i32) -> Self {
        DeltaParams { level, tuning: None, long_distance: false, window_log: None, sample_stride: None }
    }

    /// Matches found through a sampled index of the base, coded by zstd at `level` (see
    /// `sampled.rs`): indexing the base is what delta encoding spends most on, and sampling
    /// every `stride` bytes cuts it by that factor.
    pub fn sampled(stride: u32, level: i32) -> Self {
        DeltaParams { sample_stride: Some(stride.max(1)), ..DeltaParams::level(level) }
    }

    /// The window log for a base of `base_len` bytes.
    pub(crate) fn window_log_for(&self, base_len: usize) -> u32 {
        self.window_log.unwrap_or_else(|| dcz_encoder_window_log(base_len))
    }

    pub(crate) fn apply(&self, cctx: &mut CCtx<'_>, base_len: usize, size_hint: Option<u64>) -> Result<()> {
        set(cctx, CParameter::CompressionLevel(self.level))?;
        set(cctx, CParameter::ChecksumFlag(true))?;
        set(cctx, CParameter::WindowLog(self.window_log_for(base_len)))?;
        if let Some(t) = self.tuning {
            let base_log = 64 - (base_len.max(2) as u64 - 1).leading_zeros() as i32;
            let table_log = (base_log + i32::from(t.table_log_bias)).clamp(MIN_TABLE_LOG, MAX_TABLE_LOG) as u32;
            set(cctx, CParameter::Strategy(t.strategy.to_zstd()))?;
            set(cctx, CParameter::HashLog(table_log))?;
            set(cctx, CParameter::ChainLog(table_log))?;
            set(cctx, CParameter::SearchLog(t.search_log))?;
            set(cctx, CParameter::MinMatch(t.min_match))?;
            set(cctx, CParameter::TargetLength(t.target_length))?;
        }
        if self.long_distance {
            set(cctx, CParameter::EnableLongDistanceMatching(true))?;
        }
        apply_size_hint(cctx, size_hint)
    }
}

/// Parameters of a full (no base) zstd body.
pub(crate) fn apply_full(cctx: &mut CCtx<'_>, level: i32, size_hint: Option<u64>) -> Result<()> {
    set(cctx, CParameter::CompressionLevel(level))?;
    set(cctx, CParameter::ChecksumFlag(true))?;
    // Levels up to 19 stay within 8 MiB windows; the "ultra" levels above do not, and
    // RFC 9659 caps `Content-Encoding: zstd` at 8 MiB.
    if level > 19 {
        set(cctx, CParameter::WindowLog(ZSTD_MAX_WINDOW_LOG))?;
    }
    apply_size_hint(cctx, size_hint)
}

fn apply_size_hint(cctx: &mut CCtx<'_>, size_hint: Option<u64>) -> Result<()> {
    // A hint (not a pledge) sizes tables and window for the body without making a wrong
    // Content-Length fatal to the frame.
    if let Some(n) = size_hint.and_then(|n| u32::try_from(n).ok()) {
        set(cctx, CParameter::SrcSizeHint(n))?;
    }
    Ok(())
}

fn set(cctx: &mut CCtx<'_>, p: CParameter) -> Result<()> {
    cctx.set_parameter(p).map(drop).map_err(|code| Error::Encode(zstd_safe::get_error_name(code)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_limit_follows_rfc9842() {
        assert_eq!(dcz_window_limit(0), 8 << 20);
        assert_eq!(dcz_window_limit(1 << 20), 8 << 20);
        assert_eq!(dcz_window_limit(8 << 20), 10 << 20);
        assert_eq!(dcz_window_limit(1 << 30), 128 << 20);
        assert_eq!(dcz_encoder_window_log(0), 23);
        assert_eq!(dcz_decoder_window_log(0), 23);
        assert_eq!(dcz_encoder_window_log(8 << 20), 23);
        assert_eq!(dcz_decoder_window_log(8 << 20), 24);
        assert_eq!(dcz_encoder_window_log(1 << 30), 27);
        assert_eq!(dcz_decoder_window_log(1 << 30), 27);
        for len in [0usize, 1, 1000, 7 << 20, 9 << 20, 100 << 20, 200 << 20] {
            let limit = dcz_window_limit(len);
            assert!(1u64 << dcz_encoder_window_log(len) <= limit);
            assert!(1u64 << dcz_decoder_window_log(len) >= limit);
        }
    }
}

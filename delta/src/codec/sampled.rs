//! Matches of a new body in its base, found through an index that samples the base.
//!
//! zstd's match finders index every position of the base before they search the first byte
//! of the new body; for a 100 KB page that indexing was half of the origin's CPU. Page
//! versions share long runs, so an index of one 8-byte window every `stride` bytes of the base
//! still finds every shared run of at least `stride + 7` bytes, for 1/stride of the indexing.
//! A hit is extended byte-wise in both directions. Before the index, every position first tries
//! the distance of the previous match: after a small edit (a timestamp, a counter, a token)
//! the next run usually continues at the same distance, and a 4-byte repeat is cheap for zstd
//! to code. What no match covers stays literal, and zstd's entropy coder compresses it.
//!
//! Pure: slices in, matches out. The matches are zstd sequences against the base as prefix.

/// Bytes hashed per index entry, and the shortest match taken from the index: shorter ones
/// cost about what their literals cost.
const WINDOW: usize = 8;
/// Shortest match taken at the previous distance; zstd's own lower bound.
pub(crate) const MIN_REPEAT: usize = 4;
const EMPTY: u32 = u32::MAX;
/// Literal runs step 1 + run length / 2^SKIP_LOG bytes at a time.
const SKIP_LOG: u32 = 5;
/// Positions after a match tried for a longer one…
const LAZY_STEPS: usize = 4;
/// …unless the match is already this long.
const LAZY_ENOUGH: usize = 64;
/// Base positions kept per hash, most recent first; the longest match among them is taken.
const WAYS: usize = 4;
/// Largest block compared at once when extending a match.
const MAX_BLOCK: usize = 4096;
/// Index sizes, in buckets of `WAYS` entries: 4 KiB to 16 MiB.
const MIN_INDEX_LOG: u32 = 8;
const MAX_INDEX_LOG: u32 = 20;
/// Tables up to this size (64 KiB) are cheap to fill and probe; larger ones are kept smaller.
const CACHED_INDEX_LOG: u32 = 12;

/// One zstd sequence: `literals` bytes copied as they are, then `len` bytes from `offset` bytes
/// back in the base followed by the body decoded so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Match {
    pub literals: u32,
    pub offset: u32,
    pub len: u32,
}

/// Reusable index memory: the table is sized per base, refilled per body. Positions are base
/// offsets, then base length + body offsets, so base and body together must stay under 4 GiB.
#[derive(Debug, Default)]
pub(crate) struct Index {
    table: Vec<u32>,
}

impl Index {
    /// Finds matches of `new` in `base` and in the part of `new` before them, appending them
    /// to `out`. `stride` is the base's sampling step (1 samples every position);
    /// `max_offset` bounds the distances (the window). Bytes after the last match are
    /// literals, left implicit as zstd expects.
    pub(crate) fn find(&mut self, base: &[u8], new: &[u8], stride: usize, max_offset: usize, out: &mut Vec<Match>) {
        if new.len() < MIN_REPEAT {
            return;
        }
        let bits = self.build(base, stride.max(1));
        let history = History { base, new };
        let mut anchor = 0; // first byte of `new` not yet covered by a match
        let mut offset = 0; // distance of the previous match, 0 before the first
        let mut i = 0;
        while i + MIN_REPEAT <= new.len() {
            let search = Search { history: &history, table: &self.table, bits, anchor, offset, max_offset };
            let Some(mut found) = search.at(i) else {
                // New text may repeat further on (a headline in a link and its title).
                if i + WINDOW <= new.len() {
                    let slot = hash(read_u64(new, i), bits) * WAYS;
                    insert(&mut self.table[slot..slot + WAYS], (base.len() + i) as u32);
                }
                // Long literal runs are new text: step through them faster. A match found
                // later extends backwards over the positions skipped.
                i += 1 + ((i - anchor) >> SKIP_LOG);
                continue;
            };
            // A short match may hide a longer one starting a byte or two later.
            for step in 1..=LAZY_STEPS {
                if found.len >= LAZY_ENOUGH {
                    break;
                }
                if let Some(next) = search.at(i + step)
                    && next.len > found.len + step
                {
                    found = next;
                }
            }
            offset = found.offset;
            out.push(Match { literals: (found.start - anchor) as u32, offset: offset as u32, len: found.len as u32 });
            i = found.start + found.len;
            anchor = i;
        }
    }

    /// Memory held by the table.
    pub(crate) fn bytes(&self) -> usize {
        self.table.capacity() * size_of::<u32>()
    }

    /// Fills the table with one base position per `stride` bytes; returns its log2 size.
    fn build(&mut self, base: &[u8], stride: usize) -> u32 {
        let samples = base.len().saturating_sub(WINDOW) / stride + 1;
        // Four to eight entries per sample while the table stays within CACHED_INDEX_LOG; past
        // it, down to one to two. The large table of a 100 KB base (256 KB) missed the caches on
        // every fill and insert: shrinking it to 64 KB saved the origin ~5 % of its CPU per
        // request for 0.455 -> 0.461 % of raw on the dev corpus. Small tables stay as they
        // were: they fit the caches anyway, and fewer ways per sample lose matches.
        let roomy = usize::BITS - samples.leading_zeros();
        let bits = roomy.min(CACHED_INDEX_LOG).max(roomy.saturating_sub(2)).clamp(MIN_INDEX_LOG, MAX_INDEX_LOG);
        self.table.clear();
        self.table.resize(WAYS << bits, EMPTY);
        let mut p = 0;
        while p + WINDOW <= base.len() {
            let slot = hash(read_u64(base, p), bits) * WAYS;
            insert(&mut self.table[slot..slot + WAYS], p as u32);
            p += stride;
        }
        bits
    }
}

/// A match candidate: `len` bytes of `new` from `start` equal those `offset` back in history.
#[derive(Clone, Copy)]
struct Found {
    start: usize,
    offset: usize,
    len: usize,
}

/// Looks for the best match at a position, without changing the index.
struct Search<'a> {
    history: &'a History<'a>,
    table: &'a [u32],
    bits: u32,
    anchor: usize,
    offset: usize,
    max_offset: usize,
}

impl Search<'_> {
    /// A match at the previous distance if there is one, else the longest indexed candidate.
    fn at(&self, i: usize) -> Option<Found> {
        let new = self.history.new;
        if i + MIN_REPEAT > new.len() {
            return None;
        }
        let here = self.history.base.len() + i;
        if self.offset > 0 && self.offset <= here {
            let source = self.history.from(here - self.offset);
            // One load each: a 4-byte slice comparison would be a call into memcmp, made at
            // every position of a literal run.
            let len = if source.len() >= MIN_REPEAT && read_u32(source, 0) == read_u32(new, i) {
                common_prefix(&new[i..], source)
            } else {
                0
            };
            if len >= MIN_REPEAT {
                return Some(Found { start: i, offset: self.offset, len });
            }
        }
        if i + WINDOW > new.len() {
            return None;
        }
        let word = read_u64(new, i);
        let slot = hash(word, self.bits) * WAYS;
        let mut best: Option<Found> = None;
        for &from in &self.table[slot..slot + WAYS] {
            if from == EMPTY {
                break;
            }
            let from = from as usize;
            // Most candidates differ in their first bytes (other windows with the same hash).
            let source = self.history.from(from);
            if read_u64(source, 0) != word {
                continue;
            }
            let len = WINDOW + common_prefix(&new[i + WINDOW..], &source[WINDOW..]);
            if best.is_none_or(|b| len > b.len) && here - from <= self.max_offset {
                // The run began before the sample that found it.
                let back = self.history.common_suffix(from, self.anchor, i);
                best = Some(Found { start: i - back, offset: here - from, len: len + back });
            }
        }
        best
    }
}

/// Puts `position` first in its bucket, dropping the oldest.
fn insert(bucket: &mut [u32], position: u32) {
    for k in (1..bucket.len()).rev() {
        bucket[k] = bucket[k - 1];
    }
    bucket[0] = position;
}

/// The base followed by the new body: what a zstd decoder holds, in positions of both.
struct History<'a> {
    base: &'a [u8],
    new: &'a [u8],
}

impl History<'_> {
    /// History from position `from` to the end of the part it lies in.
    fn from(&self, from: usize) -> &[u8] {
        match from.checked_sub(self.base.len()) {
            None => &self.base[from..],
            Some(j) => &self.new[j..],
        }
    }

    /// How far a match at history position `from` and `new[at]` extends backwards, not
    /// before `new[floor]`.
    fn common_suffix(&self, from: usize, floor: usize, at: usize) -> usize {
        let before = match from.checked_sub(self.base.len()) {
            None => &self.base[..from],
            Some(j) => &self.new[..j],
        };
        common_suffix(&self.new[floor..at], before)
    }
}

fn read_u32(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"))
}

fn read_u64(data: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"))
}

fn hash(window: u64, bits: u32) -> usize {
    (window.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
}

/// Length of the common prefix of `a` and `b`.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    // Most candidates end within their first eight bytes: settle those without a call.
    if n >= 8 {
        let diff = read_u64(a, 0) ^ read_u64(b, 0);
        if diff != 0 {
            return (diff.trailing_zeros() / 8) as usize;
        }
    }
    let mut i = 0;
    // Runs shared by two versions are mostly long: compare growing blocks with the C library's
    // vectorised comparison first, then the last block eight bytes at a time.
    let mut block = 32;
    while i + block <= n && a[i..i + block] == b[i..i + block] {
        i += block;
        block = (block * 2).min(MAX_BLOCK);
    }
    while i + 8 <= n {
        let diff = read_u64(a, i) ^ read_u64(b, i);
        if diff != 0 {
            return i + (diff.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// Length of the common suffix of `a` and `b`.
fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    a.iter().rev().zip(b.iter().rev()).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rebuilds the new body from the matches, as a zstd decoder would.
    fn replay(base: &[u8], new: &[u8], matches: &[Match]) -> Vec<u8> {
        let mut stream = base.to_vec();
        let mut at = 0;
        for m in matches {
            stream.extend_from_slice(&new[at..at + m.literals as usize]);
            at += m.literals as usize;
            let from = stream.len() - m.offset as usize;
            for k in 0..m.len as usize {
                stream.push(stream[from + k]);
            }
            at += m.len as usize;
        }
        stream.extend_from_slice(&new[at..]);
        stream.split_off(base.len())
    }

    fn page(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b"<div class=\"item\">abcdefghijklmnopqrstuvwxyz0123456789</div>\n"[(x % 61) as usize]
            })
            .collect()
    }

    #[test]
    fn common_prefix_counts_to_the_first_difference_at_every_position_and_length() {
        let a = page(7, 9_000);
        for len in [0, 1, 7, 8, 9, 31, 32, 33, 100, 4_200, 9_000] {
            assert_eq!(common_prefix(&a[..len], &a[..len]), len, "equal, {len} bytes");
            for at in (0..len).step_by(1 + len / 97) {
                let mut b = a[..len].to_vec();
                b[at] ^= 0x20;
                assert_eq!(common_prefix(&a[..len], &b), at, "{len} bytes, first difference at {at}");
            }
        }
        assert_eq!(common_prefix(&a[..40], &a[..12]), 12, "the shorter side bounds it");
    }

    #[test]
    fn an_edited_copy_is_found_as_few_long_matches_and_replays_exactly() {
        let base = page(1, 20_000);
        let mut new = base.clone();
        new[5_000..5_010].copy_from_slice(b"2026-11-26");
        new.splice(12_000..12_000, b"inserted text".iter().copied());
        new.drain(15_000..15_100);
        for stride in [1, 4, 16] {
            let mut matches = Vec::new();
            Index::default().find(&base, &new, stride, usize::MAX, &mut matches);
            assert_eq!(replay(&base, &new, &matches), new, "stride {stride}");
            let covered: u32 = matches.iter().map(|m| m.len).sum();
            assert!(covered as usize >= new.len() - 60, "stride {stride}: {covered} of {} covered", new.len());
            assert!(matches.len() <= 12, "stride {stride}: {} matches", matches.len());
        }
    }

    #[test]
    fn large_tables_shrink_to_one_to_two_entries_per_sample() {
        let mut index = Index::default();
        for (len, per_sample) in [(10_000, 4..=8), (100_000, 1..=2), (190_000, 1..=2), (1_000_000, 1..=2)] {
            let base = page(5, len);
            let mut matches = Vec::new();
            index.find(&base, &base, 8, usize::MAX, &mut matches);
            let samples = (len - WINDOW) / 8 + 1;
            let entries = index.bytes() / size_of::<u32>();
            let range = per_sample.start() * samples..=per_sample.end() * samples;
            assert!(range.contains(&entries), "{len} B: {entries} entries for {samples} samples");
        }
    }

    #[test]
    fn offsets_stay_within_the_limit() {
        let base = page(2, 10_000);
        let new: Vec<u8> = base[9_000..].iter().chain(&base[..1_000]).copied().collect();
        let mut matches = Vec::new();
        Index::default().find(&base, &new, 4, 2_000, &mut matches);
        assert!(matches.iter().all(|m| m.offset <= 2_000));
        assert!(matches.iter().map(|m| m.len).sum::<u32>() >= 900, "the near half is still found");
        assert_eq!(replay(&base, &new, &matches), new);
    }

    #[test]
    fn tiny_or_unrelated_inputs_give_valid_or_no_matches() {
        let mut index = Index::default();
        for (base, new) in
            [(&b""[..], &b"abc"[..]), (b"abcdefgh", b""), (b"abcdefgh", b"abcdefgh"), (b"short", b"short")]
        {
            let mut matches = Vec::new();
            index.find(base, new, 4, usize::MAX, &mut matches);
            assert_eq!(replay(base, new, &matches), new);
        }
        let (base, new) = (page(3, 5_000), page(4, 5_000));
        let mut matches = Vec::new();
        index.find(&base, &new, 4, usize::MAX, &mut matches);
        assert_eq!(replay(&base, &new, &matches), new);
        assert!(matches.iter().all(|m| m.len as usize >= MIN_REPEAT));
    }
}

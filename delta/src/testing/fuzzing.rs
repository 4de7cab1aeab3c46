//! Bodies of the fuzz targets in `delta/fuzz/`. They live here so that each target is one
//! line and the committed seed corpus is replayed by an ordinary test, without nightly.
//!
//! Each function panics exactly when an invariant breaks; any input is otherwise fine.

use bytes::Bytes;

use crate::codec::{self, DecodeOptions, Decoder, Encoder};
use crate::testing::pages::PageGenerator;
use crate::version::Version;

const FUZZ_LIMIT: u64 = 1 << 20;

fn fuzz_base() -> Version {
    Version::new(PageGenerator::versions(11, 4_000, 1).remove(0))
}

/// Arbitrary bytes as a dcz body (against a fixed base) and as a zstd body.
///
/// Invariants: no panic; output never exceeds the limit; streaming in small chunks reaches
/// the same verdict and output as one call.
pub fn decode_raw(data: &[u8]) {
    let base = fuzz_base();
    let opts = DecodeOptions { max_output: FUZZ_LIMIT, require_checksum: true };
    let one_shot = codec::decode_with(&base, data, opts);
    let streamed = stream_decode(Decoder::dcz(&base, opts).expect("decoder"), data, 7);
    check_agree("dcz", &one_shot, &streamed);

    let one_shot = codec::decompress(data, opts);
    let streamed = stream_decode(Decoder::zstd(opts).expect("decoder"), data, 13);
    check_agree("zstd", &one_shot, &streamed);
}

/// Arbitrary bytes as an `Available-Dictionary` (or `railproxy-delta-base`) header value.
///
/// Invariants: no panic; a value that parses names a version whose printed form parses back to
/// the same version.
pub fn available_dictionary(data: &[u8]) {
    if let Ok(id) = crate::VersionId::parse_sf(data) {
        let printed = id.to_sf();
        assert_eq!(crate::VersionId::parse_sf(printed.as_bytes()).ok(), Some(id), "{printed} does not parse back");
    }
}

fn stream_decode(mut dec: Decoder, data: &[u8], chunk: usize) -> crate::Result<Vec<u8>> {
    let mut out = Vec::new();
    for piece in data.chunks(chunk) {
        dec.write(piece, &mut out)?;
        assert!(out.len() as u64 <= FUZZ_LIMIT, "output beyond the limit");
    }
    dec.finish()?;
    Ok(out)
}

fn check_agree(what: &str, a: &crate::Result<Vec<u8>>, b: &crate::Result<Vec<u8>>) {
    match (a, b) {
        (Ok(x), Ok(y)) => {
            assert_eq!(x, y, "{what}: one-shot and streamed outputs differ");
            assert!(x.len() as u64 <= FUZZ_LIMIT);
        }
        (Err(_), Err(_)) => {}
        _ => panic!("{what}: one-shot {a:?} but streamed {b:?}"),
    }
}

/// A base and a new body built from structured input, encoded and decoded in random chunks.
///
/// Input layout: `[flags][chunk seed][base len lo][base len hi][base bytes…][edit script…]`;
/// flags bit 0 flushes midway, bit 1 uses `DeltaParams::fast`.
/// The edit script builds the new body from copies of the base (`op < 0x80`: copy `len`
/// bytes at `offset`) and literals (`op >= 0x80`: `op - 0x7f` bytes follow), the way pages
/// change. Invariants: the round trip is exact; streaming output equals one-shot output.
pub fn round_trip(data: &[u8]) {
    let Some(input) = RoundTripInput::parse(data) else {
        return;
    };
    let base = Version::new(Bytes::from(input.base));
    let params = if input.fast { codec::DeltaParams::fast() } else { codec::DeltaParams::default() };
    let hint = Some(input.new.len() as u64);

    let one_shot = codec::encode_with(&base, &input.new, &params).expect("encode");
    let mut enc = Encoder::dcz(&base, &params, hint).expect("encoder");
    let mut streamed = Vec::new();
    let mut chunks = ChunkSizes::new(input.chunk_seed);
    let mut rest = &input.new[..];
    while !rest.is_empty() {
        let n = chunks.next().min(rest.len());
        enc.write(&rest[..n], &mut streamed).expect("encode chunk");
        rest = &rest[n..];
    }
    if input.flush {
        enc.flush(&mut streamed).expect("flush");
    }
    enc.finish(&mut streamed).expect("finish");
    if !input.flush {
        assert_eq!(one_shot, streamed, "streamed encoding differs from one-shot");
    }

    let opts = DecodeOptions { max_output: input.new.len() as u64, require_checksum: true };
    let decoded = codec::decode_with(&base, &one_shot, opts).expect("decode one-shot");
    assert_eq!(decoded, input.new, "one-shot round trip");
    let mut dec = Decoder::dcz(&base, opts).expect("decoder");
    let mut out = Vec::new();
    let mut rest = &streamed[..];
    while !rest.is_empty() {
        let n = chunks.next().min(rest.len());
        dec.write(&rest[..n], &mut out).expect("decode chunk");
        rest = &rest[n..];
    }
    dec.finish().expect("decode finish");
    assert_eq!(out, input.new, "streamed round trip");
}

struct RoundTripInput {
    flush: bool,
    /// The sampled-index encoder instead of zstd's match finder.
    fast: bool,
    chunk_seed: u8,
    base: Vec<u8>,
    new: Vec<u8>,
}

impl RoundTripInput {
    fn parse(data: &[u8]) -> Option<Self> {
        let (&flags, data) = data.split_first()?;
        let (&chunk_seed, data) = data.split_first()?;
        let (len, data) = data.split_at_checked(2)?;
        let base_len = usize::from(u16::from_le_bytes([len[0], len[1]])).min(data.len());
        let (base, mut script) = data.split_at(base_len);
        let mut new = Vec::new();
        while let Some((&op, rest)) = script.split_first() {
            script = rest;
            if op < 0x80 {
                let Some((arg, rest)) = script.split_at_checked(3) else {
                    break;
                };
                script = rest;
                if base.is_empty() {
                    continue;
                }
                let offset = usize::from(u16::from_le_bytes([arg[0], arg[1]])) % base.len();
                let len = (usize::from(arg[2]) * (usize::from(op) + 1)).min(base.len() - offset);
                new.extend_from_slice(&base[offset..offset + len]);
            } else {
                let n = usize::from(op - 0x7f).min(script.len());
                new.extend_from_slice(&script[..n]);
                script = &script[n..];
            }
        }
        Some(RoundTripInput { flush: flags & 1 == 1, fast: flags & 2 == 2, chunk_seed, base: base.to_vec(), new })
    }
}

/// Chunk sizes from 1 byte up, varied but reproducible.
struct ChunkSizes(crate::testing::pages::Rng);

impl ChunkSizes {
    fn new(seed: u8) -> Self {
        ChunkSizes(crate::testing::pages::Rng::new(u64::from(seed)))
    }

    fn next(&mut self) -> usize {
        // Mostly tiny chunks (header and frame boundaries split), sometimes large.
        match self.0.below(4) {
            0 => 1,
            1 => 1 + self.0.below(16),
            2 => 1 + self.0.below(1024),
            _ => 1 + self.0.below(64 * 1024),
        }
    }
}

/// Seed inputs for each target, written to `delta/fuzz/seeds/<target>/` by the
/// `write_fuzz_seeds` test and replayed by `replay_fuzz_seeds`.
pub fn seed_inputs() -> Vec<(&'static str, String, Vec<u8>)> {
    let base = fuzz_base();
    let mut g = PageGenerator::new(11, 4_000);
    g.advance();
    let next = g.render().into_bytes();
    let delta = codec::encode_with(&base, &next, &codec::DeltaParams::default()).expect("encode");
    let full = codec::compress(&next, codec::FULL_LEVEL).expect("compress");
    let mut wrong_base = delta.clone();
    wrong_base[20] ^= 0xff;
    let id = base.id.to_sf();
    let mut seeds = vec![
        ("available_dictionary", "valid".to_string(), id.clone().into_bytes()),
        ("available_dictionary", "with-parameters".to_string(), format!("{id};a=1;b=?0").into_bytes()),
        ("available_dictionary", "too-short".to_string(), b":AAAA:".to_vec()),
        ("available_dictionary", "token".to_string(), b"sha-256".to_vec()),
        ("available_dictionary", "inner-list".to_string(), format!("({id})").into_bytes()),
        ("available_dictionary", "unterminated".to_string(), id.as_bytes()[..id.len() - 1].to_vec()),
        ("decode_raw", "dcz-valid".to_string(), delta.clone()),
        ("decode_raw", "dcz-truncated".to_string(), delta[..delta.len() / 2].to_vec()),
        ("decode_raw", "dcz-header-only".to_string(), delta[..40].to_vec()),
        ("decode_raw", "dcz-wrong-base".to_string(), wrong_base),
        ("decode_raw", "zstd-valid".to_string(), full),
        ("decode_raw", "empty".to_string(), Vec::new()),
        // Found by fuzzing: a header whose tail is a skippable frame (see codec tests).
        (
            "decode_raw",
            "zstd-split-header-skippable".to_string(),
            vec![
                0x28, 0xb5, 0x2f, 0xfd, 0x64, 0x5e, 0x2a, 0x4d, 0x18, 0x28, 0x00, 0x00, 0x00, 0x64, 0x2b, 0xf5, 0x0b,
                0x2b, 0xa6, 0x86, 0x1a, 0x9e, 0x29, 0xb2, 0x7b, 0xa1, 0x30, 0xd0, 0x50, 0x28, 0x04, 0xfd, 0x29, 0xb2,
                0x7b, 0xa1, 0x30, 0xd0, 0x50, 0x28, 0x04, 0xfd, 0xb5, 0x2f, 0x20, 0x75, 0x0d, 0x00, 0x3b, 0x1b, 0x70,
                0x7c, 0x0f,
            ],
        ),
    ];
    // Round trip: base = the page, new = copies of its regions around literal edits.
    let mut structured = vec![0u8, 7];
    let base_part = &next[..next.len().min(3000)];
    structured.extend_from_slice(&(base_part.len() as u16).to_le_bytes());
    structured.extend_from_slice(base_part);
    for (offset, len, literal) in [(0u16, 200u8, &b"<p>new</p>"[..]), (900, 255, b"changed"), (2000, 100, b"")] {
        structured.push(0x03);
        structured.extend_from_slice(&offset.to_le_bytes());
        structured.push(len);
        if !literal.is_empty() {
            structured.push(0x7f + literal.len() as u8);
            structured.extend_from_slice(literal);
        }
    }
    let with_flags = |flags: u8| {
        let mut seed = structured.clone();
        seed[0] = flags;
        seed
    };
    seeds.push(("round_trip", "page-edits-flush".to_string(), with_flags(1)));
    seeds.push(("round_trip", "page-edits-fast".to_string(), with_flags(2)));
    seeds.push(("round_trip", "page-edits-fast-flush".to_string(), with_flags(3)));
    seeds.push(("round_trip", "page-edits".to_string(), structured));
    seeds.push(("round_trip", "empty-base".to_string(), vec![0, 1, 0, 0, 0x85, b'h', b'e', b'l', b'l', b'o', b'!']));
    seeds
}

//! Codec behaviour on real and generated page versions, and on everything it must refuse.

use bytes::Bytes;
use delta::codec::{self, DecodeOptions, Decoder, DeltaParams, Encoder};
use delta::corpus::{self, VersionSet};
use delta::testing::{self, PageGenerator};
use delta::{Error, Version, VersionId};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn opts() -> DecodeOptions {
    DecodeOptions::default()
}

/// Both encoders: zstd's match finder (`effort: small`) and the sampled index (`effort: fast`).
fn encoders() -> [(&'static str, DeltaParams); 2] {
    [("small", DeltaParams::default()), ("fast", DeltaParams::fast())]
}

/// Generated sets always; the real corpus too when this checkout has `../shared/corpus`.
fn all_sets() -> Vec<VersionSet> {
    let mut sets = testing::generated_sets();
    match testing::dev_corpus(env!("CARGO_MANIFEST_DIR")) {
        Some(dir) => {
            eprintln!("real corpus: {} (included)", dir.display());
            sets.extend(corpus::load_version_sets(&dir).expect("read corpus"));
        }
        None => eprintln!("real corpus: ../shared/corpus/dev not found, generated versions only"),
    }
    sets
}

#[test]
fn every_consecutive_pair_round_trips_and_is_small() {
    let sets = all_sets();
    let mut overall = Vec::new();
    for (effort, params) in encoders() {
        let mut total_raw = 0usize;
        let mut total_sent = 0usize;
        for set in &sets {
            let (mut raw, mut sent) = (0usize, 0usize);
            for pair in set.versions.windows(2) {
                let base = Version::new(Bytes::copy_from_slice(&pair[0]));
                let delta = codec::encode_with(&base, &pair[1], &params).unwrap();
                let back = codec::decode_with(&base, &delta, opts()).unwrap();
                assert!(back == pair[1], "{effort}, {}: round trip differs", set.name);
                raw += pair[1].len();
                sent += delta.len();
            }
            let pct = 100.0 * sent as f64 / raw as f64;
            eprintln!("{effort:>5} {:>30}: {} pairs, {:.3} % of raw", set.name, set.versions.len() - 1, pct);
            // Every source in the corpus and every generated set is well under this.
            assert!(pct < 10.0, "{effort}, {}: deltas are {pct:.2} % of raw", set.name);
            total_raw += raw;
            total_sent += sent;
        }
        let pct = 100.0 * total_sent as f64 / total_raw as f64;
        eprintln!("{effort}, all sets: {pct:.3} % of raw");
        assert!(pct < 1.5, "{effort}: deltas are {pct:.2} % of raw overall");
        overall.push(total_sent);
    }
    // The sampled index gives up some matches for speed, but not many: 1.2× small's bytes on
    // the dev corpus, 1.52× on the generated pages alone (their large bases lose most to the
    // index kept small for the caches).
    assert!(overall[1] * 5 < overall[0] * 8, "fast sends {} bytes against {}", overall[1], overall[0]);
}

#[test]
fn delta_is_far_smaller_than_full_compression() {
    let v = PageGenerator::versions(5, 100_000, 2);
    let delta = codec::encode(&v[0], &v[1]).unwrap();
    let full = codec::compress(&v[1], codec::FULL_LEVEL).unwrap();
    assert!(delta.len() * 5 < full.len(), "delta {} vs full {}", delta.len(), full.len());
    assert_eq!(&delta[..8], &codec::DCZ_MAGIC);
    assert_eq!(&delta[8..40], VersionId::of(&v[0]).as_bytes());
}

fn chunked(rng: &mut SmallRng, data: &[u8]) -> Vec<Vec<u8>> {
    let mut chunks = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = match rng.gen_range(0..4) {
            0 => 1,
            1 => rng.gen_range(1..64),
            2 => rng.gen_range(1..4096),
            _ => rng.gen_range(1..200_000),
        }
        .min(rest.len());
        chunks.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    chunks
}

#[test]
fn streaming_with_random_chunks_equals_one_shot() {
    let mut rng = SmallRng::seed_from_u64(42);
    for (seed, size, (_, params)) in [(1u64, 300usize), (2, 10_000), (3, 100_000), (4, 400_000)]
        .into_iter()
        .flat_map(|(seed, size)| encoders().map(|e| (seed, size, e)))
    {
        let v = PageGenerator::versions(seed, size, 3);
        for pair in v.windows(2) {
            let base = Version::new(pair[0].clone());
            let one_shot = codec::encode_with(&base, &pair[1], &params).unwrap();
            for _ in 0..8 {
                let mut enc = Encoder::dcz(&base, &params, Some(pair[1].len() as u64)).unwrap();
                let mut streamed = Vec::new();
                for c in chunked(&mut rng, &pair[1]) {
                    enc.write(&c, &mut streamed).unwrap();
                }
                enc.finish(&mut streamed).unwrap();
                assert_eq!(streamed, one_shot, "encoder output depends on chunking (size {size})");

                let mut dec = Decoder::dcz(&base, opts()).unwrap();
                let mut out = Vec::new();
                for c in chunked(&mut rng, &one_shot) {
                    dec.write(&c, &mut out).unwrap();
                }
                dec.finish().unwrap();
                assert!(out == pair[1]);
            }
        }
    }
}

#[test]
fn output_does_not_depend_on_whether_write_was_called() {
    // Found by the round_trip fuzz target: an empty body finished without any write.
    let cases = [(&b""[..], &b""[..]), (b"base", b""), (b"", b"x")];
    for ((base, body), (_, params)) in cases.into_iter().flat_map(|c| encoders().map(|e| (c, e))) {
        let base = Version::new(Bytes::copy_from_slice(base));
        let one_shot = codec::encode_with(&base, body, &params).unwrap();
        let mut enc = Encoder::dcz(&base, &params, Some(body.len() as u64)).unwrap();
        let mut out = Vec::new();
        if !body.is_empty() {
            enc.write(body, &mut out).unwrap();
        }
        enc.finish(&mut out).unwrap();
        assert_eq!(out, one_shot);
        let mut z = Encoder::zstd(3, None).unwrap();
        let mut zout = Vec::new();
        z.finish(&mut zout).unwrap();
        let mut z2 = Encoder::zstd(3, None).unwrap();
        let mut zout2 = Vec::new();
        z2.write(b"", &mut zout2).unwrap();
        z2.finish(&mut zout2).unwrap();
        assert_eq!(zout, zout2);
    }
}

#[test]
fn flush_makes_everything_so_far_decodable() {
    for (effort, params) in encoders() {
        flush_releases_input(effort, &params);
    }
}

fn flush_releases_input(effort: &str, params: &DeltaParams) {
    let v = PageGenerator::versions(8, 50_000, 2);
    let base = Version::new(v[0].clone());
    let mut enc = Encoder::dcz(&base, params, None).unwrap();
    let mut dec = Decoder::dcz(&base, opts()).unwrap();
    let (mut wire, mut out) = (Vec::new(), Vec::new());
    let half = v[1].len() / 2;
    enc.write(&v[1][..half], &mut wire).unwrap();
    enc.flush(&mut wire).unwrap();
    dec.write(&wire, &mut out).unwrap();
    assert_eq!(out, &v[1][..half], "{effort}: a flush must release all input so far");
    wire.clear();
    enc.write(&v[1][half..], &mut wire).unwrap();
    enc.finish(&mut wire).unwrap();
    dec.write(&wire, &mut out).unwrap();
    dec.finish().unwrap();
    assert!(out == v[1]);
}

#[test]
fn full_zstd_round_trips_and_streams() {
    let mut rng = SmallRng::seed_from_u64(7);
    let page = PageGenerator::versions(3, 120_000, 1).remove(0);
    let z = codec::compress(&page, codec::FULL_LEVEL).unwrap();
    assert!(z.len() < page.len() / 3);
    assert!(codec::decompress(&z, opts()).unwrap() == page);
    let mut dec = Decoder::zstd(opts()).unwrap();
    let mut out = Vec::new();
    for c in chunked(&mut rng, &z) {
        dec.write(&c, &mut out).unwrap();
    }
    dec.finish().unwrap();
    assert!(out == page);
}

#[test]
fn wrong_base_is_refused_before_any_output() {
    let v = PageGenerator::versions(4, 20_000, 3);
    let delta = codec::encode(&v[0], &v[1]).unwrap();
    let err = codec::decode(&v[2], &delta, opts()).unwrap_err();
    assert!(err.is_base_mismatch(), "{err:?}");
    match err {
        Error::BaseMismatch { expected, found } => {
            assert_eq!(expected, VersionId::of(&v[2]));
            assert_eq!(found, VersionId::of(&v[0]));
        }
        other => panic!("{other:?}"),
    }
    // Streaming: the verdict comes with the 40th byte, and nothing was written.
    let mut dec = Decoder::dcz(&Version::new(v[2].clone()), opts()).unwrap();
    let mut out = Vec::new();
    dec.write(&delta[..39], &mut out).unwrap();
    assert!(dec.write(&delta[39..], &mut out).unwrap_err().is_base_mismatch());
    assert!(out.is_empty());
}

#[test]
fn a_base_differing_in_one_byte_is_refused_even_if_header_is_forged() {
    // The header is the base's hash; a delta whose header was rewritten to match another
    // base still fails verification (content checksum), never yields a wrong page.
    let v = PageGenerator::versions(6, 20_000, 2);
    let mut other = v[0].clone();
    let mid = other.len() / 2;
    other[mid] ^= 0x20;
    let mut delta = codec::encode(&v[0], &v[1]).unwrap();
    delta[8..40].copy_from_slice(VersionId::of(&other).as_bytes());
    match codec::decode(&other, &delta, opts()) {
        Err(Error::ChecksumMismatch) | Err(Error::Corrupt(_)) => {}
        Ok(out) => assert!(out == v[1], "a wrong page was produced"),
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

#[test]
fn truncation_anywhere_is_an_error() {
    let v = PageGenerator::versions(12, 6_000, 2);
    let delta = codec::encode(&v[0], &v[1]).unwrap();
    for cut in 0..delta.len() {
        let err = codec::decode(&v[0], &delta[..cut], opts()).unwrap_err();
        assert!(matches!(err, Error::Truncated), "cut at {cut}: {err:?}");
    }
    let z = codec::compress(&v[1], 3).unwrap();
    for cut in 0..z.len() {
        assert!(codec::decompress(&z[..cut], opts()).is_err(), "zstd cut at {cut}");
    }
}

#[test]
fn every_single_bit_flip_is_caught_or_harmless() {
    let v = PageGenerator::versions(13, 3_000, 2);
    let delta = codec::encode(&v[0], &v[1]).unwrap();
    let mut caught = 0;
    let mut harmless = 0;
    for byte in 0..delta.len() {
        for bit in 0..8 {
            let mut bad = delta.clone();
            bad[byte] ^= 1 << bit;
            match codec::decode(&v[0], &bad, opts()) {
                Err(_) => caught += 1,
                // Some header bits (window size, frame content size absent) do not change
                // the decoded bytes; those must then be exactly right.
                Ok(out) => {
                    assert!(out == v[1], "bit {bit} of byte {byte}: wrong output served");
                    harmless += 1;
                }
            }
        }
    }
    eprintln!("bit flips: {caught} caught, {harmless} harmless");
    assert!(caught > (caught + harmless) * 9 / 10);
}

#[test]
fn output_over_the_limit_is_refused() {
    let v = PageGenerator::versions(14, 50_000, 2);
    let delta = codec::encode(&v[0], &v[1]).unwrap();
    let limit = v[1].len() as u64 - 1;
    let small = DecodeOptions { max_output: limit, ..opts() };
    assert_eq!(codec::decode(&v[0], &delta, small).unwrap_err(), Error::TooLarge { limit });
    let exact = DecodeOptions { max_output: v[1].len() as u64, ..opts() };
    assert!(codec::decode(&v[0], &delta, exact).is_ok());
}

#[test]
fn decompression_bomb_stops_at_the_limit_without_allocating_it() {
    // 100 MiB of zeros compress to a few KB.
    let zeros = vec![0u8; 100 << 20];
    let bomb = codec::compress(&zeros, 1).unwrap();
    drop(zeros);
    assert!(bomb.len() < 100_000);
    let limit = 1 << 20;
    let mut dec = Decoder::zstd(DecodeOptions { max_output: limit, ..opts() }).unwrap();
    let mut out = Vec::new();
    let err = dec.write(&bomb, &mut out).unwrap_err();
    assert_eq!(err, Error::TooLarge { limit });
    assert!(out.len() as u64 <= limit + 1);
    assert!(out.capacity() < 4 << 20, "decoder allocated {} bytes", out.capacity());

    // The same bomb declaring its 100 MiB in the frame header: the room reserved for a declared
    // size stays within the limit too.
    let mut with_size = Vec::with_capacity(1 << 20);
    zstd_safe::CCtx::create()
        .compress(&mut with_size, &vec![0u8; 100 << 20], 1)
        .map_err(zstd_safe::get_error_name)
        .unwrap();
    assert_eq!(zstd_safe::get_frame_content_size(&with_size).ok().flatten(), Some(100 << 20));
    let mut dec = Decoder::zstd(DecodeOptions { max_output: limit, require_checksum: false }).unwrap();
    let mut out = Vec::new();
    assert_eq!(dec.write(&with_size, &mut out).unwrap_err(), Error::TooLarge { limit });
    assert!(out.capacity() < 4 << 20, "decoder allocated {} bytes", out.capacity());
}

/// Found by the decode_raw fuzz target: a zstd frame header (single segment, 2-byte size) whose
/// remaining bytes form a complete skippable frame. zstd 1.5.7, given the header split across
/// calls, decoded the skippable frame instead and reported an empty, finished frame.
const SPLIT_HEADER_SKIPPABLE: &[u8] = &[
    0x28, 0xb5, 0x2f, 0xfd, 0x64, 0x5e, 0x2a, 0x4d, 0x18, 0x28, 0x00, 0x00, 0x00, 0x64, 0x2b, 0xf5, 0x0b, 0x2b, 0xa6,
    0x86, 0x1a, 0x9e, 0x29, 0xb2, 0x7b, 0xa1, 0x30, 0xd0, 0x50, 0x28, 0x04, 0xfd, 0x29, 0xb2, 0x7b, 0xa1, 0x30, 0xd0,
    0x50, 0x28, 0x04, 0xfd, 0xb5, 0x2f, 0x20, 0x75, 0x0d, 0x00, 0x3b, 0x1b, 0x70, 0x7c, 0x0f,
];

#[test]
fn a_frame_header_split_across_chunks_is_decoded_as_one() {
    // Every split of the crafted input is refused, as zstd refuses it whole.
    assert!(codec::decompress(SPLIT_HEADER_SKIPPABLE, opts()).is_err());
    for split in 1..SPLIT_HEADER_SKIPPABLE.len() {
        let mut dec = Decoder::zstd(opts()).unwrap();
        let mut out = Vec::new();
        let verdict = dec
            .write(&SPLIT_HEADER_SKIPPABLE[..split], &mut out)
            .and_then(|()| dec.write(&SPLIT_HEADER_SKIPPABLE[split..], &mut out))
            .and_then(|()| dec.finish());
        assert!(verdict.is_err(), "split at {split}: accepted {} bytes", out.len());
    }
    // And a valid body still decodes with its header cut at every byte.
    let page = PageGenerator::versions(19, 20_000, 1).remove(0);
    let z = codec::compress(&page, 3).unwrap();
    for split in 1..20 {
        let mut dec = Decoder::zstd(opts()).unwrap();
        let mut out = Vec::new();
        for piece in [&z[..split], &z[split..]] {
            dec.write(piece, &mut out).unwrap();
        }
        dec.finish().unwrap();
        assert!(out == page, "split at {split}");
    }
}

#[test]
fn a_version_frame_may_follow_and_names_the_body() {
    let v = PageGenerator::versions(23, 8_000, 2);
    let base = Version::new(v[0].clone());
    let mut body = codec::encode(&v[0], &v[1]).unwrap();
    let id = VersionId::of(&v[1]);
    body.extend_from_slice(&codec::version_frame(&id));
    for split in 0..body.len() {
        let mut dec = Decoder::dcz(&base, opts()).unwrap();
        let mut out = Vec::new();
        dec.write(&body[..split], &mut out).unwrap();
        dec.write(&body[split..], &mut out).unwrap();
        dec.finish().unwrap();
        assert!(out == v[1]);
        assert_eq!(dec.version_id(), Some(id), "split at {split}");
    }
    // Without it there is no id; with half of it the body is truncated.
    let plain = &body[..body.len() - codec::VERSION_FRAME_LEN];
    let mut dec = Decoder::dcz(&base, opts()).unwrap();
    dec.write(plain, &mut Vec::new()).unwrap();
    dec.finish().unwrap();
    assert_eq!(dec.version_id(), None);
    let mut dec = Decoder::dcz(&base, opts()).unwrap();
    dec.write(&body[..body.len() - 5], &mut Vec::new()).unwrap();
    assert_eq!(dec.finish().unwrap_err(), Error::Truncated);
    // Another skippable frame, two version frames, or bytes after one are refused.
    let mut other = plain.to_vec();
    other.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 0x00, 0x00, 0x00, 0x00]);
    assert!(matches!(codec::decode(&v[0], &other, opts()).unwrap_err(), Error::TrailingData(_)));
    let mut twice = body.clone();
    twice.extend_from_slice(&codec::version_frame(&id));
    assert!(matches!(codec::decode(&v[0], &twice, opts()).unwrap_err(), Error::TrailingData(_)));
    let mut extra = body.clone();
    extra.push(0);
    assert!(matches!(codec::decode(&v[0], &extra, opts()).unwrap_err(), Error::TrailingData(1)));
}

#[test]
fn trailing_bytes_after_the_frame_are_refused() {
    let v = PageGenerator::versions(15, 5_000, 2);
    let mut delta = codec::encode(&v[0], &v[1]).unwrap();
    delta.extend_from_slice(b"extra");
    assert_eq!(codec::decode(&v[0], &delta, opts()).unwrap_err(), Error::TrailingData(5));
}

#[test]
fn frames_without_checksum_or_magic_are_refused() {
    let v = PageGenerator::versions(16, 5_000, 2);
    // A valid frame made without a checksum, as a third-party encoder might.
    let mut cctx = zstd_safe::CCtx::create();
    cctx.set_parameter(zstd_safe::CParameter::ChecksumFlag(false)).unwrap();
    cctx.ref_prefix(&v[0]).unwrap();
    let mut frame = Vec::with_capacity(v[1].len());
    cctx.compress2(&mut frame, &v[1]).unwrap();
    let mut body = codec::dcz_header(&VersionId::of(&v[0])).to_vec();
    body.extend_from_slice(&frame);
    assert_eq!(codec::decode(&v[0], &body, opts()).unwrap_err(), Error::MissingChecksum);
    let lax = DecodeOptions { require_checksum: false, ..opts() };
    assert!(codec::decode(&v[0], &body, lax).unwrap() == v[1]);

    let mut not_dcz = body.clone();
    not_dcz[0] = 0;
    assert!(matches!(codec::decode(&v[0], &not_dcz, opts()).unwrap_err(), Error::BadHeader { .. }));
    let mut not_zstd = body;
    not_zstd[40] = 0;
    assert!(matches!(codec::decode(&v[0], &not_zstd, opts()).unwrap_err(), Error::BadHeader { .. }));
}

#[test]
fn windows_beyond_the_rfc_limit_are_refused() {
    // A frame header declaring a 1 GiB window (window descriptor exponent 20 → 2^30).
    let mut body = codec::dcz_header(&VersionId::of(b"")).to_vec();
    body.extend_from_slice(&[0x28, 0xb5, 0x2f, 0xfd, 0x04, 20 << 3, 0x01, 0x00, 0x00]);
    let err = codec::decode(b"", &body, opts()).unwrap_err();
    assert_eq!(err, Error::WindowTooLarge { limit: 8 << 20 });
}

#[test]
fn empty_bodies_and_identical_versions() {
    let page = PageGenerator::versions(17, 10_000, 1).remove(0);
    for (effort, params) in encoders() {
        for (base, new) in [(&b""[..], &b""[..]), (b"", &page[..]), (&page[..], b""), (&page[..], &page[..])] {
            let base = Version::new(Bytes::copy_from_slice(base));
            let delta = codec::encode_with(&base, new, &params).unwrap();
            assert_eq!(codec::decode_with(&base, &delta, opts()).unwrap(), new, "{effort}");
        }
        let same = codec::encode_with(&Version::new(page.clone()), &page, &params).unwrap();
        assert!(same.len() < 40 + 40, "{effort}: identical versions cost {} bytes", same.len());
    }
    assert_eq!(codec::decompress(&codec::compress(b"", 3).unwrap(), opts()).unwrap(), b"");
    // A body starting with zstd's dictionary magic is still used as raw content.
    let mut tricky = vec![0x37, 0xa4, 0x30, 0xec];
    tricky.extend_from_slice(&page);
    let delta = codec::encode(&tricky, &page).unwrap();
    assert!(codec::decode(&tricky, &delta, opts()).unwrap() == page);
}

#[test]
fn eight_megabyte_body() {
    let mut rng = SmallRng::seed_from_u64(8);
    let mut base = Vec::with_capacity(8 << 20);
    let mut g = PageGenerator::new(99, 200_000);
    while base.len() < 8 << 20 {
        base.extend_from_slice(&g.next_page());
    }
    base.truncate(8 << 20);
    let mut new = base.clone();
    for _ in 0..50 {
        let at = rng.gen_range(0..new.len() - 100);
        new[at..at + 20].copy_from_slice(b"<b>changed content</b>"[..20].as_ref());
    }
    let base = Version::new(base);
    for (effort, params) in encoders() {
        let delta = codec::encode_with(&base, &new, &params).unwrap();
        assert!(delta.len() < 20_000, "{effort}: 8 MB delta with 50 edits is {} bytes", delta.len());
        let big = DecodeOptions { max_output: 16 << 20, ..opts() };
        assert!(codec::decode_with(&base, &delta, big).unwrap() == new, "{effort}");
    }
}

#[test]
fn codec_refuses_use_after_finish_or_failure() {
    let v = PageGenerator::versions(18, 3_000, 2);
    let base = Version::new(v[0].clone());
    let mut enc = Encoder::dcz(&base, &DeltaParams::default(), None).unwrap();
    let mut out = Vec::new();
    enc.write(&v[1], &mut out).unwrap();
    enc.finish(&mut out).unwrap();
    assert!(matches!(enc.write(b"x", &mut out), Err(Error::Finished(_))));
    let mut dec = Decoder::dcz(&Version::new(v[1].clone()), opts()).unwrap();
    assert!(dec.write(&out, &mut Vec::new()).is_err());
    assert!(matches!(dec.write(&out, &mut Vec::new()), Err(Error::Finished(_))));
}

#[test]
fn the_fast_encoder_hands_over_its_body_and_streams_past_its_buffer_limit() {
    let v = PageGenerator::versions(21, 50_000, 2);
    let base = Version::new(v[0].clone());
    let mut enc = Encoder::dcz(&base, &DeltaParams::fast(), None).unwrap();
    assert!(enc.keeps_body());
    let mut out = Vec::new();
    enc.write(&v[1], &mut out).unwrap();
    assert_eq!(enc.take_body(), None, "the body is handed over only once the frame is finished");
    enc.finish(&mut out).unwrap();
    assert!(codec::decode_with(&base, &out, opts()).unwrap() == v[1]);
    assert!(enc.take_body().as_deref() == Some(&v[1][..]));

    // A chunked body with no length up front, longer than the 32 MiB the index buffers.
    let mut enc = Encoder::dcz(&base, &DeltaParams::fast(), None).unwrap();
    let (mut wire, mut body) = (Vec::new(), Vec::new());
    while body.len() <= 33 << 20 {
        enc.write(&v[1], &mut wire).unwrap();
        body.extend_from_slice(&v[1]);
    }
    assert!(!enc.keeps_body(), "past the limit the encoder streams");
    assert!(wire.len() > codec::DCZ_HEADER_LEN + 1000, "and its output flows before the body ends: {}", wire.len());
    enc.finish(&mut wire).unwrap();
    assert_eq!(enc.take_body(), None);
    let big = DecodeOptions { max_output: 64 << 20, ..opts() };
    assert!(codec::decode_with(&base, &wire, big).unwrap() == body);

    // A base longer than the index takes is left to zstd's own match finder from the start.
    let huge = Version::new(Bytes::from(body));
    assert!(!Encoder::dcz(&huge, &DeltaParams::fast(), None).unwrap().keeps_body());
}

#[test]
fn an_unchanged_frame_decodes_to_the_base_it_names_and_nothing_else() {
    let v = PageGenerator::versions(31, 60_000, 2);
    let base = Version::new(Bytes::from(v[0].clone()));
    let frame = codec::unchanged_frame(&base.id);
    assert_eq!(frame.len(), codec::UNCHANGED_LEN);
    for step in [1, 7, codec::UNCHANGED_LEN] {
        let mut d = Decoder::dcz(&base, opts()).unwrap();
        let mut out = Vec::new();
        for piece in frame.chunks(step) {
            d.write(piece, &mut out).unwrap();
        }
        d.finish().unwrap();
        assert!(out == v[0], "step {step}: the output is the base");
        assert!(d.unchanged());
        assert_eq!((d.produced(), d.version_id()), (v[0].len() as u64, Some(base.id)));
    }
    // A full delta is not unchanged.
    let delta = codec::encode(&v[0], &v[1]).unwrap();
    let mut d = Decoder::dcz(&base, opts()).unwrap();
    d.write(&delta, &mut Vec::new()).unwrap();
    assert!(!d.unchanged());

    // Naming another base: a mismatch, before any output.
    let other = codec::unchanged_frame(&VersionId::of(&v[1]));
    let mut out = Vec::new();
    let e = Decoder::dcz(&base, opts()).unwrap().write(&other, &mut out).unwrap_err();
    assert!(matches!(e, Error::BaseMismatch { .. }), "{e:?}");
    assert!(out.is_empty());
    // Anything after it: refused.
    let mut trailing = frame.to_vec();
    trailing.push(0);
    let e = codec::decode_with(&base, &trailing, opts()).unwrap_err();
    assert!(matches!(e, Error::TrailingData(_)), "{e:?}");
    let mut trailing = frame.to_vec();
    trailing.extend_from_slice(&codec::version_frame(&base.id));
    assert!(codec::decode_with(&base, &trailing, opts()).is_err(), "not even a version frame");
    // Cut short: not a body.
    let mut d = Decoder::dcz(&base, opts()).unwrap();
    d.write(&frame[..codec::UNCHANGED_LEN - 1], &mut Vec::new()).unwrap();
    assert!(matches!(d.finish(), Err(Error::Truncated)));
    // Over the output limit: refused.
    let small = DecodeOptions { max_output: v[0].len() as u64 - 1, require_checksum: true };
    assert!(matches!(codec::decode_with(&base, &frame, small), Err(Error::TooLarge { .. })));
    // Without a base (a zstd body), it is no zstd frame.
    assert!(codec::decompress(&frame, opts()).is_err());
}

//! `railproxy delta bench`: bytes sent and speed per source, dcz beside zstd and gzip.

use std::hint::black_box;
use std::io::{Read as _, Write as _};
use std::time::Instant;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use delta::Version;
use delta::codec::{self, DecodeOptions, Decoder, DeltaParams, Encoder};
use delta::corpus::{VersionSet, load_version_sets};

use super::BenchArgs;
use crate::exit::{CmdResult, Failure, NO_INPUT};
use crate::units::thousands;

/// The required and goal figures for dcz on the dev corpus (issue 2), printed as a verdict.
const REQUIRED_PCT: f64 = 0.40;
const REQUIRED_MBS: f64 = 250.0;
const GOAL_PCT: f64 = 0.30;

/// A way of sending version N+1 given the earlier versions.
pub trait Method {
    fn label(&self) -> String;
    /// What the encoder uses from the earlier versions (untimed: a version store holds it).
    fn prepare(&self, earlier: &[Bytes]) -> Version;
    fn encode(&self, dict: &Version, new: &[u8]) -> anyhow::Result<Vec<u8>>;
    fn decode(&self, dict: &Version, encoded: &[u8]) -> anyhow::Result<Vec<u8>>;
    /// Methods slower than ~20 MB/s are timed once, not `--repeat` times.
    fn slow(&self) -> bool {
        false
    }
}

fn decode_opts() -> DecodeOptions {
    DecodeOptions { max_output: 1 << 30, require_checksum: true }
}

/// RFC 9842 dcz against the immediately previous version(s).
pub struct Dcz {
    pub label: String,
    pub params: DeltaParams,
    /// How many earlier versions, concatenated oldest first, form the dictionary.
    pub bases: usize,
    pub slow: bool,
}

impl Method for Dcz {
    fn label(&self) -> String {
        self.label.clone()
    }
    fn prepare(&self, earlier: &[Bytes]) -> Version {
        let from = earlier.len().saturating_sub(self.bases);
        match &earlier[from..] {
            [one] => Version::new(one.clone()),
            many => Version::new(many.concat()),
        }
    }
    fn encode(&self, dict: &Version, new: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut enc = Encoder::dcz(dict, &self.params, Some(new.len() as u64))?;
        let mut out = Vec::with_capacity(new.len() / 32 + 256);
        enc.write(new, &mut out)?;
        enc.finish(&mut out)?;
        Ok(out)
    }
    fn decode(&self, dict: &Version, encoded: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut dec = Decoder::dcz(dict, decode_opts())?;
        let mut out = Vec::with_capacity(dict.body.len() + 4096);
        dec.write(encoded, &mut out)?;
        dec.finish()?;
        Ok(out)
    }
    fn slow(&self) -> bool {
        self.slow
    }
}

/// zstd of the new version alone (what the tunnel sends when the origin has no base).
pub struct ZstdFull(pub i32);

impl Method for ZstdFull {
    fn label(&self) -> String {
        format!("zstd -{}", self.0)
    }
    fn prepare(&self, _: &[Bytes]) -> Version {
        Version::new(Bytes::new())
    }
    fn encode(&self, _: &Version, new: &[u8]) -> anyhow::Result<Vec<u8>> {
        Ok(codec::compress(new, self.0)?)
    }
    fn decode(&self, _: &Version, encoded: &[u8]) -> anyhow::Result<Vec<u8>> {
        Ok(codec::decompress(encoded, decode_opts())?)
    }
}

/// gzip of the new version alone (what a plain proxy sends).
pub struct Gzip(pub u32);

impl Method for Gzip {
    fn label(&self) -> String {
        format!("gzip -{}", self.0)
    }
    fn prepare(&self, _: &[Bytes]) -> Version {
        Version::new(Bytes::new())
    }
    fn encode(&self, _: &Version, new: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut enc =
            flate2::write::GzEncoder::new(Vec::with_capacity(new.len() / 4), flate2::Compression::new(self.0));
        enc.write_all(new)?;
        Ok(enc.finish()?)
    }
    fn decode(&self, _: &Version, encoded: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(encoded.len() * 8);
        flate2::read::GzDecoder::new(encoded).read_to_end(&mut out)?;
        Ok(out)
    }
}

/// One pair, measured.
#[derive(Debug, Clone, Copy)]
struct Pair {
    raw: usize,
    sent: usize,
    encode_mbs: f64,
    decode_mbs: f64,
}

/// A method's figures over a group of pairs.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    pub pairs: usize,
    pub raw: u64,
    pub sent: u64,
    /// Median over pairs, MB/s of the new version's raw bytes.
    pub encode_mbs: f64,
    pub decode_mbs: f64,
}

impl Figures {
    fn of(pairs: &[Pair]) -> Self {
        Figures {
            pairs: pairs.len(),
            raw: pairs.iter().map(|p| p.raw as u64).sum(),
            sent: pairs.iter().map(|p| p.sent as u64).sum(),
            encode_mbs: median(pairs.iter().map(|p| p.encode_mbs)),
            decode_mbs: median(pairs.iter().map(|p| p.decode_mbs)),
        }
    }

    pub fn pct(&self) -> f64 {
        if self.raw == 0 { 0.0 } else { 100.0 * self.sent as f64 / self.raw as f64 }
    }
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 }
}

/// Figures per set and over all sets.
pub struct Measured {
    pub per_set: Vec<Figures>,
    pub total: Figures,
}

/// Runs `method` over every consecutive pair of every set, checking each round trip.
pub fn measure(sets: &[VersionSet], method: &dyn Method, repeat: u32) -> anyhow::Result<Measured> {
    let repeat = if method.slow() { 1 } else { repeat };
    let mut all = Vec::new();
    let mut per_set = Vec::new();
    for set in sets {
        let versions: Vec<Bytes> = set.versions.iter().map(|v| Bytes::copy_from_slice(v)).collect();
        let mut pairs = Vec::new();
        for i in 1..versions.len() {
            let new = &versions[i];
            let dict = method.prepare(&versions[..i]);
            let (encoded, encode_s) = best_of(repeat, || method.encode(&dict, new))?;
            let (decoded, decode_s) = best_of(repeat, || method.decode(&dict, &encoded))?;
            if decoded != new.as_ref() {
                bail!("{}: {} of {} did not round-trip", method.label(), i, set.name);
            }
            pairs.push(Pair {
                raw: new.len(),
                sent: encoded.len(),
                encode_mbs: new.len() as f64 / encode_s / 1e6,
                decode_mbs: new.len() as f64 / decode_s / 1e6,
            });
        }
        per_set.push(Figures::of(&pairs));
        all.extend(pairs);
    }
    Ok(Measured { per_set, total: Figures::of(&all) })
}

fn best_of(repeat: u32, mut f: impl FnMut() -> anyhow::Result<Vec<u8>>) -> anyhow::Result<(Vec<u8>, f64)> {
    let mut best = f64::MAX;
    let mut out = Vec::new();
    for _ in 0..repeat {
        let start = Instant::now();
        out = black_box(f()?);
        best = best.min(start.elapsed().as_secs_f64());
    }
    // A clock tick of zero would print infinite speed; one nanosecond is the floor.
    Ok((out, best.max(1e-9)))
}

pub fn load(args: &BenchArgs) -> Result<Vec<VersionSet>, Failure> {
    let mut sets = Vec::new();
    for dir in &args.dirs {
        let found = load_version_sets(dir)
            .with_context(|| format!("reading versions from {}", dir.display()))
            .map_err(|e| Failure::new(NO_INPUT, e))?;
        sets.extend(found);
    }
    Ok(sets)
}

pub fn run(args: &BenchArgs) -> CmdResult {
    let sets = load(args)?;
    // The codec's default (`effort: small`), then the origin's default (`effort: fast`).
    let methods: [&dyn Method; 4] = [
        &Dcz { label: "dcz".into(), params: DeltaParams::default(), bases: 1, slow: false },
        &Dcz { label: "dcz fast".into(), params: DeltaParams::fast(), bases: 1, slow: false },
        &ZstdFull(3),
        &Gzip(6),
    ];
    let results = methods.iter().map(|m| measure(&sets, *m, args.repeat)).collect::<anyhow::Result<Vec<_>>>()?;
    print_table(&sets, &methods, &results);
    let dcz = results[0].total;
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!();
    println!(
        "dcz total: {:.3} % of raw bytes at {:.0} MB/s median encode (one core, fastest of {} runs per pair).",
        dcz.pct(),
        dcz.encode_mbs,
        args.repeat
    );
    println!(
        "required <= {REQUIRED_PCT:.2} % at >= {REQUIRED_MBS:.0} MB/s: {}; goal <= {GOAL_PCT:.2} %: {}.",
        verdict(dcz.pct() <= REQUIRED_PCT && dcz.encode_mbs >= REQUIRED_MBS),
        verdict(dcz.pct() <= GOAL_PCT)
    );
    let fast = results[1].total;
    println!(
        "dcz fast (delta.effort: fast, the origin's default): {:.3} % of raw bytes at {:.0} MB/s median encode.",
        fast.pct(),
        fast.encode_mbs
    );
    Ok(())
}

fn print_table(sets: &[VersionSet], methods: &[&dyn Method], results: &[Measured]) {
    let mut head = format!("| {:<28} | {:>5} | {:>12} |", "source", "pairs", "raw bytes");
    let mut rule = format!("|{:-<30}|{:->6}:|{:->13}:|", "", "", "");
    for m in methods {
        let l = m.label();
        head.push_str(&format!(
            " {:>12} | {:>7} | {:>8} | {:>8} |",
            format!("{l} sent"),
            "% raw",
            "enc MB/s",
            "dec MB/s"
        ));
        rule.push_str(&format!("{:->13}:|{:->8}:|{:->9}:|{:->9}:|", "", "", "", ""));
    }
    println!("{head}\n{rule}");
    let row = |name: &str, pick: &dyn Fn(&Measured) -> Figures| {
        let first = pick(&results[0]);
        let mut line = format!("| {:<28} | {:>5} | {:>12} |", name, first.pairs, thousands(first.raw));
        for r in results {
            let f = pick(r);
            line.push_str(&format!(
                " {:>12} | {:>6.3}% | {:>8.0} | {:>8.0} |",
                thousands(f.sent),
                f.pct(),
                f.encode_mbs,
                f.decode_mbs
            ));
        }
        println!("{line}");
    };
    for (i, set) in sets.iter().enumerate() {
        row(&set.name, &|m: &Measured| m.per_set[i]);
    }
    row("total", &|m: &Measured| m.total);
}

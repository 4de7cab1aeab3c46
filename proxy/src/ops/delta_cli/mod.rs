//! `railproxy delta …`: the codec from the command line, for operators and for measuring.

mod bench;
mod explain;
mod files;
mod sweep;
mod sweep_brotli;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use delta::Version;
use delta::codec::{self, DecodeOptions, DeltaParams};

use crate::exit::{CmdResult, DATA_ERR, Failure};

#[derive(Debug, Subcommand)]
pub enum DeltaCmd {
    /// Encode NEW as an RFC 9842 dcz delta against the base OLD.
    Encode {
        /// The version the receiver holds.
        #[arg(long, value_name = "OLD")]
        base: PathBuf,
        /// The new version.
        #[arg(value_name = "NEW")]
        new: PathBuf,
        /// Output file, or - for standard output.
        #[arg(short, long, value_name = "OUT")]
        output: PathBuf,
        /// Plain zstd level instead of railproxy's tuned parameters.
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        level: Option<i32>,
    },
    /// Decode a dcz DELTA against the base OLD; verified, or nothing is written.
    Decode {
        /// The base the delta was made against.
        #[arg(long, value_name = "OLD")]
        base: PathBuf,
        /// The dcz body.
        #[arg(value_name = "DELTA")]
        delta: PathBuf,
        /// Output file, or - for standard output.
        #[arg(short, long, value_name = "OUT")]
        output: PathBuf,
        /// Largest decoded size accepted (e.g. 64M).
        #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = crate::units::parse_size)]
        max_output: u64,
    },
    /// Measure the codec on folders of consecutive versions (000.*, 001.*, …).
    Bench(BenchArgs),
    /// Summarise what changed between OLD and NEW, and what the delta costs.
    Explain {
        /// The older version.
        #[arg(long, value_name = "OLD")]
        base: PathBuf,
        /// The newer version.
        #[arg(value_name = "NEW")]
        new: PathBuf,
        /// Changed regions to show.
        #[arg(long, default_value_t = 5)]
        hunks: usize,
    },
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Folders holding 000.*, 001.*, … or sub-folders that do.
    #[arg(value_name = "DIR", required = true)]
    pub dirs: Vec<PathBuf>,
    /// Times each encode and decode is run; the fastest counts.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// Instead of the table, sweep encoder parameters and print what each gives.
    #[arg(long)]
    pub sweep: bool,
    /// With --sweep: only the encoders whose label contains this text (or one of several, split by `|`).
    #[arg(long, requires = "sweep", value_name = "TEXT")]
    pub only: Option<String>,
}

pub fn run(cmd: DeltaCmd) -> CmdResult {
    match cmd {
        DeltaCmd::Encode { base, new, output, level } => {
            let base = Version::new(files::read(&base)?);
            let new = files::read(&new)?;
            let params = level.map_or_else(DeltaParams::default, DeltaParams::level);
            let delta = codec::encode_with(&base, &new, &params).context("encoding")?;
            files::write(&output, &delta)
        }
        DeltaCmd::Decode { base, delta, output, max_output } => {
            let base_path = base.clone();
            let base = Version::new(files::read(&base)?);
            let body = files::read(&delta)?;
            let opts = DecodeOptions { max_output, require_checksum: true };
            let out = codec::decode_with(&base, &body, opts).map_err(|e| {
                Failure::new(
                    DATA_ERR,
                    anyhow::Error::new(e).context(format!(
                        "{} does not decode against {}",
                        delta.display(),
                        base_path.display()
                    )),
                )
            })?;
            files::write(&output, &out)
        }
        DeltaCmd::Bench(args) if args.sweep => sweep::run(&args),
        DeltaCmd::Bench(args) => bench::run(&args),
        DeltaCmd::Explain { base, new, hunks } => explain::run(&base, &new, hunks),
    }
}

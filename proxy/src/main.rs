//! `railproxy`: one binary, two modes (edge and origin) joined by a delta-compressing tunnel,
//! plus the operator commands around them.

mod delta;
mod exit;
mod units;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "railproxy", version, about, long_about = None)]
#[command(
    after_help = "Exit status: 0 ok, 1 failure, 2 bad arguments, 64 bad configuration, \
65 input data refused (e.g. a delta that does not verify), 66 input not readable, 73 output not writable."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The delta codec: encode, decode, measure, explain.
    #[command(subcommand)]
    Delta(delta::DeltaCmd),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Delta(cmd) => delta::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("railproxy: {failure}");
            }
            failure.exit_code()
        }
    }
}

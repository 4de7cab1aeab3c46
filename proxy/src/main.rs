//! `railproxy`: one binary, two modes (edge and origin) joined by a delta-compressing tunnel,
//! plus the operator commands around them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// jemalloc, with background threads that hand freed memory back to the system: after a burst
/// of thousands of connections, resident memory comes back near where it started within seconds.
/// mimalloc (before) used ~10 % less CPU per request in `make bench`, but returns memory only
/// from threads that keep allocating, and a proxy's worker threads go quiet after a burst: it
/// kept 100-500 MB (BENCHMARKS.md, issue 29).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start: purging by background threads, dirty pages given back
/// after about a second, and at once rather than kept as lazily freed ("muzzy") pages, which
/// still count as resident until the kernel needs them.
static JEMALLOC_CONF: [u8; 60] = *b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

// SAFETY: jemalloc reads this symbol (its `const char *malloc_conf`, under tikv-jemallocator's
// `_rjem_` prefix) once, at its initialisation; `Option<&u8>` has a pointer's layout, and it
// points at a NUL-terminated string that lives as long as the process.
#[allow(unsafe_code, non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: Option<&u8> = Some(&JEMALLOC_CONF[0]);

use railproxy::config::{Config, Mode};
use railproxy::exit::{CmdResult, Failure, USAGE};
use railproxy::ops::{certs, delta_cli, fleet};
use railproxy::{daemon, logging, run};

#[derive(Debug, Parser)]
#[command(name = "railproxy", version, about, long_about = None)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
#[command(after_help = "Run a proxy:  railproxy --mode edge -c conf/edge.yaml
               railproxy --mode origin -c conf/origin.yaml

Exit status: 0 ok, 1 failure, 2 bad arguments, 64 bad configuration, \
65 input data refused (e.g. a delta that does not verify), 66 input not readable, 73 output not writable.")]
struct Cli {
    /// Which side of the tunnel to run.
    #[arg(long, value_enum, requires = "config")]
    mode: Option<Mode>,
    /// Configuration file (YAML).
    #[arg(short = 'c', long = "config", value_name = "FILE", requires = "mode")]
    config: Option<PathBuf>,
    /// Take the listening sockets over from a running process (zero-downtime upgrade); send the
    /// old process SIGQUIT once this one is up.
    #[arg(long)]
    upgrade: bool,
    /// Run in the background: the command returns once the daemon has written `server.pid_file`
    /// (systemd `Type=forking`, which lets `--upgrade` work under systemd).
    #[arg(short = 'd', long)]
    daemon: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a configuration file: exit 0, or 64 listing every problem with its key path.
    Check {
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: PathBuf,
        /// Do not resolve the names the file configures (checking on a machine other than the
        /// one it is for); everything else is checked.
        #[arg(long)]
        no_resolve: bool,
    },
    /// Create a private CA and the origin and edge certificates the tunnel uses; `certs issue`
    /// issues one host's certificate from an existing CA.
    #[command(after_help = certs::HELP, args_conflicts_with_subcommands = true)]
    Certs {
        /// Folder to write the CA and the demo certificates into.
        #[arg(long, value_name = "DIR", required = true)]
        out: Option<PathBuf>,
        #[command(subcommand)]
        action: Option<certs::CertsCmd>,
    },
    /// Fleet deployment: render every host's configuration, certificates and systemd unit.
    #[command(subcommand)]
    Fleet(fleet::FleetCmd),
    /// The delta codec: encode, decode, measure, explain.
    #[command(subcommand)]
    Delta(delta_cli::DeltaCmd),
}

fn unix_now() -> i64 {
    std::time::SystemTime::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_secs() as i64)
}

fn load(path: &Path) -> Result<Config, Failure> {
    load_with(path, true)
}

fn load_with(path: &Path, resolve: bool) -> Result<Config, Failure> {
    Config::load_with(path, resolve).map_err(|e| Failure::new(USAGE, e))
}

fn run_proxy(mode: Mode, path: &Path, upgrade: bool, daemon: bool) -> CmdResult {
    let config = load(path)?;
    if config.mode() != mode {
        return Err(Failure::new(
            USAGE,
            anyhow::anyhow!("{}: mode: the file says {}, but --mode says {mode}", path.display(), config.mode()),
        ));
    }
    if daemon {
        let server = match &config {
            Config::Edge(c) => &c.server,
            Config::Origin(c) => &c.server,
        };
        daemon::daemonize(&server.pid_file, server.error_log.as_deref())?;
    }
    logging::init();
    for w in config.certificate_warnings(unix_now()) {
        log::warn!("{w}");
    }
    let result = match config {
        Config::Edge(c) => run::edge(*c, upgrade),
        Config::Origin(c) => run::origin(*c, upgrade),
    };
    result.map_err(Failure::from)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match (cli.command, cli.mode, cli.config) {
        (Some(Command::Check { config, no_resolve }), _, _) => load_with(&config, !no_resolve).map(|c| {
            for w in c.certificate_warnings(unix_now()) {
                println!("warning: {w}");
            }
            println!("{}: ok ({} configuration)", config.display(), c.mode());
        }),
        (Some(Command::Certs { action: Some(cmd), .. }), _, _) => certs::run_cmd(cmd),
        (Some(Command::Certs { out: Some(out), .. }), _, _) => certs::run(&out),
        (Some(Command::Certs { .. }), _, _) => {
            Err(Failure::new(USAGE, anyhow::anyhow!("railproxy certs: give --out DIR, or `certs issue` (see --help)")))
        }
        (Some(Command::Delta(cmd)), _, _) => delta_cli::run(cmd),
        (Some(Command::Fleet(cmd)), _, _) => fleet::run(cmd),
        (None, Some(mode), Some(path)) => run_proxy(mode, &path, cli.upgrade, cli.daemon),
        (None, _, _) => Err(Failure::new(
            USAGE,
            anyhow::anyhow!("nothing to do: give --mode and -c FILE, or a command (see --help)"),
        )),
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

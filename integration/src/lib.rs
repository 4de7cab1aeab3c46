//! Harness for end-to-end tests: starts the real `railproxy` binary in both modes and real
//! backends as processes on ephemeral loopback ports, waits for readiness (never a fixed sleep),
//! and stops every process it started when dropped.

pub mod bench;
pub mod chromium;
pub mod client;
pub mod dns;
pub mod fake_origin;
pub mod flood;
pub mod hostile;
pub mod link;
pub mod metrics;
pub mod named;
pub mod process;
pub mod raw;
pub mod raw_h2;
pub mod recorder;
pub mod stack;
pub mod tls_client;

pub use client::{Http, Resp, Timed, assert_right_or_refused};
pub use metrics::Metrics;
pub use process::{Backend, Proc, Redis};
pub use stack::{Knobs, Stack};

/// The dev corpus beside the repository, if this checkout has it.
pub fn corpus() -> Option<std::path::PathBuf> {
    delta::testing::dev_corpus(env!("CARGO_MANIFEST_DIR"))
}

/// Raises this process's soft open files limit to the hard one: a test holding a thousand
/// sockets must not depend on the limit the shell started it with.
pub fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// The body the test backend's `/binary/N` serves: `n` pseudo-random bytes, the same for the
/// same `n` (not compressible, so it crosses every hop whole).
pub fn binary_body(n: usize) -> Vec<u8> {
    let mut rng = delta::testing::Rng::new(n as u64);
    (0..n).map(|_| rng.next_u64() as u8).collect()
}

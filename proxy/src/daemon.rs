//! `--daemon`: into the background before anything else starts, for systemd `Type=forking`.
//!
//! The process that was started exits only once the daemon has written `server.pid_file`, so a
//! service manager that reads the pid file the moment that process exits finds the daemon's pid.
//! (Pingora's own daemon mode lets the starting process exit before the pid is written, and its
//! wait-for-ready signal can arrive before the starting process listens for it.)

use std::io::{Read as _, Write as _};
use std::path::Path;

use anyhow::Context as _;
use daemonix::{Daemonize, Outcome, Stdio};

/// Double-forks into a new session and writes `pid_file`; returns in the daemon. The starting
/// process exits here: 0 once the daemon has written its pid file, 1 if the daemon failed first.
/// Must run before any thread is started: threads do not survive `fork`.
pub fn daemonize(pid_file: &Path, error_log: Option<&Path>) -> anyhow::Result<()> {
    // The pid file of a running daemon is locked by it: a new daemon taking over (--upgrade)
    // writes a new file, and the old one is kept beside it.
    if pid_file.exists() {
        let old = pid_file.with_extension("pid.old");
        std::fs::rename(pid_file, &old).with_context(|| format!("moving {} aside", pid_file.display()))?;
    }
    let stderr = match error_log {
        Some(path) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening server.error_log {}", path.display()))?,
        ),
        None => Stdio::keep(),
    };
    let (mut ready_rx, mut ready_tx) = std::io::pipe().context("creating a pipe")?;
    let outcome = Daemonize::new().pid_file(pid_file).umask(0o007).stdout(Stdio::keep()).stderr(stderr).execute();
    match outcome {
        Outcome::Parent(Ok(_)) => {
            drop(ready_tx);
            let mut byte = [0u8; 1];
            let ready = matches!(ready_rx.read(&mut byte), Ok(1));
            std::process::exit(if ready { 0 } else { 1 })
        }
        Outcome::Parent(Err(e)) => Err(anyhow::anyhow!("daemonizing: {e}")),
        Outcome::Child(Ok(_)) => {
            drop(ready_rx);
            ready_tx.write_all(b"1").context("telling the starting process the daemon is up")?;
            Ok(())
        }
        Outcome::Child(Err(e)) => Err(anyhow::anyhow!("daemonizing (pid file {}): {e}", pid_file.display())),
    }
}

//! The Pingora server both modes run in, built from the `server:` section.

use pingora_core::server::Server;
use pingora_core::server::configuration::{Opt, ServerConf};

use crate::config::ServerSettings;

/// Pingora's configuration for `settings`.
fn conf(settings: &ServerSettings) -> ServerConf {
    ServerConf {
        threads: settings.threads,
        // One thread has nobody to steal from: Pingora then runs a single-threaded runtime,
        // whose wake-ups need no cross-thread queues. Measured with `railproxy-proxybench
        // --only "10 KB railproxy edge →"`, both hops on one core: ~240 -> ~180 µs CPU per
        // request.
        work_stealing: settings.work_stealing && settings.threads > 1,
        grace_period_seconds: Some(settings.grace_period.as_secs_f64().ceil() as u64),
        graceful_shutdown_timeout_seconds: Some(settings.graceful_shutdown_timeout.as_secs_f64().ceil() as u64),
        upgrade_sock: settings.upgrade_sock.display().to_string(),
        pid_file: settings.pid_file.display().to_string(),
        error_log: settings.error_log.as_ref().map(|p| p.display().to_string()),
        upstream_keepalive_pool_size: settings.upstream_keepalive_pool_size,
        daemon: false,
        ..ServerConf::default()
    }
}

/// A bootstrapped Pingora server. With `upgrade`, listening sockets are taken over from the
/// running process through `server.upgrade_sock` instead of being bound anew. Pingora's own
/// daemon mode stays off: with `--daemon`, [`crate::daemon`] has forked already.
pub fn build(settings: &ServerSettings, upgrade: bool) -> Server {
    raise_open_files_limit();
    let opt = Opt { upgrade, ..Opt::default() };
    let mut server = Server::new_with_opt_and_conf(opt, conf(settings));
    server.bootstrap();
    server
}

/// Every client connection, tunnel connection and WebSocket holds a descriptor, and a
/// WebSocket two (client and tunnel): the soft limit many systems start processes with (1024)
/// would cap an edge at a few hundred sockets. The soft limit goes up to the hard one, which
/// stays the operator's (systemd `LimitNOFILE=`, as nginx's `worker_rlimit_nofile`).
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => log::info!("open files limit raised from {soft} to {hard}"),
            Err(e) => log::warn!("open files limit stays {soft}: raising it to {hard}: {e}"),
        },
        Ok(_) => {}
        Err(e) => log::warn!("reading the open files limit: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;

    fn settings(threads: usize, work_stealing: bool) -> ServerSettings {
        ServerSettings {
            threads,
            work_stealing,
            grace_period: Duration::from_millis(1500),
            graceful_shutdown_timeout: Duration::from_secs(3),
            upgrade_sock: PathBuf::from("/run/up.sock"),
            pid_file: PathBuf::from("/run/p.pid"),
            error_log: None,
            upstream_keepalive_pool_size: 7,
        }
    }

    #[test]
    fn one_thread_runs_the_single_threaded_runtime() {
        assert!(!conf(&settings(1, true)).work_stealing);
        assert!(conf(&settings(4, true)).work_stealing);
        assert!(!conf(&settings(4, false)).work_stealing);
    }

    #[test]
    fn settings_reach_pingora() {
        let c = conf(&settings(3, true));
        assert_eq!(c.threads, 3);
        assert_eq!(c.grace_period_seconds, Some(2), "rounded up to whole seconds");
        assert_eq!(c.graceful_shutdown_timeout_seconds, Some(3));
        assert_eq!(c.upgrade_sock, "/run/up.sock");
        assert_eq!(c.pid_file, "/run/p.pid");
        assert_eq!(c.upstream_keepalive_pool_size, 7);
        assert!(!c.daemon);
    }
}

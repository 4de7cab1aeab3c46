//! The Pingora server both modes run in, built from the `server:` section.

use pingora_core::server::Server;
use pingora_core::server::configuration::{Opt, ServerConf};

use crate::config::ServerSettings;

/// A bootstrapped Pingora server. With `upgrade`, listening sockets are taken over from the
/// running process through `server.upgrade_sock` instead of being bound anew. Pingora's own
/// daemon mode stays off: with `--daemon`, [`crate::daemon`] has forked already.
pub fn build(settings: &ServerSettings, upgrade: bool) -> Server {
    let conf = ServerConf {
        threads: settings.threads,
        work_stealing: settings.work_stealing,
        grace_period_seconds: Some(settings.grace_period.as_secs_f64().ceil() as u64),
        graceful_shutdown_timeout_seconds: Some(settings.graceful_shutdown_timeout.as_secs_f64().ceil() as u64),
        upgrade_sock: settings.upgrade_sock.display().to_string(),
        pid_file: settings.pid_file.display().to_string(),
        error_log: settings.error_log.as_ref().map(|p| p.display().to_string()),
        upstream_keepalive_pool_size: settings.upstream_keepalive_pool_size,
        daemon: false,
        ..ServerConf::default()
    };
    let opt = Opt { upgrade, ..Opt::default() };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    server
}

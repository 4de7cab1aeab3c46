//! The Pingora server both modes run in, built from the `server:` section.

use std::sync::Arc;

use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::ServiceHandle;
use pingora_core::services::ServiceWithDependents;

use crate::config::ServerSettings;
use crate::run::Launch;

/// A Pingora server about to run. With `upgrade`, listening sockets are taken over from the
/// running process through `server.upgrade_sock` instead of being bound anew.
///
/// With `daemon`, the process forks into the background and the parent exits only once the
/// daemon has written `server.pid_file` and is ready to take sockets over (Pingora's
/// `daemon_wait_for_ready`), which is what systemd's `Type=forking` reads. Bootstrapping (taking
/// the sockets over) then runs after the fork, as a service every other service waits for.
pub struct Process {
    pub server: Server,
    bootstrap: Option<ServiceHandle>,
}

impl Process {
    pub fn build(settings: &ServerSettings, launch: Launch) -> Process {
        let conf = ServerConf {
            threads: settings.threads,
            work_stealing: settings.work_stealing,
            grace_period_seconds: Some(settings.grace_period.as_secs_f64().ceil() as u64),
            graceful_shutdown_timeout_seconds: Some(settings.graceful_shutdown_timeout.as_secs_f64().ceil() as u64),
            upgrade_sock: settings.upgrade_sock.display().to_string(),
            pid_file: settings.pid_file.display().to_string(),
            error_log: settings.error_log.as_ref().map(|p| p.display().to_string()),
            upstream_keepalive_pool_size: settings.upstream_keepalive_pool_size,
            daemon: launch.daemon,
            daemon_wait_for_ready: launch.daemon,
            ..ServerConf::default()
        };
        let opt = Opt { upgrade: launch.upgrade, ..Opt::default() };
        let mut server = Server::new_with_opt_and_conf(opt, conf);
        let bootstrap = if launch.daemon {
            Some(server.bootstrap_as_a_service())
        } else {
            server.bootstrap();
            None
        };
        Process { server, bootstrap }
    }

    pub fn configuration(&self) -> &Arc<ServerConf> {
        &self.server.configuration
    }

    /// Adds a service that starts once the listening sockets are in hand.
    pub fn add_service(&mut self, service: impl ServiceWithDependents + 'static) {
        let handle = self.server.add_service(service);
        if let Some(bootstrap) = &self.bootstrap {
            handle.add_dependency(bootstrap);
        }
    }

    /// Runs until told to stop; never returns.
    pub fn run_forever(self) -> ! {
        self.server.run(RunArgs::default());
        std::process::exit(0)
    }
}

//! The tunnel's TCP sockets, set up as they are made: the edge on each socket before it connects,
//! the origin on each socket it accepts.
//!
//! * **Congestion control** (`tunnel.congestion_control`, both modes). On a long link with loss
//!   the choice matters (cubic halves its window at every loss; bbr paces to the measured
//!   bottleneck), and it is the operator's: the kernel's default stays unless the key is set.
//! * **Unsent data the kernel may hold: [`NOTSENT_LOWAT`].** A lane is one TCP connection
//!   carrying many streams. Without a bound the kernel takes as much as its send buffer holds
//!   (megabytes, autotuned), and whatever is written after (a new response's header, a probe's
//!   answer, a PING's acknowledgement) waits behind all of it: tens of seconds on a thin link,
//!   past every timeout. With it, the data waits in HTTP/2's own queues, where streams take
//!   turns and control frames go first, and the kernel holds only what is about to leave (the
//!   value Apple and Cloudflare use for HTTP/2).

use std::ffi::OsString;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, setsockopt, socket, sockopt::TcpCongestion};
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::os::fd::AsRawFd as _;

use tokio::net::TcpSocket;

/// What Pingora calls on each new tunnel socket.
pub type Hook = Arc<dyn Fn(&TcpSocket) -> pingora_error::Result<()> + Send + Sync>;

/// Whether this kernel lets this process use `algorithm`, tried on a socket of its own.
pub fn check(algorithm: &str) -> Result<(), String> {
    let probe = socket(AddressFamily::Inet, SockType::Stream, SockFlag::empty(), None)
        .map_err(|e| format!("cannot open a socket to try it: {e}"))?;
    setsockopt(&probe, TcpCongestion, &OsString::from(algorithm)).map_err(|e| {
        let available =
            std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control").unwrap_or_default();
        format!("{algorithm:?} is refused by this kernel ({e}); available here: {}", available.trim())
    })
}

/// Unsent bytes the kernel may hold on a tunnel socket before the socket stops taking more.
pub const NOTSENT_LOWAT: u32 = 16 * 1024;

/// The hook for the edge's tunnel sockets: [`NOTSENT_LOWAT`], and `algorithm` when one is
/// configured. A socket that refuses the algorithm (the module was unloaded since the start)
/// connects with the kernel's default, said once in the log.
pub fn hook(algorithm: Option<&str>) -> Hook {
    let name = algorithm.map(OsString::from);
    let warned = AtomicBool::new(false);
    Arc::new(move |sock: &TcpSocket| {
        if let Err(e) = crate::sockets::set_notsent_lowat(sock.as_raw_fd(), NOTSENT_LOWAT)
            && !warned.swap(true, Ordering::Relaxed)
        {
            log::warn!("tunnel socket: TCP_NOTSENT_LOWAT not set ({e})");
        }
        if let Some(name) = &name
            && let Err(e) = setsockopt(sock, TcpCongestion, name)
            && !warned.swap(true, Ordering::Relaxed)
        {
            log::warn!("tunnel.congestion_control {name:?} not set ({e}); the kernel's default is used");
        }
        Ok(())
    })
}

/// How long a PING may go unanswered (Pingora's HTTP/2 client waits this long for a PONG).
pub const PING_ANSWER: std::time::Duration = std::time::Duration::from_secs(5);

/// An edge's lane in use is watched by its PINGs: dead `ping_interval` + [`PING_ANSWER`] after
/// its path went silent. A connection without PINGs (a parked lane, a connection carrying
/// WebSockets) is ended by TCP keepalive ([`keepalive`]) within the same bound.
pub fn dead_after(ping_interval: std::time::Duration) -> std::time::Duration {
    ping_interval + PING_ANSWER
}

/// Keepalive that ends a connection whose path died within `dead_after`: idle probes after a
/// third of it, three probes a ninth apart, and sent data unacknowledged for the whole of it.
/// The dialling origin gives it to Pingora; the edge sets it on the lanes it accepts ([`tune`]).
pub fn keepalive(dead_after: std::time::Duration) -> pingora_core::protocols::l4::ext::TcpKeepalive {
    use std::time::Duration;
    let secs = dead_after.as_secs().max(3);
    pingora_core::protocols::l4::ext::TcpKeepalive {
        idle: Duration::from_secs(secs / 3),
        interval: Duration::from_secs((secs / 9).max(1)),
        count: 3,
        user_timeout: dead_after,
    }
}

/// Sets up a tunnel socket made outside Pingora (a dial-out lane an edge accepted):
/// [`NOTSENT_LOWAT`], `algorithm` when one is configured, and [`keepalive`].
pub fn tune(
    sock: &impl std::os::fd::AsFd,
    algorithm: Option<&str>,
    dead_after: std::time::Duration,
) -> Result<(), String> {
    use nix::sys::socket::sockopt::{KeepAlive, TcpKeepCount, TcpKeepIdle, TcpKeepInterval, TcpUserTimeout};
    let fd = sock.as_fd().as_raw_fd();
    crate::sockets::set_notsent_lowat(fd, NOTSENT_LOWAT).map_err(|e| format!("TCP_NOTSENT_LOWAT: {e}"))?;
    if let Some(name) = algorithm {
        setsockopt(sock, TcpCongestion, &OsString::from(name))
            .map_err(|e| format!("congestion control {name}: {e}"))?;
    }
    let ka = keepalive(dead_after);
    let secs = |d: std::time::Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    let opts = [
        setsockopt(sock, KeepAlive, &true),
        setsockopt(sock, TcpKeepIdle, &secs(ka.idle)),
        setsockopt(sock, TcpKeepInterval, &secs(ka.interval)),
        setsockopt(sock, TcpKeepCount, &(ka.count as u32)),
        setsockopt(sock, TcpUserTimeout, &u32::try_from(ka.user_timeout.as_millis()).unwrap_or(u32::MAX)),
    ];
    opts.into_iter().collect::<nix::Result<Vec<()>>>().map(|_| ()).map_err(|e| format!("keepalive: {e}"))
}

/// Sets up every connection the origin accepts ([`NOTSENT_LOWAT`], and the congestion control
/// when one is configured), then serves it as `inner` does. Pingora 0.9 has no option for
/// accepted sockets, so this is done on the socket under the (TLS) stream, after the
/// handshake: a handful of packets go out with the kernel's default.
pub struct Accepted<A> {
    inner: Arc<A>,
    algorithm: Option<OsString>,
    warned: AtomicBool,
}

impl<A> Accepted<A> {
    pub fn new(inner: A, algorithm: Option<&str>) -> Self {
        Self { inner: Arc::new(inner), algorithm: algorithm.map(OsString::from), warned: AtomicBool::new(false) }
    }

    /// Another handle on the same app (the listener's and the dial-out lanes' are one).
    pub fn share(&self) -> Self {
        Self { inner: self.inner.clone(), algorithm: self.algorithm.clone(), warned: AtomicBool::new(false) }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Accepted<A> {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        // A TCP stream's id is its descriptor, and a TLS stream's is its TCP stream's; other
        // streams (tests' in-memory ones) have id 0 and are left alone.
        if stream.id() > 0 {
            if let Err(e) = crate::sockets::set_notsent_lowat(stream.id(), NOTSENT_LOWAT)
                && !self.warned.swap(true, Ordering::Relaxed)
            {
                log::warn!("tunnel socket: TCP_NOTSENT_LOWAT not set ({e})");
            }
            if let Some(algorithm) = &self.algorithm
                && let Err(e) = set_on_stream(&stream, algorithm)
                && !self.warned.swap(true, Ordering::Relaxed)
            {
                log::warn!("tunnel.congestion_control {algorithm:?} not set ({e}); the kernel's default is used");
            }
        }
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// Pingora's `Stream` gives its descriptor only as a number.
#[allow(unsafe_code)]
fn set_on_stream(stream: &Stream, algorithm: &OsString) -> nix::Result<()> {
    // SAFETY: the descriptor is the socket `stream` owns, and `stream` outlives this borrow.
    let sock = unsafe { std::os::fd::BorrowedFd::borrow_raw(stream.id()) };
    setsockopt(&sock, TcpCongestion, algorithm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_decides_and_the_hook_sets_it() {
        assert!(check("cubic").is_ok(), "cubic is built into every Linux kernel");
        let e = check("no-such-algorithm").unwrap_err();
        assert!(e.contains("refused") && e.contains("available here"), "{e}");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let sock = TcpSocket::new_v4().unwrap();
            hook(Some("cubic"))(&sock).unwrap();
            let set: OsString = nix::sys::socket::getsockopt(&sock, TcpCongestion).unwrap();
            assert_eq!(set.to_str().unwrap().trim_end_matches('\0'), "cubic");
        });
    }
}

//! The congestion control of the tunnel's sockets (`tunnel.congestion_control`, in both modes).
//! On a long link with loss the choice matters (cubic halves its window at every loss; bbr
//! paces to the measured bottleneck), and it is the operator's: the kernel's default stays
//! unless the key is set. The edge sets it on each socket before it connects; the origin on each
//! socket it accepts, before the first request (most bytes flow origin → edge, so the origin's
//! choice is the one downloads feel).

use std::ffi::OsString;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, setsockopt, socket, sockopt::TcpCongestion};
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
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

/// The hook setting `algorithm`. A socket that refuses it (the module was unloaded since the
/// start) connects with the kernel's default, said once in the log.
pub fn hook(algorithm: &str) -> Hook {
    let name = OsString::from(algorithm);
    let warned = AtomicBool::new(false);
    Arc::new(move |sock: &TcpSocket| {
        if let Err(e) = setsockopt(sock, TcpCongestion, &name)
            && !warned.swap(true, Ordering::Relaxed)
        {
            log::warn!("tunnel.congestion_control {name:?} not set ({e}); the kernel's default is used");
        }
        Ok(())
    })
}

/// Sets the congestion control of every connection the origin accepts (when one is configured),
/// then serves it as `inner` does. Pingora 0.9 has no option for accepted sockets, so this is done on the socket under the
/// (TLS) stream, after the handshake: a handful of packets go out with the kernel's default.
pub struct Accepted<A> {
    inner: Arc<A>,
    algorithm: Option<OsString>,
    warned: AtomicBool,
}

impl<A> Accepted<A> {
    pub fn new(inner: A, algorithm: Option<&str>) -> Self {
        Self { inner: Arc::new(inner), algorithm: algorithm.map(OsString::from), warned: AtomicBool::new(false) }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Accepted<A> {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        // A TCP stream's id is its descriptor, and a TLS stream's is its TCP stream's; other
        // streams (tests' in-memory ones) have id 0 and are left alone.
        if let Some(algorithm) = &self.algorithm
            && stream.id() > 0
            && let Err(e) = set_on_stream(&stream, algorithm)
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            log::warn!("tunnel.congestion_control {algorithm:?} not set ({e}); the kernel's default is used");
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
            hook("cubic")(&sock).unwrap();
            let set: OsString = nix::sys::socket::getsockopt(&sock, TcpCongestion).unwrap();
            assert_eq!(set.to_str().unwrap().trim_end_matches('\0'), "cubic");
        });
    }
}

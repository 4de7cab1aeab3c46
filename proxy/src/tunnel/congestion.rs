//! The congestion control of the edge's tunnel sockets (`tunnel.congestion_control`), set on
//! each socket before it connects. On a long link with loss the choice matters (cubic halves
//! its window at every loss; bbr paces to the measured bottleneck), and it is the operator's:
//! the kernel's default stays unless the key is set.
//!
//! The origin's accepted sockets use the host's default, `net.ipv4.tcp_congestion_control`
//! (per network namespace): Pingora 0.9 offers no hook on the sockets its listeners accept.

use std::ffi::OsString;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::socket::{AddressFamily, SockFlag, SockType, setsockopt, socket, sockopt::TcpCongestion};
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

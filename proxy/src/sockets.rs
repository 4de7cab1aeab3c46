//! What a connected socket can tell without reading it. Pingora hands hooks a connection's
//! descriptor but no way to look at what waits on it; the kernel says how much does (FIONREAD).
//! The origin asks whether a backend paused (`origin::pause`); both modes ask whether a kept-alive
//! HTTP/1 connection holds bytes no request asked for before they write a request on it. And one
//! option nix does not wrap, set on the tunnel's sockets.
#![allow(unsafe_code)]

use std::os::unix::io::RawFd;

nix::ioctl_read_bad!(fionread, nix::libc::FIONREAD, nix::libc::c_int);

/// Bytes received on the socket and not read yet; `None` when the socket cannot say.
pub fn bytes_waiting(fd: RawFd) -> Option<usize> {
    let mut n: nix::libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which points at `n`, alive for the
    // call. A descriptor that is not a socket gives an error, not memory unsafety.
    unsafe { fionread(fd, &mut n) }.ok().map(|_| n.max(0) as usize)
}

/// Bytes a TCP socket has moved: received, plus sent and acknowledged (TCP_INFO). None when the
/// descriptor is not a TCP socket (any more).
pub fn tcp_bytes_moved(fd: RawFd) -> Option<u64> {
    let mut info = std::mem::MaybeUninit::<nix::libc::tcp_info>::zeroed();
    let mut len = std::mem::size_of::<nix::libc::tcp_info>() as nix::libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which has room for them, and
    // says in `len` how many it wrote; a kernel that writes fewer leaves the rest zeroed.
    let got = unsafe {
        nix::libc::getsockopt(fd, nix::libc::IPPROTO_TCP, nix::libc::TCP_INFO, info.as_mut_ptr().cast(), &raw mut len)
    };
    if got != 0 {
        return None;
    }
    // SAFETY: zeroed, then written by the kernel: every bit pattern is a valid tcp_info.
    let info = unsafe { info.assume_init() };
    Some(info.tcpi_bytes_received.saturating_add(info.tcpi_bytes_acked))
}

/// Sets TCP_NOTSENT_LOWAT on a socket: how many unsent bytes the kernel holds before the socket
/// stops being writable (see `tunnel::tcp`).
pub fn set_notsent_lowat(fd: RawFd, bytes: u32) -> std::io::Result<()> {
    let value = nix::libc::c_int::try_from(bytes).unwrap_or(nix::libc::c_int::MAX);
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from the pointer, which points at
    // `value`, alive for the call. A descriptor that is not a TCP socket gives an error.
    let set = unsafe {
        nix::libc::setsockopt(
            fd,
            nix::libc::IPPROTO_TCP,
            nix::libc::TCP_NOTSENT_LOWAT,
            (&raw const value).cast(),
            std::mem::size_of::<nix::libc::c_int>() as nix::libc::socklen_t,
        )
    };
    if set == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::os::unix::io::AsRawFd as _;

    use super::*;

    #[test]
    fn counts_what_the_peer_sent_and_nobody_read() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut sender = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (receiver, _) = listener.accept().unwrap();
        assert_eq!(bytes_waiting(receiver.as_raw_fd()), Some(0));
        sender.write_all(b"twelve bytes").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while bytes_waiting(receiver.as_raw_fd()) != Some(12) {
            assert!(std::time::Instant::now() < deadline, "never saw the 12 bytes");
            std::thread::yield_now();
        }
        assert_eq!(bytes_waiting(-1), None);
    }

    #[test]
    fn tcp_sockets_say_what_they_moved_and_take_a_low_water_mark() {
        use std::io::Read as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut sender = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut receiver, _) = listener.accept().unwrap();
        set_notsent_lowat(sender.as_raw_fd(), 16384).unwrap();
        let before = tcp_bytes_moved(receiver.as_raw_fd()).unwrap();
        sender.write_all(&[7u8; 1000]).unwrap();
        let mut buf = [0u8; 1000];
        receiver.read_exact(&mut buf).unwrap();
        assert_eq!(tcp_bytes_moved(receiver.as_raw_fd()).unwrap() - before, 1000);
        assert_eq!(tcp_bytes_moved(-1), None);
        assert!(set_notsent_lowat(-1, 1).is_err());
    }
}

//! What a connected socket can tell without reading it. Pingora hands hooks a connection's
//! descriptor but no way to look at what waits on it; the kernel says how much does (FIONREAD).
//! The origin asks whether a backend paused (`origin::pause`); both modes ask whether a kept-alive
//! HTTP/1 connection holds bytes no request asked for before they write a request on it.
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
}

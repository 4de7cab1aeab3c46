//! Whether a backend has paused: nothing more is waiting on its connection. Pingora hands the
//! origin a backend's body a read at a time and says nothing about what comes next, so the
//! socket is asked (FIONREAD). A read that emptied the socket is where a streaming backend
//! flushed (the head of a page, an event) and is now working on the rest.
//!
//! Pingora reads ahead: pieces it already read wait in its queue while the socket is empty.
//! The origin asks Pingora first (`Session::upstream_task_queued`, a patch of the vendored
//! pingora-proxy) and the socket only for the last piece read. Before that, every page larger
//! than Pingora's header read was cut after its first ~4 KB. A piece Pingora read but had not
//! queued yet can still look like a pause: a cut where none was needed costs a few dozen bytes
//! on the tunnel, never a byte of the body.

use std::os::unix::io::RawFd;

use crate::sockets::bytes_waiting;

/// Pingora reads a backend body up to this much at a time. A read that filled it came from a
/// backend sending faster than it is read: the socket being empty right then means its next
/// bytes are on their way, not that it paused (measured: every 100 KB and 700 KB test page was
/// cut after its first 64 KiB, at ~130 bytes a cut, before this rule).
pub const FULL_READ: u64 = 64 * 1024;

/// How long an empty socket must stay empty to be a pause. Between a fast backend's writes the
/// socket is empty for microseconds (more so on a loaded machine); a backend that flushed the
/// head of a page and is rendering the rest is silent for milliseconds. A cut on a mere gap
/// costs ~130 bytes of a delta; waiting this long on a real pause costs its first byte 0.2 ms.
const SETTLE: std::time::Duration = std::time::Duration::from_micros(200);

/// Whether the backend paused after a read of `n` body bytes: the read did not fill Pingora's
/// buffer, nothing more is waiting on the socket, and nothing came within `SETTLE`.
pub fn paused(fd: Option<RawFd>, n: u64) -> bool {
    let empty = || fd.and_then(bytes_waiting) == Some(0);
    if n >= FULL_READ || !empty() {
        return false;
    }
    // Pingora's body filters are not async: this holds the worker thread, only where a read
    // emptied the socket before its body ended (a few times a response at most).
    std::thread::sleep(SETTLE);
    empty()
}

//! Request bodies enter the tunnel in DATA frames of a sane size.
//!
//! Pingora hands the edge a client's body as it reads it and forwards each piece as one HTTP/2
//! DATA frame. Pingora reads a chunked HTTP/1.1 body a chunk at a time, so a POST of one-byte
//! chunks would become as many one-byte frames on the *shared* tunnel connection, and an h2
//! server closes a whole connection that receives too many small frames (ENHANCE_YOUR_CALM):
//! one client could take every other client's requests on that lane down with it.
//!
//! So small pieces of an HTTP/1.x body are joined: held until [`TARGET`] bytes or the end of the
//! body, or until a piece arrives more than [`WAIT`] after the first one held. Reading ahead
//! instead would consume the end of the body behind Pingora's back (it then never sends
//! END_STREAM), so a held tail waits for the client's next write: at most 16 KB, where nginx's
//! default request buffering holds the whole body. HTTP/2 clients' frames are not held, since a
//! streaming call (gRPC) may wait for an answer to each message; the edge's own h2 server
//! already limits how many small frames one client may send, far below what the origin accepts.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

/// One full HTTP/2 frame (the default SETTINGS_MAX_FRAME_SIZE).
pub const TARGET: usize = 16 * 1024;
/// Pieces within this of the first one held travel together.
pub const WAIT: Duration = Duration::from_millis(5);

/// The pieces of one request body held so far.
#[derive(Debug, Default)]
pub struct Joiner {
    held: BytesMut,
    since: Option<Instant>,
}

impl Joiner {
    /// Takes a piece; returns what goes on now (`None`: nothing yet, the piece is held).
    pub fn push(&mut self, piece: Option<Bytes>, end: bool, now: Instant) -> Option<Bytes> {
        let piece = piece.unwrap_or_default();
        if self.held.is_empty() && (end || piece.len() >= TARGET) {
            return Some(piece);
        }
        self.held.extend_from_slice(&piece);
        let since = *self.since.get_or_insert(now);
        if end || self.held.len() >= TARGET || now.duration_since(since) >= WAIT {
            self.since = None;
            return Some(self.held.split().freeze());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_one_byte_pieces_goes_as_one() {
        let mut j = Joiner::default();
        let t = Instant::now();
        let out: Vec<Option<Bytes>> = (0..200).map(|i| j.push(Some(Bytes::from(vec![b'a'; 1])), i == 199, t)).collect();
        assert!(out[..199].iter().all(Option::is_none));
        assert_eq!(out[199].as_ref().unwrap().len(), 200);
    }

    #[test]
    fn released_at_the_target_size_and_after_the_wait() {
        let mut j = Joiner::default();
        let t = Instant::now();
        assert!(j.push(Some(Bytes::from(vec![0; 10_000])), false, t).is_none());
        assert_eq!(j.push(Some(Bytes::from(vec![0; 10_000])), false, t).unwrap().len(), 20_000);
        assert!(j.push(Some(Bytes::from_static(b"x")), false, t).is_none());
        let later = t + WAIT;
        assert_eq!(j.push(Some(Bytes::from_static(b"y")), false, later).unwrap(), "xy");
        // Large pieces and the end pass straight through.
        assert_eq!(j.push(Some(Bytes::from(vec![0; TARGET])), false, later).unwrap().len(), TARGET);
        assert_eq!(j.push(None, true, later).unwrap().len(), 0);
    }

    #[test]
    fn the_end_takes_what_is_held() {
        let mut j = Joiner::default();
        let t = Instant::now();
        assert!(j.push(Some(Bytes::from_static(b"ab")), false, t).is_none());
        assert_eq!(j.push(None, true, t).unwrap(), "ab");
    }
}

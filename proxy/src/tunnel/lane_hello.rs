//! What an origin that dials out says first on each lane, after TLS and before HTTP/2: which
//! replica it is and which of its lanes this is. The tunnel itself is already known from the
//! certificate; this only tells replicas (and a lane's redial from a second lane) apart.
//!
//! `RPXL`, version 1, the lane's index, the replica name's length, the name (1-64 bytes of
//! `A-Z a-z 0-9 . _ -`). Fixed parts are read with exact reads, so no byte of the HTTP/2
//! connection behind it is consumed.

use tokio::io::{AsyncRead, AsyncReadExt as _};

const MAGIC: &[u8; 4] = b"RPXL";

/// Lanes from this index up carry WebSockets (see `socket_lanes`): the edge is their HTTP/2
/// client itself, not Pingora's pool. Each takes the origin's `max_streams` sockets; an origin
/// dials [`SOCKET_LANES`] of them to each edge. An edge that does not know them takes them for
/// requests, which they serve as well.
pub const SOCKET_LANE: u8 = 252;
pub const SOCKET_LANES: u8 = 4;

const _: () = assert!(SOCKET_LANE as usize + SOCKET_LANES as usize == 256, "the socket lanes are the last indices");

/// Whether lane `index` is one for WebSockets.
pub fn carries_sockets(index: u8) -> bool {
    index >= SOCKET_LANE
}
const VERSION: u8 = 1;
const MAX_NAME: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneHello {
    pub replica: String,
    pub lane: u8,
}

/// Whether `name` may name a replica.
pub fn valid_replica(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl LaneHello {
    pub fn encode(&self) -> Vec<u8> {
        debug_assert!(valid_replica(&self.replica));
        let mut out = Vec::with_capacity(7 + self.replica.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[VERSION, self.lane, self.replica.len() as u8]);
        out.extend_from_slice(self.replica.as_bytes());
        out
    }

    /// Reads one hello; an error says what was wrong with it.
    pub async fn read(r: &mut (impl AsyncRead + Unpin)) -> Result<Self, String> {
        let mut head = [0u8; 7];
        r.read_exact(&mut head).await.map_err(|e| format!("no lane hello: {e}"))?;
        if &head[..4] != MAGIC {
            return Err("not a lane hello".into());
        }
        if head[4] != VERSION {
            return Err(format!("lane hello version {} (this edge speaks {VERSION})", head[4]));
        }
        let len = usize::from(head[6]);
        if !(1..=MAX_NAME).contains(&len) {
            return Err(format!("replica name of {len} bytes"));
        }
        let mut name = vec![0u8; len];
        r.read_exact(&mut name).await.map_err(|e| format!("lane hello cut short: {e}"))?;
        let replica = String::from_utf8(name).ok().filter(|n| valid_replica(n)).ok_or("replica name not allowed")?;
        Ok(LaneHello { replica, lane: head[5] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hello_reads_back_and_leaves_what_follows() {
        let hello = LaneHello { replica: "origin-1.example_2".into(), lane: 3 };
        let mut bytes = hello.encode();
        bytes.extend_from_slice(b"PRI * HTTP/2.0");
        let mut r = &bytes[..];
        assert_eq!(LaneHello::read(&mut r).await.unwrap(), hello);
        assert_eq!(r, b"PRI * HTTP/2.0", "nothing beyond the hello is consumed");
    }

    #[tokio::test]
    async fn malformed_hellos_are_refused() {
        for bad in
            [&b"GET / HTTP/1.1\r\n"[..], b"RPXL\x02\x00\x01a", b"RPXL\x01\x00\x00", b"RPXL\x01\x00\x02a/", b"RPX"]
        {
            let mut r = bad;
            assert!(LaneHello::read(&mut r).await.is_err(), "{bad:?}");
        }
    }
}

//! Raw HTTP/2 frames over cleartext TCP (prior knowledge), for clients that misbehave on
//! purpose. A real client library decides itself when its frames reach the socket; an attack such
//! as rapid reset depends on many frames arriving in one read, so these are written in one go.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

/// RST_STREAM's code when a client abandons a request.
pub const CANCEL: u32 = 0x8;
/// GOAWAY's code when a server sheds an abusive peer (RFC 9113 §7).
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame: type, flags, stream and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let len = u32::try_from(self.payload.len()).expect("frame payload fits 24 bits");
        assert!(len < 1 << 24, "frame payload fits 24 bits");
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.extend_from_slice(&[self.kind, self.flags]);
        out.extend_from_slice(&(self.stream & 0x7fff_ffff).to_be_bytes());
        out.extend_from_slice(&self.payload);
    }

    /// The next whole frame at the start of `buf`, and its length, if all of it is there.
    pub fn decode(buf: &[u8]) -> Option<(Frame, usize)> {
        let head = buf.get(..9)?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let payload = buf.get(9..9 + len)?.to_vec();
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        Some((Frame { kind: head[3], flags: head[4], stream, payload }, 9 + len))
    }

    pub fn settings() -> Frame {
        Frame { kind: SETTINGS, flags: 0, stream: 0, payload: Vec::new() }
    }

    /// A GET with the header block in one frame and no body. HPACK literals without indexing
    /// keep the server's dynamic table out of it, so frames can be built independently.
    pub fn get(stream: u32, authority: &str, path: &str) -> Frame {
        let mut block = vec![0x82, 0x86]; // :method GET, :scheme http (static table)
        for (name_index, value) in [(4u8, path), (1u8, authority)] {
            let len = u8::try_from(value.len()).ok().filter(|&l| l < 127).expect("short header value");
            block.extend_from_slice(&[name_index, len]);
            block.extend_from_slice(value.as_bytes());
        }
        Frame { kind: HEADERS, flags: END_STREAM | END_HEADERS, stream, payload: block }
    }

    pub fn rst_stream(stream: u32, code: u32) -> Frame {
        Frame { kind: RST_STREAM, flags: 0, stream, payload: code.to_be_bytes().to_vec() }
    }

    pub fn ping(data: [u8; 8]) -> Frame {
        Frame { kind: PING, flags: 0, stream: 0, payload: data.to_vec() }
    }

    pub fn is_ping_ack(&self, data: [u8; 8]) -> bool {
        self.kind == PING && self.flags & ACK != 0 && self.payload == data
    }

    /// The error code of a GOAWAY frame.
    pub fn goaway_code(&self) -> Option<u32> {
        (self.kind == GOAWAY)
            .then(|| self.payload.get(4..8))
            .flatten()
            .map(|c| u32::from_be_bytes(c.try_into().expect("4 bytes")))
    }
}

/// What the server sent back, up to the frame `until` accepted, the connection's end or `wait`.
#[derive(Debug)]
pub struct H2Answer {
    pub frames: Vec<Frame>,
    /// Whether `until` matched a frame.
    pub matched: bool,
    /// Whether the server closed the connection.
    pub closed: bool,
}

impl H2Answer {
    pub fn goaway_code(&self) -> Option<u32> {
        self.frames.iter().find_map(Frame::goaway_code)
    }
}

/// Writes the preface and `frames` in one write, then reads the server's frames until one
/// satisfies `until`, the server closes, or `wait` passes.
pub async fn exchange(addr: SocketAddr, frames: &[Frame], until: impl Fn(&Frame) -> bool, wait: Duration) -> H2Answer {
    let mut out = PREFACE.to_vec();
    for f in frames {
        f.encode(&mut out);
    }
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("TCP connect");
    tcp.write_all(&out).await.expect("write HTTP/2 frames");
    let deadline = tokio::time::Instant::now() + wait;
    let (mut got, mut frames) = (Vec::new(), Vec::new());
    let mut buf = [0u8; 16384];
    loop {
        while let Some((frame, used)) = Frame::decode(&got) {
            got.drain(..used);
            let done = until(&frame);
            frames.push(frame);
            if done {
                return H2Answer { frames, matched: true, closed: false };
            }
        }
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return H2Answer { frames, matched: false, closed: true },
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return H2Answer { frames, matched: false, closed: false },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_decode_to_what_was_encoded() {
        let frames = [
            Frame::settings(),
            Frame::get(3, "127.0.0.1", "/health"),
            Frame::rst_stream(3, CANCEL),
            Frame::ping(*b"12345678"),
        ];
        let mut out = Vec::new();
        for f in &frames {
            f.encode(&mut out);
        }
        let mut at = 0;
        for f in &frames {
            let (back, used) = Frame::decode(&out[at..]).expect("a whole frame");
            assert_eq!(&back, f);
            at += used;
        }
        assert_eq!(at, out.len());
        assert_eq!(Frame::decode(&out[..out.len() - 1]).map(|(f, _)| f.kind), Some(SETTINGS));
    }

    #[test]
    fn goaway_code_is_read_from_the_payload() {
        let goaway = Frame { kind: GOAWAY, flags: 0, stream: 0, payload: [0, 0, 0, 9, 0, 0, 0, 0xb].to_vec() };
        assert_eq!(goaway.goaway_code(), Some(ENHANCE_YOUR_CALM));
        assert_eq!(Frame::ping([0; 8]).goaway_code(), None);
    }
}

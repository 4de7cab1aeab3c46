//! A backend that keeps the exact bytes of every request it reads, for tests of framing: it
//! parses HTTP/1.1 as a strict backend does (one request after another on a kept-alive
//! connection, Content-Length or chunked), so bytes that do not start a request (a second last
//! chunk, say) are recorded as what they are, not hidden by a lenient parser. Each request is
//! answered 200 with its decoded body, or 400 and a close for bytes that are not a request.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// How a request's body was framed on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(usize),
    Chunked,
}

/// One request as the backend read it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Which accepted connection (0, 1, …) it came on.
    pub connection: usize,
    /// The bytes read for it, head and body, exactly.
    pub raw: Vec<u8>,
    pub method: String,
    pub target: String,
    /// Header lines as sent (name and value, in order).
    pub headers: Vec<(String, String)>,
    pub framing: Framing,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
    /// Set when the bytes were not a well-formed request.
    pub error: Option<String>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
pub struct Recorder {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Recorded>>>,
    connections: Arc<Mutex<usize>>,
    /// Requests still to be dropped (see [`Recorder::drop_reused`]).
    drops: Arc<Mutex<usize>>,
    /// Connections open now that have sent at least one byte (health checks that only
    /// connect are not counted).
    busy: Arc<std::sync::atomic::AtomicUsize>,
    /// Milliseconds to wait before each answer.
    delay: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    pub async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind recorder");
        let addr = listener.local_addr().expect("recorder address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let drops = Arc::new(Mutex::new(0));
        let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let delay = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (s, c, d, b) = (seen.clone(), connections.clone(), drops.clone(), busy.clone());
        let w = delay.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let n = {
                    let mut c = c.lock().unwrap();
                    *c += 1;
                    *c - 1
                };
                tokio::spawn(serve(stream, n, s.clone(), d.clone(), b.clone(), w.clone()));
            }
        });
        Recorder { addr, seen, connections, drops, busy, delay, task }
    }

    /// Every request read so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }

    /// Connections open now on which a request started.
    pub fn busy(&self) -> usize {
        self.busy.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }

    /// The next `n` requests that come on a connection that already carried one are read and
    /// then left unanswered, the connection closed: a kept-alive connection the backend closed
    /// just as a request was sent on it (recorded with the error "dropped").
    pub fn drop_reused(&self, n: usize) {
        *self.drops.lock().unwrap() = n;
    }

    /// Each answer from now on waits `delay` after its request was read.
    pub fn answer_after(&self, delay: std::time::Duration) {
        self.delay.store(delay.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

/// Bytes read from a connection, consumed from the front as requests are parsed.
struct Input {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Input {
    /// Makes `n` bytes available; false if the peer closed first.
    async fn fill(&mut self, n: usize) -> bool {
        while self.buf.len() < n {
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
            }
        }
        true
    }

    /// The next line (without CRLF), and the bytes it took; None if the peer closed first.
    async fn line(&mut self, raw: &mut Vec<u8>) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                raw.extend_from_slice(&line);
                return Some(String::from_utf8_lossy(&line[..i]).into_owned());
            }
            let have = self.buf.len();
            if !self.fill(have + 1).await {
                return None;
            }
        }
    }

    async fn take(&mut self, n: usize, raw: &mut Vec<u8>) -> Option<Vec<u8>> {
        if !self.fill(n).await {
            return None;
        }
        let bytes: Vec<u8> = self.buf.drain(..n).collect();
        raw.extend_from_slice(&bytes);
        Some(bytes)
    }
}

async fn serve(
    stream: TcpStream,
    connection: usize,
    seen: Arc<Mutex<Vec<Recorded>>>,
    drops: Arc<Mutex<usize>>,
    busy: Arc<std::sync::atomic::AtomicUsize>,
    delay: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut input = Input { stream, buf: Vec::new() };
    if !input.fill(1).await {
        return;
    }
    busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    serve_requests(&mut input, connection, &seen, &drops, &delay).await;
    busy.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

async fn serve_requests(
    input: &mut Input,
    connection: usize,
    seen: &Mutex<Vec<Recorded>>,
    drops: &Mutex<usize>,
    delay: &std::sync::atomic::AtomicU64,
) {
    let mut served = 0;
    loop {
        if input.buf.is_empty() && !input.fill(1).await {
            return;
        }
        let (request, close) = read_request(input, connection).await;
        let Some(mut request) = request else { return };
        served += 1;
        if served > 1 && request.error.is_none() {
            let mut d = drops.lock().unwrap();
            if *d > 0 {
                *d -= 1;
                request.error = Some("dropped".into());
                seen.lock().unwrap().push(request);
                return;
            }
        }
        let answer = match &request.error {
            None => {
                let mut head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\n",
                    request.body.len()
                );
                head.push_str(&format!("x-recorded-framing: {:?}\r\n\r\n", request.framing));
                [head.into_bytes(), request.body.clone()].concat()
            }
            Some(_) => b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec(),
        };
        let failed = request.error.is_some();
        seen.lock().unwrap().push(request);
        let wait = delay.load(std::sync::atomic::Ordering::Relaxed);
        if wait > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        }
        if input.stream.write_all(&answer).await.is_err() || failed || close {
            return;
        }
    }
}

/// Reads one request; None when the peer closed before anything; `true` when the connection
/// must close after the answer.
async fn read_request(input: &mut Input, connection: usize) -> (Option<Recorded>, bool) {
    let mut raw = Vec::new();
    let mut r = Recorded {
        connection,
        raw: Vec::new(),
        method: String::new(),
        target: String::new(),
        headers: Vec::new(),
        framing: Framing::None,
        body: Vec::new(),
        trailers: Vec::new(),
        error: None,
    };
    let fail = |mut r: Recorded, raw: Vec<u8>, why: &str| {
        r.raw = raw;
        r.error = Some(why.to_string());
        (Some(r), true)
    };
    let Some(line) = input.line(&mut raw).await else {
        return if raw.is_empty() && input.buf.is_empty() { (None, true) } else { fail(r, raw, "closed mid-line") };
    };
    let parts: Vec<&str> = line.split(' ').collect();
    if parts.len() != 3 || !parts[2].starts_with("HTTP/1.") || parts[0].is_empty() {
        // Whatever else arrived with it is part of the same garbage.
        raw.append(&mut input.buf);
        return fail(r, raw, &format!("not a request line: {line:?}"));
    }
    r.method = parts[0].to_string();
    r.target = parts[1].to_string();
    loop {
        let Some(line) = input.line(&mut raw).await else { return fail(r, raw, "closed in the head") };
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else { return fail(r, raw, "a header line without ':'") };
        r.headers.push((name.to_string(), value.trim().to_string()));
    }
    let close = r.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let chunked = r.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked && r.header("content-length").is_some() {
        return fail(r, raw, "both Content-Length and Transfer-Encoding");
    }
    if chunked {
        r.framing = Framing::Chunked;
        loop {
            let Some(size_line) = input.line(&mut raw).await else { return fail(r, raw, "closed in a chunk size") };
            let size = size_line.split(';').next().unwrap_or("").trim();
            let Ok(size) = usize::from_str_radix(size, 16) else {
                return fail(r, raw, &format!("bad chunk size {size_line:?}"));
            };
            if size == 0 {
                loop {
                    let Some(t) = input.line(&mut raw).await else { return fail(r, raw, "closed in the trailers") };
                    if t.is_empty() {
                        break;
                    }
                    let (n, v) = t.split_once(':').unwrap_or((&t, ""));
                    r.trailers.push((n.to_string(), v.trim().to_string()));
                }
                break;
            }
            let Some(data) = input.take(size + 2, &mut raw).await else { return fail(r, raw, "closed in a chunk") };
            if &data[size..] != b"\r\n" {
                return fail(r, raw, "a chunk not followed by CRLF");
            }
            r.body.extend_from_slice(&data[..size]);
        }
    } else if let Some(cl) = r.header("content-length") {
        let Ok(n) = cl.parse::<usize>() else { return fail(r, raw, "bad Content-Length") };
        r.framing = Framing::Length(n);
        let Some(body) = input.take(n, &mut raw).await else { return fail(r, raw, "closed in the body") };
        r.body = body;
    }
    r.raw = raw;
    (Some(r), close)
}

/// A stack whose origin sends every host to a new recorder, with `edge_extra` in the edge's
/// configuration (e.g. a `limits:` section).
pub async fn recorded_stack(edge_extra: &str) -> (Recorder, crate::Stack) {
    let recorder = Recorder::start().await;
    let knobs = crate::Knobs {
        backend_override: Some(recorder.addr),
        edge_extra: edge_extra.into(),
        ..crate::Knobs::default()
    };
    let stack = crate::Stack::start(knobs).await;
    (recorder, stack)
}

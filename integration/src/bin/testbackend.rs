//! A real HTTP/1.1 backend for tests, benchmarks and the demo. Prints `listening on ADDR` once
//! bound (bind `127.0.0.1:0` for an ephemeral port).
//!
//! Routes:
//!   GET  /health                  200 ok
//!   GET  / , /demo                a news front page that changes on every request (the demo)
//!   GET  /pages/SET               version `x-version: N` (default 0) of a set of page versions:
//!                                 generated-10k, generated-100k, generated-700k, and with
//!                                 `--corpus DIR` every source in DIR
//!   GET  /status/CODE             that status, with a short text body
//!   GET  /redirect                302 to /pages/generated-10k
//!   POST /echo                    the request body back (text/plain)
//!   POST /sink                    the request body's length (text)
//!   GET  /live/N?every=MS         URL N of a site whose pages change every MS ms (5000), each at
//!                                 a phase of its own: the version of set `live-*` number N (mod
//!                                 their count, in name order) that is current now
//!   GET  /binary/N                N pseudo-random bytes (application/octet-stream)
//!   GET  /encoded/CODING/N        N pseudo-random bytes of HTML labelled `Content-Encoding:
//!                                 CODING`, whatever the request accepts (a backend that
//!                                 compresses although asked for identity)
//!   GET  /text/N                  N bytes of HTML, with Content-Length
//!   GET  /chunked/N               N bytes of HTML, chunked (no Content-Length)
//!   GET  /count                   how many requests this backend has served (text)
//!   GET  /stall?ms=MS             accept no new connection for MS ms (1000): a backend whose
//!                                 accept queue a burst fills
//!   GET  /connections             how many connections have carried requests (text)
//!   GET  /cache/SECS/NAME          a 10 KB page for NAME with Cache-Control: max-age=SECS;
//!                                 `?delay=MS` answers after MS milliseconds
//!   GET  /hits/SECS/NAME           how many requests /cache/SECS/NAME has seen (text)
//!   GET  /cycle/SET[?QUERY]       the next version of SET on every request, round and round;
//!                                 each distinct QUERY is a page of its own with its own turn,
//!                                 from version 0, or from N with `start=N` in QUERY
//!   GET  /cacheable/SET           version 0 of SET with Cache-Control: max-age=3600
//!   GET  /ws                      a WebSocket echo: text and binary messages come back, `close:CODE`
//!                                 closes with CODE; `?delay=MS` answers the handshake after MS ms
//!   GET  /events?n=N&ms=MS        N server-sent events MS apart (text/event-stream, chunked), each
//!                                 `data: sent=MICROS` (when it was sent, in µs since the epoch)
//!   GET  /flush/SET?first=F&ms=MS the next version of SET (as /cycle): its first F bytes (8192),
//!                                 the rest MS (100) ms later; chunked, or with `length=1` a
//!                                 Content-Length; `version=N`: always version N
//!   GET  /big/N                   N bytes of application/octet-stream with Content-Length, made
//!                                 as they are sent (64 KB pieces), so N may be gigabytes
//!   GET  /personal/SET            version `x-version: N` of SET with `<!-- for COOKIE -->` (the
//!                                 request's Cookie, or `anonymous`) appended, and the request's
//!                                 `x-cc` as its Cache-Control (e.g. `no-store`, `private`)
//!   GET  /tagged/SET?u=N          version N of SET (modulo its length) with `<!-- u=N -->`
//!                                 appended: a distinct body for every N
//!
//! Every response carries `x-backend: ADDR`, the address this backend listens on.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use delta::corpus;
use delta::testing::{self, PageGenerator};
use http::{Method, Request, Response};
use http_body::Frame;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

/// A response body given in chunks, then whatever `later` yields (a body produced over time);
/// without a known length it goes out chunked.
struct Chunks {
    chunks: std::collections::VecDeque<Bytes>,
    exact: Option<u64>,
    later: Option<tokio::sync::mpsc::Receiver<Bytes>>,
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(b) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        match self.later.as_mut() {
            Some(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
            None => Poll::Ready(None),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.exact {
            Some(n) => http_body::SizeHint::with_exact(n),
            None => http_body::SizeHint::default(),
        }
    }
}

fn full(body: impl Into<Bytes>) -> Chunks {
    let b: Bytes = body.into();
    Chunks { exact: Some(b.len() as u64), chunks: [b].into(), later: None }
}

/// A body whose pieces `produce` sends over time (bounded: a slow reader slows it down).
fn produced<F, Fut>(exact: Option<u64>, produce: F) -> Chunks
where
    F: FnOnce(tokio::sync::mpsc::Sender<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(produce(tx));
    Chunks { chunks: Default::default(), exact, later: Some(rx) }
}

/// A query parameter as a number.
fn param(req: &Request<Incoming>, name: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

fn reply(status: u16, content_type: &str, body: Chunks) -> Response<Chunks> {
    Response::builder().status(status).header("content-type", content_type).body(body).expect("valid response")
}

struct Backend {
    sets: HashMap<String, Vec<Bytes>>,
    /// The sets named `live-*`, in name order, for `/live/N`.
    live: Vec<String>,
    started: std::time::Instant,
    demo: Mutex<PageGenerator>,
    served: AtomicU64,
    connections: AtomicU64,
    hits: Mutex<HashMap<String, u64>>,
    cycles: Mutex<HashMap<String, u64>>,
    addr: http::HeaderValue,
    /// Until when (ms since `started`) the accept loop takes no connection (`/stall`).
    stall_until: AtomicU64,
}

fn content_type_of(body: &[u8]) -> &'static str {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | Some(b'[') => "application/json",
        _ => "text/html; charset=utf-8",
    }
}

fn html_of_len(n: usize) -> Vec<u8> {
    let mut g = PageGenerator::new(n as u64, n.clamp(1000, 1 << 20));
    let mut out = Vec::with_capacity(n + (1 << 16));
    while out.len() < n {
        out.extend_from_slice(&g.next_page());
    }
    out.truncate(n);
    out
}

impl Backend {
    async fn handle(&self, req: Request<Incoming>) -> Response<Chunks> {
        let mut resp = self.route(req).await;
        resp.headers_mut().insert("x-backend", self.addr.clone());
        resp
    }

    async fn route(&self, req: Request<Incoming>) -> Response<Chunks> {
        self.served.fetch_add(1, Ordering::Relaxed);
        let path = req.uri().path().to_string();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let number = |s: Option<&&str>| s.and_then(|s| s.parse::<usize>().ok());
        match (req.method().clone(), parts.as_slice()) {
            (Method::GET | Method::HEAD, ["health"]) => reply(200, "text/plain", full("ok\n")),
            (Method::GET | Method::HEAD, [""] | ["demo"]) => {
                let page = self.demo.lock().expect("lock").next_page();
                reply(200, "text/html; charset=utf-8", full(page))
            }
            (Method::GET | Method::HEAD, ["pages", set]) => {
                let version = req
                    .headers()
                    .get("x-version")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                match self.sets.get(*set).and_then(|v| v.get(version)) {
                    Some(body) => reply(200, content_type_of(body), full(body.clone())),
                    None => reply(404, "text/plain", full(format!("no version {version} of {set}\n"))),
                }
            }
            (Method::GET | Method::HEAD, ["personal", set]) => {
                let version = req.headers().get("x-version").and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
                match self.sets.get(*set).and_then(|v| v.get(version.unwrap_or(0))) {
                    Some(body) => {
                        let who = req.headers().get("cookie").and_then(|v| v.to_str().ok()).unwrap_or("anonymous");
                        let mut page = body.to_vec();
                        page.extend_from_slice(format!("<!-- for {who} -->\n").as_bytes());
                        let mut r = reply(200, content_type_of(body), full(page));
                        if let Some(cc) = req.headers().get("x-cc") {
                            r.headers_mut().insert("cache-control", cc.clone());
                        }
                        r
                    }
                    None => reply(404, "text/plain", full(format!("no version of {set}\n"))),
                }
            }
            (Method::GET | Method::HEAD, ["status", code]) => {
                match code.parse::<u16>().ok().filter(|c| (200..600).contains(c)) {
                    Some(c) => reply(
                        c,
                        "text/html; charset=utf-8",
                        full(format!("<html><body><h1>status {c}</h1><p>from the test backend</p></body></html>\n")),
                    ),
                    None => reply(400, "text/plain", full("bad status\n")),
                }
            }
            (Method::GET | Method::HEAD, ["redirect"]) => {
                let mut r = reply(302, "text/html", full("<a href=\"/pages/generated-10k\">moved</a>\n"));
                r.headers_mut().insert("location", "/pages/generated-10k".parse().expect("static"));
                r
            }
            (Method::POST | Method::PUT, ["sink"]) => match req.into_body().collect().await {
                Ok(body) => reply(200, "text/plain", full(format!("{}\n", body.to_bytes().len()))),
                Err(e) => reply(400, "text/plain", full(format!("body: {e}\n"))),
            },
            (Method::GET | Method::HEAD, ["live", u]) => match number(Some(u)).filter(|_| !self.live.is_empty()) {
                Some(u) => {
                    let every = param(&req, "every").unwrap_or(5000).max(1);
                    let versions = &self.sets[&self.live[u % self.live.len()]];
                    // Each URL turns to its next version every `every` ms, at a phase of its own.
                    let phase = (u as u64).wrapping_mul(2_654_435_761) % every;
                    let turn = (self.started.elapsed().as_millis() as u64 + phase) / every;
                    let body = versions[turn as usize % versions.len()].clone();
                    reply(200, content_type_of(&body), full(body))
                }
                None => reply(404, "text/plain", full("no live-* sets, or not a number\n")),
            },
            (Method::POST | Method::PUT, ["echo"]) => match req.into_body().collect().await {
                Ok(body) => reply(200, "text/plain; charset=utf-8", full(body.to_bytes())),
                Err(e) => reply(400, "text/plain", full(format!("body: {e}\n"))),
            },
            (Method::GET | Method::HEAD, ["binary", n]) => match number(Some(n)) {
                Some(n) => reply(200, "application/octet-stream", full(integration::binary_body(n))),
                None => reply(400, "text/plain", full("bad length\n")),
            },
            (Method::GET | Method::HEAD, ["encoded", coding, n]) => match number(Some(n)) {
                Some(n) => {
                    let mut r = reply(200, "text/html; charset=utf-8", full(integration::binary_body(n)));
                    match coding.parse() {
                        Ok(v) => {
                            r.headers_mut().insert("content-encoding", v);
                            r
                        }
                        Err(_) => reply(400, "text/plain", full("bad coding\n")),
                    }
                }
                None => reply(400, "text/plain", full("bad length\n")),
            },
            (Method::GET | Method::HEAD, ["text", n]) => match number(Some(n)) {
                Some(n) => reply(200, "text/html; charset=utf-8", full(html_of_len(n))),
                None => reply(400, "text/plain", full("bad length\n")),
            },
            (Method::GET | Method::HEAD, ["chunked", n]) => match number(Some(n)) {
                Some(n) => {
                    let body = Bytes::from(html_of_len(n));
                    let chunks =
                        (0..body.len()).step_by(4096).map(|i| body.slice(i..(i + 4096).min(body.len()))).collect();
                    reply(200, "text/html; charset=utf-8", Chunks { chunks, exact: None, later: None })
                }
                None => reply(400, "text/plain", full("bad length\n")),
            },
            (Method::GET, ["stall"]) => {
                // New connections wait in the accept queue (and beyond it, SYNs are dropped)
                // for `ms`; connections already accepted are served as before.
                let ms = param(&req, "ms").unwrap_or(1000);
                let now = self.started.elapsed().as_millis() as u64;
                self.stall_until.store(now + ms, Ordering::Relaxed);
                reply(200, "text/plain", full(format!("not accepting for {ms} ms\n")))
            }
            (Method::GET, ["count"]) => {
                reply(200, "text/plain", full(format!("{}\n", self.served.load(Ordering::Relaxed))))
            }
            (Method::GET | Method::HEAD, ["cache", secs, name]) => {
                let key = format!("{secs}/{name}");
                *self.hits.lock().expect("lock").entry(key).or_default() += 1;
                let delay =
                    req.uri().query().and_then(|q| q.strip_prefix("delay=")).and_then(|v| v.parse::<u64>().ok());
                if let Some(ms) = delay {
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                }
                let mut r = reply(200, "text/html; charset=utf-8", full(html_of_len(10_000 + name.len())));
                let cc = format!("public, max-age={secs}");
                r.headers_mut().insert("cache-control", cc.parse().expect("valid header"));
                r
            }
            (Method::GET, ["hits", secs, name]) => {
                let n = self.hits.lock().expect("lock").get(&format!("{secs}/{name}")).copied().unwrap_or(0);
                reply(200, "text/plain", full(format!("{n}\n")))
            }
            (Method::GET | Method::HEAD, ["cycle", set]) => match self.sets.get(*set) {
                Some(versions) => {
                    let page = req.uri().path_and_query().map_or("", |p| p.as_str()).to_string();
                    let turn = {
                        let mut cycles = self.cycles.lock().expect("lock");
                        let next = cycles.entry(page).or_default();
                        *next += 1;
                        *next - 1
                    };
                    let i = (param(&req, "start").unwrap_or(0) + turn) as usize % versions.len();
                    reply(200, content_type_of(&versions[i]), full(versions[i].clone()))
                }
                None => reply(404, "text/plain", full(format!("no set {set}\n"))),
            },
            (Method::GET | Method::HEAD, ["tagged", set]) => match self.sets.get(*set) {
                Some(versions) => {
                    let n = req.uri().query().and_then(|q| q.strip_prefix("u=")).and_then(|v| v.parse::<usize>().ok());
                    let n = n.unwrap_or(0);
                    let mut body = versions[n % versions.len()].to_vec();
                    body.extend_from_slice(format!("<!-- u={n} -->\n").as_bytes());
                    reply(200, "text/html; charset=utf-8", full(body))
                }
                None => reply(404, "text/plain", full(format!("no set {set}\n"))),
            },
            (Method::GET | Method::HEAD, ["cacheable", set]) => match self.sets.get(*set) {
                Some(versions) => {
                    let mut r = reply(200, content_type_of(&versions[0]), full(versions[0].clone()));
                    r.headers_mut().insert("cache-control", http::HeaderValue::from_static("public, max-age=3600"));
                    r
                }
                None => reply(404, "text/plain", full(format!("no set {set}\n"))),
            },
            (Method::GET, ["ws"]) => {
                if let Some(ms) = param(&req, "delay") {
                    // A backend slow to accept the upgrade: the client may be gone by the 101.
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                }
                websocket_echo(req)
            }
            (Method::GET | Method::HEAD, ["events"]) => {
                let (n, ms) = (param(&req, "n").unwrap_or(6), param(&req, "ms").unwrap_or(500));
                let body = produced(None, move |tx| async move {
                    for i in 0..n {
                        if i > 0 {
                            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                        }
                        let sent = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_micros());
                        let event = format!("id: {i}\ndata: sent={sent}\n\n");
                        if tx.send(Bytes::from(event)).await.is_err() {
                            return;
                        }
                    }
                });
                let mut r = reply(200, "text/event-stream", body);
                r.headers_mut().insert("cache-control", http::HeaderValue::from_static("no-cache"));
                r
            }
            (Method::GET | Method::HEAD, ["flush", set]) => match self.sets.get(*set) {
                Some(versions) => {
                    let turn = {
                        let mut cycles = self.cycles.lock().expect("lock");
                        let next = cycles.entry(format!("flush/{set}")).or_default();
                        *next += 1;
                        *next - 1
                    };
                    let turn = param(&req, "version").unwrap_or(turn);
                    let body = versions[turn as usize % versions.len()].clone();
                    let first = (param(&req, "first").unwrap_or(8192) as usize).min(body.len());
                    let ms = param(&req, "ms").unwrap_or(100);
                    let exact = (param(&req, "length") == Some(1)).then_some(body.len() as u64);
                    let content_type = content_type_of(&body);
                    let body = produced(exact, move |tx| async move {
                        if tx.send(body.slice(..first)).await.is_ok() {
                            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                            let _ = tx.send(body.slice(first..)).await;
                        }
                    });
                    reply(200, content_type, body)
                }
                None => reply(404, "text/plain", full(format!("no set {set}\n"))),
            },
            (Method::GET | Method::HEAD, ["big", n]) => match number(Some(n)) {
                Some(n) => reply(
                    200,
                    "application/octet-stream",
                    produced(Some(n as u64), move |tx| async move {
                        let block = Bytes::from(integration::binary_body(64 * 1024));
                        let mut left = n;
                        while left > 0 {
                            let k = left.min(block.len());
                            if tx.send(block.slice(..k)).await.is_err() {
                                return;
                            }
                            left -= k;
                        }
                    }),
                ),
                None => reply(400, "text/plain", full("bad length\n")),
            },
            (Method::GET, ["connections"]) => {
                reply(200, "text/plain", full(format!("{}\n", self.connections.load(Ordering::Relaxed))))
            }
            _ => reply(404, "text/plain", full(format!("no route for {} {path}\n", req.method()))),
        }
    }
}

/// Accepts a WebSocket (RFC 6455 §4.2.2) and echoes every text and binary message; a text
/// message `close:CODE` makes it close with that code. Pings are answered by the library.
fn websocket_echo(req: Request<Incoming>) -> Response<Chunks> {
    use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Message, Role};
    let Some(key) = req.headers().get("sec-websocket-key") else {
        return reply(400, "text/plain", full("not a WebSocket handshake\n"));
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        use futures_util::{SinkExt as _, StreamExt as _};
        while let Some(Ok(msg)) = ws.next().await {
            let sent = match msg {
                Message::Text(t) if t.starts_with("close:") => {
                    let code = t["close:".len()..].parse::<u16>().unwrap_or(1000);
                    let frame = CloseFrame { code: code.into(), reason: "asked to".into() };
                    ws.close(Some(frame)).await
                }
                Message::Text(_) | Message::Binary(_) => ws.send(msg).await,
                _ => Ok(()),
            };
            if sent.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .status(101)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .body(Chunks { chunks: Default::default(), exact: Some(0), later: None })
        .expect("valid response")
}

fn usage() -> ! {
    eprintln!("usage: railproxy-testbackend [--listen ADDR] [--corpus DIR] [--backlog N] [--accept-pause-us N]");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    integration::raise_open_files_limit();
    let mut listen: SocketAddr = "127.0.0.1:0".parse().expect("static");
    let mut corpus = None;
    // A production server's backlog unless told otherwise (see `bind`); a backend slow to accept
    // (a small backlog, a pause after each accept) stands for one that a burst overwhelms.
    let (mut backlog, mut accept_pause) = (4096u32, std::time::Duration::ZERO);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage()),
            "--corpus" => corpus = Some(args.next().unwrap_or_else(|| usage())),
            "--backlog" => backlog = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage()),
            "--accept-pause-us" => {
                let us = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage());
                accept_pause = std::time::Duration::from_micros(us);
            }
            _ => usage(),
        }
    }
    let mut sets: HashMap<String, Vec<Bytes>> = HashMap::new();
    let mut all = testing::generated_sets();
    if let Some(dir) = corpus {
        match corpus::load_version_sets(std::path::Path::new(&dir)) {
            Ok(found) => all.extend(found),
            Err(e) => {
                eprintln!("railproxy-testbackend: {e}");
                std::process::exit(66);
            }
        }
    }
    for set in all {
        sets.insert(set.name, set.versions.into_iter().map(Bytes::from).collect());
    }
    let listener = match bind(listen, backlog) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("railproxy-testbackend: binding {listen}: {e}");
            std::process::exit(1);
        }
    };
    let addr = listener.local_addr().expect("bound");
    let mut live: Vec<String> = sets.keys().filter(|n| n.starts_with("live-")).cloned().collect();
    live.sort();
    let backend = Arc::new(Backend {
        sets,
        live,
        started: std::time::Instant::now(),
        demo: Mutex::new(PageGenerator::new(2026, 100_000)),
        served: AtomicU64::new(0),
        connections: AtomicU64::new(0),
        hits: Mutex::new(HashMap::new()),
        cycles: Mutex::new(HashMap::new()),
        addr: addr.to_string().parse().expect("an address is a valid header value"),
        stall_until: AtomicU64::new(0),
    });
    println!("listening on {addr}");
    let _ = std::io::stdout().flush();
    loop {
        let stalled =
            backend.stall_until.load(Ordering::Relaxed).saturating_sub(backend.started.elapsed().as_millis() as u64);
        if stalled > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(stalled)).await;
        }
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        if !accept_pause.is_zero() {
            // Finer than tokio's timer (1 ms): this loop holds its thread, as a slow accept does.
            std::thread::sleep(accept_pause);
        }
        let _ = stream.set_nodelay(true);
        let backend = backend.clone();
        tokio::spawn(async move {
            // Connections are counted on their first request: health checks that only connect
            // do not count.
            let counted = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let service = hyper::service::service_fn(move |req| {
                let backend = backend.clone();
                if !counted.swap(true, Ordering::Relaxed) {
                    backend.connections.fetch_add(1, Ordering::Relaxed);
                }
                async move { Ok::<_, Infallible>(backend.handle(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

/// Binds with the accept backlog a production server has (nginx: 511; Linux caps it at
/// `net.core.somaxconn`, 4096 by default) rather than tokio's 128: an origin opening its pool
/// to this backend under load opens a hundred connections or more at once, and a dropped SYN
/// is retried only after a second, which is a connect timeout in the tests' configuration.
fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

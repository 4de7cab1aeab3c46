//! Responses that are streams reach the client as they are produced: server-sent events one by
//! one, the head of a page its backend flushed early (delta-coded or not) before the rest, and a
//! gigabyte download in bounded memory. Real backend, real edge and origin processes.

use std::time::{Duration, SystemTime};

use integration::bench::rss_bytes as rss;
use integration::{Http, Knobs, Stack, Timed};

/// The most an event may lag behind its backend on loopback (the issue's bound).
const EVENT_LAG: Duration = Duration::from_millis(50);

/// Each event of an event stream with its lag: when the client had it, less when the backend
/// sent it (`data: sent=MICROS`).
fn event_lags(timed: &Timed) -> Vec<Duration> {
    let mut text = String::new();
    let mut lags = Vec::new();
    for (arrived, _, piece) in &timed.pieces {
        text.push_str(std::str::from_utf8(piece).expect("events are text"));
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            let sent = event
                .lines()
                .find_map(|l| l.strip_prefix("data: sent="))
                .and_then(|v| v.parse::<u64>().ok())
                .expect("data: sent=MICROS");
            let sent = SystemTime::UNIX_EPOCH + Duration::from_micros(sent);
            lags.push(arrived.duration_since(sent).unwrap_or_default());
        }
    }
    assert!(text.is_empty(), "a partial event at the end: {text:?}");
    lags
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_arrive_as_they_are_sent() {
    let stack = Stack::start(Knobs::default()).await;
    let stored = |m: &integration::Metrics| m.sum("railproxy_store_entries", &[]);
    let before = (stored(&stack.edge_metrics().await), stored(&stack.origin_metrics().await));
    let url = stack.url("/events?n=6&ms=300");
    for (client, name, headers) in [
        (Http::h1(), "HTTP/1.1", vec![]),
        (Http::h1(), "HTTP/1.1 accepting gzip and br", vec![("accept-encoding", "gzip, br")]),
        (Http::h2c(), "HTTP/2", vec![]),
    ] {
        let timed = client.get_timed(&url, &headers).await.expect("event stream");
        assert_eq!(timed.status, 200, "{name}");
        assert_eq!(timed.headers.get("content-type").unwrap(), "text/event-stream", "{name}");
        assert!(timed.headers.get("content-encoding").is_none(), "{name}: an event stream is not compressed");
        let lags = event_lags(&timed);
        assert_eq!(lags.len(), 6, "{name}");
        for (i, lag) in lags.iter().enumerate() {
            assert!(*lag <= EVENT_LAG, "{name}: event {i} arrived {lag:?} after it was sent: {lags:?}");
        }
        // Six events 300 ms apart took 1.5 s: arriving as they come, not all at the end.
        let spread = timed.pieces.last().unwrap().1 - timed.first_byte().unwrap();
        assert!(spread >= Duration::from_millis(1200), "{name}: events came within {spread:?}");
    }
    let after = (stored(&stack.edge_metrics().await), stored(&stack.origin_metrics().await));
    assert_eq!(before, after, "event streams are never stored as versions (edge, origin)");
}

/// The versions `/flush/generated-100k` serves, in turn.
fn versions() -> Vec<Vec<u8>> {
    let set = delta::testing::generated_sets().into_iter().find(|s| s.name == "generated-100k").expect("set");
    set.versions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_head_of_a_page_flushed_early_reaches_the_client_early() {
    let stack = Stack::start(Knobs::default()).await;
    let v = versions();
    let http = Http::h1();
    // The backend sends the first 8 KB, then the rest 500 ms later. The first fetch crosses in
    // full (zstd), the next ones as deltas against the version before: all are cut at the pause.
    for (turn, length) in [(0, false), (1, false), (2, true), (3, false)] {
        let query = if length { "&length=1" } else { "" };
        let url = stack.url(&format!("/flush/generated-100k?first=8192&ms=500{query}"));
        let timed = http.get_timed(&url, &[]).await.expect("page");
        assert_eq!(timed.status, 200);
        assert!(timed.body() == v[turn], "turn {turn}: the client got other bytes than the backend sent");
        let first = timed.first_byte().expect("a body");
        let last = timed.pieces.last().unwrap().1;
        assert!(first < Duration::from_millis(250), "turn {turn}: first byte after {first:?}");
        assert!(last >= Duration::from_millis(500), "turn {turn}: the rest came after {last:?}");
        let early: usize =
            timed.pieces.iter().filter(|(_, at, _)| *at < Duration::from_millis(400)).map(|p| p.2.len()).sum();
        assert_eq!(early, 8192, "turn {turn}: what came before the pause");
    }
    // A browser's request: the head, compressed for it, is out as early, and decodes alone.
    let url = stack.url("/flush/generated-100k?first=8192&ms=500");
    let timed = http.get_timed(&url, &[("accept-encoding", "gzip")]).await.expect("page");
    assert_eq!(timed.headers.get("content-encoding").unwrap(), "gzip");
    let first = timed.first_byte().expect("a body");
    assert!(first < Duration::from_millis(250), "compressed: first byte after {first:?}");
    let early: Vec<u8> =
        timed.pieces.iter().filter(|(_, at, _)| *at < Duration::from_millis(400)).flat_map(|p| p.2.to_vec()).collect();
    let head = {
        use std::io::Write as _;
        let mut d = flate2::write::GzDecoder::new(Vec::new());
        d.write_all(&early).unwrap();
        d.flush().unwrap();
        d.get_ref().clone()
    };
    assert!(head == v[4][..8192], "the early gzip bytes decode to the page's first 8 KB");
    let mut whole = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&timed.body()[..]), &mut whole).unwrap();
    assert!(whole == v[4], "the gzip body decodes to the backend's page");
    // Turns 1, 3 and 4 had the turn before them as a base (turn 2's URL is another page).
    let m = stack.origin_metrics().await;
    assert_eq!(m.sum("railproxy_delta_base_total", &[("mode", "origin"), ("result", "hit")]), 3.0, "deltas were made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_download_streams_in_bounded_memory() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    const SIZE: u64 = 1 << 30;
    const BOUND: u64 = 64 << 20;
    let stack = Stack::start(Knobs::default()).await;
    let (edge, origin) = (stack.edge.pid(), stack.origins[0].proc.as_ref().expect("origin").pid());
    // Warm both up (connections, pools), then take the baseline.
    let warm = Http::h1().get(&stack.url("/big/1000000"), &[]).await.expect("warm-up");
    assert_eq!(warm.body.len(), 1_000_000);
    let base = (rss(edge), rss(origin));
    let mut sock = tokio::net::TcpStream::connect(stack.edge_addr).await.expect("connect");
    let req = format!("GET /big/{SIZE} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    sock.write_all(req.as_bytes()).await.expect("request");
    let mut buf = vec![0u8; 256 * 1024];
    let started = std::time::Instant::now();
    // The head, and whatever of the body came with it.
    let mut got = Vec::new();
    let body_start = loop {
        let n =
            tokio::time::timeout(Duration::from_secs(30), sock.read(&mut buf)).await.expect("stalled").expect("read");
        assert!(n > 0, "closed before the head: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        if let Some(p) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = got[..body_start].to_vec();
    // The backend's body is one 64 KB block of pseudo-random bytes over and over: each piece is
    // checked against it as it comes.
    let block: Vec<u8> = {
        let mut rng = delta::testing::Rng::new(64 * 1024);
        (0..64 * 1024).map(|_| rng.next_u64() as u8).collect()
    };
    let (mut total, mut peak, mut next_sample) = (0u64, base, 0u64);
    let check = |data: &[u8], total: &mut u64| {
        let mut data = data;
        while !data.is_empty() {
            let at = (*total % block.len() as u64) as usize;
            let n = (block.len() - at).min(data.len());
            assert!(data[..n] == block[at..at + n], "the body differs near byte {}", *total);
            *total += n as u64;
            data = &data[n..];
        }
    };
    check(&got[body_start..], &mut total);
    loop {
        let n =
            tokio::time::timeout(Duration::from_secs(30), sock.read(&mut buf)).await.expect("stalled").expect("read");
        if n == 0 {
            break;
        }
        check(&buf[..n], &mut total);
        if total >= next_sample {
            peak = (peak.0.max(rss(edge)), peak.1.max(rss(origin)));
            next_sample += 16 << 20;
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains(&format!("content-length: {SIZE}")), "{head}");
    assert_eq!(total, SIZE, "the whole body");
    let grew = (peak.0.saturating_sub(base.0), peak.1.saturating_sub(base.1));
    eprintln!("1 GiB in {:?}; RSS grew by {} MB (edge), {} MB (origin)", started.elapsed(), grew.0 >> 20, grew.1 >> 20);
    assert!(grew.0 <= BOUND && grew.1 <= BOUND, "RSS grew by {grew:?} bytes (edge, origin), bound {BOUND}");
}

//! One client never hurts another: each attack runs for real against a whole stack (edge,
//! origin, backend) while bystanders fetch a page beside it; their requests must keep succeeding
//! (at least 99.9 %) during the attack and right after it, and the backend must see nothing it
//! should not.

use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;

use integration::hostile::naive::NaiveBackend;
use integration::hostile::{Bystanders, Tally, burst, memory, rapid_reset, slow_bodies, stray, targets, upgrades};
use integration::recorder::Recorder;
use integration::{Knobs, Stack};

/// Bystanders' success, during and after an attack, at least this share.
const BYSTANDERS_OK: f64 = 99.9;

fn assert_unhurt(tallies: &[Tally], what: &str) {
    for (phase, t) in ["during", "after"].iter().zip(tallies) {
        eprintln!("{what}: bystanders {phase} the attack: {} ({:?})", t.summary(), t.examples);
        assert!(t.total() > 0, "{what}: no bystander request {phase} the attack");
        assert!(
            t.percent_ok() >= BYSTANDERS_OK,
            "{what}: bystanders {phase} the attack got {}: {:?}",
            t.summary(),
            t.examples
        );
    }
}

/// HTTP/2 rapid reset from four connections at once for 10 s: two write each request and its
/// reset together (the edge reads them as one), two reset a batch of requests 2 ms after sending
/// it (the edge may have taken them up and sent them on). Reset streams must cost no backend
/// request once reset, and the origin must never take the edge's lanes for the offender.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_through_the_tunnel_costs_no_backend_request_and_no_lane() {
    let stack = Stack::start(Knobs::default()).await;
    let bystanders = Bystanders::on(&stack.url("/text/2000"), 3, 1).await;
    let authority = stack.edge_addr.to_string();
    let length = Duration::from_secs(10);
    let (together, later) = tokio::join!(
        rapid_reset::run(stack.edge_addr, &authority, "/cache/0/together", 2, length, rapid_reset::Shape::Together),
        rapid_reset::run(stack.edge_addr, &authority, "/cache/0/later", 2, length, rapid_reset::Shape::Later),
    );
    bystanders.next_phase();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tallies = bystanders.stop().await;
    let (reset_at_once, reset_later) = (stack.backend.hits("0/together").await, stack.backend.hits("0/later").await);
    let edge = stack.edge_metrics().await;
    let goaways = edge.sum("railproxy_tunnel_goaway_requests_total", &[]);
    let failovers = edge.sum("railproxy_failovers_total", &[]);
    let cancelled = edge.sum("railproxy_cancelled_total", &[("mode", "edge")]);
    let origin_cancelled = stack.origin_metrics().await.sum("railproxy_cancelled_total", &[("mode", "origin")]);
    eprintln!(
        "reset with their request: {together:?}, backend requests {reset_at_once}; reset 2 ms later: {later:?}, \
         backend requests {reset_later}; cancelled before going upstream: edge {cancelled}, origin {origin_cancelled}; \
         GOAWAYs from the origin {goaways}, listeners marked down {failovers}"
    );
    assert_unhurt(&tallies, "rapid reset");
    assert!(together.connections > 10 && later.connections > 2, "the attack did not run: {together:?} {later:?}");
    assert_eq!(reset_at_once, 0, "streams reset before the edge took them up reached the backend");
    assert!(cancelled > 1000.0, "the edge counted {cancelled} cancelled requests");
    assert_eq!(goaways, 0.0, "the origin closed lanes for resets the edge passed on");
    assert_eq!(failovers, 0.0, "a listener was marked down during the attack");
}

/// A thousand clients send a WebSocket handshake and leave before the backend answers it (it
/// takes 20 s): each one's tunnel connection and backend connection must go at once, and the
/// client-connection slots with them, so that the same address (the bystanders') is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_upgrades_release_everything_at_once() {
    let stack = Stack::start(Knobs::default()).await;
    let bystanders = Bystanders::on(&stack.url("/text/2000"), 3, 1).await;
    let origin_pid = stack.origins[0].proc.as_ref().expect("origin runs").pid();
    let (edge_before, origin_before) = (upgrades::open_fds(stack.edge.pid()), upgrades::open_fds(origin_pid));
    let host = stack.edge_addr.to_string();
    let served_before = stack.backend.served().await;
    let sent = upgrades::abandon(stack.edge_addr, &host, "/ws?delay=20000", 1000, 50, Duration::from_millis(200)).await;
    // Bystanders' requests count too; they are a few thousand at most, the handshakes 1,000.
    let backend_reached = stack.backend.served().await - served_before;
    bystanders.next_phase();
    // Released at once: well within the backend's 20 s, let alone websocket.idle_timeout (5 min).
    let slack = 40;
    let (edge_after, edge_took) =
        upgrades::fds_settle(stack.edge.pid(), edge_before + slack, Duration::from_secs(3)).await;
    let (origin_after, origin_took) =
        upgrades::fds_settle(origin_pid, origin_before + slack, Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tallies = bystanders.stop().await;
    // Every bystander request during the attack went to the backend too (its page is dynamic).
    let handshakes = backend_reached.saturating_sub(tallies[0].total());
    eprintln!(
        "{sent} upgrades abandoned (~{handshakes} reached the backend): edge descriptors {edge_before} -> \
         {edge_after} in {edge_took:?}, origin {origin_before} -> {origin_after} in {origin_took:?}"
    );
    assert_eq!(sent, 1000, "the handshakes were not all sent");
    assert!(
        handshakes >= 900,
        "only ~{handshakes} handshakes reached the backend: the test tests nothing past the edge"
    );
    assert_unhurt(&tallies, "abandoned upgrades");
    assert!(edge_after <= edge_before + slack, "the edge still holds {edge_after} descriptors ({edge_before} before)");
    assert!(
        origin_after <= origin_before + slack,
        "the origin still holds {origin_after} descriptors ({origin_before} before)"
    );
}

/// GETs carrying a body that is itself a request, against a backend that never reads GET
/// bodies and so answers the body too. By default (`limits.get_bodies: refuse`) they get 400 and
/// nothing reaches the backend; forwarded (`forward`), each goes on a backend connection of its
/// own. Either way no other client ever gets the stray answer, nor finds it in the edge cache
/// under its URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_ignores_get_bodies_never_answers_another_client() {
    for forward in [false, true] {
        let naive = NaiveBackend::start().await;
        let edge_extra = if forward { "limits: {get_bodies: forward}\n".to_string() } else { String::new() };
        let stack = Stack::start(Knobs { backend_override: Some(naive.addr), edge_extra, ..Knobs::default() }).await;
        let run = stray::run(stack.edge_addr, 2, 4, Duration::from_secs(4)).await;
        let setting = if forward { "forward" } else { "refuse" };
        let discarded = stack
            .origin_metrics()
            .await
            .sum("railproxy_upstream_connections_discarded_total", &[("mode", "origin"), ("reason", "unread_body")]);
        eprintln!(
            "get_bodies: {setting}: {} GETs with a body ({} refused, {} answered wrong); bystanders {} ({:?}); \
             refetched {} ({} wrong); the backend answered {} smuggled requests of {} in all; {discarded} backend \
             connections closed after an unread body",
            run.attacks,
            run.attacks_refused,
            run.attacks_wrong,
            run.victims.summary(),
            run.victims.examples,
            run.refetched,
            run.refetched_wrong,
            naive.smuggled(),
            naive.answered()
        );
        assert!(run.attacks > 100 && run.victims.total() > 100, "{setting}: the attack did not run: {run:?}");
        assert_eq!(run.victims.failed, 0, "{setting}: clients got answers not their own: {:?}", run.victims.examples);
        assert_eq!(run.refetched_wrong, 0, "{setting}: the edge cache kept stray answers under other clients' URLs");
        assert_eq!(run.attacks_wrong, 0, "{setting}: the attacker got answers not its own");
        if forward {
            assert_eq!(run.attacks_refused, 0, "forwarded GET bodies were refused");
            assert_eq!(discarded, run.attacks as f64, "each GET with a body closes its backend connection");
        } else {
            assert_eq!(run.attacks_refused, run.attacks, "GETs with a body were not refused");
            assert_eq!(naive.smuggled(), 0, "a refused body reached the backend");
        }
    }
}

/// 300 slow uploads dressed up so that a proxy might stream them (an `Upgrade` that is not a
/// WebSocket handshake, a gRPC content type on HTTP/1.1): request buffering must still hold them
/// at the edge, where they cost no backend connection, and a broken chunked body so dressed must
/// reach no backend at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_with_odd_upgrades_or_grpc_types_are_still_buffered() {
    integration::raise_open_files_limit();
    let recorder = Recorder::start().await;
    let stack = Stack::start(Knobs { backend_override: Some(recorder.addr), ..Knobs::default() }).await;
    let bystanders = Bystanders::on(&stack.url("/bystander"), 3, 1).await;
    let host = stack.edge_addr.to_string();
    let slow = slow_bodies::Slow::start(stack.edge_addr, &host, "/slow", 300);
    // Every head read at the edge, each body a tenth sent: what holds what now is what counts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = recorder.busy();
    let slow_seen = recorder.requests().iter().filter(|r| r.target == "/slow").count();
    let answers = slow.finish().await;
    let mut refused = Vec::new();
    for i in 0..slow_bodies::DISGUISES.len() {
        let [first, rest] = slow_bodies::broken_chunked(i, &host, "/broken");
        let gap = Duration::from_millis(300);
        let answer = integration::raw::exchange(stack.edge_addr, &[&first, &rest], gap, Duration::from_secs(5)).await;
        refused.push(answer.status);
    }
    // A WebSocket handshake that announces a body is no handshake: refused, not streamed.
    let handshake = upgrades::handshake(&host, "/ws").replace("\r\n\r\n", "\r\nContent-Length: 5\r\n\r\nhello");
    let with_body = integration::raw::send(stack.edge_addr, &handshake).await;
    bystanders.next_phase();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tallies = bystanders.stop().await;
    assert_eq!(with_body.status, Some(400), "a handshake with a body: {:?}", String::from_utf8_lossy(&with_body.bytes));
    let right =
        answers.iter().enumerate().filter(|(i, (s, b))| *s == Some(200) && *b == slow_bodies::body_of(*i)).count();
    let broken_seen = recorder.requests().iter().filter(|r| r.target == "/broken").count();
    eprintln!(
        "300 slow bodies: backend connections busy meanwhile {held}, bodies the backend had {slow_seen}; \
         answered whole {right}; broken chunked bodies answered {refused:?}, reached the backend {broken_seen}"
    );
    assert_unhurt(&tallies, "slow bodies");
    assert!(held <= 10, "{held} backend connections were held by slow bodies");
    assert_eq!(slow_seen, 0, "a slow body reached the backend before it was whole");
    assert_eq!(
        right,
        300,
        "slow bodies were not answered whole: {:?}",
        answers.iter().map(|a| a.0).collect::<Vec<_>>()
    );
    assert!(refused.iter().all(|s| *s == Some(400)), "broken chunked bodies answered {refused:?}");
    assert_eq!(broken_seen, 0, "a broken chunked body reached the backend");
}

/// Sends `total` bytes as 1 MB binary messages on a WebSocket through `stack`'s edge and reads
/// each echo back: how many came back whole, and how long it took.
async fn websocket_session(stack: &Stack, total: usize) -> (usize, Duration) {
    let url = format!("ws://{}/ws", stack.edge_addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("handshake");
    let message: Vec<u8> = (0..1 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let (start, mut whole) = (Instant::now(), 0);
    for _ in 0..total / message.len() {
        if ws.send(Message::binary(message.clone())).await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) if b[..] == message[..] => whole += b.len(),
            other => {
                eprintln!("the socket ended after {whole} bytes: {:?}", other.map(|o| o.map(|m| m.map(|m| m.len()))));
                break;
            }
        }
    }
    (whole, start.elapsed())
}

/// A WebSocket is not a request body: 200 MB cross one (each way) although `limits.max_body` is
/// 100 MB, while bystanders fetch pages; `websocket.max_rate` paces a socket instead of cutting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_websocket_is_not_cut_by_the_body_limit_and_keeps_its_own_pace() {
    let stack = Stack::start(Knobs::default()).await;
    let bystanders = Bystanders::on(&stack.url("/text/2000"), 3, 1).await;
    let (echoed, took) = websocket_session(&stack, 200 << 20).await;
    bystanders.next_phase();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tallies = bystanders.stop().await;
    eprintln!("200 MB WebSocket: {} MB echoed in {took:?}", echoed >> 20);
    assert_unhurt(&tallies, "a 200 MB WebSocket");
    assert_eq!(echoed, 200 << 20, "the socket was cut");

    // 1 MB/s each way, a second's worth at once: 4 MB take at least 3 s more, and all arrive.
    let paced = Stack::start(Knobs { edge_extra: "websocket: {max_rate: 1M}\n".into(), ..Knobs::default() }).await;
    let (echoed, took) = websocket_session(&paced, 4 << 20).await;
    eprintln!("4 MB at websocket.max_rate 1M: {} MB echoed in {took:?}", echoed >> 20);
    assert_eq!(echoed, 4 << 20, "the paced socket was cut");
    assert!(took >= Duration::from_millis(2800), "4 MB at 1 MB/s took {took:?}");
}

/// 5,000 GETs at once from five source addresses, through the edge and origin to the only
/// backend of their host, which accepts slowly (a backlog of 128, a pause after each accept, none
/// at all for the first 3 s): its accept queue overflows and connects time out, but a backend
/// that exists is tried until it answers, no more connects are in flight to it than its queue
/// takes (`backend.max_connects`), and every client gets its page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_never_takes_out_the_only_backend() {
    integration::raise_open_files_limit();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = std::process::Command::new(integration::process::bin("railproxy-testbackend"));
    cmd.args(["--backlog", "128", "--accept-pause-us", "200"]);
    let slow = integration::Backend::start_with(dir.path(), "slow-backend", cmd);
    let stack = Stack::start(Knobs { backend_override: Some(slow.addr), ..Knobs::default() }).await;
    let page =
        integration::Http::h1().get(&format!("http://{}/text/2000", slow.addr), &[]).await.expect("backend answers");
    let bystanders = Bystanders::on(&stack.url("/text/2000"), 3, 1).await;
    let host = stack.edge_addr.to_string();
    let sources = burst::sources(5);
    // The backend takes no connection for the burst's first 3 s: every connect beyond its
    // backlog of 128 times out (the stack's backend.connect_timeout is 1 s).
    burst::stall(slow.addr, 3000).await;
    let run =
        burst::run(stack.edge_addr, &host, "/text/2000", 5000, &sources, &page.body, Duration::from_secs(60)).await;
    bystanders.next_phase();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tallies = bystanders.stop().await;
    let origin = stack.origin_metrics().await;
    eprintln!(
        "burst of {}: {} right, outcomes {:?} ({:?}); backend connects that failed and were tried again {}",
        run.sent,
        run.ok,
        run.statuses,
        run.examples,
        origin.sum("railproxy_backend_connect_failures_total", &[])
    );
    assert_unhurt(&tallies, "a burst");
    assert_eq!(run.ok, run.sent, "burst requests failed: {:?} {:?}", run.statuses, run.examples);
}

/// Request targets nginx refuses are refused here too (400), at the edge and at an origin
/// listener an edge might pass them to, and none reaches the backend; odd but valid ones are
/// served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_targets_are_refused_as_nginx_refuses_them() {
    use integration::tls_client::{Knock, knock_with};
    let stack = Stack::start(Knobs::default()).await;
    let bystanders = Bystanders::on(&stack.url("/text/2000"), 3, 1).await;
    let served_before = stack.backend.served().await;
    let host = "127.0.0.1";
    let certs = stack.dir.path().join("certs");
    let (ca, cert, key) = (certs.join("ca.pem"), certs.join("edge.pem"), certs.join("edge.key"));
    let k = Knock { ca: &ca, client: Some((&cert, &key)), tls12: false, server_name: "origin.railproxy.internal" };
    let mut wrong = Vec::new();
    for (what, raw) in targets::refused(host) {
        let edge = integration::raw::exchange(stack.edge_addr, &[&raw], Duration::ZERO, Duration::from_secs(5)).await;
        let origin = knock_with(stack.origin_addr, k, &String::from_utf8_lossy(&raw)).await;
        let origin_status = integration::raw::status_of(&origin.response);
        eprintln!("{what:<44} edge {:?}, origin {origin_status:?}", edge.status);
        if edge.status != Some(400) {
            wrong.push(format!("edge: {what}: {:?}", edge.status));
        }
        // The origin reads what an edge sends it as text (a raw control byte cannot cross h2).
        if origin_status.is_some_and(|s| s != 400) {
            wrong.push(format!("origin: {what}: {origin_status:?}"));
        }
    }
    for (what, raw) in targets::served(host) {
        let a = integration::raw::exchange(stack.edge_addr, &[&raw], Duration::ZERO, Duration::from_secs(5)).await;
        eprintln!("{what:<44} edge {:?}", a.status);
        if a.status != Some(200) {
            wrong.push(format!("edge refused {what}: {:?}", a.status));
        }
    }
    bystanders.next_phase();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tallies = bystanders.stop().await;
    let target_hits = stack.backend.hits("60/target").await;
    eprintln!(
        "refused targets that reached the backend: {target_hits} (backend requests meanwhile {})",
        stack.backend.served().await - served_before
    );
    assert_unhurt(&tallies, "odd request targets");
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(target_hits, 0, "a refused target reached the backend");
}

/// The rule for credentials and the shared cache: a request with credentials (a cookie, an
/// Authorization) is neither answered from the edge cache nor stored in it, even when the answer
/// says `public, max-age`; requests without credentials share what is cached. Nobody gets
/// another's page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cacheable_answer_to_a_request_with_credentials_is_never_anyone_elses() {
    let stack = Stack::start(Knobs::default()).await;
    let bystanders = Bystanders::on(&stack.url("/text/2000"), 3, 1).await;
    let http = integration::Http::h1();
    let url = stack.url("/personal/generated-10k");
    let public = ("x-cc", "public, max-age=600");
    let get = |headers: Vec<(&'static str, &'static str)>| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http.get(&url, &headers).await.expect("answer");
            assert_eq!(r.status, 200);
            let body = String::from_utf8_lossy(&r.body).to_string();
            let who = body.rsplit("<!-- for ").next().and_then(|t| t.split(" -->").next()).unwrap_or("?").to_string();
            (who, r.header("railproxy-cache").unwrap_or("").to_string())
        }
    };
    let mut seen = Vec::new();
    for (client, headers) in [
        ("alice", vec![public, ("cookie", "session=alice")]),
        ("anonymous", vec![public]),
        ("bob", vec![public, ("cookie", "session=bob")]),
        ("anonymous again", vec![public]),
        ("alice again", vec![public, ("cookie", "session=alice")]),
        ("with Authorization", vec![public, ("authorization", "Bearer carol")]),
        ("anonymous once more", vec![public]),
    ] {
        let (who, cache) = get(headers).await;
        eprintln!("{client:<22} got the page for {who:<16} railproxy-cache: {cache}");
        seen.push((client, who, cache));
    }
    bystanders.next_phase();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tallies = bystanders.stop().await;
    assert_unhurt(&tallies, "credentialed requests");
    let expect = [
        ("alice", "session=alice", "BYPASS"),
        ("anonymous", "anonymous", "MISS"),
        ("bob", "session=bob", "BYPASS"),
        ("anonymous again", "anonymous", "HIT"),
        ("alice again", "session=alice", "BYPASS"),
        ("with Authorization", "anonymous", "BYPASS"),
        ("anonymous once more", "anonymous", "HIT"),
    ];
    for ((client, who, cache), (c, w, k)) in seen.iter().zip(expect) {
        assert_eq!((*client, who.as_str(), cache.as_str()), (c, w, k), "{client}");
    }

    // With the session cookies named (`credentials.cookies`), other cookies (analytics, consent)
    // make no request a user's: such requests share the cache; a session cookie still does not.
    let named =
        Stack::start(Knobs { edge_extra: "credentials: {cookies: [session]}\n".into(), ..Knobs::default() }).await;
    let url = named.url("/personal/generated-10k");
    let mut caches = Vec::new();
    for headers in
        [vec![public], vec![public, ("cookie", "_ga=GA1.2.3")], vec![public, ("cookie", "_ga=1; session=dave")]]
    {
        let r = http.get(&url, &headers).await.expect("answer");
        caches.push(r.header("railproxy-cache").unwrap_or("").to_string());
    }
    eprintln!("with credentials.cookies [session]: anonymous, analytics cookie, session cookie: {caches:?}");
    assert_eq!(caches, ["MISS", "HIT", "BYPASS"]);
}

/// 5,000 clients each fetch a page and keep their connection open, then leave; then 5,000 GETs
/// come at once. An idle kept-alive connection costs the edge a few tens of KB (it was 107 KB:
/// a 64 KB read buffer and Pingora's whole request state machine per connection), and resident
/// memory comes back near where it started once they are gone (it stayed at its peak).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cost_little_and_memory_comes_back() {
    integration::raise_open_files_limit();
    let stack = Stack::start(Knobs::default()).await;
    let (edge, origin) = (stack.edge.pid(), stack.origins[0].proc.as_ref().expect("origin runs").pid());
    let bystanders = Bystanders::on(&stack.url("/text/2000"), 3, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fresh = (memory::rss(&[edge]), memory::rss(&[origin]));
    let held = memory::hold(stack.edge_addr, "127.0.0.1", "/text/2000", 5000, &burst::sources(5), 500).await;
    let under = (memory::rss(&[edge]), memory::rss(&[origin]));
    let (n, answered) = (held.connections.len(), held.answered);
    drop(held);
    let page = integration::Http::h1().get(&stack.url("/text/2000"), &[]).await.expect("page").body;
    let after_idle = (memory::rss_after(&[edge], AFTER).await, memory::rss_after(&[origin], AFTER).await);
    let run = burst::run(
        stack.edge_addr,
        "127.0.0.1",
        "/text/2000",
        5000,
        &burst::sources(5),
        &page,
        Duration::from_secs(60),
    )
    .await;
    bystanders.next_phase();
    let after_burst = (memory::rss_after(&[edge], AFTER).await, memory::rss_after(&[origin], AFTER).await);
    let tallies = bystanders.stop().await;
    let mb = |b: u64| b as f64 / 1048576.0;
    let per_connection = under.0.saturating_sub(fresh.0) as f64 / 1024.0 / n as f64;
    eprintln!(
        "edge: fresh {:.1} MB, {n} idle connections ({answered} answered) {:.1} MB ({per_connection:.1} KB each), \
         {AFTER:?} after they left {:.1} MB, {AFTER:?} after a burst of 5,000 ({} right) {:.1} MB; \
         origin: {:.1}, {:.1}, {:.1}, {:.1} MB",
        mb(fresh.0),
        mb(under.0),
        mb(after_idle.0),
        run.ok,
        mb(after_burst.0),
        mb(fresh.1),
        mb(under.1),
        mb(after_idle.1),
        mb(after_burst.1)
    );
    assert_unhurt(&tallies, "5,000 connections");
    assert_eq!((n, answered, run.ok), (5000, 5000, 5000), "clients were not served");
    assert!(per_connection < 40.0, "an idle connection costs the edge {per_connection:.1} KB");
    for (what, fresh, after) in
        [("edge", fresh.0, after_idle.0), ("edge", fresh.0, after_burst.0), ("origin", fresh.1, after_burst.1)]
    {
        assert!(after < fresh + (30 << 20), "the {what} kept {:.1} MB of {:.1} MB fresh", mb(after), mb(fresh));
    }
}

/// How long after a load the tests read a proxy's memory.
const AFTER: Duration = Duration::from_secs(3);

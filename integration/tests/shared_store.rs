//! Redundant origin listeners sharing one Redis: a version stored through one gives deltas
//! through the other; without Redis, responses stay correct and fast.

use std::time::{Duration, Instant};

use delta::testing;
use integration::{Http, Knobs, Metrics, Redis, Stack};

async fn two_listeners_on(redis: &Redis) -> Stack {
    let stack = Stack::start(Knobs { origins: 2, store: Some(redis.url()), ..Knobs::default() }).await;
    // Listeners connect to Redis in the background; warm up until both have stored something.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    loop {
        assert!(Instant::now() < deadline, "origins did not reach Redis");
        let _ = Http::h1().get(&stack.url(&format!("/pages/generated-10k?warm={i}")), &[]).await;
        i += 1;
        let mut ready = true;
        for o in &stack.origins {
            let m = Metrics::settled(o.admin).await;
            ready &= m.sum("railproxy_store_operations_total", &[("op", "put"), ("result", "ok")]) > 0.0;
        }
        if ready {
            return stack;
        }
    }
}

fn base_hits(m: &Metrics) -> (f64, f64) {
    let hit = m.sum("railproxy_delta_base_total", &[("mode", "origin"), ("result", "hit")]);
    let miss = m.sum("railproxy_delta_base_total", &[("mode", "origin"), ("result", "miss")]);
    (hit, miss)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_stored_through_one_listener_gives_deltas_through_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path());
    let stack = two_listeners_on(&redis).await;
    let before: Vec<(f64, f64)> = listener_hits(&stack).await;
    let versions = &testing::generated_sets()[1].versions;
    // Requests alternate between the two listeners, so each base was stored by the other one.
    // Listeners write to Redis after the response; wait for each write, which is not the point.
    let mut stored = puts_ok(&stack).await;
    for (i, v) in versions.iter().enumerate().take(20) {
        let r = Http::h1().get(&stack.url("/pages/generated-100k"), &[("x-version", &i.to_string())]).await.unwrap();
        assert!(r.body == v[..], "version {i}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while puts_ok(&stack).await <= stored {
            assert!(Instant::now() < deadline, "version {i} was not written to Redis");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        stored = puts_ok(&stack).await;
    }
    let after = listener_hits(&stack).await;
    for (n, (b, a)) in before.iter().zip(&after).enumerate() {
        let (hits, misses) = (a.0 - b.0, a.1 - b.1);
        let rate = hits / (hits + misses);
        eprintln!(
            "listener {}: {hits} bases found in the shared store, {misses} not: delta hit rate {:.0} %",
            n + 1,
            100.0 * rate
        );
        assert!(hits >= 9.0 && misses == 0.0, "listener {}: {hits} hits, {misses} misses", n + 1);
    }
    let m = stack.edge_metrics().await;
    assert!(m.sum("railproxy_delta_wire_bytes_total", &[("encoding", "dcz")]) > 0.0);
}

async fn puts_ok(stack: &Stack) -> f64 {
    let mut n = 0.0;
    for o in &stack.origins {
        n +=
            Metrics::settled(o.admin).await.sum("railproxy_store_operations_total", &[("op", "put"), ("result", "ok")]);
    }
    n
}

async fn listener_hits(stack: &Stack) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for o in &stack.origins {
        out.push(base_hits(&Metrics::settled(o.admin).await));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_gone_responses_stay_correct_and_nothing_waits_past_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = Redis::start(dir.path());
    let stack = two_listeners_on(&redis).await;
    let versions = &testing::generated_sets()[1].versions;
    let url = stack.url("/pages/generated-100k");
    for (i, v) in versions.iter().enumerate().take(5) {
        assert!(Http::h1().get(&url, &[("x-version", &i.to_string())]).await.unwrap().body == v[..]);
    }
    redis.proc.signal("KILL");
    redis.proc.wait_exit(Duration::from_secs(5));
    let mut slowest = Duration::ZERO;
    for (i, v) in versions.iter().enumerate().skip(5) {
        let start = Instant::now();
        let r = Http::h1().get(&url, &[("x-version", &i.to_string())]).await.unwrap();
        slowest = slowest.max(start.elapsed());
        assert_eq!(r.status, 200);
        assert!(r.body == v[..], "version {i} without Redis");
    }
    eprintln!("Redis killed: {} requests, all correct, slowest {slowest:?} (store timeout 100 ms)", versions.len() - 5);
    assert!(slowest < Duration::from_millis(400), "a request took {slowest:?}");
    let mut failed = 0.0;
    for o in &stack.origins {
        let m = Metrics::settled(o.admin).await;
        for result in ["error", "timeout", "unavailable"] {
            failed += m.sum("railproxy_store_operations_total", &[("result", result)]);
        }
    }
    assert!(failed > 0.0, "the metrics say Redis calls failed");
}

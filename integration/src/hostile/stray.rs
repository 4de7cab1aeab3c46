//! A body on a GET, against a backend that does not read GET bodies ([`NaiveBackend`]): the
//! body here is a request of its own (`GET /smuggled/N`), which such a backend answers on the
//! kept-alive connection after the real answer. A proxy that reuses that connection gives the
//! stray answer to the next request on it, another client's, and an edge cache may store it
//! under that client's URL.
//!
//! [`NaiveBackend`]: super::naive::NaiveBackend

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;

use super::Tally;
use super::naive::answer_for;
use crate::Http;

/// What one run saw.
#[derive(Debug, Clone, Default)]
pub struct StrayRun {
    /// GETs with a body sent, those refused (400), and those answered with another's answer.
    pub attacks: u64,
    pub attacks_refused: u64,
    pub attacks_wrong: u64,
    /// Other clients' GETs while the attack ran (each a URL of its own).
    pub victims: Tally,
    /// The victims' URLs fetched again afterwards (from the edge cache, where it keeps them):
    /// answers that were not the URL's own.
    pub refetched: u64,
    pub refetched_wrong: u64,
}

/// `attackers` clients send GETs with a smuggling body while `victims` clients fetch URLs of
/// their own, through `addr`, for `length`; then every victim URL is fetched once more.
pub async fn run(addr: SocketAddr, attackers: usize, victims: usize, length: Duration) -> StrayRun {
    let stop = Instant::now() + length;
    let attack_counts: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
    let next_url = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for a in 0..attackers {
        let counts = attack_counts.clone();
        tasks.push(tokio::spawn(async move {
            let http = Http::h1();
            let mut i = 0u64;
            while Instant::now() < stop {
                let target = format!("/attack/{a}-{i}");
                let body = Bytes::from(format!("GET /smuggled/{a}-{i} HTTP/1.1\r\nHost: smuggled\r\n\r\n"));
                let outcome = match http.send(Method::GET, &format!("http://{addr}{target}"), &[], body).await {
                    Ok(r) if r.status == 400 => 1,
                    Ok(r) if r.body == answer_for(&target).as_bytes() => 0,
                    _ => 2,
                };
                counts[0].fetch_add(1, Ordering::Relaxed);
                if outcome > 0 {
                    counts[outcome].fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    let victim_tasks: Vec<_> = (0..victims)
        .map(|_| {
            let next_url = next_url.clone();
            tokio::spawn(async move {
                let http = Http::h1();
                let mut tally = Tally::default();
                while Instant::now() < stop {
                    let target = format!("/victim/{}", next_url.fetch_add(1, Ordering::Relaxed));
                    match http.get(&format!("http://{addr}{target}"), &[]).await {
                        Ok(r) if r.status == 200 && r.body == answer_for(&target).as_bytes() => tally.ok += 1,
                        other => {
                            tally.failed += 1;
                            if tally.examples.len() < 5 {
                                let got = other.map(|r| String::from_utf8_lossy(&r.body).trim().to_string());
                                tally.examples.push(format!("{target}: {got:?}"));
                            }
                        }
                    }
                }
                tally
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let mut run = StrayRun {
        attacks: attack_counts[0].load(Ordering::Relaxed),
        attacks_refused: attack_counts[1].load(Ordering::Relaxed),
        attacks_wrong: attack_counts[2].load(Ordering::Relaxed),
        ..StrayRun::default()
    };
    for t in victim_tasks {
        let tally = t.await.unwrap_or_default();
        run.victims.ok += tally.ok;
        run.victims.failed += tally.failed;
        run.victims.examples.extend(tally.examples.into_iter().take(5 - run.victims.examples.len().min(5)));
    }
    let http = Http::h1();
    for n in 0..next_url.load(Ordering::Relaxed) {
        let target = format!("/victim/{n}");
        run.refetched += 1;
        let right = matches!(
            http.get(&format!("http://{addr}{target}"), &[]).await,
            Ok(r) if r.body == answer_for(&target).as_bytes()
        );
        run.refetched_wrong += u64::from(!right);
    }
    run
}

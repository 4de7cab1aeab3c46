//! Hostile and unlucky clients beside well-behaved ones: each attack of the "one client never
//! hurts another" family as a function that runs it against any proxy address (railproxy's edge,
//! or nginx in front of the same backend), and [`Bystanders`], the clients whose requests must
//! keep succeeding while it runs and right after. Shared by `tests/hostile.rs` and
//! `railproxy-hostilebench`, so that the figures and the tests come from the same code.

pub mod burst;
pub mod memory;
pub mod naive;
pub mod nginx;
pub mod rapid_reset;
pub mod slow_bodies;
pub mod stray;
pub mod targets;
pub mod upgrades;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;

use crate::Http;

/// What one phase of bystander traffic saw.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub ok: u64,
    pub failed: u64,
    /// The first few failures, as text.
    pub examples: Vec<String>,
}

impl Tally {
    pub fn total(&self) -> u64 {
        self.ok + self.failed
    }

    /// Share of requests answered right, in percent (100 with no requests).
    pub fn percent_ok(&self) -> f64 {
        if self.total() == 0 { 100.0 } else { 100.0 * self.ok as f64 / self.total() as f64 }
    }

    /// `99.95 % of 4,000` style, for reports and assertion messages.
    pub fn summary(&self) -> String {
        format!("{:.2} % of {}", self.percent_ok(), self.total())
    }
}

/// Well-behaved clients fetching a page in a loop through a proxy, each on a kept-alive
/// connection of its own, checking every body byte for byte. Their requests are counted per
/// phase: [`Bystanders::next_phase`] moves from "during the attack" to "after it".
#[allow(missing_debug_implementations)]
pub struct Bystanders {
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicUsize>,
    tallies: Arc<std::sync::Mutex<Vec<Tally>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Phases a bystander run counts apart.
pub const PHASES: usize = 3;

impl Bystanders {
    /// `clients` HTTP/1.1 clients asking `url` and `h2_clients` HTTP/2 (h2c) clients asking
    /// `h2_url` every `pause`, each answer compared with `expected`.
    pub fn start(
        url: &str,
        h2_url: &str,
        expected: &Bytes,
        clients: usize,
        h2_clients: usize,
        pause: Duration,
    ) -> Bystanders {
        let stop = Arc::new(AtomicBool::new(false));
        let phase = Arc::new(AtomicUsize::new(0));
        let tallies = Arc::new(std::sync::Mutex::new(vec![Tally::default(); PHASES]));
        let mut tasks = Vec::new();
        for i in 0..clients + h2_clients {
            let (stop, phase, tallies) = (stop.clone(), phase.clone(), tallies.clone());
            let url = if i < clients { url.to_string() } else { h2_url.to_string() };
            let expected = expected.clone();
            tasks.push(tokio::spawn(async move {
                let mut http = if i < clients { Http::h1() } else { Http::h2c() };
                http.timeout = Duration::from_secs(10);
                while !stop.load(Ordering::Relaxed) {
                    let at = phase.load(Ordering::Relaxed).min(PHASES - 1);
                    let failure = match http.get(&url, &[]).await {
                        Ok(r) if r.status == 200 && r.body == expected => None,
                        Ok(r) => Some(format!("{} with {} bytes ({})", r.status, r.body.len(), body_start(&r.body))),
                        Err(e) => Some(e),
                    };
                    {
                        let mut t = tallies.lock().expect("tally lock");
                        match failure {
                            None => t[at].ok += 1,
                            Some(f) => {
                                t[at].failed += 1;
                                if t[at].examples.len() < 5 {
                                    t[at].examples.push(f);
                                }
                            }
                        }
                    }
                    tokio::time::sleep(pause).await;
                }
            }));
        }
        Bystanders { stop, phase, tallies, tasks }
    }

    /// Fetches `url` once to learn what every answer must be, then starts as [`Bystanders::start`]
    /// with every client on `url`.
    pub async fn on(url: &str, clients: usize, h2_clients: usize) -> Bystanders {
        Bystanders::on_ports(url, url, clients, h2_clients).await
    }

    /// As [`Bystanders::on`], the HTTP/2 clients on `h2_url` (a server that takes HTTP/2 on a
    /// port of its own).
    pub async fn on_ports(url: &str, h2_url: &str, clients: usize, h2_clients: usize) -> Bystanders {
        let first = Http::h1().get(url, &[]).await.unwrap_or_else(|e| panic!("bystander page {url}: {e}"));
        assert_eq!(first.status, 200, "bystander page {url}");
        let pause = Duration::from_millis(5);
        Bystanders::start(url, h2_url, &first.body, clients, h2_clients, pause)
    }

    /// From now on requests count in the next phase.
    pub fn next_phase(&self) {
        self.phase.fetch_add(1, Ordering::Relaxed);
    }

    /// Stops every client (each finishes the request it is in) and returns the tallies per phase.
    pub async fn stop(self) -> Vec<Tally> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        self.tallies.lock().expect("tally lock").clone()
    }
}

fn body_start(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(60)]).replace('\n', " ")
}

/// A proxy under test, as the attacks see it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The Host every request names.
    pub host: String,
}

impl Target {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

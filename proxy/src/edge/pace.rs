//! A WebSocket's own limit on what it moves (`websocket.max_rate`): a token bucket per socket
//! and direction, holding a second's worth of bytes. A socket that sends faster is slowed, not
//! cut: the edge waits before it passes the next piece on, and TCP pushes back on the sender.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Pace {
    /// Bytes per second.
    rate: f64,
    /// Bytes that may pass now; below zero, a debt that time pays.
    tokens: f64,
    at: Instant,
}

impl Pace {
    /// A bucket of `rate` bytes per second, full.
    pub fn new(rate: u64, now: Instant) -> Pace {
        Pace { rate: rate as f64, tokens: rate as f64, at: now }
    }

    /// `n` bytes pass at `now`: how long to wait before passing them on, if at all.
    pub fn take(&mut self, n: usize, now: Instant) -> Option<Duration> {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * self.rate;
        self.at = now;
        self.tokens = (self.tokens + earned).min(self.rate) - n as f64;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_of_bytes_passes_at_once_and_the_rest_waits_its_turn() {
        let start = Instant::now();
        let mut p = Pace::new(1000, start);
        assert_eq!(p.take(1000, start), None, "a full bucket");
        assert_eq!(p.take(500, start), Some(Duration::from_millis(500)), "half a second's debt");
        // The debt paid, the next 500 bytes owe half a second again.
        let later = start + Duration::from_millis(500);
        assert_eq!(p.take(500, later), Some(Duration::from_millis(500)));
        // Idle for long: the bucket refills to one second's worth, no more.
        let much_later = later + Duration::from_secs(60);
        assert_eq!(p.take(1000, much_later), None);
        assert!(p.take(1, much_later).is_some());
    }
}

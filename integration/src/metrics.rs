//! Reading a process's `/metrics` (Prometheus text format).

use std::net::SocketAddr;

/// One series: name, labels, value.
pub type Series = (String, Vec<(String, String)>, f64);

/// One scrape.
#[derive(Debug, Clone)]
pub struct Metrics(pub Vec<Series>);

impl Metrics {
    pub async fn scrape(admin: SocketAddr) -> Metrics {
        let resp = crate::Http::h1().get(&format!("http://{admin}/metrics"), &[]).await.expect("scrape /metrics");
        assert!(resp.status.is_success(), "/metrics answered {}", resp.status);
        Metrics::parse(&String::from_utf8_lossy(&resp.body))
    }

    /// A scrape taken once every request the process has started is counted (its
    /// `railproxy_requests_in_flight` is zero: Pingora records a request's metrics after the client
    /// got the last byte), or after 5 s with requests still running.
    pub async fn settled(admin: SocketAddr) -> Metrics {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let m = Metrics::scrape(admin).await;
            if m.sum("railproxy_requests_in_flight", &[]) == 0.0 || std::time::Instant::now() > deadline {
                return m;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    pub fn parse(text: &str) -> Metrics {
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => {
                    let labels = rest
                        .trim_end_matches('}')
                        .split(',')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
                        .collect();
                    (n.to_string(), labels)
                }
                None => (series.to_string(), Vec::new()),
            };
            out.push((name, labels, value));
        }
        Metrics(out)
    }

    /// Sum of the series named `name` whose labels include all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v)))
            .map(|(_, _, v)| v)
            .sum()
    }

    /// True if a series with that name exists.
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _, _)| n == name)
    }
}

//! Prometheus metrics, all named `railproxy_*`, served on the admin listener.

use std::sync::{Arc, LazyLock};

use delta::codec::Encoding;
use delta::store::StoreStats;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, register_histogram_vec,
    register_int_counter, register_int_counter_vec, register_int_gauge_vec,
};

/// Dial-out lanes connected to this edge, by tunnel and replica (the origin process that
/// dialled them, as it names itself).
pub static DIALOUT_LANES: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "railproxy_dialout_lanes",
        "Lanes origins that dial out hold to this edge, by tunnel and replica",
        &["tunnel", "replica"]
    )
    .expect("metric")
});

/// Whether a configured tunnel has a lane at all (1) or none (0): every tunnel has the series,
/// from the start, so that one no origin ever dialled shows as 0 rather than as nothing.
pub static DIALOUT_TUNNEL_UP: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "railproxy_dialout_tunnel_up",
        "Whether a configured dial-out tunnel has at least one lane (1) or none (0)",
        &["tunnel"]
    )
    .expect("metric")
});

/// Connections to the connector listener, by outcome: `registered`, or why one was refused.
pub static DIALOUT_REGISTRATIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "railproxy_dialout_registrations_total",
        "Connections to the connector listener, by outcome (registered, or the reason refused)",
        &["result"]
    )
    .expect("metric")
});

/// Lanes this origin holds to each edge it dials (origin side).
pub static DIALOUT_CONNECTED: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "railproxy_dialout_connected_lanes",
        "Lanes this origin holds to each edge it dials",
        &["edge"]
    )
    .expect("metric")
});

/// Dials of a lane by this origin, by edge and outcome (`ok`, `error`).
pub static DIALOUT_DIALS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "railproxy_dialout_dials_total",
        "Lanes this origin dialled, by edge and outcome (ok, error)",
        &["edge", "result"]
    )
    .expect("metric")
});

/// Requests by mode and status class (2xx, 4xx, …).
pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "railproxy_requests_total",
        "Requests answered, by mode and status class",
        &["mode", "class"]
    )
    .expect("metric")
});

/// Requests between their start and the end of their logging: tests and operators can tell
/// that every finished request has been counted.
pub static IN_FLIGHT: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!("railproxy_requests_in_flight", "Requests in progress, by mode", &["mode"]).expect("metric")
});

/// Counts a request as in flight for as long as it lives in a request context; it is dropped
/// after the request's metrics are recorded.
pub struct InFlight(IntGauge);

impl InFlight {
    pub fn start(mode: &str) -> Self {
        let gauge = IN_FLIGHT.with_label_values(&[mode]);
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Time from request start to the end of the response.
pub static DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        HistogramOpts::new("railproxy_request_duration_seconds", "Request duration, by mode")
            .buckets(vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        &["mode"]
    )
    .expect("metric")
});

/// Body bytes as the backend sent them, by the encoding used on the tunnel.
pub static RAW_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "railproxy_delta_raw_bytes_total",
        "Response body bytes as the backend sent them, by mode and tunnel encoding",
        &["mode", "encoding"]
    )
    .expect("metric")
});

/// Body bytes as they crossed the tunnel, by encoding.
pub static WIRE_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "railproxy_delta_wire_bytes_total",
        "Response body bytes as they crossed the tunnel, by mode and tunnel encoding",
        &["mode", "encoding"]
    )
    .expect("metric")
});

/// Whether a base was available: edge `hit` (it named one) or `miss`; origin `hit` (it holds the
/// named base), `miss` (it does not) or `none` (no base named).
pub static BASE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "railproxy_delta_base_total",
        "Delta bases: named and held (hit), not held (miss), not named (none)",
        &["mode", "result"]
    )
    .expect("metric")
});

/// Page versions by whose they are (`crate::versions::Keep::class`): stored for everyone
/// (`anonymous`), stored for one user (`per_user`), or not stored because the response said so
/// (`refused`: no-store, or private/Set-Cookie without a user's key).
pub static VERSIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "railproxy_versions_stored_total",
        "Page versions stored, by class (anonymous, per_user), or refused by the response's Cache-Control",
        &["mode", "class"]
    )
    .expect("metric")
});

/// Delta-coded responses by whose base they were made against (`anonymous` or `per_user`).
pub static DELTAS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "railproxy_deltas_total",
        "Responses sent (origin) or received (edge) as deltas, by the class of their base",
        &["mode", "class"]
    )
    .expect("metric")
});

/// Delta responses whose body was the base itself, sent (origin) or served from the stored
/// copy (edge) as the 40-byte unchanged frame: nothing encoded, sent or decoded. A subset of
/// `railproxy_deltas_total`.
pub static UNCHANGED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "railproxy_unchanged_total",
        "Delta responses whose body equalled the base, crossing as the unchanged frame",
        &["mode"]
    )
    .expect("metric")
});

/// Edge: tunnel bodies that failed verification, by reason; none of their bytes were served.
pub static VERIFY_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "railproxy_delta_verify_failures_total",
        "Tunnel bodies refused by the edge's verification, by reason",
        &["reason"]
    )
    .expect("metric")
});

/// Edge: requests sent again without a base after the origin answered against another one.
pub static BASE_RETRIES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!("railproxy_delta_base_retries_total", "Requests retried without a base after a base mismatch")
        .expect("metric")
});

/// Edge: client responses aborted because the tunnel body failed after bytes went out.
pub static ABORTED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "railproxy_responses_aborted_total",
        "Client responses aborted because the tunnel body failed verification mid-stream"
    )
    .expect("metric")
});

/// Errors talking upstream (edge: to origin listeners; origin: to backends), by kind.
pub static UPSTREAM_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "railproxy_upstream_errors_total",
        "Errors reaching or reading from upstream, by mode and kind",
        &["mode", "kind"]
    )
    .expect("metric")
});

/// Tunnel connections: opened by the edge, accepted by the origin.
pub static TUNNEL_CONNECTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "railproxy_tunnel_connections_total",
        "Tunnel (TLS, HTTP/2) connections opened (edge) or accepted (origin)",
        &["mode"]
    )
    .expect("metric")
});

/// Edge: requests by cache outcome (HIT, MISS, STALE, EXPIRED, REVALIDATED, DYNAMIC, BYPASS).
pub static CACHE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("railproxy_cache_requests_total", "Edge requests by cache outcome", &["result"])
        .expect("metric")
});

/// Edge: 1 while an origin listener is up (answering probes, no tunnel failures), else 0.
pub static LISTENER_UP: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "railproxy_listener_up",
        "Origin listener health as the edge sees it (1 up, 0 down)",
        &["listener"]
    )
    .expect("metric")
});

/// Edge: lanes (tunnel connections) of each origin listener that take requests.
pub static LANES_SERVING: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "railproxy_tunnel_lanes_serving",
        "Edge: lanes of an origin listener that take requests (the listener is down at 0)",
        &["listener"]
    )
    .expect("metric")
});

/// Edge: times an origin listener was marked down and traffic moved away from it.
pub static FAILOVERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("railproxy_failovers_total", "Origin listeners marked down by the edge", &["listener"])
        .expect("metric")
});

/// Edge: requests sent again to another origin listener after the tunnel failed before a response.
pub static RETRIES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!("railproxy_retries_total", "Requests retried on another origin listener").expect("metric")
});

/// Edge: requests handled by the fallback because no origin listener was up.
pub static FALLBACKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "railproxy_fallbacks_total",
        "Requests answered by the fallback (direct or error)",
        &["kind"]
    )
    .expect("metric")
});

/// Origin: calls to a shared version store (Redis) by operation and outcome; `timeout`,
/// `error` and `unavailable` mean the response went out without a base.
pub static STORE_OPERATIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "railproxy_store_operations_total",
        "Shared version store calls by operation and result",
        &["op", "result"]
    )
    .expect("metric")
});

/// Tunnel peers refused: at the origin, edge certificates (`ca`: not issued by the configured
/// CA, or expired; `name`: none of `tunnel.client_names`; `tls12`) and, before TLS, connections
/// from outside `tunnel.allow` (`address`); at the edge, an origin connection that did not
/// negotiate TLS 1.3 (`tls12`).
pub static TUNNEL_AUTH_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "railproxy_tunnel_auth_failures_total",
        "Tunnel peers refused at the TLS handshake or, for their address, before it, by reason",
        &["reason"]
    )
    .expect("metric")
});

/// Certificate reloads on SIGHUP, by result.
pub static TLS_RELOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "railproxy_tls_reloads_total",
        "Certificate reloads on SIGHUP: the tunnel's, and the edge's HTTPS",
        &["result"]
    )
    .expect("metric")
});

/// When each certificate in use stops being valid (Unix seconds, the earliest of its chain), set
/// whenever one goes into use (start, SIGHUP): `tunnel` (the origin's server certificate, the
/// edge's client certificate), `https` (the edge's), `ca` (the earliest of the tunnel CAs
/// trusted). Alerts fire from it well before a handshake would fail.
pub static TLS_CERT_EXPIRY: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "railproxy_tls_certificate_expiry_timestamp_seconds",
        "Not-after time of the certificate in use, Unix seconds",
        &["cert"]
    )
    .expect("metric")
});

/// Edge: clients refused by a `limits` setting (head_timeout, connections, connections_per_ip,
/// headers, body).
pub static LIMIT_REFUSALS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("railproxy_limit_refusals_total", "Clients refused by a configured limit", &["limit"])
        .expect("metric")
});

/// Requests railproxy answered itself with a 4xx before any upstream saw them, by reason
/// (framing, target, host, method, expectation, limit).
pub static REFUSALS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("railproxy_refusals_total", "Requests refused before reaching an upstream", &["reason"])
        .expect("metric")
});

/// Edge: request header fields dropped, by reason (underscore: a name holding `_`).
pub static DROPPED_HEADERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "railproxy_request_headers_dropped_total",
        "Request header fields not forwarded",
        &["reason"]
    )
    .expect("metric")
});

/// Requests their client cancelled (an HTTP/2 stream reset, or the stream closed) before any
/// upstream saw them: nothing was sent on. Logged with status 499, as nginx does.
pub static CANCELLED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "railproxy_cancelled_total",
        "Requests their client cancelled before any upstream saw them",
        &["mode"]
    )
    .expect("metric")
});

/// Edge: requests whose tunnel connection an origin listener ended with GOAWAY, by HTTP/2
/// error code. The lane dials a new connection and is not retired (the listener answered).
pub static TUNNEL_GOAWAYS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "railproxy_tunnel_goaway_requests_total",
        "Requests whose tunnel connection an origin listener ended with GOAWAY, by error code",
        &["reason"]
    )
    .expect("metric")
});

/// Kept-alive HTTP/1 upstream connections not reused, by reason: unread_body (closed after a
/// request whose body the upstream may not have read), stray_bytes (bytes no request asked for
/// were waiting on it; the request went on a fresh one). See `http1_reuse`.
pub static UPSTREAM_DISCARDED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "railproxy_upstream_connections_discarded_total",
        "Kept-alive HTTP/1 upstream connections not reused, by reason",
        &["mode", "reason"]
    )
    .expect("metric")
});

/// Edge: lane probes by result: ok; late (no answer in time, but bytes moved on the lane, or on
/// its listener's other lanes while it carried nothing, meanwhile: queued behind them, counted
/// as neither); failed; busy (not sent: the lane's requests moved bytes since the last look).
pub static PROBES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "railproxy_tunnel_probes_total",
        "Lane probes by result (ok, late, failed; busy: not sent, the lane's requests were moving bytes)",
        &["result"]
    )
    .expect("metric")
});

/// Origin: connects to backends that failed or timed out; the request tries again (another
/// backend, or the same one) while it has connect attempts left.
pub static BACKEND_CONNECT_FAILURES: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        "railproxy_backend_connect_failures_total",
        "Connects to backends that failed or timed out (the request tries again while it may)"
    )
    .expect("metric")
});

/// Origin: requests sent again on a fresh backend connection after a kept-alive one turned out
/// dead before any byte of the response came.
pub static BACKEND_RETRIES: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        "railproxy_backend_retries_total",
        "Requests retried on a fresh backend connection after a dead kept-alive one"
    )
    .expect("metric")
});

/// Lookups of configured names (backends, listeners), by result: ok, empty (no address),
/// failed (no answer; the last good one is kept).
pub static DNS_LOOKUPS: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    prometheus::register_int_counter_vec!(
        "railproxy_dns_lookups_total",
        "Lookups of configured backend and listener names, by result",
        &["result"]
    )
    .expect("metric")
});

static BUILD_INFO: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!("railproxy_build_info", "Version and mode of this process", &["version", "mode"])
        .expect("metric")
});

/// Touches every metric so that all series exist from the start (scrapers see zeros, not gaps).
pub fn init(mode: &str) {
    BUILD_INFO.with_label_values(&[env!("CARGO_PKG_VERSION"), mode]).set(1);
    for class in ["2xx", "3xx", "4xx", "5xx"] {
        REQUESTS.with_label_values(&[mode, class]);
    }
    DURATION.with_label_values(&[mode]);
    IN_FLIGHT.with_label_values(&[mode]);
    for enc in [Encoding::Dcz, Encoding::Zstd, Encoding::Identity].map(Encoding::as_str) {
        RAW_BYTES.with_label_values(&[mode, enc]);
        WIRE_BYTES.with_label_values(&[mode, enc]);
    }
    for result in ["hit", "miss", "none"] {
        BASE.with_label_values(&[mode, result]);
    }
    for class in ["anonymous", "per_user", "refused"] {
        VERSIONS.with_label_values(&[mode, class]);
    }
    for class in ["anonymous", "per_user"] {
        DELTAS.with_label_values(&[mode, class]);
    }
    TUNNEL_CONNECTIONS.with_label_values(&[mode]);
    CANCELLED.with_label_values(&[mode]);
    for reason in ["unread_body", "stray_bytes"] {
        UPSTREAM_DISCARDED.with_label_values(&[mode, reason]);
    }
    UNCHANGED.with_label_values(&[mode]);
    if mode == "edge" {
        for scope in ["shared", "user"] {
            CLIENT_DICTIONARY_OFFERS.with_label_values(&[scope]);
        }
        for result in ["hit", "miss", "unknown", "corrupt"] {
            CLIENT_DELTAS.with_label_values(&[result]);
        }
        for kind in ["raw", "wire"] {
            CLIENT_DELTA_BYTES.with_label_values(&[kind]);
        }
    }
    for result in ["ok", "error"] {
        TLS_RELOADS.with_label_values(&[result]);
    }
    for reason in ["ca", "name", "tls12", "address"] {
        TUNNEL_AUTH_FAILURES.with_label_values(&[reason]);
    }
    UPSTREAM_ERRORS.with_label_values(&[mode, "connect"]);
    for reason in ["framing", "target", "host"] {
        REFUSALS.with_label_values(&[reason]);
    }
    if mode == "origin" {
        LazyLock::force(&BACKEND_RETRIES);
        LazyLock::force(&BACKEND_CONNECT_FAILURES);
    }
    if mode == "edge" {
        LazyLock::force(&BASE_RETRIES);
        LazyLock::force(&ABORTED);
        VERIFY_FAILURES.with_label_values(&["checksum"]);
        for result in ["HIT", "MISS", "DYNAMIC", "BYPASS"] {
            CACHE.with_label_values(&[result]);
        }
        LazyLock::force(&RETRIES);
        for result in ["ok", "late", "failed"] {
            PROBES.with_label_values(&[result]);
        }
        for reason in ["NO_ERROR", "ENHANCE_YOUR_CALM"] {
            TUNNEL_GOAWAYS.with_label_values(&[reason]);
        }
        for limit in ["head_timeout", "connections", "connections_per_ip", "headers", "body"] {
            LIMIT_REFUSALS.with_label_values(&[limit]);
        }
        for kind in ["direct", "error"] {
            FALLBACKS.with_label_values(&[kind]);
        }
        for reason in ["method", "expectation", "limit", "body_timeout", "buffer", "get_body"] {
            REFUSALS.with_label_values(&[reason]);
        }
        DROPPED_HEADERS.with_label_values(&["underscore"]);
    }
}

/// Status class label of a status code.
pub fn class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Records one finished request.
pub fn request_done(mode: &str, status: u16, seconds: f64) {
    REQUESTS.with_label_values(&[mode, class(status)]).inc();
    DURATION.with_label_values(&[mode]).observe(seconds);
}

/// Version-store figures, read from the store at scrape time.
pub struct StoreCollector {
    mode: &'static str,
    stats: Arc<dyn Fn() -> StoreStats + Send + Sync>,
    descs: Vec<Desc>,
}

impl StoreCollector {
    pub fn register(mode: &'static str, stats: Arc<dyn Fn() -> StoreStats + Send + Sync>) {
        let descs =
            Self::metrics(mode, StoreStats::default()).iter().flat_map(|m| m.desc().into_iter().cloned()).collect();
        let c = StoreCollector { mode, stats, descs };
        // Registering twice (tests) is harmless.
        let _ = prometheus::register(Box::new(c));
    }

    fn metrics(mode: &str, s: StoreStats) -> Vec<Box<dyn Collector>> {
        let gauge = |name: &str, help: &str, v: u64| -> Box<dyn Collector> {
            let g = IntGauge::with_opts(Opts::new(name, help).const_label("mode", mode)).expect("metric");
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
            Box::new(g)
        };
        let evictions = IntCounter::with_opts(
            Opts::new("railproxy_store_evictions_total", "Versions evicted to stay within the store size")
                .const_label("mode", mode),
        )
        .expect("metric");
        evictions.inc_by(s.evictions);
        let expirations = IntCounter::with_opts(
            Opts::new("railproxy_store_expired_total", "Versions dropped after delta.version_ttl")
                .const_label("mode", mode),
        )
        .expect("metric");
        expirations.inc_by(s.expirations);
        vec![
            gauge("railproxy_store_bytes", "Bytes held by the version store", s.bytes),
            gauge("railproxy_store_capacity_bytes", "Configured version store size", s.capacity),
            gauge("railproxy_store_entries", "Versions held by the version store", s.entries),
            Box::new(evictions),
            Box::new(expirations),
        ]
    }
}

impl Collector for StoreCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        Self::metrics(self.mode, (self.stats)()).iter().flat_map(|m| m.collect()).collect()
    }
}

/// Edge cache figures (bytes, items, evictions), read from the eviction manager at scrape time.
pub struct CacheCollector {
    stats: Arc<dyn Fn() -> (u64, u64, u64) + Send + Sync>,
    descs: Vec<Desc>,
}

impl CacheCollector {
    pub fn register(stats: Arc<dyn Fn() -> (u64, u64, u64) + Send + Sync>) {
        let descs = Self::metrics((0, 0, 0)).iter().flat_map(|m| m.desc().into_iter().cloned()).collect();
        let _ = prometheus::register(Box::new(CacheCollector { stats, descs }));
    }

    fn metrics((bytes, items, evicted): (u64, u64, u64)) -> Vec<Box<dyn Collector>> {
        let gauge = |name: &str, help: &str, v: u64| -> Box<dyn Collector> {
            let g = IntGauge::new(name, help).expect("metric");
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
            Box::new(g)
        };
        let evictions = IntCounter::new("railproxy_cache_evictions_total", "Cached responses evicted").expect("metric");
        evictions.inc_by(evicted);
        vec![
            gauge("railproxy_cache_bytes", "Bytes of cached responses", bytes),
            gauge("railproxy_cache_entries", "Cached responses", items),
            Box::new(evictions),
        ]
    }
}

impl Collector for CacheCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        Self::metrics((self.stats)()).iter().flat_map(|m| m.collect()).collect()
    }
}

/// Edge: responses offered to browsers as dictionaries (`Use-As-Dictionary`), by whose page
/// they are (`shared` or `user`).
pub static CLIENT_DICTIONARY_OFFERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "railproxy_client_dictionary_offers_total",
        "Responses offered to browsers as dictionaries, by whose page they are (shared, user)",
        &["scope"]
    )
    .expect("metric")
});

/// Edge: requests whose browser offered a dictionary (`Available-Dictionary` and `dcz`), by
/// outcome: `hit` (answered with dcz), `miss` (held, but this response or request may not be a
/// delta), `unknown` (no such hash held: expired, evicted, another user's, or made up),
/// `corrupt` (held, but its bytes no longer hash to it: dropped).
pub static CLIENT_DELTAS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "railproxy_client_deltas_total",
        "Requests whose browser offered a dictionary, by outcome (hit, miss, unknown, corrupt)",
        &["result"]
    )
    .expect("metric")
});

/// Edge: bytes of dcz answers to browsers, as the page (`raw`) and as sent (`wire`).
pub static CLIENT_DELTA_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "railproxy_client_delta_bytes_total",
        "Bytes of dcz answers to browsers: the pages (raw) and what was sent (wire)",
        &["kind"]
    )
    .expect("metric")
});

/// The text exposition of every registered metric.
pub fn render() -> Vec<u8> {
    use prometheus::Encoder as _;
    let mut out = Vec::with_capacity(16 * 1024);
    let _ = prometheus::TextEncoder::new().encode(&prometheus::gather(), &mut out);
    out
}

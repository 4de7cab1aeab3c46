//! Monitoring files checked by the real tools: promtool on the Prometheus config, alert rules and
//! rule unit tests; a real Prometheus server scraping a running edge and origin; the Grafana
//! dashboard's queries, which must name only metrics the binaries export and run in Prometheus.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use delta::testing;
use integration::process::{free_loopback, repo};
use integration::{Http, Knobs, Proc, Stack};
use serde_json::Value;

fn tool(name: &str) -> Command {
    assert!(
        Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success()),
        "{name} is missing: `make test` installs it (Debian package prometheus)"
    );
    Command::new(name)
}

#[test]
fn promtool_accepts_the_config_the_rules_and_the_rule_tests() {
    let dir = repo().join("deploy/prometheus");
    for args in [
        &["check", "config", "prometheus.yml"][..],
        &["check", "rules", "alerts.yml"],
        &["test", "rules", "alerts_test.yml"],
    ] {
        let o = tool("promtool").args(args).current_dir(&dir).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        println!("promtool {}:\n{text}", args.join(" "));
        assert!(o.status.success(), "promtool {args:?} failed:\n{text}");
        assert!(text.contains("SUCCESS"), "{text}");
    }
}

/// Labels that `railproxy fleet render` puts on targets (prometheus-targets.yml), not metrics.
const TARGET_LABELS: [&str; 2] = ["railproxy_host", "railproxy_mode"];

/// Every `railproxy_…` metric name in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("railproxy_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        if !TARGET_LABELS.contains(&&tail[..end]) {
            out.push(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    out
}

#[test]
fn metric_names_are_told_from_labels() {
    let q = "sum by (mode) (rate(railproxy_a_total{railproxy_host=~\"$host\", mode=\"edge\"}[5m])) / railproxy_b";
    assert_eq!(metric_names(q), ["railproxy_a_total", "railproxy_b"]);
    assert_eq!(metric_names("label_values(railproxy_build_info, railproxy_host)"), ["railproxy_build_info"]);
}

/// The dashboard's PromQL: every panel target's `expr` and every variable's query.
fn dashboard_queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_queries(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn api(prom: SocketAddr, path: &str) -> Value {
    let r = Http::h1().get(&format!("http://{prom}{path}"), &[]).await.expect("Prometheus answers");
    let v: Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(v["status"], "success", "{path}: {v}");
    v["data"].clone()
}

/// Polls until `done` returns Some, up to `limit`.
async fn until<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(t) = done().await {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_edge_and_origin_and_every_dashboard_query_runs() {
    let stack = Stack::start(Knobs::default()).await;
    let versions = &testing::generated_sets()[0].versions;
    let http = Http::h1();
    for (v, page) in versions.iter().enumerate().take(5) {
        let r = http.get(&stack.url("/pages/generated-10k"), &[("x-version", &v.to_string())]).await.unwrap();
        assert!(r.status == 200 && r.body == *page);
    }

    // The repository's config, scraping every second, with the targets a fleet render writes.
    let dir = tempfile::tempdir().unwrap();
    let src = repo().join("deploy/prometheus");
    let config = std::fs::read_to_string(src.join("prometheus.yml")).unwrap();
    assert!(config.contains("scrape_interval: 15s") && config.contains("evaluation_interval: 15s"));
    let config = config
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s");
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    std::fs::copy(src.join("alerts.yml"), dir.path().join("alerts.yml")).unwrap();
    std::fs::create_dir(dir.path().join("targets")).unwrap();
    std::fs::write(
        dir.path().join("targets/railproxy.yml"),
        format!(
            "- targets: [\"{}\"]\n  labels: {{railproxy_mode: edge, railproxy_host: edge-1}}\n\
             - targets: [\"{}\"]\n  labels: {{railproxy_mode: origin, railproxy_host: origin-1}}\n",
            stack.edge_admin, stack.origin_admin
        ),
    )
    .unwrap();
    let prom = free_loopback();
    let mut cmd = tool("prometheus");
    cmd.arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address={prom}"));
    let mut server = Proc::spawn("prometheus", cmd, dir.path(), false);
    until("Prometheus ready", Duration::from_secs(60), || {
        assert!(server.exited().is_none(), "prometheus exited:\n{}", server.log());
        async move { Http::h1().get(&format!("http://{prom}/-/ready"), &[]).await.ok().filter(|r| r.status == 200) }
    })
    .await;

    let targets = until("both targets up", Duration::from_secs(60), || async move {
        let data = api(prom, "/api/v1/targets").await;
        let active = data["activeTargets"].as_array().cloned().unwrap_or_default();
        (active.len() == 2 && active.iter().all(|t| t["health"] == "up")).then_some(active)
    })
    .await;
    for t in &targets {
        println!("target {} {} health {}", t["labels"]["railproxy_host"], t["scrapeUrl"], t["health"]);
    }

    let names: BTreeSet<String> = until("railproxy_ series stored", Duration::from_secs(30), || async move {
        let data =
            api(prom, &format!("/api/v1/label/__name__/values?match[]={}", encode("{__name__=~\"railproxy_.+\"}")))
                .await;
        let names: BTreeSet<String> =
            data.as_array().unwrap().iter().filter_map(|v| v.as_str()).map(str::to_string).collect();
        names.contains("railproxy_requests_total").then_some(names)
    })
    .await;
    println!("{} railproxy_ metric names in Prometheus: {names:?}", names.len());
    for n in [
        "railproxy_build_info",
        "railproxy_requests_total",
        "railproxy_request_duration_seconds_bucket",
        "railproxy_delta_raw_bytes_total",
        "railproxy_delta_wire_bytes_total",
        "railproxy_delta_base_total",
        "railproxy_delta_verify_failures_total",
        "railproxy_listener_up",
        "railproxy_store_bytes",
        "railproxy_store_capacity_bytes",
    ] {
        assert!(names.contains(n), "{n} not scraped; have {names:?}");
    }
    let q = |expr: &'static str| async move {
        api(prom, &format!("/api/v1/query?query={}", encode(expr))).await["result"].clone()
    };
    let requests = q("sum by (railproxy_host, mode) (railproxy_requests_total{class=\"2xx\"})").await;
    println!("sum by (railproxy_host, mode) (railproxy_requests_total{{class=\"2xx\"}}) = {requests}");
    for mode in ["edge", "origin"] {
        let n: f64 = requests
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["metric"]["mode"] == mode)
            .and_then(|r| r["value"][1].as_str())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {mode} requests in {requests}"));
        assert!(n >= 5.0, "{mode}: {n} 2xx requests, 5 sent");
    }
    let dcz = q("railproxy_delta_wire_bytes_total{mode=\"edge\",encoding=\"dcz\"}").await;
    println!("railproxy_delta_wire_bytes_total{{mode=\"edge\",encoding=\"dcz\"}} = {dcz}");
    let up = q("railproxy_listener_up").await;
    println!("railproxy_listener_up = {up}");
    assert_eq!(up[0]["value"][1], "1", "{up}");

    // Every alert rule evaluates without error against the live series.
    let alerts = std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yml")).unwrap();
    let declared = alerts.lines().filter(|l| l.trim_start().starts_with("- alert:")).count();
    assert!(declared >= 7, "{declared} alert rules in alerts.yml");
    let rules = until("alert rules evaluated", Duration::from_secs(30), || async move {
        let data = api(prom, "/api/v1/rules").await;
        let rules: Vec<Value> = data["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        (rules.len() == declared && rules.iter().all(|r| r["health"] == "ok")).then_some(rules)
    })
    .await;
    for r in &rules {
        println!("rule {} health {} state {}", r["name"], r["health"], r["state"]);
    }

    // The dashboard: valid JSON, every query names exported metrics only and runs in Prometheus.
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("deploy/grafana/railproxy.json")).unwrap())
            .expect("railproxy.json is valid JSON");
    let mut queries = Vec::new();
    dashboard_queries(&dashboard, &mut queries);
    assert!(queries.len() >= 15, "{} queries", queries.len());
    let mut exported = BTreeSet::new();
    // The dial-out metrics come from a stack whose origin dials out (ready once its lanes are).
    let dialling = Stack::start(Knobs { dial_out: true, ..Knobs::default() }).await;
    for admin in [stack.edge_admin, stack.origin_admin, dialling.edge_admin, dialling.origin_admin] {
        let r = Http::h1().get(&format!("http://{admin}/metrics"), &[]).await.unwrap();
        let text = String::from_utf8_lossy(&r.body).into_owned();
        exported.extend(
            text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).map(str::to_string),
        );
    }
    // rate() needs two samples in its window: wait for three scrapes of each target.
    until("three scrapes", Duration::from_secs(30), || async move {
        let r = q("min(count_over_time(railproxy_build_info[1m]))").await;
        r[0]["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()).filter(|n| *n >= 3.0)
    })
    .await;
    let mut with_data = 0;
    for query in &queries {
        for name in metric_names(query) {
            assert!(exported.contains(&name), "dashboard query uses {name}, which no binary exports: {query}");
        }
        if query.starts_with("label_values(") {
            continue; // a Grafana function, not PromQL; its metric is checked above
        }
        let promql = query.replace("$__rate_interval", "1m").replace("$host", ".*");
        let result = api(prom, &format!("/api/v1/query?query={}", encode(&promql))).await;
        if result["result"].as_array().is_some_and(|r| !r.is_empty()) {
            with_data += 1;
        }
    }
    println!("dashboard: {} queries, all valid PromQL on exported names; {with_data} with data now", queries.len());
    assert!(
        with_data * 2 >= queries.len(),
        "most panels should show data after traffic: {with_data}/{}",
        queries.len()
    );
    server.signal("TERM");
    server.wait_exit(Duration::from_secs(10));
}

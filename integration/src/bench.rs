//! Pieces of `railproxy-proxybench`: running wrk, reading a process's CPU time and memory,
//! and nginx configurations for the comparison rows.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{Proc, command};

/// What wrk measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    pub requests: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Socket errors and non-2xx/3xx responses.
    pub errors: u64,
}

fn duration_ms(text: &str) -> Option<f64> {
    let t = text.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = t.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

/// Parses `wrk --latency` output.
pub fn parse_wrk(out: &str) -> Load {
    let mut load = Load::default();
    for line in out.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("50%") => load.p50_ms = words.next().and_then(duration_ms).unwrap_or(f64::NAN),
            Some("99%") => load.p99_ms = words.next().and_then(duration_ms).unwrap_or(f64::NAN),
            Some("Requests/sec:") => load.rps = words.next().and_then(|v| v.parse().ok()).unwrap_or(0.0),
            Some("Non-2xx") => load.errors += line.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0),
            Some("Socket") => {
                // Socket errors: connect 0, read 0, write 0, timeout 0
                load.errors += line
                    .split(',')
                    .filter_map(|part| part.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok()))
                    .sum::<u64>();
            }
            Some(n) if line.contains(" requests in ") => load.requests = n.parse().unwrap_or(0),
            _ => {}
        }
    }
    load
}

/// Which URLs wrk asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Requests {
    /// The URL alone.
    One,
    /// Round robin over `URL?page=0` … `URL?page=N-1`: N pages instead of one.
    Pages(u32),
    /// `URL/0` … `URL/N-1` drawn at random with Zipf popularity of exponent `s` (URL/0 the
    /// most popular): a site's traffic.
    Zipf { urls: u32, s: f64 },
}

impl Requests {
    fn lua(self) -> Option<String> {
        match self {
            Requests::One => None,
            Requests::Pages(n) => Some(format!(
                "local i = 0\nrequest = function()\n  i = i + 1\n  return wrk.format(nil, wrk.path .. \"?page=\" .. (i % {n}))\nend\n"
            )),
            // The cumulative distribution once, then a binary search per request.
            Requests::Zipf { urls, s } => Some(format!(
                "local n, s = {urls}, {s}\nlocal cdf, sum = {{}}, 0\nfor i = 1, n do sum = sum + 1 / i ^ s; cdf[i] = sum end\n\
                 for i = 1, n do cdf[i] = cdf[i] / sum end\nmath.randomseed(2026)\n\
                 request = function()\n  local r, lo, hi = math.random(), 1, n\n\
                 while lo < hi do local mid = math.floor((lo + hi) / 2); if cdf[mid] < r then lo = mid + 1 else hi = mid end end\n\
                 return wrk.format(nil, wrk.path .. \"/\" .. (lo - 1))\nend\n"
            )),
        }
    }
}

/// Runs wrk for `secs` with `connections`, pinned to `cpus`, asking for `requests`.
pub fn wrk(url: &str, connections: u32, secs: u32, cpus: &str, requests: Requests) -> Load {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", cpus, "wrk", "-t1", &format!("-c{connections}"), &format!("-d{secs}s"), "--latency"]);
    let script = requests.lua().map(|lua| {
        let path = std::env::temp_dir().join(format!("railproxy-wrk-{}.lua", std::process::id()));
        std::fs::write(&path, lua).expect("wrk script");
        path
    });
    if let Some(s) = &script {
        cmd.arg("-s").arg(s);
    }
    let out = cmd.arg(url).output().expect("run wrk");
    if let Some(s) = script {
        let _ = std::fs::remove_file(s);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    parse_wrk(&text)
}

/// `set` without any version equal to the one before it (the last compared with the first too,
/// as pages served in turn wrap around): every request for its next version then finds a change.
/// Returns it with how many of the original consecutive pairs were identical, and of how many.
pub fn honest(set: delta::corpus::VersionSet) -> (delta::corpus::VersionSet, usize, usize) {
    let n = set.versions.len();
    let identical = (0..n).filter(|&i| n > 1 && set.versions[i] == set.versions[(i + 1) % n]).count();
    let mut versions: Vec<Vec<u8>> = Vec::with_capacity(n);
    for v in set.versions {
        if versions.last() != Some(&v) {
            versions.push(v);
        }
    }
    while versions.len() > 1 && versions.first() == versions.last() {
        versions.pop();
    }
    (delta::corpus::VersionSet { name: set.name, versions }, identical, n)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// (ppid, user+system CPU seconds) of a process.
fn stat(pid: u32, ticks: f64) -> Option<(u32, f64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name, which may contain spaces.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ppid = f.get(1)?.parse().ok()?;
    let cpu = (f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks;
    Some((ppid, cpu))
}

/// CPU seconds used by `pids` and their direct children (nginx workers).
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    let ticks = clock_ticks();
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if let Some((ppid, cpu)) = stat(pid, ticks)
            && (pids.contains(&pid) || pids.contains(&ppid))
        {
            total += cpu;
        }
    }
    total
}

/// Resident memory of a process, in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Which nginx role a configuration plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NginxRole {
    /// proxy_pass with upstream keep-alive.
    Proxy,
    /// proxy_pass asking the next hop for gzip, and gunzip for clients that do not accept it.
    GunzipEdge,
    /// proxy_pass, `gzip on` (nginx's default level 1) on responses to the previous hop.
    GzipOrigin,
    /// As `GzipOrigin`, at `gzip_comp_level 6` (what many sites set).
    GzipOrigin6,
    /// proxy_pass with proxy_cache.
    Cache,
}

/// An nginx configuration: one worker, access log only for byte counting, keep-alive upstream.
pub fn nginx_conf(dir: &Path, name: &str, role: NginxRole, listen: SocketAddr, upstream: SocketAddr) -> String {
    let d = dir.display();
    let (extra_http, extra_location) = match role {
        NginxRole::Proxy => (String::new(), String::new()),
        NginxRole::GunzipEdge => {
            (String::new(), "            proxy_set_header Accept-Encoding gzip;\n            gunzip on;\n".into())
        }
        NginxRole::GzipOrigin => {
            ("    gzip on;\n    gzip_proxied any;\n    gzip_types text/html application/json;\n".into(), String::new())
        }
        NginxRole::GzipOrigin6 => (
            "    gzip on;\n    gzip_comp_level 6;\n    gzip_proxied any;\n    gzip_types text/html application/json;\n"
                .into(),
            String::new(),
        ),
        NginxRole::Cache => (
            format!("    proxy_cache_path {d}/{name}-cache keys_zone={name}:10m max_size=256m;\n"),
            format!(
                "            proxy_cache {name};\n            proxy_cache_lock on;\n            add_header x-cache $upstream_cache_status;\n"
            ),
        ),
    };
    format!(
        "worker_processes 1;
pid {d}/{name}.pid;
error_log {d}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    log_format bytes '$body_bytes_sent';
    client_body_temp_path {d}/{name}-body;
    proxy_temp_path {d}/{name}-proxy;
    fastcgi_temp_path {d}/{name}-fastcgi;
    uwsgi_temp_path {d}/{name}-uwsgi;
    scgi_temp_path {d}/{name}-scgi;
    sendfile off;
    tcp_nopush off;
    tcp_nodelay on;
    keepalive_requests 1000000;
    # Uploads of a few MB (the long-link bench); nginx refuses more than 1 MB by default.
    client_max_body_size 64m;
    proxy_buffers 16 64k;
    proxy_buffer_size 64k;
{extra_http}    upstream next {{
        server {upstream};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen {listen};
        location = /__health {{ return 200 'ok'; }}
        location / {{
            access_log {d}/{name}-access.log bytes buffer=256k flush=1s;
            proxy_pass http://next;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $host;
{extra_location}        }}
    }}
}}
"
    )
}

/// Starts nginx with `conf` in the foreground, pinned to `cpus`, and waits until it answers.
pub fn start_nginx(dir: &Path, name: &str, conf: &str, listen: SocketAddr, cpus: &str) -> Proc {
    let file = dir.join(format!("{name}.conf"));
    std::fs::write(&file, conf).expect("write nginx conf");
    let mut cmd = command(Path::new("nginx"), Some(cpus));
    cmd.arg("-p").arg(dir).arg("-c").arg(&file).args(["-g", "daemon off;"]);
    start_listening(dir, name, cmd, listen)
}

/// What a Pingora reference hop does.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RefHop {
    /// Forwards over HTTP/1.1 (an origin hop, or one hop in front of a backend).
    Http1,
    /// Forwards over one pooled HTTP/2 connection (an edge hop).
    Http2,
    /// Forwards over HTTP/1.1 with Pingora's in-memory cache in front.
    Caching,
}

/// One hop of the bench's "Pingora alone" rows (`railproxy-pingora-reference`), doing `hop`, with
/// the certificates in `tls` (a `railproxy certs` folder) for TLS 1.3 instead of h2c. Returns once
/// it listens.
pub fn start_pingora_reference(
    dir: &Path,
    name: &str,
    listen: SocketAddr,
    upstream: SocketAddr,
    hop: RefHop,
    tls: Option<&Path>,
    cpus: Option<&str>,
) -> Proc {
    let mut cmd = command(&crate::process::bin("railproxy-pingora-reference"), cpus);
    cmd.arg("--listen").arg(listen.to_string()).arg("--upstream").arg(upstream.to_string());
    match hop {
        RefHop::Http1 => {}
        RefHop::Http2 => {
            cmd.arg("--h2-upstream");
        }
        RefHop::Caching => {
            cmd.arg("--cache");
        }
    }
    if let Some(certs) = tls {
        cmd.arg("--tls").arg(certs);
    }
    start_listening(dir, name, cmd, listen)
}

/// Spawns `cmd` and returns once it accepts connections on `listen`.
pub fn start_listening(dir: &Path, name: &str, cmd: Command, listen: SocketAddr) -> Proc {
    let mut proc = Proc::spawn(name, cmd, dir, false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        assert!(proc.exited().is_none(), "{name} exited:\n{}", proc.log());
        if std::net::TcpStream::connect(listen).is_ok() {
            return proc;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{name} did not start:\n{}", proc.log());
}

/// Sum of the numbers logged (one `$body_bytes_sent` per line) and how many lines.
pub fn logged_bytes(path: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (mut sum, mut n) = (0, 0);
    for v in text.lines().filter_map(|l| l.trim().parse::<u64>().ok()) {
        sum += v;
        n += 1;
    }
    (sum, n)
}

/// `GET path` over one plain TCP connection (`Connection: close`), the body read and dropped as
/// fast as it comes: body bytes, and seconds from the request to the last byte.
pub async fn download(addr: SocketAddr, path: &str) -> (u64, f64) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let start = std::time::Instant::now();
    let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    sock.write_all(req.as_bytes()).await.expect("request");
    let mut buf = vec![0u8; 1 << 20];
    let (mut head, mut body) = (Vec::new(), 0u64);
    loop {
        let n = sock.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        if body == 0 && !head.ends_with(b"\r\n\r\n") {
            head.extend_from_slice(&buf[..n]);
            if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                body = (head.len() - p - 4) as u64;
                head.truncate(p + 4);
            }
            continue;
        }
        body += n as u64;
    }
    (body, start.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let out = "Running 10s test @ http://127.0.0.1:1/\n  1 threads and 32 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   817.52us  301.11us   9.85ms   88.12%\n  Latency Distribution\n     50%  779.00us\n     75%    0.91ms\n     90%    1.10ms\n     99%    1.88ms\n  391031 requests in 10.00s, 4.19GB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 5\nRequests/sec:  39098.44\nTransfer/sec:    429.12MB\n";
        let l = parse_wrk(out);
        assert_eq!(l.requests, 391_031);
        assert!((l.rps - 39_098.44).abs() < 0.01);
        assert!((l.p50_ms - 0.779).abs() < 1e-9);
        assert!((l.p99_ms - 1.88).abs() < 1e-9);
        assert_eq!(l.errors, 8);
    }
}

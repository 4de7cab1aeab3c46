//! nginx in front of the same backend, as the reference the hostile-client figures stand beside:
//! one worker, HTTP/1.1 on one port and HTTP/2 (prior knowledge) on another, WebSockets proxied
//! (`Upgrade` passed on), request buffering as nginx ships it (on), upstream keep-alive, and,
//! where a comparison is about caching, `proxy_cache` keyed by URL with freshness from the
//! response (nginx keeps a cacheable request going after its client left, to fill the cache).

use std::net::SocketAddr;
use std::path::Path;

/// The configuration, with its ports and upstream.
pub fn conf(dir: &Path, name: &str, h1: SocketAddr, h2: SocketAddr, upstream: SocketAddr, cache: bool) -> String {
    let d = dir.display();
    let cache = if cache { format!("proxy_cache {name};") } else { String::new() };
    format!(
        "worker_processes 1;
worker_rlimit_nofile 65536;
pid {d}/{name}.pid;
error_log {d}/{name}-error.log error;
events {{ worker_connections 30000; }}
http {{
    access_log off;
    client_body_temp_path {d}/{name}-body;
    proxy_temp_path {d}/{name}-proxy;
    fastcgi_temp_path {d}/{name}-fastcgi;
    uwsgi_temp_path {d}/{name}-uwsgi;
    scgi_temp_path {d}/{name}-scgi;
    proxy_cache_path {d}/{name}-cache keys_zone={name}:10m max_size=256m;
    client_max_body_size 100m;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
    upstream next {{
        server {upstream};
        keepalive 64;
    }}
    server {{
        listen {h1};
        listen {h2} http2;
        location / {{
            proxy_pass http://next;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 300s;
            {cache}
        }}
    }}
}}
"
    )
}

/// Starts it (foreground, its own process group's leader is the test) and waits until both ports
/// answer.
pub fn start(dir: &Path, name: &str, h1: SocketAddr, h2: SocketAddr, upstream: SocketAddr, cache: bool) -> crate::Proc {
    let file = dir.join(format!("{name}.conf"));
    std::fs::write(&file, conf(dir, name, h1, h2, upstream, cache)).expect("write nginx conf");
    let mut cmd = std::process::Command::new("nginx");
    cmd.arg("-p").arg(dir).arg("-c").arg(&file).args(["-g", "daemon off;"]);
    let proc = crate::bench::start_listening(dir, name, cmd, h1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(h2).is_err() {
        assert!(std::time::Instant::now() < deadline, "{name} does not listen on {h2}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    proc
}

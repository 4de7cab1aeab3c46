//! The last mile across the emulated link: a real Chromium on this side, the edge (with its
//! origin and backend) beyond, and the time to each navigation's load event with deltas to the
//! browser (`client_dictionaries`) against br (the same edge, a host without them).
//!
//! Chromium treats only `localhost` and `127.0.0.1` as secure over plain HTTP, and uses
//! dictionaries only in secure contexts: it connects to a forwarder on this side's loopback,
//! which carries each connection across the link to the edge, byte for byte.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use integration::chromium::{self, Browser};
use integration::link::{Link, Profile};
use integration::process::{bin, free_loopback, free_port};
use integration::stack::{edge_yaml, origin_yaml, start_proxy_with};
use integration::{Backend, Knobs};
use tokio::net::{TcpListener, TcpStream};

/// The link: a mobile user's.
const RTT_MS: u64 = 100;
const MBIT: f64 = 5.0;
/// Navigations per host.
const NAVIGATIONS: usize = 20;

/// Carries every connection to `listen` (this side's loopback) to `to`, until dropped.
async fn forwarder(to: SocketAddr) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("forwarder binds");
    let at = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut edge) = TcpStream::connect(to).await {
                    let _ = client.set_nodelay(true);
                    let _ = edge.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut edge).await;
                }
            });
        }
    });
    (at, task)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub async fn section(dir: &Path, sets: &Path, page: &str, versions: usize) {
    if let Some(why) = chromium::unavailable() {
        println!("\n## Deltas to the browser across the link\n\nSkipped: {why}.");
        return;
    }
    eprintln!("browser across {RTT_MS} ms / {MBIT} Mbit/s …");
    let link = Link::start(Profile::new(Duration::from_millis(RTT_MS), MBIT, 0.0)).await.expect("link");
    link.congestion_control("cubic").expect("cubic on the link");
    let mut backend_cmd = link.command(&bin("railproxy-testbackend"));
    backend_cmd.arg("--corpus").arg(sets);
    let backend = Backend::start_with(dir, "browser-backend", backend_cmd);
    let knobs = Knobs {
        response_timeout: "60s".into(),
        edge_route_extra: vec![("127.0.0.1".into(), "    client_dictionaries: true\n".into())],
        ..Knobs::default()
    };
    let far = |port: u16| SocketAddr::from((link.far, port));
    let (origin, origin_admin, edge, edge_admin) =
        (far(free_port()), far(free_port()), far(free_port()), far(free_port()));
    let oy = origin_yaml(dir, &knobs, origin, origin_admin, &[backend.addr], free_loopback());
    let o = start_proxy_with(dir, "browser-origin", "origin", &oy, origin_admin, link.command(&knobs.railproxy()))
        .await
        .expect("origin starts");
    let ey = edge_yaml(dir, &knobs, edge, edge_admin, &[origin], backend.addr);
    let e = start_proxy_with(dir, "browser-edge", "edge", &ey, edge_admin, link.command(&knobs.railproxy()))
        .await
        .expect("edge starts");
    let (front, forwarding) = forwarder(edge).await;
    let mut browser = Browser::start().await.expect("chromium starts");
    // The page's own images, scripts and styles are not the backend's (each would be a 404
    // across the link): Chromium does not ask for them, so the load event follows the document.
    let blocked: Vec<String> =
        ["js", "css", "png", "jpg", "jpeg", "gif", "svg", "webp", "avif", "woff", "woff2", "ico", "json"]
            .iter()
            .flat_map(|x| [format!("*.{x}"), format!("*.{x}?*")])
            .collect();
    browser.call("Network.setBlockedURLs", serde_json::json!({ "urls": blocked }), true).await.expect("blocked URLs");
    let hosts = [("dcz (client_dictionaries)", "127.0.0.1"), ("br (a host without them)", "localhost")];
    // The document's last byte, and the load event, after navigation start.
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); hosts.len()];
    let mut loads: Vec<Vec<f64>> = vec![Vec::new(); hosts.len()];
    let mut wire: Vec<Vec<u64>> = vec![Vec::new(); hosts.len()];
    let mut encodings: Vec<Vec<String>> = vec![Vec::new(); hosts.len()];
    // The first navigation of each host fetches the page whole, and opens the connection.
    for round in 0..=NAVIGATIONS {
        for (i, (_, host)) in hosts.iter().enumerate() {
            let url = format!("http://{host}:{}/cycle/{page}?browser", front.port());
            let nav = browser.navigate(&url).await.expect("navigation");
            assert_eq!(nav.failed, None, "{url}: the page loads");
            let timing = browser
                .evaluate("(e => [e.responseEnd, e.loadEventStart])(performance.getEntriesByType('navigation')[0])")
                .await
                .expect("timing");
            let at = |k: usize| timing[k].as_f64().unwrap_or(f64::NAN);
            if round > 0 {
                times[i].push(at(0));
                loads[i].push(at(1));
                wire[i].push(nav.encoded_length);
                encodings[i].push(nav.response("content-encoding").unwrap_or("identity").to_string());
            }
        }
    }
    browser.close().await;
    forwarding.abort();
    drop(e);
    drop(o);
    drop(backend);
    println!("\n## Deltas to the browser across the link\n");
    println!(
        "Chromium ({}) on this side, headless, through a loopback forwarder (a secure context); edge, origin and \
         backend beyond a {RTT_MS} ms / {MBIT} Mbit/s link (no loss, cubic set on the link's routes). Page `{page}` \
         ({versions} versions), its next version on every navigation; one navigation to each host in turn, {NAVIGATIONS} \
         each after a first that fetches the page whole. Times after navigation start, from the navigation's \
         Performance entry: the document's last byte (`responseEnd`) and the load event (`loadEventStart`). The page's \
         images, scripts and styles (by extension) are blocked in Chromium (the backend does not have them): what is \
         left of the load event is the document, its parsing, and any subresource without such an extension (a 404 \
         across the link, alike for both rows). Bytes: the document's `encodedDataLength`, headers included.\n",
        std::process::Command::new(chromium::binary().expect("present"))
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default(),
    );
    println!("| answer | n | document p50 ms | p90 | max | load event p50 ms | p90 | bytes p50 | codings |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    let mut p50 = Vec::new();
    for (i, (name, _)) in hosts.iter().enumerate() {
        let mut t = times[i].clone();
        t.sort_by(f64::total_cmp);
        let mut l = loads[i].clone();
        l.sort_by(f64::total_cmp);
        let mut w = wire[i].clone();
        w.sort_unstable();
        let mut codings = encodings[i].clone();
        codings.sort();
        codings.dedup();
        println!(
            "| {name} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} |",
            t.len(),
            percentile(&t, 0.5),
            percentile(&t, 0.9),
            t.last().copied().unwrap_or(f64::NAN),
            percentile(&l, 0.5),
            percentile(&l, 0.9),
            w[w.len() / 2],
            codings.join(", ")
        );
        p50.push((percentile(&t, 0.5), percentile(&l, 0.5)));
    }
    println!(
        "\n- dcz ÷ br, p50: {:.2} to the document's last byte, {:.2} to the load event",
        p50[0].0 / p50[1].0,
        p50[0].1 / p50[1].1
    );
}

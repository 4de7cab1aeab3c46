//! The edge's HTTPS client listeners: HTTP/1.1 and HTTP/2 as ALPN settles, the backend's exact
//! bytes, dynamic pages still crossing the tunnel as deltas; a client that does not trust the
//! certificate gets nothing; SIGHUP puts a renewed certificate in use without a restart.

use std::path::Path;
use std::time::{Duration, Instant};

use delta::testing;
use integration::process::{free_loopback, railproxy, text};
use integration::tls_client::{Knock, certs, https_get, knock, not_after};
use integration::{Knobs, Stack};

/// The leaf certificate of a PEM file, as a server presents it.
fn der(pem: &Path) -> Vec<u8> {
    certs(pem).first().expect("a certificate").to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_clients_get_the_backends_bytes_over_http1_and_h2() {
    // The site's certificate, in a folder of its own so that it can be renewed: `railproxy
    // certs` writes a CA and origin.pem, valid for localhost and 127.0.0.1.
    let site = tempfile::tempdir().unwrap();
    let o = railproxy(site.path(), &["certs", "--out", "."]);
    assert!(o.status.success(), "{}", text(&o));
    let (cert, ca) = (site.path().join("origin.pem"), site.path().join("ca.pem"));
    let https = free_loopback();
    let edge_extra = format!(
        "https:\n  listen: [{https}]\n  cert: {}\n  key: {}\n",
        cert.display(),
        site.path().join("origin.key").display()
    );
    let stack = Stack::start(Knobs { edge_extra, ..Knobs::default() }).await;
    let set = &testing::generated_sets()[0];
    let path = format!("/pages/{}", set.name);
    let wire = || async { stack.edge_metrics().await.sum("railproxy_delta_wire_bytes_total", &[("encoding", "dcz")]) };
    assert_eq!(wire().await, 0.0);
    for (i, expected) in set.versions.iter().enumerate().take(6) {
        // Alternate: from the second version on, each protocol gets pages whose previous
        // version the edge holds, so they cross the tunnel as deltas.
        let h2 = i % 2 == 1;
        let v = i.to_string();
        let (alpn, r) = https_get(https, &ca, "localhost", h2, ("localhost", &path), &[("x-version", &v)])
            .await
            .unwrap_or_else(|e| panic!("version {i} over HTTPS (h2 offered: {h2}): {e}"));
        assert_eq!(alpn, if h2 { "h2" } else { "http/1.1" }, "ALPN");
        assert_eq!(r.status, 200, "version {i}");
        assert!(r.body == expected[..], "version {i} ({alpn}): {} bytes differ from the backend's", r.body.len());
    }
    assert!(wire().await > 0.0, "no delta crossed the tunnel for the HTTPS clients");

    // A client with another CA refuses the edge's certificate: no request is made.
    let o = railproxy(stack.dir.path(), &["certs", "ca", "--out", "other-ca"]);
    assert!(o.status.success(), "{}", text(&o));
    let other = stack.dir.path().join("other-ca/ca.pem");
    let refused = https_get(https, &other, "localhost", true, ("localhost", &path), &[]).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("handshake")),
        "a client that does not trust the certificate got {refused:?}"
    );

    // Renewal: new files in place, SIGHUP, and new handshakes get the new certificate.
    let k = Knock { ca: &ca, client: None, tls12: false, server_name: "localhost" };
    let first = knock(https, k, "localhost", &path).await;
    assert!(first.served() && first.server_cert == Some(der(&cert)), "the certificate before renewal: {first:?}");
    let expiry = || async {
        let m = stack.edge_metrics().await;
        m.sum("railproxy_tls_certificate_expiry_timestamp_seconds", &[("cert", "https")]) as i64
    };
    assert_eq!(expiry().await, not_after(&cert), "the HTTPS certificate's expiry");
    // Valid 100 days, unlike the first (730), so that the expiry tells them apart.
    let o = railproxy(
        site.path(),
        &["certs", "issue", "--ca", ".", "--role", "origin", "--name", "localhost", "--days", "100", "--out", "next"],
    );
    assert!(o.status.success(), "{}", text(&o));
    for (from, to) in [("next/localhost.pem", "origin.pem"), ("next/localhost.key", "origin.key")] {
        std::fs::copy(site.path().join(from), site.path().join(to)).unwrap();
    }
    let renewed = der(&cert);
    let reloads = || async { stack.edge_metrics().await.sum("railproxy_tls_reloads_total", &[("result", "ok")]) };
    let before = reloads().await;
    stack.edge.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while reloads().await == before {
        assert!(Instant::now() < deadline, "the edge did not reload on SIGHUP");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a = knock(https, k, "localhost", &path).await;
    assert!(a.served(), "no answer after the reload: {a:?}");
    assert!(a.server_cert == Some(renewed), "the edge still presents the old certificate after SIGHUP");
    assert_eq!(expiry().await, not_after(&cert), "the expiry of the renewed certificate");
}

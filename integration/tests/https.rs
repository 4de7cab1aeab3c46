//! The edge's HTTPS client listeners: HTTP/1.1 and HTTP/2 as ALPN settles, the backend's exact
//! bytes, dynamic pages still crossing the tunnel as deltas; a client that does not trust the
//! certificate gets nothing.

use railproxy_integration::process::{free_loopback, railproxy, text};
use railproxy_integration::tls_client::https_get;
use railproxy_integration::{Knobs, Stack};
use tunnel::sample;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_clients_get_the_backends_bytes_over_http1_and_h2() {
    let https = free_loopback();
    // The stack's listener certificate names localhost and 127.0.0.1; relative paths are
    // relative to the edge's configuration file, which is in the stack's folder.
    let edge_extra = format!("https:\n  listen: [{https}]\n  cert: certs/origin.pem\n  key: certs/origin.key\n");
    let stack = Stack::start(Knobs { edge_extra, ..Knobs::default() }).await;
    let ca = stack.dir.path().join("certs/ca.pem");
    let set = &sample::generated_sets()[0];
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
    let other = stack.dir.path().join("other-ca");
    let o = railproxy(stack.dir.path(), &["certs", "ca", "--out", "other-ca"]);
    assert!(o.status.success(), "{}", text(&o));
    let refused = https_get(https, &other.join("ca.pem"), "localhost", true, ("localhost", &path), &[]).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("handshake")),
        "a client that does not trust the certificate got {refused:?}"
    );
}

//! The bench's "Pingora alone" rows measure a path that works: through both reference hops, over
//! h2c and over TLS 1.3, a client gets the backend's bytes.

use integration::Http;
use integration::bench::start_pingora_reference;
use integration::process::{Backend, free_loopback};
use integration::stack::make_certs;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_reference_hops_pass_the_backend_bytes_over_h2c_and_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let backend = Backend::start(dir.path(), "backend", None);
    let direct = Http::h1().get(&format!("http://{}/pages/generated-100k", backend.addr), &[]).await.unwrap();
    assert_eq!(direct.status, 200);
    for tls in [None, Some(certs.as_path())] {
        let what = if tls.is_some() { "TLS 1.3" } else { "h2c" };
        let (edge_listen, origin_listen) = (free_loopback(), free_loopback());
        let origin = start_pingora_reference(dir.path(), "ref-origin", origin_listen, backend.addr, false, tls, None);
        let edge = start_pingora_reference(dir.path(), "ref-edge", edge_listen, origin_listen, true, tls, None);
        let url = format!("http://{edge_listen}/pages/generated-100k");
        // Concurrent requests share the one HTTP/2 connection between the hops.
        let fetches = (0..8).map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Http::h1().get(&url, &[]).await })
        });
        for f in fetches {
            let r = f.await.unwrap().unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(r.status, 200, "{what}");
            assert!(r.body == direct.body, "{what}: the body differs from the backend's");
        }
        drop(edge);
        drop(origin);
    }
}

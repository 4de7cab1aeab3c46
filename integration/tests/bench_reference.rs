//! The bench's "Pingora alone" rows measure a path that works: through both reference hops, over
//! h2c and over TLS 1.3, a client gets the backend's bytes; the caching hop answers from its cache.

use integration::Http;
use integration::bench::{RefHop, start_pingora_reference};
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
        let origin =
            start_pingora_reference(dir.path(), "ref-origin", origin_listen, backend.addr, RefHop::Http1, tls, None);
        let edge =
            start_pingora_reference(dir.path(), "ref-edge", edge_listen, origin_listen, RefHop::Http2, tls, None);
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

/// The reference for edge cache hits serves the backend's bytes, and from its cache: the backend
/// sees the first request only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caching_reference_hop_answers_hits_from_its_cache() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::start(dir.path(), "backend", None);
    let direct = Http::h1().get(&format!("http://{}/cache/60/ref", backend.addr), &[]).await.unwrap();
    let listen = free_loopback();
    let cache = start_pingora_reference(dir.path(), "ref-cache", listen, backend.addr, RefHop::Caching, None, None);
    for _ in 0..3 {
        let r = Http::h1().get(&format!("http://{listen}/cache/60/ref"), &[]).await.unwrap();
        assert_eq!(r.status, 200);
        assert!(r.body == direct.body, "the body differs from the backend's");
    }
    assert_eq!(backend.hits("60/ref").await, 2, "the direct request and the first miss");
    drop(cache);
}

//! The edge against a scripted origin: base mismatches are retried without a base before any
//! byte goes out; bodies that fail verification are never served; both are counted.

use std::net::SocketAddr;

use delta::codec;
use delta::testing::PageGenerator;
use delta::{Version, VersionId};
use integration::fake_origin::{FakeOrigin, Script, tunnel_response};
use integration::stack::{edge_yaml, make_certs, start_proxy};
use integration::{Http, Knobs, Metrics, Proc, assert_right_or_refused};

struct Edge {
    _proc: Proc,
    addr: SocketAddr,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

async fn edge_before(origin: impl FnOnce(&std::path::Path) -> Script) -> (Edge, FakeOrigin) {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let fake = FakeOrigin::start(&certs, origin(&certs)).await;
    let port = integration::process::free_port;
    let (addr, admin): (SocketAddr, SocketAddr) = (([127, 0, 0, 1], port()).into(), ([127, 0, 0, 1], port()).into());
    let yaml = edge_yaml(dir.path(), &Knobs::default(), addr, admin, &[fake.addr], fake.addr);
    let proc = start_proxy(dir.path(), "edge", "edge", &yaml, admin).await.expect("edge starts");
    (Edge { _proc: proc, addr, admin, _dir: dir }, fake)
}

fn pages() -> Vec<Vec<u8>> {
    PageGenerator::versions(31, 60_000, 3)
}

fn full(body: &[u8]) -> Vec<u8> {
    codec::compress(body, 3).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_mismatch_is_retried_without_a_base() {
    let v = pages();
    let v2 = v.clone();
    let (edge, fake) = edge_before(move |_| {
        Box::new(move |seen, n| match n {
            // First fetch: full body, so the edge stores version 0.
            0 => tunnel_response(Some("zstd"), &[("railproxy-raw-length", v2[0].len().to_string())], full(&v2[0])),
            // Second: a dcz that names some other base in its header.
            1 => {
                assert!(seen.headers.contains_key("available-dictionary"), "edge named its base");
                let other = Version::new(v2[2].clone());
                let delta = codec::encode_with(&other, &v2[1], &codec::DeltaParams::default()).unwrap();
                tunnel_response(Some("dcz"), &[("railproxy-delta-base", other.id.to_sf())], delta)
            }
            // The retry must come without a base; answer in full.
            _ => {
                assert!(!seen.headers.contains_key("available-dictionary"), "retry still named a base");
                tunnel_response(Some("zstd"), &[], full(&v2[1]))
            }
        })
    })
    .await;
    let http = Http::h1();
    let url = format!("http://{}/page", edge.addr);
    assert!(http.get(&url, &[]).await.unwrap().body == v[0][..]);
    let r = http.get(&url, &[]).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body == v[1][..], "the retried response is the right page");
    assert_eq!(fake.requests().len(), 3);
    let m = Metrics::settled(edge.admin).await;
    assert_eq!(m.sum("railproxy_delta_base_retries_total", &[]), 1.0);
    assert_eq!(m.sum("railproxy_delta_verify_failures_total", &[("reason", "base_mismatch")]), 1.0);
}

/// Serves version 0 in full, then `bad` for version 1; the client must never see wrong bytes.
async fn refused(
    reason: &str,
    bad: impl Fn(&Version, &[u8]) -> (Vec<(&'static str, String)>, Vec<u8>) + Send + Sync + 'static,
) {
    let v = pages();
    let v2 = v.clone();
    let (edge, _fake) = edge_before(move |_| {
        Box::new(move |_, n| match n {
            0 => tunnel_response(Some("zstd"), &[], full(&v2[0])),
            1 => {
                let (headers, body) = bad(&Version::new(v2[0].clone()), &v2[1]);
                let enc = if headers.iter().any(|(k, _)| *k == "railproxy-delta-base") { "dcz" } else { "zstd" };
                tunnel_response(Some(enc), &headers, body)
            }
            _ => tunnel_response(Some("zstd"), &[], full(&v2[1])),
        })
    })
    .await;
    let http = Http::h1();
    let url = format!("http://{}/page", edge.addr);
    assert!(http.get(&url, &[]).await.unwrap().body == v[0][..]);
    assert_right_or_refused(http.get(&url, &[]).await, &v[1], reason);
    let m = Metrics::settled(edge.admin).await;
    assert_eq!(m.sum("railproxy_delta_verify_failures_total", &[("reason", reason)]), 1.0, "{reason}");
    // The next request goes in full and is right.
    assert!(http.get(&url, &[]).await.unwrap().body == v[1][..], "{reason}: recovery");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origins_version_id_is_used_and_a_wrong_one_never_yields_wrong_bytes() {
    let v = pages();
    let v2 = v.clone();
    let wrong = VersionId::of(b"not the body that was sent");
    let (edge, fake) = edge_before(move |_| {
        Box::new(move |seen, n| match n {
            // Version 0 in full, named with a wrong id in the version frame.
            0 => {
                let mut body = full(&v2[0]);
                body.extend_from_slice(&codec::version_frame(&wrong));
                tunnel_response(Some("zstd"), &[], body)
            }
            // The edge names the id it was given (it did not hash the body itself); answer with a
            // delta against what that id really is here, which is not the edge's body.
            1 => {
                assert_eq!(seen.headers.get("available-dictionary").unwrap(), wrong.to_sf().as_str());
                let other = Version { id: wrong, body: v2[2].clone().into() };
                let delta = codec::encode_with(&other, &v2[1], &codec::DeltaParams::default()).unwrap();
                tunnel_response(Some("dcz"), &[("railproxy-delta-base", wrong.to_sf())], delta)
            }
            _ => tunnel_response(Some("zstd"), &[], full(&v2[1])),
        })
    })
    .await;
    let http = Http::h1();
    let url = format!("http://{}/page", edge.addr);
    assert!(http.get(&url, &[]).await.unwrap().body == v[0][..]);
    assert_right_or_refused(http.get(&url, &[]).await, &v[1], "wrong version id");
    // zstd refuses it as corrupt or by its checksum, depending on where the garbage shows.
    let m = Metrics::settled(edge.admin).await;
    assert_eq!(m.sum("railproxy_delta_verify_failures_total", &[]), 1.0);
    assert!(http.get(&url, &[]).await.unwrap().body == v[1][..]);
    assert!(!fake.requests()[2].headers.contains_key("available-dictionary"), "the bad entry was dropped");
}

fn dcz_headers(base: &Version) -> Vec<(&'static str, String)> {
    vec![("railproxy-delta-base", base.id.to_sf())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_steer_the_tunnel() {
    let v = pages();
    let v2 = v.clone();
    let (edge, fake) =
        edge_before(move |_| Box::new(move |_, _| tunnel_response(Some("zstd"), &[], full(&v2[0])))).await;
    let forged = Version::new(b"whatever the client claims".to_vec()).id.to_sf();
    let r = Http::h1()
        .get(
            &format!("http://{}/page", edge.addr),
            &[
                ("available-dictionary", &forged),
                ("railproxy-delta-base", &forged),
                ("accept-encoding", "identity"),
                ("dictionary-id", "\"x\""),
            ],
        )
        .await
        .unwrap();
    assert!(r.body == v[0][..]);
    let seen = &fake.requests()[0];
    for h in ["available-dictionary", "railproxy-delta-base", "dictionary-id"] {
        assert!(!seen.headers.contains_key(h), "{h} reached the origin");
    }
    assert_eq!(seen.headers.get("accept-encoding").unwrap(), "dcz, zstd");
    assert!(seen.headers.get("x-forwarded-for").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_delta_is_never_served() {
    refused("checksum", |base, new| {
        let mut d = codec::encode_with(base, new, &codec::DeltaParams::default()).unwrap();
        let n = d.len();
        d[n - 1] ^= 0x10;
        (dcz_headers(base), d)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_delta_is_never_served() {
    refused("truncated", |base, new| {
        let d = codec::encode_with(base, new, &codec::DeltaParams::default()).unwrap();
        (dcz_headers(base), d[..d.len() - 10].to_vec())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_header_naming_another_base_is_never_served() {
    refused("base_mismatch", |base, new| {
        let mut d = codec::encode_with(base, new, &codec::DeltaParams::default()).unwrap();
        d[8..40].copy_from_slice(VersionId::of(b"something else").as_bytes());
        (dcz_headers(base), d)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_announced_length_is_never_served() {
    refused("length", |_, new| (vec![("railproxy-raw-length", (new.len() + 1).to_string())], full(new))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decompression_bomb_is_refused() {
    // 512 MiB of zeros in a few KB, beyond the edge's 256 MiB max_decoded.
    refused("too_large", |_, _| {
        let mut enc = codec::Encoder::zstd(1, None).unwrap();
        let zeros = vec![0u8; 1 << 20];
        let mut out = Vec::new();
        for _ in 0..512 {
            enc.write(&zeros, &mut out).unwrap();
        }
        enc.finish(&mut out).unwrap();
        (vec![], out)
    })
    .await;
}

/// `new` as an origin sends it when its backend paused after `cut` bytes: a dcz against `base`,
/// flushed there, in segment records with a check of the head.
fn segmented(base: &Version, new: &[u8], cut: usize) -> Vec<u8> {
    use delta::codec::segments::{RunningHash, write_check, write_data};
    let mut enc = codec::Encoder::dcz(base, &codec::DeltaParams::default(), None).unwrap();
    let (mut wire, mut head, mut run) = (Vec::new(), RunningHash::default(), Vec::new());
    enc.write(&new[..cut], &mut run).unwrap();
    enc.flush(&mut run).unwrap();
    head.update(&new[..cut]);
    write_data(&run, &mut wire);
    write_check(&head, &mut wire);
    run.clear();
    enc.write(&new[cut..], &mut run).unwrap();
    enc.finish(&mut run).unwrap();
    write_data(&run, &mut wire);
    wire
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segmented_body_goes_out_only_as_far_as_it_verifies() {
    const CUT: usize = 8192;
    // What is corrupted, the failure it is counted as, and how much of the body may go out.
    for (what, reason, verified) in
        [("nothing", None, 60_000), ("the check", Some("segment"), 0), ("the rest", Some("checksum"), CUT)]
    {
        let v = pages();
        let v2 = v.clone();
        let (edge, _fake) = edge_before(move |_| {
            Box::new(move |seen, n| match n {
                0 => tunnel_response(Some("zstd"), &[], full(&v2[0])),
                _ => {
                    assert_eq!(seen.headers.get("railproxy-segments").unwrap(), "1", "the edge reads segments");
                    let base = Version::new(v2[0].clone());
                    let mut wire = segmented(&base, &v2[1], CUT);
                    match what {
                        // The hash in the check, which follows the first data record.
                        "the check" => {
                            let first = u32::from_be_bytes(wire[1..5].try_into().unwrap()) as usize;
                            wire[5 + first + 1 + 8] ^= 1;
                        }
                        // zstd's content checksum, at the end of the frame.
                        "the rest" => {
                            let n = wire.len();
                            wire[n - 2] ^= 0x40;
                        }
                        _ => {}
                    }
                    let mut headers = dcz_headers(&base);
                    headers.push(("railproxy-segments", "1".into()));
                    // Each part apart: the first segment, its check, the rest, zstd's checksum;
                    // so nothing unverified can hide behind a failure in the same piece.
                    let first = u32::from_be_bytes(wire[1..5].try_into().unwrap()) as usize;
                    let cuts = [5 + first, 5 + first + 25, wire.len() - 4].map(|c| c.to_string()).join(",");
                    headers.push((integration::fake_origin::PAUSE_AT, cuts));
                    headers.push(("railproxy-raw-length", v2[1].len().to_string()));
                    tunnel_response(Some("dcz"), &headers, wire)
                }
            })
        })
        .await;
        let http = Http::h1();
        assert!(http.get(&format!("http://{}/page", edge.addr), &[]).await.unwrap().body == v[0][..]);
        let answer =
            integration::raw::send(edge.addr, "GET /page HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .await;
        let split = answer.bytes.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
        let body = &answer.bytes[split..];
        let status = answer.status.expect("a status");
        if status == 200 {
            assert!(body == &v[1][..body.len().min(v[1].len())], "{what}: bytes that are not the page went out");
        }
        match reason {
            None => assert_eq!((status, body.len()), (200, v[1].len()), "{what}"),
            Some(reason) => {
                // What verified went out as it came, and the response was cut short after it.
                if verified == 0 {
                    // The head may have gone out while the first segment was awaited; no body did.
                    assert!(status >= 500 || body.is_empty(), "{what}: {status} with {} bytes", body.len());
                    // The error page says why, and nothing of the tunnel's peer.
                    let page = String::from_utf8_lossy(body);
                    assert!(status == 200 || page.contains("segment"), "{what}: {page}");
                    assert!(!page.contains("Peer:") && !page.contains("client cert"), "{what}: {page}");
                } else {
                    assert_eq!((status, body.len()), (200, verified), "{what}: the head verified at the cut");
                }
                let m = Metrics::settled(edge.admin).await;
                assert_eq!(m.sum("railproxy_delta_verify_failures_total", &[("reason", reason)]), 1.0, "{what}");
            }
        }
    }
}

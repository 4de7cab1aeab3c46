//! Request bodies of every shape, from HTTP/1.1 and HTTP/2 clients, reach the backend as exactly
//! one request each, with exactly their bytes: a backend that records what it reads checks that
//! no request shares bytes with another (a stray last chunk would be read as a request of its
//! own, and its answer as the next request's).

use std::time::Duration;

use bytes::Bytes;
use integration::raw::send;
use integration::recorder::{Framing, Recorded, Recorder};
use integration::{Knobs, Stack};

/// The body of an HTTP/1.1 response (Content-Length or chunked), and its status.
fn response(bytes: &[u8]) -> (u16, Vec<u8>) {
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&bytes[..split]).to_ascii_lowercase();
    let status = head[9..12].parse().expect("a status");
    let mut rest = &bytes[split + 4..];
    if !head.contains("transfer-encoding: chunked") {
        return (status, rest.to_vec());
    }
    let mut body = Vec::new();
    loop {
        let end = rest.windows(2).position(|w| w == b"\r\n").expect("a chunk size");
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return (status, body);
        }
        body.extend_from_slice(&rest[end + 2..end + 2 + size]);
        rest = &rest[end + 4 + size..];
    }
}

/// What one case must produce at the backend.
struct Expect {
    method: &'static str,
    body: &'static [u8],
    trailers: bool,
}

fn check(case: &str, seen: &[Recorded], want: &Expect) {
    assert_eq!(seen.len(), 1, "{case}: the backend read {} requests: {seen:#?}", seen.len());
    let r = &seen[0];
    assert!(r.error.is_none(), "{case}: the backend read bytes that are not a request: {r:#?}");
    assert_eq!(r.method, want.method, "{case}");
    assert_eq!(r.body, want.body, "{case}: body at the backend");
    if want.method == "POST" {
        // Buffered at the edge, it is sent on framed by its length, whatever the client used.
        assert_eq!(r.framing, Framing::Length(want.body.len()), "{case}");
    }
    if want.body.is_empty() && matches!(r.framing, Framing::Chunked) {
        // An empty chunked body is one chunk, the last: nothing before it.
        assert!(r.raw.ends_with(b"\r\n\r\n0\r\n\r\n"), "{case}: {:?}", String::from_utf8_lossy(&r.raw));
    }
    if want.trailers {
        assert!(r.trailers.is_empty() || r.trailers.iter().any(|(n, _)| n.eq_ignore_ascii_case("x-checksum")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_body_shape_is_one_request_with_exactly_its_bytes() {
    let recorder = Recorder::start().await;
    let stack = Stack::start(Knobs { backend_override: Some(recorder.addr), ..Knobs::default() }).await;
    let h = "Host: 127.0.0.1\r\nConnection: close\r\n";
    let h1: Vec<(&str, String, Expect)> = vec![
        (
            "HTTP/1.1 Content-Length",
            format!("POST /a HTTP/1.1\r\n{h}Content-Length: 11\r\n\r\nhello world"),
            Expect { method: "POST", body: b"hello world", trailers: false },
        ),
        (
            "HTTP/1.1 chunked",
            format!("POST /b HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            Expect { method: "POST", body: b"hello world", trailers: false },
        ),
        (
            "HTTP/1.1 chunked with extensions",
            format!(
                "POST /c HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n6;c\r\n world\r\n0;d=e\r\n\r\n"
            ),
            Expect { method: "POST", body: b"hello world", trailers: false },
        ),
        (
            "HTTP/1.1 chunked with trailers",
            format!(
                "POST /d HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: 42\r\n\r\n"
            ),
            Expect { method: "POST", body: b"hello world", trailers: true },
        ),
        (
            "HTTP/1.1 chunked, empty",
            format!("POST /e HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            Expect { method: "POST", body: b"", trailers: false },
        ),
        (
            "HTTP/1.1 Content-Length: 0",
            format!("POST /f HTTP/1.1\r\n{h}Content-Length: 0\r\n\r\n"),
            Expect { method: "POST", body: b"", trailers: false },
        ),
        ("HTTP/1.1 GET", format!("GET /g HTTP/1.1\r\n{h}\r\n"), Expect { method: "GET", body: b"", trailers: false }),
    ];
    for (case, request, want) in &h1 {
        recorder.clear();
        let answer = send(stack.edge_addr, request).await;
        let (status, body) = response(&answer.bytes);
        assert_eq!(status, 200, "{case}: {:?}", String::from_utf8_lossy(&answer.bytes));
        assert_eq!(body, want.body, "{case}: the client's answer");
        check(case, &recorder.requests(), want);
    }

    // HTTP/2 (prior knowledge), each frame sequence exactly as named.
    let tcp = tokio::net::TcpStream::connect(stack.edge_addr).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(conn);
    // (case, method, content-length, DATA frames with their END_STREAM flag, trailers, expected)
    type Data = (&'static [u8], bool);
    type H2Case = (&'static str, &'static str, Option<usize>, Vec<Data>, bool, Expect);
    let h2_cases: Vec<H2Case> = vec![
        (
            "h2 with content-length, END_STREAM on DATA",
            "POST",
            Some(11),
            vec![(b"hello", false), (b" world", true)],
            false,
            Expect { method: "POST", body: b"hello world", trailers: false },
        ),
        (
            "h2 without content-length, END_STREAM on DATA",
            "POST",
            None,
            vec![(b"hello", false), (b" world", true)],
            false,
            Expect { method: "POST", body: b"hello world", trailers: false },
        ),
        (
            "h2 without content-length, END_STREAM on an empty DATA",
            "POST",
            None,
            vec![(b"hello", false), (b" world", false), (b"", true)],
            false,
            Expect { method: "POST", body: b"hello world", trailers: false },
        ),
        (
            "h2 with content-length, END_STREAM on an empty DATA",
            "POST",
            Some(11),
            vec![(b"hello world", false), (b"", true)],
            false,
            Expect { method: "POST", body: b"hello world", trailers: false },
        ),
        (
            "h2 POST, only an empty DATA with END_STREAM",
            "POST",
            None,
            vec![(b"", true)],
            false,
            Expect { method: "POST", body: b"", trailers: false },
        ),
        (
            "h2 GET, END_STREAM on HEADERS",
            "GET",
            None,
            vec![],
            false,
            Expect { method: "GET", body: b"", trailers: false },
        ),
        (
            "h2, END_STREAM on trailers",
            "POST",
            None,
            vec![(b"hello world", false)],
            true,
            Expect { method: "POST", body: b"hello world", trailers: true },
        ),
    ];
    for (case, method, length, data, trailers, want) in &h2_cases {
        recorder.clear();
        let mut req = http::Request::builder().method(*method).uri(format!("http://127.0.0.1{}", "/h2"));
        if let Some(n) = length {
            req = req.header("content-length", n.to_string());
        }
        let end_on_headers = data.is_empty() && !trailers;
        let (answer, mut stream) = client.send_request(req.body(()).unwrap(), end_on_headers).expect(case);
        for (bytes, end) in data {
            stream.send_data(Bytes::from_static(bytes), *end).expect(case);
        }
        if *trailers {
            let mut t = http::HeaderMap::new();
            t.insert("x-checksum", "42".parse().unwrap());
            stream.send_trailers(t).expect(case);
        }
        let answer = tokio::time::timeout(Duration::from_secs(5), answer).await.expect(case).expect(case);
        assert_eq!(answer.status(), 200, "{case}");
        let mut body = answer.into_body();
        let mut got = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect(case);
            let _ = body.flow_control().release_capacity(chunk.len());
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, want.body, "{case}: the client's answer");
        check(case, &recorder.requests(), want);
    }
    // A last, plain request on the kept-alive backend connections: a stray byte left on one
    // by any case above would show up here.
    recorder.clear();
    for i in 0..4 {
        let answer = send(stack.edge_addr, &format!("GET /after/{i} HTTP/1.1\r\n{h}\r\n")).await;
        assert_eq!(answer.status, Some(200));
    }
    let after = recorder.requests();
    assert!(after.iter().all(|r| r.error.is_none()) && after.len() == 4, "{after:#?}");
}

//! Request targets a reverse proxy must refuse (400) rather than forward: forms that only a
//! forward proxy or a server-wide request uses, schemes that are not HTTP's, bytes no URI holds.
//! nginx refuses each of these; every one names a path on the backend's `/cache/60/` so that a
//! backend that got it would count it.

/// One case: what it is, and the raw request (HTTP/1.1, `Connection: close`).
pub fn refused(host: &str) -> Vec<(&'static str, Vec<u8>)> {
    let req = |target: &[u8]| {
        let mut r = b"GET ".to_vec();
        r.extend_from_slice(target);
        r.extend_from_slice(format!(" HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes());
        r
    };
    vec![
        ("asterisk-form on GET", req(b"*")),
        (
            "asterisk-form on OPTIONS",
            format!("OPTIONS * HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes(),
        ),
        ("authority-form on GET", req(host.as_bytes())),
        ("authority-form naming another host", req(b"other.example:80")),
        ("an ftp:// target", req(format!("ftp://{host}/cache/60/target").as_bytes())),
        ("a raw NUL in the target", req(b"/cache/60/tar\0get")),
        ("a raw control character in the target", req(b"/cache/60/tar\x01get")),
        ("a raw DEL in the target", req(b"/cache/60/tar\x7fget")),
        ("an encoded NUL in the path", req(b"/cache/60/tar%00get")),
        ("a path above the root", req(b"/../cache/60/target")),
        ("a path above the root, dots encoded", req(b"/cache/%2e%2e/%2E%2E/../cache/60/target")),
        ("a target that is not a path", req(b"cache/60/target")),
    ]
}

/// Targets that look odd but are fine, and must still be served (200).
pub fn served(host: &str) -> Vec<(&'static str, Vec<u8>)> {
    let req = |target: &str| format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes();
    vec![
        ("absolute-form, http", req(&format!("http://{host}/cache/60/fine"))),
        ("absolute-form, scheme in capitals", req(&format!("HTTP://{host}/cache/60/fine"))),
        ("dot segments in the query", req("/cache/60/fine?next=../../x")),
        ("UTF-8 in the path", req("/cache/60/fin\u{e9}")),
    ]
}

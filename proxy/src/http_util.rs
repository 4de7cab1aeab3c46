//! Small request/response helpers both modes use.

use http::HeaderValue;
use pingora_http::{RequestHeader, ResponseHeader};

/// The request's host, lower case, port removed: `:authority` for HTTP/2, else `Host`.
pub fn request_host(req: &RequestHeader) -> Option<String> {
    let raw = match req.uri.authority() {
        Some(a) => a.as_str().to_string(),
        None => req.headers.get(http::header::HOST)?.to_str().ok()?.to_string(),
    };
    let host = strip_port(raw.trim());
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

fn strip_port(authority: &str) -> &str {
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(rest) = authority.strip_prefix('[') {
        // [v6]:port
        return rest.split_once(']').map_or(authority, |(h, _)| h);
    }
    match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// Removes every header only edge and origin may set.
pub fn strip_tunnel_headers_req(req: &mut RequestHeader) {
    let names: Vec<String> = req
        .headers
        .keys()
        .map(|n| n.as_str())
        .filter(|n| tunnel::protocol::is_tunnel_header(n))
        .map(str::to_string)
        .collect();
    for n in names {
        req.remove_header(&n);
    }
}

/// Removes every header only edge and origin may set.
pub fn strip_tunnel_headers_resp(resp: &mut ResponseHeader) {
    let names: Vec<String> = resp
        .headers
        .keys()
        .map(|n| n.as_str())
        .filter(|n| tunnel::protocol::is_tunnel_header(n))
        .map(str::to_string)
        .collect();
    for n in names {
        resp.remove_header(&n);
    }
}

/// A header as text, if present and valid.
pub fn header_str(value: Option<&HeaderValue>) -> Option<&str> {
    value.and_then(|v| v.to_str().ok())
}

/// `Content-Length` if present and a plain number.
pub fn content_length(resp: &ResponseHeader) -> Option<u64> {
    header_str(resp.headers.get(http::header::CONTENT_LENGTH)).and_then(|v| v.trim().parse().ok())
}

/// True if an `Accept-Encoding` value lists `token` with a non-zero weight.
pub fn accepts(accept_encoding: Option<&str>, token: &str) -> bool {
    accept_encoding.is_some_and(|v| {
        v.split(',').any(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let zero = parts
                .any(|p| p.trim().strip_prefix("q=").is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q == 0.0)));
            name.eq_ignore_ascii_case(token) && !zero
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(host: Option<&str>, uri: &str) -> RequestHeader {
        let mut r = RequestHeader::build("GET", uri.as_bytes(), None).unwrap();
        if let Some(h) = host {
            r.insert_header("host", h).unwrap();
        }
        r
    }

    #[test]
    fn host_from_header_or_authority() {
        assert_eq!(request_host(&req(Some("Example.COM:8080"), "/")), Some("example.com".into()));
        assert_eq!(request_host(&req(Some("127.0.0.1"), "/")), Some("127.0.0.1".into()));
        assert_eq!(request_host(&req(Some("[::1]:80"), "/")), Some("::1".into()));
        let mut h2 = req(None, "/x");
        h2.set_uri("https://a.example/x".parse().unwrap());
        assert_eq!(request_host(&h2), Some("a.example".into()));
        assert_eq!(request_host(&req(None, "/")), None);
        assert_eq!(request_host(&req(Some(""), "/")), None);
    }

    #[test]
    fn accept_encoding_tokens() {
        assert!(accepts(Some("dcz, zstd"), "zstd"));
        assert!(accepts(Some("gzip, DCZ;q=0.5"), "dcz"));
        assert!(!accepts(Some("gzip, zstd;q=0"), "zstd"));
        assert!(!accepts(Some("gzip"), "zstd"));
        assert!(!accepts(None, "zstd"));
    }
}

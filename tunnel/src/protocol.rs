//! What edge and origin say to each other on top of HTTP: header names and token values.
//!
//! The request names the version the edge holds with RFC 9842's `Available-Dictionary` and asks
//! for `Accept-Encoding: dcz, zstd`. The response is `Content-Encoding: dcz` or `zstd` (or
//! untouched), with two railproxy headers the edge needs before the body arrives.

/// RFC 9842: the SHA-256 of the body the edge holds for this URL, as `:base64:`.
pub const AVAILABLE_DICTIONARY: &str = "available-dictionary";
/// RFC 9842: the id the origin assigned to a dictionary; railproxy neither sends nor uses it.
pub const DICTIONARY_ID: &str = "dictionary-id";
/// What the edge accepts over the tunnel.
pub const TUNNEL_ACCEPT_ENCODING: &str = "dcz, zstd";
/// Response: the base a dcz body was made against (`:base64:`), so the edge can compare it to the
/// base it named before any byte goes out, and retry without a base if they differ.
pub const DELTA_BASE: &str = "railproxy-delta-base";
/// Response: the length of the body as the backend sent it, when the backend gave one; the edge
/// restores `Content-Length` from it and checks the decoded length against it.
pub const RAW_LENGTH: &str = "railproxy-raw-length";
/// Request: a health probe from an edge; the origin answers it itself, without a backend.
pub const PROBE: &str = "railproxy-probe";
/// Prefix of every railproxy header. Headers with it are stripped from what clients send and from
/// what backends answer, so neither can steer the tunnel.
pub const HEADER_PREFIX: &str = "railproxy-";

/// Headers that only edge and origin may set: strip them wherever a request or response enters
/// from outside.
pub fn is_tunnel_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(AVAILABLE_DICTIONARY)
        || name.eq_ignore_ascii_case(DICTIONARY_ID)
        || name.get(..HEADER_PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(HEADER_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_headers() {
        for h in ["Available-Dictionary", "railproxy-delta-base", "RailProxy-Anything", "dictionary-id"] {
            assert!(is_tunnel_header(h), "{h}");
        }
        for h in ["accept-encoding", "railproxy", "x-railproxy-a", "host"] {
            assert!(!is_tunnel_header(h), "{h}");
        }
    }
}

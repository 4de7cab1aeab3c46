//! WebSockets on the tunnel: each socket is an HTTP/2 stream of a tunnel connection, opened
//! with RFC 8441's extended CONNECT (`:method CONNECT`, `:protocol websocket`), not a TLS
//! connection of its own. The edge answers its client's HTTP/1.1 upgrade itself once the
//! origin's 200 says the backend took it; the origin makes the HTTP/1.1 upgrade to the backend.
//! The WebSocket frames cross the stream's DATA untouched, so extensions and subprotocols stay
//! between client and backend. What both ends agree on is here; the I/O is theirs.

use base64::Engine as _;

/// A refusal's body (a 403 page, say) is passed on up to this much, at each end.
pub const MAX_REFUSAL_BODY: usize = 1 << 20;

/// RFC 6455 §1.3: appended to the key before hashing.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` that answers `key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(ctx.finish())
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64.
pub fn new_key() -> String {
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>())
}

/// An HTTP/2 request opening a WebSocket (RFC 8441 §4).
pub fn is_extended_connect(req: &pingora_http::RequestHeader) -> bool {
    req.method == http::Method::CONNECT
        && req.extensions.get::<h2::ext::Protocol>().is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// Fields of one hop's handshake that do not cross to the next: HTTP/1.1's connection
/// management and upgrade offer, the key and its answer (each hop makes its own), and framing
/// (the socket has none).
pub fn hop_only(name: &http::HeaderName) -> bool {
    use http::header;
    matches!(
        *name,
        header::CONNECTION
            | header::UPGRADE
            | header::HOST
            | header::TE
            | header::TRANSFER_ENCODING
            | header::CONTENT_LENGTH
            | header::SEC_WEBSOCKET_KEY
            | header::SEC_WEBSOCKET_ACCEPT
            | header::PROXY_AUTHORIZATION
    ) || matches!(name.as_str(), "keep-alive" | "proxy-connection" | "http2-settings")
}

/// Appends `from`'s fields that are the next hop's too (subprotocol, extensions, cookies) to
/// `to`: not one hop's, nor the tunnel's, which nothing from the far side may steer.
pub fn copy_answer_fields(from: &http::HeaderMap, to: &mut pingora_http::ResponseHeader) -> pingora_error::Result<()> {
    for (name, value) in from.iter().filter(|(n, _)| !hop_only(n)) {
        to.append_header(name.clone(), value.clone())?;
    }
    super::protocol::strip_response(to);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_is_rfc_6455s() {
        // RFC 6455 §1.3's example.
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn keys_are_fresh_16_byte_values() {
        let (a, b) = (new_key(), new_key());
        assert_ne!(a, b);
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(&a).unwrap().len(), 16);
    }
}

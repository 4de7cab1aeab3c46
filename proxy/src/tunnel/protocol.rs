//! What edge and origin say to each other on top of HTTP/2: every tunnel header is named here
//! and only here, and written and read by the typed values below.
//!
//! * [`TunnelRequest`] (edge → origin): the version the edge holds for the URL, in RFC 9842's
//!   `Available-Dictionary`, and the encodings it accepts (`Accept-Encoding: dcz, zstd`).
//! * [`TunnelResponse`] (origin → edge): how the body crosses (`railproxy-encoding`, with the
//!   standard `Content-Encoding: dcz` / `zstd` beside it), the base a dcz body was made against
//!   and the length the backend sent.
//! * [`Probe`]: an edge asking a listener whether it is up; the origin answers it itself.
//!
//! Everything in the `railproxy-` namespace, and `Available-Dictionary` / `Dictionary-ID`, is
//! the tunnel's: [`strip_request`] and [`strip_response`] remove it wherever a message enters
//! from outside (a client's request at the edge, a backend's response at the origin), so that
//! neither can be taken for something edge or origin said.

use delta::VersionId;
use delta::codec::Encoding;
use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH};
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};

use crate::http_util::{accepts, header_str};
use crate::versions::{self, Versions};

/// RFC 9842: the SHA-256 of the body the edge holds for this URL, as `:base64:`.
const AVAILABLE_DICTIONARY: &str = "available-dictionary";
/// RFC 9842: the id an origin assigned to a dictionary; railproxy neither sends nor uses it.
const DICTIONARY_ID: &str = "dictionary-id";
/// Response: how the body crosses the tunnel (`dcz`, `zstd` or `identity`). The origin always
/// says it, so a backend's own `Content-Encoding: zstd` (passed through as it is) is never
/// decoded as the tunnel's.
const ENCODING: &str = "railproxy-encoding";
/// Response: the base a dcz body was made against (`:base64:`), so the edge can compare it to the
/// base it named before any byte goes out, and retry without a base if they differ.
const DELTA_BASE: &str = "railproxy-delta-base";
/// Response: the length of the body as the backend sent it, when the backend gave one; the edge
/// restores `Content-Length` from it and checks the decoded length against it.
const RAW_LENGTH: &str = "railproxy-raw-length";
/// Request: the edge reads segmented bodies (`delta::codec::segments`). Response: this body is
/// segmented. An edge of an earlier release does not ask, and gets one unsegmented frame.
const SEGMENTS: &str = "railproxy-segments";
/// Request: whose version this request's is (`shared` or `user`), and whether the operator
/// opted its host into keeping `no-store` responses (`, no-store`); see `crate::versions`.
const VERSIONS: &str = "railproxy-versions";
/// Request: a health probe from an edge; the origin answers it itself, without a backend.
const PROBE: &str = "railproxy-probe";
/// Inside the edge only: a probe its prober hands its own proxy, naming the lane to probe and the
/// process's secret (so no client can send one). Stripped before the request leaves the edge.
const LANE_PROBE: &str = "railproxy-lane-probe";
/// The `Host` of a probe: no configured host, so a probe can never reach a backend.
const PROBE_HOST: &str = "railproxy.probe";
/// Response to a WebSocket's extended CONNECT: the backend did not switch protocols, and this
/// is its answer as it gave it. Without it a backend's 200 (a page where a socket was asked for)
/// would read as the origin's 200 that opens the socket (RFC 8441 §5: any 2xx does).
const WEBSOCKET_REFUSED: &str = "railproxy-websocket-refused";
/// Prefix of every railproxy header.
const HEADER_PREFIX: &str = "railproxy-";
/// The one railproxy header clients see: the edge's cache outcome, set after the tunnel's
/// headers were stripped.
pub const CACHE_STATUS: &str = "railproxy-cache";

/// Headers that only edge and origin may set.
fn is_tunnel_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(AVAILABLE_DICTIONARY)
        || name.eq_ignore_ascii_case(DICTIONARY_ID)
        || name.get(..HEADER_PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(HEADER_PREFIX))
}

fn tunnel_header_names(headers: &http::HeaderMap) -> Vec<http::HeaderName> {
    headers.keys().filter(|n| is_tunnel_header(n.as_str())).cloned().collect()
}

/// Removes every tunnel header from a request that comes from outside (a client's, at the edge)
/// or leaves the tunnel (to a backend, at the origin).
pub fn strip_request(req: &mut RequestHeader) {
    for name in tunnel_header_names(&req.headers) {
        req.remove_header(&name);
    }
}

/// Removes every tunnel header from a response that comes from outside (a backend's, at the
/// origin).
pub fn strip_response(resp: &mut ResponseHeader) {
    for name in tunnel_header_names(&resp.headers) {
        resp.remove_header(&name);
    }
}

/// Marks the origin's answer to a WebSocket as the backend's refusal (see [`WEBSOCKET_REFUSED`]).
pub fn mark_websocket_refused(resp: &mut ResponseHeader) -> Result<()> {
    resp.insert_header(WEBSOCKET_REFUSED, "1")
}

/// Whether the origin's answer to a WebSocket is the backend's refusal, not the socket.
pub fn websocket_refused(headers: &http::HeaderMap) -> bool {
    headers.contains_key(WEBSOCKET_REFUSED)
}

/// The encodings an edge accepts over the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepts {
    pub dcz: bool,
    pub zstd: bool,
}

impl Accepts {
    /// What an edge asks for: deltas, and zstd for bodies sent in full.
    pub const ALL: Accepts = Accepts { dcz: true, zstd: true };

    /// The `Accept-Encoding` value: Encoding's tokens, written out so that every request does not
    /// build the string again.
    fn header_value(self) -> &'static str {
        match (self.dcz, self.zstd) {
            (true, true) => "dcz, zstd",
            (true, false) => "dcz",
            (false, true) => "zstd",
            (false, false) => "identity",
        }
    }
}

/// What the edge asks of the origin on top of the client's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelRequest {
    /// The version the edge holds for this URL (RFC 9842 `Available-Dictionary`).
    pub base: Option<VersionId>,
    pub accepts: Accepts,
    /// The edge reads segmented bodies.
    pub segments: bool,
    /// Whose version the response is, as the edge keys it.
    pub versions: Versions,
}

impl TunnelRequest {
    /// Edge: writes this onto a request whose client headers were stripped already.
    pub fn write(&self, req: &mut RequestHeader) -> Result<()> {
        req.insert_header(ACCEPT_ENCODING, self.accepts.header_value())?;
        if let Some(base) = &self.base {
            req.insert_header(AVAILABLE_DICTIONARY, base.to_sf())?;
        }
        if self.segments {
            req.insert_header(SEGMENTS, "1")?;
        }
        req.insert_header(VERSIONS, versions::header_value(self.versions))?;
        Ok(())
    }

    /// Origin: what the edge asked. A base that does not parse is no base.
    pub fn read(req: &RequestHeader) -> Self {
        let accept = header_str(req.headers.get(ACCEPT_ENCODING));
        TunnelRequest {
            base: req.headers.get(AVAILABLE_DICTIONARY).and_then(|v| VersionId::parse_sf(v.as_bytes()).ok()),
            accepts: Accepts {
                dcz: accepts(accept, Encoding::Dcz.as_str()),
                zstd: accepts(accept, Encoding::Zstd.as_str()),
            },
            segments: req.headers.get(SEGMENTS).is_some_and(|v| v.as_bytes() == b"1"),
            versions: versions::parse_header(req.headers.get(VERSIONS)),
        }
    }
}

/// How the origin sends a response's body over the tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelResponse {
    pub encoding: Encoding,
    /// The base of a dcz body.
    pub base: Option<VersionId>,
    /// The body's length as the backend sent it, when it said.
    pub raw_length: Option<u64>,
    /// The body is segmented (an encoded body only).
    pub segmented: bool,
}

impl TunnelResponse {
    /// Origin: rewrites a backend response (tunnel headers stripped already) for the tunnel. An
    /// encoded body's `Content-Length` gives way to `railproxy-raw-length`; the validators stay,
    /// since the edge restores the body they describe.
    pub fn write(&self, resp: &mut ResponseHeader) -> Result<()> {
        resp.insert_header(ENCODING, self.encoding.as_str())?;
        if self.encoding == Encoding::Identity {
            return Ok(());
        }
        if let Some(base) = &self.base {
            resp.insert_header(DELTA_BASE, base.to_sf())?;
        }
        resp.insert_header(CONTENT_ENCODING, self.encoding.as_str())?;
        resp.remove_header(&CONTENT_LENGTH);
        if let Some(n) = self.raw_length {
            resp.insert_header(RAW_LENGTH, n.to_string())?;
        }
        if self.segmented {
            resp.insert_header(SEGMENTS, "1")?;
        }
        Ok(())
    }

    /// Edge: reads what the origin said and takes it off the response, which is then the
    /// backend's header again (its `Content-Length` restored when the origin sent the length).
    /// A response without `railproxy-encoding` comes from an origin of an earlier release, which
    /// said the encoding in `Content-Encoding` alone.
    pub fn take(resp: &mut ResponseHeader) -> Result<Self> {
        let stated = header_str(resp.headers.get(ENCODING))
            .or_else(|| header_str(resp.headers.get(CONTENT_ENCODING)))
            .and_then(Encoding::from_token)
            .unwrap_or(Encoding::Identity);
        let base = resp.headers.get(DELTA_BASE).and_then(|v| VersionId::parse_sf(v.as_bytes()).ok());
        let raw_length = header_str(resp.headers.get(RAW_LENGTH)).and_then(|v| v.parse::<u64>().ok());
        let segmented =
            stated != Encoding::Identity && resp.headers.get(SEGMENTS).is_some_and(|v| v.as_bytes() == b"1");
        strip_response(resp);
        if stated != Encoding::Identity {
            resp.remove_header(&CONTENT_ENCODING);
            match raw_length {
                Some(n) => resp.insert_header(CONTENT_LENGTH, n.to_string())?,
                None => {
                    resp.remove_header(&CONTENT_LENGTH);
                }
            }
        }
        Ok(TunnelResponse { encoding: stated, base, raw_length, segmented })
    }
}

/// An edge asking an origin listener whether it is up.
#[derive(Debug)]
pub struct Probe;

impl Probe {
    /// Origin: whether a request is a probe. Only an edge can send one: the edge strips the
    /// header from clients' requests.
    pub fn is(req: &RequestHeader) -> bool {
        req.headers.contains_key(PROBE)
    }

    /// Origin: the answer's body; its header is a 200 with this length.
    pub const ANSWER: &'static [u8] = b"ok\n";
}

/// The probe an edge's prober hands to the edge's own proxy, so that it crosses the tunnel on the
/// lane it names, over the connections requests use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneProbe {
    pub listener: std::net::SocketAddr,
    pub lane: usize,
}

impl LaneProbe {
    /// Prober: the request, as HTTP/1.1 bytes.
    pub fn request_bytes(&self, secret: &str) -> String {
        format!(
            "GET / HTTP/1.1\r\nHost: {PROBE_HOST}\r\n{LANE_PROBE}: {secret} {} {}\r\nConnection: close\r\n\r\n",
            self.listener, self.lane
        )
    }

    /// Edge: the lane probe this request is, if it carries this process's secret.
    pub fn read(req: &RequestHeader, secret: &str) -> Option<Self> {
        let value = header_str(req.headers.get(LANE_PROBE))?;
        let mut words = value.split(' ');
        let given = words.next()?;
        // Equal lengths, then every byte: the secret is not learnt from timing either.
        let same =
            given.len() == secret.len() && given.bytes().zip(secret.bytes()).fold(0, |d, (a, b)| d | (a ^ b)) == 0;
        if !same {
            return None;
        }
        Some(LaneProbe { listener: words.next()?.parse().ok()?, lane: words.next()?.parse().ok()? })
    }

    /// Edge: turns the request into the probe the origin answers (after [`strip_request`]).
    pub fn write(req: &mut RequestHeader) -> Result<()> {
        req.insert_header(PROBE, "1")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versions::Scope;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/page", None).unwrap();
        for (n, v) in headers {
            req.append_header(n.to_string(), *v).unwrap();
        }
        req
    }

    fn response(headers: &[(&str, &str)]) -> ResponseHeader {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for (n, v) in headers {
            resp.append_header(n.to_string(), *v).unwrap();
        }
        resp
    }

    fn id(body: &[u8]) -> VersionId {
        VersionId::of(body)
    }

    #[test]
    fn tunnel_headers() {
        for h in ["Available-Dictionary", "railproxy-delta-base", "RailProxy-Anything", "dictionary-id"] {
            assert!(is_tunnel_header(h), "{h}");
        }
        for h in ["accept-encoding", "railproxy", "x-railproxy-a", "host"] {
            assert!(!is_tunnel_header(h), "{h}");
        }
    }

    const SHARED: Versions = Versions { scope: Scope::Shared, keep_no_store: false };
    const USER: Versions = Versions { scope: Scope::User, keep_no_store: false };

    #[test]
    fn request_round_trip() {
        for sent in [
            TunnelRequest { base: Some(id(b"held")), accepts: Accepts::ALL, segments: true, versions: USER },
            TunnelRequest { base: None, accepts: Accepts::ALL, segments: false, versions: SHARED },
            TunnelRequest { base: None, accepts: Accepts { dcz: false, zstd: true }, segments: true, versions: SHARED },
            TunnelRequest {
                base: Some(id(b"x")),
                accepts: Accepts { dcz: true, zstd: false },
                segments: false,
                versions: Versions { scope: Scope::User, keep_no_store: true },
            },
        ] {
            let mut req = request(&[("host", "a.example")]);
            sent.write(&mut req).unwrap();
            assert_eq!(TunnelRequest::read(&req), sent);
        }
        // The written-out values are Encoding's tokens.
        for (dcz, zstd) in [(true, true), (true, false), (false, true), (false, false)] {
            let value = Accepts { dcz, zstd }.header_value();
            let tokens: Vec<&str> = value.split(", ").collect();
            let want: Vec<&str> = [(dcz, Encoding::Dcz), (zstd, Encoding::Zstd)]
                .into_iter()
                .filter_map(|(on, e)| on.then_some(e.as_str()))
                .collect();
            assert_eq!(tokens, if want.is_empty() { vec![Encoding::Identity.as_str()] } else { want });
        }
        // What the edge has always sent.
        let mut req = request(&[]);
        TunnelRequest { base: None, accepts: Accepts::ALL, segments: true, versions: SHARED }.write(&mut req).unwrap();
        assert_eq!(req.headers.get("accept-encoding").unwrap(), "dcz, zstd");
    }

    #[test]
    fn response_round_trip() {
        for sent in [
            TunnelResponse {
                encoding: Encoding::Dcz,
                base: Some(id(b"base")),
                raw_length: Some(190_000),
                segmented: true,
            },
            TunnelResponse { encoding: Encoding::Zstd, base: None, raw_length: Some(7), segmented: false },
            TunnelResponse { encoding: Encoding::Zstd, base: None, raw_length: None, segmented: true },
            TunnelResponse { encoding: Encoding::Identity, base: None, raw_length: None, segmented: false },
        ] {
            let mut resp = response(&[("content-type", "text/html"), ("content-length", "190000"), ("etag", "\"v1\"")]);
            sent.write(&mut resp).unwrap();
            if sent.encoding != Encoding::Identity {
                assert!(resp.headers.get("content-length").is_none(), "{sent:?}");
                assert_eq!(resp.headers.get("content-encoding").unwrap(), sent.encoding.as_str());
            }
            let got = TunnelResponse::take(&mut resp).unwrap();
            assert_eq!(got, sent);
            // The backend's header again: nothing of the tunnel's left, validators kept.
            assert!(resp.headers.keys().all(|n| !is_tunnel_header(n.as_str())), "{:?}", resp.headers);
            assert!(resp.headers.get("content-encoding").is_none());
            assert_eq!(resp.headers.get("etag").unwrap(), "\"v1\"");
            let length = resp.headers.get("content-length").map(|v| v.to_str().unwrap().to_string());
            match (sent.encoding, sent.raw_length) {
                (Encoding::Identity, _) => assert_eq!(length.as_deref(), Some("190000")),
                (_, Some(n)) => assert_eq!(length, Some(n.to_string())),
                (_, None) => assert_eq!(length, None),
            }
        }
    }

    #[test]
    fn a_client_cannot_speak_for_the_edge() {
        // Everything a client could send to steer the tunnel, in any case.
        let mut req = request(&[
            ("Available-Dictionary", &id(b"someone else's page").to_sf()),
            ("Dictionary-ID", "x"),
            ("railproxy-probe", "1"),
            ("RailProxy-Delta-Base", &id(b"b").to_sf()),
            ("accept-encoding", "gzip"),
            ("railproxy-versions", "shared, no-store"),
        ]);
        strip_request(&mut req);
        assert!(!Probe::is(&req));
        assert_eq!(TunnelRequest::read(&req).base, None);
        assert_eq!(TunnelRequest::read(&req).versions, Versions::default());
        // The edge then says what it holds: only that reaches the origin.
        let said = TunnelRequest { base: None, accepts: Accepts::ALL, segments: true, versions: USER };
        said.write(&mut req).unwrap();
        assert_eq!(TunnelRequest::read(&req), said);
        assert!(req.headers.get_all("available-dictionary").iter().next().is_none());
    }

    #[test]
    fn a_backend_cannot_speak_for_the_origin() {
        // A backend that sets tunnel headers, and one that compresses with zstd itself although
        // asked for identity: the origin passes its body through, and the edge must not decode it.
        let mut resp = response(&[
            ("content-encoding", "zstd"),
            ("content-length", "42"),
            ("railproxy-encoding", "dcz"),
            ("railproxy-delta-base", &id(b"b").to_sf()),
            ("railproxy-raw-length", "99"),
            ("railproxy-segments", "1"),
        ]);
        strip_response(&mut resp);
        TunnelResponse { encoding: Encoding::Identity, base: None, raw_length: None, segmented: false }
            .write(&mut resp)
            .unwrap();
        let got = TunnelResponse::take(&mut resp).unwrap();
        assert_eq!(
            got,
            TunnelResponse { encoding: Encoding::Identity, base: None, raw_length: None, segmented: false }
        );
        assert_eq!(resp.headers.get("content-encoding").unwrap(), "zstd", "the backend's own encoding stays");
        assert_eq!(resp.headers.get("content-length").unwrap(), "42");
    }

    #[test]
    fn an_origin_of_an_earlier_release_is_understood() {
        // Before `railproxy-encoding`, Content-Encoding alone said it.
        let mut resp = response(&[("content-encoding", "dcz"), ("railproxy-delta-base", &id(b"b").to_sf())]);
        let got = TunnelResponse::take(&mut resp).unwrap();
        assert_eq!(got.encoding, Encoding::Dcz);
        assert_eq!(got.base, Some(id(b"b")));
    }

    #[test]
    fn lane_probes_need_the_secret_and_never_leave_the_edge() {
        let probe = LaneProbe { listener: "127.0.0.1:2408".parse().unwrap(), lane: 3 };
        let bytes = probe.request_bytes("s3cret");
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        let line = bytes.lines().find(|l| l.starts_with(LANE_PROBE)).unwrap();
        let (name, value) = line.split_once(": ").unwrap();
        req.insert_header(name.to_string(), value).unwrap();
        assert_eq!(LaneProbe::read(&req, "s3cret"), Some(probe));
        assert_eq!(LaneProbe::read(&req, "s3crex"), None);
        assert_eq!(LaneProbe::read(&req, "s3cret2"), None);
        strip_request(&mut req);
        LaneProbe::write(&mut req).unwrap();
        assert!(Probe::is(&req));
        assert_eq!(LaneProbe::read(&req, "s3cret"), None, "stripped before it leaves");
    }

    #[test]
    fn probe() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        LaneProbe::write(&mut req).unwrap();
        assert!(Probe::is(&req));
        strip_request(&mut req);
        assert!(!Probe::is(&req), "a probe header from a client is stripped");
    }
}

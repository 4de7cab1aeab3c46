//! Compression for clients (br, zstd or gzip, as their `Accept-Encoding` allows), flushed at the
//! end of every body piece the edge sends on.
//!
//! Pingora's own compression module holds output until its encoder's block fills: the head of a
//! page the edge verified and released early, or the part of a download that came, would wait
//! for bytes that have not been produced yet. Flushing per piece costs a few bytes a piece; the
//! edge sends a page it holds whole as one piece, and a stream in the pieces it came in, which
//! is when a flush is wanted anyway (nginx flushes gzip the same way when it does not buffer).

use std::io::Write as _;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::modules::http::{HttpModule, HttpModuleBuilder, Module, ModuleBuilder};
use pingora_error::{ErrorType, OrErr as _, Result};
use pingora_http::{RequestHeader, ResponseHeader};

use crate::http_util::{content_length, header_str, is_event_stream, vary_on};
use crate::metrics;

/// `delta.report_header`: how a body crossed the tunnel and reached the client.
pub const REPORT: &str = "railproxy-delta";

/// Codings offered, best first when a client rates several alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Brotli,
    Zstd,
    Gzip,
}

impl Coding {
    const ALL: [Coding; 3] = [Coding::Brotli, Coding::Zstd, Coding::Gzip];

    fn token(self) -> &'static str {
        match self {
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
        }
    }
}

/// Bodies shorter than this are not worth a coding's framing.
const MIN_LENGTH: u64 = 20;

/// The coding a request's `Accept-Encoding` rates highest (RFC 9110 §12.5.3), if any.
fn negotiate(accept: Option<&str>) -> Option<Coding> {
    let mut best: Option<(Coding, f32)> = None;
    for item in accept?.split(',') {
        let mut parts = item.split(';');
        let token = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
            .find_map(|v| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let Some(coding) = Coding::ALL.into_iter().find(|c| token.eq_ignore_ascii_case(c.token())) else {
            continue;
        };
        let rank = |c: Coding| Coding::ALL.iter().position(|x| *x == c);
        let better = match best {
            None => true,
            Some((b, bq)) => q > bq || (q == bq && rank(coding) < rank(b)),
        };
        if q > 0.0 && better {
            best = Some((coding, q));
        }
    }
    best.map(|(c, _)| c)
}

/// Whether a response to a client that accepts a coding is compressed.
pub fn compresses(resp: &ResponseHeader) -> bool {
    let status = resp.status.as_u16();
    let encoded = header_str(resp.headers.get(http::header::CONTENT_ENCODING))
        .is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity"));
    let no_transform = resp
        .headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("no-transform"));
    let content_type = header_str(resp.headers.get(http::header::CONTENT_TYPE)).unwrap_or("");
    status >= 200
        && !matches!(status, 204 | 206 | 304)
        && !encoded
        && !no_transform
        && !resp.headers.contains_key(http::header::CONTENT_RANGE)
        && content_length(resp).is_none_or(|n| n >= MIN_LENGTH)
        // Event streams go as they are (each event is for now), as nginx's default gzip_types.
        && !is_event_stream(resp)
        && delta::policy::is_compressible(content_type)
}

enum Encoder {
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    /// zstd, or dcz against a browser's dictionary (the same encoder, with a base).
    Zstd(Box<delta::codec::Encoder>),
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
}

impl Encoder {
    fn new(coding: Coding, level: u32) -> Result<Self> {
        Ok(match coding {
            Coding::Brotli => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(Vec::new(), 4096, level, 22))),
            Coding::Zstd => Encoder::Zstd(Box::new(
                delta::codec::Encoder::zstd(level as i32, None)
                    .or_err(ErrorType::InternalError, "starting the client's zstd encoder")?,
            )),
            Coding::Gzip => {
                Encoder::Gzip(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level.min(9))))
            }
        })
    }

    /// Compresses a piece, flushed when `flush` so that the client can decode all of it now.
    /// The last piece is not (the end follows at once): for dcz that keeps the whole body for
    /// its sampled match finder, and in every coding it saves a block's framing.
    fn piece(&mut self, input: &[u8], flush: bool) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Brotli(w) => {
                w.write_all(input)?;
                if flush {
                    w.flush()?;
                }
                Ok(std::mem::take(w.get_mut()))
            }
            Encoder::Gzip(w) => {
                w.write_all(input)?;
                if flush {
                    w.flush()?;
                }
                Ok(std::mem::take(w.get_mut()))
            }
            Encoder::Zstd(e) => {
                let mut out = Vec::new();
                e.write(input, &mut out).map_err(std::io::Error::other)?;
                if flush {
                    e.flush(&mut out).map_err(std::io::Error::other)?;
                }
                Ok(out)
            }
        }
    }

    /// Ends the coding: what is left of it.
    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Brotli(w) => Ok(w.into_inner()),
            Encoder::Gzip(w) => w.finish(),
            Encoder::Zstd(mut e) => {
                let mut out = Vec::new();
                e.finish(&mut out).map_err(std::io::Error::other)?;
                if e.encoding() == delta::codec::Encoding::Dcz {
                    metrics::CLIENT_DELTA_BYTES.with_label_values(&["raw"]).inc_by(e.bytes_in());
                    metrics::CLIENT_DELTA_BYTES.with_label_values(&["wire"]).inc_by(e.bytes_out());
                }
                Ok(out)
            }
        }
    }
}

/// What the edge tells the module about one response (see `Edge::response_filter`).
#[derive(Debug, Default)]
pub struct Plan {
    /// Answer with dcz against this dictionary (checked already) if the response compresses.
    pub dictionary: Option<delta::Version>,
    /// `delta.report_header`: how the body crossed the tunnel; the module adds how it reaches
    /// the client and sends it as `railproxy-delta`.
    pub report: Option<String>,
}

/// Per response: the coding the client accepts, then the encoder once the response is known to
/// be compressed.
pub struct ClientCompression {
    /// br, zstd and gzip at this level; None: only dcz (`client_compression: 0` on an edge
    /// with browser dictionaries).
    level: Option<u32>,
    accepted: Option<Coding>,
    encoder: Option<Encoder>,
    pub plan: Plan,
}

impl ClientCompression {
    fn compress(&mut self, body: &mut Option<Bytes>, end: bool) -> Result<()> {
        let Some(encoder) = self.encoder.as_mut() else {
            return Ok(());
        };
        let mut out = match body.as_deref() {
            Some(input) if !end || !input.is_empty() => encoder.piece(input, !end),
            _ => Ok(Vec::new()),
        }
        .or_err(ErrorType::InternalError, "compressing for the client")?;
        if end {
            let rest = self.encoder.take().expect("present").finish();
            out.extend(rest.or_err(ErrorType::InternalError, "compressing for the client")?);
        }
        *body = (!out.is_empty() || end).then(|| Bytes::from(out));
        Ok(())
    }
}

#[async_trait]
impl HttpModule for ClientCompression {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    async fn request_header_filter(&mut self, req: &mut RequestHeader) -> Result<()> {
        self.accepted = negotiate(header_str(req.headers.get(http::header::ACCEPT_ENCODING)));
        Ok(())
    }

    async fn response_header_filter(&mut self, resp: &mut ResponseHeader, end_of_stream: bool) -> Result<()> {
        let plan = std::mem::take(&mut self.plan);
        let coded = !end_of_stream && compresses(resp);
        let token = match (plan.dictionary, self.accepted.zip(self.level)) {
            (Some(base), _) if coded => {
                let params = delta::codec::DeltaParams::default();
                let e = delta::codec::Encoder::dcz(&base, &params, content_length(resp))
                    .or_err(ErrorType::InternalError, "starting the client's dcz encoder")?;
                self.encoder = Some(Encoder::Zstd(Box::new(e)));
                metrics::CLIENT_DELTAS.with_label_values(&["hit"]).inc();
                "dcz"
            }
            (dictionary, Some((coding, level))) if coded => {
                if dictionary.is_some() {
                    metrics::CLIENT_DELTAS.with_label_values(&["miss"]).inc();
                }
                self.encoder = Some(Encoder::new(coding, level)?);
                coding.token()
            }
            (dictionary, _) => {
                if dictionary.is_some() {
                    metrics::CLIENT_DELTAS.with_label_values(&["miss"]).inc();
                }
                if let Some(report) = plan.report {
                    resp.insert_header(REPORT, format!("{report}; client=identity"))?;
                }
                return Ok(());
            }
        };
        if let Some(report) = plan.report {
            resp.insert_header(REPORT, format!("{report}; client={token}"))?;
        }
        resp.insert_header(http::header::CONTENT_ENCODING, token)?;
        resp.remove_header(&http::header::CONTENT_LENGTH);
        // Byte ranges of the coded body are not those of the backend's.
        resp.remove_header(&http::header::ACCEPT_RANGES);
        vary_on(resp, &["Accept-Encoding"])?;
        // The coded bytes differ from the backend's: a strong validator becomes a weak one.
        if let Some(etag) = header_str(resp.headers.get(http::header::ETAG)).filter(|e| e.starts_with('"')) {
            let weak = format!("W/{etag}");
            resp.insert_header(http::header::ETAG, weak)?;
        }
        Ok(())
    }

    fn response_body_filter(&mut self, body: &mut Option<Bytes>, end_of_stream: bool) -> Result<()> {
        self.compress(body, end_of_stream)
    }

    fn response_done_filter(&mut self) -> Result<Option<Bytes>> {
        // A response that ended without its last piece being marked as the end.
        let mut rest = None;
        self.compress(&mut rest, true)?;
        Ok(rest.filter(|b| !b.is_empty()))
    }
}

/// Adds [`ClientCompression`] to every response of the edge.
pub struct Builder {
    pub level: Option<u32>,
}

impl Builder {
    /// br, zstd and gzip at `level` (none: dcz only).
    pub fn enable(level: Option<u32>) -> ModuleBuilder {
        Box::new(Builder { level })
    }
}

impl HttpModuleBuilder for Builder {
    fn init(&self) -> Module {
        Box::new(ClientCompression { level: self.level, accepted: None, encoder: None, plan: Plan::default() })
    }

    fn order(&self) -> i16 {
        // After other response filters, as Pingora's own compression module.
        i16::MIN / 2
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    #[test]
    fn the_best_rated_coding_is_chosen() {
        assert_eq!(negotiate(Some("gzip, deflate, br, zstd")), Some(Coding::Brotli));
        assert_eq!(negotiate(Some("gzip;q=0.5, zstd;q=0.8")), Some(Coding::Zstd));
        assert_eq!(negotiate(Some("br;q=0, gzip")), Some(Coding::Gzip));
        assert_eq!(negotiate(Some("GZIP")), Some(Coding::Gzip));
        assert_eq!(negotiate(Some("identity, deflate")), None);
        assert_eq!(negotiate(None), None);
    }

    fn response(headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn only_compressible_untransformed_whole_bodies_are_compressed() {
        assert!(compresses(&response(&[("content-type", "text/html; charset=utf-8")])));
        assert!(compresses(&response(&[("content-type", "application/json"), ("content-length", "5000")])));
        assert!(!compresses(&response(&[("content-type", "text/html"), ("content-length", "10")])));
        assert!(!compresses(&response(&[("content-type", "image/png")])));
        assert!(!compresses(&response(&[("content-type", "text/event-stream")])));
        assert!(!compresses(&response(&[("content-type", "text/html"), ("content-encoding", "br")])));
        assert!(!compresses(&response(&[("content-type", "text/html"), ("cache-control", "public, no-transform")])));
        let mut partial = response(&[("content-type", "text/html")]);
        partial.set_status(206).unwrap();
        assert!(!compresses(&partial));
    }

    /// Each piece decodes whole as soon as it is out, whichever coding.
    #[test]
    fn every_piece_is_decodable_on_arrival() {
        let page = delta::testing::PageGenerator::versions(5, 40_000, 1).remove(0);
        let (head, rest) = page.split_at(8192);
        for coding in Coding::ALL {
            let mut m =
                ClientCompression { level: Some(6), accepted: Some(coding), encoder: None, plan: Plan::default() };
            m.encoder = Some(Encoder::new(coding, 6).unwrap());
            let mut first = Some(Bytes::copy_from_slice(head));
            m.compress(&mut first, false).unwrap();
            let first = first.unwrap();
            let mut second = Some(Bytes::copy_from_slice(rest));
            m.compress(&mut second, true).unwrap();
            let decoded_head = match coding {
                Coding::Gzip => {
                    let mut d = flate2::write::GzDecoder::new(Vec::new());
                    d.write_all(&first).unwrap();
                    d.flush().unwrap();
                    d.get_ref().clone()
                }
                Coding::Brotli => {
                    // As a browser reads it: what decodes before the input runs out.
                    let mut d = brotli::Decompressor::new(&first[..], 4096);
                    let (mut out, mut buf) = (Vec::new(), [0u8; 4096]);
                    while let Ok(n) = d.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        out.extend_from_slice(&buf[..n]);
                    }
                    out
                }
                Coding::Zstd => {
                    let mut out = Vec::new();
                    let mut d = delta::codec::Decoder::zstd(delta::codec::DecodeOptions::default()).unwrap();
                    d.write(&first, &mut out).unwrap();
                    out
                }
            };
            assert!(decoded_head == head, "{coding:?}: the first piece decodes to the head");
            let whole = [first.to_vec(), second.unwrap().to_vec()].concat();
            let decoded = match coding {
                Coding::Gzip => {
                    let mut v = Vec::new();
                    flate2::read::GzDecoder::new(&whole[..]).read_to_end(&mut v).unwrap();
                    v
                }
                Coding::Brotli => {
                    let mut v = Vec::new();
                    brotli::Decompressor::new(&whole[..], 4096).read_to_end(&mut v).unwrap();
                    v
                }
                Coding::Zstd => delta::codec::decompress(&whole, delta::codec::DecodeOptions::default()).unwrap(),
            };
            assert!(decoded == page, "{coding:?}: the whole body");
        }
    }
}

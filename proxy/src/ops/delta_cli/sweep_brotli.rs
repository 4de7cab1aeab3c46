//! RFC 9842 dcb (brotli with the base as a custom dictionary), measured for the sweep only:
//! it did not earn a place in the codec (see BENCHMARKS.md).

use std::io::Cursor;

use anyhow::Context as _;
use bytes::Bytes;
use delta::Version;

use super::bench::Method;

/// dcb header: magic `ff 44 43 42` and the SHA-256 of the dictionary.
const DCB_HEADER_LEN: usize = 36;

pub struct BrotliDict(pub i32);

impl Method for BrotliDict {
    fn label(&self) -> String {
        format!("dcb: brotli -{} with base as dictionary", self.0)
    }
    fn prepare(&self, earlier: &[Bytes]) -> Version {
        Version::new(earlier.last().cloned().unwrap_or_default())
    }
    fn encode(&self, dict: &Version, new: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(new.len() / 16 + DCB_HEADER_LEN);
        out.extend_from_slice(&[0xff, 0x44, 0x43, 0x42]);
        out.extend_from_slice(dict.id.as_bytes());
        let params = brotli::enc::BrotliEncoderParams { quality: self.0, lgwin: 24, ..Default::default() };
        let mut input = Cursor::new(new);
        let (mut inbuf, mut outbuf) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
        let mut nop = |_: &mut brotli::interface::PredictionModeContextMap<brotli::InputReferenceMut<'_>>,
                       _: &mut [brotli::interface::StaticCommand],
                       _: brotli::InputPair<'_>,
                       _: &mut brotli::enc::StandardAlloc| ();
        brotli::BrotliCompressCustomIoCustomDict(
            &mut brotli::IoReaderWrapper(&mut input),
            &mut brotli::IoWriterWrapper(&mut out),
            &mut inbuf,
            &mut outbuf,
            &params,
            brotli::enc::StandardAlloc::default(),
            &mut nop,
            &dict.body,
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "eof"),
        )
        .context("brotli")?;
        Ok(out)
    }
    fn decode(&self, dict: &Version, encoded: &[u8]) -> anyhow::Result<Vec<u8>> {
        let body = encoded.get(DCB_HEADER_LEN..).context("short dcb body")?;
        let mut out = Vec::with_capacity(dict.body.len() + 4096);
        let mut reader = brotli::Decompressor::new_with_custom_dict(body, 1 << 16, dict.body.to_vec().into());
        std::io::Read::read_to_end(&mut reader, &mut out).context("brotli decode")?;
        Ok(out)
    }
    fn slow(&self) -> bool {
        self.0 >= 9
    }
}

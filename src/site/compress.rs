//! Streaming compressors for the three codings, with bounded memory: the output of each
//! piece is taken away as soon as it is made, so what is held is the coder's own window.

use std::io::Write;

use crate::config::Levels;
use crate::http::encoding::Encoding;

/// Brotli's window for responses compressed on the fly: 1 MiB (`lgwin` 20) bounds the
/// encoder's memory per response.
const BROTLI_WINDOW: u32 = 20;
/// Brotli's internal buffer.
const BROTLI_BUFFER: usize = 16 * 1024;

/// A compressor for one response body.
pub enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    pub fn new(encoding: Encoding, levels: &Levels) -> std::io::Result<Self> {
        Ok(match encoding {
            Encoding::Gzip => Self::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(levels.gzip),
            )),
            Encoding::Br => Self::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                BROTLI_BUFFER,
                levels.br,
                BROTLI_WINDOW,
            ))),
            Encoding::Zstd => {
                Self::Zstd(zstd::stream::write::Encoder::new(Vec::new(), levels.zstd)?)
            }
        })
    }

    /// Compresses `data`; with `flush`, everything so far is made decodable by the client
    /// (a sync flush), so a streamed response reaches it piece by piece. The output made is
    /// in [`Self::output`].
    pub fn write(&mut self, data: &[u8], flush: bool) -> std::io::Result<()> {
        match self {
            Self::Gzip(e) => {
                e.write_all(data)?;
                if flush {
                    e.flush()?;
                }
            }
            Self::Br(e) => {
                e.write_all(data)?;
                if flush {
                    e.flush()?;
                }
            }
            Self::Zstd(e) => {
                e.write_all(data)?;
                if flush {
                    e.flush()?;
                }
            }
        }
        Ok(())
    }

    /// The output made so far, not yet taken.
    pub fn output(&mut self) -> &mut Vec<u8> {
        match self {
            Self::Gzip(e) => e.get_mut(),
            Self::Br(e) => e.get_mut(),
            Self::Zstd(e) => e.get_mut(),
        }
    }

    /// Ends the stream: the rest of the output.
    pub fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Self::Gzip(e) => e.finish(),
            Self::Br(e) => Ok(e.into_inner()),
            Self::Zstd(e) => e.finish(),
        }
    }
}

/// Compresses a whole body at once.
pub fn compress_all(encoding: Encoding, levels: &Levels, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut e = Encoder::new(encoding, levels)?;
    e.write(data, false)?;
    let mut out = std::mem::take(e.output());
    out.extend(e.finish()?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn decode(encoding: Encoding, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match encoding {
            Encoding::Gzip => {
                flate2::read::GzDecoder::new(data)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Encoding::Br => {
                brotli::Decompressor::new(data, 4096)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Encoding::Zstd => {
                out = zstd::stream::decode_all(data).unwrap();
            }
        }
        out
    }

    #[test]
    fn streams_decode_to_the_input_piece_by_piece() {
        let text: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("line {i} of some text\n").into_bytes())
            .collect();
        for (_, encoding) in Encoding::ALL {
            let mut e = Encoder::new(encoding, &Levels::default()).unwrap();
            let mut out = Vec::new();
            for (i, piece) in text.chunks(10_000).enumerate() {
                e.write(piece, i % 2 == 0).unwrap();
                out.append(e.output());
                if i == 0 {
                    // After a flush the client can decode what it has.
                    assert!(!out.is_empty(), "{encoding:?}");
                }
            }
            out.extend(e.finish().unwrap());
            assert!(out.len() < text.len() / 4, "{encoding:?}: {}", out.len());
            assert_eq!(decode(encoding, &out), text, "{encoding:?}");
            let all = compress_all(encoding, &Levels::default(), &text).unwrap();
            assert_eq!(decode(encoding, &all), text, "{encoding:?}");
        }
    }
}

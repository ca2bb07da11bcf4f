//! Streaming compressors for the three codings, with bounded memory: the output of each
//! piece is taken away as soon as it is made, so what is held is the coder's own window.
//!
//! gzip is raw deflate (zlib-rs through `flate2`) framed here, so that its state — a few
//! hundred KiB that would be allocated and cleared per response — is reset and reused from a
//! per-thread pool.

use std::cell::RefCell;
use std::io::Write;

use flate2::{Compress, Crc, FlushCompress, Status};

use crate::config::Levels;
use crate::http::encoding::Encoding;

/// Brotli's window for responses compressed on the fly: 1 MiB (`lgwin` 20) bounds the
/// encoder's memory per response.
const BROTLI_WINDOW: u32 = 20;
/// zstd's window for responses compressed on the fly: 1 MiB.
const ZSTD_WINDOW_LOG: u32 = 20;
/// Brotli's internal buffer.
const BROTLI_BUFFER: usize = 16 * 1024;

/// Deflate states kept per thread (by level) for the next response.
const POOL_KEEP: usize = 16;

thread_local! {
    static DEFLATE: RefCell<Vec<(u32, Compress)>> = const { RefCell::new(Vec::new()) };
}

/// The gzip header: magic, deflate, no flags, no time, no extra flags, OS unknown.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// A gzip stream over a pooled raw deflate state.
pub struct Gzip {
    /// `None` once finished (and returned to the pool).
    z: Option<Compress>,
    level: u32,
    crc: Crc,
    out: Vec<u8>,
}

impl Gzip {
    fn new(level: u32) -> Self {
        let pooled = DEFLATE.with(|p| {
            let mut p = p.borrow_mut();
            let at = p.iter().position(|(l, _)| *l == level)?;
            Some(p.swap_remove(at).1)
        });
        let z = pooled.unwrap_or_else(|| Compress::new(flate2::Compression::new(level), false));
        Self {
            z: Some(z),
            level,
            crc: Crc::new(),
            out: GZIP_HEADER.to_vec(),
        }
    }

    fn write(&mut self, data: &[u8], flush: bool) -> std::io::Result<()> {
        self.crc.update(data);
        let mode = if flush {
            FlushCompress::Sync
        } else {
            FlushCompress::None
        };
        self.deflate(data, mode)
    }

    /// Runs deflate over `input` until it is taken (and, for a flush or the finish, until the
    /// output stops filling).
    fn deflate(&mut self, mut input: &[u8], mode: FlushCompress) -> std::io::Result<()> {
        let Some(z) = &mut self.z else {
            return Err(std::io::Error::other("the gzip stream has ended"));
        };
        loop {
            self.out.reserve(input.len() / 2 + 512);
            let before = z.total_in();
            let status = z
                .compress_vec(input, &mut self.out, mode)
                .map_err(std::io::Error::other)?;
            input = &input[(z.total_in() - before) as usize..];
            let room = self.out.len() < self.out.capacity();
            let done = match mode {
                FlushCompress::Finish => status == Status::StreamEnd,
                FlushCompress::None => input.is_empty(),
                _ => input.is_empty() && room,
            };
            if done {
                return Ok(());
            }
        }
    }

    fn finish(mut self) -> std::io::Result<Vec<u8>> {
        self.deflate(&[], FlushCompress::Finish)?;
        self.out.extend_from_slice(&self.crc.sum().to_le_bytes());
        self.out.extend_from_slice(&self.crc.amount().to_le_bytes());
        Ok(std::mem::take(&mut self.out))
    }
}

impl Drop for Gzip {
    fn drop(&mut self) {
        let Some(mut z) = self.z.take() else {
            return;
        };
        z.reset();
        let level = self.level;
        // `try_with`: at thread exit the state is just freed.
        let _ = DEFLATE.try_with(|p| {
            if let Ok(mut p) = p.try_borrow_mut() {
                if p.len() < POOL_KEEP {
                    p.push((level, z));
                }
            }
        });
    }
}

/// A compressor for one response body.
pub enum Encoder {
    Gzip(Gzip),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    pub fn new(encoding: Encoding, levels: &Levels) -> std::io::Result<Self> {
        Ok(match encoding {
            Encoding::Gzip => Self::Gzip(Gzip::new(levels.gzip)),
            Encoding::Br => Self::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                BROTLI_BUFFER,
                levels.br,
                BROTLI_WINDOW,
            ))),
            Encoding::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(Vec::new(), levels.zstd)?;
                // The window (and so the encoder's memory) within 1 MiB, as brotli's.
                e.window_log(ZSTD_WINDOW_LOG)?;
                Self::Zstd(e)
            }
        })
    }

    /// Compresses `data`; with `flush`, everything so far is made decodable by the client
    /// (a sync flush), so a streamed response reaches it piece by piece. The output made is
    /// in [`Self::output`].
    pub fn write(&mut self, data: &[u8], flush: bool) -> std::io::Result<()> {
        match self {
            Self::Gzip(e) => e.write(data, flush)?,
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
            Self::Gzip(e) => &mut e.out,
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

    #[test]
    fn pooled_gzip_states_start_clean() {
        let levels = Levels::default();
        let a = compress_all(Encoding::Gzip, &levels, b"first body, first body").unwrap();
        // An abandoned stream goes back to the pool mid-way; the next one must not see it.
        let mut half = Encoder::new(Encoding::Gzip, &levels).unwrap();
        half.write(&[b'x'; 100_000], false).unwrap();
        drop(half);
        for _ in 0..3 {
            let again = compress_all(Encoding::Gzip, &levels, b"first body, first body").unwrap();
            assert_eq!(again, a);
            assert_eq!(decode(Encoding::Gzip, &again), b"first body, first body");
        }
        assert_eq!(
            decode(
                Encoding::Gzip,
                &compress_all(Encoding::Gzip, &levels, b"").unwrap()
            ),
            b""
        );
    }
}

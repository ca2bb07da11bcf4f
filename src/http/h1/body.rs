//! Message bodies on an HTTP/1 connection: one [`Framing`], one [`BodyReader`] that takes a
//! body off the wire whatever its framing, one [`BodyWriter`] that puts it back on, and
//! [`transcode`] between them. The same three serve both sides: a request body read from the
//! client (dropped, or sent on to an upstream) and a response body read from an upstream (sent on
//! to the client).
//!
//! Pure logic over byte slices: the callers own the buffers and the sockets, read more when the
//! body is not done, and send what [`transcode`] says.

use super::chunked::{self, ChunkedDecoder, Decoded};
use crate::http::request::BodyKind;

/// How a message's body is delimited (RFC 9112 §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (a request without one; a response to HEAD, a 1xx, 204 or 304).
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
    /// Everything until the connection closes (a response only).
    Close,
}

impl Framing {
    /// The framing of a request body as its head declared it.
    pub fn of_request(body: BodyKind) -> Self {
        match body {
            BodyKind::None | BodyKind::Length(0) => Self::None,
            BodyKind::Length(n) => Self::Length(n),
            BodyKind::Chunked => Self::Chunked,
        }
    }

    /// Whether a body follows at all.
    pub fn has_body(self) -> bool {
        !matches!(self, Self::None | Self::Length(0))
    }
}

/// A body that is not valid for its framing: the caller answers 400 (from a client) or drops
/// the connection (from an upstream).
pub type BodyError = crate::http::Malformed;

/// Takes one body off the wire.
#[derive(Debug)]
pub struct BodyReader {
    framing: Framing,
    /// Bytes left of a `Length` body.
    left: u64,
    /// A `Chunked` body's decoder (boxed: its trailer buffer is not carried by other bodies).
    chunked: Option<Box<ChunkedDecoder>>,
    /// Body data taken so far.
    taken: u64,
    done: bool,
}

impl BodyReader {
    pub fn new(framing: Framing) -> Self {
        let (left, chunked) = match framing {
            Framing::Length(n) => (n, None),
            Framing::Chunked => (0, Some(Box::default())),
            Framing::None | Framing::Close => (0, None),
        };
        Self {
            framing,
            left,
            chunked,
            taken: 0,
            done: matches!(framing, Framing::None | Framing::Length(0)),
        }
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Whether the whole body has been taken.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Body data taken so far (decoded: without chunk framing).
    pub fn body_bytes(&self) -> u64 {
        self.taken
    }

    /// Bytes of a `Length` body not taken yet.
    pub fn left(&self) -> u64 {
        self.left
    }

    /// The trailer field lines of a chunked body (each with its CRLF), once it is done.
    pub fn trailers(&self) -> &[u8] {
        self.chunked
            .as_deref()
            .map_or(&[], ChunkedDecoder::trailers)
    }

    /// Takes the body bytes at the front of `input`, up to the end of the body: each piece of
    /// data goes to `data`, in order. Returns how many bytes of `input` were consumed (data and
    /// framing); the body is done when [`Self::is_done`] says so. Bytes after the body are not
    /// touched.
    pub fn read(&mut self, input: &[u8], mut data: impl FnMut(&[u8])) -> Result<usize, BodyError> {
        match self.framing {
            Framing::None => Ok(0),
            Framing::Length(_) => {
                let take = (input.len() as u64).min(self.left) as usize;
                if take > 0 {
                    data(&input[..take]);
                }
                self.left -= take as u64;
                self.taken += take as u64;
                self.done = self.left == 0;
                Ok(take)
            }
            Framing::Close => {
                if !input.is_empty() {
                    data(input);
                }
                self.taken += input.len() as u64;
                Ok(input.len())
            }
            Framing::Chunked => {
                let Some(decoder) = self.chunked.as_deref_mut() else {
                    return Ok(0);
                };
                let mut at = 0;
                loop {
                    let rest = input.get(at..).unwrap_or_default();
                    let (used, decoded) = decoder.decode(rest)?;
                    let start = at;
                    at += used;
                    match decoded {
                        Decoded::Data(r) => {
                            data(&input[start + r.start..start + r.end]);
                            self.taken += r.len() as u64;
                        }
                        Decoded::Done => {
                            self.done = true;
                            return Ok(at);
                        }
                        Decoded::NeedMore => return Ok(at),
                    }
                }
            }
        }
    }

    /// The stream ended: a close-delimited body is done; any other is cut short.
    pub fn end_of_stream(&mut self) -> Result<(), BodyError> {
        if self.done {
            return Ok(());
        }
        if self.framing == Framing::Close {
            self.done = true;
            return Ok(());
        }
        Err(BodyError {
            reason: "the stream ended before the body",
        })
    }
}

/// Puts a body on the wire in a framing, from what a [`BodyReader`] took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyWriter {
    /// Nothing is written (a body read only to be dropped).
    Discard,
    /// The data as it is: a `Length` body, or a close-delimited one.
    Identity,
    /// Each piece of data as a chunk; the last chunk and the trailers at the end.
    Chunked,
    /// The bytes exactly as they were read, framing included (a chunked body relayed as
    /// chunked: validated by the reader, not re-framed).
    Passthrough,
}

impl BodyWriter {
    /// The writer that puts a body read in `from` framing on the wire in `to` framing.
    /// `reframe`: a chunked body is re-chunked rather than passed through.
    pub fn between(from: Framing, to: Framing, reframe: bool) -> Self {
        match (from, to) {
            (_, Framing::None) => Self::Discard,
            (Framing::Chunked, Framing::Chunked) if !reframe => Self::Passthrough,
            (_, Framing::Chunked) => Self::Chunked,
            _ => Self::Identity,
        }
    }

    /// Writes one piece of body data (decoded) into `out`.
    pub fn write_data(self, data: &[u8], out: &mut Vec<u8>) {
        match self {
            Self::Discard => {}
            Self::Identity | Self::Passthrough => out.extend_from_slice(data),
            Self::Chunked => {
                if !data.is_empty() {
                    chunked::write_chunk_header(out, data.len());
                    out.extend_from_slice(data);
                    out.extend_from_slice(chunked::CRLF);
                }
            }
        }
    }

    /// Writes the end of the body into `out`: for a chunked one, the last chunk and the
    /// trailer fields (`Name: value\r\n` lines).
    pub fn write_end(self, trailers: &[u8], out: &mut Vec<u8>) {
        if self == Self::Chunked {
            out.extend_from_slice(b"0\r\n");
            out.extend_from_slice(trailers);
            out.extend_from_slice(chunked::CRLF);
        }
    }
}

/// What [`transcode`] made of some input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transcoded {
    /// Bytes of the input consumed.
    pub consumed: usize,
    /// The body is done (the last of it is in this output).
    pub done: bool,
    /// The output is `input[..consumed]` itself (nothing was copied into `out`).
    pub raw: bool,
}

/// Takes the body bytes at the front of `input` with `reader` and writes them with `writer`:
/// into `out`, or — when the wire bytes pass unchanged ([`Transcoded::raw`]) — nowhere, the
/// caller sending `input[..consumed]` itself.
pub fn transcode(
    reader: &mut BodyReader,
    writer: BodyWriter,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<Transcoded, BodyError> {
    // The data pieces of a `Length` or close-delimited body are the input bytes themselves.
    let identical = match writer {
        BodyWriter::Passthrough => true,
        BodyWriter::Identity => matches!(reader.framing(), Framing::Length(_) | Framing::Close),
        BodyWriter::Discard | BodyWriter::Chunked => false,
    };
    let consumed = match writer {
        BodyWriter::Discard => reader.read(input, |_| {})?,
        _ if identical => reader.read(input, |_| {})?,
        _ => reader.read(input, |d| writer.write_data(d, out))?,
    };
    let done = reader.is_done();
    if done {
        writer.write_end(reader.trailers(), out);
    }
    Ok(Transcoded {
        consumed,
        done,
        raw: identical && writer != BodyWriter::Discard,
    })
}

/// The last chunk of a chunked body without trailers, for a body that ends with its stream.
pub const LAST_CHUNK: &[u8] = chunked::LAST_CHUNK;

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` in pieces of `step` bytes, as a connection would, and returns the output.
    fn run(from: Framing, writer: BodyWriter, wire: &[u8], step: usize) -> (Vec<u8>, usize) {
        let mut reader = BodyReader::new(from);
        let (mut buf, mut sent, mut fed) = (Vec::new(), Vec::new(), 0);
        loop {
            let mut out = Vec::new();
            let t = transcode(&mut reader, writer, &buf, &mut out).unwrap();
            if t.raw {
                sent.extend_from_slice(&buf[..t.consumed]);
            } else {
                sent.extend_from_slice(&out);
            }
            buf.drain(..t.consumed);
            if t.done || fed == wire.len() {
                return (sent, buf.len());
            }
            let end = (fed + step).min(wire.len());
            buf.extend_from_slice(&wire[fed..end]);
            fed = end;
        }
    }

    #[test]
    fn a_length_body_passes_as_it_is_and_stops_at_its_end() {
        for step in [1, 3, 100] {
            let (sent, left) = run(
                Framing::Length(5),
                BodyWriter::Identity,
                b"helloGET /",
                step,
            );
            assert_eq!(sent, b"hello");
            assert!(left <= step, "the next request stays in the buffer");
        }
    }

    #[test]
    fn chunked_bodies_are_reframed_passed_through_or_decoded() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nT: 1\r\n\r\nNEXT";
        for step in [1, 2, 7, 64] {
            let (sent, _) = run(Framing::Chunked, BodyWriter::Passthrough, wire, step);
            assert_eq!(sent, &wire[..wire.len() - 4], "the wire bytes, validated");
            let (sent, _) = run(Framing::Chunked, BodyWriter::Identity, wire, step);
            assert_eq!(sent, b"hello world");
            let (sent, _) = run(Framing::Chunked, BodyWriter::Chunked, wire, step);
            let mut again = BodyReader::new(Framing::Chunked);
            let mut data = Vec::new();
            let n = again.read(&sent, |d| data.extend_from_slice(d)).unwrap();
            assert_eq!((n, data.as_slice()), (sent.len(), &b"hello world"[..]));
            assert!(again.is_done());
            assert_eq!(again.trailers(), b"T: 1\r\n", "trailers go on");
            let (sent, _) = run(Framing::Chunked, BodyWriter::Discard, wire, step);
            assert!(sent.is_empty());
        }
    }

    #[test]
    fn a_close_delimited_body_ends_with_its_stream_and_can_be_chunked() {
        let mut r = BodyReader::new(Framing::Close);
        let mut out = Vec::new();
        let t = transcode(&mut r, BodyWriter::Chunked, b"abc", &mut out).unwrap();
        assert_eq!((t.consumed, t.done, t.raw), (3, false, false));
        assert_eq!(out, b"3\r\nabc\r\n");
        r.end_of_stream().unwrap();
        assert!(r.is_done());
        let mut cut = BodyReader::new(Framing::Length(4));
        cut.read(b"ab", |_| {}).unwrap();
        assert!(cut.end_of_stream().is_err(), "a Length body cut short");
    }

    #[test]
    fn bad_chunked_input_is_an_error_and_sizes_are_counted() {
        let mut r = BodyReader::new(Framing::Chunked);
        assert!(r.read(b"zz\r\n", |_| {}).is_err());
        let mut r = BodyReader::new(Framing::Chunked);
        r.read(b"3\r\nabc\r\n", |_| {}).unwrap();
        assert_eq!(r.body_bytes(), 3);
        assert!(!r.is_done());
        assert!(BodyReader::new(Framing::None).is_done());
        assert!(BodyReader::new(Framing::Length(0)).is_done());
        assert!(!Framing::of_request(BodyKind::Length(0)).has_body());
        assert_eq!(
            BodyWriter::between(Framing::Close, Framing::Chunked, false),
            BodyWriter::Chunked
        );
        assert_eq!(
            BodyWriter::between(Framing::Chunked, Framing::Close, false),
            BodyWriter::Identity
        );
    }
}

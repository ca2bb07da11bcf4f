//! The chunked transfer coding (RFC 9112 §7.1): a streaming decoder and the encoder pieces.
//!
//! [`ChunkedDecoder`] is a push/pull state machine: the caller hands it whatever bytes it has,
//! and it reports how many it consumed and where the body data lies in them, without ever
//! buffering the body. It works for any split of the input, down to one byte at a time. The
//! syntax is checked strictly (bare LF, missing CRLF after data, size overflow and malformed
//! extensions are errors, since lenient chunk parsing is a request-smuggling vector), and the
//! chunk-size line and the trailer section are bounded.
//!
//! The encoder is just [`chunk_header`] / [`write_chunk_header`], the data, [`CRLF`], and
//! finally [`LAST_CHUNK`].

use std::ops::Range;

use crate::http::method::is_tchar;

/// Longest chunk-size line accepted (hex digits plus extensions, without the CRLF).
pub const MAX_SIZE_LINE: usize = 4096;

/// Largest trailer section accepted (the trailer field lines with their CRLFs).
pub const MAX_TRAILERS: usize = 8192;

/// The line ending that follows each chunk's data.
pub const CRLF: &[u8] = b"\r\n";

/// The last chunk with an empty trailer section: ends a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A malformed chunked body; the caller answers 400 (or drops the upstream connection).
pub type ChunkedError = crate::http::Malformed;

/// What one [`ChunkedDecoder::decode`] call produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes at `input[range]`; the range is non-empty and lies within the consumed bytes.
    Data(Range<usize>),
    /// Everything given was consumed (or nothing was given); call again with more input.
    NeedMore,
    /// The last chunk and the trailer section were consumed; bytes after the consumed count
    /// belong to the next message.
    Done,
}

/// Streaming decoder for one chunked body.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// The chunk size being read, then the data bytes left in the current chunk.
    size: u64,
    /// Bytes of the current chunk-size line so far (without CRLF).
    line_len: usize,
    body_bytes: u64,
    trailers: Vec<u8>,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a chunked body. Limits: [`MAX_SIZE_LINE`], [`MAX_TRAILERS`].
    pub fn new() -> Self {
        Self {
            state: State::SizeStart,
            size: 0,
            line_len: 0,
            body_bytes: 0,
            trailers: Vec::new(),
        }
    }

    /// Consumes from the front of `input`; returns the number of bytes consumed and what was
    /// decoded. Returns at most one [`Decoded::Data`] per call: call again with
    /// `&input[consumed..]`. With non-empty input and the body not done, at least one byte is
    /// consumed. After an error, every later call fails with the same error.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Decoded), ChunkedError> {
        let mut pos = 0;
        loop {
            match self.state {
                State::Done => return Ok((pos, Decoded::Done)),
                State::Failed(reason) => return Err(ChunkedError { reason }),
                State::Data => {
                    let avail = input.len() - pos;
                    if avail == 0 {
                        return Ok((pos, Decoded::NeedMore));
                    }
                    // `n` ≤ avail, so the cast back to usize is lossless.
                    let n = self.size.min(avail as u64) as usize;
                    self.size -= n as u64;
                    self.body_bytes = self.body_bytes.saturating_add(n as u64);
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok((pos + n, Decoded::Data(pos..pos + n)));
                }
                _ => {
                    let Some(&b) = input.get(pos) else {
                        return Ok((pos, Decoded::NeedMore));
                    };
                    pos += 1;
                    if let Err(reason) = self.step(b) {
                        self.state = State::Failed(reason);
                        return Err(ChunkedError { reason });
                    }
                }
            }
        }
    }

    /// Total body data decoded so far.
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes
    }

    /// The raw trailer field lines received (each with its CRLF), for forwarding; empty when
    /// there were none.
    pub fn trailers(&self) -> &[u8] {
        &self.trailers
    }

    /// Whether the last chunk and the trailer section have been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Advances the state machine over one byte outside chunk data.
    fn step(&mut self, b: u8) -> Result<(), &'static str> {
        if matches!(self.state, State::SizeStart | State::Size | State::Ext(_)) && b != b'\r' {
            self.line_len += 1;
            if self.line_len > MAX_SIZE_LINE {
                return Err("chunk-size line too long");
            }
        }
        self.state = match self.state {
            State::SizeStart => match crate::http::hex_digit(b) {
                Some(d) => {
                    self.size = u64::from(d);
                    State::Size
                }
                None => return Err(bad_byte(b, "invalid chunk size")),
            },
            State::Size => match crate::http::hex_digit(b) {
                Some(d) => {
                    self.size = self
                        .size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(u64::from(d)))
                        .ok_or("chunk size overflows")?;
                    State::Size
                }
                None => match b {
                    b'\r' => State::SizeLf,
                    b';' => State::Ext(Ext::BeforeName),
                    b' ' | b'\t' => State::Ext(Ext::Between { ws: true }),
                    _ => return Err(bad_byte(b, "invalid chunk size")),
                },
            },
            State::Ext(ext) => match ext.step(b)? {
                Some(next) => State::Ext(next),
                None => State::SizeLf,
            },
            State::SizeLf => match b {
                b'\n' if self.size == 0 => State::TrailerLineStart,
                b'\n' => State::Data,
                _ => return Err("chunk-size line not ended by CRLF"),
            },
            State::DataCr => match b {
                b'\r' => State::DataLf,
                _ => return Err("chunk data not followed by CRLF"),
            },
            State::DataLf => match b {
                b'\n' => {
                    self.size = 0;
                    self.line_len = 0;
                    State::SizeStart
                }
                _ => return Err("chunk data not followed by CRLF"),
            },
            State::TrailerLineStart => match b {
                b'\r' => State::EndLf,
                _ if is_tchar(b) => {
                    self.push_trailer(b)?;
                    State::TrailerName
                }
                b' ' | b'\t' => return Err("obsolete line folding in trailer section"),
                _ => return Err(bad_byte(b, "malformed trailer field")),
            },
            State::TrailerName => match b {
                b':' => {
                    self.push_trailer(b)?;
                    State::TrailerValue
                }
                _ if is_tchar(b) => {
                    self.push_trailer(b)?;
                    State::TrailerName
                }
                _ => return Err(bad_byte(b, "malformed trailer field name")),
            },
            State::TrailerValue => match b {
                b'\r' => {
                    self.push_trailer(b)?;
                    State::TrailerLf
                }
                b'\t' | b' '..=0x7e | 0x80..=0xff => {
                    self.push_trailer(b)?;
                    State::TrailerValue
                }
                _ => return Err(bad_byte(b, "invalid byte in trailer field value")),
            },
            State::TrailerLf => match b {
                b'\n' => {
                    self.push_trailer(b)?;
                    State::TrailerLineStart
                }
                _ => return Err("trailer field not ended by CRLF"),
            },
            State::EndLf => match b {
                b'\n' => State::Done,
                _ => return Err("trailer section not ended by CRLF"),
            },
            // Handled by `decode`, never stepped.
            State::Data | State::Done | State::Failed(_) => return Err("internal decoder state"),
        };
        Ok(())
    }

    fn push_trailer(&mut self, b: u8) -> Result<(), &'static str> {
        if self.trailers.len() >= MAX_TRAILERS {
            return Err("trailer section too large");
        }
        self.trailers.push(b);
        Ok(())
    }
}

/// The chunk header for a data chunk of `len` bytes: `"{len:x}\r\n"`. `len` must not be 0
/// (that is the last chunk: use [`LAST_CHUNK`]).
pub fn chunk_header(len: usize) -> String {
    format!("{len:x}\r\n")
}

/// Appends the chunk header for `len` bytes (see [`chunk_header`]) to `out`.
pub fn write_chunk_header(out: &mut Vec<u8>, len: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 2 * std::mem::size_of::<usize>()];
    let mut i = digits.len();
    let mut n = len;
    loop {
        i -= 1;
        digits[i] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(CRLF);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a chunk-size line.
    SizeStart,
    /// Within the hex digits of the chunk size.
    Size,
    /// Within the chunk extensions.
    Ext(Ext),
    /// CR of the chunk-size line seen.
    SizeLf,
    /// Within chunk data; `size` bytes left.
    Data,
    DataCr,
    DataLf,
    /// After the last chunk: at the start of a trailer line or of the final CRLF.
    TrailerLineStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    /// CR of the final CRLF seen.
    EndLf,
    Done,
    Failed(&'static str),
}

/// `chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`,
/// `chunk-ext-val = token / quoted-string`. Whitespace is only allowed where BWS is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ext {
    /// After the size or a complete extension; `ws`: whitespace seen (then CR is not allowed).
    Between {
        ws: bool,
    },
    /// After `;`.
    BeforeName,
    Name,
    /// Whitespace after a name.
    AfterName,
    /// After `=`.
    BeforeValue,
    TokenValue,
    Quoted,
    QuotedEscape,
}

impl Ext {
    /// The next extension state, or `None` when `b` is the CR ending the line.
    fn step(self, b: u8) -> Result<Option<Ext>, &'static str> {
        const BAD: &str = "malformed chunk extension";
        let ws = b == b' ' || b == b'\t';
        Ok(Some(match self {
            Ext::Between { ws: seen } => match b {
                _ if ws => Ext::Between { ws: true },
                b';' => Ext::BeforeName,
                b'\r' if !seen => return Ok(None),
                _ => return Err(bad_byte(b, BAD)),
            },
            Ext::BeforeName => match b {
                _ if ws => Ext::BeforeName,
                _ if is_tchar(b) => Ext::Name,
                _ => return Err(bad_byte(b, BAD)),
            },
            Ext::Name => match b {
                _ if is_tchar(b) => Ext::Name,
                _ if ws => Ext::AfterName,
                b'=' => Ext::BeforeValue,
                b';' => Ext::BeforeName,
                b'\r' => return Ok(None),
                _ => return Err(bad_byte(b, BAD)),
            },
            Ext::AfterName => match b {
                _ if ws => Ext::AfterName,
                b'=' => Ext::BeforeValue,
                b';' => Ext::BeforeName,
                _ => return Err(bad_byte(b, BAD)),
            },
            Ext::BeforeValue => match b {
                _ if ws => Ext::BeforeValue,
                b'"' => Ext::Quoted,
                _ if is_tchar(b) => Ext::TokenValue,
                _ => return Err(bad_byte(b, BAD)),
            },
            Ext::TokenValue => match b {
                _ if is_tchar(b) => Ext::TokenValue,
                _ if ws => Ext::Between { ws: true },
                b';' => Ext::BeforeName,
                b'\r' => return Ok(None),
                _ => return Err(bad_byte(b, BAD)),
            },
            Ext::Quoted => match b {
                b'"' => Ext::Between { ws: false },
                b'\\' => Ext::QuotedEscape,
                b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => Ext::Quoted,
                _ => return Err(bad_byte(b, BAD)),
            },
            Ext::QuotedEscape => match b {
                b'\t' | b' '..=0x7e | 0x80..=0xff => Ext::Quoted,
                _ => return Err(bad_byte(b, BAD)),
            },
        }))
    }
}

/// A bare LF gets its own message; anything else the context's.
fn bad_byte(b: u8, reason: &'static str) -> &'static str {
    if b == b'\n' {
        "bare LF in chunked body"
    } else {
        reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes; returns (body, trailers, bytes consumed).
    fn decode_in_steps(
        input: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, Vec<u8>, usize), ChunkedError> {
        let mut d = ChunkedDecoder::new();
        let mut body = Vec::new();
        let mut consumed = 0;
        // The caller's buffer: bytes received but not yet consumed.
        let mut fed = 0;
        while !d.is_done() {
            if fed < input.len() {
                fed = (fed + step).min(input.len());
            }
            let before = consumed;
            loop {
                let avail = &input[consumed..fed];
                let (n, out) = d.decode(avail)?;
                assert!(n <= avail.len());
                match out {
                    Decoded::Data(r) => {
                        assert!(!r.is_empty() && r.end <= n, "range {r:?} outside {n}");
                        body.extend_from_slice(&avail[r]);
                    }
                    Decoded::NeedMore => {
                        assert_eq!(n, avail.len(), "NeedMore must consume everything");
                        consumed += n;
                        break;
                    }
                    Decoded::Done => {
                        consumed += n;
                        break;
                    }
                }
                consumed += n;
            }
            if fed == input.len() && consumed == before && !d.is_done() {
                panic!("stuck: input exhausted without Done");
            }
        }
        Ok((body, d.trailers().to_vec(), consumed))
    }

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, Vec<u8>, usize), ChunkedError> {
        decode_in_steps(input, input.len().max(1))
    }

    fn err_of(input: &[u8]) -> &'static str {
        let mut d = ChunkedDecoder::new();
        let mut pos = 0;
        loop {
            match d.decode(&input[pos..]) {
                Err(e) => return e.reason,
                Ok((_, Decoded::Done)) => panic!("unexpected success on {input:?}"),
                Ok((n, Decoded::NeedMore)) if pos + n == input.len() => {
                    panic!("incomplete, no error on {input:?}")
                }
                Ok((n, _)) => pos += n,
            }
        }
    }

    const BODY: &[u8] = b"5\r\nhello\r\n1;name=value\r\n \r\n00b;a;b=\"q\\\"x\" ; c\r\nhello world\r\n0\r\nX-Sum: abc\r\nY:\r\n\r\nNEXT";

    #[test]
    fn whole_input() {
        let (body, trailers, n) = decode_all(BODY).unwrap();
        assert_eq!(body, b"hello hello world");
        assert_eq!(trailers, b"X-Sum: abc\r\nY:\r\n");
        assert_eq!(&BODY[n..], b"NEXT");
    }

    #[test]
    fn byte_by_byte_matches_whole() {
        let whole = decode_all(BODY).unwrap();
        for step in [1, 2, 3, 5, 7, 13] {
            assert_eq!(decode_in_steps(BODY, step).unwrap(), whole, "step {step}");
        }
    }

    #[test]
    fn one_byte_calls_make_progress() {
        let mut d = ChunkedDecoder::new();
        let mut body = Vec::new();
        let end = BODY.len() - 4;
        for i in 0..end {
            let (n, out) = d.decode(&BODY[i..=i]).unwrap();
            assert_eq!(n, 1, "byte {i} not consumed");
            match out {
                Decoded::Data(r) => body.extend_from_slice(&BODY[i..=i][r]),
                Decoded::NeedMore => assert!(i + 1 < end),
                Decoded::Done => assert_eq!(i + 1, end),
            }
        }
        assert!(d.is_done());
        assert_eq!(body, b"hello hello world");
        assert_eq!(d.body_bytes(), 17);
        assert_eq!(d.decode(b"NEXT").unwrap(), (0, Decoded::Done));
    }

    #[test]
    fn data_range_and_need_more() {
        let mut d = ChunkedDecoder::new();
        assert_eq!(d.decode(b"").unwrap(), (0, Decoded::NeedMore));
        assert_eq!(d.decode(b"a\r\n012").unwrap(), (6, Decoded::Data(3..6)));
        assert_eq!(d.body_bytes(), 3);
        assert_eq!(d.decode(b"").unwrap(), (0, Decoded::NeedMore));
        assert_eq!(d.decode(b"3456789\r").unwrap(), (7, Decoded::Data(0..7)));
        assert_eq!(d.decode(b"\r").unwrap(), (1, Decoded::NeedMore));
        assert_eq!(d.decode(b"\n0\r").unwrap(), (3, Decoded::NeedMore));
        assert!(!d.is_done());
        assert_eq!(d.decode(b"\n\r\nrest").unwrap(), (3, Decoded::Done));
        assert!(d.is_done());
        assert_eq!(d.body_bytes(), 10);
        assert_eq!(d.trailers(), b"");
    }

    #[test]
    fn last_chunk_right_away() {
        let mut d = ChunkedDecoder::new();
        assert_eq!(d.decode(LAST_CHUNK).unwrap(), (5, Decoded::Done));
        assert_eq!(d.body_bytes(), 0);
        let mut d = ChunkedDecoder::new();
        assert_eq!(
            d.decode(b"0\r\n\r\nGET / HTTP/1.1\r\n").unwrap(),
            (5, Decoded::Done)
        );
        assert_eq!(decode_all(b"000;x=1\r\n\r\n").unwrap().0, b"");
    }

    #[test]
    fn sizes() {
        assert_eq!(
            decode_all(b"A\r\n0123456789\r\n0\r\n\r\n").unwrap().0,
            b"0123456789"
        );
        assert_eq!(decode_all(b"0001\r\nx\r\n0\r\n\r\n").unwrap().0, b"x");
        // Leading zeros do not count towards overflow.
        assert_eq!(
            decode_all(b"000000000000000000000001\r\nx\r\n0\r\n\r\n")
                .unwrap()
                .0,
            b"x"
        );
        let mut d = ChunkedDecoder::new();
        assert_eq!(
            d.decode(b"ffffffffffffffff\r\nab").unwrap(),
            (20, Decoded::Data(18..20))
        );
        assert_eq!(err_of(b"ffffffffffffffffff\r\n"), "chunk size overflows");
        assert_eq!(err_of(b"10000000000000000\r\n"), "chunk size overflows");
        assert_eq!(err_of(b"-1\r\n"), "invalid chunk size");
        assert_eq!(err_of(b"+1\r\nx\r\n"), "invalid chunk size");
        assert_eq!(err_of(b"0x1\r\nx\r\n"), "invalid chunk size");
        assert_eq!(err_of(b"g\r\n"), "invalid chunk size");
        assert_eq!(err_of(b"\r\n"), "invalid chunk size");
        assert_eq!(err_of(b" 1\r\nx\r\n"), "invalid chunk size");
        assert_eq!(err_of(b"1 \r\nx\r\n"), "malformed chunk extension");
        assert_eq!(err_of(b"1\r\r\nx\r\n"), "chunk-size line not ended by CRLF");
    }

    #[test]
    fn bare_lf_is_rejected() {
        assert_eq!(err_of(b"1\nx\r\n0\r\n\r\n"), "bare LF in chunked body");
        assert_eq!(err_of(b"1;a\nx\r\n"), "bare LF in chunked body");
        assert_eq!(
            err_of(b"1\r\nx\n0\r\n\r\n"),
            "chunk data not followed by CRLF"
        );
        assert_eq!(err_of(b"1\r\nx\r\n0\n\r\n"), "bare LF in chunked body");
        assert_eq!(err_of(b"0\r\n\n"), "bare LF in chunked body");
        assert_eq!(err_of(b"0\r\nA: b\n\r\n"), "bare LF in chunked body");
    }

    #[test]
    fn data_must_be_followed_by_crlf() {
        assert_eq!(
            err_of(b"3\r\nabcd\r\n0\r\n\r\n"),
            "chunk data not followed by CRLF"
        );
        assert_eq!(
            err_of(b"3\r\nabc\rx0\r\n\r\n"),
            "chunk data not followed by CRLF"
        );
        assert_eq!(
            err_of(b"3\r\nabc0\r\n\r\n"),
            "chunk data not followed by CRLF"
        );
        assert_eq!(
            err_of(b"3\r\nab\r\n0\r\n\r\n\r\n"),
            "chunk data not followed by CRLF"
        );
    }

    #[test]
    fn extensions() {
        for ok in [
            &b"1;a\r\nx\r\n0\r\n\r\n"[..],
            b"1;a=b\r\nx\r\n0\r\n\r\n",
            b"1 ; a = b ;c\r\nx\r\n0\r\n\r\n",
            b"1\t;\ta\t=\t\"b c;\\\"d\"\r\nx\r\n0\r\n\r\n",
            b"1;a=\"\"\r\nx\r\n0\r\n\r\n",
            b"1;a=b;c=\"d\";e\r\nx\r\n0;last\r\n\r\n",
        ] {
            assert_eq!(
                decode_all(ok).unwrap().0,
                b"x",
                "{:?}",
                String::from_utf8_lossy(ok)
            );
        }
        for bad in [
            &b"1;\r\nx\r\n"[..],
            b"1;=b\r\nx\r\n",
            b"1;a=\r\nx\r\n",
            b"1;a b\r\nx\r\n",
            b"1;a=b c\r\nx\r\n",
            b"1;a=\"b\r\nx\r\n",
            b"1;a=\"b\"c\r\nx\r\n",
            b"1;a=\"\x01\"\r\nx\r\n",
            b"1;a=b \r\nx\r\n",
            b"1;a \r\nx\r\n",
            b"1;a\x00\r\nx\r\n",
            b"1;a=(b)\r\nx\r\n",
        ] {
            assert_eq!(
                err_of(bad),
                "malformed chunk extension",
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn size_line_limit() {
        let mut ok = b"1;a=".to_vec();
        ok.resize(MAX_SIZE_LINE, b'b');
        ok.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_eq!(decode_all(&ok).unwrap().0, b"x");
        let mut long = b"1;a=".to_vec();
        long.resize(MAX_SIZE_LINE + 1, b'b');
        long.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_eq!(err_of(&long), "chunk-size line too long");
        // Also without a line end in sight.
        let mut d = ChunkedDecoder::new();
        let endless = vec![b'0'; MAX_SIZE_LINE + 10];
        assert_eq!(
            d.decode(&endless).unwrap_err().reason,
            "chunk-size line too long"
        );
        // The limit is per line.
        let mut many = Vec::new();
        for _ in 0..4 {
            many.extend_from_slice(b"1;a=");
            many.resize(many.len() + MAX_SIZE_LINE - 4, b'b');
            many.extend_from_slice(b"\r\nx\r\n");
        }
        many.extend_from_slice(LAST_CHUNK);
        assert_eq!(decode_all(&many).unwrap().0, b"xxxx");
    }

    #[test]
    fn trailers() {
        let (body, trailers, _) =
            decode_all(b"2\r\nab\r\n0\r\nExpires: never\r\nX-Y:\t1 2\t\r\n\r\n").unwrap();
        assert_eq!(body, b"ab");
        assert_eq!(trailers, b"Expires: never\r\nX-Y:\t1 2\t\r\n");
        assert_eq!(
            err_of(b"0\r\nA: b\r\n c\r\n\r\n"),
            "obsolete line folding in trailer section"
        );
        assert_eq!(err_of(b"0\r\nA b\r\n\r\n"), "malformed trailer field name");
        assert_eq!(err_of(b"0\r\n: b\r\n\r\n"), "malformed trailer field");
        assert_eq!(
            err_of(b"0\r\nA: b\x00\r\n\r\n"),
            "invalid byte in trailer field value"
        );
        assert_eq!(
            err_of(b"0\r\nA: b\rc\r\n\r\n"),
            "trailer field not ended by CRLF"
        );
        assert_eq!(err_of(b"0\r\n\rx"), "trailer section not ended by CRLF");
    }

    #[test]
    fn trailer_limit() {
        let mut ok = b"0\r\nX: ".to_vec();
        ok.resize(3 + MAX_TRAILERS - 2, b'v');
        ok.extend_from_slice(b"\r\n\r\n");
        let (_, trailers, _) = decode_all(&ok).unwrap();
        assert_eq!(trailers.len(), MAX_TRAILERS);
        let mut long = b"0\r\nX: ".to_vec();
        long.resize(3 + MAX_TRAILERS - 1, b'v');
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(err_of(&long), "trailer section too large");
        // Many small trailer lines count together.
        let mut many = b"0\r\n".to_vec();
        for _ in 0..=MAX_TRAILERS / 6 {
            many.extend_from_slice(b"A: b\r\n");
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(err_of(&many), "trailer section too large");
    }

    #[test]
    fn errors_are_sticky() {
        let mut d = ChunkedDecoder::new();
        assert!(d.decode(b"z").is_err());
        assert_eq!(
            d.decode(b"0\r\n\r\n").unwrap_err().reason,
            "invalid chunk size"
        );
        assert!(!d.is_done());
    }

    #[test]
    fn encoder_round_trip() {
        assert_eq!(chunk_header(1), "1\r\n");
        assert_eq!(chunk_header(255), "ff\r\n");
        assert_eq!(chunk_header(4096), "1000\r\n");
        let mut v = Vec::new();
        write_chunk_header(&mut v, 0xabc);
        write_chunk_header(&mut v, usize::MAX);
        assert_eq!(v, format!("abc\r\n{:x}\r\n", usize::MAX).as_bytes());

        let chunks: [&[u8]; 4] = [b"hello", b" ", &[0u8, 13, 10, 255], &[b'z'; 300]];
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            if i % 2 == 0 {
                wire.extend_from_slice(chunk_header(c.len()).as_bytes());
            } else {
                write_chunk_header(&mut wire, c.len());
            }
            wire.extend_from_slice(c);
            wire.extend_from_slice(CRLF);
            expected.extend_from_slice(c);
        }
        wire.extend_from_slice(LAST_CHUNK);
        let (body, trailers, n) = decode_all(&wire).unwrap();
        assert_eq!(body, expected);
        assert!(trailers.is_empty());
        assert_eq!(n, wire.len());
        assert_eq!(decode_in_steps(&wire, 1).unwrap().0, expected);
    }

    #[test]
    fn never_panics_on_odd_input() {
        // A crude exhaustive sweep over short inputs from a small alphabet.
        let alphabet = b"0a;=\" \r\n\\x:";
        let mut buf = Vec::new();
        for len in 0..=5u32 {
            for mut k in 0..alphabet.len().pow(len) {
                buf.clear();
                for _ in 0..len {
                    buf.push(alphabet[k % alphabet.len()]);
                    k /= alphabet.len();
                }
                let mut d = ChunkedDecoder::new();
                let mut pos = 0;
                while let Ok((n, out)) = d.decode(&buf[pos..]) {
                    assert!(pos + n <= buf.len());
                    pos += n;
                    match out {
                        Decoded::Data(r) => assert!(!r.is_empty() && r.end <= n),
                        Decoded::NeedMore => {
                            assert_eq!(pos, buf.len());
                            break;
                        }
                        Decoded::Done => break,
                    }
                }
            }
        }
    }

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// Decodes with random split points; same result as [`decode_all`] for any split.
    fn decode_random_splits(
        input: &[u8],
        rng: &mut u64,
    ) -> Result<(Vec<u8>, Vec<u8>, usize), ChunkedError> {
        let mut d = ChunkedDecoder::new();
        let mut body = Vec::new();
        let mut consumed = 0;
        let mut fed = 0;
        loop {
            let avail = &input[consumed..fed];
            let (n, out) = d.decode(avail)?;
            match out {
                Decoded::Data(r) => body.extend_from_slice(&avail[r]),
                Decoded::Done => return Ok((body, d.trailers().to_vec(), consumed + n)),
                Decoded::NeedMore => {
                    assert_eq!(n, avail.len());
                    if fed == input.len() {
                        return Err(ChunkedError {
                            reason: "incomplete",
                        });
                    }
                    fed = (fed + 1 + (xorshift(rng) % 9) as usize).min(input.len());
                }
            }
            consumed += n;
        }
    }

    #[test]
    fn random_bodies_and_splits_agree() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let noise = b"0123456789abcdefABCDEF;= \t\"\\\r\nxX:\x00";
        for _ in 0..3_000 {
            // A valid body with random chunk sizes, extensions and trailers.
            let mut wire = Vec::new();
            let mut expected = Vec::new();
            for _ in 0..(xorshift(&mut rng) % 5) {
                let len = 1 + (xorshift(&mut rng) % 40) as usize;
                let data: Vec<u8> = (0..len).map(|_| xorshift(&mut rng) as u8).collect();
                if xorshift(&mut rng).is_multiple_of(3) {
                    wire.extend_from_slice(format!("{len:04X};ext=\"v\"\r\n").as_bytes());
                } else {
                    write_chunk_header(&mut wire, len);
                }
                wire.extend_from_slice(&data);
                wire.extend_from_slice(CRLF);
                expected.extend_from_slice(&data);
            }
            wire.extend_from_slice(b"0\r\n");
            if xorshift(&mut rng).is_multiple_of(2) {
                wire.extend_from_slice(b"T: v\r\n");
            }
            wire.extend_from_slice(b"\r\n");
            let whole = decode_all(&wire).unwrap();
            assert_eq!(whole.0, expected);
            assert_eq!(whole.2, wire.len());
            assert_eq!(decode_random_splits(&wire, &mut rng).unwrap(), whole);

            // Mutated: any split gives the same outcome as the whole input.
            let mut bad = wire.clone();
            for _ in 0..=(xorshift(&mut rng) % 3) {
                let r = xorshift(&mut rng) as usize;
                let at = r % bad.len();
                bad[at] = noise[(r >> 16) % noise.len()];
            }
            let mut split_rng = rng;
            let a = decode_random_splits(&bad, &mut split_rng);
            let mut other_rng = xorshift(&mut rng);
            let b = decode_random_splits(&bad, &mut other_rng);
            assert_eq!(a, b, "{:?}", String::from_utf8_lossy(&bad));
        }
    }
}

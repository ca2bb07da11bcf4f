//! Response heads as backends build them: a status and header fields — `Date` and `Server`
//! for the daemon's own answers, the upstream's fields for a relayed one — never the framing
//! (`Content-Length`, `Transfer-Encoding`) or `Connection`, which the protocol writing the
//! response adds ([`crate::server::h1`]).
//!
//! The fields are kept in the order they are added, in one buffer that starts with an HTTP/1.1
//! status line: the form HTTP/1 sends without a copy; [`ResponseHead::fields`] reads them back
//! as pairs for any other writer.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// The `Server` header value.
pub const SERVER: &str = concat!("zerocopy-server/", env!("CARGO_PKG_VERSION"));

/// A response head being built: the status, then header fields in order.
pub struct ResponseHead {
    status: u16,
    /// The status line, then one `Name: value\r\n` line per field.
    buf: Vec<u8>,
    /// A filter of the field names the head may hold ([`name_bit`] of each; a relayed head's
    /// from its upstream's parse, or every bit when they are not known): a rule that removes
    /// fields skips the scan of a head that cannot hold them.
    names: u64,
}

/// A field name's bit in a head's name filter: from its length and first letter
/// (case-insensitive).
pub fn name_bit(name: &[u8]) -> u64 {
    let first = name.first().map_or(0, u8::to_ascii_lowercase);
    1 << ((name.len() as u64 * 7 + u64::from(first)) & 63)
}

/// A finished response head (a buffer that may also take a small body). Its memory goes back
/// to this thread's pool when it is dropped, so a worker does not allocate one per response.
pub struct HeadBuf(Vec<u8>);

/// Head buffers kept per thread, and the largest kept.
const POOL_KEEP: usize = 64;
const POOL_MAX_CAPACITY: usize = 32 * 1024;

thread_local! {
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

impl std::ops::Deref for HeadBuf {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl std::ops::DerefMut for HeadBuf {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl Drop for HeadBuf {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.0);
        if buf.capacity() == 0 || buf.capacity() > POOL_MAX_CAPACITY {
            return;
        }
        buf.clear();
        // `try_with`: a head dropped while the thread's locals are torn down is just freed.
        let _ = POOL.try_with(|p| {
            if let Ok(mut p) = p.try_borrow_mut() {
                if p.len() < POOL_KEEP {
                    p.push(buf);
                }
            }
        });
    }
}

impl HeadBuf {
    /// The bytes, out of the pool's reach.
    pub fn into_vec(mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

/// Appends `n` in decimal.
pub fn push_decimal(buf: &mut Vec<u8>, n: u64) {
    buf.extend_from_slice(decimal(n, &mut [0; 20]));
}

/// `n` in decimal ASCII, written into the end of `digits` (for writers that cannot use `fmt` on
/// the data path).
pub fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &digits[at..]
}

impl ResponseHead {
    /// Starts `HTTP/1.1 <status> <reason>` with `Date` and `Server`.
    pub fn new(status: u16) -> Self {
        let mut buf = POOL
            .with(|p| p.try_borrow_mut().ok().and_then(|mut p| p.pop()))
            .unwrap_or_else(|| Vec::with_capacity(256));
        buf.extend_from_slice(b"HTTP/1.1 ");
        push_decimal(&mut buf, u64::from(status % 1000));
        buf.push(b' ');
        buf.extend_from_slice(reason(status).as_bytes());
        buf.extend_from_slice(b"\r\nServer: ");
        buf.extend_from_slice(SERVER.as_bytes());
        buf.extend_from_slice(b"\r\nDate: ");
        with_date(|d| buf.extend_from_slice(d.as_bytes()));
        buf.extend_from_slice(b"\r\n");
        let names = name_bit(b"Server") | name_bit(b"Date");
        Self { status, buf, names }
    }

    /// The head of a response relayed from an upstream: its status and reason phrase, and its
    /// end-to-end fields (`Name: value\r\n` lines) — no `Date` or `Server` of the daemon's.
    /// `names`: the [`name_bit`]s of the lines' names (`u64::MAX` when unknown).
    pub fn relayed(status: u16, reason: &str, lines: &[u8], names: u64) -> Self {
        let mut buf = POOL
            .with(|p| p.try_borrow_mut().ok().and_then(|mut p| p.pop()))
            .unwrap_or_else(|| Vec::with_capacity(64 + lines.len()));
        buf.extend_from_slice(b"HTTP/1.1 ");
        // Three digits: a parsed status has no other form.
        buf.extend_from_slice(&[
            b'0' + (status / 100 % 10) as u8,
            b'0' + (status / 10 % 10) as u8,
            b'0' + (status % 10) as u8,
            b' ',
        ]);
        buf.extend_from_slice(reason.as_bytes());
        buf.extend_from_slice(b"\r\n");
        buf.extend_from_slice(lines);
        Self { status, buf, names }
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    /// The header fields, in order, as name and value.
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut rest = &self.buf[self.fields_start()..];
        std::iter::from_fn(move || loop {
            if rest.is_empty() {
                return None;
            }
            let (line, next) = match memchr::memchr(b'\n', rest) {
                Some(at) => (&rest[..at], &rest[at + 1..]),
                None => (rest, &rest[rest.len()..]),
            };
            rest = next;
            let Some(line) = line.strip_suffix(b"\r") else {
                continue;
            };
            let Some(colon) = memchr::memchr(b':', line) else {
                continue;
            };
            return Some((&line[..colon], line[colon + 1..].trim_ascii_start()));
        })
    }

    /// The value of the first field named `name` (case-insensitive).
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Removes, in place, every field whose name `drop` is true for.
    pub fn remove_fields(&mut self, mut drop: impl FnMut(&[u8]) -> bool) {
        let len = self.buf.len();
        let (mut read, mut write) = (self.fields_start(), self.fields_start());
        while read < len {
            // The name, up to its colon: a short token, scanned byte by byte (a vector search
            // costs more to set up than it saves here); then the value's end.
            let mut colon = read;
            while colon < len && !matches!(self.buf[colon], b':' | b'\n') {
                colon += 1;
            }
            let end = memchr::memchr(b'\n', &self.buf[colon..]).map_or(len, |at| colon + at + 1);
            let dropped = self.buf.get(colon) == Some(&b':') && drop(&self.buf[read..colon]);
            if !dropped {
                if write != read {
                    self.buf.copy_within(read..end, write);
                }
                write += end - read;
            }
            read = end;
        }
        self.buf.truncate(write);
    }

    /// The size of the header fields as HTTP/1 writes them (`Name: value\r\n` each).
    pub fn fields_len(&self) -> usize {
        self.buf.len() - self.fields_start()
    }

    /// Where the fields begin: past the status line.
    fn fields_start(&self) -> usize {
        memchr::memchr(b'\n', &self.buf).map_or(self.buf.len(), |at| at + 1)
    }

    pub fn header(&mut self, name: &str, value: &str) -> &mut Self {
        self.header_bytes(name, value.as_bytes())
    }

    /// Whether the head may hold a field whose [`name_bit`] is in `mask`.
    pub fn may_hold(&self, mask: u64) -> bool {
        self.names & mask != 0
    }

    pub fn header_bytes(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.names |= name_bit(name.as_bytes());
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b": ");
        self.buf.extend_from_slice(value);
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// Appends a field line in two parts: `start` (the name and `: `) and `rest` (the value
    /// and its CRLF); `bit` is the name's [`name_bit`].
    pub fn line(&mut self, bit: u64, start: &[u8], rest: &[u8]) -> &mut Self {
        self.names |= bit;
        self.buf.reserve(start.len() + rest.len());
        self.buf.extend_from_slice(start);
        self.buf.extend_from_slice(rest);
        self
    }

    pub fn content_length(&mut self, len: u64) -> &mut Self {
        self.header_with("Content-Length", |b| push_decimal(b, len))
    }

    /// A header whose value `value` writes straight into the head.
    pub fn header_with(&mut self, name: &str, value: impl FnOnce(&mut Vec<u8>)) -> &mut Self {
        self.names |= name_bit(name.as_bytes());
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b": ");
        value(&mut self.buf);
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// Appends header lines already formatted, each ending in CRLF.
    pub fn lines(&mut self, lines: &[u8]) -> &mut Self {
        self.names = u64::MAX;
        self.buf.extend_from_slice(lines);
        self
    }

    /// Appends a file's formatted `Last-Modified` and `ETag` lines.
    pub fn validator_lines(&mut self, lines: &[u8]) -> &mut Self {
        self.names |= name_bit(b"Last-Modified") | name_bit(b"ETag");
        self.buf.extend_from_slice(lines);
        self
    }

    /// Ends the head as HTTP/1 bytes (after the framing and `Connection` lines the writer
    /// added with [`Self::header`]) and returns them.
    pub fn finish(mut self) -> HeadBuf {
        self.buf.extend_from_slice(b"\r\n");
        HeadBuf(self.buf)
    }
}

/// The reason phrase of a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        421 => "Misdirected Request",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

thread_local! {
    /// The formatted `Date` of the current second, per worker thread.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Calls `f` with the current time as an HTTP date, formatted at most once a second per thread.
pub fn with_date<R>(f: impl FnOnce(&str) -> R) -> R {
    let now = SystemTime::now();
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            *cached = (secs, httpdate::fmt_http_date(now));
        }
        f(&cached.1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_has_status_date_server_and_headers() {
        let mut h = ResponseHead::new(404);
        h.header("Content-Type", "text/plain").content_length(9);
        let s = String::from_utf8(h.finish().into_vec()).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\nServer: zerocopy-server/"));
        assert!(s.contains("\r\nDate: "));
        assert!(s.ends_with("Content-Type: text/plain\r\nContent-Length: 9\r\n\r\n"));
        let date = s
            .split("Date: ")
            .nth(1)
            .unwrap()
            .split("\r\n")
            .next()
            .unwrap();
        assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
    }

    #[test]
    fn fields_read_back_in_order() {
        let mut h = ResponseHead::new(200);
        h.header("X-A", "1")
            .header("X-Empty", "")
            .header("X-B", "two words");
        let fields: Vec<_> = h.fields().collect();
        // Server and Date come first (the head's own), then the ones set.
        assert_eq!(fields.len(), 5, "{fields:?}");
        assert_eq!(fields[0].0, b"Server");
        assert_eq!(fields[1].0, b"Date");
        assert_eq!(
            &fields[2..],
            &[
                (&b"X-A"[..], &b"1"[..]),
                (b"X-Empty", b""),
                (b"X-B", b"two words")
            ]
        );
        let written: usize = fields.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
        assert_eq!(h.fields_len(), written);
        assert_eq!(ResponseHead::new(204).fields().count(), 2);
    }

    #[test]
    fn fields_are_found_and_removed_in_place() {
        let mut h = ResponseHead::relayed(
            200,
            "OK",
            b"Server: up\r\nX-A: 1\r\nx-a: 2\r\nVary: Origin\r\nETag: \"e\"\r\n",
            u64::MAX,
        );
        assert_eq!(h.field("x-A"), Some(&b"1"[..]));
        assert_eq!(h.field("etag"), Some(&b"\"e\""[..]));
        assert_eq!(h.field("nope"), None);
        h.remove_fields(|n| n.eq_ignore_ascii_case(b"x-a") || n.eq_ignore_ascii_case(b"server"));
        h.header("X-B", "3");
        let s = String::from_utf8(h.finish().into_vec()).unwrap();
        assert_eq!(
            s,
            "HTTP/1.1 200 OK\r\nVary: Origin\r\nETag: \"e\"\r\nX-B: 3\r\n\r\n"
        );
    }

    #[test]
    fn the_name_filter_knows_a_heads_own_fields() {
        let mut h = ResponseHead::new(200);
        h.header("Content-Type", "text/plain")
            .validator_lines(b"Last-Modified: x\r\nETag: \"1\"\r\n");
        for name in ["server", "DATE", "content-type", "etag", "Last-Modified"] {
            assert!(h.may_hold(name_bit(name.as_bytes())), "{name}");
        }
        assert!(!h.may_hold(name_bit(b"X-Frame-Options")));
        assert!(ResponseHead::relayed(200, "OK", b"", u64::MAX).may_hold(name_bit(b"x")));
        h.lines(b"X-Frame-Options: DENY\r\n");
        assert!(h.may_hold(name_bit(b"X-Frame-Options")));
    }

    #[test]
    fn head_buffers_come_back_to_the_pool() {
        let first = ResponseHead::new(200).finish();
        let ptr = first.as_ptr();
        drop(first);
        let mut h = ResponseHead::new(204);
        h.content_length(0);
        let again = h.finish();
        assert_eq!(again.as_ptr(), ptr, "the same buffer again");
        assert!(again.starts_with(b"HTTP/1.1 204 No Content\r\n"));
        let mut v = Vec::new();
        push_decimal(&mut v, 0);
        v.push(b' ');
        push_decimal(&mut v, 18_446_744_073_709_551_615);
        assert_eq!(v, b"0 18446744073709551615");
    }
}

//! Response heads: the status line, `Date` and `Server`, and the caller's headers, written into
//! one buffer.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// The `Server` header value.
pub const SERVER: &str = concat!("zerocopy-server/", env!("CARGO_PKG_VERSION"));

/// Builds a response head. Headers are appended in order; [`ResponseHead::finish`] adds the
/// blank line.
pub struct ResponseHead {
    buf: Vec<u8>,
}

impl ResponseHead {
    /// Starts `HTTP/1.1 <status> <reason>` with `Date` and `Server`.
    pub fn new(status: u16) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(b"HTTP/1.1 ");
        buf.extend_from_slice(itoa3(status).as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(reason(status).as_bytes());
        buf.extend_from_slice(b"\r\nServer: ");
        buf.extend_from_slice(SERVER.as_bytes());
        buf.extend_from_slice(b"\r\nDate: ");
        with_date(|d| buf.extend_from_slice(d.as_bytes()));
        buf.extend_from_slice(b"\r\n");
        Self { buf }
    }

    pub fn header(&mut self, name: &str, value: &str) -> &mut Self {
        self.header_bytes(name, value.as_bytes())
    }

    pub fn header_bytes(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b": ");
        self.buf.extend_from_slice(value);
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    pub fn content_length(&mut self, len: u64) -> &mut Self {
        let mut s = String::with_capacity(20);
        let _ = write!(s, "{len}");
        self.header("Content-Length", &s)
    }

    /// Ends the head and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(b"\r\n");
        self.buf
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
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
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

fn itoa3(status: u16) -> String {
    let mut s = String::with_capacity(3);
    let _ = write!(s, "{status:03}");
    s
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
        let s = String::from_utf8(h.finish()).unwrap();
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
}

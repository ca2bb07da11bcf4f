//! HTTP/1 request-head parsing with limits (RFC 9112 §2–§7, RFC 9110 §7.2).
//!
//! [`parse`] takes the bytes received so far on a connection and either asks for more
//! (`Ok(None)`), returns the parsed [`RequestHead`] with the number of bytes it consumed, or
//! fails with the status code to answer with ([`HeadError`]). Tokenising is done by `httparse`;
//! on top of it this module enforces the operator's size limits (on partial input too, so a
//! slow client cannot make us buffer without bound), rejects what `httparse` tolerates but a
//! proxy must not (bare LF line endings, more than a few leading empty lines), checks the
//! request-target form, the `Host` header and the message framing (`Content-Length` /
//! `Transfer-Encoding`, the usual request-smuggling vectors), and works out keep-alive.
//!
//! Every input comes from the network: nothing here panics, and allocations are bounded by
//! `max_size`.

use std::net::Ipv6Addr;

use crate::http::method::is_tchar;
use crate::http::request::{BodyKind, HeadError, Header, RequestHead};
use crate::http::{Method, Version};

/// Most header fields accepted in one request head; more is answered with 431.
pub const MAX_HEADERS: usize = 100;

/// Most empty lines (CRLF) skipped before the request line (RFC 9112 §2.2); more is a 400.
pub const MAX_LEADING_EMPTY_LINES: usize = 4;

/// Parses a request head from the front of `buf`.
///
/// `Ok(None)`: need more bytes. `Ok(Some((head, n)))`: head parsed, `n` bytes consumed
/// (including skipped leading empty lines and the final CRLFCRLF); the body or the next
/// request starts at `buf[n..]`.
///
/// `max_size` limits the request line (without its CRLF) and, separately, the header section
/// (everything after the request line up to and including the blank line): 414 and 431, also
/// raised on partial input as soon as the limit is certainly exceeded.
pub fn parse(buf: &[u8], max_size: usize) -> Result<Option<(RequestHead, usize)>, HeadError> {
    // Leading empty lines.
    let mut skip = 0;
    let mut empty_lines = 0;
    loop {
        match buf.get(skip) {
            None => return Ok(None),
            Some(b'\r') => match buf.get(skip + 1) {
                None => return Ok(None),
                Some(b'\n') => {
                    empty_lines += 1;
                    if empty_lines > MAX_LEADING_EMPTY_LINES {
                        return Err(err(400, "too many empty lines before the request line"));
                    }
                    skip += 2;
                }
                Some(_) => return Err(err(400, "malformed request line")),
            },
            Some(b'\n') => return Err(BARE_LF),
            Some(_) => break,
        }
    }
    let rest = buf.get(skip..).unwrap_or_default();

    // The request line: its LF must come within max_size + 2 bytes.
    let line_window = &rest[..rest.len().min(max_size.saturating_add(2))];
    let Some(lf) = line_window.iter().position(|&b| b == b'\n') else {
        // Partial request line: report early syntax errors, then the length limit.
        let line = line_window.strip_suffix(b"\r").unwrap_or(line_window);
        match httparse_partial(line_window) {
            Err(httparse::Error::Version) => version_error(line, false)?,
            Err(e) => return Err(map_httparse(e)),
            Ok(()) => {}
        }
        if line.len() > max_size {
            return Err(err(414, "request line too long"));
        }
        return Ok(None);
    };
    if lf == 0 || rest[lf - 1] != b'\r' {
        return Err(BARE_LF);
    }
    let line_end = lf + 1;
    let request_line = &rest[..lf - 1];

    // The header section, searched for the blank line within max_size bytes.
    let section_limit = line_end.saturating_add(max_size).min(rest.len());
    let search_from = line_end - 2; // the request line's CRLF may start the CRLFCRLF
    let head_end = rest[search_from..section_limit]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| search_from + p + 4);
    let scan_end = head_end.unwrap_or(section_limit);
    // Every LF must be preceded by CR (httparse accepts bare LF line endings).
    if rest[line_end - 1..scan_end]
        .windows(2)
        .any(|w| w[1] == b'\n' && w[0] != b'\r')
    {
        return Err(BARE_LF);
    }

    let Some(head_end) = head_end else {
        match httparse_partial(&rest[..section_limit]) {
            Err(httparse::Error::Version) => version_error(request_line, true)?,
            Err(e) => return Err(map_httparse(e)),
            Ok(()) => {}
        }
        if section_limit - line_end >= max_size {
            return Err(err(431, "request header section too large"));
        }
        return Ok(None);
    };

    let mut raw_headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut raw_headers);
    match req.parse(&rest[..head_end]) {
        Ok(httparse::Status::Complete(n)) if n == head_end => {}
        Ok(_) => return Err(err(400, "malformed request head")),
        Err(httparse::Error::Version) => {
            version_error(request_line, true)?;
            return Err(err(400, "malformed HTTP version"));
        }
        Err(e) => return Err(map_httparse(e)),
    }

    let method = req
        .method
        .and_then(Method::parse)
        .ok_or(err(400, "malformed method"))?;
    let version = match req.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Err(err(505, "HTTP version not supported")),
    };
    let target = req.path.ok_or(err(400, "malformed request target"))?;

    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        if h.name.is_empty() || !h.name.bytes().all(is_tchar) {
            return Err(err(400, "malformed header name"));
        }
        if h.value.iter().any(|&b| is_ctl(b)) {
            return Err(err(400, "control character in header value"));
        }
        headers.push(Header {
            name: h.name.to_owned(),
            value: h.value.to_vec(),
        });
    }

    let t = parse_target(target, &method)?;
    let fields = Fields::collect(&headers)?;

    // Host.
    let header_host = match fields.host {
        None => {
            // RFC 9112 §3.2: every HTTP/1.1 request carries Host, absolute-form included.
            if version == Version::Http11 {
                return Err(err(400, "missing Host header"));
            }
            None
        }
        Some(v) => {
            let h = parse_host(v).ok_or(err(400, "invalid Host header"))?;
            if h.is_none() && version == Version::Http11 && !t.absolute_form {
                return Err(err(400, "empty Host header"));
            }
            h
        }
    };
    let host = t.host.or(header_host);
    // Valid UTF-8: parse_host accepted it.
    let authority = t.authority.or_else(|| {
        fields
            .host
            .filter(|v| !v.is_empty())
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned)
    });

    let body = body_kind(&fields, version)?;

    let keep_alive = match version {
        Version::Http11 => !fields.conn_close,
        Version::Http10 => fields.conn_keep_alive && !fields.conn_close,
        Version::Http2 => true,
    };

    Ok(Some((
        RequestHead {
            method,
            version,
            path: t.path,
            query: t.query,
            host,
            authority,
            headers,
            body,
            keep_alive,
            absolute_form: t.absolute_form,
        },
        skip + head_end,
    )))
}

/// Where a request for `target` with `Host: host` is routed, by the rules a parsed request head
/// follows (an absolute-form target's authority wins over `Host`): the routing host
/// (lower-case, no port), the raw path and the query. For the admin API's `explain`, so that
/// it cannot disagree with the data path.
pub fn route_of(host: &str, target: &str) -> Result<(String, String, Option<String>), HeadError> {
    let t = parse_target(target, &Method::Get)?;
    let host = match t.host {
        Some(h) => h,
        None => parse_host(host.as_bytes())
            .flatten()
            .ok_or(err(400, "invalid Host header"))?,
    };
    Ok((host, t.path, t.query))
}

/// The path and query of an origin-form target (`/path?query`, or `*` for `OPTIONS`), by the
/// rules of an HTTP/1 request line; for HTTP/2's `:path`, which has no absolute form.
pub fn origin_target(target: &str, method: &Method) -> Result<(String, Option<String>), HeadError> {
    if !target.starts_with('/') && target != "*" {
        return Err(err(400, "the request path must start with \"/\""));
    }
    let t = parse_target(target, method)?;
    Ok((t.path, t.query))
}

const BARE_LF: HeadError = err(400, "bare LF in request head");

const fn err(status: u16, reason: &'static str) -> HeadError {
    HeadError { status, reason }
}

/// `CTL` except HTAB.
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// Runs httparse over incomplete input for early syntax errors only.
fn httparse_partial(buf: &[u8]) -> Result<(), httparse::Error> {
    let mut raw_headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut raw_headers);
    req.parse(buf).map(|_| ())
}

fn map_httparse(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => err(431, "too many header fields"),
        httparse::Error::HeaderName => err(400, "malformed header name"),
        httparse::Error::HeaderValue => err(400, "malformed header value"),
        httparse::Error::NewLine => err(400, "malformed line ending"),
        httparse::Error::Version => err(400, "malformed HTTP version"),
        _ => err(400, "malformed request line"),
    }
}

/// Decides on an httparse `Version` error. `line` is the request line without CRLF (or what
/// was received of it when `complete` is false). A well-formed `HTTP/<d>.<d>` that is not
/// 1.0/1.1 is a 505, anything else a 400; `Ok(())` means "undecided, wait for more bytes".
fn version_error(line: &[u8], complete: bool) -> Result<(), HeadError> {
    // method SP target SP version: neither the method nor the target holds a space.
    let Some(token) = line.splitn(3, |&b| b == b' ').nth(2) else {
        return if complete {
            Err(err(400, "malformed request line"))
        } else {
            Ok(())
        };
    };
    let prefix_ok = token.len() <= 8
        && token.iter().enumerate().all(|(i, &b)| match i {
            0..=4 => b == b"HTTP/"[i],
            5 | 7 => b.is_ascii_digit(),
            _ => b == b'.',
        });
    match (complete, prefix_ok) {
        (true, true) if token.len() == 8 => Err(err(505, "HTTP version not supported")),
        (false, true) => Ok(()),
        _ => Err(err(400, "malformed HTTP version")),
    }
}

/// The request-target, split.
struct Target {
    path: String,
    query: Option<String>,
    host: Option<String>,
    /// The absolute-form target's `host[:port]`, as written.
    authority: Option<String>,
    absolute_form: bool,
}

fn parse_target(target: &str, method: &Method) -> Result<Target, HeadError> {
    if target.contains('#') {
        return Err(err(400, "fragment in request target"));
    }
    if target == "*" {
        if *method != Method::Options {
            return Err(err(400, "asterisk-form target requires OPTIONS"));
        }
        return Ok(Target {
            path: "*".to_owned(),
            query: None,
            host: None,
            authority: None,
            absolute_form: false,
        });
    }
    if target.starts_with('/') {
        let (path, query) = split_query(target);
        return Ok(Target {
            path: path.to_owned(),
            query: query.map(str::to_owned),
            host: None,
            authority: None,
            absolute_form: false,
        });
    }
    let after_scheme = strip_prefix_ignore_case(target, "http://")
        .or_else(|| strip_prefix_ignore_case(target, "https://"))
        .ok_or(err(400, "unsupported request target form"))?;
    let authority_end = after_scheme.find(['/', '?']).unwrap_or(after_scheme.len());
    let (authority, path_query) = after_scheme.split_at(authority_end);
    let host = parse_host(authority.as_bytes())
        .flatten()
        .ok_or(err(400, "invalid authority in request target"))?;
    let (path, query) = split_query(path_query);
    Ok(Target {
        path: if path.is_empty() { "/" } else { path }.to_owned(),
        query: query.map(str::to_owned),
        host: Some(host),
        authority: Some(authority.to_owned()),
        absolute_form: true,
    })
}

fn split_query(s: &str) -> (&str, Option<&str>) {
    match s.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (s, None),
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// Validates `host [":" port]` (RFC 3986 §3.2.2–3.2.3). `None`: invalid; `Some(None)`: empty;
/// `Some(Some(host))`: the lower-cased host without the port, IPv6 in brackets. The one
/// normalisation of a request's host for routing (the admin API's `explain` uses it too).
pub fn parse_host(v: &[u8]) -> Option<Option<String>> {
    if v.is_empty() {
        return Some(None);
    }
    let (host, after) = if v[0] == b'[' {
        let close = v.iter().position(|&b| b == b']')?;
        let inner = std::str::from_utf8(&v[1..close]).ok()?;
        inner.parse::<Ipv6Addr>().ok()?;
        (&v[..=close], &v[close + 1..])
    } else {
        let end = v.iter().position(|&b| b == b':').unwrap_or(v.len());
        let host = &v[..end];
        if host.is_empty() || !valid_reg_name(host) {
            return None;
        }
        (host, &v[end..])
    };
    match after.split_first() {
        None => {}
        Some((b':', port)) => {
            if port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let n = port.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
            if n > 65535 {
                return None;
            }
        }
        Some(_) => return None,
    }
    let host = std::str::from_utf8(host).ok()?;
    Some(Some(host.to_ascii_lowercase()))
}

/// `reg-name` (also covers IPv4 literals): unreserved, sub-delims and `%HH`.
fn valid_reg_name(s: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        if b == b'%' {
            match (s.get(i + 1), s.get(i + 2)) {
                (Some(h), Some(l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => i += 3,
                _ => return false,
            }
        } else if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// The header fields that matter for routing and framing.
struct Fields<'a> {
    host: Option<&'a [u8]>,
    content_length: Option<u64>,
    transfer_encoding: Vec<&'a [u8]>,
    conn_close: bool,
    conn_keep_alive: bool,
}

impl<'a> Fields<'a> {
    fn collect(headers: &'a [Header]) -> Result<Self, HeadError> {
        let mut f = Fields {
            host: None,
            content_length: None,
            transfer_encoding: Vec::new(),
            conn_close: false,
            conn_keep_alive: false,
        };
        for h in headers {
            let name = h.name.as_str();
            if name.eq_ignore_ascii_case("host") {
                if f.host.is_some() {
                    return Err(err(400, "multiple Host headers"));
                }
                f.host = Some(&h.value);
            } else if name.eq_ignore_ascii_case("content-length") {
                for item in h.value.split(|&b| b == b',').map(trim_ows) {
                    let n = parse_content_length(item)?;
                    if f.content_length.is_some_and(|prev| prev != n) {
                        return Err(err(400, "conflicting Content-Length values"));
                    }
                    f.content_length = Some(n);
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                f.transfer_encoding.extend(
                    h.value
                        .split(|&b| b == b',')
                        .map(trim_ows)
                        .filter(|s| !s.is_empty()),
                );
                // An empty Transfer-Encoding still counts as present.
                if h.value
                    .iter()
                    .all(|&b| b == b' ' || b == b'\t' || b == b',')
                {
                    f.transfer_encoding.push(b"");
                }
            } else if name.eq_ignore_ascii_case("connection") {
                for item in h.value.split(|&b| b == b',').map(trim_ows) {
                    if item.eq_ignore_ascii_case(b"close") {
                        f.conn_close = true;
                    } else if item.eq_ignore_ascii_case(b"keep-alive") {
                        f.conn_keep_alive = true;
                    }
                }
            }
        }
        Ok(f)
    }
}

fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    s.get(start..end).unwrap_or_default()
}

fn parse_content_length(s: &[u8]) -> Result<u64, HeadError> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return Err(err(400, "invalid Content-Length"));
    }
    s.iter()
        .try_fold(0u64, |n, &d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or(err(400, "Content-Length too large"))
}

fn body_kind(f: &Fields<'_>, version: Version) -> Result<BodyKind, HeadError> {
    if f.transfer_encoding.is_empty() {
        return Ok(match f.content_length {
            Some(n) => BodyKind::Length(n),
            None => BodyKind::None,
        });
    }
    if version == Version::Http10 {
        return Err(err(400, "Transfer-Encoding in an HTTP/1.0 request"));
    }
    if f.content_length.is_some() {
        return Err(err(400, "both Content-Length and Transfer-Encoding"));
    }
    let mut unknown = false;
    let mut chunked_at = Vec::new();
    for (i, item) in f.transfer_encoding.iter().enumerate() {
        let (name, params) = match item.iter().position(|&b| b == b';') {
            Some(p) => (trim_ows(&item[..p]), Some(&item[p..])),
            None => (*item, None),
        };
        if name.is_empty() || !name.iter().copied().all(is_tchar) {
            return Err(err(400, "malformed Transfer-Encoding"));
        }
        if name.eq_ignore_ascii_case(b"chunked") {
            if params.is_some() {
                return Err(err(400, "parameters on chunked transfer coding"));
            }
            chunked_at.push(i);
        } else if !KNOWN_CODINGS.iter().any(|c| name.eq_ignore_ascii_case(c)) {
            unknown = true;
        }
    }
    if unknown {
        return Err(err(501, "unsupported transfer coding"));
    }
    match chunked_at.as_slice() {
        // Only `chunked` itself: a body under another coding (`gzip, chunked`) could reach an
        // upstream only with that coding named in a Transfer-Encoding of its own — which a
        // proxy must not send (hop-by-hop) — or decoded, which the daemon does not do. nginx
        // answers 501 too.
        [0] if f.transfer_encoding.len() == 1 => Ok(BodyKind::Chunked),
        [i] if *i + 1 == f.transfer_encoding.len() => Err(err(
            501,
            "transfer codings other than chunked are not supported",
        )),
        [] | [_] => Err(err(400, "chunked is not the final transfer coding")),
        _ => Err(err(400, "chunked applied more than once")),
    }
}

/// Transfer codings other than `chunked` that we recognise (RFC 9112 §7, with the `x-`
/// aliases of RFC 9110 §8.4.1).
const KNOWN_CODINGS: [&[u8]; 6] = [
    b"gzip",
    b"deflate",
    b"compress",
    b"identity",
    b"x-gzip",
    b"x-compress",
];

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 8192;

    fn ok(buf: &[u8]) -> (RequestHead, usize) {
        match parse(buf, MAX) {
            Ok(Some(r)) => r,
            other => panic!(
                "expected a head from {:?}, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    fn status(buf: &[u8]) -> u16 {
        status_max(buf, MAX)
    }

    fn status_max(buf: &[u8], max: usize) -> u16 {
        match parse(buf, max) {
            Err(e) => e.status,
            other => panic!(
                "expected an error from {:?}, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    #[test]
    fn simple_get() {
        let buf =
            b"GET /index.html?a=1&b HTTP/1.1\r\nHost: Example.COM:8080\r\nAccept: */*\r\n\r\n";
        let (h, n) = ok(buf);
        assert_eq!(n, buf.len());
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.version, Version::Http11);
        assert_eq!(h.path, "/index.html");
        assert_eq!(h.query.as_deref(), Some("a=1&b"));
        assert_eq!(h.host.as_deref(), Some("example.com"));
        assert_eq!(h.body, BodyKind::None);
        assert!(h.keep_alive);
        assert!(!h.absolute_form);
        assert_eq!(h.headers.len(), 2);
        assert_eq!(h.headers[0].name, "Host");
        assert_eq!(h.headers[0].value, b"Example.COM:8080");
    }

    #[test]
    fn header_lookup_is_case_insensitive_and_first() {
        let (h, _) = ok(b"GET / HTTP/1.1\r\nhost: a\r\nX-Foo: 1\r\nx-foo: 2\r\nEmpty:\r\n\r\n");
        assert_eq!(h.header("X-FOO"), Some(&b"1"[..]));
        assert_eq!(h.header("HOST"), Some(&b"a"[..]));
        assert_eq!(h.header("empty"), Some(&b""[..]));
        assert_eq!(h.header("missing"), None);
        assert_eq!(h.headers[1].name, "X-Foo");
    }

    #[test]
    fn header_values_are_trimmed_and_keep_obs_text() {
        let (h, _) = ok(b"GET / HTTP/1.1\r\nHost: a\r\nX:  \tv a\xff\t \r\n\r\n");
        assert_eq!(h.header("x"), Some(&b"v a\xff"[..]));
    }

    #[test]
    fn pipelined_requests() {
        let buf = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: b\r\nContent-Length: 3\r\n\r\nabc";
        let (h1, n1) = ok(buf);
        assert_eq!(h1.path, "/1");
        let (h2, n2) = ok(&buf[n1..]);
        assert_eq!(h2.method, Method::Post);
        assert_eq!(h2.path, "/2");
        assert_eq!(h2.host.as_deref(), Some("b"));
        assert_eq!(h2.body, BodyKind::Length(3));
        assert_eq!(&buf[n1 + n2..], b"abc");
    }

    #[test]
    fn partial_input_at_every_offset() {
        let reqs: [&[u8]; 4] = [
            b"GET /a?b HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\nContent-Length: 0\r\n\r\n",
            b"\r\n\r\nPOST http://x/y HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"OPTIONS * HTTP/1.0\r\n\r\n",
            b"GET / HTTP/1.0\r\nX:\r\n\r\n",
        ];
        for req in reqs {
            for i in 0..req.len() {
                assert_eq!(parse(&req[..i], MAX), Ok(None), "offset {i} of {req:?}");
            }
            let (_, n) = ok(req);
            assert_eq!(n, req.len());
        }
    }

    #[test]
    fn partial_input_with_small_limit() {
        let req = b"GET /abc HTTP/1.1\r\nHost: a\r\n\r\n";
        // Request line is 17 bytes, header section 11.
        for i in 0..req.len() {
            assert_eq!(parse(&req[..i], 17), Ok(None), "offset {i}");
        }
        assert!(matches!(parse(req, 17), Ok(Some(_))));
    }

    #[test]
    fn leading_empty_lines_are_skipped_and_counted() {
        let buf = b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let (h, n) = ok(buf);
        assert_eq!(n, buf.len());
        assert_eq!(h.path, "/");
        let many = b"\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(status(many), 400);
        assert_eq!(parse(b"\r\n\r\n\r", MAX), Ok(None));
        assert_eq!(status(b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status(b"\r\rGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    }

    #[test]
    fn request_line_limit() {
        let max = 32;
        let path = "a".repeat(max - "GET / HTTP/1.1".len());
        let exact = format!("GET /{path} HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(matches!(parse(exact.as_bytes(), max), Ok(Some(_))));
        let long = format!("GET /{path}a HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(status_max(long.as_bytes(), max), 414);
        // Partial input: no CRLF within the limit.
        let partial = format!("GET /{}", "a".repeat(max));
        assert_eq!(status_max(partial.as_bytes(), max), 414);
        // Exactly at the limit with only the CR received: still undecided.
        let at_cr = format!("GET /{path} HTTP/1.1\r");
        assert_eq!(parse(at_cr.as_bytes(), max), Ok(None));
        assert_eq!(
            status(format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX)).as_bytes()),
            414
        );
    }

    #[test]
    fn header_section_limit() {
        let max = 40;
        // "Host: a\r\n" (9) + "X: " (3) + value + "\r\n" (2) + "\r\n" (2) = max
        let value = "v".repeat(max - 16);
        let exact = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {value}\r\n\r\n");
        assert!(matches!(parse(exact.as_bytes(), max), Ok(Some(_))));
        let long = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {value}v\r\n\r\n");
        assert_eq!(status_max(long.as_bytes(), max), 431);
        // Partial: the section is already over the limit without its end.
        let partial = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}", "v".repeat(max));
        assert_eq!(status_max(partial.as_bytes(), max), 431);
        let partial_ok = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {value}\r\n");
        assert_eq!(parse(partial_ok.as_bytes(), max), Ok(None));
    }

    #[test]
    fn header_count_limit() {
        let mut buf = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 1..MAX_HEADERS {
            buf.push_str(&format!("X-{i}: v\r\n"));
        }
        let exact = format!("{buf}\r\n");
        let (h, _) = parse(exact.as_bytes(), 1 << 16).unwrap().unwrap();
        assert_eq!(h.headers.len(), MAX_HEADERS);
        let over = format!("{buf}X-Last: v\r\n\r\n");
        assert_eq!(status_max(over.as_bytes(), 1 << 16), 431);
        // Detected on partial input too.
        let over_partial = format!("{buf}X-Last: v\r\n");
        assert_eq!(status_max(over_partial.as_bytes(), 1 << 16), 431);
    }

    #[test]
    fn version_errors() {
        assert_eq!(status(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n"), 505);
        assert_eq!(status(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
        assert_eq!(status(b"GET / HTTP/0.9\r\n\r\n"), 505);
        assert_eq!(status(b"GET / HTTP/2.0\r\n"), 505);
        assert_eq!(status(b"GET / HTTP/1.1x\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status(b"GET / http/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/11\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/2\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status(b"GET / FOO\r\n\r\n"), 400);
        assert_eq!(status(b"GET / foo HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        // Partial: undecided while it may still become HTTP/<d>.<d>, 400 as soon as it can't.
        assert_eq!(parse(b"GET / HTTP/2", MAX), Ok(None));
        assert_eq!(parse(b"GET / HTTP/2.0\r", MAX), Ok(None));
        assert_eq!(status(b"GET / XTTP"), 400);
        assert_eq!(status(b"GET / HTTP/2.0x"), 400);
    }

    #[test]
    fn malformed_request_lines() {
        assert_eq!(status(b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status(b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status(b"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status(b"GET\r\n\r\n"), 400);
        assert_eq!(status(b"\x16\x03\x01\x02\x00"), 400);
        // Early detection on partial input.
        assert_eq!(status(b"GET /a\x01"), 400);
    }

    #[test]
    fn bare_lf_is_rejected() {
        assert_eq!(status(b"GET / HTTP/1.1\nHost: a\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\n\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n"), 400);
        // Also while still partial.
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\nX"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\n"), 400);
    }

    #[test]
    fn malformed_header_fields() {
        // obs-fold
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n\tc\r\n\r\n"),
            400
        );
        // whitespace before the first header / between name and colon
        assert_eq!(status(b"GET / HTTP/1.1\r\n Host: a\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n"), 400);
        // control characters in values
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n"),
            400
        );
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"), 400);
        // empty name, missing colon, bad name characters
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\nX(y): b\r\n\r\n"), 400);
        // HTAB inside a value is fine
        let (h, _) = ok(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\tb\r\n\r\n");
        assert_eq!(h.header("x"), Some(&b"a\tb"[..]));
    }

    #[test]
    fn target_forms() {
        let (h, _) = ok(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(h.path, "*");
        assert_eq!(h.query, None);
        assert_eq!(status(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status(b"OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(
            status(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n"),
            400
        );
        assert_eq!(status(b"GET a/b HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status(b"GET ftp://a/b HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status(b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status(b"GET http://a/#f HTTP/1.1\r\n\r\n"), 400);
        // Query kept byte for byte, even empty.
        let (h, _) = ok(b"GET /p?x=%20y?z&&/ HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(h.path, "/p");
        assert_eq!(h.query.as_deref(), Some("x=%20y?z&&/"));
        let (h, _) = ok(b"GET /? HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(h.query.as_deref(), Some(""));
        let (h, _) = ok(b"GET //a/../b HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(h.path, "//a/../b");
    }

    #[test]
    fn absolute_form() {
        let (h, _) = ok(b"GET HTTP://User.Example:81/a/b?q=1 HTTP/1.1\r\nHost: other\r\n\r\n");
        assert!(h.absolute_form);
        assert_eq!(h.host.as_deref(), Some("user.example"));
        assert_eq!(h.path, "/a/b");
        assert_eq!(h.query.as_deref(), Some("q=1"));
        let (h, _) = ok(b"GET https://[::1]:8443 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(h.host.as_deref(), Some("[::1]"));
        assert_eq!(h.path, "/");
        assert_eq!(h.query, None);
        let (h, _) = ok(b"GET http://x?y HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(h.path, "/");
        assert_eq!(h.query.as_deref(), Some("y"));
        // HTTP/1.1 requires Host in absolute-form too (RFC 9112 §3.2); the target's wins.
        assert_eq!(status(b"GET http://x/ HTTP/1.1\r\n\r\n"), 400);
        let (h, _) = ok(b"GET http://x/ HTTP/1.1\r\nHost: y\r\n\r\n");
        assert_eq!(h.host.as_deref(), Some("x"));
        assert_eq!(status(b"GET http:///a HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status(b"GET http://u@x/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status(b"GET http://x:y/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status(b"GET http:/x/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        // A malformed Host header is still rejected.
        assert_eq!(status(b"GET http://x/ HTTP/1.1\r\nHost: a b\r\n\r\n"), 400);
    }

    #[test]
    fn host_header_rules() {
        assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost:\r\n\r\n"), 400);
        for bad in [
            &b"a b"[..],
            b"a/b",
            b"a@b",
            b"a:b",
            b"a:80:90",
            b":80",
            b"a:123456",
            b"a:65536",
            b"[::1",
            b"[zz]",
            b"[::1]x",
            b"::1",
            b"a%2",
            b"a%zz",
            b"\xc3\xa9",
        ] {
            let mut req = b"GET / HTTP/1.1\r\nHost: ".to_vec();
            req.extend_from_slice(bad);
            req.extend_from_slice(b"\r\n\r\n");
            assert_eq!(status(&req), 400, "Host: {}", String::from_utf8_lossy(bad));
        }
        for (good, want) in [
            ("EXAMPLE.com", "example.com"),
            ("example.com:443", "example.com"),
            ("example.com:", "example.com"),
            ("127.0.0.1:80", "127.0.0.1"),
            ("[::1]", "[::1]"),
            ("[2001:DB8::1]:8080", "[2001:db8::1]"),
            ("a-b_c~d!$&'()*+,;=%41", "a-b_c~d!$&'()*+,;=%41"),
            ("x:65535", "x"),
        ] {
            let req = format!("GET / HTTP/1.1\r\nHost: {good}\r\n\r\n");
            let (h, _) = ok(req.as_bytes());
            assert_eq!(h.host.as_deref(), Some(want), "Host: {good}");
        }
        // HTTP/1.0: Host optional, may be empty.
        let (h, _) = ok(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(h.host, None);
        let (h, _) = ok(b"GET / HTTP/1.0\r\nHost:\r\n\r\n");
        assert_eq!(h.host, None);
        let (h, _) = ok(b"GET / HTTP/1.0\r\nHost: A\r\n\r\n");
        assert_eq!(h.host.as_deref(), Some("a"));
        assert_eq!(status(b"GET / HTTP/1.0\r\nHost: a b\r\n\r\n"), 400);
    }

    #[test]
    fn keep_alive_rules() {
        let ka = |req: &[u8]| ok(req).0.keep_alive;
        assert!(ka(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(!ka(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        ));
        assert!(!ka(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, CLOSE\r\n\r\n"
        ));
        assert!(!ka(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x\r\nconnection: close\r\n\r\n"
        ));
        assert!(ka(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n"
        ));
        assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(ka(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        assert!(ka(b"GET / HTTP/1.0\r\nConnection: foo ,keep-alive\r\n\r\n"));
        assert!(!ka(
            b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"
        ));
        assert!(!ka(b"GET / HTTP/1.0\r\nConnection: keep-alive-x\r\n\r\n"));
    }

    fn body(extra: &str) -> Result<BodyKind, u16> {
        let req = format!("POST / HTTP/1.1\r\nHost: a\r\n{extra}\r\n");
        match parse(req.as_bytes(), MAX) {
            Ok(Some((h, _))) => Ok(h.body),
            Err(e) => Err(e.status),
            Ok(None) => panic!("incomplete: {req:?}"),
        }
    }

    #[test]
    fn content_length() {
        assert_eq!(body(""), Ok(BodyKind::None));
        assert_eq!(body("Content-Length: 0\r\n"), Ok(BodyKind::Length(0)));
        assert_eq!(body("Content-Length: 42\r\n"), Ok(BodyKind::Length(42)));
        assert_eq!(body("Content-Length:   007 \r\n"), Ok(BodyKind::Length(7)));
        assert_eq!(body("Content-Length: 5, 5\r\n"), Ok(BodyKind::Length(5)));
        assert_eq!(
            body("Content-Length: 5\r\ncontent-length: 5\r\n"),
            Ok(BodyKind::Length(5))
        );
        assert_eq!(
            body("Content-Length: 18446744073709551615\r\n"),
            Ok(BodyKind::Length(u64::MAX))
        );
        assert_eq!(body("Content-Length: 18446744073709551616\r\n"), Err(400));
        assert_eq!(
            body("Content-Length: 99999999999999999999999\r\n"),
            Err(400)
        );
        assert_eq!(body("Content-Length: 5, 6\r\n"), Err(400));
        assert_eq!(body("Content-Length: 5\r\nContent-Length: 6\r\n"), Err(400));
        assert_eq!(body("Content-Length: +5\r\n"), Err(400));
        assert_eq!(body("Content-Length: -5\r\n"), Err(400));
        assert_eq!(body("Content-Length: 1 2\r\n"), Err(400));
        assert_eq!(body("Content-Length: 0x10\r\n"), Err(400));
        assert_eq!(body("Content-Length:\r\n"), Err(400));
        assert_eq!(body("Content-Length: 5,\r\n"), Err(400));
    }

    #[test]
    fn transfer_encoding() {
        assert_eq!(
            body("Transfer-Encoding: chunked\r\n"),
            Ok(BodyKind::Chunked)
        );
        assert_eq!(
            body("Transfer-Encoding: CHUNKED\r\n"),
            Ok(BodyKind::Chunked)
        );
        // A coding besides chunked: never forwarded as is, never decoded — 501.
        assert_eq!(body("Transfer-Encoding: gzip, chunked\r\n"), Err(501));
        assert_eq!(
            body("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"),
            Err(501)
        );
        assert_eq!(body("Transfer-Encoding: chunked, gzip\r\n"), Err(400));
        assert_eq!(body("Transfer-Encoding: gzip\r\n"), Err(400));
        assert_eq!(body("Transfer-Encoding: identity\r\n"), Err(400));
        assert_eq!(body("Transfer-Encoding: chunked, chunked\r\n"), Err(400));
        assert_eq!(
            body("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
            Err(400)
        );
        assert_eq!(body("Transfer-Encoding: chunked;a=b\r\n"), Err(400));
        assert_eq!(body("Transfer-Encoding: \"chunked\"\r\n"), Err(400));
        assert_eq!(body("Transfer-Encoding: chunked\x0b\r\n"), Err(400));
        assert_eq!(body("Transfer-Encoding:\r\n"), Err(400));
        assert_eq!(body("Transfer-Encoding: ,\r\n"), Err(400));
        // Unknown codings: 501, even when chunked is not last.
        assert_eq!(body("Transfer-Encoding: br, chunked\r\n"), Err(501));
        assert_eq!(body("Transfer-Encoding: chunked, foo\r\n"), Err(501));
        assert_eq!(body("Transfer-Encoding: xchunked\r\n"), Err(501));
        // Both framings.
        assert_eq!(
            body("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"),
            Err(400)
        );
        assert_eq!(
            body("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n"),
            Err(400)
        );
        // HTTP/1.0 may not use Transfer-Encoding.
        assert_eq!(
            status(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        let (h, _) = ok(b"POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(h.body, BodyKind::Length(2));
    }

    #[test]
    fn methods() {
        let (h, _) = ok(b"PROPFIND / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(h.method, Method::Other("PROPFIND".into()));
        let (h, _) = ok(b"DELETE /x HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(h.method, Method::Delete);
    }

    #[test]
    fn never_panics_on_odd_input() {
        let samples: [&[u8]; 10] = [
            b"",
            b"\r",
            b"\r\n",
            b" ",
            b"GET",
            b"GET ",
            b"GET / ",
            b"GET / HTTP/1.1\r\n\r",
            b"\xff\xfe\xfd",
            b"GET / HTTP/1.1\r\n\r\n",
        ];
        for s in samples {
            for max in [0, 1, 2, 3, 16, MAX] {
                let _ = parse(s, max);
            }
        }
        assert_eq!(status_max(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0), 414);
    }

    /// Small deterministic PRNG for the mutation test.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn random_mutations_never_panic() {
        let bases: [&[u8]; 4] = [
            b"GET /a?b HTTP/1.1\r\nHost: example.com:80\r\nConnection: close\r\n\r\n",
            b"POST http://[::1]:8/x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\nbody",
            b"\r\nPUT /x HTTP/1.0\r\nContent-Length: 10, 10\r\nConnection: keep-alive\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
        ];
        let interesting = b"\r\n \t:/?#%[]@,;\"\x00\x7f\xffHTTP/1.0aZ09*";
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..20_000 {
            let mut buf = bases[i % bases.len()].to_vec();
            for _ in 0..=(xorshift(&mut rng) % 4) {
                let r = xorshift(&mut rng) as usize;
                let at = r % (buf.len() + 1);
                let b = interesting[(r >> 16) % interesting.len()];
                match (r >> 8) % 4 {
                    0 if at < buf.len() => buf[at] = b,
                    1 => buf.insert(at, b),
                    2 if at < buf.len() => {
                        buf.remove(at);
                    }
                    _ => buf.truncate(at),
                }
            }
            for max in [8, 40, MAX] {
                if let Ok(Some((h, n))) = parse(&buf, max) {
                    assert!(n <= buf.len());
                    assert!(h.path.starts_with('/') || h.path == "*");
                    // The head is self-contained.
                    assert_eq!(parse(&buf[..n], max), Ok(Some((h, n))));
                }
            }
        }
    }
}

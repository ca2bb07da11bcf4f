//! HTTP/2 messages in the exchange's terms: a request's pseudo-headers and fields as a
//! [`RequestHead`] (the same one the HTTP/1 parser makes), a [`ResponseHead`] as HTTP/2 fields,
//! and trailer fields both ways. The `h2` crate has already enforced HTTP/2's own framing rules
//! (connection-specific fields, `te` other than `trailers`, the pseudo-header set and order,
//! `content-length` against DATA); this module adds what a proxy must check on top, by the
//! same rules as HTTP/1: the path's form, the authority, field values.
//!
//! Pure logic over `http` types: unit-tested here.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::h1::request::{origin_target, parse_host};
use super::request::{BodyKind, HeadError, Header, RequestHead};
use super::response::ResponseHead;
use super::{Method, Version};

/// What a request head measured, as the route's `max_request_header_size` counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// `METHOD path HTTP/2.0`, as if it were a request line.
    pub request_line: usize,
    /// Every field as `name: value\r\n`, and the blank line.
    pub header_section: usize,
}

/// The exchange's view of an HTTP/2 request: `:authority` wins over a differing `Host` (and
/// neither is a 400), `cookie` fields are joined into one (RFC 9113 §8.2.3), the body is
/// `content-length` bytes, none (`end_stream`), or of unknown length (streamed, re-chunked
/// for an HTTP/1 upstream).
pub fn request_head(
    parts: &http::request::Parts,
    end_stream: bool,
) -> Result<(RequestHead, Sizes), HeadError> {
    let method = Method::parse(parts.method.as_str()).ok_or(err(400, "malformed method"))?;
    if method == Method::Connect {
        return Err(err(501, "CONNECT is not supported"));
    }
    let target = parts.uri.path_and_query().map_or("", |pq| pq.as_str());
    let (path, query) = origin_target(target, &method)?;
    let header_host = parts.headers.get(http::header::HOST);
    let authority = match (parts.uri.authority(), header_host) {
        (Some(a), _) => a.as_str().to_owned(),
        (None, Some(h)) => h
            .to_str()
            .map_err(|_| err(400, "invalid Host header"))?
            .to_owned(),
        (None, None) => return Err(err(400, "neither :authority nor Host")),
    };
    let host = parse_host(authority.as_bytes())
        .ok_or(err(400, "invalid :authority"))?
        .ok_or(err(400, "empty :authority"))?;

    let mut headers = Vec::with_capacity(parts.headers.len());
    let mut cookie: Option<Vec<u8>> = None;
    let mut section = 2;
    let mut content_length = None;
    for (name, value) in &parts.headers {
        let value = value.as_bytes();
        section += name.as_str().len() + value.len() + 4;
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(err(400, "control character in a field value"));
        }
        if name == http::header::HOST {
            continue;
        }
        if name == http::header::CONTENT_LENGTH {
            let n = std::str::from_utf8(value)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(err(400, "invalid content-length"))?;
            if content_length.is_some_and(|prev| prev != n) {
                return Err(err(400, "conflicting content-length values"));
            }
            content_length = Some(n);
        }
        if name == http::header::COOKIE {
            let joined = cookie.get_or_insert_with(Vec::new);
            if !joined.is_empty() {
                joined.extend_from_slice(b"; ");
            }
            joined.extend_from_slice(value);
            continue;
        }
        headers.push(Header {
            name: name.as_str().to_owned(),
            value: value.to_vec(),
        });
    }
    if let Some(value) = cookie {
        headers.push(Header {
            name: "cookie".into(),
            value,
        });
    }
    let body = match content_length {
        Some(n) => BodyKind::Length(n),
        None if end_stream => BodyKind::None,
        None => BodyKind::Chunked,
    };
    let sizes = Sizes {
        request_line: method.as_str().len() + target.len() + 10,
        header_section: section,
    };
    Ok((
        RequestHead {
            method,
            version: Version::Http2,
            path,
            query,
            host: Some(host),
            authority: Some(authority),
            headers,
            body,
            keep_alive: true,
            absolute_form: false,
        },
        sizes,
    ))
}

/// A response head as HTTP/2 sends it: the status and the end-to-end fields, lower-cased,
/// without HTTP/1's connection-specific ones (RFC 9113 §8.2.2), and `content-length` when the
/// body's length is known. A field that HTTP/2 cannot carry (not a valid name or value) is
/// dropped and counted in the second value.
pub fn response(head: &ResponseHead, length: Option<u64>) -> (http::Response<()>, usize) {
    let mut dropped = 0;
    let mut resp = http::Response::new(());
    *resp.status_mut() =
        http::StatusCode::from_u16(head.status()).unwrap_or(http::StatusCode::BAD_GATEWAY);
    let headers = resp.headers_mut();
    headers.reserve(16);
    for (name, value) in head.fields() {
        if is_connection_specific(name) || name.eq_ignore_ascii_case(b"content-length") {
            continue;
        }
        match (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            (Ok(n), Ok(v)) => {
                headers.append(n, v);
            }
            _ => dropped += 1,
        }
    }
    if let Some(n) = length {
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    (resp, dropped)
}

/// Trailer fields received as `Name: value\r\n` lines (what the exchange carries).
pub fn trailer_lines(trailers: &HeaderMap) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in trailers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// `Name: value\r\n` trailer lines as HTTP/2 fields; lines that are not valid fields, and
/// fields that may not be trailers (framing, routing), are dropped.
pub fn trailer_map(lines: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in lines.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if is_connection_specific(name)
            || name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"host")
        {
            continue;
        }
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            map.append(n, v);
        }
    }
    map
}

/// A piece of body as the `h2` crate takes it.
pub fn bytes(data: &[u8]) -> Bytes {
    Bytes::copy_from_slice(data)
}

/// Fields that only mean something to one HTTP/1 connection, never sent over HTTP/2.
fn is_connection_specific(name: &[u8]) -> bool {
    // Most fields are none of these: their first letter says so at once.
    if !matches!(
        name.first().map(u8::to_ascii_lowercase),
        Some(b'c' | b'k' | b'p' | b't' | b'u' | b'h')
    ) {
        return false;
    }
    [
        &b"connection"[..],
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"te",
        b"trailer",
        b"http2-settings",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

const fn err(status: u16, reason: &'static str) -> HeadError {
    HeadError { status, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().method("GET").uri(uri);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn authority_wins_over_host_and_one_is_needed() {
        let (req, _) = request_head(
            &parts(
                "https://Example.COM:8443/a%20b?x=1",
                &[("host", "other.test")],
            ),
            true,
        )
        .unwrap();
        assert_eq!(req.host.as_deref(), Some("example.com"));
        assert_eq!(req.authority.as_deref(), Some("Example.COM:8443"));
        assert_eq!(
            (req.path.as_str(), req.query.as_deref()),
            ("/a%20b", Some("x=1"))
        );
        assert!(
            req.headers.iter().all(|h| h.name != "host"),
            "Host is not a field"
        );
        assert_eq!(req.version, Version::Http2);
        assert_eq!(req.body, BodyKind::None);
        let (req, _) = request_head(&parts("/p", &[("host", "h.test")]), false).unwrap();
        assert_eq!(req.host.as_deref(), Some("h.test"));
        assert_eq!(req.body, BodyKind::Chunked, "a body of unknown length");
        let e = request_head(&parts("/p", &[]), true).unwrap_err();
        assert_eq!((e.status, e.reason), (400, "neither :authority nor Host"));
        let e = request_head(&parts("/", &[("host", "a b")]), true).unwrap_err();
        assert_eq!((e.status, e.reason), (400, "invalid :authority"));
    }

    #[test]
    fn cookies_are_joined_and_lengths_checked() {
        let p = parts(
            "https://a.test/",
            &[
                ("cookie", "a=1"),
                ("x-y", "z"),
                ("cookie", "b=2"),
                ("content-length", "5"),
            ],
        );
        let (req, sizes) = request_head(&p, false).unwrap();
        assert_eq!(req.header("cookie"), Some(&b"a=1; b=2"[..]));
        assert_eq!(req.body, BodyKind::Length(5));
        assert_eq!(sizes.request_line, "GET".len() + 1 + 10);
        assert!(sizes.header_section > 20);
        let p = parts(
            "https://a.test/",
            &[("content-length", "5"), ("content-length", "6")],
        );
        assert_eq!(request_head(&p, false).unwrap_err().status, 400);
        let p = parts("https://a.test/", &[("content-length", "+5")]);
        assert_eq!(request_head(&p, false).unwrap_err().status, 400);
    }

    #[test]
    fn odd_paths_and_methods() {
        let p = parts("https://a.test/a#frag", &[]);
        // `http` drops a fragment from a URI; a `#` that survives is refused by the same rule
        // as HTTP/1's.
        assert!(request_head(&p, true).is_ok_and(|(r, _)| r.path == "/a"));
        let mut p = parts("https://a.test/", &[]);
        p.method = http::Method::CONNECT;
        assert_eq!(request_head(&p, true).unwrap_err().status, 501);
        let mut p = parts("https://a.test/", &[]);
        p.uri = "https://a.test/../x".parse().unwrap();
        let (r, _) = request_head(&p, true).unwrap();
        assert_eq!(
            r.path, "/../x",
            "normalised (and refused) by routing, as for HTTP/1"
        );
        p.uri = "https://a.test".parse().unwrap();
        assert_eq!(request_head(&p, true).unwrap().0.path, "/");
    }

    #[test]
    fn responses_lose_connection_fields() {
        let mut h = ResponseHead::new(200);
        h.header("Content-Type", "text/plain")
            .header("Connection", "close")
            .header("Keep-Alive", "timeout=5")
            .header("Transfer-Encoding", "chunked")
            .header("Content-Length", "99")
            .header("Set-Cookie", "a=1")
            .header("Set-Cookie", "b=2")
            .header("Bad Name", "x");
        let (resp, dropped) = response(&h, Some(12));
        assert_eq!(resp.status(), 200);
        let hd = resp.headers();
        assert_eq!(hd["content-type"], "text/plain");
        assert_eq!(hd["content-length"], "12");
        assert_eq!(hd.get_all("set-cookie").iter().count(), 2);
        assert!(hd.get("connection").is_none() && hd.get("keep-alive").is_none());
        assert!(hd.get("transfer-encoding").is_none());
        assert!(hd.contains_key("server") && hd.contains_key("date"));
        assert_eq!(dropped, 1);
    }

    #[test]
    fn connection_specific_names_any_case() {
        for name in [
            "Connection",
            "KEEP-ALIVE",
            "proxy-connection",
            "Transfer-Encoding",
            "upgrade",
            "TE",
            "Trailer",
            "HTTP2-Settings",
        ] {
            assert!(is_connection_specific(name.as_bytes()), "{name}");
        }
        for name in [
            "Content-Type",
            "cache-control",
            "Tex",
            "Server",
            "",
            "x-upgrade",
        ] {
            assert!(!is_connection_specific(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn trailers_both_ways() {
        let map =
            trailer_map(b"Grpc-Status: 0\r\ngrpc-message: ok\r\nContent-Length: 3\r\njunk\r\n");
        assert_eq!(map["grpc-status"], "0");
        assert_eq!(map["grpc-message"], "ok");
        assert_eq!(map.len(), 2);
        assert_eq!(
            trailer_lines(&map),
            b"grpc-status: 0\r\ngrpc-message: ok\r\n"
        );
    }
}

//! HTTP/1 response heads from an upstream: parsed (on `httparse`) into [`Head`] with the
//! hop-by-hop fields set aside and the body's [`Framing`] worked out (RFC 9112 §6.3), and the
//! `Connection` rules shared with requests.

use super::body::Framing;

/// A response head parsed from an HTTP/1 peer, its hop-by-hop fields set aside.
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    pub reason: String,
    /// End-to-end header lines, in order, as they go to the client (`Name: value\r\n`).
    pub headers: Vec<u8>,
    /// The [`crate::http::response::name_bit`]s of their names.
    pub names: u64,
    pub content_length: Option<u64>,
    pub chunked: bool,
    /// HTTP/1.1 without `Connection: close`.
    pub keep_alive: bool,
    /// A `101`'s `Upgrade` value: the protocol switched to.
    pub upgrade: Option<Vec<u8>>,
}

impl Head {
    /// How this response's body is framed; `head_request`: the answer to a HEAD, which has none.
    pub fn framing(&self, head_request: bool) -> Framing {
        if head_request || self.status == 204 || self.status == 304 {
            Framing::None
        } else if self.chunked {
            Framing::Chunked
        } else if let Some(n) = self.content_length {
            Framing::Length(n)
        } else {
            Framing::Close
        }
    }

    /// Whether the status is an interim one that another follows (1xx other than `101`).
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

/// Parses a response head from the front of `buf`: `Ok(None)` until it is complete, then the
/// head and its length. `Err` is why it is not HTTP/1.x.
pub fn parse(buf: &[u8]) -> Result<Option<(Head, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut r = httparse::Response::new(&mut headers);
    let n = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("the upstream's response is not HTTP/1.x: {e}")),
    };
    let status = r.code.unwrap_or(0);
    let version11 = r.version == Some(1);
    let named = connection_tokens(r.headers.iter().map(|h| (h.name, h.value)));
    let mut out = Vec::with_capacity(n);
    let mut names = 0;
    let (mut cl, mut chunked, mut te) = (None, false, false);
    for h in r.headers.iter() {
        let kind = Name::of(h.name);
        if kind == Name::ContentLength {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            match (cl, v) {
                (_, None) => return Err("the upstream sent a bad Content-Length".into()),
                (Some(a), Some(b)) if a != b => {
                    return Err("the upstream sent differing Content-Lengths".into())
                }
                (_, v) => cl = v,
            }
        } else if kind == Name::TransferEncoding {
            te = true;
            chunked = String::from_utf8_lossy(h.value)
                .rsplit(',')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
        }
        if kind != Name::EndToEnd || named.iter().any(|t| t.eq_ignore_ascii_case(h.name)) {
            continue;
        }
        names |= crate::http::response::name_bit(h.name.as_bytes());
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if te && !chunked {
        // Not chunked-terminated: delimited by close (RFC 9112 §6.3).
        cl = None;
    }
    if te {
        cl = None;
    }
    let upgrade = if status == 101 {
        r.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("upgrade"))
            .map(|h| h.value.to_vec())
    } else {
        None
    };
    Ok(Some((
        Head {
            status,
            reason: r.reason.unwrap_or("").to_string(),
            headers: out,
            names,
            content_length: cl,
            chunked,
            keep_alive: version11 && !named.iter().any(|t| t == "close"),
            upgrade,
        },
        n,
    )))
}

/// The lower-case tokens of every `Connection` header (no allocation without one).
pub fn connection_tokens<'a>(headers: impl Iterator<Item = (&'a str, &'a [u8])>) -> Vec<String> {
    let mut tokens = Vec::new();
    for (name, value) in headers {
        if !name.eq_ignore_ascii_case("connection") {
            continue;
        }
        for t in value.split(|&b| b == b',') {
            let t = t.trim_ascii();
            if !t.is_empty() {
                tokens.push(String::from_utf8_lossy(t).to_ascii_lowercase());
            }
        }
    }
    tokens
}

/// Headers that never cross a proxy (`HTTP2-Settings` belongs to an `h2c` upgrade, which is
/// never forwarded).
pub fn is_hop_by_hop(name: &str) -> bool {
    Name::of(name) != Name::EndToEnd
}

/// What a header's name is to a proxy: one of the fields that frame the message, another
/// hop-by-hop field, or an end-to-end one. Told apart by length first: most names are
/// compared with nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Name {
    ContentLength,
    TransferEncoding,
    HopByHop,
    EndToEnd,
}

impl Name {
    fn of(name: &str) -> Self {
        let is = |lit: &str| name.eq_ignore_ascii_case(lit);
        match name.len() {
            2 if is("te") => Self::HopByHop,
            7 if is("trailer") || is("upgrade") => Self::HopByHop,
            10 if is("connection") || is("keep-alive") => Self::HopByHop,
            14 if is("content-length") => Self::ContentLength,
            14 if is("http2-settings") => Self::HopByHop,
            16 if is("proxy-connection") => Self::HopByHop,
            17 if is("transfer-encoding") => Self::TransferEncoding,
            _ => Self::EndToEnd,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads() {
        let (r, n) = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nX-Keep: 2\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(n, 91);
        assert_eq!(r.status, 200);
        assert_eq!(r.content_length, Some(5));
        assert!(!r.keep_alive);
        assert_eq!(r.headers, b"X-Keep: 2\r\n");
        for name in [
            "Connection",
            "keep-alive",
            "Proxy-Connection",
            "TE",
            "Trailer",
            "Transfer-Encoding",
            "Upgrade",
            "Content-Length",
            "HTTP2-Settings",
        ] {
            assert!(is_hop_by_hop(name), "{name}");
        }
        for name in [
            "Content-Type",
            "X-Te",
            "Upgrades",
            "Content-Lengths",
            "ETag",
        ] {
            assert!(!is_hop_by_hop(name), "{name}");
        }
        // The names forwarded, as a filter: only X-Keep's bit.
        use crate::http::response::name_bit;
        assert_eq!(r.names, name_bit(b"x-keep"));
        let (r, _) = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(r.chunked);
        assert_eq!(r.content_length, None);
        assert!(r.keep_alive);
        assert!(parse(b"NOT HTTP\r\n\r\n").is_err());
        assert!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").is_err()
        );
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap().is_none());
        let (r, _) = parse(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert!(!r.keep_alive);
    }
}

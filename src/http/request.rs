//! The request head every protocol produces: method, target, authority, header fields and how
//! the body is framed — what routing, policy and the backends read. The HTTP/1 parser
//! ([`crate::http::h1::request::parse`]) makes it from the wire.

use std::fmt;

use super::{Method, Version};

/// A request head that cannot be accepted, with the status code to answer it with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadError {
    /// 400, 414, 431, 501 or 505.
    pub status: u16,
    /// A short human-readable reason, for the log and the error body.
    pub reason: &'static str,
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.reason)
    }
}

impl std::error::Error for HeadError {}

/// How the request body is framed (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// No body.
    None,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// A chunked body follows (see [`crate::http::h1::chunked`]).
    Chunked,
}

/// One header field, in the order received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The field name as received (case preserved).
    pub name: String,
    /// The field value without surrounding whitespace.
    pub value: Vec<u8>,
}

/// A parsed and validated request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    pub version: Version,
    /// The raw (still percent-encoded) path: starts with `/`, or is `*` for `OPTIONS *`.
    pub path: String,
    /// The raw bytes after `?` (without it), byte for byte; `None` when there is no `?`.
    pub query: Option<String>,
    /// Lower-cased, port stripped, IPv6 kept in brackets (`[::1]`). Taken from the
    /// absolute-form target if there is one, else from the `Host` header.
    pub host: Option<String>,
    /// The authority the request is for, `host[:port]` as the client wrote it (validated):
    /// the absolute-form target's when there is one (RFC 9112 §3.2.2: it wins over `Host`),
    /// else the `Host` header's. `host` is its routing form. What a proxy forwards as `Host`
    /// and `X-Forwarded-Host`, so that the upstream sees the authority the request was routed
    /// and authorised by.
    pub authority: Option<String>,
    /// All header fields, in order.
    pub headers: Vec<Header>,
    pub body: BodyKind,
    /// Whether the connection may be reused after this exchange, as far as the request says.
    pub keep_alive: bool,
    /// The request-target was in absolute-form (`http://host/path`).
    pub absolute_form: bool,
}

impl RequestHead {
    /// The value of the first header field named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }

    /// Whether the client waits for `100 Continue` before it sends its body: an HTTP/1.1
    /// request with `Expect: 100-continue` (RFC 9110 §10.1.1; an HTTP/1.0 client never gets
    /// a 1xx, RFC 9110 §15.2).
    pub fn expects_continue(&self) -> bool {
        self.version == Version::Http11
            && self
                .header("expect")
                .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"100-continue"))
    }
}

//! HTTP: the protocol-neutral request and response heads ([`request`], [`response`]), methods,
//! request-path normalisation ([`path`]), and the HTTP/1.x codec ([`h1`]).
//!
//! Everything here is pure logic over byte slices — no sockets — so it is unit-tested in memory
//! (including randomised inputs); the connection loop in [`crate::worker`] drives it.

pub mod method;

pub use method::{Method, MethodSet};

/// Input that breaks a protocol rule, with why: a short static reason for the log and the
/// error body. The caller answers 400 (or drops an upstream connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed {
    pub reason: &'static str,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason)
    }
}

impl std::error::Error for Malformed {}

/// The value of one hexadecimal digit (either case).
pub fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The protocol version of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
    Http2,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http10 => "HTTP/1.0",
            Self::Http11 => "HTTP/1.1",
            Self::Http2 => "HTTP/2.0",
        }
    }
}

pub mod encoding;
pub mod h1;
pub mod h2;
pub mod path;
pub mod redirect;
pub mod request;
pub mod response;

//! HTTP: the protocol-neutral request and response heads ([`request`], [`response`]), methods,
//! request-path normalisation ([`path`]), and the HTTP/1.x codec ([`h1`]).
//!
//! Everything here is pure logic over byte slices — no sockets — so it is unit-tested in memory
//! (including randomised inputs); the connection loop in [`crate::worker`] drives it.

pub mod method;

pub use method::{Method, MethodSet};

/// The protocol version of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http10 => "HTTP/1.0",
            Self::Http11 => "HTTP/1.1",
        }
    }
}

pub mod exchange;
pub mod h1;
pub mod path;
pub mod request;
pub mod response;

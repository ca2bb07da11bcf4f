//! The HTTP/1.x codec, the same for both sides of the proxy: request heads parsed from clients
//! ([`request`]), response heads parsed from upstreams ([`response`]), and message bodies in one
//! [`body::Framing`] with one reader and one writer ([`body`], over [`chunked`]).
//!
//! Pure logic over byte slices, no sockets: unit-tested and fuzzed in memory.

pub mod body;
pub mod chunked;
pub mod request;
pub mod response;

pub use body::{BodyReader, BodyWriter, Framing};

//! Client connections, from accept to close — the worker's state they use ([`WorkerCtx`]), its
//! registry of idle connections ([`registry`], [`park`]) — the TLS handshake (`tls.rs`), the connection's
//! lifecycle ([`connection`]), one request's phases (`request.rs`), and the HTTP/1 and HTTP/2
//! sides of each exchange ([`h1`], [`h2`]), through which the backends answer.

pub mod connection;
mod ctx;
pub mod h1;
pub mod h2;
pub mod park;
pub mod registry;
mod request;
mod tls;

pub use ctx::WorkerCtx;

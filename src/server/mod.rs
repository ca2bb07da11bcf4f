//! Client connections, from accept to close: the TLS handshake ([`tls`]), the connection's
//! lifecycle ([`connection`]), one request's phases ([`request`]), and the HTTP/1 side of each
//! exchange ([`h1`]), through which the backends answer.

pub mod connection;
pub mod h1;
mod request;
mod tls;

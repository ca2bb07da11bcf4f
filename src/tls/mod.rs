//! TLS through rustls on the workers' own non-blocking sockets.
//!
//! [`io`] drives any rustls connection (client or server side) over a monoio `TcpStream` with
//! raw non-blocking `send`/`recv` and readiness waits, the same way the plain data path does, so
//! a TLS connection is a plain socket plus a rustls state machine owned by its task. [`client`]
//! builds the verifying client configurations for `https://` upstreams.

pub mod client;
pub mod io;
pub mod server;

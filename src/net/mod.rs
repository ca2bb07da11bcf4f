//! The transport: every byte that crosses a socket goes through this room.
//!
//! - [`client`]: an accepted client connection — plain, rustls, or kernel TLS — and the meter
//!   of what its current response sent.
//! - [`upstream`]: a connection to an upstream, plain or rustls client side.
//! - [`io`]: non-blocking `send`/`recv` with readiness waits (a worker never blocks); [`tls`]:
//!   a TLS session driven the same way; [`server_tls`]: a client's session, on rustls's
//!   unbuffered API, holding no buffer while idle.
//! - [`disk`]: file bodies by `sendfile`/`pread`, the pieces that need the disk sent from the
//!   file I/O threads of [`offload`], where the file backend's opens that would wait go too.
//! - [`splice`]: upstream → pipe → client without copying; [`tunnel`]: the two-way byte copy
//!   after a `101`.
//! - [`buffers`]: each worker's pool of read buffers; [`proxy_header`]: the PROXY protocol
//!   header a load balancer sends first.
//! - [`h2io`]: a connection as the `h2` crate reads and writes it (poll-io, rustls driven
//!   here, bytes read before the hand-over replayed).
//!
//! Nothing here knows HTTP: the codec ([`crate::http`]) and the backends use these types, never
//! the reverse.

pub mod buffers;
pub mod client;
pub mod disk;
pub mod h2io;
pub mod io;
pub mod offload;
pub mod proxy_header;
pub mod server_tls;
pub mod splice;
pub mod sys;
pub mod tls;
pub mod tunnel;
pub mod upstream;

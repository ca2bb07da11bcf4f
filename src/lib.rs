//! zerocopy-server: a reverse proxy and static file server for Linux, on io_uring.
//!
//! # Architecture tour
//!
//! Two planes and one narrow channel between them:
//!
//! - **Data plane** ([`worker`]): one thread per core, each a monoio runtime (io_uring, or
//!   epoll where io_uring is missing) with its own `SO_REUSEPORT` listener. A connection task
//!   reads a request head ([`http::h1::request`]), loads the current [`snapshot::Snapshot`], finds the
//!   route ([`route`]) and answers from a file ([`files`]: `sendfile(2)` or memory) or an
//!   upstream. Every failure is one [`error::Error`], mapped to a status in one place.
//! - **Control plane**: the configuration ([`config`]) is parsed into types, every error with
//!   its file, line, key path and reason; a [`snapshot::Snapshot`] is built from it off the data
//!   path and published through `arc-swap`. Workers load it per request and never block on it.
//!
//! `../shared/DESIGN.md` of the project draws the whole picture.

pub mod access_log;
pub mod config;
pub mod control;
pub mod error;
pub mod exchange;
pub mod files;
pub mod fsread;
pub mod http;
pub mod limiter;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod net;
pub mod preload;
pub mod privileges;
pub mod proxy;
pub mod route;
pub mod security;
pub mod server;
pub mod shared;
pub mod snapshot;
pub mod tls;
pub mod worker;

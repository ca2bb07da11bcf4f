//! End-to-end tests: the real binary, real sockets, raw bytes. Every behaviour runs under both
//! io drivers (io_uring and epoll).

mod common;

mod check;
mod control;
mod files;
mod policy;
mod protocol;
mod proxy;
mod routing;
mod upstream;
mod workers;

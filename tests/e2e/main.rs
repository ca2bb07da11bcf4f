//! End-to-end tests: the real binary, real sockets, raw bytes. Every behaviour runs under both
//! io drivers (io_uring and epoll).

mod common;

mod admin;
mod check;
mod control;
mod files;
mod forwarding;
mod groups;
mod h2;
mod interim;
mod ktls;
mod listeners;
mod observability;
mod operations;
mod parking;
mod pki;
mod policy;
mod protocol;
mod proxy;
mod proxy_tls;
mod routing;
mod site;
mod smuggling;
mod tls;
mod tls_front;
mod tls_sessions;
mod upgrade;
mod upstream;
mod workers;

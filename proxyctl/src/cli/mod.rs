//! The parts of the `proxyctl` binary below its command line: talking to the daemon
//! ([`client`]) and rendering its answers for people ([`format`], [`upstreams`]).

pub mod client;
pub mod format;
pub mod upstreams;

#[cfg(test)]
pub mod fake_daemon;

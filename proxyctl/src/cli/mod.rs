//! The parts of the `proxyctl` binary below its command line: talking to the daemon
//! ([`client`]) and rendering its answers for people ([`format`]).

pub mod client;
pub mod format;

#[cfg(test)]
pub mod fake_daemon;

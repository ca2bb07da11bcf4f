//! The admin protocol shared by `zerocopy-server` and `proxyctl`.
//!
//! The control-plane issue defines the request and response types here, once, so that the daemon
//! and the CLI cannot drift apart. This crate must not depend on the daemon.

pub mod args;
pub mod proto;

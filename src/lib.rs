//! zerocopy-server (architecture tour written below once the pieces land).

pub mod config;
pub mod http;
pub mod security;

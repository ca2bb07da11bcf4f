//! Admin protocol types (newline-delimited JSON over the daemon's Unix socket).
//!
//! Only the version constant exists so far; the commands arrive with the control-plane issue.

/// Version of the admin protocol. An incompatible change increments it, so that an old CLI
/// talking to a newer daemon gets a clear error instead of a misparse.
pub const PROTOCOL_VERSION: u32 = 1;

/// Default path of the admin socket, also the default of `[admin] socket` in the daemon's config.
pub const DEFAULT_SOCKET: &str = "/run/zerocopy-server/admin.sock";

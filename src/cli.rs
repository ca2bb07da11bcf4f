//! The daemon's command line, defined once: `main.rs` parses it, and the man page and shell
//! completions are generated from it (`cargo xtask dist`).

use std::path::PathBuf;

use clap::Parser;

use crate::worker::IoDriver;

/// A reverse proxy and static file server for Linux, on io_uring.
///
/// Serves the routes of its config file on one worker thread per core. The config is watched:
/// a changed file is checked whole and swapped in atomically (a bad one never replaces a good
/// one); SIGHUP reloads it too, SIGTERM drains and stops, SIGUSR1 reopens the log files, and
/// SIGUSR2 starts a zero-downtime binary upgrade. `proxyctl` drives the running daemon through
/// its admin socket.
#[derive(Parser, Debug)]
#[command(name = "zerocopy-server", version, about, long_about)]
pub struct Args {
    /// The config file (TOML).
    #[arg(
        long,
        short,
        value_name = "FILE",
        default_value = "/etc/zerocopy-server/config.toml"
    )]
    pub config: PathBuf,
    /// Check the config file (every error with file, line and key path) and exit: 0 when it
    /// is valid, 1 when not. Starts nothing.
    #[arg(long)]
    pub check: bool,
    /// The workers' I/O: io_uring, epoll, or auto (io_uring when the kernel allows it).
    #[arg(
        long,
        value_name = "DRIVER",
        value_enum,
        default_value_t = IoDriver::Auto,
        env = "ZEROCOPY_IO_DRIVER"
    )]
    pub io_driver: IoDriver,
    /// Internal: the hand-over channel of a binary upgrade (set by the running daemon).
    #[arg(long, hide = true, value_name = "FD")]
    pub upgrade_fd: Option<i32>,
}

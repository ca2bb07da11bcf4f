//! `proxyctl`'s command line, defined once: the binary parses it, and the man pages and shell
//! completions are generated from it (`cargo xtask dist`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::proto;

/// Drive a running zerocopy-server through its admin socket.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Args {
    /// Path of the daemon's admin socket.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "PROXYCTL_SOCKET",
        default_value = proto::DEFAULT_SOCKET
    )]
    pub socket: PathBuf,

    /// Print the daemon's answer as JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show what the daemon is doing: state, uptime, generation, load, last reload.
    Status,
    /// Re-read the config file and swap it in now; exit 1 if the daemon refuses it.
    Reload,
    /// Replace the daemon's binary without refusing a connection: start BINARY (default: the
    /// daemon's own path), hand it the listening sockets, and drain once it serves. Exit 1 when
    /// the new binary fails (it is killed; the running daemon serves on).
    Upgrade {
        /// The new binary (default: the path the daemon was started from).
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
    },
    /// Stop the daemon gracefully: wait for open connections to finish, then exit.
    Drain {
        /// Give up on open connections after this many seconds (default: the daemon's
        /// `[server] shutdown_timeout_secs`).
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
    },
    /// List the active routes and their policies.
    Routes,
    /// Show which route a request for HOST and PATH would hit and what the daemon would
    /// answer; exit 0 only when it would be served (forwarded, or a file sent), else 1.
    Explain {
        /// The request's Host header (a port is ignored).
        host: String,
        /// The request's target: a path (with a query), or an absolute URL
        /// (`http://host/path`), whose host then wins over HOST as in a real request.
        path: String,
        /// The request's method.
        #[arg(long, short = 'X', default_value = "GET")]
        method: String,
        /// The client's address, checked against allowed_ips / denied_ips.
        #[arg(long, value_name = "IP")]
        from: Option<String>,
        /// The request's Accept-Encoding (e.g. "gzip, br"): which coding it would get.
        #[arg(long, value_name = "VALUE")]
        accept_encoding: Option<String>,
    },
    /// Validate a config file without applying it, and show what a reload would change; exit 1
    /// if it is invalid.
    Check {
        /// The file to check (default: the daemon's own config file).
        file: Option<PathBuf>,
    },
    /// Show the upstream groups and the state of each server: health, ejection, drain,
    /// in-flight requests, failures, the last check and the last change.
    Upstreams {
        /// Only this group.
        group: Option<String>,
    },
    /// Drain, disable or enable one server of a group, without a reload (kept across reloads
    /// while the server exists). Drain: no new requests, in-flight ones finish, idle pooled
    /// connections close; disable: as drain, and its active checks pause.
    Upstream {
        /// The group's name (`api` for [upstreams.api]; `http://host:port` for a url route).
        group: String,
        /// A resolved address (10.0.0.5:9000), or a server as written (api.internal:9000).
        address: String,
        /// What to do.
        #[arg(value_enum)]
        action: Action,
    },
    /// Show counters since start: requests, status classes, latency and bytes per route;
    /// upstream connections; connections per worker; reloads; dropped log lines.
    Stats {
        /// Refresh once a second, with rates and percentiles over the last second (Ctrl-C
        /// stops). With --json: one JSON document per line per refresh.
        #[arg(long)]
        watch: bool,
        /// With --watch: stop after this many refreshes.
        #[arg(long, value_name = "N", requires = "watch")]
        count: Option<u64>,
    },
}

/// `proxyctl upstream GROUP ADDRESS ACTION`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Action {
    /// Finish the server's requests and send it no new ones (it stays out until enabled).
    Drain,
    /// Take the server out at once (health checks keep running).
    Disable,
    /// Put the server back into rotation.
    Enable,
}

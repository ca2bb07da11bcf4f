//! `proxyctl`: the admin CLI of zerocopy-server.
//!
//! The admin API arrives with the control-plane issue; until then this binary only knows its
//! version and where it would connect.

use clap::Parser;

/// Drive a running zerocopy-server through its admin socket.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Path of the daemon's admin socket.
    #[arg(long, default_value = proxyctl::proto::DEFAULT_SOCKET)]
    socket: String,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    eprintln!(
        "proxyctl: the admin API is not implemented yet (protocol v{}, socket {})",
        proxyctl::proto::PROTOCOL_VERSION,
        args.socket
    );
    std::process::ExitCode::from(2)
}

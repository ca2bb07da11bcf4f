//! The `zerocopy-server` binary: arguments, start-up, exit codes.
//!
//! `--check` validates a config the way `nginx -t` does: prints `ok` and exits 0, or prints
//! every error (`file:line:column: key.path: reason`) and exits 1.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use arc_swap::ArcSwap;
use clap::Parser;
use zerocopy_server::config;
use zerocopy_server::snapshot::Snapshot;
use zerocopy_server::worker::{IoDriver, Shared, Workers};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A reverse proxy and static file server on io_uring.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The config file.
    #[arg(long, short, default_value = "/etc/zerocopy-server/config.toml")]
    config: PathBuf,
    /// Validate the config and exit: prints `ok` (exit 0) or every error (exit 1).
    #[arg(long)]
    check: bool,
    /// The workers' io driver.
    #[arg(long, value_enum, default_value_t = IoDriver::Auto, env = "ZEROCOPY_IO_DRIVER")]
    io_driver: IoDriver,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = match config::load(&args.config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            if !args.check {
                eprintln!("zerocopy-server: refusing to start with an invalid config");
            }
            return ExitCode::from(1);
        }
    };
    let warnings = cfg.warnings();
    if args.check {
        for w in &warnings {
            eprintln!("warning: {w}");
        }
        // Building the snapshot also reads memory-mode files and checks their cap.
        return match Snapshot::build(cfg, 0) {
            Ok(_) => {
                println!("ok");
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::from(1)
            }
        };
    }
    let _log = match zerocopy_server::logging::init(&cfg.logging) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("zerocopy-server: {e}");
            return ExitCode::from(1);
        }
    };
    for w in &warnings {
        log::warn!("{w}");
    }
    if cfg.tls.is_some() {
        let msg = "[tls] is set, but TLS termination is not in this build yet; refusing to \
                   serve plain HTTP on a TLS port (remove [tls], or terminate TLS in front)";
        log::error!("{msg}");
        eprintln!("zerocopy-server: {msg}");
        return ExitCode::from(1);
    }
    raise_nofile_limit();
    let listen = cfg.server.listen;
    let threads = cfg.server.threads;
    let user = cfg.security.drop_privileges_user.clone();
    let group = cfg.security.drop_privileges_group.clone();
    let snapshot = match Snapshot::build(cfg, 1) {
        Ok(s) => s,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(1);
        }
    };
    let shared = Arc::new(Shared {
        snapshot: ArcSwap::from_pointee(snapshot),
    });
    let workers = match Workers::start(listen, threads, args.io_driver, shared) {
        Ok(w) => w,
        Err(e) => {
            log::error!("{e}");
            eprintln!("zerocopy-server: {e}");
            return ExitCode::from(1);
        }
    };
    // The listeners exist: root is no longer needed.
    match zerocopy_server::privileges::drop(user.as_deref(), group.as_deref()) {
        Ok(Some(done)) => log::info!("{done}"),
        Ok(None) => {}
        Err(e) => {
            log::error!("{e}");
            eprintln!("zerocopy-server: {e}");
            return ExitCode::from(1);
        }
    }
    // Workers run until the process ends; one that returns has failed.
    workers.join();
    log::error!("the workers stopped unexpectedly");
    ExitCode::from(1)
}

/// Raises the soft open-file limit to the hard one: every connection is a descriptor.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a live rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                log::warn!("cannot raise the open-file limit");
            }
        }
    }
}

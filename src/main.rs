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
use zerocopy_server::control::{self, Control};
use zerocopy_server::metrics::Registry as Metrics;
use zerocopy_server::snapshot::Snapshot;
use zerocopy_server::worker::{worker_count, IoDriver, Shared, Workers};

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
    let path = std::path::absolute(&args.config).unwrap_or_else(|_| args.config.clone());
    let bytes = match zerocopy_server::fsread::read(&path, zerocopy_server::fsread::CONFIG_CAP) {
        Ok(b) => b,
        Err(e) => {
            let e = config::ConfigErrors::file(&args.config, format!("the config file {e}"));
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let cfg = match std::str::from_utf8(&bytes)
        .map_err(|e| {
            config::ConfigErrors::file(&args.config, format!("the config file is not UTF-8: {e}"))
        })
        .and_then(|text| config::parse(text, &args.config))
    {
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
        let sessions = zerocopy_server::tls::sessions::Sessions::new();
        let fleet = zerocopy_server::group::Fleet::default();
        return match Snapshot::build(cfg, 0, &Metrics::new(1), &fleet, &sessions) {
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
    if cfg.performance.huge_pages_enabled {
        // Returns only when there is nothing to do or the restart failed (then: normal pages).
        zerocopy_server::memory::restart_with_huge_pages();
    }
    match run(args, path, bytes, cfg, &warnings) {
        Ok(never) => match never {},
        Err(e) => {
            log::error!("{e}");
            eprintln!("zerocopy-server: {e}");
            // Give the asynchronous logger a moment to write the line.
            log::logger().flush();
            ExitCode::from(1)
        }
    }
}

/// Starts everything, then hands the main thread to the control loop, which ends the process.
fn run(
    args: Args,
    path: PathBuf,
    bytes: Vec<u8>,
    cfg: config::Config,
    warnings: &[String],
) -> Result<std::convert::Infallible, String> {
    // First of all, so that no signal takes its default action from here on.
    let channel = control::Channel::new().map_err(|e| format!("cannot handle signals: {e}"))?;
    let log = zerocopy_server::logging::init(&cfg.logging)?;
    log::info!("state: starting (config {})", path.display());
    for w in warnings {
        log::warn!("{w}");
    }
    raise_nofile_limit();
    if cfg.performance.huge_pages_enabled {
        log::info!("{}", zerocopy_server::memory::huge_pages_state());
    }
    let listen = cfg.server.listen;
    let threads = worker_count(cfg.server.threads);
    let user = cfg.security.drop_privileges_user.clone();
    let group = cfg.security.drop_privileges_group.clone();
    let admin_socket = cfg.admin.socket.clone();
    let metrics_listen = cfg.admin.metrics_listen;
    let record_layer = zerocopy_server::tls::RecordLayer::decide(cfg.tls.as_ref());
    record_layer.log();
    let metrics = Arc::new(Metrics::new(threads));
    let sessions = Arc::new(zerocopy_server::tls::sessions::Sessions::new());
    let fleet = Arc::new(zerocopy_server::group::Fleet::default());
    let snapshot =
        Snapshot::build(cfg, 1, &metrics, &fleet, &sessions).map_err(|e| e.to_string())?;
    snapshot.publish_sessions(&sessions);
    let shared = Arc::new(Shared::new(
        ArcSwap::from_pointee(snapshot),
        threads,
        record_layer,
        metrics,
        sessions,
        fleet.clone(),
    ));
    // Active checks and DNS refreshes, once per daemon, off the workers.
    let groups = |shared: Arc<Shared>| move || shared.snapshot.load().groups.clone();
    zerocopy_server::group::health::spawn(groups(shared.clone()))
        .map_err(|e| format!("cannot start the health-check thread: {e}"))?;
    zerocopy_server::group::dns::spawn(groups(shared.clone()), fleet)
        .map_err(|e| format!("cannot start the DNS thread: {e}"))?;
    let workers = Workers::start(listen, threads, args.io_driver, shared.clone())
        .map_err(|e| e.to_string())?;
    // The watcher exists before the admin socket does: whoever sees the socket (a service
    // manager, a test) may change the config at once and be sure the change is seen.
    let control =
        Control::new(channel, shared, workers, path, bytes, log).map_err(|e| e.to_string())?;
    let admin = control::admin::bind(&admin_socket)?;
    let metrics = match metrics_listen {
        Some(addr) => Some((addr, zerocopy_server::control::scrape::bind(addr)?)),
        None => None,
    };
    // The listeners and the admin socket exist: root is no longer needed.
    if let Some(done) = zerocopy_server::privileges::drop(user.as_deref(), group.as_deref())? {
        log::info!("{done}");
    }
    // Only now may the workers serve.
    control.let_workers_serve();
    control::admin::serve(admin, control.sender())
        .map_err(|e| format!("cannot start the admin server: {e}"))?;
    if let Some((addr, listener)) = metrics {
        zerocopy_server::control::scrape::serve(listener, control.sender())
            .map_err(|e| format!("cannot start the metrics server: {e}"))?;
        log::info!("Prometheus metrics: http://{addr}/metrics");
    }
    log::info!("admin socket: {}", admin_socket.display());
    control.run()
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

//! The `zerocopy-server` binary: arguments, start-up, exit codes.
//!
//! `--check` validates a config the way `nginx -t` does: prints `ok` and exits 0, or prints
//! every error (`file:line:column: key.path: reason`) and exits 1.

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use clap::Parser;
use zerocopy_server::cli::Args;
use zerocopy_server::config;
use zerocopy_server::control::{self, Control};
use zerocopy_server::handover::{Channel, Message, Passed};
use zerocopy_server::metrics::Registry as Metrics;
use zerocopy_server::snapshot::Snapshot;
use zerocopy_server::worker::sockets::{self, Inherited};
use zerocopy_server::worker::{worker_count, Shared, Workers};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    // A binary upgrade's new process reports each failure to the running daemon, which then
    // serves on.
    let handover = match args.upgrade_fd.filter(|_| !args.check) {
        None => None,
        // SAFETY: `--upgrade-fd` names the descriptor the running daemon left open for this
        // process; nothing else here uses it.
        Some(fd) => match unsafe { Channel::adopt(fd) } {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("zerocopy-server: {e}");
                return ExitCode::from(1);
            }
        },
    };
    let fail = |reason: &str| {
        if let Some(c) = &handover {
            let reason = reason.to_string();
            let _ = c.send(&Message::Failed { reason }, &[]);
        }
    };
    let path = std::path::absolute(&args.config).unwrap_or_else(|_| args.config.clone());
    let bytes = match zerocopy_server::fsread::read(&path, zerocopy_server::fsread::CONFIG_CAP) {
        Ok(b) => b,
        Err(e) => {
            let e = config::ConfigErrors::file(&args.config, format!("the config file {e}"));
            eprintln!("{e}");
            fail(&e.to_string());
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
            fail(&format!("the new process refused the config: {errors}"));
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
        // The hand-over socket (and systemd's sockets, not taken yet) must survive the exec.
        if let Some(c) = &handover {
            c.keep_across_exec();
        }
        zerocopy_server::memory::restart_with_huge_pages();
    }
    // Before any thread starts (the environment is changed), after the restart with huge
    // pages (which must find LISTEN_FDS and the sockets as systemd passed them).
    let activated = zerocopy_server::worker::sockets::from_systemd();
    let start = Start {
        args,
        path,
        bytes,
        cfg,
        activated,
    };
    match run(start, &warnings, handover.as_ref()) {
        Ok(never) => match never {},
        Err(e) => {
            log::error!("{e}");
            eprintln!("zerocopy-server: {e}");
            fail(&e);
            // Give the asynchronous logger a moment to write the line.
            log::logger().flush();
            ExitCode::from(1)
        }
    }
}

/// What the daemon starts from.
struct Start {
    args: Args,
    /// The config file (absolute), its bytes, and what they parsed to.
    path: PathBuf,
    bytes: Vec<u8>,
    cfg: config::Config,
    /// Sockets systemd passed (socket activation).
    activated: Inherited,
}

/// Starts everything, then hands the main thread to the control loop, which ends the process.
/// With `handover` (a binary upgrade), the listening, admin and metrics sockets come from the
/// running daemon, and it is told when this process serves.
fn run(
    start: Start,
    warnings: &[String],
    handover: Option<&Channel>,
) -> Result<std::convert::Infallible, String> {
    let Start {
        args,
        path,
        bytes,
        cfg,
        activated,
    } = start;
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
    let threads = worker_count(cfg.server.threads);
    let user = cfg.security.drop_privileges_user.clone();
    let group = cfg.security.drop_privileges_group.clone();
    let admin_socket = cfg.admin.socket.clone();
    let metrics_listen = cfg.admin.metrics_listen;
    let balancing = cfg.performance.reuseport_balancing;
    let listeners = cfg.listeners.clone();
    let record_layer = zerocopy_server::tls::RecordLayer::decide(cfg.tls.as_ref());
    record_layer.log();
    let metrics = Arc::new(Metrics::new(threads));
    let sessions = Arc::new(zerocopy_server::tls::sessions::Sessions::new());
    let fleet = Arc::new(zerocopy_server::group::Fleet::default());
    let file_io = (
        cfg.performance.file_io_threads,
        cfg.performance.file_io_timeout,
    );
    let snapshot =
        Snapshot::build(cfg, 1, &metrics, &fleet, &sessions).map_err(|e| e.to_string())?;
    // The config is good: take over the running daemon's sockets, or systemd's.
    let (mut inherited, mut passed) = (activated, Passed::default());
    let upgraded_from = match handover {
        Some(channel) => {
            passed = receive_sockets(channel)?;
            inherited = std::mem::take(&mut passed.listeners);
            Some(upgrade_report())
        }
        None => None,
    };
    let sockets = sockets::prepare(&listeners, threads, &mut inherited, balancing)?;
    snapshot.publish_sessions(&sessions);
    zerocopy_server::telemetry::export::configure(&snapshot.config.tracing)
        .map_err(|e| format!("cannot start the span exporter thread: {e}"))?;
    let shared = Arc::new(Shared::new(
        ArcSwap::from_pointee(snapshot),
        threads,
        record_layer,
        metrics,
        sessions,
        fleet.clone(),
        &listeners,
    ));
    // Active checks and DNS refreshes, once per daemon, off the workers.
    let groups = |shared: Arc<Shared>| move || shared.snapshot.load().groups.clone();
    zerocopy_server::group::health::spawn(groups(shared.clone()))
        .map_err(|e| format!("cannot start the health-check thread: {e}"))?;
    zerocopy_server::group::dns::spawn(groups(shared.clone()), fleet)
        .map_err(|e| format!("cannot start the DNS thread: {e}"))?;
    // Opens and reads that would wait for the disk, off the workers.
    zerocopy_server::net::offload::start(file_io.0, file_io.1)
        .map_err(|e| format!("cannot start the file I/O threads: {e}"))?;
    let workers =
        Workers::start(sockets, args.io_driver, shared.clone()).map_err(|e| e.to_string())?;
    // The watcher exists before the admin socket does: whoever sees the socket (a service
    // manager, a test) may change the config at once and be sure the change is seen.
    let mut control = Control::new(channel, shared, workers, path, bytes, log, upgraded_from)
        .map_err(|e| e.to_string())?;
    let admin = match passed.admin.take().map(UnixListener::from) {
        // The running daemon's socket, if it is at the path this config names.
        Some(l)
            if l.local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(PathBuf::from))
                == Some(admin_socket.clone()) =>
        {
            l
        }
        _ => control::admin::bind(&admin_socket)?,
    };
    let metrics = match metrics_listen {
        Some(addr) => match passed.metrics.take().map(std::net::TcpListener::from) {
            Some(l) if l.local_addr().ok() == Some(addr) => Some((addr, l)),
            _ => Some((addr, zerocopy_server::control::scrape::bind(addr)?)),
        },
        None => None,
    };
    // The listeners and the admin socket exist: root is no longer needed.
    if let Some(done) = zerocopy_server::privileges::drop(user.as_deref(), group.as_deref())? {
        log::info!("{done}");
    }
    // Only now may the workers serve.
    control.let_workers_serve();
    let mut servers = control::Servers {
        admin: Some(
            control::admin::serve(admin, control.sender())
                .map_err(|e| format!("cannot start the admin server: {e}"))?,
        ),
        metrics: None,
    };
    if let Some((addr, listener)) = metrics {
        servers.metrics = Some(
            zerocopy_server::control::scrape::serve(listener, control.sender(), control.shared())
                .map_err(|e| format!("cannot start the metrics server: {e}"))?,
        );
        log::info!("Prometheus metrics: http://{addr}/metrics");
    }
    control.set_servers(servers);
    log::info!("admin socket: {}", admin_socket.display());
    if let Some(channel) = handover {
        // The running daemon stops accepting once it reads this.
        channel
            .send(&Message::Ready, &[])
            .map_err(|e| format!("cannot tell the running daemon this process serves: {e}"))?;
        log::info!("upgrade: serving; the previous process drains");
    }
    control.run()
}

/// How long the running daemon has to pass its sockets once asked.
const SOCKETS_DEADLINE: Duration = Duration::from_secs(10);

/// A binary upgrade: says hello to the running daemon and receives its sockets.
fn receive_sockets(channel: &Channel) -> Result<Passed, String> {
    let hello = Message::Hello {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    channel
        .send(&hello, &[])
        .map_err(|e| format!("cannot reach the running daemon: {e}"))?;
    let deadline = Instant::now() + SOCKETS_DEADLINE;
    let description = match channel.recv(deadline) {
        Ok(Some((m, _))) => m,
        Ok(None) => return Err("the running daemon closed the hand-over".into()),
        Err(e) => return Err(format!("no sockets from the running daemon: {e}")),
    };
    let count = match &description {
        Message::Sockets { fds, .. } => *fds,
        other => return Err(format!("expected the sockets, got {other:?}")),
    };
    let fds = channel
        .recv_fds(count, deadline)
        .map_err(|e| format!("receiving the sockets: {e}"))?;
    let passed = Passed::sort(&description, fds)?;
    log::info!(
        "upgrade: took over {} listener(s) from pid {}",
        passed.listeners.groups.len(),
        std::os::unix::process::parent_id()
    );
    Ok(passed)
}

/// This process's own view of the upgrade that started it.
fn upgrade_report() -> proxyctl::proto::UpgradeReport {
    proxyctl::proto::UpgradeReport {
        ok: true,
        at_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        old_pid: std::os::unix::process::parent_id(),
        new_pid: Some(std::process::id()),
        binary: std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        new_version: Some(env!("CARGO_PKG_VERSION").to_string()),
        error: None,
    }
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

//! The control plane: one thread that owns every decision about the running configuration.
//!
//! ```text
//!  notify (config dir) ─┐
//!  signals (HUP/TERM)  ─┼─ mpsc ─► control loop ─► ArcSwap<Snapshot>, drain flag ─► workers
//!  admin socket (JSON) ─┘                      └─► replies, log, sd_notify
//! ```
//!
//! Small helper threads only do I/O (the watcher, the signal iterator, admin connections) and
//! turn what they see into [`Event`]s; the loop here handles them one at a time, so a reload, a
//! drain and an admin question never race. The slow part of a reload or a check — parsing,
//! DNS, reading memory-mode files and certificates — runs on a helper thread of its own
//! ([`build::prepare`]) and comes back as an [`Event::Built`], so the loop keeps answering
//! `status` and acting on `SIGTERM` while it runs, and a build that does not finish within
//! [`BUILD_DEADLINE`] is given up. See `LIFECYCLE.md` beside this file for boot, reload and
//! shutdown step by step.
//!
//! The rooms: this file is the loop (events, ticks, the admin dispatch); `reload` drives a
//! reload from request to report, [`build`] is its build step (off this thread), `drain` a
//! graceful stop, `query` the admin answers (`status`, `stats`, `routes`, `explain`,
//! `check`), [`admin`] the admin socket's transport, [`scrape`] the Prometheus listener,
//! [`watch`] the file watcher and `system` signals, systemd and clocks.

pub mod admin;
pub mod build;
mod drain;
mod query;
mod reload;
pub mod scrape;
mod system;
mod upgrade;
mod upstreams;
pub mod watch;

use drain::Drain;
pub use query::policy;
use reload::{BuildSlot, Building, Queued};
use system::{monotonic_usec, notify_systemd, now_ms, spawn_signal_thread};
use upgrade::Upgrading;
pub use upgrade::{Launch, UpgradeNews};
use watch::{start_watcher, watched_files};

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proxyctl::proto::{
    self, CheckReport, ConnectionStats, DrainProgress, Explain, FileCacheStats, Http2Stats,
    Lifecycle, ListenerStatus, Policy, ReloadReport, ReloadStats, Request, Response, RouteChanges,
    RouteInfo, Stats, Status, TlsStatus, UpgradeReport,
};

use crate::config::{Backend, ProxyTarget, RouteSecurity, Scheme};
use crate::http::Method;
use crate::logging::LogGuard;
use crate::route::Target;
use crate::worker::{Shared, Workers};

/// Quiet time after the last file event before the file is read.
const DEBOUNCE: Duration = Duration::from_millis(25);
/// The longest a stream of file events can delay the read.
const DEBOUNCE_MAX: Duration = Duration::from_millis(250);
/// The longest drain: a day, like the longest `shutdown_timeout_secs`.
const MAX_DRAIN: Duration = Duration::from_secs(86_400);
/// How often a drain reports progress to `proxyctl drain`.
const DRAIN_PROGRESS: Duration = Duration::from_secs(1);
/// How long a reload's build may take before it is given up (and reported as failed; the
/// old config keeps serving). Below `proxyctl`'s 30 s wait for an answer.
pub const BUILD_DEADLINE: Duration = Duration::from_secs(20);

/// [`BUILD_DEADLINE`], or a shorter one a test sets (`ZEROCOPY_TEST_BUILD_DEADLINE_MS`).
fn build_deadline() -> Duration {
    static DEADLINE: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *DEADLINE.get_or_init(|| {
        std::env::var("ZEROCOPY_TEST_BUILD_DEADLINE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(BUILD_DEADLINE, Duration::from_millis)
    })
}
/// The longest an admin client waits for a reload's report, a queued reload's included: below
/// the admin socket's wait for an answer (25 s) and `proxyctl`'s (30 s).
const WAIT_DEADLINE: Duration = Duration::from_secs(24);
/// Config builds (reloads and checks) running at once on helper threads, given-up ones
/// included; past it a check or reload is answered "busy".
const MAX_BUILDS: usize = 4;

/// Something for the control loop to handle.
pub enum Event {
    /// Something changed in the config file's directory.
    FileChanged,
    /// A signal arrived (`SIGHUP`, `SIGTERM`, `SIGINT`).
    Signal(i32),
    /// An admin request; answers go to `reply`, the final one last. `written` says when the
    /// final answer has been written to the client.
    Admin {
        request: Request,
        reply: Sender<Response>,
        written: Receiver<()>,
    },
    /// A Prometheus scrape: the text goes to `reply`.
    Metrics { reply: Sender<String> },
    /// News from a binary upgrade's helper thread.
    Upgraded(UpgradeNews),
    /// A reload's build finished on its helper thread.
    Built {
        id: u64,
        result: Box<Result<build::Prepared, crate::config::ConfigErrors>>,
    },
}

/// The control loop's event channel, made before anything else so that signals are caught
/// from the start (see [`Channel::new`]).
pub struct Channel {
    sender: Sender<Event>,
    events: Receiver<Event>,
}

impl Channel {
    /// Creates the channel and starts turning `SIGHUP`, `SIGTERM` and `SIGINT` into events, so
    /// that none of them takes its default action once this has run.
    pub fn new() -> std::io::Result<Self> {
        let (sender, events) = mpsc::channel();
        spawn_signal_thread(sender.clone())?;
        Ok(Self { sender, events })
    }
}

/// What started a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    File,
    Signal,
    Admin,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Signal => "signal",
            Self::Admin => "admin",
        }
    }
}

/// The control thread's state.
pub struct Control {
    shared: Arc<Shared>,
    workers: Workers,
    config_path: PathBuf,
    state: Lifecycle,
    started: Instant,
    /// When the process started, for `status`.
    started_at_ms: u64,
    /// The last binary upgrade: the one that started this process, or the last one tried.
    last_upgrade: Option<UpgradeReport>,
    /// The inputs of the serving snapshot — the config's bytes, then each `[tls]` file's — so
    /// that a file event that changed none of them is a no-op ([`inputs`]).
    serving_bytes: Vec<u8>,
    last_reload: Option<ReloadReport>,
    /// Reloads that swapped in a new config, and refused ones.
    reloads: ReloadStats,
    events: Receiver<Event>,
    /// Kept so that the channel never reports "disconnected".
    sender: Sender<Event>,
    /// When the last file event arrived, while a reload is pending.
    file_event_at: Option<Instant>,
    /// When the first file event of the pending reload arrived.
    file_first_event_at: Option<Instant>,
    drain: Option<Drain>,
    /// Stop signals received: the second one exits at once (a drain asked for by `proxyctl`
    /// does not count as the first).
    stop_signals: u32,
    log: Option<LogGuard>,
    watcher: Option<notify::RecommendedWatcher>,
    /// The files the watcher watches: the config, then `[tls]`'s certificates and keys.
    watched: Vec<PathBuf>,
    /// The reload being built on a helper thread.
    building: Option<Building>,
    /// A reload asked for during a build: it starts when that one ends.
    queued: Option<Queued>,
    /// Config builds (reloads and checks) running on helper threads.
    builds: Arc<AtomicUsize>,
    /// The id of the last build started.
    last_build: u64,
    /// How this process was started: what an upgrade starts by default.
    launch: Launch,
    /// The binary upgrade under way.
    upgrading: Option<Upgrading>,
    /// A binary upgrade handed everything to a new process: this one only drains.
    upgraded: bool,
    /// The admin socket's and the metrics listener's accept threads.
    servers: Servers,
    /// The process a finished upgrade started, reaped once it exits.
    successor: Option<std::process::Child>,
}

/// The control plane's own listeners, served by threads that an upgrade stops.
#[derive(Default)]
pub struct Servers {
    pub admin: Option<admin::Served>,
    pub metrics: Option<admin::Served>,
}

impl Control {
    /// Lets the workers accept connections (once start-up is complete).
    pub fn let_workers_serve(&self) {
        self.workers.go();
        self.shared.serving.store(true, Ordering::SeqCst);
    }

    /// The admin socket's and the metrics listener's accept threads, once they run.
    pub fn set_servers(&mut self, servers: Servers) {
        self.servers = servers;
    }

    /// Sets up the control plane for running `workers`: the event channel, the config watcher
    /// and the signal thread. `serving_bytes` are the bytes the serving snapshot was built from.
    pub fn new(
        channel: Channel,
        shared: Arc<Shared>,
        workers: Workers,
        config_path: PathBuf,
        serving_bytes: Vec<u8>,
        log: LogGuard,
        upgraded_from: Option<UpgradeReport>,
    ) -> std::io::Result<Self> {
        let Channel { sender, events } = channel;
        let watched = watched_files(&config_path, &shared.snapshot.load().config);
        let watcher = start_watcher(&watched, &sender);
        let serving_bytes = build::inputs(serving_bytes, &shared.snapshot.load().config);
        let generation = shared.snapshot.load().generation;
        Ok(Self {
            shared,
            workers,
            config_path,
            state: Lifecycle::Starting,
            started: Instant::now(),
            started_at_ms: now_ms(),
            last_upgrade: upgraded_from,
            serving_bytes,
            // The boot load counts as the first (successful) load, so `status` always has one.
            reloads: ReloadStats::default(),
            last_reload: Some(ReloadReport {
                ok: true,
                trigger: "start".into(),
                at_unix_ms: now_ms(),
                generation,
                error: None,
                unchanged: false,
                restart_required: Vec::new(),
                changes: RouteChanges::default(),
            }),
            events,
            sender,
            file_event_at: None,
            file_first_event_at: None,
            drain: None,
            stop_signals: 0,
            log: Some(log),
            watcher,
            watched,
            building: None,
            queued: None,
            builds: Arc::new(AtomicUsize::new(0)),
            last_build: 0,
            launch: Launch::current(),
            upgrading: None,
            upgraded: false,
            servers: Servers::default(),
            successor: None,
        })
    }

    /// A sender for events (the admin server uses one).
    pub fn sender(&self) -> Sender<Event> {
        self.sender.clone()
    }

    /// The state shared with the workers (for the probes' thread).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Runs the control loop: never returns; the process ends from here.
    pub fn run(mut self) -> ! {
        self.set_state(Lifecycle::Running);
        // After an upgrade the old process tells systemd (MAINPID=, READY=1): it is the main
        // process until then.
        if !self.last_upgrade.as_ref().is_some_and(|u| u.ok) {
            notify_systemd("READY=1");
        }
        loop {
            let wait = self.next_wait();
            match self.events.recv_timeout(wait) {
                Ok(event) => self.on_event(event),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {}
            }
            self.tick();
        }
    }

    fn next_wait(&self) -> Duration {
        if self.drain.is_some() {
            return Duration::from_millis(50);
        }
        match self.file_event_at {
            Some(at) => DEBOUNCE.saturating_sub(at.elapsed()),
            None => Duration::from_millis(250),
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            // Debounce: wait for quiet, but never longer than DEBOUNCE_MAX after the first
            // event, so a busy directory cannot hold a real edit back.
            Event::FileChanged => {
                let now = Instant::now();
                let first = *self.file_first_event_at.get_or_insert(now);
                if now.duration_since(first) < DEBOUNCE_MAX {
                    self.file_event_at = Some(now);
                }
            }
            Event::Signal(libc::SIGHUP) => {
                self.reload(Trigger::Signal, true, Vec::new());
            }
            Event::Signal(libc::SIGUSR2) => {
                log::info!("SIGUSR2: binary upgrade");
                self.start_upgrade(None, None);
            }
            Event::Upgraded(news) => self.on_upgrade_news(news),
            Event::Signal(libc::SIGUSR1) => {
                crate::logging::reopen();
                log::info!("SIGUSR1: log files reopened");
            }
            Event::Metrics { reply } => {
                let _ = reply.send(crate::metrics::prometheus::render(&self.stats()));
            }
            Event::Signal(sig) => {
                self.stop_signals += 1;
                if self.stop_signals >= 2 {
                    log::warn!("second stop signal ({sig}): exiting now");
                    self.exit(0);
                }
                log::info!("stop signal ({sig}): draining");
                self.start_drain(None);
            }
            Event::Admin {
                request,
                reply,
                written,
            } => self.on_admin(request, reply, written),
            Event::Built { id, result } => self.finish_reload(id, *result),
        }
    }

    fn tick(&mut self) {
        if let Some(at) = self.file_event_at {
            if at.elapsed() >= DEBOUNCE && self.drain.is_none() {
                self.file_event_at = None;
                self.file_first_event_at = None;
                self.reload(Trigger::File, false, Vec::new());
            }
        }
        if let Some(b) = &self.building {
            if b.started.elapsed() >= build_deadline() || b.asked.elapsed() >= WAIT_DEADLINE {
                self.give_up_build();
            }
        }
        if self.shared.sessions.rotate_if_due(
            Instant::now(),
            crate::config::defaults::SESSION_TICKET_ROTATION,
        ) {
            log::info!("tls: session ticket key rotated (the previous one still opens tickets)");
        }
        self.tick_upgrade();
        if self.drain.is_some() {
            self.tick_drain();
        } else if self.workers.any_finished() {
            log::error!("a worker stopped unexpectedly; exiting so the service manager restarts");
            self.exit(1);
        }
    }

    fn on_admin(&mut self, request: Request, reply: Sender<Response>, written: Receiver<()>) {
        let response = match request {
            Request::Status => proto::ok(&self.status()),
            Request::Reload => {
                self.reload(Trigger::Admin, true, vec![reply]);
                return;
            }
            Request::Drain { timeout_secs } => {
                self.start_drain(timeout_secs.map(Duration::from_secs));
                let progress = self.progress();
                let _ = reply.send(proto::processing(&progress));
                if let Some(d) = &mut self.drain {
                    d.waiting.push((reply, written));
                }
                return;
            }
            Request::Routes => proto::ok(&self.routes()),
            Request::Stats => proto::ok(&self.stats()),
            Request::Upstreams { group } => match self.upstreams(group.as_deref()) {
                Ok(list) => proto::ok(&list),
                Err(error) => Response::Error { error },
            },
            Request::SetServer {
                group,
                address,
                state,
            } => match self.set_server(&group, &address, state) {
                Ok(list) => proto::ok(&list),
                Err(error) => Response::Error { error },
            },
            Request::Explain {
                host,
                path,
                method,
                client,
                accept_encoding,
            } => {
                let request = query::ExplainRequest {
                    method: method.as_deref(),
                    client: client.as_deref(),
                    accept_encoding: accept_encoding.as_deref(),
                };
                proto::ok(&self.explain(&host, &path, request))
            }
            Request::Upgrade { binary } => {
                self.start_upgrade(binary.map(PathBuf::from), Some((reply, written)));
                return;
            }
            Request::Check { file, text } => {
                self.check(file.map(PathBuf::from), text.map(String::into_bytes), reply);
                return;
            }
        };
        let _ = reply.send(response);
    }

    /// The state once an upgrade has ended: `reloading` while a build is still under way.
    fn after_upgrade(&self) -> Lifecycle {
        if self.building.is_some() {
            Lifecycle::Reloading
        } else {
            Lifecycle::Running
        }
    }

    fn set_state(&mut self, state: Lifecycle) {
        if self.state != state {
            log::info!("state: {} -> {}", self.state.as_str(), state.as_str());
            self.state = state;
        }
    }

    fn exit(&mut self, code: i32) -> ! {
        // Dropping the guard flushes the log.
        drop(self.log.take());
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        // Not exit(3): its atexit handlers (the allocator's among them) would run while the
        // worker threads still live, and one holding a lock they need hangs the exit (a CI run
        // saw a daemon log "stopped" and not exit within 10 s). Everything is flushed.
        // SAFETY: _exit ends the process at once; nothing after it runs.
        unsafe { libc::_exit(code) }
    }
}

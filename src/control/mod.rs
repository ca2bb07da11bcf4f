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
//! ([`reload::prepare`]) and comes back as an [`Event::Built`], so the loop keeps answering
//! `status` and acting on `SIGTERM` while it runs, and a build that does not finish within
//! [`BUILD_DEADLINE`] is given up. See `LIFECYCLE.md` beside this file for boot, reload and
//! shutdown step by step.

pub mod admin;
pub mod reload;
pub mod scrape;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proxyctl::proto::{
    self, CheckReport, ConnectionStats, DrainProgress, Explain, FileCacheStats, Lifecycle, Policy,
    ReloadReport, ReloadStats, Request, Response, RouteChanges, RouteInfo, Stats, Status,
    TlsStatus,
};

use crate::config::{Backend, Config, RouteSecurity, Scheme};
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
    /// A reload's build finished on its helper thread.
    Built {
        id: u64,
        result: Box<Result<reload::Prepared, crate::config::ConfigErrors>>,
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
}

/// A reload whose new snapshot a helper thread is building.
struct Building {
    id: u64,
    trigger: Trigger,
    started: Instant,
    /// When the first admin client waiting for this build asked (for a queued reload, before
    /// the build began): its answer is due within [`WAIT_DEADLINE`].
    asked: Instant,
    /// Admin clients waiting for the report.
    waiting: Vec<Sender<Response>>,
}

/// A reload asked for while another was being built.
struct Queued {
    trigger: Trigger,
    force: bool,
    waiting: Vec<Sender<Response>>,
    /// When it was first asked for.
    asked: Instant,
}

/// One running config build, counted in [`Control::builds`] until it is dropped.
struct BuildSlot(Arc<AtomicUsize>);

impl BuildSlot {
    fn take(builds: &Arc<AtomicUsize>) -> Option<Self> {
        let taken = builds.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_BUILDS).then_some(n + 1)
        });
        taken.ok().map(|_| Self(builds.clone()))
    }
}

impl Drop for BuildSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Drain {
    deadline: Instant,
    last_progress: Instant,
    /// `proxyctl drain` clients waiting for progress and the end.
    waiting: Vec<(Sender<Response>, Receiver<()>)>,
}

impl Control {
    /// Lets the workers accept connections (once start-up is complete).
    pub fn let_workers_serve(&self) {
        self.workers.go();
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
    ) -> std::io::Result<Self> {
        let Channel { sender, events } = channel;
        let watched = watched_files(&config_path, &shared.snapshot.load().config);
        let watcher = start_watcher(&watched, &sender);
        let serving_bytes = reload::inputs(serving_bytes, &shared.snapshot.load().config);
        let generation = shared.snapshot.load().generation;
        Ok(Self {
            shared,
            workers,
            config_path,
            state: Lifecycle::Starting,
            started: Instant::now(),
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
        })
    }

    /// A sender for events (the admin server uses one).
    pub fn sender(&self) -> Sender<Event> {
        self.sender.clone()
    }

    /// Runs the control loop: never returns; the process ends from here.
    pub fn run(mut self) -> ! {
        self.set_state(Lifecycle::Running);
        notify_systemd("READY=1");
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
            Request::Explain {
                host,
                path,
                method,
                client,
            } => proto::ok(&self.explain(&host, &path, method.as_deref(), client.as_deref())),
            Request::Check { file, text } => {
                self.check(file.map(PathBuf::from), text.map(String::into_bytes), reply);
                return;
            }
        };
        let _ = reply.send(response);
    }

    fn set_state(&mut self, state: Lifecycle) {
        if self.state != state {
            log::info!("state: {} -> {}", self.state.as_str(), state.as_str());
            self.state = state;
        }
    }

    /// Starts a reload transaction; `waiting` admin clients get its report. `force` rebuilds
    /// even when the file's bytes did not change (re-reading memory-mode files); a file event
    /// with unchanged bytes does nothing at all. The inputs are read here (non-blocking and
    /// capped, see [`crate::fsread`]); the build runs on a helper thread and ends in
    /// [`Self::finish_reload`]. A reload asked for during a build waits for it to end.
    fn reload(&mut self, trigger: Trigger, force: bool, waiting: Vec<Sender<Response>>) {
        self.reload_asked(trigger, force, waiting, Instant::now());
    }

    /// [`Self::reload`] for a request made at `asked`.
    fn reload_asked(
        &mut self,
        trigger: Trigger,
        force: bool,
        waiting: Vec<Sender<Response>>,
        asked: Instant,
    ) {
        let current = self.shared.snapshot.load_full();
        if self.drain.is_some() {
            log::warn!(
                "reload ({}) refused: the daemon is draining",
                trigger.as_str()
            );
            let report = ReloadReport {
                ok: false,
                trigger: trigger.as_str().into(),
                at_unix_ms: now_ms(),
                generation: current.generation,
                error: Some("the daemon is draining; it reloads nothing any more".into()),
                unchanged: false,
                restart_required: Vec::new(),
                changes: RouteChanges::default(),
            };
            answer(waiting, &report);
            return;
        }
        if self.building.is_some() {
            let q = self.queued.get_or_insert(Queued {
                trigger,
                force,
                waiting: Vec::new(),
                asked,
            });
            q.force |= force;
            q.waiting.extend(waiting);
            return;
        }
        let bytes = match reload::read_config(&self.config_path) {
            Ok(b) => b,
            Err(e) => {
                let error = format!("{}: {e}", self.config_path.display());
                log::warn!(
                    "reload ({}) refused; still serving generation {}: {error}",
                    trigger.as_str(),
                    current.generation
                );
                let report = self.record(trigger, current.generation, Err(error));
                answer(waiting, &report);
                return;
            }
        };
        let config_len = bytes.len();
        let inputs = reload::inputs(bytes, &current.config);
        if !force && inputs == self.serving_bytes {
            log::debug!("config file event: bytes unchanged, nothing to do");
            let report = ReloadReport {
                ok: true,
                trigger: trigger.as_str().into(),
                at_unix_ms: now_ms(),
                generation: current.generation,
                error: None,
                unchanged: true,
                restart_required: Vec::new(),
                changes: RouteChanges::default(),
            };
            answer(waiting, &report);
            return;
        }
        let Some(slot) = BuildSlot::take(&self.builds) else {
            let error = format!(
                "busy: {MAX_BUILDS} config builds are still running (builds that did not finish \
                 within {}s); try again later",
                BUILD_DEADLINE.as_secs()
            );
            log::warn!("reload ({}) refused: {error}", trigger.as_str());
            let report = self.record(trigger, current.generation, Err(error));
            answer(waiting, &report);
            return;
        };
        self.set_state(Lifecycle::Reloading);
        notify_systemd(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
        self.last_build += 1;
        let id = self.last_build;
        let config_bytes = inputs.get(..config_len).unwrap_or_default().to_vec();
        drop(inputs);
        let (path, metrics, sessions, events) = (
            self.config_path.clone(),
            self.shared.metrics.clone(),
            self.shared.sessions.clone(),
            self.sender.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name("zcs-build".into())
            .spawn(move || {
                let result = reload::prepare(&path, &config_bytes, &current, &metrics, &sessions);
                drop(slot);
                let _ = events.send(Event::Built {
                    id,
                    result: Box::new(result),
                });
            });
        if let Err(e) = spawned {
            let generation = self.shared.snapshot.load().generation;
            let report = self.record(
                trigger,
                generation,
                Err(format!("cannot start a build thread: {e}")),
            );
            answer(waiting, &report);
            self.back_to_running();
            return;
        }
        self.building = Some(Building {
            id,
            trigger,
            started: Instant::now(),
            asked,
            waiting,
        });
    }

    /// Publishes a finished build (or reports why not), then starts a queued reload.
    fn finish_reload(
        &mut self,
        id: u64,
        result: Result<reload::Prepared, crate::config::ConfigErrors>,
    ) {
        let Some(b) = self.building.take_if(|b| b.id == id) else {
            log::debug!("the result of an abandoned config build arrived; dropped");
            // Counters it made for its routes go with it.
            drop(result);
            self.shared
                .snapshot
                .load()
                .retain_metrics(&self.shared.metrics);
            return;
        };
        let current = self.shared.snapshot.load_full();
        let trigger = b.trigger;
        let report = match result {
            // A drain began while it was built: nothing is swapped in any more.
            Ok(_) if self.drain.is_some() => self.record(
                trigger,
                current.generation,
                Err("the daemon began draining; the new config was not swapped in".into()),
            ),
            Ok(prepared) => {
                for w in &prepared.warnings {
                    log::warn!("{w}");
                }
                let reload::Prepared {
                    snapshot,
                    changes,
                    restart_required: restart,
                    inputs,
                    ..
                } = prepared;
                // Watch the new config's [tls] files, if they moved.
                let watched = watched_files(&self.config_path, &snapshot.config);
                crate::logging::set_level(&snapshot.config.logging);
                let generation =
                    reload::commit(&self.shared.snapshot, &self.shared.sessions, snapshot);
                self.serving_bytes = inputs;
                if watched != self.watched {
                    self.watcher = start_watcher(&watched, &self.sender);
                    self.watched = watched;
                }
                log::info!(
                    "reloaded ({}): generation {generation}; routes +{} -{} ~{}",
                    trigger.as_str(),
                    changes.added.len(),
                    changes.removed.len(),
                    changes.changed.len()
                );
                if !restart.is_empty() {
                    log::warn!(
                        "restart required for changes to: {} (the running values stay in effect)",
                        restart.join(", ")
                    );
                }
                let mut report = self.record(trigger, generation, Ok(()));
                report.changes = changes;
                report.restart_required = restart;
                self.last_reload = Some(report.clone());
                report
            }
            Err(errors) => {
                log::warn!(
                    "reload ({}) refused; still serving generation {}:\n{errors}",
                    trigger.as_str(),
                    current.generation
                );
                self.record(trigger, current.generation, Err(errors.to_string()))
            }
        };
        answer(b.waiting, &report);
        // Counters of routes the serving config does not have (removed, or built for a
        // refused file) are forgotten.
        self.shared
            .snapshot
            .load()
            .retain_metrics(&self.shared.metrics);
        self.back_to_running();
    }

    /// Gives up a build that ran past [`BUILD_DEADLINE`]: reported as failed, the old config
    /// keeps serving, and its result is dropped if it ever comes.
    fn give_up_build(&mut self) {
        let Some(b) = self.building.take() else {
            return;
        };
        let generation = self.shared.snapshot.load().generation;
        let error = format!(
            "the new config did not finish building within {:.1}s (a DNS lookup or a file that \
             does not answer?); still serving generation {generation}",
            build_deadline().as_secs_f64()
        );
        log::warn!("reload ({}) given up: {error}", b.trigger.as_str());
        let report = self.record(b.trigger, generation, Err(error));
        answer(b.waiting, &report);
        self.back_to_running();
    }

    /// The end of a reload attempt: `running` again (unless draining), and the next reload if
    /// one was asked for meanwhile.
    fn back_to_running(&mut self) {
        if self.drain.is_none() {
            self.set_state(Lifecycle::Running);
            notify_systemd("READY=1");
        }
        if let Some(q) = self.queued.take() {
            self.reload_asked(q.trigger, q.force, q.waiting, q.asked);
        }
    }

    /// Builds a report and keeps it as the last reload.
    fn record(
        &mut self,
        trigger: Trigger,
        generation: u64,
        result: Result<(), String>,
    ) -> ReloadReport {
        match result {
            Ok(()) => self.reloads.succeeded += 1,
            Err(_) => self.reloads.failed += 1,
        }
        let report = ReloadReport {
            ok: result.is_ok(),
            trigger: trigger.as_str().into(),
            at_unix_ms: now_ms(),
            generation,
            error: result.err(),
            unchanged: false,
            restart_required: Vec::new(),
            changes: RouteChanges::default(),
        };
        self.last_reload = Some(report.clone());
        report
    }

    fn start_drain(&mut self, timeout: Option<Duration>) {
        if self.drain.is_some() {
            return;
        }
        let timeout = timeout
            .unwrap_or(self.shared.snapshot.load().config.server.shutdown_timeout)
            .min(MAX_DRAIN);
        self.set_state(Lifecycle::Draining);
        notify_systemd("STOPPING=1");
        log::info!(
            "draining: {} connections open, {} requests in flight; exiting by {}s at the latest",
            self.shared.connections(),
            self.shared.in_flight(),
            timeout.as_secs()
        );
        self.shared.draining.store(true, Ordering::SeqCst);
        self.drain = Some(Drain {
            deadline: Instant::now() + timeout,
            last_progress: Instant::now(),
            waiting: Vec::new(),
        });
    }

    fn progress(&self) -> DrainProgress {
        let left = self.drain.as_ref().map_or(Duration::ZERO, |d| {
            d.deadline.saturating_duration_since(Instant::now())
        });
        DrainProgress {
            connections: self.shared.connections(),
            in_flight: self.shared.in_flight(),
            seconds_left: left.as_secs(),
        }
    }

    fn tick_drain(&mut self) {
        let progress = self.progress();
        let Some(deadline) = self.drain.as_ref().map(|d| d.deadline) else {
            return;
        };
        let timed_out = Instant::now() >= deadline;
        // Every worker returns once its listener is closed and its last connection is done, so
        // a connection accepted just before the drain began is never cut off.
        if self.workers.all_finished() || timed_out {
            if timed_out && progress.connections > 0 {
                log::warn!(
                    "drain deadline reached with {} connections open; closing them",
                    progress.connections
                );
            }
            self.finish_drain();
        }
        let Some(drain) = &mut self.drain else { return };
        if drain.last_progress.elapsed() >= DRAIN_PROGRESS {
            drain.last_progress = Instant::now();
            drain
                .waiting
                .retain(|(reply, _)| reply.send(proto::processing(&progress)).is_ok());
        }
    }

    /// The end of a drain: tell the waiting clients, then exit 0.
    fn finish_drain(&mut self) -> ! {
        self.set_state(Lifecycle::Stopped);
        let progress = DrainProgress {
            connections: self.shared.connections(),
            in_flight: self.shared.in_flight(),
            seconds_left: 0,
        };
        let waiting = self.drain.take().map(|d| d.waiting).unwrap_or_default();
        for (reply, written) in waiting {
            if reply.send(proto::ok(&progress)).is_ok() {
                let _ = written.recv_timeout(Duration::from_secs(1));
            }
        }
        log::info!("stopped");
        self.exit(0)
    }

    fn exit(&mut self, code: i32) -> ! {
        // Dropping the guard flushes the log.
        drop(self.log.take());
        std::process::exit(code)
    }

    fn status(&self) -> Status {
        let snapshot = self.shared.snapshot.load();
        Status {
            state: self.state,
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs(),
            generation: snapshot.generation,
            config_path: self.config_path.display().to_string(),
            workers: self.workers.len(),
            io_driver: self.workers.driver.clone(),
            connections: self.shared.connections(),
            connections_over_cap: self.shared.sum(|w| &w.over_cap),
            idle_parked: self.shared.sum(|w| &w.parked),
            in_flight: self.shared.in_flight(),
            last_reload: self.last_reload.clone(),
            tls: snapshot.tls.as_ref().map(|_| TlsStatus {
                record_layer: self.shared.record_layer.describe(),
                handshakes: self.shared.sum(|w| &w.tls_handshakes),
                ktls: self.shared.sum(|w| &w.ktls),
                ktls_fallback: self.shared.sum(|w| &w.ktls_fallback),
                ktls_refused: self.shared.sum(|w| &w.ktls_refused),
            }),
        }
    }

    /// Every counter, summed over the workers now.
    fn stats(&self) -> Stats {
        let snapshot = self.shared.snapshot.load();
        let (routes, upstreams) = snapshot.collect_stats(&self.shared.metrics);
        let workers = self
            .shared
            .workers
            .iter()
            .enumerate()
            .map(|(worker, w)| proxyctl::proto::WorkerStats {
                worker,
                connections: w.connections.load(Ordering::Relaxed),
                connections_total: w.accepted.load(Ordering::Relaxed),
                requests: w.requests.load(Ordering::Relaxed),
            })
            .collect();
        Stats {
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            connections: ConnectionStats {
                open: self.shared.connections(),
                total: self.shared.sum(|w| &w.accepted),
                over_cap: self.shared.sum(|w| &w.over_cap),
                parked: self.shared.sum(|w| &w.parked),
            },
            routes,
            upstreams,
            workers,
            reloads: self.reloads.clone(),
            tls: self.status().tls,
            log_lines_dropped: crate::logging::lines_dropped(),
            file_cache: FileCacheStats {
                files: self.shared.sum(|w| &w.file_cache_files),
                bytes: self.shared.sum(|w| &w.file_cache_bytes),
                hits: self.shared.sum(|w| &w.file_cache_hits),
                misses: self.shared.sum(|w| &w.file_cache_misses),
            },
        }
    }

    fn routes(&self) -> Vec<RouteInfo> {
        let snapshot = self.shared.snapshot.load();
        snapshot
            .router
            .entries()
            .iter()
            .map(|e| {
                let (backend, target, mode, index) = match &e.route.backend {
                    Backend::File(f) => (
                        "File",
                        f.path.display().to_string(),
                        Some(match f.mode {
                            crate::config::Mode::Sendfile => "sendfile".to_string(),
                            crate::config::Mode::Memory => "memory".to_string(),
                        }),
                        Some(f.index.clone()),
                    ),
                    Backend::Proxy(p) => ("Proxy", p.url.to_string(), None, None),
                };
                RouteInfo {
                    host: e.host.clone(),
                    prefix: e.written.clone(),
                    backend: backend.into(),
                    target,
                    mode,
                    index,
                    policy: policy(&e.route.security),
                }
            })
            .collect()
    }

    /// What the daemon would answer to `method target` with `Host: host` from `client`, by the
    /// data path's own rules: the head parser's host and target handling, path normalisation,
    /// the router, the route's policy and the file lookup ([`crate::files::probe`]).
    fn explain(
        &self,
        host: &str,
        target: &str,
        method: Option<&str>,
        client: Option<&str>,
    ) -> Explain {
        let mut answer = Explain {
            matched: false,
            host: host.to_string(),
            path: target.to_string(),
            prefix: None,
            backend: None,
            resolved: None,
            policy: None,
            reason: None,
            status: None,
        };
        let refuse = |answer: &mut Explain, e: crate::error::Error| {
            answer.status = e.status();
            answer.reason = Some(e.detail.to_string());
        };
        let (host, raw_path, query) = match crate::http::h1::request::route_of(host, target) {
            Ok(r) => r,
            Err(e) => {
                refuse(&mut answer, e.into());
                return answer;
            }
        };
        answer.host = host.clone();
        answer.path = raw_path.clone();
        let path = match crate::http::path::normalize(&raw_path) {
            Ok(p) => p,
            Err(e) => {
                answer.status = Some(400);
                answer.reason = Some(format!("the path is refused: {}", e.reason));
                return answer;
            }
        };
        answer.path = path.clone();
        let snapshot = self.shared.snapshot.load();
        let Some(m) = snapshot.router.lookup(&host, &path) else {
            answer.status = Some(404);
            answer.reason = Some(if snapshot.router.has_host(&host) {
                format!("no route of {host:?} matches {path:?}")
            } else {
                format!("no route for host {host:?}")
            });
            return answer;
        };
        answer.matched = true;
        answer.prefix = m.entry.written.clone();
        let security = &m.entry.route.security;
        answer.policy = Some(policy(security));
        answer.backend = Some(
            match m.entry.route.backend {
                Backend::File(_) => "File",
                Backend::Proxy(_) => "Proxy",
            }
            .into(),
        );
        // Policy first, in the data path's order: addresses, then methods.
        if let Some(client) = client {
            match client.parse::<std::net::IpAddr>() {
                Ok(ip) if !security.allows_ip(ip) => {
                    answer.status = Some(403);
                    answer.reason = Some(format!("client address {ip} not allowed"));
                    return answer;
                }
                Ok(_) => {}
                Err(_) => {
                    answer.reason = Some(format!("{client:?} is not an IP address; not checked"));
                }
            }
        }
        let method = match crate::http::Method::parse(method.unwrap_or("GET")) {
            Some(m) => m,
            None => {
                answer.status = Some(400);
                answer.reason = Some("malformed method".into());
                return answer;
            }
        };
        if let Some(methods) = &security.allowed_methods {
            if !methods.contains(&method) {
                answer.status = Some(405);
                answer.reason = Some(format!(
                    "{method} is not among the route's allowed_methods ({})",
                    methods.allow_header()
                ));
                return answer;
            }
        }
        match (&m.entry.route.backend, m.target()) {
            (Backend::File(_), _) if !matches!(method, Method::Get | Method::Head) => {
                answer.status = Some(405);
                answer.reason = Some("a File route serves GET and HEAD".into());
            }
            (Backend::File(_), Target::NotFound) => {
                answer.status = Some(404);
                answer.reason = Some(format!(
                    "the route serves one file at exactly {:?}; anything below it is 404",
                    m.entry.prefix.as_deref().unwrap_or("/")
                ));
            }
            (Backend::File(f), target) => match crate::files::probe(&m, f) {
                Ok(file) => {
                    answer.status = Some(200);
                    answer.resolved = Some(file.display().to_string());
                }
                Err(e) => {
                    answer.resolved = target.display().map(|p| p.display().to_string());
                    refuse(&mut answer, e);
                }
            },
            (Backend::Proxy(p), Target::Upstream(path)) => {
                let scheme = match p.url.scheme {
                    Scheme::Http => "http",
                    Scheme::Https => "https",
                };
                let host = if p.url.host.contains(':') {
                    format!("[{}]", p.url.host)
                } else {
                    p.url.host.clone()
                };
                let query = query.map(|q| format!("?{q}")).unwrap_or_default();
                answer.resolved = Some(format!("{scheme}://{host}:{}{path}{query}", p.url.port));
            }
            (Backend::Proxy(_), _) => {}
        }
        answer
    }

    /// Checks `text` as the file `file`, or the daemon's own config file, on a helper thread
    /// that answers `reply` itself. The daemon reads no other file for a check: the client
    /// sends the text, read with its own permissions.
    fn check(&self, file: Option<PathBuf>, text: Option<Vec<u8>>, reply: Sender<Response>) {
        let path = file.unwrap_or_else(|| self.config_path.clone());
        let mut report = CheckReport {
            ok: false,
            file: path.display().to_string(),
            errors: Vec::new(),
            changes: RouteChanges::default(),
            restart_required: Vec::new(),
        };
        let read = match text {
            Some(t) => Ok(t),
            None if path == self.config_path => reload::read_config(&path),
            None => Err(
                "send the file's text to check it (proxyctl does); the daemon reads \
                         only its own config file"
                    .to_string(),
            ),
        };
        let bytes = match read {
            Ok(b) => b,
            Err(e) => {
                report.errors.push(format!("{}: {e}", path.display()));
                let _ = reply.send(proto::ok(&report));
                return;
            }
        };
        let Some(slot) = BuildSlot::take(&self.builds) else {
            let _ = reply.send(Response::Error {
                error: format!(
                    "busy: {MAX_BUILDS} config builds are running; try again in a few seconds"
                ),
            });
            return;
        };
        let current = self.shared.snapshot.load_full();
        let spawned = std::thread::Builder::new()
            .name("zcs-check".into())
            .spawn(move || {
                // A check builds with counters and sessions of its own: it must not touch the
                // running ones.
                let scratch = crate::metrics::Registry::new(1);
                let sessions = crate::tls::sessions::Sessions::new();
                match reload::prepare(&path, &bytes, &current, &scratch, &sessions) {
                    Ok(prepared) => {
                        report.ok = true;
                        report.changes = prepared.changes;
                        report.restart_required = prepared.restart_required;
                    }
                    Err(errors) => {
                        report.errors = errors.0.iter().map(ToString::to_string).collect()
                    }
                }
                drop(slot);
                let _ = reply.send(proto::ok(&report));
            });
        if let Err(e) = spawned {
            log::warn!("cannot start a check thread: {e}");
        }
    }
}

/// Sends a reload's report to every admin client waiting for it.
fn answer(waiting: Vec<Sender<Response>>, report: &ReloadReport) {
    for w in waiting {
        let _ = w.send(proto::ok(report));
    }
}

/// The policy in force, as the admin protocol shows it.
pub fn policy(s: &RouteSecurity) -> Policy {
    let nets = |set: &crate::security::IpSet| set.nets().iter().map(ToString::to_string).collect();
    Policy {
        allowed_methods: s.allowed_methods.as_ref().map(|m| {
            m.allow_header()
                .split(", ")
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect()
        }),
        allowed_ips: nets(&s.allowed_ips),
        denied_ips: nets(&s.denied_ips),
        rate_limit_requests_per_min: s.rate_limit_requests_per_min,
        max_request_body_size: s.max_request_body_size,
        max_chunked_body_size: s.max_chunked_body_size,
        max_request_header_size: s.max_request_header_size,
        client_header_timeout_secs: s.client_header_timeout.as_secs(),
        client_body_timeout_secs: s.client_body_timeout.as_secs(),
        backend_connect_timeout_secs: s.backend_connect_timeout.as_secs(),
        backend_response_timeout_secs: s.backend_response_timeout.as_secs(),
        max_idle_connections_per_host: s.max_idle_connections_per_host,
        idle_connection_timeout_secs: s.idle_connection_timeout.as_secs(),
        trusted_proxies: nets(&s.trusted_proxies),
        allow_underscores_in_headers: s.allow_underscores_in_headers,
        allowed_upgrades: s.allowed_upgrades.clone(),
        rate_limit_ipv6_prefix: s.rate_limit_ipv6_prefix,
    }
}

fn spawn_signal_thread(events: Sender<Event>) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGUSR1,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    std::thread::Builder::new()
        .name("zcs-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if events.send(Event::Signal(sig)).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}

/// Tells systemd about the lifecycle (`READY=1`, `RELOADING=1`, `STOPPING=1`) when it runs us
/// as `Type=notify`; a no-op otherwise.
fn notify_systemd(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => {
            log::warn!("sd_notify: {e}");
            return;
        }
    };
    let bytes = path.as_encoded_bytes();
    let result = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = result {
        log::warn!("sd_notify {state:?}: {e}");
    }
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The config file and the `[tls]` files of `config`: what the watcher watches.
fn watched_files(config_path: &Path, config: &Config) -> Vec<PathBuf> {
    let mut files = vec![config_path.to_path_buf()];
    if let Some(tls) = &config.tls {
        files.extend(tls.files());
    }
    files
}

fn start_watcher(files: &[PathBuf], sender: &Sender<Event>) -> Option<notify::RecommendedWatcher> {
    match watch::watch(files, sender.clone()) {
        Ok(w) => Some(w),
        Err(e) => {
            log::warn!(
                "cannot watch {} for changes ({e}); reload with SIGHUP or proxyctl reload",
                files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            None
        }
    }
}

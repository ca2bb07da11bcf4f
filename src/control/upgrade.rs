//! The old side of a binary upgrade (`proxyctl upgrade`, `SIGUSR2`): start the new binary,
//! hand it the listening sockets ([`crate::handover`]), and once it reports ready stop
//! accepting and drain — or, when it fails, exits, or is not ready within
//! `[server] upgrade_timeout_secs`, kill it and serve on as if nothing happened (the sockets
//! never left this process).
//!
//! The hand-over runs on a helper thread; the loop hears its end as an [`Event::Upgraded`].

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use proxyctl::proto::UpgradeProgress;

use super::*;
use crate::handover::{Channel, ListenerSockets, Message};

/// How often the helper looks at the new process while it waits for a message.
const CHILD_POLL: Duration = Duration::from_millis(100);

/// How this process was started, for starting the next one the same way.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The binary as it was at start (its path; the file there may since have been
    /// replaced, which is the point).
    pub binary: PathBuf,
    /// The arguments after the program name, without `--upgrade-fd`.
    pub args: Vec<OsString>,
}

impl Launch {
    /// This process's binary and arguments. The binary is the path it was started by
    /// (`argv[0]`, found in `PATH` when it has no slash), not where that path led then — so
    /// that a symlink switched to a new release (`/opt/zcs/current`) starts the new release.
    pub fn current() -> Self {
        let binary = std::env::args_os()
            .next()
            .and_then(|arg0| started_as(&PathBuf::from(arg0)))
            .or_else(|| {
                std::env::current_exe().ok().map(|p| {
                    // A binary replaced on disk since start reads as "path (deleted)".
                    let s = p.as_os_str().to_string_lossy();
                    match s.strip_suffix(" (deleted)") {
                        Some(path) => PathBuf::from(path),
                        None => p,
                    }
                })
            })
            .unwrap_or_else(|| PathBuf::from("zerocopy-server"));
        let mut args = Vec::new();
        let mut skip = false;
        for a in std::env::args_os().skip(1) {
            if skip {
                skip = false;
                continue;
            }
            let text = a.to_string_lossy();
            if text == "--upgrade-fd" {
                skip = true;
                continue;
            }
            if text.starts_with("--upgrade-fd=") {
                continue;
            }
            args.push(a);
        }
        Self { binary, args }
    }
}

/// The absolute path `arg0` named at start: relative to the working directory when it has a
/// slash, else the first executable of that name in `PATH`.
fn started_as(arg0: &std::path::Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if arg0.as_os_str().is_empty() {
        return None;
    }
    if arg0.components().count() > 1 || arg0.is_absolute() {
        return std::path::absolute(arg0).ok();
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(arg0))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// An upgrade under way.
pub(super) struct Upgrading {
    pub(super) binary: String,
    pub(super) new_pid: Option<u32>,
    pub(super) phase: &'static str,
    pub(super) deadline: Instant,
    pub(super) last_progress: Instant,
    /// `proxyctl upgrade` clients waiting for the outcome.
    pub(super) waiting: Vec<(Sender<Response>, Receiver<()>)>,
    /// Set to make the helper thread give up (and kill the new process): a drain began, or
    /// the helper overran its deadline.
    pub(super) cancel: Arc<std::sync::atomic::AtomicBool>,
}

/// How long past its deadline the loop waits for the helper thread before it gives up on the
/// upgrade itself.
const HELPER_GRACE: Duration = Duration::from_secs(5);

/// What the helper thread reports.
pub enum UpgradeNews {
    /// The new process runs and loads its config.
    Started { pid: u32 },
    /// It has the sockets and starts serving.
    Passed,
    /// It serves: this process stops accepting and drains. `child` is kept to be reaped.
    Ready {
        pid: u32,
        version: String,
        child: Child,
    },
    /// It failed; killed if it still ran. This process serves on.
    Failed { pid: Option<u32>, reason: String },
}

impl Control {
    /// Starts an upgrade to `binary` (default: this process's own path), answering `reply`
    /// when it ends.
    pub(super) fn start_upgrade(
        &mut self,
        binary: Option<PathBuf>,
        reply: Option<(Sender<Response>, Receiver<()>)>,
    ) {
        let refuse = |reply: Option<(Sender<Response>, Receiver<()>)>, error: String| {
            log::warn!("upgrade refused: {error}");
            if let Some((reply, _)) = reply {
                let _ = reply.send(Response::Error { error });
            }
        };
        if self.drain.is_some() {
            return refuse(reply, "the daemon is draining".into());
        }
        if let Some(u) = &self.upgrading {
            let who = u
                .new_pid
                .map_or(String::new(), |p| format!(" (new pid {p})"));
            return refuse(reply, format!("an upgrade is already under way{who}"));
        }
        let binary = binary.unwrap_or_else(|| self.launch.binary.clone());
        let sockets = match self.sockets_to_pass() {
            Ok(s) => s,
            Err(e) => return refuse(reply, format!("cannot pass the listening sockets: {e}")),
        };
        let timeout = self.shared.snapshot.load().config.server.upgrade_timeout;
        log::info!(
            "upgrade: starting {} (it has {}s to become ready)",
            binary.display(),
            timeout.as_secs()
        );
        notify_systemd(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=upgrading to {}",
            monotonic_usec(),
            binary.display()
        ));
        let events = self.sender.clone();
        let launch = Launch {
            binary: binary.clone(),
            args: self.launch.args.clone(),
        };
        let deadline = Instant::now() + timeout;
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cancelled = cancel.clone();
        let spawned = std::thread::Builder::new()
            .name("zcs-upgrade".into())
            .spawn(move || {
                let news = hand_over(&launch, sockets, deadline, &cancelled, &events);
                let _ = events.send(Event::Upgraded(news));
            });
        if let Err(e) = spawned {
            notify_systemd("READY=1");
            return refuse(reply, format!("cannot start the upgrade thread: {e}"));
        }
        self.set_state(Lifecycle::Upgrading);
        self.upgrading = Some(Upgrading {
            binary: binary.display().to_string(),
            new_pid: None,
            phase: "starting",
            deadline,
            last_progress: Instant::now(),
            waiting: reply.into_iter().collect(),
            cancel,
        });
    }

    /// Ends an upgrade under way because of `why` (a drain began, the helper overran): the
    /// helper kills the new process; the waiting clients are told.
    pub(super) fn cancel_upgrade(&mut self, why: &str) {
        let Some(u) = self.upgrading.take() else {
            return;
        };
        u.cancel.store(true, Ordering::SeqCst);
        if let Some(pid) = u.new_pid {
            // SAFETY: kill with the pid of the child this process started (not reaped yet:
            // the helper thread reaps it).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        log::warn!("upgrade cancelled: {why}");
        self.last_upgrade = Some(UpgradeReport {
            ok: false,
            at_unix_ms: now_ms(),
            old_pid: std::process::id(),
            new_pid: u.new_pid,
            binary: u.binary,
            new_version: None,
            error: Some(format!("cancelled: {why}")),
        });
        for (reply, _) in u.waiting {
            let _ = reply.send(Response::Error {
                error: format!("upgrade cancelled: {why}"),
            });
        }
    }

    /// Copies of every socket a new process takes over, and their description.
    fn sockets_to_pass(&self) -> std::io::Result<(Message, Vec<OwnedFd>)> {
        let mut fds = Vec::new();
        let mut listeners = Vec::new();
        let dup = |fd: RawFd| {
            // SAFETY: the descriptor is open: workers hold their listeners until they drain,
            // and no drain runs (checked by the caller, on this thread); the accept threads
            // hold theirs until stopped, which only a finished upgrade does.
            crate::net::sys::dup_cloexec(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })
        };
        for l in &self.workers.sockets {
            for &fd in &l.fds {
                fds.push(dup(fd)?);
            }
            listeners.push(ListenerSockets {
                address: l.address,
                count: l.fds.len(),
            });
        }
        let admin = self.servers.admin.as_ref().map(|s| s.fd);
        if let Some(fd) = admin {
            fds.push(dup(fd)?);
        }
        let metrics = self.servers.metrics.as_ref().map(|s| s.fd);
        if let Some(fd) = metrics {
            fds.push(dup(fd)?);
        }
        let description = Message::Sockets {
            listeners,
            admin: admin.is_some(),
            metrics: metrics.is_some(),
            fds: fds.len(),
        };
        Ok((description, fds))
    }

    pub(super) fn on_upgrade_news(&mut self, news: UpgradeNews) {
        match news {
            UpgradeNews::Started { pid } => {
                if let Some(u) = &mut self.upgrading {
                    u.new_pid = Some(pid);
                    u.phase = "loading its config";
                    log::info!("upgrade: new process {pid} started");
                } else {
                    // Cancelled before its pid was known.
                    // SAFETY: kill with the pid of a child this process started.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
            }
            UpgradeNews::Passed => {
                if let Some(u) = &mut self.upgrading {
                    u.phase = "has the sockets, starting";
                }
            }
            UpgradeNews::Ready {
                pid,
                version,
                mut child,
            } => {
                // It may have died since it said so: then it is a failure like any other.
                let exited = child.try_wait().ok().flatten();
                if self.upgrading.is_none() || exited.is_some() {
                    let _ = child.kill();
                    let _ = child.wait();
                    let reason = match exited {
                        Some(status) => {
                            format!("the new process exited after it was ready ({status})")
                        }
                        None => "cancelled".into(),
                    };
                    return self.on_upgrade_news(UpgradeNews::Failed {
                        pid: Some(pid),
                        reason,
                    });
                }
                self.successor = Some(child);
                self.finish_upgrade(pid, version)
            }
            UpgradeNews::Failed { pid, reason } => {
                let Some(u) = self.upgrading.take() else {
                    return;
                };
                log::error!("upgrade failed, serving on: {reason}");
                notify_systemd(&format!("READY=1\nSTATUS=upgrade failed: {reason}"));
                self.set_state(self.after_upgrade());
                let report = UpgradeReport {
                    ok: false,
                    at_unix_ms: now_ms(),
                    old_pid: std::process::id(),
                    new_pid: pid.or(u.new_pid),
                    binary: u.binary,
                    new_version: None,
                    error: Some(reason.clone()),
                };
                self.last_upgrade = Some(report);
                for (reply, _) in u.waiting {
                    let _ = reply.send(Response::Error {
                        error: format!("upgrade failed; the running daemon serves on: {reason}"),
                    });
                }
            }
        }
    }

    /// The new process serves: it becomes the main process; this one stops taking admin and
    /// metrics connections and connections on the listeners, and drains.
    fn finish_upgrade(&mut self, pid: u32, version: String) {
        let Some(u) = self.upgrading.take() else {
            return;
        };
        for served in [&mut self.servers.admin, &mut self.servers.metrics]
            .into_iter()
            .flatten()
        {
            served.stop();
        }
        notify_systemd(&format!(
            "MAINPID={pid}\nREADY=1\nSTATUS=upgraded: pid {pid} serves; pid {} drains",
            std::process::id()
        ));
        // The MAINPID change must reach systemd before this process can exit.
        system::notify_barrier(Duration::from_secs(5));
        log::info!("upgrade: pid {pid} (version {version}) serves; this process drains");
        let report = UpgradeReport {
            ok: true,
            at_unix_ms: now_ms(),
            old_pid: std::process::id(),
            new_pid: Some(pid),
            binary: u.binary,
            new_version: Some(version),
            error: None,
        };
        self.last_upgrade = Some(report.clone());
        for (reply, written) in u.waiting {
            if reply.send(proto::ok(&report)).is_ok() {
                let _ = written.recv_timeout(Duration::from_secs(1));
            }
        }
        self.upgraded = true;
        self.start_drain(None);
    }

    /// Progress lines to the waiting clients, once a second; the new process reaped once it
    /// has exited; an upgrade whose helper overran its deadline given up.
    pub(super) fn tick_upgrade(&mut self) {
        if let Some(child) = &mut self.successor {
            if let Ok(Some(status)) = child.try_wait() {
                log::warn!("the process this one was upgraded to exited ({status})");
                self.successor = None;
            }
        }
        if self
            .upgrading
            .as_ref()
            .is_some_and(|u| Instant::now() > u.deadline + HELPER_GRACE)
        {
            self.cancel_upgrade("the hand-over did not end within upgrade_timeout_secs");
            self.set_state(self.after_upgrade());
            notify_systemd("READY=1\nSTATUS=upgrade failed: the hand-over did not end in time");
        }
        let Some(u) = &mut self.upgrading else {
            return;
        };
        if u.last_progress.elapsed() < DRAIN_PROGRESS {
            return;
        }
        u.last_progress = Instant::now();
        let progress = UpgradeProgress {
            new_pid: u.new_pid.unwrap_or(0),
            phase: u.phase.to_string(),
            seconds_left: u
                .deadline
                .saturating_duration_since(Instant::now())
                .as_secs(),
        };
        u.waiting
            .retain(|(reply, _)| reply.send(proto::processing(&progress)).is_ok());
    }
}

/// The hand-over, on the helper thread: spawn, wait for `Hello`, pass the sockets, wait for
/// `Ready`. Any failure kills and reaps the new process.
fn hand_over(
    launch: &Launch,
    sockets: (Message, Vec<OwnedFd>),
    deadline: Instant,
    cancel: &std::sync::atomic::AtomicBool,
    events: &Sender<Event>,
) -> UpgradeNews {
    let (channel, theirs) = match Channel::pair() {
        Ok(p) => p,
        Err(e) => {
            return UpgradeNews::Failed {
                pid: None,
                reason: format!("cannot make the hand-over socket: {e}"),
            }
        }
    };
    let mut child = match spawn(launch, theirs) {
        Ok(c) => c,
        Err(e) => {
            return UpgradeNews::Failed {
                pid: None,
                reason: format!("cannot start {}: {e}", launch.binary.display()),
            }
        }
    };
    let pid = child.id();
    let _ = events.send(Event::Upgraded(UpgradeNews::Started { pid }));
    let watch = Watch {
        deadline,
        cancel,
        events,
    };
    match converse(&channel, &mut child, sockets, &watch) {
        Ok(version) if !cancel.load(Ordering::SeqCst) => UpgradeNews::Ready {
            pid,
            version,
            child,
        },
        Ok(_) => {
            let _ = child.kill();
            let _ = child.wait();
            UpgradeNews::Failed {
                pid: Some(pid),
                reason: "cancelled".into(),
            }
        }
        Err(reason) => {
            let _ = child.kill();
            let _ = child.wait();
            UpgradeNews::Failed {
                pid: Some(pid),
                reason,
            }
        }
    }
}

fn spawn(launch: &Launch, theirs: OwnedFd) -> std::io::Result<Child> {
    let fd = theirs.as_raw_fd();
    let mut command = Command::new(&launch.binary);
    command
        .args(&launch.args)
        .arg("--upgrade-fd")
        .arg(fd.to_string())
        // systemd's socket activation was for this process.
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .stdin(Stdio::null());
    // SAFETY: between fork and exec the child only makes system calls (async-signal-safe):
    // every descriptor from 3 up is marked close-on-exec — io_uring's accept gives client
    // sockets without the flag, and a client socket kept open by the new process would keep
    // an old connection from ever closing — then the hand-over socket is kept open.
    unsafe {
        command.pre_exec(move || {
            close_on_exec_from(3);
            if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn();
    // Our copy of the child's end closes here, so its exit reads as the end of the channel.
    drop(theirs);
    child
}

/// Marks every descriptor from `first` up close-on-exec: `close_range(2)` (Linux 5.11), else
/// one `fcntl` per possible descriptor. Only system calls: safe between fork and exec.
fn close_on_exec_from(first: u32) {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with the CLOEXEC flag closes nothing; it sets a flag.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if rc == 0 {
        return;
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the live struct; fcntl on any number is harmless (EBADF).
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        let last = lim.rlim_cur.min(1 << 20) as libc::c_int;
        for fd in first as libc::c_int..last {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
}

/// What the helper watches while it waits.
struct Watch<'a> {
    deadline: Instant,
    cancel: &'a std::sync::atomic::AtomicBool,
    events: &'a Sender<Event>,
}

/// Waits for `Hello`, passes the sockets, waits for `Ready`: the new version, or why not.
fn converse(
    channel: &Channel,
    child: &mut Child,
    (description, fds): (Message, Vec<OwnedFd>),
    watch: &Watch,
) -> Result<String, String> {
    let version = match next(channel, child, watch)? {
        Message::Hello { version, .. } => version,
        other => return Err(format!("the new process said {other:?} instead of hello")),
    };
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    channel
        .send_sockets(&description, &raw, watch.deadline)
        .map_err(|e| format!("cannot pass the sockets: {e}"))?;
    drop(fds);
    let _ = watch.events.send(Event::Upgraded(UpgradeNews::Passed));
    match next(channel, child, watch)? {
        Message::Ready => Ok(version),
        other => Err(format!("the new process said {other:?} instead of ready")),
    }
}

/// The next message, watching the child: its failure message, its exit, a cancellation or
/// the deadline end the wait with an error. Never blocks past the deadline.
fn next(channel: &Channel, child: &mut Child, watch: &Watch) -> Result<Message, String> {
    let exited = |status: Option<std::process::ExitStatus>| {
        let status = status.map_or("it closed the hand-over".to_string(), |s| s.to_string());
        format!("the new process exited before it was ready ({status}); see its errors in the log")
    };
    loop {
        if watch.cancel.load(Ordering::SeqCst) {
            return Err("cancelled".into());
        }
        // Past the deadline, a message already queued still counts.
        let past = Instant::now() >= watch.deadline;
        let step = if past {
            Instant::now() + Duration::from_millis(1)
        } else {
            (Instant::now() + CHILD_POLL).min(watch.deadline)
        };
        match channel.recv(step) {
            Ok(Some((Message::Failed { reason }, _))) => return Err(reason),
            Ok(Some((m, _))) => return Ok(m),
            Ok(None) => return Err(exited(child.try_wait().ok().flatten())),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(exited(Some(status)));
                }
            }
            Err(e) => return Err(format!("the hand-over failed: {e}")),
        }
        if past {
            return Err(format!(
                "the new process was not ready within upgrade_timeout_secs (pid {}); killed",
                child.id()
            ));
        }
    }
}

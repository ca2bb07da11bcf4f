//! Process and access logging through `ftlog`: asynchronous loggers whose bounded channels the
//! workers only enqueue into; ftlog's background thread formats and writes.
//!
//! `[logging]` as the spec has it:
//! - `level` filters the process log (a reload changes it live);
//! - `channel_size` bounds each channel. A worker never waits for the logger: when a channel is
//!   full the line is dropped and counted ([`lines_dropped`], shown by `proxyctl stats` and
//!   `/metrics`);
//! - `flush_interval_ms`: lines are buffered and written at most this long after the previous
//!   write (immediately with 0). An idle logger thread also writes what it holds after a second;
//! - `max_log_size`: a file about to grow past it is rotated first — `path` becomes `path.1`,
//!   `path.1` becomes `path.2`, … up to [`ROTATED_KEPT`] files; 0 = never rotate;
//! - `file_path`: the process log file (appended to), or stderr when unset.
//!
//! `SIGUSR1` reopens both files ([`reopen`]) for an external rotator (logrotate without
//! `copytruncate`): rename the file, send the signal, and the next line goes to a new file.
//!
//! The access log (`access_log`, `access_log_format`, an extension) is a second ftlog logger
//! with its own channel, written by the same rules; its lines are the caller's, without ftlog's
//! time and level prefix. A worker collects its access lines in a batch of its own (up to
//! [`BATCH_BYTES`]) and hands the batch to the channel when it is full, and at least every
//! flush interval ([`flush_access`], from a timer on each worker), so the per-message cost of
//! the channel and the logger thread is paid once per batch, not once per request. A dropped
//! batch counts all its lines as dropped.

use std::cell::RefCell;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::config::{AccessLogFormat, Logging};

/// Rotated files kept next to a log file: `path.1` (newest) … `path.5`.
pub const ROTATED_KEPT: usize = 5;
/// A buffer this large is written at once, whatever the flush interval.
const MAX_BUFFER: usize = 64 * 1024;

/// Lines dropped by both loggers because their channel was full.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Bumped by [`reopen`]; each file notices the change at its next write or flush.
static REOPEN: AtomicU64 = AtomicU64::new(0);
/// Set while [`LogGuard`] flushes for the exit: buffers are written whatever the interval.
static FORCE_FLUSH: AtomicBool = AtomicBool::new(false);
/// Set once this process handed over to a new one (a binary upgrade): both append to the same
/// files, and only the new one rotates them.
static NO_ROTATION: AtomicBool = AtomicBool::new(false);
/// The access logger, when `[logging] access_log` is set.
static ACCESS: OnceLock<AccessLog> = OnceLock::new();
/// A batch of access lines is handed to the logger once it is this large.
pub const BATCH_BYTES: usize = 16 * 1024;

thread_local! {
    /// This worker's access lines not yet handed to the logger, and how many.
    static BATCH: RefCell<(String, u64)> = const { RefCell::new((String::new(), 0)) };
}

/// Flushes both loggers when dropped (at exit).
pub struct LogGuard {
    _private: (),
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        flush_now();
    }
}

/// Writes everything logged so far, whatever the flush interval.
pub fn flush_now() {
    FORCE_FLUSH.store(true, Ordering::SeqCst);
    log::logger().flush();
    if let Some(a) = ACCESS.get() {
        log::Log::flush(&a.logger);
    }
    FORCE_FLUSH.store(false, Ordering::SeqCst);
}

/// Installs the process logger and, when configured, the access logger. Fails when a log file
/// cannot be opened (the message names it), or when called twice.
pub fn init(cfg: &Logging) -> Result<LogGuard, String> {
    let main = Gated::build(cfg, cfg.file_path.as_deref(), false, ftlog::FtLogFormatter)?;
    log::set_boxed_logger(Box::new(main)).map_err(|e| format!("cannot start logging: {e}"))?;
    set_level(cfg);
    // ftlog's thread writes what it buffered only when the next line comes, or after a second
    // of quiet; this keeps `flush_interval_ms` for the last lines of a burst.
    let every = cfg.flush_interval.max(MIN_BATCH_WAIT);
    std::thread::Builder::new()
        .name("zcs-log-flush".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            log::logger().flush();
            if let Some(a) = ACCESS.get() {
                log::Log::flush(&a.logger);
            }
        })
        .map_err(|e| format!("cannot start logging: {e}"))?;
    if let Some(path) = &cfg.access_log {
        let logger = Gated::build(cfg, Some(path), true, LineOnly)?;
        let _ = ACCESS.set(AccessLog {
            logger,
            format: cfg.access_log_format,
            flush_every: cfg.flush_interval.clamp(MIN_BATCH_WAIT, MAX_BATCH_WAIT),
        });
    }
    Ok(LogGuard { _private: () })
}

/// Applies `[logging] level` (at start-up, and live at a reload).
pub fn set_level(cfg: &Logging) {
    log::set_max_level(cfg.level.filter());
}

/// This process no longer rotates its log files by size (a binary upgrade's old process: the
/// new one, writing the same files, rotates them).
pub fn stop_rotating() {
    NO_ROTATION.store(true, Ordering::Relaxed);
}

/// Asks both log files to be reopened (`SIGUSR1`).
pub fn reopen() {
    REOPEN.fetch_add(1, Ordering::SeqCst);
}

/// Log lines dropped so far because a channel was full.
pub fn lines_dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// The access log's format, when there is an access log.
pub fn access_format() -> Option<AccessLogFormat> {
    ACCESS.get().map(|a| a.format)
}

/// How often a worker hands its batch of access lines over ([`flush_access`]), when there is an
/// access log: the flush interval, within 10 ms and 1 s.
pub fn access_flush_every() -> Option<Duration> {
    ACCESS.get().map(|a| a.flush_every)
}

/// Adds one access log line to this thread's batch: `write` appends the line (without a
/// newline). A full batch goes to the logger at once; dropped and counted when the channel is
/// full.
pub fn access(write: impl FnOnce(&mut String)) {
    let Some(a) = ACCESS.get() else {
        return;
    };
    BATCH.with(|b| {
        let Ok(mut b) = b.try_borrow_mut() else {
            return;
        };
        let (text, lines) = &mut *b;
        if !text.is_empty() {
            text.push('\n');
        }
        write(text);
        *lines += 1;
        if text.len() >= BATCH_BYTES {
            hand_over(a, text, lines);
        }
    });
}

/// Hands this thread's batch of access lines to the logger (from each worker's timer, and when
/// a worker stops).
pub fn flush_access() {
    let Some(a) = ACCESS.get() else {
        return;
    };
    BATCH.with(|b| {
        if let Ok(mut b) = b.try_borrow_mut() {
            let (text, lines) = &mut *b;
            hand_over(a, text, lines);
        }
    });
}

fn hand_over(a: &AccessLog, text: &mut String, lines: &mut u64) {
    if *lines == 0 {
        return;
    }
    if a.logger.admit() {
        log::Log::log(
            &a.logger.inner,
            &log::Record::builder()
                .args(format_args!("{text}"))
                .level(log::Level::Info)
                .target("access")
                .build(),
        );
    } else {
        DROPPED.fetch_add(*lines, Ordering::Relaxed);
    }
    text.clear();
    *lines = 0;
}

/// Bounds of how long access lines wait in a worker's batch.
const MIN_BATCH_WAIT: Duration = Duration::from_millis(10);
const MAX_BATCH_WAIT: Duration = Duration::from_secs(1);

struct AccessLog {
    logger: Gated,
    format: AccessLogFormat,
    flush_every: Duration,
}

/// How many lines a logger's channel holds now. The gate counts a line in before it is
/// enqueued and the file counts it out when ftlog writes it, so the count is never below the
/// channel's real length: a line that would not fit is refused here, counted, and never
/// reaches ftlog's channel.
struct Gate {
    queued: AtomicUsize,
    capacity: usize,
}

/// An ftlog logger behind a [`Gate`].
struct Gated {
    inner: ftlog::Logger,
    gate: Arc<Gate>,
    /// One flush at a time. ftlog, handling a flush, takes the messages queued behind it as
    /// log lines; a second flush request among them is dropped unanswered, and its sender
    /// waits forever (seen: the exit's flush meeting the periodic one, a daemon that never
    /// exited after a drain). Only the control plane's threads flush, never a worker.
    flushing: std::sync::Mutex<()>,
}

impl Gated {
    fn build(
        cfg: &Logging,
        path: Option<&Path>,
        bare_lines: bool,
        format: impl ftlog::FtLogFormat + 'static,
    ) -> Result<Self, String> {
        let gate = Arc::new(Gate {
            queued: AtomicUsize::new(0),
            capacity: cfg.channel_size.max(1),
        });
        let dest = match path {
            None => Dest::Stderr,
            Some(p) => Dest::File(LogFile::open(p, cfg.max_log_size)?),
        };
        let writer = Writer {
            dest,
            buf: Vec::new(),
            flush_interval: cfg.flush_interval,
            last_flush: Instant::now(),
            reopen_seen: REOPEN.load(Ordering::SeqCst),
            gate: gate.clone(),
            bare_lines,
        };
        let time_format = time::format_description::parse_owned::<2>(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z",
        )
        .map_err(|e| format!("cannot start logging: {e}"))?;
        let inner = ftlog::builder()
            .format(format)
            .time_format(time_format)
            .utc()
            // Filtering is `log`'s max level (changed live on reload); ftlog passes everything.
            .max_log_level(log::LevelFilter::Trace)
            // Room for flush requests beside the gated lines: the channel itself never fills.
            .bounded(gate.capacity + 64, false)
            .print_omitted_count(false)
            .root(writer)
            .build()
            .map_err(|e| format!("cannot start logging: {e}"))?;
        Ok(Self {
            inner,
            gate,
            flushing: std::sync::Mutex::new(()),
        })
    }
}

impl Gated {
    /// Takes a place in the channel for one message: `false` when it is full.
    fn admit(&self) -> bool {
        if self.gate.queued.fetch_add(1, Ordering::Relaxed) >= self.gate.capacity {
            self.gate.queued.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }
}

impl log::Log for Gated {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        if self.admit() {
            // Without key-values: ftlog skips records that carry its `limit` or `drop` keys
            // before they reach the writer, which would leave their place in the gate taken.
            self.inner.log(
                &log::Record::builder()
                    .args(*record.args())
                    .level(record.level())
                    .target(record.target())
                    .module_path(record.module_path())
                    .file(record.file())
                    .line(record.line())
                    .build(),
            );
        } else {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn flush(&self) {
        let _one = self.flushing.lock().unwrap_or_else(|e| e.into_inner());
        self.inner.flush();
    }
}

/// The access log's format: the line as given.
struct LineOnly;

impl ftlog::FtLogFormat for LineOnly {
    fn msg(&self, record: &log::Record) -> Box<dyn Send + Sync + fmt::Display> {
        Box::new(record.args().to_string())
    }
}

enum Dest {
    Stderr,
    File(LogFile),
}

/// ftlog's writer: buffers lines, writes them by the flush interval, rotates by size and
/// reopens on request. Runs on ftlog's thread only, where blocking file I/O is fine.
struct Writer {
    dest: Dest,
    buf: Vec<u8>,
    flush_interval: Duration,
    last_flush: Instant,
    reopen_seen: u64,
    gate: Arc<Gate>,
    /// Strip ftlog's `time delay ` prefix (the access log's lines are complete).
    bare_lines: bool,
}

impl Writer {
    fn write_out(&mut self) {
        let reopen = REOPEN.load(Ordering::SeqCst);
        if reopen != self.reopen_seen {
            self.reopen_seen = reopen;
            if let Dest::File(f) = &mut self.dest {
                f.reopen();
            }
        }
        if !self.buf.is_empty() {
            match &mut self.dest {
                Dest::Stderr => {
                    let _ = std::io::stderr().write_all(&self.buf);
                }
                Dest::File(f) => f.write(&self.buf),
            }
            self.buf.clear();
        }
        self.last_flush = Instant::now();
    }
}

impl Write for Writer {
    /// ftlog writes each message with one `write_all`; this takes it whole. A message is one
    /// line, or (access log) a batch of lines, each of which is checked against the size limit
    /// on its own.
    fn write(&mut self, message: &[u8]) -> std::io::Result<usize> {
        self.gate.queued.fetch_sub(1, Ordering::Relaxed);
        // A reopen first: the size limit is about the new file, not the renamed one.
        if REOPEN.load(Ordering::SeqCst) != self.reopen_seen {
            self.write_out();
        }
        let text = if self.bare_lines {
            strip_prefix(message)
        } else {
            message
        };
        let fits = match &self.dest {
            Dest::File(f) => f.takes(self.buf.len(), text.len()),
            Dest::Stderr => true,
        };
        if fits {
            self.buf.extend_from_slice(text);
        } else {
            self.write_lines(text);
        }
        if self.buf.len() >= MAX_BUFFER || self.last_flush.elapsed() >= self.flush_interval {
            self.write_out();
        }
        Ok(message.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if FORCE_FLUSH.load(Ordering::SeqCst)
            || self.last_flush.elapsed() >= self.flush_interval
            || REOPEN.load(Ordering::SeqCst) != self.reopen_seen
        {
            self.write_out();
        }
        Ok(())
    }
}

impl Writer {
    /// Buffers `text` line by line, rotating before a line that would take the file past
    /// `max_log_size`.
    fn write_lines(&mut self, text: &[u8]) {
        for line in text.split_inclusive(|&b| b == b'\n') {
            if let Dest::File(f) = &self.dest {
                if f.would_pass_max(self.buf.len(), line.len())
                    && !NO_ROTATION.load(Ordering::Relaxed)
                {
                    self.write_out();
                    if let Dest::File(f) = &mut self.dest {
                        f.rotate();
                    }
                }
            }
            self.buf.extend_from_slice(line);
        }
    }
}

/// ftlog's line is `time delay message\n`; the message is the rest after the second space.
fn strip_prefix(line: &[u8]) -> &[u8] {
    let mut spaces = line
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b' ')
        .map(|(i, _)| i);
    match (spaces.next(), spaces.next()) {
        (Some(_), Some(at)) => &line[at + 1..],
        _ => line,
    }
}

/// A log file: appended to, rotated by size, reopened by path.
struct LogFile {
    path: PathBuf,
    /// `None` after a failed reopen: retried at every write, lines go to stderr meanwhile.
    file: Option<File>,
    /// Bytes in the file.
    size: u64,
    /// `max_log_size`; 0 = no rotation (also after a failed rotation, until a reopen).
    max: u64,
    configured_max: u64,
    /// Rotation was given up after a failed rename: a reopen restores `max`.
    max_after_reopen: bool,
}

impl LogFile {
    fn open(path: &Path, max: u64) -> Result<Self, String> {
        let file = Self::append(path).map_err(|e| {
            format!(
                "cannot open the log file {}: {e}; create its directory or fix [logging] \
                 file_path / access_log",
                path.display()
            )
        })?;
        let size = file.metadata().map_or(0, |m| m.len());
        Ok(Self {
            path: path.to_path_buf(),
            file: Some(file),
            size,
            max,
            configured_max: max,
            max_after_reopen: false,
        })
    }

    fn append(path: &Path) -> std::io::Result<File> {
        OpenOptions::new().create(true).append(true).open(path)
    }

    /// Whether `len` more bytes after `pending` buffered ones stay within `max_log_size`.
    fn takes(&self, pending: usize, len: usize) -> bool {
        self.max == 0 || self.size + (pending + len) as u64 <= self.max
    }

    /// Whether a `line` after `pending` buffered bytes would take the file past
    /// `max_log_size` (an empty file takes any line).
    fn would_pass_max(&self, pending: usize, line: usize) -> bool {
        let before = self.size + pending as u64;
        self.max > 0 && before > 0 && before + line as u64 > self.max
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.file.is_none() {
            self.reopen();
        }
        match &mut self.file {
            Some(f) => match f.write_all(bytes) {
                Ok(()) => self.size += bytes.len() as u64,
                Err(e) => {
                    let _ = writeln!(
                        std::io::stderr(),
                        "zerocopy-server: cannot write the log file {}: {e}",
                        self.path.display()
                    );
                }
            },
            None => {
                let _ = std::io::stderr().write_all(bytes);
            }
        }
    }

    fn reopen(&mut self) {
        if std::mem::take(&mut self.max_after_reopen) {
            self.max = self.configured_max;
        }
        self.file = None;
        match Self::append(&self.path) {
            Ok(f) => {
                self.size = f.metadata().map_or(0, |m| m.len());
                self.file = Some(f);
            }
            Err(e) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "zerocopy-server: cannot reopen the log file {}: {e}",
                    self.path.display()
                );
            }
        }
    }

    /// `path.4` → `path.5`, …, `path` → `path.1`, and a new `path`. When `path` cannot be
    /// renamed (a directory the daemon may no longer write to), it says so once and keeps
    /// writing to the file as it is, without rotating again.
    fn rotate(&mut self) {
        let numbered = |n: usize| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        for n in (1..ROTATED_KEPT).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
        }
        if let Err(e) = std::fs::rename(&self.path, numbered(1)) {
            let _ = writeln!(
                std::io::stderr(),
                "zerocopy-server: cannot rotate the log file {} ({e}); it grows past \
                 max_log_size until the daemon can rename it (SIGUSR1 after fixing retries)",
                self.path.display()
            );
            self.max = 0;
            self.max_after_reopen = true;
            return;
        }
        self.reopen();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two threads flushing one logger at once both come back (ftlog alone loses one of two
    /// concurrent flush requests now and then, and its sender waits forever).
    #[test]
    fn concurrent_flushes_all_return() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Logging {
            level: crate::config::LogLevel::Info,
            channel_size: 1000,
            flush_interval: Duration::from_millis(1),
            max_log_size: 0,
            file_path: None,
            access_log: None,
            access_log_format: crate::config::AccessLogFormat::Combined,
        };
        let logger =
            Arc::new(Gated::build(&cfg, Some(&dir.path().join("f.log")), true, LineOnly).unwrap());
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let (logger, done) = (logger.clone(), done_tx.clone());
            std::thread::spawn(move || {
                for _ in 0..3000 {
                    log::Log::flush(&*logger);
                }
                let _ = done.send(());
            });
        }
        for i in 0..4 {
            assert!(
                done_rx.recv_timeout(Duration::from_secs(20)).is_ok(),
                "flushing thread {i} never came back"
            );
        }
    }

    #[test]
    fn ftlogs_prefix_is_stripped_from_access_lines() {
        assert_eq!(
            strip_prefix(b"2026-11-30T05:44:03.123Z 0ms 127.0.0.1 - - [x] \"GET / HTTP/1.1\"\n"),
            b"127.0.0.1 - - [x] \"GET / HTTP/1.1\"\n"
        );
        assert_eq!(strip_prefix(b"odd"), b"odd");
    }

    #[test]
    fn files_rotate_before_passing_the_maximum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z.log");
        let mut f = LogFile::open(&path, 10).unwrap();
        assert!(!f.would_pass_max(0, 100), "an empty file takes any line");
        assert!(!f.takes(0, 100), "but not as one batch");
        assert!(f.takes(4, 6));
        assert!(f.would_pass_max(5, 6), "buffered bytes count");
        f.write(b"12345678\n");
        assert!(!f.would_pass_max(0, 1));
        assert!(f.would_pass_max(0, 2));
        assert!(f.would_pass_max(1, 1));
        for i in 0..(ROTATED_KEPT + 2) {
            f.rotate();
            f.write(format!("line {i}\n").as_bytes());
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        let last = ROTATED_KEPT + 1;
        assert_eq!(read(&path), format!("line {last}\n"));
        assert_eq!(
            read(&dir.path().join("z.log.1")),
            format!("line {}\n", last - 1)
        );
        assert!(dir.path().join(format!("z.log.{ROTATED_KEPT}")).exists());
        assert!(!dir
            .path()
            .join(format!("z.log.{}", ROTATED_KEPT + 1))
            .exists());
    }
}

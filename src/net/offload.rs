//! The file I/O threads: where a file open or read that would wait for a disk goes, so that a
//! cold file never stalls the worker and every other connection on it (nginx's `aio threads`).
//!
//! A worker first tries each call in a form the kernel answers without waiting:
//! `openat2(RESOLVE_CACHED)` resolves the path only from the dentry cache, `preadv2(RWF_NOWAIT)`
//! reads only what the page cache holds. Both fail with `EAGAIN` instead of blocking; the
//! request then hands that file's open (and the read that fills the file cache) to these
//! threads with [`run`] and waits for the answer like for any other I/O, while the worker serves
//! its other connections. A warm file costs nothing more than before; a cold one costs a
//! thread hand-off instead of a stalled worker.
//!
//! The threads (`[performance] file_io_threads`, started with the workers, shared by all of
//! them) take jobs from one bounded queue ([`QUEUE`]). When it is full, a request gets 503 at
//! once rather than a place in an ever longer line: the disk is that far behind. A request
//! waits at most `file_io_timeout_ms` for its job (a hung mount): then it gets 503 and the job,
//! which cannot be taken back from the kernel, finishes on its thread for no one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use monoio::blocking::{BlockingTask, ThreadPool};

use crate::error::{Error, ErrorKind, Side};

/// Jobs waiting for a file I/O thread, at most; more is answered 503.
pub const QUEUE: usize = 16_384;

/// The detail of the error when the queue is full.
pub const QUEUE_FULL: &str = "file I/O queue full: the disk is not keeping up";

/// The handle each worker's runtime holds: `spawn_blocking` schedules through it.
#[derive(Clone)]
pub struct Threads {
    jobs: SyncSender<BlockingTask>,
}

/// The process's threads, and how long a request waits for one of their answers.
static THREADS: OnceLock<(Threads, Duration)> = OnceLock::new();

/// Jobs handed to the threads since the process started (`file_cache.offloaded`).
static OFFLOADED: AtomicU64 = AtomicU64::new(0);

/// Starts `count` file I/O threads for the process (once; later calls return the same
/// threads), and returns the handle a worker's runtime attaches. A request waits `timeout` at
/// most for a job's answer.
pub fn start(count: usize, timeout: Duration) -> std::io::Result<Threads> {
    if let Some((t, _)) = THREADS.get() {
        return Ok(t.clone());
    }
    let (jobs, queue) = sync_channel::<BlockingTask>(QUEUE);
    let queue = Arc::new(Mutex::new(queue));
    for i in 0..count.max(1) {
        let queue = queue.clone();
        std::thread::Builder::new()
            .name(format!("zcs-file-io-{i}"))
            .spawn(move || serve(&queue))?;
    }
    Ok(THREADS
        .get_or_init(|| (Threads { jobs }, timeout))
        .0
        .clone())
}

/// One thread: runs jobs until the process ends.
fn serve(queue: &Mutex<Receiver<BlockingTask>>) {
    loop {
        // The lock is held only to take a job: the threads take turns waiting, not working.
        let job = match queue.lock() {
            Ok(q) => q.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        match job {
            Ok(task) => task.run(),
            Err(_) => return,
        }
    }
}

impl ThreadPool for Threads {
    fn schedule_task(&self, task: BlockingTask) {
        match self.jobs.try_send(task) {
            Ok(()) => {}
            // Dropping the task completes its handle with `Canceled`: [`run`] answers 503.
            Err(TrySendError::Full(task)) | Err(TrySendError::Disconnected(task)) => drop(task),
        }
    }
}

/// The detail of the error when a job's answer did not come in time.
pub const TIMED_OUT: &str = "file I/O timed out: the disk (or mount) did not answer";

/// Runs `job` on a file I/O thread and waits for it without blocking the worker, for
/// `file_io_timeout_ms` at most. Only a runtime with [`Threads`] attached (the workers') may
/// call it.
pub async fn run<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    OFFLOADED.fetch_add(1, Ordering::Relaxed);
    let timeout = THREADS
        .get()
        .map_or(crate::config::defaults::FILE_IO_TIMEOUT, |(_, t)| *t);
    match monoio::time::timeout(timeout, monoio::spawn_blocking(job)).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(_)) => Err(Error::new(
            ErrorKind::ServiceUnavailable,
            Side::Internal,
            QUEUE_FULL,
        )),
        Err(_) => Err(Error::new(
            ErrorKind::ServiceUnavailable,
            Side::Internal,
            TIMED_OUT,
        )),
    }
}

/// Jobs handed to the threads since the process started.
pub fn offloaded() -> u64 {
    OFFLOADED.load(Ordering::Relaxed)
}

/// Whether this kernel takes `RESOLVE_CACHED` (Linux 5.12), as [`probe_cached_opens`] found.
static CACHED_OPENS: OnceLock<bool> = OnceLock::new();

/// Whether a worker should try an open from the dentry cache first: `false` on a kernel without
/// `RESOLVE_CACHED` (every open that misses the file cache goes to the threads). Asked of the
/// kernel once.
pub fn cached_opens() -> bool {
    *CACHED_OPENS.get_or_init(probe_cached_opens)
}

/// Asks the kernel, with an open of `/` that the dentry cache always holds, whether it takes
/// `RESOLVE_CACHED`. Decided once rather than from the first refusal on a request's path: a
/// file system may refuse one name with `EINVAL` (vfat, a character it cannot store) without
/// the flag being unknown.
fn probe_cached_opens() -> bool {
    let root = c"/";
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
    let ok = match super::sys::open_beneath(None, root, flags, libc::RESOLVE_CACHED) {
        Ok(_) => true,
        // `/` not in the dentry cache is impossible; if it were, the flag is known.
        Err(e) => e.raw_os_error() == Some(libc::EAGAIN),
    };
    if !ok {
        log::info!("openat2 RESOLVE_CACHED is not available (Linux 5.12+): every file open that misses the file cache goes to the file I/O threads");
    }
    ok
}

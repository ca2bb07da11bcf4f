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
//! once rather than a place in an ever longer line: the disk is that far behind.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};

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

static THREADS: OnceLock<Threads> = OnceLock::new();

/// Starts `count` file I/O threads for the process (once; later calls return the same
/// threads), and returns the handle a worker's runtime attaches.
pub fn start(count: usize) -> std::io::Result<Threads> {
    if let Some(t) = THREADS.get() {
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
    Ok(THREADS.get_or_init(|| Threads { jobs }).clone())
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

/// Runs `job` on a file I/O thread and waits for it without blocking the worker. Only a
/// runtime with [`Threads`] attached (the workers') may call it.
pub async fn run<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    monoio::spawn_blocking(job)
        .await
        .map_err(|_| Error::new(ErrorKind::ServiceUnavailable, Side::Internal, QUEUE_FULL))
}

/// Whether this kernel takes `RESOLVE_CACHED` (Linux 5.12); cleared at the first refusal, after
/// which every cache miss opens on the threads.
static CACHED_OPENS: AtomicBool = AtomicBool::new(true);

/// Whether a worker should try an open from the dentry cache first.
pub fn cached_opens() -> bool {
    CACHED_OPENS.load(Ordering::Relaxed)
}

/// The kernel refused `RESOLVE_CACHED` as unknown.
pub fn no_cached_opens() {
    if CACHED_OPENS.swap(false, Ordering::Relaxed) {
        log::info!("openat2 RESOLVE_CACHED is not available (Linux 5.12+): every file open that misses the file cache goes to the file I/O threads");
    }
}

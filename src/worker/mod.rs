//! Worker threads: one monoio runtime per thread, pinned to a core, each with its own socket
//! of every listener (one `SO_REUSEPORT` group per address, made by [`sockets`]) and an
//! accept loop per listener.
//!
//! The runtime is io_uring when the kernel offers it and epoll (monoio's legacy driver)
//! otherwise; [`IoDriver`] can force either, so both paths are tested. Workers share nothing
//! but [`Shared`]: the snapshot cell (read once per request), the drain flag, and per-worker
//! counters that only their worker writes.
//!
//! **Drain.** When the control thread sets [`Shared::draining`], each worker closes its
//! listeners (new connections are refused, or — in a binary upgrade — go to the new process),
//! after a short grace shuts the read side of its idle keep-alive
//! connections (their tasks wake and end), and lets busy connections finish their response with
//! `Connection: close`. The control thread ends the process when no connection is left.

pub mod balance;
pub mod sockets;

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use monoio::net::TcpListener;

use crate::metrics::WorkerStats;
use crate::server::park;
use crate::server::registry::Registry;
use crate::server::registry::IDLE_SWEEP;
pub use crate::shared::{Admitted, Shared};

/// How often an accept loop looks at the drain flag.
const DRAIN_POLL: Duration = Duration::from_millis(50);
/// How long a drain leaves idle keep-alive connections open for a request already on its way.
const DRAIN_IDLE_GRACE: Duration = Duration::from_millis(500);

/// The number of workers `[server] threads` asks for (0 = one per core).
pub fn worker_count(threads: usize) -> usize {
    if threads > 0 {
        return threads;
    }
    core_affinity::get_core_ids().map_or(0, |c| c.len()).max(1)
}

/// Which io driver the workers run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum IoDriver {
    /// io_uring when the kernel supports it, epoll otherwise.
    Auto,
    /// io_uring only; start-up fails without it.
    Uring,
    /// epoll (monoio's legacy driver), even where io_uring works.
    Epoll,
}

impl IoDriver {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Uring => "io_uring",
            Self::Epoll => "epoll",
        }
    }
}

/// The running workers.
pub struct Workers {
    handles: Vec<JoinHandle<()>>,
    go: Arc<std::sync::Barrier>,
    /// The io driver they run on (`io_uring` or `epoll`).
    pub driver: String,
    /// Each listener's sockets (one per worker, in worker order) as the workers hold them
    /// until they drain: what a binary upgrade passes on.
    pub sockets: Vec<ListenerFds>,
}

/// The descriptors of one listener's sockets, held by the workers.
#[derive(Clone, Debug)]
pub struct ListenerFds {
    pub address: SocketAddr,
    pub fds: Vec<RawFd>,
    pub source: sockets::Source,
}

impl Workers {
    /// Starts one worker per socket of each group (every group has one socket per worker).
    /// Returns once every worker has its listeners, or the first error.
    pub fn start(
        groups: Vec<sockets::Group>,
        driver: IoDriver,
        shared: Arc<Shared>,
    ) -> std::io::Result<Self> {
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let threads = groups.first().map_or(0, |g| g.sockets.len());
        if threads == 0
            || threads != shared.workers.len()
            || groups.iter().any(|g| g.sockets.len() != threads)
        {
            return Err(std::io::Error::other(
                "the listening sockets do not match the workers (one per worker and listener)",
            ));
        }
        let nodelay = groups.iter().all(|g| g.nodelay);
        let addresses: Vec<String> = groups.iter().map(|g| g.address.to_string()).collect();
        let fds = groups
            .iter()
            .map(|g| ListenerFds {
                address: g.address,
                fds: g.sockets.iter().map(|s| s.as_raw_fd()).collect(),
                source: g.source,
            })
            .collect();
        // Worker by worker: each takes its socket of every group.
        let mut per_worker: Vec<Vec<std::net::TcpListener>> = (0..threads)
            .map(|_| Vec::with_capacity(groups.len()))
            .collect();
        for g in groups {
            for (w, s) in g.sockets.into_iter().enumerate() {
                per_worker[w].push(std::net::TcpListener::from(s));
            }
        }
        let (tx, rx) = mpsc::channel();
        let go = Arc::new(std::sync::Barrier::new(threads + 1));
        let mut handles = Vec::with_capacity(threads);
        for (id, listeners) in per_worker.into_iter().enumerate() {
            let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
            let shared = shared.clone();
            let tx = tx.clone();
            let go = go.clone();
            let handle = std::thread::Builder::new()
                .name(format!("zcs-worker-{id}"))
                .spawn(move || {
                    if let Some(core) = core {
                        if !core_affinity::set_for_current(core) {
                            log::warn!("worker {id}: could not pin to core {}", core.id);
                        }
                    }
                    let start = Start {
                        id,
                        listeners,
                        nodelay,
                        shared,
                        ready: tx,
                        go,
                    };
                    run(start, driver);
                })?;
            handles.push(handle);
        }
        drop(tx);
        let mut drivers = Vec::with_capacity(threads);
        for _ in 0..threads {
            match rx.recv() {
                Ok(Ok(d)) => drivers.push(d),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(std::io::Error::other("a worker died while starting")),
            }
        }
        drivers.sort_unstable();
        drivers.dedup();
        let driver = drivers.join(", ");
        log::info!(
            "{threads} workers listening on {} ({driver})",
            addresses.join(", ")
        );
        Ok(Self {
            handles,
            go,
            driver,
            sockets: fds,
        })
    }

    /// How many workers run.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Whether a worker thread has ended: outside a drain, only a failure does that.
    pub fn any_finished(&self) -> bool {
        self.handles.iter().any(|h| h.is_finished())
    }

    /// Whether every worker has ended: in a drain, each ends once its listeners are closed and
    /// its last connection is done.
    pub fn all_finished(&self) -> bool {
        self.handles.iter().all(|h| h.is_finished())
    }

    /// Lets the workers accept connections. Until then they hold their listeners (the kernel
    /// queues connections) but serve nothing — so nothing is served before privileges drop.
    pub fn go(&self) {
        self.go.wait();
    }
}

/// A worker's start-up report: the io driver it runs on, or why it could not start.
type Ready = mpsc::Sender<std::io::Result<&'static str>>;

/// What a worker thread starts with.
struct Start {
    id: usize,
    /// Its socket of each listener, in config order.
    listeners: Vec<std::net::TcpListener>,
    /// `TCP_NODELAY` is set on every listener.
    nodelay: bool,
    shared: Arc<Shared>,
    ready: Ready,
    go: Arc<std::sync::Barrier>,
}

fn run(start: Start, driver: IoDriver) {
    let id = start.id;
    let ready = start.ready.clone();
    let fail = |what: &str, e: std::io::Error| {
        let _ = ready.send(Err(std::io::Error::new(
            e.kind(),
            format!("worker {id}: cannot start the {what} runtime: {e}"),
        )));
    };
    let try_uring =
        driver != IoDriver::Epoll && (driver == IoDriver::Uring || monoio::utils::detect_uring());
    if try_uring {
        match uring_runtime() {
            Ok(mut rt) => {
                rt.block_on(worker_main(start, "io_uring"));
                return;
            }
            // `auto` falls back when the ring cannot be built (a memlock limit, seccomp).
            Err(e) if driver == IoDriver::Auto => {
                log::warn!("worker {id}: io_uring unavailable ({e}); using epoll");
            }
            Err(e) => return fail("io_uring", e),
        }
    }
    match epoll_runtime() {
        Ok(mut rt) => rt.block_on(worker_main(start, "epoll")),
        Err(e) => fail("epoll", e),
    }
}

fn epoll_runtime(
) -> std::io::Result<monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>>> {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .attach_thread_pool(Box::new(file_io_threads()?))
        .build()
}

/// The worker's ring. `COOP_TASKRUN` (Linux 5.19): completions are handed over at the
/// worker's next system call instead of by interrupting it with an IPI — it makes many, and
/// only it submits to its ring. An older kernel refuses the flag; the ring is then built
/// without it.
fn uring_runtime(
) -> std::io::Result<monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>> {
    let build = |coop: bool| {
        let mut ring = io_uring::IoUring::builder();
        if coop {
            ring.setup_coop_taskrun();
        }
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .with_entries(1024)
            .uring_builder(ring)
            .attach_thread_pool(Box::new(file_io_threads()?))
            .build()
    };
    build(true).or_else(|_| build(false))
}

/// The file I/O threads the daemon started (see [`crate::net::offload`]); the defaults when
/// nothing started them (a worker outside the daemon's start-up).
fn file_io_threads() -> std::io::Result<crate::net::offload::Threads> {
    use crate::config::defaults::{FILE_IO_THREADS, FILE_IO_TIMEOUT};
    crate::net::offload::start(FILE_IO_THREADS, FILE_IO_TIMEOUT)
}

async fn worker_main(start: Start, driver: &'static str) {
    let Start {
        id,
        listeners,
        nodelay,
        shared,
        ready,
        go,
    } = start;
    let mut bound = Vec::with_capacity(listeners.len());
    for l in listeners {
        match TcpListener::from_std(l) {
            Ok(l) => bound.push(l),
            Err(e) => {
                let _ = ready.send(Err(std::io::Error::new(
                    e.kind(),
                    format!("worker {id}: cannot use a listening socket: {e}"),
                )));
                return;
            }
        }
    }
    let _ = ready.send(Ok(driver));
    drop(ready);
    // Blocks this thread (it serves nothing yet) until start-up is complete.
    go.wait();
    shared.beat(id);
    let registry = Rc::new(Registry::new(id));
    registry.nodelay_inherited.set(nodelay);
    let stats = &shared.workers[id];
    if let Some(every) = crate::logging::access_flush_every() {
        // This worker's access lines reach the logger at least this often.
        monoio::spawn(async move {
            loop {
                monoio::time::sleep(every).await;
                crate::logging::flush_access();
            }
        });
    }
    {
        let (shared, ctx) = (shared.clone(), registry.ctx.clone());
        monoio::spawn(async move {
            loop {
                monoio::time::sleep(Duration::from_secs(1)).await;
                shared.beat(id);
                ctx.upstreams.sweep();
                ctx.h2upstreams.sweep();
                ctx.files.sweep(Instant::now(), &shared.workers[id]);
            }
        });
    }
    if let Some(parking) = registry.parking.clone() {
        let registry = registry.clone();
        monoio::spawn(park::watch(parking, move |p| {
            crate::server::connection::resume(p, &registry)
        }));
    }
    {
        let registry = registry.clone();
        monoio::spawn(async move {
            loop {
                monoio::time::sleep(IDLE_SWEEP).await;
                registry.expire_idle(Instant::now());
            }
        });
    }
    let loops: Vec<_> = bound
        .into_iter()
        .enumerate()
        .map(|(index, listener)| {
            monoio::spawn(accept_loop(
                id,
                index,
                listener,
                shared.clone(),
                registry.clone(),
            ))
        })
        .collect();
    for l in loops {
        l.await;
    }
    // Draining: the listeners are closed. For a moment idle keep-alive connections are left
    // alone — a client sending its next request on one gets its answer (with `Connection:
    // close`) instead of a closed connection — then they are woken and close; busy ones
    // finish.
    let grace_end = Instant::now() + DRAIN_IDLE_GRACE;
    while stats.connections.load(Ordering::Relaxed) > 0 {
        if Instant::now() >= grace_end {
            registry.wake_idle();
        }
        monoio::time::sleep(DRAIN_POLL).await;
    }
    crate::logging::flush_access();
    stats
        .heartbeat
        .store(crate::metrics::HEARTBEAT_DONE, Ordering::Relaxed);
    log::debug!("worker {id}: drained");
}

/// Accepts connections on one listener until the drain begins, then closes it.
async fn accept_loop(
    id: usize,
    index: usize,
    listener: TcpListener,
    shared: Arc<Shared>,
    registry: Rc<Registry>,
) {
    let stats = &shared.workers[id];
    let serve = |accepted: std::io::Result<(monoio::net::TcpStream, SocketAddr)>| match accepted {
        Ok((stream, peer)) => {
            let cap = shared
                .snapshot
                .load()
                .config
                .security
                .max_concurrent_connections;
            if let Some(admitted) = shared.admit(id, index, cap) {
                WorkerStats::bump(&stats.accepted);
                monoio::spawn(crate::server::connection::serve(
                    stream,
                    peer,
                    admitted,
                    registry.clone(),
                ));
            } else {
                // Closed at once, unanswered: answering would mean reading the request, the
                // work the cap exists to refuse.
                log::debug!("worker {id}: {peer}: over max_concurrent_connections ({cap}); closed");
                WorkerStats::bump(&stats.over_cap);
                drop(stream);
            }
            true
        }
        Err(e) => {
            log::warn!("worker {id}: accept failed: {e}");
            false
        }
    };
    // One accept stays pending across the drain checks, and is cancelled (not dropped) at the
    // end: a dropped accept that had completed would close its connection unanswered — with a
    // binary upgrade, a connection the next process would have served.
    {
        let canceller = monoio::io::Canceller::new();
        let mut accept = std::pin::pin!(listener.cancelable_accept(canceller.handle()));
        while !shared.is_draining() {
            monoio::select! {
                accepted = &mut accept => {
                    accept.set(listener.cancelable_accept(canceller.handle()));
                    if !serve(accepted) {
                        // EMFILE and friends: back off instead of spinning.
                        monoio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                _ = monoio::time::sleep(DRAIN_POLL) => {}
            }
        }
        let _ = canceller.cancel();
        if let Ok(accepted) = accept.await {
            serve(Ok(accepted));
        }
    }
    // Closes this worker's socket; in a binary upgrade, the next process holds its own.
    drop(listener);
}

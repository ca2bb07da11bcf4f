//! Worker threads: one monoio runtime per thread, pinned to a core, each with its own
//! `SO_REUSEPORT` listener and accept loop.
//!
//! The runtime is io_uring when the kernel offers it and epoll (monoio's legacy driver)
//! otherwise; [`IoDriver`] can force either, so both paths are tested. Workers share nothing
//! but [`Shared`]: the snapshot cell (read once per request), the drain flag, and per-worker
//! counters that only their worker writes.
//!
//! **Drain.** When the control thread sets [`Shared::draining`], each worker closes its
//! listener (new connections are refused), shuts the read side of its idle keep-alive
//! connections (their tasks wake and end), and lets busy connections finish their response with
//! `Connection: close`. The control thread ends the process when no connection is left.

pub mod balance;
mod ctx;
pub mod park;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use monoio::net::{ListenerOpts, TcpListener};

use crate::config::ReuseportBalancing;
use crate::limiter::Limiter;
use crate::metrics::Registry as Metrics;
pub use crate::metrics::WorkerStats;
use crate::snapshot::SnapshotCell;
use crate::tls::RecordLayer;
pub use ctx::WorkerCtx;

/// How often an accept loop looks at the drain flag.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// State shared by every worker and the control thread.
pub struct Shared {
    pub snapshot: SnapshotCell,
    /// Set once by the control thread to start a graceful stop.
    pub draining: AtomicBool,
    /// One entry per worker, written only by that worker.
    pub workers: Box<[WorkerStats]>,
    /// Where TLS records run, decided at start-up.
    pub record_layer: RecordLayer,
    /// Rate-limit windows of every worker (kept across reloads).
    pub limiter: Limiter,
    /// Open client connections of all workers together, for `max_concurrent_connections`.
    pub open: AtomicU64,
    /// Request and upstream counters by route and upstream (per worker inside).
    pub metrics: Arc<Metrics>,
    /// TLS session tickets and the session cache, kept across reloads (the snapshots' TLS
    /// configurations share them).
    pub sessions: Arc<crate::tls::sessions::Sessions>,
}

impl Shared {
    /// `metrics` and `sessions` must be the ones `snapshot` was built with.
    pub fn new(
        snapshot: SnapshotCell,
        workers: usize,
        record_layer: RecordLayer,
        metrics: Arc<Metrics>,
        sessions: Arc<crate::tls::sessions::Sessions>,
    ) -> Self {
        Self {
            metrics,
            sessions,
            snapshot,
            draining: AtomicBool::new(false),
            workers: (0..workers).map(|_| WorkerStats::default()).collect(),
            record_layer,
            limiter: Limiter::default(),
            open: AtomicU64::new(0),
        }
    }

    /// Counts a connection accepted by `worker` against `max_concurrent_connections` (`cap`,
    /// 0 = unlimited): `None`, and nothing counted, when `cap` connections are open already.
    pub fn admit(self: &Arc<Self>, worker: usize, cap: usize) -> Option<Admitted> {
        let mut open = self.open.load(Ordering::Acquire);
        loop {
            if cap > 0 && open >= cap as u64 {
                return None;
            }
            match self.open.compare_exchange_weak(
                open,
                open + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => open = now,
            }
        }
        self.workers[worker]
            .connections
            .fetch_add(1, Ordering::Relaxed);
        Some(Admitted {
            shared: self.clone(),
            worker,
        })
    }

    /// A counter summed over the workers.
    pub fn sum(&self, counter: impl Fn(&WorkerStats) -> &AtomicU64) -> u64 {
        self.workers
            .iter()
            .map(|w| counter(w).load(Ordering::Relaxed))
            .sum()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Open client connections, summed over the workers.
    pub fn connections(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| w.connections.load(Ordering::Relaxed))
            .sum()
    }

    /// Requests being answered, summed over the workers.
    pub fn in_flight(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| w.in_flight.load(Ordering::Relaxed))
            .sum()
    }
}

/// An admitted connection's place in the open counts (all workers', and its worker's): taken
/// at accept, given back when dropped — also when the connection's task never runs.
pub struct Admitted {
    pub shared: Arc<Shared>,
    pub worker: usize,
}

impl Admitted {
    /// Its worker's count of parked connections.
    pub fn gauge(&self) -> &AtomicU64 {
        &self.shared.workers[self.worker].parked
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.shared.open.fetch_sub(1, Ordering::AcqRel);
        self.shared.workers[self.worker]
            .connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// The number of workers `[server] threads` asks for (0 = one per core).
pub fn worker_count(threads: usize) -> usize {
    if threads > 0 {
        return threads;
    }
    core_affinity::get_core_ids().map_or(0, |c| c.len()).max(1)
}

/// A connection's idle state, shared by its task and the worker's idle sweep.
pub type Idle = Rc<IdleState>;

/// What the idle sweep knows of a connection's wait for its next request.
#[derive(Default)]
pub struct IdleState {
    /// `Some(deadline)` while the connection waits for a request: the sweep closes it then if
    /// nothing came.
    deadline: Cell<Option<Instant>>,
    /// Sweeps that have seen the current wait.
    sweeps: Cell<u8>,
    /// Whether the connection may park (plain HTTP; see [`park`]).
    parkable: Cell<bool>,
    /// Set by the sweep: the connection is to leave its task and park.
    park: Cell<bool>,
    /// The waiting task's waker, for the sweep to ask it to park.
    waker: Cell<Option<Waker>>,
}

impl IdleState {
    /// Marks whether the connection may park when it has waited long enough.
    pub fn set_parkable(&self, parkable: bool) {
        self.parkable.set(parkable);
    }

    /// Starts a wait for the next request, to end by `deadline`.
    pub fn begin(&self, deadline: Instant) {
        self.sweeps.set(0);
        self.park.set(false);
        self.deadline.set(Some(deadline));
    }

    /// Ends the wait: `true` when it was still on (bytes arrived), `false` when the sweep (past
    /// the deadline) or a drain ended it.
    pub fn end(&self) -> bool {
        drop(self.waker.take());
        self.deadline.replace(None).is_some()
    }

    /// Waits for `readable` unless the sweep asks the connection to park first.
    pub fn wait<F: Future<Output = bool>>(&self, readable: F) -> IdleWait<'_, F> {
        IdleWait {
            idle: self,
            readable,
        }
    }
}

/// How an idle wait ended.
pub enum Woke {
    /// The socket became readable (`true`) or failed (`false`).
    Ready(bool),
    /// The sweep asked the connection to park.
    Park,
}

pin_project_lite::pin_project! {
    /// The future of [`IdleState::wait`].
    pub struct IdleWait<'a, F> {
        idle: &'a IdleState,
        #[pin]
        readable: F,
    }

    impl<F> PinnedDrop for IdleWait<'_, F> {
        fn drop(this: Pin<&mut Self>) {
            // The waker must not outlive the wait: it would keep the task alive.
            drop(this.project().idle.waker.take());
        }
    }
}

impl<F: Future<Output = bool>> Future for IdleWait<'_, F> {
    type Output = Woke;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Woke> {
        let this = self.project();
        if this.idle.park.get() {
            return Poll::Ready(Woke::Park);
        }
        if let Poll::Ready(ready) = this.readable.poll(cx) {
            return Poll::Ready(Woke::Ready(ready));
        }
        let waker = match this.idle.waker.take() {
            Some(w) if w.will_wake(cx.waker()) => w,
            _ => cx.waker().clone(),
        };
        this.idle.waker.set(Some(waker));
        Poll::Pending
    }
}

/// A registered connection: its socket and its idle state.
type Registered = (RawFd, Idle);

/// How often a worker closes the idle connections whose deadline has passed (and parks the
/// plain ones that have waited through two sweeps).
pub const IDLE_SWEEP: Duration = Duration::from_millis(100);

/// A worker's registry of its connections, so that a drain can wake the idle ones and idle
/// deadlines are kept by one sweep per worker instead of a timer per connection. Idle plain
/// connections park after two sweeps (see [`park`]). Lives on the worker's thread only.
pub struct Registry {
    next: Cell<u64>,
    conns: RefCell<HashMap<u64, Registered>>,
    /// Where idle connections park; `None` when the worker could not make an epoll set.
    pub parking: Option<Rc<park::Parking>>,
    /// The lowest number of parked connections since the worker last gave freed memory back,
    /// and when it did.
    released: Cell<(usize, Instant)>,
    /// Whether accepted connections have `TCP_NODELAY` from the listener already.
    pub nodelay_inherited: Cell<bool>,
    /// The worker's state its connections use.
    pub ctx: Rc<WorkerCtx>,
}

/// How many more connections must be parked than at the low point since the worker last gave
/// its freed memory back before it does so again (and at most once per [`RELEASE_EVERY`]): the
/// tasks of a burst of connections that went idle are freed, and their memory would otherwise
/// stay resident. Connections that come and go at a steady rate do not trigger it.
const RELEASE_AFTER_PARKS: usize = 256;
const RELEASE_EVERY: Duration = Duration::from_secs(1);

impl Registry {
    /// An empty registry; idle connections park when an epoll set can be had, unless
    /// `ZEROCOPY_IDLE_PARKING=off` is in the environment (for comparison).
    pub fn new(worker: usize) -> Self {
        let off = std::env::var_os("ZEROCOPY_IDLE_PARKING").is_some_and(|v| v == "off");
        let parking = match park::Parking::new() {
            Ok(_) if off => None,
            Ok(p) => Some(Rc::new(p)),
            Err(e) => {
                log::warn!("worker {worker}: idle connections keep their tasks: epoll: {e}");
                None
            }
        };
        Self {
            next: Cell::new(0),
            conns: RefCell::default(),
            parking,
            released: Cell::new((0, Instant::now())),
            nodelay_inherited: Cell::new(false),
            ctx: Rc::new(WorkerCtx::new(worker)),
        }
    }

    /// Registers a connection; the returned cell is the connection's idle state.
    pub(crate) fn add(&self, fd: RawFd) -> (u64, Idle) {
        let id = self.next.get();
        self.next.set(id + 1);
        let idle = Rc::new(IdleState::default());
        self.conns.borrow_mut().insert(id, (fd, idle.clone()));
        (id, idle)
    }

    pub(crate) fn remove(&self, id: u64) {
        self.conns.borrow_mut().remove(&id);
    }

    /// Shuts the read side of every idle connection: their pending readiness wait ends and the
    /// task sees the end of the stream (bytes already received are still read first). Parked
    /// connections close.
    fn wake_idle(self: &Rc<Self>) {
        self.sweep(None);
    }

    /// Ends the wait of every idle connection whose deadline has passed (the connection then
    /// sees the end of its stream, notes the deadline and closes), closes parked ones past
    /// theirs, and asks the plain connections that have waited through two sweeps to park.
    fn expire_idle(self: &Rc<Self>, now: Instant) {
        self.sweep(Some(now));
    }

    /// `now` = `None`: a drain, every idle connection is due.
    fn sweep(self: &Rc<Self>, now: Option<Instant>) {
        let can_park = now.is_some() && self.parking.is_some();
        for (fd, idle) in self.conns.borrow().values() {
            let Some(deadline) = idle.deadline.get() else {
                continue;
            };
            if now.is_none_or(|now| deadline <= now) {
                // Once: the connection is woken, not idle any more.
                idle.deadline.set(None);
                // The descriptor belongs to a live connection task of this thread: a
                // connection is idle (`Some`) only while it waits with its socket open, and it
                // clears the cell before it can close.
                crate::net::sys::shutdown_read(*fd);
            } else if can_park && idle.parkable.get() && !idle.park.get() {
                let seen = idle.sweeps.get().saturating_add(1);
                idle.sweeps.set(seen);
                if seen >= 2 {
                    idle.park.set(true);
                    if let Some(waker) = idle.waker.take() {
                        waker.wake();
                    }
                }
            }
        }
        if let Some(parking) = &self.parking {
            match now {
                Some(now) => {
                    parking.expire(now);
                    let (low, at) = self.released.get();
                    let parked = parking.len();
                    if parked >= low + RELEASE_AFTER_PARKS
                        && now.duration_since(at) >= RELEASE_EVERY
                    {
                        crate::memory::release_freed();
                        self.released.set((parked, now));
                    } else if parked < low {
                        self.released.set((parked, at));
                    }
                }
                None => parking.close_all(|p| crate::server::connection::resume(p, self)),
            }
        }
        // A burst of connections that has parked or closed leaves the table's room behind.
        let mut conns = self.conns.borrow_mut();
        if conns.capacity() > 4 * conns.len() + 256 {
            conns.shrink_to_fit();
        }
    }
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
}

impl Workers {
    /// Starts `threads` workers (0 = one per core), each bound to `listen` with
    /// `SO_REUSEPORT`. Returns once every worker has bound its listener, or the first error.
    pub fn start(
        listen: SocketAddr,
        threads: usize,
        driver: IoDriver,
        shared: Arc<Shared>,
    ) -> std::io::Result<Self> {
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let threads = worker_count(threads).min(shared.workers.len());
        let (tx, rx) = mpsc::channel();
        let go = Arc::new(std::sync::Barrier::new(threads + 1));
        let mut handles = Vec::with_capacity(threads);
        for id in 0..threads {
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
                    run(id, listen, driver, shared, tx, go);
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
        log::info!("{threads} workers listening on {listen} ({driver})");
        Ok(Self {
            handles,
            go,
            driver,
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

    /// Whether every worker has ended: in a drain, each ends once its listener is closed and
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

fn run(
    id: usize,
    listen: SocketAddr,
    driver: IoDriver,
    shared: Arc<Shared>,
    ready: Ready,
    go: Arc<std::sync::Barrier>,
) {
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
                rt.block_on(worker_main(
                    id,
                    listen,
                    "io_uring",
                    shared,
                    ready.clone(),
                    go,
                ));
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
        Ok(mut rt) => rt.block_on(worker_main(id, listen, "epoll", shared, ready.clone(), go)),
        Err(e) => fail("epoll", e),
    }
}

fn epoll_runtime(
) -> std::io::Result<monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>>> {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
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
            .build()
    };
    build(true).or_else(|_| build(false))
}

async fn worker_main(
    id: usize,
    listen: SocketAddr,
    driver: &'static str,
    shared: Arc<Shared>,
    ready: Ready,
    go: Arc<std::sync::Barrier>,
) {
    let opts = ListenerOpts::new()
        .reuse_port(true)
        .reuse_addr(true)
        .backlog(4096);
    let listener = match TcpListener::bind_with_config(listen, &opts) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(std::io::Error::new(
                e.kind(),
                format!("cannot listen on {listen}: {e}"),
            )));
            return;
        }
    };
    // Accepted connections inherit it; where the listener refuses, each connection sets it.
    let nodelay_inherited = match crate::net::io::set_listener_nodelay(listener.as_raw_fd()) {
        Ok(()) => true,
        Err(e) => {
            log::debug!("worker {id}: TCP_NODELAY on the listener: {e}; set per connection");
            false
        }
    };
    let balancing = shared
        .snapshot
        .load()
        .config
        .performance
        .reuseport_balancing;
    if balancing == ReuseportBalancing::Cbpf {
        let workers = u32::try_from(shared.workers.len()).unwrap_or(u32::MAX);
        match balance::attach(listener.as_raw_fd(), workers) {
            Ok(()) if id == 0 => log::info!(
                "reuseport_balancing = \"cbpf\": connections go to workers by client address"
            ),
            Ok(()) => {}
            Err(e) => {
                static ONCE: std::sync::Once = std::sync::Once::new();
                ONCE.call_once(|| {
                    log::warn!(
                        "reuseport_balancing = \"cbpf\": cannot attach the program ({e}); the \
                         kernel's hash balances connections instead"
                    )
                });
            }
        }
    }
    let _ = ready.send(Ok(driver));
    drop(ready);
    // Blocks this thread (it serves nothing yet) until start-up is complete.
    go.wait();
    let registry = Rc::new(Registry::new(id));
    registry.nodelay_inherited.set(nodelay_inherited);
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
                ctx.upstreams.sweep();
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
    {
        // One accept stays pending across the drain checks: cancelling an accept that may have
        // completed could lose the connection.
        let mut accept = std::pin::pin!(listener.accept());
        while !shared.is_draining() {
            monoio::select! {
                accepted = &mut accept => {
                    accept.set(listener.accept());
                    match accepted {
                        Ok((stream, peer)) => {
                            let cap = shared.snapshot.load().config.security.max_concurrent_connections;
                            if let Some(admitted) = shared.admit(id, cap) {
                                WorkerStats::bump(&stats.accepted);
                                monoio::spawn(crate::server::connection::serve(stream, peer, admitted, registry.clone()));
                            } else {
                                // Closed at once, unanswered: answering would mean reading the
                                // request, the work the cap exists to refuse.
                                log::debug!("worker {id}: {peer}: over max_concurrent_connections ({cap}); closed");
                                WorkerStats::bump(&stats.over_cap);
                                drop(stream);
                            }
                        }
                        Err(e) => {
                            // EMFILE and friends: back off instead of spinning.
                            log::warn!("worker {id}: accept failed: {e}");
                            monoio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                _ = monoio::time::sleep(DRAIN_POLL) => {}
            }
        }
    }
    // Draining: refuse new connections, wake the idle ones, wait for the busy ones.
    drop(listener);
    registry.wake_idle();
    while stats.connections.load(Ordering::Relaxed) > 0 {
        monoio::time::sleep(DRAIN_POLL).await;
        registry.wake_idle();
    }
    crate::logging::flush_access();
    log::debug!("worker {id}: drained");
}

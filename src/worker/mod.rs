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

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use monoio::net::{ListenerOpts, TcpListener};

use crate::config::ReuseportBalancing;
use crate::metrics::WorkerStats;
use crate::server::park;
use crate::server::registry::Registry;
use crate::server::registry::IDLE_SWEEP;
pub use crate::shared::{Admitted, Shared};

/// How often an accept loop looks at the drain flag.
const DRAIN_POLL: Duration = Duration::from_millis(50);

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

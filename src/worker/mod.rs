//! Worker threads: one monoio runtime per thread, pinned to a core, each with its own
//! `SO_REUSEPORT` listener and accept loop.
//!
//! The runtime is io_uring when the kernel offers it and epoll (monoio's legacy driver)
//! otherwise; [`IoDriver`] can force either, so both paths are tested. Workers share nothing
//! but [`Shared`]: the snapshot cell, read once per request.

pub mod conn;
pub mod io;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use monoio::net::{ListenerOpts, TcpListener};

use crate::snapshot::SnapshotCell;

/// State shared by every worker and the control thread.
pub struct Shared {
    pub snapshot: SnapshotCell,
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
        let threads = if threads == 0 {
            cores.len().max(1)
        } else {
            threads
        };
        let (tx, rx) = mpsc::channel();
        let mut handles = Vec::with_capacity(threads);
        for id in 0..threads {
            let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
            let shared = shared.clone();
            let tx = tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("zcs-worker-{id}"))
                .spawn(move || {
                    if let Some(core) = core {
                        if !core_affinity::set_for_current(core) {
                            log::warn!("worker {id}: could not pin to core {}", core.id);
                        }
                    }
                    run(id, listen, driver, shared, tx);
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
        log::info!(
            "{threads} workers listening on {listen} ({})",
            drivers.join(", ")
        );
        Ok(Self { handles })
    }

    /// Waits until a worker thread ends — which only a failure (a panic) makes happen.
    pub fn join(self) {
        loop {
            if self.handles.iter().any(|h| h.is_finished()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A worker's start-up report: the io driver it runs on, or why it could not start.
type Ready = mpsc::Sender<std::io::Result<&'static str>>;

fn run(id: usize, listen: SocketAddr, driver: IoDriver, shared: Arc<Shared>, ready: Ready) {
    let uring =
        driver != IoDriver::Epoll && (driver == IoDriver::Uring || monoio::utils::detect_uring());
    let result = if uring {
        match uring_runtime() {
            Ok(mut rt) => {
                rt.block_on(worker_main(id, listen, "io_uring", shared, ready.clone()));
                Ok(())
            }
            // `auto` falls back when the ring cannot be built (a memlock limit, seccomp).
            Err(e) if driver == IoDriver::Auto => {
                log::warn!("worker {id}: io_uring unavailable ({e}); using epoll");
                epoll_runtime().map(|mut rt| {
                    rt.block_on(worker_main(id, listen, "epoll", shared, ready.clone()))
                })
            }
            Err(e) => Err(e),
        }
    } else {
        epoll_runtime()
            .map(|mut rt| rt.block_on(worker_main(id, listen, "epoll", shared, ready.clone())))
    };
    if let Err(e) = result {
        let _ = ready.send(Err(std::io::Error::new(
            e.kind(),
            format!(
                "worker {id}: cannot start the {} runtime: {e}",
                driver.as_str()
            ),
        )));
    }
}

fn epoll_runtime(
) -> std::io::Result<monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>>> {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
}

fn uring_runtime(
) -> std::io::Result<monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>> {
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .with_entries(1024)
        .build()
}

async fn worker_main(
    id: usize,
    listen: SocketAddr,
    driver: &'static str,
    shared: Arc<Shared>,
    ready: Ready,
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
    let _ = ready.send(Ok(driver));
    drop(ready);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                monoio::spawn(conn::serve(stream, peer, shared.clone()));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::warn!("worker {id}: accept failed: {e}");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

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
    /// What `Auto` resolves to on this machine.
    pub fn resolve(self) -> Self {
        match self {
            Self::Auto if monoio::utils::detect_uring() => Self::Uring,
            Self::Auto => Self::Epoll,
            d => d,
        }
    }

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
        let driver = driver.resolve();
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
        for _ in 0..threads {
            match rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(std::io::Error::other("a worker died while starting")),
            }
        }
        log::info!(
            "{threads} workers listening on {listen} ({})",
            driver.as_str()
        );
        Ok(Self { handles })
    }

    /// Waits for every worker thread to end.
    pub fn join(self) {
        for h in self.handles {
            let _ = h.join();
        }
    }
}

type Ready = mpsc::Sender<std::io::Result<()>>;

fn run(id: usize, listen: SocketAddr, driver: IoDriver, shared: Arc<Shared>, ready: Ready) {
    let result = match driver {
        IoDriver::Epoll | IoDriver::Auto => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .map(|mut rt| rt.block_on(worker_main(id, listen, shared, ready.clone()))),
        IoDriver::Uring => monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .with_entries(1024)
            .build()
            .map(|mut rt| rt.block_on(worker_main(id, listen, shared, ready.clone()))),
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

async fn worker_main(id: usize, listen: SocketAddr, shared: Arc<Shared>, ready: Ready) {
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
    let _ = ready.send(Ok(()));
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

//! What every worker and the control thread share: the snapshot cell, the drain flag, the
//! per-worker counters, the rate limiter, the open-connection count, the metrics registry and
//! the TLS sessions — and [`Admitted`], a connection's place in the open counts.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::limiter::Limiter;
use crate::metrics::Registry as Metrics;
use crate::metrics::WorkerStats;
use crate::snapshot::SnapshotCell;
use crate::tls::RecordLayer;

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
    /// Upstream servers' and groups' state (health, ejections, drain), kept across reloads.
    pub fleet: Arc<crate::group::Fleet>,
}

impl Shared {
    /// `metrics`, `sessions` and `fleet` must be the ones `snapshot` was built with.
    pub fn new(
        snapshot: SnapshotCell,
        workers: usize,
        record_layer: RecordLayer,
        metrics: Arc<Metrics>,
        sessions: Arc<crate::tls::sessions::Sessions>,
        fleet: Arc<crate::group::Fleet>,
    ) -> Self {
        Self {
            metrics,
            sessions,
            fleet,
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

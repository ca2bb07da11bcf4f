//! What every worker and the control thread share: the snapshot cell, the drain flag, the
//! per-worker counters, the rate limiter, the open-connection count, the metrics registry and
//! the TLS sessions — and [`Admitted`], a connection's place in the open counts.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::limiter::Limiter;
use crate::metrics::Registry as Metrics;
use crate::metrics::WorkerStats;
use crate::snapshot::{Snapshot, SnapshotCell};
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
    /// The listeners bound at start-up, in config order: every worker has one socket each.
    pub listeners: Box<[ListenerSlot]>,
    /// The workers were let serve (start-up is complete).
    pub serving: AtomicBool,
    /// The clock of the workers' heartbeats.
    pub started: std::time::Instant,
}

/// A listener bound at start-up: its settings then (the serving snapshot's win while it has
/// the address) and its counters.
pub struct ListenerSlot {
    pub config: crate::config::Listener,
    /// Open client connections that came through it.
    pub connections: AtomicU64,
    /// Connections accepted through it since start.
    pub accepted: AtomicU64,
    /// Connections closed unserved for their PROXY header: from outside
    /// `proxy_protocol_from`, none, a malformed one, or none in time.
    pub proxy_refused: AtomicU64,
}

impl ListenerSlot {
    /// Counts a connection refused for its PROXY header.
    pub fn refuse(&self) {
        self.proxy_refused.fetch_add(1, Ordering::Relaxed);
    }
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
        listeners: &[crate::config::Listener],
    ) -> Self {
        Self {
            listeners: listeners
                .iter()
                .map(|l| ListenerSlot {
                    config: l.clone(),
                    connections: AtomicU64::new(0),
                    accepted: AtomicU64::new(0),
                    proxy_refused: AtomicU64::new(0),
                })
                .collect(),
            metrics,
            sessions,
            fleet,
            snapshot,
            draining: AtomicBool::new(false),
            workers: (0..workers).map(|_| WorkerStats::default()).collect(),
            record_layer,
            limiter: Limiter::default(),
            open: AtomicU64::new(0),
            serving: AtomicBool::new(false),
            started: std::time::Instant::now(),
        }
    }

    /// Notes that worker `worker`'s loop runs now.
    pub fn beat(&self, worker: usize) {
        let ms = self.started.elapsed().as_millis() as u64 + 1;
        if let Some(w) = self.workers.get(worker) {
            w.heartbeat.store(ms, Ordering::Relaxed);
        }
    }

    /// The daemon's health for `/healthz` and `/readyz`: every worker's loop has run within
    /// `stale` (or has finished), and whether it takes new work.
    pub fn health(&self, stale: std::time::Duration) -> Health {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let stale = stale.as_millis() as u64;
        for (i, w) in self.workers.iter().enumerate() {
            let beat = w.heartbeat.load(Ordering::Relaxed);
            if beat == crate::metrics::HEARTBEAT_DONE {
                continue;
            }
            if beat == 0 {
                return Health::Starting;
            }
            let late = now.saturating_sub(beat);
            if late > stale {
                return Health::Stuck {
                    worker: i,
                    late_ms: late,
                };
            }
        }
        if self.is_draining() {
            Health::Draining
        } else if !self.serving.load(Ordering::Relaxed) {
            Health::Starting
        } else {
            Health::Ready
        }
    }

    /// Counts a connection accepted by `worker` on `listener` against
    /// `max_concurrent_connections` (`cap`, 0 = unlimited): `None`, and nothing counted, when
    /// `cap` connections are open already.
    pub fn admit(self: &Arc<Self>, worker: usize, listener: usize, cap: usize) -> Option<Admitted> {
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
        if let Some(l) = self.listeners.get(listener) {
            l.connections.fetch_add(1, Ordering::Relaxed);
            l.accepted.fetch_add(1, Ordering::Relaxed);
        }
        Some(Admitted {
            shared: self.clone(),
            worker,
            listener,
        })
    }

    /// The settings of listener `index` as `snapshot` has them; the start-up ones when a
    /// reload removed its address (it stays bound until a restart or an upgrade).
    pub fn listener_in<'s>(
        &'s self,
        index: usize,
        snapshot: &'s Snapshot,
    ) -> Option<&'s crate::config::Listener> {
        let slot = self.listeners.get(index)?;
        Some(
            snapshot
                .listener(slot.config.address)
                .unwrap_or(&slot.config),
        )
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

/// What `/healthz` and `/readyz` report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Serving, taking new work.
    Ready,
    /// Alive, not taking new work: a drain (a stop, or the end of a binary upgrade).
    Draining,
    /// The workers do not serve yet.
    Starting,
    /// A worker's loop has not run for this long: it is blocked.
    Stuck { worker: usize, late_ms: u64 },
}

/// An admitted connection's place in the open counts (all workers', and its worker's): taken
/// at accept, given back when dropped — also when the connection's task never runs.
pub struct Admitted {
    pub shared: Arc<Shared>,
    pub worker: usize,
    /// The listener it came through (an index into [`Shared::listeners`]).
    pub listener: usize,
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
        if let Some(l) = self.shared.listeners.get(self.listener) {
            l.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

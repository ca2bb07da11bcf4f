//! Each worker's own counters (connections, requests, TLS, file cache), written only by its
//! worker and summed by the control thread for `proxyctl stats` and Prometheus.

use std::sync::atomic::{AtomicU64, Ordering};

/// A worker's counters, on a cache line of their own.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct WorkerStats {
    /// Open client connections.
    pub connections: AtomicU64,
    /// Requests between a parsed head and the end of their response.
    pub in_flight: AtomicU64,
    /// Completed TLS handshakes.
    pub tls_handshakes: AtomicU64,
    /// TLS connections whose records the kernel runs.
    pub ktls: AtomicU64,
    /// TLS connections that asked for kTLS and continued in userspace.
    pub ktls_fallback: AtomicU64,
    /// TLS connections closed because kTLS could not be enabled (fallback off).
    pub ktls_refused: AtomicU64,
    /// Connections closed at accept because `max_concurrent_connections` were open.
    pub over_cap: AtomicU64,
    /// Connections accepted (and admitted) since start.
    pub accepted: AtomicU64,
    /// Requests answered since start.
    pub requests: AtomicU64,
    /// Open connections parked: idle, without a task (see [`super::park`]).
    pub parked: AtomicU64,
    /// Requests of `sendfile`-mode routes answered from the file cache, and not.
    pub file_cache_hits: AtomicU64,
    pub file_cache_misses: AtomicU64,
    /// Files and bytes in this worker's file cache.
    pub file_cache_files: AtomicU64,
    pub file_cache_bytes: AtomicU64,
    /// Open HTTP/2 client connections, and those since start.
    pub h2_connections: AtomicU64,
    pub h2_accepted: AtomicU64,
    /// HTTP/2 streams (requests) since start, and those with a handler now.
    pub h2_streams: AtomicU64,
    pub h2_streams_open: AtomicU64,
    /// Streams refused (`REFUSED_STREAM`) because the connection had
    /// `max_concurrent_streams` handlers in flight.
    pub h2_refused: AtomicU64,
    /// Streams the client reset while their handler ran (the handler was cancelled).
    pub h2_resets_received: AtomicU64,
    /// Streams the daemon reset (a response cut off).
    pub h2_resets_sent: AtomicU64,
    /// GOAWAYs the daemon sent: graceful (drain, idle, request cap) and for errors.
    pub h2_goaway_graceful: AtomicU64,
    pub h2_goaway_error: AtomicU64,
    /// When the worker's loop last ran (ms since [`crate::shared::Shared::started`], +1);
    /// 0 before it serves, [`HEARTBEAT_DONE`] once it has finished (drained).
    pub heartbeat: AtomicU64,
}

/// A worker's heartbeat once it has finished.
pub const HEARTBEAT_DONE: u64 = u64::MAX;

impl WorkerStats {
    /// Adds one to a counter of this worker's (only its own thread writes it).
    pub fn bump(counter: &AtomicU64) {
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

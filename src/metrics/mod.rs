//! Request, connection and upstream counters, kept per worker without locks and summed when
//! read.
//!
//! Every figure has one cell per worker, on a cache line of its own, written only by that
//! worker's thread (a relaxed load and store: no atomic read-modify-write on the data path).
//! The control thread sums the cells into a [`proxyctl::proto::Stats`] when `proxyctl stats` or
//! a Prometheus scrape asks ([`crate::snapshot::Snapshot::collect_stats`]); nothing is ever reset.
//!
//! A route's counters belong to the route's identity (host and prefix), not to one snapshot: the
//! [`Registry`] hands the same [`RouteMetrics`] to every snapshot that has the route, so they
//! survive reloads, and forgets them when a reload removes the route. Upstreams are counted the
//! same way per `scheme://host:port`.

pub mod prometheus;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxyctl::proto::{
    Histogram, RouteKey, RouteStats, StatusClasses, UpstreamStats, LATENCY_BOUNDS_US,
};

mod workers;
pub use workers::{WorkerStats, HEARTBEAT_DONE};

/// Buckets of the latency histogram: one per bound, and the unbounded one.
const BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// Adds `n` to a cell that only the calling worker writes.
#[inline]
fn add(cell: &AtomicU64, n: u64) {
    cell.store(
        cell.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// One worker's figures for one route.
#[derive(Debug, Default)]
#[repr(align(128))]
struct RouteCells {
    requests: AtomicU64,
    /// 1xx … 5xx.
    classes: [AtomicU64; 5],
    bytes_sent: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
}

/// A route's requests, per worker.
#[derive(Debug)]
pub struct RouteMetrics {
    cells: Box<[RouteCells]>,
}

impl RouteMetrics {
    fn new(workers: usize) -> Self {
        Self {
            cells: (0..workers.max(1)).map(|_| RouteCells::default()).collect(),
        }
    }

    /// Counts one answered request on `worker`: its status (0 when none was sent), the bytes
    /// written to the client and the time it took.
    pub fn record(&self, worker: usize, status: u16, bytes_sent: u64, elapsed: Duration) {
        let Some(c) = self.cells.get(worker) else {
            return;
        };
        add(&c.requests, 1);
        if let Some(class) = (status / 100).checked_sub(1).map(usize::from) {
            if let Some(cell) = c.classes.get(class) {
                add(cell, 1);
            }
        }
        add(&c.bytes_sent, bytes_sent);
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_US.partition_point(|&b| b < us);
        add(&c.buckets[bucket], 1);
        add(&c.sum_us, us);
    }

    /// The sum over the workers, as a row without its route's name.
    pub fn sum(&self) -> RouteStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut classes = [0u64; 5];
        let mut latency = Histogram {
            counts: vec![0; BUCKETS],
            sum_us: 0,
        };
        let mut row = RouteStats::default();
        for c in self.cells.iter() {
            row.requests += load(&c.requests);
            row.bytes_sent += load(&c.bytes_sent);
            for (sum, cell) in classes.iter_mut().zip(&c.classes) {
                *sum += load(cell);
            }
            for (sum, cell) in latency.counts.iter_mut().zip(&c.buckets) {
                *sum += load(cell);
            }
            latency.sum_us += load(&c.sum_us);
        }
        let [informational, success, redirection, client_error, server_error] = classes;
        row.responses = StatusClasses {
            informational,
            success,
            redirection,
            client_error,
            server_error,
        };
        row.latency = latency;
        row
    }
}

/// One worker's figures for one upstream.
#[derive(Debug, Default)]
#[repr(align(128))]
struct UpstreamCells {
    connects: AtomicU64,
    reuses: AtomicU64,
    retries: AtomicU64,
    failures: AtomicU64,
}

/// What happened with an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamEvent {
    /// A new connection opened.
    Connect,
    /// A pooled connection taken for a request.
    Reuse,
    /// A request retried on a fresh connection.
    Retry,
    /// An exchange that failed on the upstream's side.
    Failure,
}

/// An upstream's connections, per worker.
#[derive(Debug)]
pub struct UpstreamMetrics {
    cells: Box<[UpstreamCells]>,
}

impl UpstreamMetrics {
    pub fn new(workers: usize) -> Self {
        Self {
            cells: (0..workers.max(1))
                .map(|_| UpstreamCells::default())
                .collect(),
        }
    }

    /// Counts one event on `worker`.
    pub fn count(&self, worker: usize, event: UpstreamEvent) {
        let Some(c) = self.cells.get(worker) else {
            return;
        };
        add(
            match event {
                UpstreamEvent::Connect => &c.connects,
                UpstreamEvent::Reuse => &c.reuses,
                UpstreamEvent::Retry => &c.retries,
                UpstreamEvent::Failure => &c.failures,
            },
            1,
        );
    }

    pub fn sum(&self, name: &str) -> UpstreamStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut row = UpstreamStats {
            upstream: name.to_string(),
            ..UpstreamStats::default()
        };
        for c in self.cells.iter() {
            row.connects += load(&c.connects);
            row.reuses += load(&c.reuses);
            row.retries += load(&c.retries);
            row.failures += load(&c.failures);
        }
        row
    }
}

/// The counters of every route and upstream by identity, so that a new snapshot gets the
/// running ones. Only the control thread (building snapshots, reading stats) takes its lock;
/// workers hold the `Arc`s the snapshot gave them.
#[derive(Debug)]
pub struct Registry {
    workers: usize,
    routes: Mutex<HashMap<RouteKey, Arc<RouteMetrics>>>,
    upstreams: Mutex<HashMap<String, Arc<UpstreamMetrics>>>,
    /// Requests that matched no route.
    pub unrouted: RouteMetrics,
}

impl Registry {
    pub fn new(workers: usize) -> Self {
        Self {
            workers,
            routes: Mutex::default(),
            upstreams: Mutex::default(),
            unrouted: RouteMetrics::new(workers),
        }
    }

    /// The number of workers counted for.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The counters of the route `key`: the running ones, or new ones.
    pub fn route(&self, key: &RouteKey) -> Arc<RouteMetrics> {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes
            .entry(key.clone())
            .or_insert_with(|| Arc::new(RouteMetrics::new(self.workers)))
            .clone()
    }

    /// The counters of the upstream `name` (`scheme://host:port`).
    pub fn upstream(&self, name: &str) -> Arc<UpstreamMetrics> {
        let mut ups = self.upstreams.lock().unwrap_or_else(|p| p.into_inner());
        ups.entry(name.to_string())
            .or_insert_with(|| Arc::new(UpstreamMetrics::new(self.workers)))
            .clone()
    }

    /// Forgets the counters of routes and upstreams the serving snapshot does not have (a
    /// removed route, or one built for a config that was refused): see
    /// [`crate::snapshot::Snapshot::retain_metrics`].
    pub fn retain(&self, route: impl Fn(&RouteKey) -> bool, upstream: impl Fn(&str) -> bool) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes.retain(|key, _| route(key));
        let mut ups = self.upstreams.lock().unwrap_or_else(|p| p.into_inner());
        ups.retain(|name, _| upstream(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_sum_over_workers_by_class_and_bucket() {
        let m = RouteMetrics::new(2);
        m.record(0, 200, 100, Duration::from_micros(50));
        m.record(1, 404, 10, Duration::from_micros(100));
        m.record(1, 503, 5, Duration::from_millis(2));
        m.record(0, 0, 0, Duration::from_secs(60));
        // A worker index out of range is ignored, not a panic.
        m.record(7, 200, 1, Duration::ZERO);
        let row = m.sum();
        assert_eq!(row.requests, 4);
        assert_eq!(row.bytes_sent, 115);
        assert_eq!(
            row.responses,
            StatusClasses {
                informational: 0,
                success: 1,
                redirection: 0,
                client_error: 1,
                server_error: 1
            }
        );
        // 50 µs and exactly 100 µs land in the first bucket (bounds are inclusive); 2 ms in
        // (1 ms, 2.5 ms]; a minute past the last bound.
        assert_eq!(row.latency.counts[0], 2);
        assert_eq!(row.latency.counts[4], 1);
        assert_eq!(row.latency.counts[BUCKETS - 1], 1);
        assert_eq!(row.latency.count(), 4);
        assert_eq!(row.latency.sum_us, 50 + 100 + 2_000 + 60_000_000);
    }

    #[test]
    fn upstream_events_are_counted_apart() {
        let m = UpstreamMetrics::new(2);
        m.count(0, UpstreamEvent::Connect);
        m.count(1, UpstreamEvent::Connect);
        m.count(1, UpstreamEvent::Reuse);
        m.count(0, UpstreamEvent::Retry);
        m.count(0, UpstreamEvent::Failure);
        m.count(0, UpstreamEvent::Failure);
        let row = m.sum("http://127.0.0.1:1");
        assert_eq!(
            (row.connects, row.reuses, row.retries, row.failures),
            (2, 1, 1, 2)
        );
    }

    #[test]
    fn the_registry_hands_out_the_same_counters_per_identity() {
        let r = Registry::new(1);
        let key = RouteKey {
            host: "a".into(),
            prefix: Some("/x".into()),
        };
        let first = r.route(&key);
        assert!(Arc::ptr_eq(&first, &r.route(&key)));
        let other = RouteKey {
            host: "a".into(),
            prefix: None,
        };
        assert!(!Arc::ptr_eq(&first, &r.route(&other)));
        assert!(Arc::ptr_eq(
            &r.upstream("http://u:1"),
            &r.upstream("http://u:1")
        ));
    }
}

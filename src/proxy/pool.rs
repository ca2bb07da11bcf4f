//! The upstream connection pool: per worker (no locks; owned by its
//! [`crate::server::WorkerCtx`]), per upstream.
//!
//! Idle connections are kept up to the route's `max_idle_connections_per_host`, for at most its
//! `idle_connection_timeout_secs`; the most recently used one is reused first. Before reuse a
//! connection is checked without blocking: one the upstream has closed (or that has unexpected
//! bytes waiting) is dropped.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::net::upstream::{UpstreamConn, UpstreamTls};

/// What identifies interchangeable upstream connections.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// The TLS name, for https upstreams.
    pub tls_name: Option<String>,
    /// The route's `ca_file`: connections verified against other CAs are not shared.
    pub ca_file: Option<std::path::PathBuf>,
}

/// An upstream: where to connect, resolved when the config loaded.
#[derive(Debug)]
pub struct Upstream {
    pub key: PoolKey,
    /// `scheme://host:port`, as stats and logs name it.
    pub name: String,
    /// Its connection counters (per name, kept across reloads).
    pub metrics: Arc<crate::metrics::UpstreamMetrics>,
    pub addrs: Vec<SocketAddr>,
    /// How to speak TLS to an `https://` upstream.
    pub tls: Option<UpstreamTls>,
}

struct Idle {
    conn: UpstreamConn,
    /// When it is closed if nobody takes it.
    expires: Instant,
}

/// One worker's idle upstream connections, by upstream (see [`crate::server::WorkerCtx`]).
#[derive(Default)]
pub struct Pool(RefCell<HashMap<PoolKey, VecDeque<Idle>>>);

impl Pool {
    /// Takes a usable idle connection to `key`, dropping expired and closed ones.
    pub fn take(&self, key: &PoolKey) -> Option<UpstreamConn> {
        let mut pool = self.0.borrow_mut();
        let idle = pool.get_mut(key)?;
        let now = Instant::now();
        while let Some(mut entry) = idle.pop_back() {
            if now < entry.expires && entry.conn.idle_and_open() {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Returns a connection after a complete exchange, to be kept for `keep`; the oldest idle
    /// ones beyond `max` are closed.
    pub fn put(&self, key: &PoolKey, conn: UpstreamConn, max: usize, keep: Duration) {
        if max == 0 || keep.is_zero() {
            return;
        }
        let mut pool = self.0.borrow_mut();
        let idle = pool.entry(key.clone()).or_default();
        idle.push_back(Idle {
            conn,
            expires: Instant::now() + keep,
        });
        while idle.len() > max {
            idle.pop_front();
        }
    }

    /// Closes the idle connections whose time is up. Each worker runs it every second, so an
    /// idle connection lives at most about a second past `idle_connection_timeout_secs`.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.0.borrow_mut().retain(|_, idle| {
            idle.retain(|c| now < c.expires);
            !idle.is_empty()
        });
    }

    /// Idle connections held for `key` (for tests and stats).
    pub fn idle_count(&self, key: &PoolKey) -> usize {
        self.0.borrow().get(key).map_or(0, VecDeque::len)
    }
}

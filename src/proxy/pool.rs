//! The upstream connection pool: per worker (no locks; owned by its
//! [`crate::server::WorkerCtx`]), per upstream.
//!
//! Idle connections are kept per server address up to the group's
//! `max_idle_connections_per_server` (a `url` route's `max_idle_connections_per_host`), for at
//! most its `idle_connection_timeout_secs`; the most recently used one is reused first. Before reuse a
//! connection is checked without blocking: one the upstream has closed (or that has unexpected
//! bytes waiting) is dropped.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::group::ServerState;
use crate::net::upstream::UpstreamConn;

/// What identifies interchangeable upstream connections: the server's resolved address (so a
/// DNS change never reuses a connection to an address that left) and its TLS identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub addr: SocketAddr,
    /// The TLS name, for TLS servers.
    pub tls_name: Option<Arc<str>>,
    /// The group's `ca_file`: connections verified against other CAs are not shared.
    pub ca_file: Option<Arc<std::path::Path>>,
}

struct Idle {
    conn: UpstreamConn,
    /// When it is closed if nobody takes it.
    expires: Instant,
    /// Its server: a drained, disabled or removed one keeps no idle connection.
    server: Weak<ServerState>,
}

impl Idle {
    fn keep(&self, now: Instant) -> bool {
        now < self.expires && self.server.upgrade().is_some_and(|s| s.keeps_idle())
    }
}

/// One worker's idle upstream connections, by server (see [`crate::server::WorkerCtx`]).
#[derive(Default)]
pub struct Pool(RefCell<HashMap<PoolKey, VecDeque<Idle>>>);

impl Pool {
    /// Takes a usable idle connection to `key`, dropping expired and closed ones.
    pub fn take(&self, key: &PoolKey) -> Option<UpstreamConn> {
        let mut pool = self.0.borrow_mut();
        let idle = pool.get_mut(key)?;
        let now = Instant::now();
        while let Some(mut entry) = idle.pop_back() {
            if entry.keep(now) && entry.conn.idle_and_open() {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Returns a connection to `server` after a complete exchange, to be kept for `keep`; the
    /// oldest idle ones beyond `max` are closed.
    pub fn put(
        &self,
        key: &PoolKey,
        server: &Arc<ServerState>,
        conn: UpstreamConn,
        max: usize,
        keep: Duration,
    ) {
        if max == 0 || keep.is_zero() || !server.keeps_idle() {
            return;
        }
        let mut pool = self.0.borrow_mut();
        let idle = pool.entry(key.clone()).or_default();
        idle.push_back(Idle {
            conn,
            expires: Instant::now() + keep,
            server: Arc::downgrade(server),
        });
        while idle.len() > max {
            idle.pop_front();
        }
    }

    /// Closes the idle connections whose time is up, or whose server is drained, disabled or
    /// gone. Each worker runs it every second, so an idle connection lives at most about a
    /// second past `idle_connection_timeout_secs`, and a drained server's close within one.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.0.borrow_mut().retain(|_, idle| {
            idle.retain(|c| c.keep(now));
            !idle.is_empty()
        });
    }

    /// Idle connections held for `key` (for tests and stats).
    pub fn idle_count(&self, key: &PoolKey) -> usize {
        self.0.borrow().get(key).map_or(0, VecDeque::len)
    }
}

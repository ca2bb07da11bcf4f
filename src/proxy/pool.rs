//! The upstream connection pool: per worker (no locks; owned by its
//! [`crate::server::WorkerCtx`]), per upstream.
//!
//! Idle connections are kept per server address for at most the group's
//! `idle_connection_timeout_secs`; the most recently used one is reused first. Before reuse a
//! connection is checked without blocking: one the upstream has closed (or that has unexpected
//! bytes waiting) is dropped.
//!
//! The group's `max_idle_connections_per_server` (a `url` route's
//! `max_idle_connections_per_host`) is what stays once the load has passed, not a wall a busy
//! worker runs into: 50 clients keep about 50 upstream connections busy, and a cap of 8 closed
//! at once would close most connections as they come back, and open new ones for the next
//! requests — nearly a new upstream connection per request. So connections beyond the cap are
//! closed only when they have been idle for [`SURPLUS_GRACE`] (the least recently used first):
//! while the load lasts they are taken again long before that, and when it stops they go
//! within a sweep or two. At most the connections the load had busy at once are kept.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;

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

/// How long a connection beyond the pool's cap may wait idle for a request.
pub const SURPLUS_GRACE: Duration = Duration::from_secs(2);

/// What the pool holds: a connection that can tell whether it is still fit for a request.
pub trait Pooled {
    /// Open, and nothing unexpected waiting on it.
    fn idle_and_open(&mut self) -> bool;
}

impl Pooled for UpstreamConn {
    fn idle_and_open(&mut self) -> bool {
        UpstreamConn::idle_and_open(self)
    }
}

struct Idle<C> {
    conn: C,
    /// When it came back.
    since: Instant,
    /// When it is closed if nobody takes it.
    expires: Instant,
    /// Its server: a drained, disabled or removed one keeps no idle connection.
    server: Weak<ServerState>,
    /// The cap when it came back (the newest entry's is the one that counts).
    max: usize,
}

/// Closes the least recently used connections beyond the cap that have waited out the grace.
fn trim<C>(idle: &mut VecDeque<Idle<C>>, now: Instant) {
    let max = idle.back().map_or(0, |c| c.max);
    while idle.len() > max
        && idle
            .front()
            .is_some_and(|c| now.saturating_duration_since(c.since) >= SURPLUS_GRACE)
    {
        idle.pop_front();
    }
}

impl<C> Idle<C> {
    fn keep(&self, now: Instant) -> bool {
        now < self.expires && self.server.upgrade().is_some_and(|s| s.keeps_idle())
    }
}

/// One worker's idle upstream connections, by server (see [`crate::server::WorkerCtx`]).
///
/// Keyed with foldhash: the keys are the config's upstream addresses, never a client's, and a
/// request hashes its key twice (take and put) — SipHash cost as much as the rest of the pool.
pub struct Pool<C = UpstreamConn>(RefCell<HashMap<PoolKey, VecDeque<Idle<C>>, RandomState>>);

impl<C> Default for Pool<C> {
    fn default() -> Self {
        Self(RefCell::new(HashMap::with_hasher(RandomState::default())))
    }
}

impl<C: Pooled> Pool<C> {
    /// Takes a usable idle connection to `key`, dropping expired and closed ones.
    pub fn take(&self, key: &PoolKey) -> Option<C> {
        self.take_at(key, Instant::now())
    }

    fn take_at(&self, key: &PoolKey, now: Instant) -> Option<C> {
        let mut pool = self.0.borrow_mut();
        let idle = pool.get_mut(key)?;
        while let Some(mut entry) = idle.pop_back() {
            if entry.keep(now) && entry.conn.idle_and_open() {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Returns a connection to `server` after a complete exchange, to be kept for `keep`; the
    /// ones beyond `max` that have waited [`SURPLUS_GRACE`] are closed.
    pub fn put(
        &self,
        key: &PoolKey,
        server: &Arc<ServerState>,
        conn: C,
        max: usize,
        keep: Duration,
    ) {
        self.put_at(key, server, conn, max, keep, Instant::now());
    }

    fn put_at(
        &self,
        key: &PoolKey,
        server: &Arc<ServerState>,
        conn: C,
        max: usize,
        keep: Duration,
        now: Instant,
    ) {
        if max == 0 || keep.is_zero() || !server.keeps_idle() {
            return;
        }
        let mut pool = self.0.borrow_mut();
        let idle = pool.entry(key.clone()).or_default();
        idle.push_back(Idle {
            conn,
            since: now,
            expires: now + keep,
            server: Arc::downgrade(server),
            max,
        });
        trim(idle, now);
    }

    /// Closes the idle connections whose time is up, whose server is drained, disabled or
    /// gone, and those beyond the cap that waited [`SURPLUS_GRACE`]. Each worker runs it every
    /// second, so an idle connection lives at most about a second past
    /// `idle_connection_timeout_secs` (or the grace), and a drained server's close within one.
    pub fn sweep(&self) {
        self.sweep_at(Instant::now());
    }

    fn sweep_at(&self, now: Instant) {
        self.0.borrow_mut().retain(|_, idle| {
            idle.retain(|c| c.keep(now));
            trim(idle, now);
            !idle.is_empty()
        });
    }

    /// Idle connections held for `key` (for tests and stats).
    pub fn idle_count(&self, key: &PoolKey) -> usize {
        self.0.borrow().get(key).map_or(0, VecDeque::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that stays open unless told otherwise.
    struct Fake {
        id: usize,
        open: bool,
    }

    impl Pooled for Fake {
        fn idle_and_open(&mut self) -> bool {
            self.open
        }
    }

    fn key() -> PoolKey {
        PoolKey {
            addr: "127.0.0.1:9".parse().expect("an address"),
            tls_name: None,
            ca_file: None,
        }
    }

    fn server() -> Arc<ServerState> {
        Arc::new(ServerState::new(key().addr, true, 0))
    }

    const KEEP: Duration = Duration::from_secs(30);

    #[test]
    fn a_burst_beyond_the_cap_is_kept_for_the_grace_then_trimmed_to_the_cap() {
        let (pool, k, s, t0) = (Pool::default(), key(), server(), Instant::now());
        // 50 requests in flight come back one after the other: all are kept, so the next
        // 50 requests reuse them instead of opening new connections.
        for id in 0..50 {
            pool.put_at(&k, &s, Fake { id, open: true }, 8, KEEP, t0);
        }
        assert_eq!(pool.idle_count(&k), 50);
        pool.sweep_at(t0 + SURPLUS_GRACE / 2);
        assert_eq!(pool.idle_count(&k), 50);
        // Most recently returned first.
        assert_eq!(pool.take_at(&k, t0).map(|c| c.id), Some(49));
        // Once the load is gone, the surplus goes, the least recently used first.
        pool.sweep_at(t0 + SURPLUS_GRACE);
        assert_eq!(pool.idle_count(&k), 8);
        let left: Vec<usize> = std::iter::from_fn(|| pool.take_at(&k, t0).map(|c| c.id)).collect();
        assert_eq!(left, (41..49).rev().collect::<Vec<_>>());
    }

    #[test]
    fn a_connection_returned_under_load_is_not_the_one_trimmed() {
        let (pool, k, s, t0) = (Pool::default(), key(), server(), Instant::now());
        for id in 0..10 {
            pool.put_at(&k, &s, Fake { id, open: true }, 8, KEEP, t0);
        }
        // Later returns trim the surplus that has waited long enough, oldest first.
        let later = t0 + SURPLUS_GRACE;
        pool.put_at(&k, &s, Fake { id: 10, open: true }, 8, KEEP, later);
        assert_eq!(pool.idle_count(&k), 8);
        assert_eq!(pool.take_at(&k, later).map(|c| c.id), Some(10));
    }

    #[test]
    fn closed_expired_and_unpooled_connections_are_not_handed_out() {
        let (pool, k, s, t0) = (Pool::default(), key(), server(), Instant::now());
        pool.put_at(&k, &s, Fake { id: 0, open: true }, 8, KEEP, t0);
        pool.put_at(&k, &s, Fake { id: 1, open: false }, 8, KEEP, t0);
        // The closed one is dropped, the open one below it taken.
        assert_eq!(pool.take_at(&k, t0).map(|c| c.id), Some(0));
        pool.put_at(&k, &s, Fake { id: 2, open: true }, 8, KEEP, t0);
        assert!(pool.take_at(&k, t0 + KEEP).is_none());
        // A cap of 0 or no keep-alive time: nothing pooled.
        pool.put_at(&k, &s, Fake { id: 3, open: true }, 0, KEEP, t0);
        pool.put_at(&k, &s, Fake { id: 4, open: true }, 8, Duration::ZERO, t0);
        assert_eq!(pool.idle_count(&k), 0);
    }
}

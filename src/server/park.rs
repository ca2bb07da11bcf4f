//! Parked connections: how a worker holds thousands of idle keep-alive connections in a few
//! dozen bytes each.
//!
//! An HTTP/1.1 connection that has waited for its next request through two idle sweeps
//! (100–200 ms, see [`super::registry::IDLE_SWEEP`]) gives up its task, its monoio socket, its
//! idle state and its registry entry. What is left is one [`Parked`] entry in the worker's
//! table, its descriptor in the worker's own epoll set (kernel memory, not the daemon's), and
//! over userspace TLS its session — keys and state, about 2 KiB; it holds no buffer while
//! idle ([`crate::net::server_tls`]). One watcher task
//! per worker waits for that epoll set to become readable and gives every connection with
//! bytes (or a hang-up) a fresh task, which reads its request as if it had never left. The
//! idle sweep closes parked connections whose deadline has passed; a drain answers those whose
//! request has already arrived and closes the rest.
//!
//! A busy connection never parks — its next request comes long before the second sweep — so
//! the request path pays nothing for this; parking and waking cost a few syscalls each
//! (`dup`, `epoll_ctl` twice) once per idle period. A parked connection closed at its deadline
//! (or by a drain) sends TLS's `close_notify` first, as one with a task does.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::net::client::ParkedLayer;
use crate::net::sys;
use crate::shared::Admitted;

/// Events taken from the epoll set per `epoll_wait`.
const BATCH: usize = 64;

/// A connection waiting for its next request without a task.
pub struct Parked {
    /// The connection's socket (a duplicate: the original closed with its monoio stream).
    pub fd: OwnedFd,
    /// Its TLS session, when it has one.
    pub layer: ParkedLayer,
    pub peer: SocketAddr,
    /// Its place in the open-connection counts, kept while parked.
    pub admitted: Admitted,
    /// When it is closed if no request has begun.
    pub deadline: Instant,
    /// Whether it waits for its first request, whose head must be complete by `deadline`
    /// (the header timeout runs from the accept, parked or not).
    pub first: bool,
}

/// A worker's parked connections: a table and an epoll set, on the worker's thread only.
pub struct Parking {
    epoll: OwnedFd,
    /// The epoll set as a monoio stream, for the watcher to await.
    watch: monoio::net::UnixStream,
    table: RefCell<Table>,
}

/// What the table holds: something with a deadline.
trait Deadline {
    fn deadline(&self) -> Instant;
}

impl Deadline for Parked {
    fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// Entries by slot; a slot's number is its epoll key.
struct Table<P = Parked> {
    slots: Vec<Option<P>>,
    /// Empty slots below `slots.len()` (keys at or past it are stale: dropped when seen).
    free: Vec<u32>,
    len: usize,
    /// No entry's deadline is before this: the sweep skips the scan until then.
    next_due: Option<Instant>,
}

impl<P> Default for Table<P> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            next_due: None,
        }
    }
}

impl<P: Deadline> Table<P> {
    fn insert(&mut self, p: P) -> u32 {
        self.len += 1;
        let at = p.deadline();
        self.next_due = Some(self.next_due.map_or(at, |d| d.min(at)));
        while let Some(key) = self.free.pop() {
            if let Some(slot @ None) = self.slots.get_mut(key as usize) {
                *slot = Some(p);
                return key;
            }
        }
        self.slots.push(Some(p));
        (self.slots.len() - 1) as u32
    }

    fn remove(&mut self, key: u32) -> Option<P> {
        let p = self.slots.get_mut(key as usize)?.take()?;
        self.len -= 1;
        self.free.push(key);
        Some(p)
    }

    /// The keys of entries whose deadline is `now` or earlier, and the earliest deadline of
    /// the others (the next scan). Nothing to scan before `next_due`.
    fn due(&mut self, now: Instant) -> Vec<u32> {
        if self.next_due.is_none_or(|d| d > now) {
            return Vec::new();
        }
        let mut next = None::<Instant>;
        let mut due = Vec::new();
        for (k, p) in self.slots.iter().enumerate() {
            let Some(at) = p.as_ref().map(Deadline::deadline) else {
                continue;
            };
            if at <= now {
                due.push(k as u32);
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        self.next_due = next;
        due
    }

    /// Gives back the room a burst of parked connections left: the empty slots at the end go,
    /// and the memory once most of it is unused (a table of 10,000 slots holds ~1 MB).
    fn shrink(&mut self) {
        while matches!(self.slots.last(), Some(None)) {
            self.slots.pop();
        }
        let live = self.slots.len();
        self.free.retain(|&k| (k as usize) < live);
        if self.slots.capacity() > 2 * live + 64 {
            self.slots.shrink_to_fit();
            self.free.shrink_to_fit();
        }
    }
}

impl Parking {
    /// An empty table with its epoll set (on a monoio runtime's thread).
    pub fn new() -> std::io::Result<Self> {
        let epoll = sys::epoll_create()?;
        let watch = sys::watchable(epoll.as_fd())?;
        Ok(Self {
            epoll,
            watch,
            table: RefCell::default(),
        })
    }

    /// Parks a connection: `Err` gives it back, with the reason, when the epoll set refuses
    /// it.
    pub fn park(&self, p: Parked) -> Result<(), (Parked, std::io::Error)> {
        // The table owns the descriptor from here; it stays open while the key is in it.
        let fd = p.fd.as_raw_fd();
        let key = self.table.borrow_mut().insert(p);
        let events = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
        let added = {
            let table = self.table.borrow();
            match table.slots.get(key as usize).and_then(Option::as_ref) {
                Some(p) => sys::epoll_add(self.epoll.as_fd(), p.fd.as_fd(), events, u64::from(key)),
                None => Err(std::io::Error::other(format!(
                    "descriptor {fd} not in the table"
                ))),
            }
        };
        if let Err(e) = added {
            return match self.table.borrow_mut().remove(key) {
                Some(p) => Err((p, e)),
                None => Ok(()),
            };
        }
        if let Some(p) = self
            .table
            .borrow()
            .slots
            .get(key as usize)
            .and_then(Option::as_ref)
        {
            p.admitted.gauge().fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// How many connections are parked.
    pub fn len(&self) -> usize {
        self.table.borrow().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes out the parked connections that have bytes or a hang-up to read, at most
    /// [`BATCH`] at a time; empty when none has.
    pub fn ready(&self) -> Vec<Parked> {
        sys::epoll_ready::<BATCH>(self.epoll.as_fd())
            .into_iter()
            .filter_map(|key| self.unpark(key as u32))
            .collect()
    }

    /// Closes the parked connections whose deadline is `now` or earlier (looking only once
    /// the earliest deadline has come), and gives back the table's room that parked
    /// connections no longer use; returns how many closed.
    pub fn expire(&self, now: Instant) -> usize {
        let due = self.table.borrow_mut().due(now);
        for &key in &due {
            if let Some(mut p) = self.unpark(key) {
                p.layer.close(p.fd.as_raw_fd());
            }
        }
        let mut table = self.table.borrow_mut();
        if table.slots.len() > 2 * table.len + 64
            || table.slots.capacity() > 2 * table.slots.len() + 64
        {
            table.shrink();
        }
        due.len()
    }

    /// Closes every parked connection (a drain), except those whose request has arrived:
    /// those go to `resume`, to be answered (with `Connection: close`).
    pub fn close_all(&self, resume: impl Fn(Parked)) {
        loop {
            let woken = self.ready();
            if woken.is_empty() {
                break;
            }
            woken.into_iter().for_each(&resume);
        }
        self.expire(Instant::now() + Duration::from_secs(365 * 24 * 3600));
    }

    /// Takes a connection out of the table and the epoll set.
    fn unpark(&self, key: u32) -> Option<Parked> {
        let p = self.table.borrow_mut().remove(key)?;
        sys::epoll_remove(self.epoll.as_fd(), p.fd.as_fd());
        p.admitted.gauge().fetch_sub(1, Ordering::Relaxed);
        Some(p)
    }
}

/// Gives parked connections with something to read a task again, for as long as the worker
/// runs: `resume` is called with each one.
pub async fn watch(parking: Rc<Parking>, resume: impl Fn(Parked)) {
    loop {
        if let Err(e) = parking.watch.readable(false).await {
            // Not expected; looking every 10 ms still serves them.
            log::debug!("waiting on the parked connections' epoll set: {e}");
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        loop {
            let woken = parking.ready();
            let more = woken.len() == BATCH;
            for p in woken {
                resume(p);
            }
            if !more {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Entry(Instant);

    impl Deadline for Entry {
        fn deadline(&self) -> Instant {
            self.0
        }
    }

    #[test]
    fn the_table_is_scanned_only_when_a_deadline_has_come() {
        let t = Instant::now();
        let mut table = Table::default();
        let a = table.insert(Entry(t + Duration::from_secs(60)));
        let b = table.insert(Entry(t + Duration::from_secs(5)));
        assert!(table.due(t).is_empty());
        assert_eq!(table.next_due, Some(t + Duration::from_secs(5)));
        assert_eq!(table.due(t + Duration::from_secs(5)), [b]);
        table.remove(b);
        // The next scan waits for the other one's deadline.
        assert_eq!(table.next_due, Some(t + Duration::from_secs(60)));
        assert!(table.due(t + Duration::from_secs(30)).is_empty());
        assert_eq!(table.due(t + Duration::from_secs(60)), [a]);
    }

    #[test]
    fn the_table_shrinks_when_parked_connections_go() {
        let far = Instant::now() + Duration::from_secs(60);
        let mut table = Table::default();
        let keys: Vec<u32> = (0..10_000).map(|_| table.insert(Entry(far))).collect();
        assert_eq!(table.slots.len(), 10_000);
        // All but the first 10 go: the slots after them, and the memory, are given back.
        for &k in &keys[10..] {
            table.remove(k);
        }
        table.shrink();
        assert_eq!((table.slots.len(), table.len), (10, 10));
        assert!(table.slots.capacity() < 100, "{}", table.slots.capacity());
        assert!(table.free.is_empty());
        // Holes below the end are reused; stale free keys are never handed out.
        table.remove(keys[3]);
        table.free.push(50_000);
        assert_eq!(table.insert(Entry(far)), keys[3]);
        assert_eq!(table.insert(Entry(far)), 10);
        assert_eq!(table.len, 11);
    }
}

//! Each worker's registry of its connections: their idle state ([`IdleState`]), which the
//! worker's sweep uses to end idle waits at their deadlines (one sweep instead of a timer per
//! connection), to wake them all for a drain, and to park the ones idle long enough
//! ([`super::park`]).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::park;
use super::WorkerCtx;

/// A connection's idle state, shared by its task and the worker's idle sweep.
pub type Idle = Rc<IdleState>;

/// What the idle sweep knows of a connection's wait for its next request.
#[derive(Default)]
pub struct IdleState {
    /// `Some(deadline)` while the connection waits for a request: the sweep closes it then if
    /// nothing came.
    deadline: Cell<Option<Instant>>,
    /// Sweeps that have seen the current wait.
    sweeps: Cell<u8>,
    /// Whether the connection may park (plain HTTP; see [`park`]).
    parkable: Cell<bool>,
    /// Set by the sweep: the connection is to leave its task and park.
    park: Cell<bool>,
    /// The waiting task's waker, for the sweep to ask it to park.
    waker: Cell<Option<Waker>>,
}

impl IdleState {
    /// Marks whether the connection may park when it has waited long enough.
    pub fn set_parkable(&self, parkable: bool) {
        self.parkable.set(parkable);
    }

    /// Starts a wait for the next request, to end by `deadline`.
    pub fn begin(&self, deadline: Instant) {
        self.sweeps.set(0);
        self.park.set(false);
        self.deadline.set(Some(deadline));
    }

    /// Ends the wait: `true` when it was still on (bytes arrived), `false` when the sweep (past
    /// the deadline) or a drain ended it.
    pub fn end(&self) -> bool {
        drop(self.waker.take());
        self.deadline.replace(None).is_some()
    }

    /// Waits for `readable` unless the sweep asks the connection to park first.
    pub fn wait<F: Future<Output = bool>>(&self, readable: F) -> IdleWait<'_, F> {
        IdleWait {
            idle: self,
            readable,
        }
    }
}

/// How an idle wait ended.
pub enum Woke {
    /// The socket became readable (`true`) or failed (`false`).
    Ready(bool),
    /// The sweep asked the connection to park.
    Park,
}

pin_project_lite::pin_project! {
    /// The future of [`IdleState::wait`].
    pub struct IdleWait<'a, F> {
        idle: &'a IdleState,
        #[pin]
        readable: F,
    }

    impl<F> PinnedDrop for IdleWait<'_, F> {
        fn drop(this: Pin<&mut Self>) {
            // The waker must not outlive the wait: it would keep the task alive.
            drop(this.project().idle.waker.take());
        }
    }
}

impl<F: Future<Output = bool>> Future for IdleWait<'_, F> {
    type Output = Woke;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Woke> {
        let this = self.project();
        if this.idle.park.get() {
            return Poll::Ready(Woke::Park);
        }
        if let Poll::Ready(ready) = this.readable.poll(cx) {
            return Poll::Ready(Woke::Ready(ready));
        }
        let waker = match this.idle.waker.take() {
            Some(w) if w.will_wake(cx.waker()) => w,
            _ => cx.waker().clone(),
        };
        this.idle.waker.set(Some(waker));
        Poll::Pending
    }
}

/// A registered connection: its socket and its idle state.
type Registered = (RawFd, Idle);

/// How often a worker closes the idle connections whose deadline has passed (and parks the
/// plain ones that have waited through two sweeps).
pub const IDLE_SWEEP: Duration = Duration::from_millis(100);

/// A worker's registry of its connections, so that a drain can wake the idle ones and idle
/// deadlines are kept by one sweep per worker instead of a timer per connection. Idle plain
/// connections park after two sweeps (see [`park`]). Lives on the worker's thread only.
pub struct Registry {
    next: Cell<u64>,
    conns: RefCell<HashMap<u64, Registered>>,
    /// Where idle connections park; `None` when the worker could not make an epoll set.
    pub parking: Option<Rc<park::Parking>>,
    /// The lowest number of parked connections since the worker last gave freed memory back,
    /// and when it did.
    released: Cell<(usize, Instant)>,
    /// Whether accepted connections have `TCP_NODELAY` from the listener already.
    pub nodelay_inherited: Cell<bool>,
    /// The worker's state its connections use.
    pub ctx: Rc<WorkerCtx>,
}

/// How many more connections must be parked than at the low point since the worker last gave
/// its freed memory back before it does so again (and at most once per [`RELEASE_EVERY`]): the
/// tasks of a burst of connections that went idle are freed, and their memory would otherwise
/// stay resident. Connections that come and go at a steady rate do not trigger it.
const RELEASE_AFTER_PARKS: usize = 256;
const RELEASE_EVERY: Duration = Duration::from_secs(1);

impl Registry {
    /// An empty registry; idle connections park when an epoll set can be had, unless
    /// `ZEROCOPY_IDLE_PARKING=off` is in the environment (for comparison).
    pub fn new(worker: usize) -> Self {
        let off = std::env::var_os("ZEROCOPY_IDLE_PARKING").is_some_and(|v| v == "off");
        let parking = match park::Parking::new() {
            Ok(_) if off => None,
            Ok(p) => Some(Rc::new(p)),
            Err(e) => {
                log::warn!("worker {worker}: idle connections keep their tasks: epoll: {e}");
                None
            }
        };
        Self {
            next: Cell::new(0),
            conns: RefCell::default(),
            parking,
            released: Cell::new((0, Instant::now())),
            nodelay_inherited: Cell::new(false),
            ctx: Rc::new(WorkerCtx::new(worker)),
        }
    }

    /// Registers a connection; the returned cell is the connection's idle state.
    pub(crate) fn add(&self, fd: RawFd) -> (u64, Idle) {
        let id = self.next.get();
        self.next.set(id + 1);
        let idle = Rc::new(IdleState::default());
        self.conns.borrow_mut().insert(id, (fd, idle.clone()));
        (id, idle)
    }

    pub(crate) fn remove(&self, id: u64) {
        self.conns.borrow_mut().remove(&id);
    }

    /// Shuts the read side of every idle connection: their pending readiness wait ends and the
    /// task sees the end of the stream (bytes already received are still read first). Parked
    /// connections close.
    pub fn wake_idle(self: &Rc<Self>) {
        self.sweep(None);
    }

    /// Ends the wait of every idle connection whose deadline has passed (the connection then
    /// sees the end of its stream, notes the deadline and closes), closes parked ones past
    /// theirs, and asks the plain connections that have waited through two sweeps to park.
    pub fn expire_idle(self: &Rc<Self>, now: Instant) {
        self.sweep(Some(now));
    }

    /// `now` = `None`: a drain, every idle connection is due.
    fn sweep(self: &Rc<Self>, now: Option<Instant>) {
        let can_park = now.is_some() && self.parking.is_some();
        for (fd, idle) in self.conns.borrow().values() {
            let Some(deadline) = idle.deadline.get() else {
                continue;
            };
            if now.is_none_or(|now| deadline <= now) {
                // Once: the connection is woken, not idle any more.
                idle.deadline.set(None);
                // The descriptor belongs to a live connection task of this thread: a
                // connection is idle (`Some`) only while it waits with its socket open, and it
                // clears the cell before it can close.
                crate::net::sys::shutdown_read(*fd);
            } else if can_park && idle.parkable.get() && !idle.park.get() {
                let seen = idle.sweeps.get().saturating_add(1);
                idle.sweeps.set(seen);
                if seen >= 2 {
                    idle.park.set(true);
                    if let Some(waker) = idle.waker.take() {
                        waker.wake();
                    }
                }
            }
        }
        if let Some(parking) = &self.parking {
            match now {
                Some(now) => {
                    parking.expire(now);
                    let (low, at) = self.released.get();
                    let parked = parking.len();
                    if parked >= low + RELEASE_AFTER_PARKS
                        && now.duration_since(at) >= RELEASE_EVERY
                    {
                        crate::memory::release_freed();
                        self.released.set((parked, now));
                    } else if parked < low {
                        self.released.set((parked, at));
                    }
                }
                None => parking.close_all(|p| crate::server::connection::resume(p, self)),
            }
        }
        // A burst of connections that has parked or closed leaves the table's room behind.
        let mut conns = self.conns.borrow_mut();
        if conns.capacity() > 4 * conns.len() + 256 {
            conns.shrink_to_fit();
        }
    }
}

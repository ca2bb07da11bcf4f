//! What the daemon knows about each server and group while it runs: health, ejection,
//! in-flight requests, the operator's drain/disable, counters. All atomics, shared by every
//! worker, the health thread and the admin API; kept in the [`Fleet`] by (group, address) so
//! that a reload (which builds new groups) carries them over.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use arc_swap::ArcSwapOption;

use crate::config::FailureKind;

/// Milliseconds on the monotonic clock since the first call (never 0 after it).
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(|| Instant::now() - std::time::Duration::from_millis(1));
    start.elapsed().as_millis() as u64
}

/// Milliseconds since the Unix epoch, for what the admin API shows.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The operator's say over a server (`proxyctl upstream GROUP ADDRESS …`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admin {
    Enabled = 0,
    /// No new requests; in-flight ones finish; idle pooled connections close.
    Draining = 1,
    /// As draining, and its active checks pause.
    Disabled = 2,
}

/// Failure kinds counted per server, in this order.
pub const FAILURE_KINDS: [&str; 8] = [
    "connect", "reset", "timeout", "garbage", "500", "502", "503", "504",
];

fn failure_index(kind: FailureKind) -> usize {
    match kind {
        FailureKind::Connect | FailureKind::RefusedStream => 0,
        FailureKind::Reset => 1,
        FailureKind::Timeout => 2,
        FailureKind::Garbage => 3,
        FailureKind::Status(500) => 4,
        FailureKind::Status(503) => 6,
        FailureKind::Status(504) => 7,
        FailureKind::Status(_) => 5,
    }
}

/// An event in a server's life, for `proxyctl upstreams`.
#[derive(Clone, Debug)]
pub struct Note {
    /// Unix milliseconds.
    pub at: u64,
    pub what: String,
}

/// One server (one resolved address of one group).
#[derive(Debug)]
#[repr(align(64))]
pub struct ServerState {
    pub addr: SocketAddr,
    /// The active checks' verdict (always true without checks).
    healthy: AtomicBool,
    /// Consecutive passing / failing checks (the health thread's).
    pub(super) passes: AtomicU32,
    pub(super) fails: AtomicU32,
    /// `now_ms` until which it is (or was last) ejected; 0 = never was.
    ejected_until: AtomicU64,
    /// The `ejected_until` whose end was noted (logged once).
    end_noted: AtomicU64,
    consecutive_failures: AtomicU32,
    /// Ejections in a row (the next lasts `ejection_secs` × this + 1).
    ejections: AtomicU32,
    in_flight: AtomicU32,
    admin: AtomicU8,
    /// `now_ms` from which it is usable again after being down: slow start counts from here
    /// (0: it was there from the start, and does not ramp up).
    usable_since: AtomicU64,
    /// No longer a member of any group (DNS dropped it, or a reload): pooled connections close.
    removed: AtomicBool,
    pub requests: AtomicU64,
    failures: [AtomicU64; 8],
    pub ejections_total: AtomicU64,
    pub to_healthy: AtomicU64,
    pub to_unhealthy: AtomicU64,
    pub checks: AtomicU64,
    pub check_micros: AtomicU64,
    /// The last active check: when, and its error if it failed.
    pub last_check: ArcSwapOption<(u64, Option<String>)>,
    pub last_transition: ArcSwapOption<Note>,
}

impl ServerState {
    pub fn new(addr: SocketAddr, healthy: bool, usable_since: u64) -> Self {
        Self {
            addr,
            healthy: AtomicBool::new(healthy),
            passes: AtomicU32::new(0),
            fails: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            end_noted: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            in_flight: AtomicU32::new(0),
            admin: AtomicU8::new(Admin::Enabled as u8),
            usable_since: AtomicU64::new(usable_since),
            removed: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            failures: Default::default(),
            ejections_total: AtomicU64::new(0),
            to_healthy: AtomicU64::new(0),
            to_unhealthy: AtomicU64::new(0),
            checks: AtomicU64::new(0),
            check_micros: AtomicU64::new(0),
            last_check: ArcSwapOption::empty(),
            last_transition: ArcSwapOption::empty(),
        }
    }

    pub fn admin(&self) -> Admin {
        match self.admin.load(Relaxed) {
            0 => Admin::Enabled,
            1 => Admin::Draining,
            _ => Admin::Disabled,
        }
    }

    pub fn set_admin(&self, a: Admin) {
        let before = self.admin.swap(a as u8, Relaxed);
        if before != a as u8 && a == Admin::Enabled {
            self.usable_since.store(now_ms(), Relaxed);
        }
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    /// Sets the checks' verdict; `true` when it changed.
    pub(super) fn set_healthy(&self, healthy: bool) -> bool {
        let changed = self.healthy.swap(healthy, Relaxed) != healthy;
        if changed && healthy {
            self.usable_since.store(now_ms(), Relaxed);
        }
        changed
    }

    /// `Some(until)` while ejected.
    pub fn ejected_until(&self, now: u64) -> Option<u64> {
        let until = self.ejected_until.load(Relaxed);
        (until > now).then_some(until)
    }

    /// Takes note that an ejection is over (once): `true` the first time after it ended.
    pub(super) fn ejection_ended(&self, now: u64) -> bool {
        let until = self.ejected_until.load(Relaxed);
        until != 0 && until <= now && self.end_noted.swap(until, Relaxed) != until
    }

    /// Enabled, healthy and not ejected.
    pub fn usable(&self, now: u64) -> bool {
        self.enabled() && self.healthy() && self.ejected_until.load(Relaxed) <= now
    }

    pub fn enabled(&self) -> bool {
        self.admin.load(Relaxed) == Admin::Enabled as u8
    }

    /// Its share during slow start, 0.05 to 1.
    pub fn ramp(&self, now: u64, slow_start_ms: u64) -> f64 {
        let since = self.usable_since.load(Relaxed);
        if slow_start_ms == 0 || since == 0 || now >= since + slow_start_ms {
            return 1.0;
        }
        (now.saturating_sub(since) as f64 / slow_start_ms as f64).max(0.05)
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    /// Counts a request to this server until the guard drops.
    pub fn begin(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Relaxed);
        self.requests.fetch_add(1, Relaxed);
        InFlight(self)
    }

    pub fn failures(&self) -> [u64; 8] {
        std::array::from_fn(|i| self.failures[i].load(Relaxed))
    }

    pub fn removed(&self) -> bool {
        self.removed.load(Relaxed)
    }

    pub(super) fn set_removed(&self, removed: bool) {
        self.removed.store(removed, Relaxed);
    }

    /// Whether idle pooled connections to it may be kept and reused.
    pub fn keeps_idle(&self) -> bool {
        self.enabled() && !self.removed()
    }

    pub fn note(&self, what: String) {
        self.last_transition.store(Some(Arc::new(Note {
            at: wall_ms(),
            what,
        })));
    }

    /// A success: the run of failures ends; an old run of ejections is forgotten.
    pub(super) fn succeeded(&self, now: u64, max_ejection_ms: u64) {
        if self.consecutive_failures.load(Relaxed) != 0 {
            self.consecutive_failures.store(0, Relaxed);
        }
        if self.ejections.load(Relaxed) != 0 {
            // A run of ejections is forgotten once the server has done well for
            // `max_ejection_secs` after the last one.
            if now > self.ejected_until.load(Relaxed) + max_ejection_ms {
                self.ejections.store(0, Relaxed);
            }
        }
    }

    /// A failure: counted; the length of the run it extends.
    pub(super) fn failed(&self, kind: FailureKind, counts: bool) -> u32 {
        self.failures[failure_index(kind)].fetch_add(1, Relaxed);
        if counts {
            self.consecutive_failures.fetch_add(1, Relaxed) + 1
        } else {
            0
        }
    }

    /// Ejects it until `now` + `base` × (ejections in a row), capped at `max`; the duration,
    /// or `None` when another thread ejected it first.
    pub(super) fn eject(&self, now: u64, base_ms: u64, max_ms: u64) -> Option<u64> {
        let before = self.ejected_until.load(Relaxed);
        if before > now {
            return None;
        }
        let n = u64::from(self.ejections.load(Relaxed)) + 1;
        let ms = base_ms.saturating_mul(n).min(max_ms);
        let until = now + ms;
        self.ejected_until
            .compare_exchange(before, until, Relaxed, Relaxed)
            .ok()?;
        self.ejections.fetch_add(1, Relaxed);
        self.consecutive_failures.store(0, Relaxed);
        self.usable_since.store(until, Relaxed);
        self.ejections_total.fetch_add(1, Relaxed);
        Some(ms)
    }
}

/// A request in flight on a server.
pub struct InFlight<'a>(&'a ServerState);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// Reasons a request was retried, in this order.
pub const RETRY_REASONS: [&str; 7] = [
    "connect-failure",
    "refused-stream",
    "reset-before-response",
    "timeout",
    "502",
    "503",
    "504",
];

pub(super) fn retry_index(kind: FailureKind) -> usize {
    match kind {
        FailureKind::Connect | FailureKind::Garbage => 0,
        FailureKind::RefusedStream => 1,
        FailureKind::Reset => 2,
        FailureKind::Timeout => 3,
        FailureKind::Status(503) => 5,
        FailureKind::Status(504) => 6,
        FailureKind::Status(_) => 4,
    }
}

/// One worker's count of a group's requests for the retry budget: the second, its requests,
/// and those of the second before. Written by that worker only (no shared cache line on the
/// data path); read by any worker that wants a retry.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Window {
    second: AtomicU64,
    requests: AtomicU64,
    previous: AtomicU64,
}

/// One group's state: its retry budget, whether it fails open, counters.
#[derive(Debug)]
pub struct GroupState {
    windows: Box<[Window]>,
    /// Retries taken in `retry_second`.
    retry_second: AtomicU64,
    window_retries: AtomicU64,
    pub retries: [AtomicU64; 7],
    pub budget_exhausted: AtomicU64,
    /// Requests sent while no server was usable (`on_all_unhealthy = "try_all"`, or below
    /// the panic threshold).
    pub failed_open: AtomicU64,
    /// Requests answered 503 because no server could take them.
    pub no_server: AtomicU64,
    /// Failing open now (for the once-per-transition log and the gauge).
    failing_open: AtomicBool,
    /// A worker is deciding an ejection (see `Group::report`).
    pub(super) ejecting: AtomicBool,
}

impl GroupState {
    pub fn new(workers: usize) -> Self {
        Self {
            windows: (0..workers.max(1)).map(|_| Window::default()).collect(),
            retry_second: AtomicU64::new(0),
            window_retries: AtomicU64::new(0),
            retries: Default::default(),
            budget_exhausted: AtomicU64::new(0),
            failed_open: AtomicU64::new(0),
            no_server: AtomicU64::new(0),
            failing_open: AtomicBool::new(false),
            ejecting: AtomicBool::new(false),
        }
    }

    /// Counts a request (not a retry) of `worker` toward the budget.
    pub fn request(&self, worker: usize, now: u64) {
        let w = &self.windows[worker % self.windows.len()];
        let second = now / 1000;
        let was = w.second.load(Relaxed);
        if was != second {
            let last = w.requests.load(Relaxed);
            w.previous
                .store(if second == was + 1 { last } else { 0 }, Relaxed);
            w.requests.store(0, Relaxed);
            w.second.store(second, Relaxed);
        }
        // (One writer per window: no read-modify-write needed.)
        w.requests.store(w.requests.load(Relaxed) + 1, Relaxed);
    }

    /// The group's requests of the last whole second, or of this one if more.
    fn recent_requests(&self, now: u64) -> u64 {
        let second = now / 1000;
        let (mut this, mut last) = (0, 0);
        for w in self.windows.iter() {
            let at = w.second.load(Relaxed);
            if at == second {
                this += w.requests.load(Relaxed);
                last += w.previous.load(Relaxed);
            } else if at + 1 == second {
                last += w.requests.load(Relaxed);
            }
        }
        this.max(last)
    }

    /// Takes a retry from the budget: at most `min_per_sec` + `percent` % of the requests of
    /// the last second, per second. `false` (counted) when it is spent.
    pub fn take_retry(&self, now: u64, percent: u32, min_per_sec: u32) -> bool {
        let second = now / 1000;
        let was = self.retry_second.load(Relaxed);
        if was != second
            && self
                .retry_second
                .compare_exchange(was, second, Relaxed, Relaxed)
                .is_ok()
        {
            self.window_retries.store(0, Relaxed);
        }
        let allowed = u64::from(min_per_sec) + self.recent_requests(now) * u64::from(percent) / 100;
        if self.window_retries.fetch_add(1, Relaxed) < allowed {
            true
        } else {
            self.window_retries.fetch_sub(1, Relaxed);
            self.budget_exhausted.fetch_add(1, Relaxed);
            false
        }
    }

    pub fn retried(&self, kind: FailureKind) {
        self.retries[retry_index(kind)].fetch_add(1, Relaxed);
    }

    /// Sets whether the group fails open; `true` when that changed.
    pub fn set_failing_open(&self, on: bool) -> bool {
        self.failing_open.load(Relaxed) != on && self.failing_open.swap(on, Relaxed) != on
    }

    pub fn failing_open(&self) -> bool {
        self.failing_open.load(Relaxed)
    }
}

/// Every server's and group's state by name and address, so that builds reuse them. Used by
/// the control thread's builds, the DNS thread and the admin API — never by a worker.
#[derive(Debug, Default)]
pub struct Fleet {
    servers: Mutex<HashMap<(String, SocketAddr), Arc<ServerState>>>,
    groups: Mutex<HashMap<String, Arc<GroupState>>>,
    /// The last good answer for each (group, name, port), kept when a lookup fails.
    last_good: Mutex<HashMap<(String, String, u16), Vec<SocketAddr>>>,
}

impl Fleet {
    /// The state of `addr` in `group`, created new (healthy unless `unhealthy`, ramping up
    /// from now unless `at_start`) if it has none. A server that comes back is a member again.
    pub fn server(
        &self,
        group: &str,
        addr: SocketAddr,
        unhealthy: bool,
        at_start: bool,
    ) -> Arc<ServerState> {
        let mut map = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        let s = map.entry((group.to_string(), addr)).or_insert_with(|| {
            let since = if at_start { 0 } else { now_ms() };
            Arc::new(ServerState::new(addr, !unhealthy, since))
        });
        s.set_removed(false);
        s.clone()
    }

    /// The state of group `name`, counting requests for `workers` workers.
    pub fn group(&self, name: &str, workers: usize) -> Arc<GroupState> {
        let mut map = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_string())
            .or_insert_with(|| Arc::new(GroupState::new(workers)))
            .clone()
    }

    pub fn last_good(&self, group: &str, host: &str, port: u16) -> Option<Vec<SocketAddr>> {
        let map = self.last_good.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(group.to_string(), host.to_string(), port))
            .cloned()
    }

    pub fn set_last_good(&self, group: &str, host: &str, port: u16, addrs: &[SocketAddr]) {
        let mut map = self.last_good.lock().unwrap_or_else(|e| e.into_inner());
        map.insert((group.to_string(), host.to_string(), port), addrs.to_vec());
    }

    /// Forgets what nothing uses any more (no snapshot, group or pooled connection holds it),
    /// marking those servers removed.
    pub fn prune(&self) {
        let mut map = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| {
            let used = Arc::strong_count(s) > 1;
            if !used {
                s.set_removed(true);
            }
            used
        });
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        groups.retain(|_, g| Arc::strong_count(g) > 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejection_grows_and_is_capped() {
        let s = ServerState::new("127.0.0.1:1".parse().unwrap(), true, 0);
        assert_eq!(s.eject(1000, 30_000, 100_000), Some(30_000));
        assert!(!s.usable(1000));
        assert_eq!(s.eject(2000, 30_000, 100_000), None, "already ejected");
        assert!(s.usable(31_000));
        assert_eq!(s.eject(31_000, 30_000, 100_000), Some(60_000));
        assert_eq!(s.eject(91_001, 30_000, 100_000), Some(90_000));
        // Noting the end (the health thread) and a success soon after keep the run.
        assert!(s.ejection_ended(181_001));
        assert!(!s.ejection_ended(181_002), "noted once");
        s.succeeded(181_002, 100_000);
        assert_eq!(s.eject(181_003, 30_000, 100_000), Some(100_000), "capped");
        // A success long after the last ejection forgets the run.
        s.succeeded(281_003 + 100_001, 100_000);
        assert_eq!(s.eject(400_000, 30_000, 100_000), Some(30_000));
    }

    #[test]
    fn retry_budget_allows_floor_plus_share() {
        let g = GroupState::new(2);
        for i in 0..100 {
            g.request(i % 2, 5_000);
        }
        // 10 + 20 % of 100 = 30 retries in this second.
        let taken = (0..100).filter(|_| g.take_retry(5_100, 20, 10)).count();
        assert_eq!(taken, 30);
        assert_eq!(g.budget_exhausted.load(Relaxed), 70);
        // The next second: the last second's requests still count, retries start over.
        let taken = (0..100).filter(|_| g.take_retry(6_000, 20, 10)).count();
        assert_eq!(taken, 30);
    }

    #[test]
    fn slow_start_ramps() {
        let s = ServerState::new("127.0.0.1:1".parse().unwrap(), true, 10_000);
        assert!((s.ramp(10_000, 10_000) - 0.05).abs() < 1e-9);
        assert!((s.ramp(15_000, 10_000) - 0.5).abs() < 1e-9);
        assert_eq!(s.ramp(20_000, 10_000), 1.0);
        assert_eq!(s.ramp(10_000, 0), 1.0);
    }
}

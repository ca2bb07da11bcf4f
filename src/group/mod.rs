//! Upstream groups at run time: a group's members (each a resolved address of a configured
//! server, with its shared [`ServerState`]), the choice of a server for a request, and what a
//! finished attempt tells about the server (passive outlier ejection).
//!
//! - Members change without a reload when DNS does ([`dns`]): workers load them per request
//!   from an `ArcSwap`, like the snapshot.
//! - A server is *usable* when it is enabled (not drained or disabled by the operator),
//!   healthy by its active checks ([`health`]) and not ejected. Primaries are used while one is
//!   usable (and, with `panic_threshold_percent`, while enough are); then usable backups; then
//!   `on_all_unhealthy`: `try_all` balances over every enabled primary ignoring health (failing
//!   open: counted, logged once per transition), `fail` answers 503.
//! - Round-robin cursors are per worker (no shared cache line), starting at different places.

pub mod balance;
pub mod dns;
pub mod health;
pub mod state;

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering, Ordering::Relaxed};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{AllUnhealthy, Balance, FailureKind, HashKey, UpstreamGroup};
use crate::metrics::UpstreamMetrics;
use crate::net::upstream::UpstreamTls;
pub use state::{now_ms, Admin, Fleet, GroupState, InFlight, ServerState};

/// One resolved address of a configured server.
#[derive(Debug, Clone)]
pub struct Member {
    pub state: Arc<ServerState>,
    pub weight: u32,
    pub backup: bool,
    /// The configured server's `host:port`: the `Host` of checks and of
    /// `preserve_host = false`.
    pub authority: Arc<str>,
    /// The configured address it comes from (`api.internal:9000`), for the admin API.
    pub written: Arc<str>,
    /// How to speak TLS to it (the group's client configuration, its name).
    pub tls: Option<UpstreamTls>,
    /// The TLS name, for the identity of its pooled connections.
    pub tls_name: Option<Arc<str>>,
}

/// A group's members at one time, with the balancing tables computed for them.
#[derive(Debug, Default)]
pub struct Members {
    /// Primaries first, then backups.
    pub list: Vec<Member>,
    primaries: usize,
    /// Round-robin cycles over the primaries and the backups (indices into `list`).
    schedule: [Vec<u32>; 2],
    /// Hash rings over the primaries and the backups.
    ring: [Vec<(u64, u32)>; 2],
}

impl Members {
    pub fn new(mut list: Vec<Member>) -> Self {
        list.sort_by_key(|m| m.backup);
        let primaries = list.iter().filter(|m| !m.backup).count();
        let tables = |range: std::ops::Range<usize>| {
            let weights: Vec<(usize, u32)> = range.clone().map(|i| (i, list[i].weight)).collect();
            let keyed: Vec<(usize, u32, String)> = range
                .map(|i| (i, list[i].weight, list[i].state.addr.to_string()))
                .collect();
            (balance::schedule(&weights), balance::ring(&keyed))
        };
        let (s0, r0) = tables(0..primaries);
        let (s1, r1) = tables(primaries..list.len());
        Self {
            list,
            primaries,
            schedule: [s0, s1],
            ring: [r0, r1],
        }
    }

    pub fn primaries(&self) -> &[Member] {
        &self.list[..self.primaries]
    }
}

/// A group in a snapshot.
#[derive(Debug)]
pub struct Group {
    pub config: UpstreamGroup,
    pub members: ArcSwap<Members>,
    pub state: Arc<GroupState>,
    /// The TLS client configuration for its servers (each [`Member`] has its name).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The `ca_file` of its pooled TLS connections' identity.
    pub ca_file: Option<Arc<std::path::Path>>,
    /// Connection counters (per name, kept across reloads): the `upstreams` rows of `stats`.
    pub metrics: Arc<UpstreamMetrics>,
    /// Each worker's round-robin place.
    cursors: Box<[Cursor]>,
}

#[derive(Debug, Default)]
#[repr(align(64))]
struct Cursor(AtomicUsize);

/// The servers already tried for one request, by index into its [`Members`] (which stay
/// the same for the whole request).
#[derive(Default)]
pub struct Tried {
    n: usize,
    indices: [u32; 12],
}

impl Tried {
    pub fn contains(&self, index: usize) -> bool {
        self.indices[..self.n].contains(&(index as u32))
    }

    pub fn add(&mut self, index: usize) {
        if self.n < self.indices.len() {
            self.indices[self.n] = index as u32;
            self.n += 1;
        }
    }
}

/// What a request offers the `hash` balancer.
pub struct HashInput<'a> {
    pub client: IpAddr,
    /// The request's header value by lower-case name.
    pub header: &'a dyn Fn(&str) -> Option<&'a [u8]>,
}

/// Why no server was chosen.
#[derive(Debug, PartialEq, Eq)]
pub enum NoServer {
    /// None is usable and the group says `on_all_unhealthy = "fail"`, or every primary is
    /// drained or disabled.
    NoneUsable,
    /// Every candidate was tried already.
    AllTried,
}

impl Group {
    pub fn new(
        config: UpstreamGroup,
        members: Members,
        state: Arc<GroupState>,
        tls: Option<Arc<rustls::ClientConfig>>,
        metrics: Arc<UpstreamMetrics>,
        workers: usize,
    ) -> Self {
        // Two per worker: the primaries' cycle and the backups'.
        let workers = workers.max(1);
        let cursors: Box<[Cursor]> = (0..2 * workers).map(|_| Cursor::default()).collect();
        // Workers start at different places of the cycle, so they do not move in lock-step.
        for (i, c) in cursors.iter().enumerate() {
            let len = members.schedule[i % 2].len().max(1);
            c.0.store((i / 2) * len / workers, Relaxed);
        }
        let ca_file = config
            .ca_file
            .as_deref()
            .filter(|_| tls.is_some())
            .map(Arc::from);
        Self {
            config,
            members: ArcSwap::from_pointee(members),
            state,
            tls,
            ca_file,
            metrics,
            cursors,
        }
    }

    /// Chooses a member (index into `members.list`) for worker `worker`, skipping `tried`:
    ///
    /// 1. while some but fewer than `panic_threshold_percent` of the enabled primaries are
    ///    usable: any enabled primary, ignoring health (failing open);
    /// 2. an untried usable primary;
    /// 3. else an untried usable backup;
    /// 4. else, if some server is usable, none is left: [`NoServer::AllTried`];
    /// 5. else (none usable) with `on_all_unhealthy = "try_all"` fail open over the enabled
    ///    primaries (the enabled backups when every primary is drained or disabled); with
    ///    `"fail"`, or nothing enabled, [`NoServer::NoneUsable`] (counted as a 503 unless
    ///    `retry`: a retry that finds no server answers what the last try got).
    pub fn select(
        &self,
        members: &Members,
        worker: usize,
        input: &HashInput<'_>,
        tried: &Tried,
        now: u64,
        retry: bool,
    ) -> Result<usize, NoServer> {
        let c = &self.config;
        let primaries = members.primaries();
        let usable_at = |i: usize| members.list[i].state.usable(now);
        let untried = |i: usize| usable_at(i) && !tried.contains(i);
        let panic = c.panic_threshold_percent > 0 && {
            let usable = (0..members.primaries).filter(|&i| usable_at(i)).count();
            let enabled = primaries.iter().filter(|m| m.state.enabled()).count();
            usable > 0 && usable * 100 < usize::from(c.panic_threshold_percent) * enabled
        };
        let backups = members.primaries..members.list.len();
        // (tier, ignore health)
        let enabled = |m: &Member| m.state.enabled();
        let (tier, ignore_health) = if panic {
            (0, true)
        } else if (0..members.primaries).any(untried) {
            (0, false)
        } else if backups.clone().any(untried) {
            (1, false)
        } else if (0..members.list.len()).any(usable_at) {
            return Err(NoServer::AllTried);
        } else if c.on_all_unhealthy == AllUnhealthy::TryAll && primaries.iter().any(enabled) {
            (0, true)
        } else if c.on_all_unhealthy == AllUnhealthy::TryAll
            && members.list[members.primaries..].iter().any(enabled)
        {
            (1, true)
        } else {
            self.failing_open(false);
            if !retry {
                self.state.no_server.fetch_add(1, Relaxed);
            }
            return Err(NoServer::NoneUsable);
        };
        self.failing_open(ignore_health);
        if ignore_health && !retry {
            self.state.failed_open.fetch_add(1, Relaxed);
        }
        let range = if tier == 0 {
            0..members.primaries
        } else {
            members.primaries..members.list.len()
        };
        let slow = c.slow_start.as_millis() as u64;
        let ok = |i: usize, ramp: bool| {
            let m = &members.list[i];
            let fit = if ignore_health {
                m.state.enabled()
            } else {
                m.state.usable(now)
            };
            fit && !tried.contains(i)
                && (!ramp || slow == 0 || fastrand::f64() < m.state.ramp(now, slow))
        };
        let found = match &c.balance {
            Balance::RoundRobin => {
                let sched = &members.schedule[tier];
                let cursor = &self.cursors[(2 * worker + tier) % self.cursors.len()].0;
                let start = cursor.load(Relaxed);
                let pick = walk(sched.len(), start, |k| {
                    let i = sched[k] as usize;
                    ok(i, true).then_some((i, k))
                })
                .or_else(|| {
                    walk(sched.len(), start, |k| {
                        ok(sched[k] as usize, false).then_some((sched[k] as usize, k))
                    })
                });
                if let Some((_, k)) = pick {
                    cursor.store(k + 1, Relaxed);
                }
                pick.map(|(i, _)| i)
            }
            Balance::Random => match Candidates::new(members, range.clone(), &ok, now, slow) {
                Some(c) => c.pick(None),
                None => weighted(members, range, &ok, now, slow, None),
            },
            Balance::LeastRequest => {
                // Two different servers when there are two, the less loaded of them.
                let (a, b) = match Candidates::new(members, range.clone(), &ok, now, slow) {
                    Some(c) => {
                        let a = c.pick(None);
                        (a, c.pick(a))
                    }
                    None => {
                        let a = weighted(members, range.clone(), &ok, now, slow, None);
                        (a, weighted(members, range, &ok, now, slow, a))
                    }
                };
                match (a, b) {
                    (Some(a), Some(b)) => {
                        let load = |i: usize| {
                            let m = &members.list[i];
                            (u64::from(m.state.in_flight()) + 1) * 1000 / u64::from(m.weight)
                        };
                        Some(if load(b) < load(a) { b } else { a })
                    }
                    (a, b) => a.or(b),
                }
            }
            Balance::Hash(key) => {
                let ring = &members.ring[tier];
                let h = match key {
                    HashKey::ClientIp => Some(match input.client {
                        IpAddr::V4(v4) => balance::hash(&v4.octets()),
                        IpAddr::V6(v6) => balance::hash(&v6.octets()),
                    }),
                    HashKey::Header(name) => (input.header)(name).map(balance::hash),
                    HashKey::Cookie(name) => (input.header)("cookie")
                        .and_then(|v| balance::cookie(v, name))
                        .map(balance::hash),
                };
                match h {
                    // No key: any server.
                    None => match Candidates::new(members, range.clone(), &ok, now, slow) {
                        Some(c) => c.pick(None),
                        None => weighted(members, range, &ok, now, slow, None),
                    },
                    Some(h) => {
                        let start = balance::ring_start(ring, h);
                        walk(ring.len(), start, |k| {
                            let i = ring[k].1 as usize;
                            ok(i, false).then_some(i)
                        })
                    }
                }
            }
        };
        found.ok_or(NoServer::AllTried)
    }

    /// Notes whether the group fails open now: logged once per transition.
    fn failing_open(&self, on: bool) {
        if self.state.set_failing_open(on) {
            if on {
                log::warn!(
                    "upstream group {:?}: no usable server; failing open (on_all_unhealthy = \
                     \"try_all\" or below panic_threshold_percent): sending to every enabled \
                     primary regardless of health",
                    self.config.name
                );
            } else {
                log::info!(
                    "upstream group {:?}: no longer failing open",
                    self.config.name
                );
            }
        }
    }

    /// What an attempt on `member` showed: `None` a response that is not a failure, else
    /// its kind. Counts it, and ejects the server after `outlier.consecutive_failures` in a
    /// row of the kinds `outlier.count` names — unless `max_ejection_percent` of the group is
    /// ejected already (one server may always be).
    pub fn report(
        &self,
        members: &Members,
        member: &Member,
        failure: Option<FailureKind>,
        now: u64,
    ) {
        let o = &self.config.outlier;
        let s = &member.state;
        let Some(kind) = failure else {
            s.succeeded(now, o.max_ejection.as_millis() as u64);
            return;
        };
        let run = s.failed(kind, o.counts(kind) && o.consecutive_failures > 0);
        if run < o.consecutive_failures || o.consecutive_failures == 0 {
            return;
        }
        // One ejection decision at a time per group (a worker that finds another deciding
        // leaves it: the next failure asks again), so two cannot pass the cap together.
        if self.state.ejecting.swap(true, Ordering::Acquire) {
            return;
        }
        self.eject(members, member, kind, run, now);
        self.state.ejecting.store(false, Ordering::Release);
    }

    fn eject(&self, members: &Members, member: &Member, kind: FailureKind, run: u32, now: u64) {
        let (o, s) = (&self.config.outlier, &member.state);
        let total = members.list.len();
        let ejected = members
            .list
            .iter()
            .filter(|m| m.state.ejected_until(now).is_some())
            .count();
        let limit = (total * usize::from(o.max_ejection_percent) / 100).max(1);
        if ejected >= limit {
            log::debug!(
                "upstream {:?} {}: not ejected: {ejected} of {total} servers are ejected already \
                 (max_ejection_percent = {})",
                self.config.name,
                s.addr,
                o.max_ejection_percent
            );
            return;
        }
        let base = o.ejection.as_millis() as u64;
        if let Some(ms) = s.eject(now, base, o.max_ejection.as_millis() as u64) {
            let why = format!(
                "ejected for {} s after {run} failures in a row (last: {})",
                ms / 1000,
                kind.name()
            );
            log::warn!("upstream {:?} {}: {why}", self.config.name, s.addr);
            s.note(why);
        }
    }
}

/// The first `Some` of `f(k)` for `k` from `start` around a cycle of `len`.
fn walk<T>(len: usize, start: usize, mut f: impl FnMut(usize) -> Option<T>) -> Option<T> {
    (0..len).find_map(|step| f((start + step) % len))
}

/// The members of one tier that may take a request, with their weights (scaled by slow
/// start), gathered in one pass, for picks at random by weight. `None` for a tier larger than
/// [`MAX_CANDIDATES`].
struct Candidates {
    n: usize,
    total: u64,
    list: [(u32, u64); MAX_CANDIDATES],
}

/// Candidates gathered on the stack; a larger tier is walked twice per pick instead
/// ([`weighted`]).
const MAX_CANDIDATES: usize = 32;

impl Candidates {
    fn new(
        members: &Members,
        range: std::ops::Range<usize>,
        ok: &dyn Fn(usize, bool) -> bool,
        now: u64,
        slow: u64,
    ) -> Option<Self> {
        if range.len() > MAX_CANDIDATES {
            return None;
        }
        let mut c = Candidates {
            n: 0,
            total: 0,
            list: [(0, 0); MAX_CANDIDATES],
        };
        for i in range {
            if !ok(i, false) {
                continue;
            }
            let m = &members.list[i];
            let mut w = u64::from(m.weight) * 1000;
            if slow > 0 {
                w = ((w as f64 * m.state.ramp(now, slow)) as u64).max(1);
            }
            c.list[c.n] = (i as u32, w);
            c.n += 1;
            c.total += w;
        }
        Some(c)
    }

    /// One at random by weight, other than `not`.
    fn pick(&self, not: Option<usize>) -> Option<usize> {
        let skip = |i: u32| not == Some(i as usize);
        let total = self.total
            - self.list[..self.n]
                .iter()
                .filter(|(i, _)| skip(*i))
                .map(|(_, w)| w)
                .sum::<u64>();
        if total == 0 {
            return None;
        }
        let mut x = fastrand::u64(..total);
        for &(i, w) in self.list[..self.n].iter().filter(|(i, _)| !skip(*i)) {
            if x < w {
                return Some(i as usize);
            }
            x -= w;
        }
        None
    }
}

/// A member of `range` that passes `ok`, other than `not`, at random by weight (scaled by
/// slow start): two walks over the range, for tiers too large for [`Candidates`].
fn weighted(
    members: &Members,
    range: std::ops::Range<usize>,
    ok: &dyn Fn(usize, bool) -> bool,
    now: u64,
    slow: u64,
    not: Option<usize>,
) -> Option<usize> {
    let fit = |i: &usize| Some(*i) != not && ok(*i, false);
    let weight = |i: usize| {
        let m = &members.list[i];
        f64::from(m.weight) * m.state.ramp(now, slow)
    };
    let total: f64 = range.clone().filter(fit).map(weight).sum();
    if total <= 0.0 {
        return None;
    }
    let mut x = fastrand::f64() * total;
    let mut last = None;
    for i in range.filter(fit) {
        last = Some(i);
        x -= weight(i);
        if x < 0.0 {
            return Some(i);
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Origin, ServerSpec, UpstreamUrl};

    fn group(balance: Balance, weights: &[(u32, bool)]) -> Group {
        let url = UpstreamUrl {
            scheme: crate::config::Scheme::Http,
            host: "x".into(),
            port: 80,
            path: "/".into(),
        };
        let origin = Origin {
            key_path: "upstreams.t".into(),
            line: 1,
            column: 1,
        };
        let mut config = UpstreamGroup::from_url(&url, None, None, origin);
        config.balance = balance;
        config.servers = weights
            .iter()
            .enumerate()
            .map(|(i, &(weight, backup))| ServerSpec {
                host: format!("127.0.0.{}", i + 1),
                port: 80,
                weight,
                backup,
            })
            .collect();
        let list = config
            .servers
            .iter()
            .map(|s| Member {
                state: Arc::new(ServerState::new(
                    format!("{}:{}", s.host, s.port).parse().unwrap(),
                    true,
                    0,
                )),
                weight: s.weight,
                backup: s.backup,
                authority: s.authority().into(),
                written: s.authority().into(),
                tls: None,
                tls_name: None,
            })
            .collect();
        Group::new(
            config,
            Members::new(list),
            Arc::new(GroupState::new(2)),
            None,
            Arc::new(UpstreamMetrics::new(1)),
            2,
        )
    }

    fn no_header(_: &str) -> Option<&'static [u8]> {
        None
    }

    /// A request from 10.0.0.1 without headers.
    fn client_input() -> HashInput<'static> {
        HashInput {
            client: "10.0.0.1".parse().unwrap(),
            header: &no_header,
        }
    }

    fn picks(g: &Group, n: usize) -> Vec<usize> {
        let members = g.members.load();
        let input = client_input();
        let mut counts = vec![0; members.list.len()];
        for _ in 0..n {
            let i = g
                .select(&members, 0, &input, &Tried::default(), now_ms(), false)
                .unwrap();
            counts[i] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_follows_weights_and_skips_the_unusable() {
        let g = group(Balance::RoundRobin, &[(1, false), (2, false), (1, false)]);
        assert_eq!(picks(&g, 400), vec![100, 200, 100]);
        g.members.load().list[1].state.set_admin(Admin::Draining);
        assert_eq!(picks(&g, 400), vec![200, 0, 200]);
    }

    #[test]
    fn backups_then_fail_open_or_fail() {
        let g = group(Balance::RoundRobin, &[(1, false), (1, true)]);
        let m = g.members.load();
        m.list[0].state.set_healthy(false);
        assert_eq!(picks(&g, 10), vec![0, 10], "the backup takes over");
        m.list[1].state.set_healthy(false);
        assert_eq!(picks(&g, 10), vec![10, 0], "fails open to the primaries");
        assert!(g.state.failing_open());
        let mut g = group(Balance::RoundRobin, &[(1, false)]);
        g.config.on_all_unhealthy = AllUnhealthy::Fail;
        let m = g.members.load();
        m.list[0].state.set_healthy(false);
        let input = client_input();
        assert_eq!(
            g.select(&m, 0, &input, &Tried::default(), now_ms(), false),
            Err(NoServer::NoneUsable)
        );
    }

    #[test]
    fn below_the_panic_threshold_health_is_ignored() {
        let mut g = group(Balance::RoundRobin, &[(1, false); 4]);
        g.config.panic_threshold_percent = 50;
        let m = g.members.load();
        for member in &m.list[1..] {
            member.state.set_healthy(false);
        }
        assert_eq!(
            picks(&g, 40),
            vec![10, 10, 10, 10],
            "1 of 4 usable: below 50 %"
        );
        assert!(g.state.failing_open());
        // Drained servers are not in the share: 1 usable of 2 enabled is 50 %.
        m.list[2].state.set_admin(Admin::Draining);
        m.list[3].state.set_admin(Admin::Draining);
        assert_eq!(picks(&g, 10), vec![10, 0, 0, 0]);
    }

    #[test]
    fn try_all_falls_back_to_enabled_backups() {
        let g = group(Balance::RoundRobin, &[(1, false), (1, true)]);
        let m = g.members.load();
        m.list[0].state.set_admin(Admin::Draining);
        m.list[1].state.set_healthy(false);
        assert_eq!(picks(&g, 5), vec![0, 5]);
        m.list[1].state.set_admin(Admin::Disabled);
        let input = client_input();
        assert_eq!(
            g.select(&m, 0, &input, &Tried::default(), now_ms(), false),
            Err(NoServer::NoneUsable)
        );
    }

    #[test]
    fn tried_servers_are_skipped() {
        let g = group(Balance::Random, &[(1, false), (1, false)]);
        let m = g.members.load();
        let input = client_input();
        let mut tried = Tried::default();
        let first = g.select(&m, 0, &input, &tried, now_ms(), false).unwrap();
        tried.add(first);
        let second = g.select(&m, 0, &input, &tried, now_ms(), false).unwrap();
        assert_ne!(first, second);
        tried.add(second);
        assert_eq!(
            g.select(&m, 0, &input, &tried, now_ms(), false),
            Err(NoServer::AllTried)
        );
    }

    #[test]
    fn slow_start_gives_a_returning_server_a_small_share() {
        let mut g = group(Balance::RoundRobin, &[(1, false), (1, false)]);
        g.config.slow_start = std::time::Duration::from_secs(10);
        let m = g.members.load();
        m.list[1].state.set_admin(Admin::Disabled);
        m.list[1].state.set_admin(Admin::Enabled);
        let counts = picks(&g, 400);
        assert!(counts[1] < 60, "{counts:?}");
    }

    #[test]
    fn least_request_prefers_the_idle_server() {
        let g = group(Balance::LeastRequest, &[(1, false), (1, false)]);
        let members = g.members.load_full();
        let busy: Vec<_> = (0..10).map(|_| members.list[0].state.begin()).collect();
        let counts = picks(&g, 1000);
        assert!(counts[1] > 700, "{counts:?}");
        drop(busy);
    }

    #[test]
    fn random_and_least_request_cover_large_tiers() {
        let weights: Vec<(u32, bool)> = (0..40).map(|_| (1, false)).collect();
        for balance in [Balance::Random, Balance::LeastRequest] {
            let g = group(balance, &weights);
            let counts = picks(&g, 4000);
            assert!(counts.iter().all(|&c| c > 40), "{counts:?}");
        }
        let g = group(Balance::Random, &[(1, false), (3, false)]);
        let counts = picks(&g, 4000);
        assert!((800..1200).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn hash_is_stable_per_client() {
        let g = group(
            Balance::Hash(HashKey::ClientIp),
            &[(1, false), (1, false), (1, false)],
        );
        let counts = picks(&g, 50);
        assert_eq!(counts.iter().filter(|&&c| c == 50).count(), 1, "{counts:?}");
    }

    #[test]
    fn ejection_is_capped_by_max_ejection_percent() {
        let g = group(
            Balance::RoundRobin,
            &[(1, false), (1, false), (1, false), (1, false)],
        );
        let m = g.members.load();
        for member in m.list.iter() {
            for _ in 0..5 {
                g.report(&m, member, Some(FailureKind::Connect), now_ms());
            }
        }
        let now = now_ms();
        let ejected = m
            .list
            .iter()
            .filter(|x| x.state.ejected_until(now).is_some())
            .count();
        assert_eq!(ejected, 2, "50 % of 4");
        // A success breaks a run.
        let g = group(Balance::RoundRobin, &[(1, false), (1, false)]);
        let m = g.members.load();
        for _ in 0..4 {
            g.report(&m, &m.list[0], Some(FailureKind::Status(503)), now_ms());
        }
        g.report(&m, &m.list[0], None, now_ms());
        g.report(&m, &m.list[0], Some(FailureKind::Status(503)), now_ms());
        assert!(m.list[0].state.usable(now_ms()));
        // 500 does not count by default.
        for _ in 0..10 {
            g.report(&m, &m.list[1], Some(FailureKind::Status(500)), now_ms());
        }
        assert!(m.list[1].state.usable(now_ms()));
    }
}

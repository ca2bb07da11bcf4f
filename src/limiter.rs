//! The per-route rate limiter behind `rate_limit_requests_per_min`: a sliding window per client
//! address per route, shared by every worker, with no lock.
//!
//! The window is the sliding-window counter (as Cloudflare and nginx-style limiters use it): each
//! (route, address) pair counts requests in the current minute and remembers the count of the
//! previous one; a request is allowed while
//!
//! ```text
//! previous × (share of the previous minute still inside the last 60 s) + current  <  limit
//! ```
//!
//! which is what a sliding log would say when the previous minute's requests were spread evenly,
//! at a fixed 16 bytes per pair. Denied requests are not counted, so a client that keeps
//! retrying gets through again as soon as its window allows.
//!
//! Memory is fixed: one table of [`BUCKETS`] × [`WAYS`] slots (1 MiB), created at start-up and
//! kept across reloads, so a route that a reload leaves in place keeps its windows (routes are
//! keyed by their place in the config, `path_routes."host"."/prefix"`). A pair finds its bucket by
//! a keyed hash (random per process, so clients cannot aim at one bucket); in it, its own slot, or
//! a free or stale one (idle for a full window), or else the slot with the fewest recent requests
//! is taken over. So any number of distinct addresses fits; under more live pairs than slots the
//! least active ones are forgotten and start afresh (the limiter then errs on the side of letting
//! requests through, never of refusing too many).
//!
//! A slot is two atomics: the pair's 64-bit fingerprint, and its state packed into one word
//! (window number, current and previous counts) and updated by compare-and-swap, so workers on
//! other cores count the same window exactly.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Buckets in the table.
pub const BUCKETS: usize = 16 * 1024;
/// Slots per bucket.
pub const WAYS: usize = 4;
/// Counts saturate here (the config accepts limits up to this).
pub const MAX_COUNT: u64 = (1 << COUNT_BITS) - 1;
/// The window: one minute, in milliseconds.
const WINDOW_MS: u64 = 60_000;

/// The answer for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Over the limit: the client may try again after this many seconds (at least 1).
    Deny {
        retry_after_secs: u64,
    },
}

/// The shared table (see the module documentation).
pub struct Limiter {
    slots: Box<[Slot]>,
    hasher: RandomState,
    epoch: Instant,
}

#[derive(Default)]
struct Slot {
    /// The pair's fingerprint; 0 = free.
    key: AtomicU64,
    /// [`State`] packed.
    state: AtomicU64,
}

impl Default for Limiter {
    fn default() -> Self {
        Self::with_buckets(BUCKETS)
    }
}

impl Limiter {
    /// A table of `buckets` × [`WAYS`] slots (tests use small ones).
    pub fn with_buckets(buckets: usize) -> Self {
        Self {
            slots: (0..buckets.max(1) * WAYS)
                .map(|_| Slot::default())
                .collect(),
            hasher: RandomState::new(),
            epoch: Instant::now(),
        }
    }

    /// Counts a request from `ip` on the route `route` (its config key path) against `limit`
    /// requests per minute, at `now`.
    pub fn check(&self, route: &str, ip: IpAddr, limit: u32, now: Instant) -> Verdict {
        let limit = u64::from(limit).min(MAX_COUNT);
        if limit == 0 {
            return Verdict::Allow;
        }
        // An IPv4 client is one client, whether it came as IPv4 or IPv4-mapped IPv6.
        let fingerprint = self.hasher.hash_one((route, ip.to_canonical())) | 1;
        let tag = tag_of(fingerprint);
        let ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        let window = ms / WINDOW_MS;
        let into = ms % WINDOW_MS;
        'find: loop {
            let slot = self.slot(fingerprint, window);
            let mut old = slot.state.load(Ordering::Acquire);
            loop {
                let state = State::unpack(old);
                if state.tag != tag {
                    // Taken over by another pair since it was found: find ours again.
                    continue 'find;
                }
                let state = state.at(window);
                if let Some(wait_ms) = state.wait_ms(limit, into) {
                    return Verdict::Deny {
                        retry_after_secs: wait_ms.div_ceil(1000).max(1),
                    };
                }
                let new = State {
                    current: (state.current + 1).min(MAX_COUNT),
                    ..state
                };
                match slot.state.compare_exchange_weak(
                    old,
                    new.pack(),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return Verdict::Allow,
                    Err(now_state) => old = now_state,
                }
            }
        }
    }

    /// The slot of `fingerprint`: its own (key and tag match), or one taken over for it.
    ///
    /// A takeover claims the slot with one compare-and-swap of the state word, from the state
    /// it judged to the fresh state under the new tag: a count that lands in between makes the
    /// claim fail and the choice start over, and whoever counted on the old state sees the tag
    /// change and looks again. So two pairs' counts do not mix and a new pair does not inherit
    /// counts. Left: two workers taking over two different slots for one new pair at the same
    /// instant put it in both for a moment, and the one not found again loses its count.
    fn slot(&self, fingerprint: u64, window: u64) -> &Slot {
        let tag = tag_of(fingerprint);
        let bucket = (fingerprint >> 32) as usize % (self.slots.len() / WAYS);
        let ways = &self.slots[bucket * WAYS..(bucket + 1) * WAYS];
        loop {
            if let Some(own) = ways.iter().find(|s| {
                let state = s.state.load(Ordering::Acquire);
                // Ours: our key and tag, or our tag on a slot whose claim (by another worker,
                // for this same pair) has not stored the key yet.
                match s.key.load(Ordering::Acquire) {
                    0 => state != 0 && State::unpack(state).tag == tag,
                    key => key == fingerprint && State::unpack(state).tag == tag,
                }
            }) {
                return own;
            }
            // Take over the least used slot: free and stale ones count zero.
            let (victim, seen) = ways
                .iter()
                .map(|s| (s, s.state.load(Ordering::Acquire)))
                .min_by_key(|(s, state)| {
                    if s.key.load(Ordering::Acquire) == 0 {
                        return 0;
                    }
                    let st = State::unpack(*state).at(window);
                    st.current + st.previous
                })
                .unwrap_or((&ways[0], 0));
            let fresh = State {
                tag,
                window,
                current: 0,
                previous: 0,
            };
            if victim
                .state
                .compare_exchange(seen, fresh.pack(), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                victim.key.store(fingerprint, Ordering::Release);
                return victim;
            }
            // The slot changed meanwhile: choose again.
        }
    }

    /// Live pairs (slots holding a request in the current or the previous window), for tests
    /// and status.
    pub fn live(&self, now: Instant) -> usize {
        let window = now.saturating_duration_since(self.epoch).as_millis() as u64 / WINDOW_MS;
        self.slots
            .iter()
            .filter(|s| s.key.load(Ordering::Relaxed) != 0)
            .filter(|s| {
                let st = State::unpack(s.state.load(Ordering::Relaxed)).at(window);
                st.current + st.previous > 0
            })
            .count()
    }
}

/// A pair's counts, packed into one word: a tag (10 bits of the pair's fingerprint, so that a
/// takeover is seen by whoever still holds the slot), the window number (10 bits: minutes
/// modulo 1024, about 17 hours — a slot idle for exactly a multiple of that would look fresh
/// once), and the current and previous windows' counts (22 bits each: up to 4,194,303 requests
/// a minute, about 70,000 a second, from one address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct State {
    tag: u64,
    window: u64,
    current: u64,
    previous: u64,
}

const TAG_BITS: u32 = 10;
const WINDOW_BITS: u32 = 10;
const COUNT_BITS: u32 = 22;
const WINDOW_MASK: u64 = (1 << WINDOW_BITS) - 1;

/// The tag of a fingerprint (its low bit is always 1; the bucket comes from its high half).
fn tag_of(fingerprint: u64) -> u64 {
    (fingerprint >> 1) & ((1 << TAG_BITS) - 1)
}

impl State {
    fn unpack(v: u64) -> Self {
        let mask = (1 << COUNT_BITS) - 1;
        Self {
            tag: v >> (WINDOW_BITS + 2 * COUNT_BITS),
            window: (v >> (2 * COUNT_BITS)) & WINDOW_MASK,
            current: (v >> COUNT_BITS) & mask,
            previous: v & mask,
        }
    }

    fn pack(self) -> u64 {
        (self.tag << (WINDOW_BITS + 2 * COUNT_BITS))
            | ((self.window & WINDOW_MASK) << (2 * COUNT_BITS))
            | (self.current.min(MAX_COUNT) << COUNT_BITS)
            | self.previous.min(MAX_COUNT)
    }

    /// The counts as seen from `window` (window numbers compare modulo 2^10).
    fn at(self, window: u64) -> Self {
        let now = window & WINDOW_MASK;
        let age = now.wrapping_sub(self.window) & WINDOW_MASK;
        match age {
            0 => Self {
                window: now,
                ..self
            },
            1 => Self {
                window: now,
                current: 0,
                previous: self.current,
                ..self
            },
            _ => Self {
                window: now,
                current: 0,
                previous: 0,
                ..self
            },
        }
    }

    /// `None` when one more request fits under `limit` at `into` ms of the current window, else
    /// how long until one does, in ms.
    fn wait_ms(self, limit: u64, into: u64) -> Option<u64> {
        // In thousandths of a request, to stay in integers: estimate = previous × (1 − into/W)
        // + current, and a request fits while estimate + 1 ≤ limit.
        let weighted = |prev: u64, current: u64, into: u64| {
            prev * (WINDOW_MS - into) * 1000 / WINDOW_MS + current * 1000
        };
        let room = (limit - 1) * 1000;
        if weighted(self.previous, self.current, into) <= room {
            return None;
        }
        if self.current < limit && self.previous > 0 {
            // The previous minute's share shrinks: wait until it has shrunk enough, within
            // this window.
            // previous × (W − t) / W ≤ room − current, in thousandths: solve for t.
            let allowed = room - self.current * 1000;
            let t = WINDOW_MS - (allowed * WINDOW_MS / (1000 * self.previous)).min(WINDOW_MS);
            return Some(t.saturating_sub(into).max(1));
        }
        // This window's own count is at the limit: the next window starts with it as its
        // previous count, which must then shrink below the limit.
        let to_next = WINDOW_MS - into;
        let t = WINDOW_MS - (room * WINDOW_MS / (1000 * self.current.max(1))).min(WINDOW_MS);
        Some(to_next + t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    const ROUTE: &str = "path_routes.\"a.test\".\"/api/\"";

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    /// `n` requests at `t`; how many were allowed.
    fn burst(l: &Limiter, who: IpAddr, limit: u32, t: Instant, n: u32) -> u32 {
        (0..n)
            .filter(|_| l.check(ROUTE, who, limit, t) == Verdict::Allow)
            .count() as u32
    }

    #[test]
    fn a_fresh_window_allows_exactly_the_limit() {
        let l = Limiter::with_buckets(64);
        let t = l.epoch + Duration::from_secs(5);
        assert_eq!(burst(&l, ip(1), 60, t, 100), 60);
        // Another address and another route have windows of their own.
        assert_eq!(burst(&l, ip(2), 60, t, 100), 60);
        assert_eq!(l.check("other", ip(1), 60, t), Verdict::Allow);
    }

    #[test]
    fn the_window_slides_with_the_previous_minutes_share() {
        let l = Limiter::with_buckets(64);
        let start = l.epoch;
        // 60 requests at the very start of minute 0.
        assert_eq!(burst(&l, ip(1), 60, start, 60), 60);
        // At 0:59 the limit still holds.
        let Verdict::Deny { retry_after_secs } =
            l.check(ROUTE, ip(1), 60, start + Duration::from_secs(59))
        else {
            panic!("allowed within the same minute")
        };
        assert!((1..=2).contains(&retry_after_secs), "{retry_after_secs}");
        // At 1:15 a quarter of the previous minute has left the window: 15 more fit.
        let t = start + Duration::from_secs(75);
        assert_eq!(burst(&l, ip(1), 60, t, 100), 15);
        // At 1:30, half has left: 30 in all this minute, so 15 more.
        let t = start + Duration::from_secs(90);
        assert_eq!(burst(&l, ip(1), 60, t, 100), 15);
        // Two minutes of silence forget everything.
        let t = start + Duration::from_secs(240);
        assert_eq!(burst(&l, ip(1), 60, t, 100), 60);
    }

    #[test]
    fn retry_after_is_when_a_request_fits_again() {
        let l = Limiter::with_buckets(64);
        let t0 = l.epoch + Duration::from_secs(10);
        assert_eq!(burst(&l, ip(1), 10, t0, 10), 10);
        let Verdict::Deny { retry_after_secs } = l.check(ROUTE, ip(1), 10, t0) else {
            panic!("the 11th request was allowed")
        };
        // Refused until then, allowed from then on.
        let at = t0 + Duration::from_secs(retry_after_secs);
        assert_eq!(
            l.check(ROUTE, ip(1), 10, at),
            Verdict::Allow,
            "{retry_after_secs}"
        );
        let l2 = Limiter::with_buckets(64);
        assert_eq!(burst(&l2, ip(1), 10, t0, 10), 10);
        let before = t0 + Duration::from_secs(retry_after_secs - 1);
        assert!(matches!(
            l2.check(ROUTE, ip(1), 10, before),
            Verdict::Deny { .. }
        ));
    }

    #[test]
    fn ipv4_mapped_clients_share_the_ipv4_window() {
        let l = Limiter::with_buckets(64);
        let t = l.epoch;
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        assert_eq!(burst(&l, v4, 4, t, 2), 2);
        assert_eq!(burst(&l, mapped, 4, t, 5), 2);
        assert_eq!(burst(&l, IpAddr::V6(Ipv6Addr::LOCALHOST), 4, t, 5), 4);
    }

    #[test]
    fn many_addresses_stay_within_the_table_and_the_busy_ones_are_kept() {
        let l = Limiter::with_buckets(16); // 64 slots
        let t = l.epoch;
        // A busy client at its limit...
        assert_eq!(burst(&l, ip(0), 50, t, 50), 50);
        // ...then a flood of 10,000 one-request addresses.
        for n in 1..=10_000 {
            assert_eq!(l.check(ROUTE, ip(n), 50, t), Verdict::Allow);
        }
        assert_eq!(
            l.live(t),
            64,
            "every slot holds a live pair, and no more exist"
        );
        // The busy client kept its slot (the least used ones were taken over) and is still
        // refused.
        assert!(matches!(l.check(ROUTE, ip(0), 50, t), Verdict::Deny { .. }));
        // Stale slots are reused once their windows have passed.
        let later = t + Duration::from_secs(180);
        assert_eq!(l.live(later), 0);
        assert_eq!(burst(&l, ip(20_000), 50, later, 50), 50);
    }

    #[test]
    fn workers_on_several_threads_share_one_count() {
        let l = std::sync::Arc::new(Limiter::with_buckets(64));
        let t = l.epoch + Duration::from_secs(1);
        let allowed: u32 = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || burst(&l, ip(9), 1000, t, 600))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(allowed, 1000);
    }

    #[test]
    fn state_packs_and_unpacks() {
        let s = State {
            tag: 0x3ff,
            window: 0x2ef,
            current: MAX_COUNT,
            previous: 12345,
        };
        assert_eq!(State::unpack(s.pack()), s);
        assert_eq!(s.at(0x2f0).previous, MAX_COUNT);
        assert_eq!(s.at(0x2f0).tag, 0x3ff);
        assert_eq!(s.at(0x2f1).previous, 0);
        // Window numbers wrap at 10 bits.
        let w = State {
            tag: 1,
            window: (1 << 10) - 1,
            current: 3,
            previous: 0,
        };
        assert_eq!(w.at(1 << 10).previous, 3);
        assert_eq!(w.at((1 << 10) + 7).previous, 0);
    }
}

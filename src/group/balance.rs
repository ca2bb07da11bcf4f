//! The balancing algorithms' fixed parts, computed once per membership: the smooth weighted
//! round-robin schedule and the consistent-hash ring. Pure logic.

/// Longest round-robin schedule; larger weight sums are scaled down.
const MAX_SCHEDULE: u64 = 4096;
/// Ring points of the heaviest server (lighter ones get their share of it).
const POINTS: u64 = 160;

/// nginx's smooth weighted round robin, unrolled into one cycle of member indices: each member
/// appears `weight` times (weights divided by their common divisor), spread out — weights
/// 5, 1, 1 give `a a b a c a a`, not `a a a a a b c`.
pub fn schedule(members: &[(usize, u32)]) -> Vec<u32> {
    if members.is_empty() {
        return Vec::new();
    }
    let g = members.iter().fold(0u64, |g, &(_, w)| gcd(g, u64::from(w)));
    let mut weights: Vec<u64> = members
        .iter()
        .map(|&(_, w)| u64::from(w) / g.max(1))
        .collect();
    let sum: u64 = weights.iter().sum();
    if sum > MAX_SCHEDULE {
        for w in &mut weights {
            *w = (*w * MAX_SCHEDULE / sum).max(1);
        }
    }
    let total: u64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += *w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total as i64;
        out.push(members[best].0 as u32);
    }
    out
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// A consistent-hash ring: points (hash, member index), sorted. A member's points depend only
/// on its own key (its address), so a member leaving moves only the keys that were its own.
pub fn ring(members: &[(usize, u32, String)]) -> Vec<(u64, u32)> {
    let heaviest = members.iter().map(|m| u64::from(m.1)).max().unwrap_or(1);
    let mut out = Vec::new();
    for (index, weight, key) in members {
        let n = (POINTS * u64::from(*weight)).div_ceil(heaviest).max(1);
        for p in 0..n {
            out.push((hash(format!("{key}-{p}").as_bytes()), *index as u32));
        }
    }
    out.sort_unstable();
    out
}

/// The ring position of `key`: the first point at or after its hash, wrapping.
pub fn ring_start(ring: &[(u64, u32)], key: u64) -> usize {
    let i = ring.partition_point(|p| p.0 < key);
    if i == ring.len() {
        0
    } else {
        i
    }
}

/// FNV-1a, finished with a mixer (stable across versions and runs).
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The value of cookie `name` in a `Cookie` header value.
pub fn cookie<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_schedule_spreads_weights() {
        let s = schedule(&[(0, 5), (1, 1), (2, 1)]);
        assert_eq!(s, vec![0, 0, 1, 0, 2, 0, 0]);
        // Common divisors are taken out.
        assert_eq!(schedule(&[(0, 2), (1, 2)]), vec![0, 1]);
        assert_eq!(schedule(&[(3, 1)]), vec![3]);
        assert!(schedule(&[]).is_empty());
        // Huge sums are scaled, every member kept.
        let big = schedule(&[(0, 1000), (1, 1000), (2, 1), (3, 999)]);
        assert!(big.len() as u64 <= MAX_SCHEDULE + 4);
        for m in 0..4 {
            assert!(big.contains(&m));
        }
    }

    #[test]
    fn ring_moves_only_the_leavers_keys() {
        let three: Vec<(usize, u32, String)> = (0..3)
            .map(|i| (i, 1, format!("127.0.0.{}:80", i + 1)))
            .collect();
        let before = ring(&three);
        let after = ring(&[three[0].clone(), three[2].clone()]);
        let owner = |r: &[(u64, u32)], k: u64| r[ring_start(r, k)].1;
        let mut moved_other = 0;
        let mut counts = [0; 3];
        for k in 0..10_000u64 {
            let key = hash(&k.to_le_bytes());
            let was = owner(&before, key);
            counts[was as usize] += 1;
            if was != 1 && owner(&after, key) != was {
                moved_other += 1;
            }
        }
        assert_eq!(moved_other, 0);
        for c in counts {
            assert!((2_300..4_400).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn cookies() {
        assert_eq!(cookie(b"a=1; sid=xyz ; b=2", "sid"), Some(&b"xyz"[..]));
        assert_eq!(cookie(b"sidx=1", "sid"), None);
        assert_eq!(cookie(b"", "sid"), None);
    }
}

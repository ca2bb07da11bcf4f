//! Access policy primitives: CIDR sets for `allowed_ips` / `denied_ips` / `trusted_proxies`,
//! and the client address a request's policy applies to.
//!
//! **Client addresses behind other proxies.** By default the client is the TCP peer. A route's
//! `trusted_proxies` names the peers whose forwarding chain the daemon believes (nginx's
//! `set_real_ip_from` with `real_ip_recursive on`): when the peer is trusted, the chain of
//! `X-Forwarded-For` (or, without one, the `for=` of `Forwarded`) is walked from the right,
//! past every trusted address, and the first address that is not trusted is the client —
//! for `allowed_ips`, the rate limiter and the access log ([`client_address`]). An entry that
//! is not an address (`unknown`, an obfuscated name, garbage) ends the walk at the hop before
//! it, so a client cannot put a forged address behind it.

use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;

use crate::http::request::RequestHead;

/// A set of IPv4 and IPv6 networks. A single address is a /32 or /128 network. An IPv4-mapped
/// IPv6 client address (`::ffff:10.0.0.1`) matches IPv4 rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpSet {
    nets: Vec<IpNet>,
}

impl IpSet {
    pub fn new(nets: Vec<IpNet>) -> Self {
        let mut nets: Vec<IpNet> = nets.into_iter().map(|n| n.trunc()).collect();
        nets.sort();
        nets.dedup();
        Self { nets }
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }

    /// Whether `addr` lies in one of the networks.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        self.nets.iter().any(|n| n.contains(&addr))
    }
}

/// The client address of a request from `peer` whose route trusts `trusted` (see the module
/// documentation).
pub fn client_address(peer: IpAddr, req: &RequestHead, trusted: &IpSet) -> IpAddr {
    let peer = canonical(peer);
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    let xff: Vec<Option<IpAddr>> = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(|item| parse_node(item.trim_ascii()))
        .collect();
    let chain = if xff.is_empty() {
        forwarded_for(req)
    } else {
        xff
    };
    let mut client = peer;
    for hop in chain.into_iter().rev() {
        match hop {
            Some(ip) => {
                client = canonical(ip);
                if !trusted.contains(client) {
                    return client;
                }
            }
            None => return client,
        }
    }
    client
}

/// The `for=` nodes of every `Forwarded` header (RFC 7239), in order.
fn forwarded_for(req: &RequestHead) -> Vec<Option<IpAddr>> {
    let mut out = Vec::new();
    for h in req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("forwarded"))
    {
        for element in h.value.split(|&b| b == b',') {
            let value = element.split(|&b| b == b';').find_map(|pair| {
                let pair = pair.trim_ascii();
                let (name, value) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
                name.eq_ignore_ascii_case(b"for").then(|| &value[1..])
            });
            if let Some(v) = value {
                let v = v.trim_ascii();
                let v = v
                    .strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(v);
                out.push(parse_node(v));
            }
        }
    }
    out
}

/// Whether a `Forwarded` value follows RFC 7239's grammar: elements separated by `,`, pairs by
/// `;`, each pair `token=token` or `token="quoted string"`. A malformed one (an unclosed quote,
/// say) must not be passed on in front of the daemon's own element: a parser downstream could
/// read that element as part of the client's.
pub fn well_formed_forwarded(v: &[u8]) -> bool {
    let tchar: fn(u8) -> bool = crate::http::method::is_tchar;
    let ows: fn(u8) -> bool = |b| b == b' ' || b == b'\t';
    // Skips bytes of one class; how many.
    let skip = |i: &mut usize, class: fn(u8) -> bool| {
        let from = *i;
        while v.get(*i).is_some_and(|&b| class(b)) {
            *i += 1;
        }
        *i - from
    };
    let mut i = 0;
    loop {
        skip(&mut i, ows);
        // A pair, or nothing (empty elements and pairs are allowed).
        if skip(&mut i, tchar) > 0 {
            if v.get(i) != Some(&b'=') {
                return false;
            }
            i += 1;
            if v.get(i) == Some(&b'"') {
                i += 1;
                loop {
                    match v.get(i) {
                        None => return false,
                        Some(b'"') => break,
                        Some(b'\\') => i += 2,
                        Some(&b) if b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80 => i += 1,
                        Some(_) => return false,
                    }
                }
                i += 1;
            } else if skip(&mut i, tchar) == 0 {
                return false;
            }
        }
        skip(&mut i, ows);
        match v.get(i) {
            None => return true,
            Some(b';' | b',') => i += 1,
            Some(_) => return false,
        }
    }
}

/// An address in a forwarding chain: `192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:80`. `None` for anything else.
fn parse_node(v: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(v).ok()?;
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        if !after.is_empty() && !after.strip_prefix(':')?.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        return inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let (ip, port) = s.rsplit_once(':')?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// The key the rate limiter counts a client by: an IPv4 address as it is (IPv4-mapped IPv6
/// included), an IPv6 address with everything past its first `v6_prefix` bits cleared, so that
/// a client cannot escape its limit by rotating addresses within its network.
pub fn limiter_key(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let bits = u32::from(v6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
        v4 => v4,
    }
}

/// Maps an IPv4-mapped IPv6 address to its IPv4 form; other addresses are unchanged.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => addr,
        },
        v4 => v4,
    }
}

/// Parses one rule: an address (`192.168.1.1`, `::1`) or a network (`10.0.0.0/8`,
/// `2001:db8::/32`). The error is the reason, phrased for the operator.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{s:?}: {addr:?} is not an IPv4 or IPv6 address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => {
            let n: u32 = l
                .parse()
                .map_err(|_| format!("{s:?}: prefix length {l:?} is not a number"))?;
            if n > max as u32 {
                return Err(format!("{s:?}: prefix length {n} is longer than {max}"));
            }
            n as u8
        }
    };
    IpNet::new(ip, len).map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(rules: &[&str]) -> IpSet {
        IpSet::new(rules.iter().map(|r| parse_net(r).unwrap()).collect())
    }

    #[test]
    fn parses_addresses_and_networks() {
        assert_eq!(parse_net("192.168.1.1").unwrap().prefix_len(), 32);
        assert_eq!(parse_net("::1").unwrap().prefix_len(), 128);
        assert_eq!(parse_net("2001:db8::/32").unwrap().prefix_len(), 32);
        assert_eq!(
            parse_net("10.0.0.0/33").unwrap_err(),
            "\"10.0.0.0/33\": prefix length 33 is longer than 32"
        );
        assert!(parse_net("10.0.0/8")
            .unwrap_err()
            .contains("not an IPv4 or IPv6"));
        assert!(parse_net("10.0.0.0/x")
            .unwrap_err()
            .contains("not a number"));
        assert!(parse_net("::/129").unwrap_err().contains("longer than 128"));
    }

    #[test]
    fn membership_v4_v6_and_mapped() {
        let s = set(&["192.168.0.0/24", "10.1.2.3", "2001:db8::/32"]);
        assert!(s.contains("192.168.0.77".parse().unwrap()));
        assert!(!s.contains("192.168.1.1".parse().unwrap()));
        assert!(s.contains("10.1.2.3".parse().unwrap()));
        assert!(!s.contains("10.1.2.4".parse().unwrap()));
        assert!(s.contains("2001:db8:1::5".parse().unwrap()));
        assert!(s.contains("::ffff:192.168.0.9".parse().unwrap()));
        assert!(!s.contains("::1".parse().unwrap()));
        assert!(!IpSet::default().contains("127.0.0.1".parse().unwrap()));
    }

    fn head(extra: &str) -> RequestHead {
        let raw = format!("GET / HTTP/1.1\r\nHost: a\r\n{extra}\r\n");
        crate::http::h1::request::parse(raw.as_bytes(), 8192)
            .unwrap()
            .unwrap()
            .0
    }

    #[test]
    fn client_address_walks_the_trusted_chain() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let peer = ip("10.0.0.2");
        let trusted = set(&["10.0.0.0/8"]);
        let xff = head("X-Forwarded-For: 6.6.6.6, 203.0.113.7, 10.1.1.1\r\n");
        // Nobody trusted: the peer, whatever the headers say.
        assert_eq!(client_address(peer, &xff, &IpSet::default()), peer);
        // An untrusted peer's chain is not believed.
        assert_eq!(
            client_address(ip("192.0.2.9"), &xff, &trusted),
            ip("192.0.2.9")
        );
        // The right-most untrusted address; what lies left of it is the client's own claim.
        assert_eq!(client_address(peer, &xff, &trusted), ip("203.0.113.7"));
        // Several lines are one list.
        let two = head("X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 203.0.113.8\r\n");
        assert_eq!(client_address(peer, &two, &trusted), ip("203.0.113.8"));
        // All trusted: the left-most.
        let inner = head("X-Forwarded-For: 10.9.9.9, 10.1.1.1\r\n");
        assert_eq!(client_address(peer, &inner, &trusted), ip("10.9.9.9"));
        // Garbage ends the walk at the hop before it.
        let junk = head("X-Forwarded-For: 6.6.6.6, unknown, 10.1.1.1\r\n");
        assert_eq!(client_address(peer, &junk, &trusted), ip("10.1.1.1"));
        // No chain: the peer.
        assert_eq!(client_address(peer, &head(""), &trusted), peer);
        // Ports and brackets.
        let ports = head("X-Forwarded-For: [2001:db8::5]:443, 198.51.100.1:8080\r\n");
        assert_eq!(client_address(peer, &ports, &trusted), ip("198.51.100.1"));
        let all = set(&["10.0.0.0/8", "198.51.100.0/24"]);
        assert_eq!(client_address(peer, &ports, &all), ip("2001:db8::5"));
    }

    #[test]
    fn forwarded_is_the_chain_without_x_forwarded_for() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let peer = ip("10.0.0.2");
        let trusted = set(&["10.0.0.0/8"]);
        let fwd =
            head("Forwarded: for=6.6.6.6;proto=https, For=\"[2001:db8::7]:4711\";by=10.0.0.2\r\n");
        assert_eq!(client_address(peer, &fwd, &trusted), ip("2001:db8::7"));
        let hidden = head("Forwarded: for=6.6.6.6, for=_hidden, for=10.3.3.3\r\n");
        assert_eq!(client_address(peer, &hidden, &trusted), ip("10.3.3.3"));
        // X-Forwarded-For wins when both are present.
        let both = head("Forwarded: for=6.6.6.6\r\nX-Forwarded-For: 203.0.113.1\r\n");
        assert_eq!(client_address(peer, &both, &trusted), ip("203.0.113.1"));
    }

    #[test]
    fn forwarded_grammar() {
        for good in [
            &b"for=192.0.2.60;proto=http;by=203.0.113.43"[..],
            b"for=\"[2001:db8:cafe::17]:4711\"",
            b"for=192.0.2.43, for=198.51.100.17",
            b"for=_hidden;proto=https , for=unknown",
            b"for=\"a\\\"b\"",
            b"",
            b";;,",
        ] {
            assert!(
                well_formed_forwarded(good),
                "{:?}",
                String::from_utf8_lossy(good)
            );
        }
        for bad in [
            &b"for=\"x"[..],
            b"for=\"x, for=1.2.3.4",
            b"for",
            b"for=",
            b"=x",
            b"for=a b",
            b"for=\"a\x01\"",
            b"for=a\"b\"",
            b"for=\"[::1]\"x",
        ] {
            assert!(
                !well_formed_forwarded(bad),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn limiter_keys_by_ipv6_prefix() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            limiter_key(ip("2001:db8:1:2:3:4:5:6"), 64),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            limiter_key(ip("2001:db8:1:2:3:4:5:6"), 48),
            ip("2001:db8:1::")
        );
        assert_eq!(limiter_key(ip("2001:db8::1"), 128), ip("2001:db8::1"));
        assert_eq!(limiter_key(ip("192.0.2.7"), 64), ip("192.0.2.7"));
        assert_eq!(limiter_key(ip("::ffff:192.0.2.7"), 64), ip("192.0.2.7"));
    }

    #[test]
    fn host_bits_are_truncated() {
        assert_eq!(set(&["10.1.2.3/8"]).nets()[0].to_string(), "10.0.0.0/8");
    }
}

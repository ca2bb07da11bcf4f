//! Access policy primitives: CIDR sets for `allowed_ips` / `denied_ips`.
//!
//! The security issue adds the rate limiter and the connection cap here; what the foundation
//! needs is the parsed form of the IP rules, so that a bad CIDR is a config error.

use std::net::IpAddr;

use ipnet::IpNet;

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

    #[test]
    fn host_bits_are_truncated() {
        assert_eq!(set(&["10.1.2.3/8"]).nets()[0].to_string(), "10.0.0.0/8");
    }
}

//! The PROXY protocol header (HAProxy's, v1 text and v2 binary) that an L4 load balancer sends
//! before the client's bytes, carrying the client's address.
//!
//! [`parse`] is pure (fuzzed: `fuzz/fuzz_targets/proxy_header.rs`); the `ppp` crate decodes
//! the header once [`parse`] has framed it. [`read`] takes the header off a socket without
//! taking a byte beyond it (what follows may be a TLS `ClientHello`): it peeks, and consumes
//! only bytes that are known to be header.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Instant;

use monoio::net::TcpStream;

use crate::config::ProxyVersions;

/// The v2 signature (12 bytes), then version/command, family/protocol and a 16-bit length.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V2_FIXED: usize = 16;
/// The longest v2 header taken (TLVs included); HAProxy's limit is its buffer size. Load
/// balancers send tens of bytes of TLVs.
pub const V2_MAX: usize = 4096;
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// The longest v1 header, `\r\n` included (the spec's 107).
const V1_MAX: usize = 107;

/// What the bytes so far make of a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Every byte so far belongs to the header, and it goes on.
    Incomplete,
    /// The header is the first `len` bytes; `source` is the client's address (`None`: keep
    /// the TCP peer — v1 `UNKNOWN`, v2 `LOCAL`, or an address family other than TCP over
    /// IPv4/IPv6).
    Done {
        len: usize,
        source: Option<SocketAddr>,
    },
    /// Not a header the listener takes; the connection closes.
    Invalid(&'static str),
}

/// Frames and decodes the header at the start of `buf`, for a listener taking `versions`.
pub fn parse(buf: &[u8], versions: ProxyVersions) -> Parsed {
    let prefix_of = |whole: &[u8]| {
        let n = buf.len().min(whole.len());
        buf[..n] == whole[..n]
    };
    if buf.is_empty() {
        return Parsed::Incomplete;
    }
    if prefix_of(V2_SIGNATURE) {
        if versions == ProxyVersions::V1 {
            return Parsed::Invalid("a PROXY v2 header where proxy_protocol = \"v1\"");
        }
        return v2(buf);
    }
    if prefix_of(V1_PREFIX) {
        if versions == ProxyVersions::V2 {
            return Parsed::Invalid("a PROXY v1 header where proxy_protocol = \"v2\"");
        }
        return v1(buf);
    }
    Parsed::Invalid("no PROXY protocol header")
}

fn v1(buf: &[u8]) -> Parsed {
    let Some(lf) = memchr::memchr(b'\n', &buf[..buf.len().min(V1_MAX)]) else {
        return if buf.len() >= V1_MAX {
            Parsed::Invalid("a PROXY v1 header longer than 107 bytes")
        } else {
            Parsed::Incomplete
        };
    };
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Parsed::Invalid("a PROXY v1 header not ended by CRLF");
    }
    let len = lf + 1;
    match ppp::v1::Header::try_from(&buf[..len]) {
        Ok(h) => Parsed::Done {
            len,
            source: match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Tcp6(a) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Unknown => None,
            },
        },
        Err(_) => Parsed::Invalid("a malformed PROXY v1 header"),
    }
}

fn v2(buf: &[u8]) -> Parsed {
    if buf.len() < V2_FIXED {
        return Parsed::Incomplete;
    }
    let len = V2_FIXED + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX {
        return Parsed::Invalid("a PROXY v2 header longer than 4 KiB");
    }
    if buf.len() < len {
        return Parsed::Incomplete;
    }
    match ppp::v2::Header::try_from(&buf[..len]) {
        Ok(h) => Parsed::Done {
            len,
            source: match (h.command, h.addresses) {
                (ppp::v2::Command::Local, _) => None,
                // A TCP listener: another transport's addresses are not this client's.
                _ if h.protocol != ppp::v2::Protocol::Stream => None,
                (_, ppp::v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (_, ppp::v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (_, ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_)) => None,
            },
        },
        Err(_) => Parsed::Invalid("a malformed PROXY v2 header"),
    }
}

/// Takes the header off `stream` by `deadline`: the client's address, or `None` to keep the
/// TCP peer; `Err` with why the connection must close (no header, a malformed one, the
/// wrong version, none complete in time, the peer gone).
pub async fn read(
    stream: &TcpStream,
    versions: ProxyVersions,
    deadline: Instant,
) -> Result<Option<SocketAddr>, &'static str> {
    let fd = stream.as_raw_fd();
    let mut have: Vec<u8> = Vec::new();
    let mut peeked = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match monoio::time::timeout(left, stream.readable(false)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err("the connection failed before its PROXY header"),
            Err(_) => return Err("no complete PROXY header within client_header_timeout_secs"),
        }
        let want = peeked.len().min(V2_MAX - have.len());
        let n = match recv(fd, &mut peeked[..want], libc::MSG_PEEK) {
            Ok(0) => return Err("the connection closed before its PROXY header was complete"),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Err("the connection failed before its PROXY header"),
        };
        let before = have.len();
        have.extend_from_slice(&peeked[..n]);
        match parse(&have, versions) {
            // Each byte peeked is header: take them all, and wait for more.
            Parsed::Incomplete => consume(fd, n)?,
            Parsed::Done { len, source } => {
                consume(fd, len - before)?;
                return Ok(source);
            }
            Parsed::Invalid(why) => return Err(why),
        }
    }
}

/// Takes `n` bytes that a peek saw waiting off the socket.
fn consume(fd: i32, mut n: usize) -> Result<(), &'static str> {
    let mut scratch = [0u8; 512];
    while n > 0 {
        let want = n.min(scratch.len());
        match recv(fd, &mut scratch[..want], 0) {
            Ok(0) => return Err("the connection closed in its PROXY header"),
            Ok(got) => n -= got,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err("the connection failed in its PROXY header"),
        }
    }
    Ok(())
}

/// One non-blocking `recv(2)` with `flags`.
fn recv(fd: i32, buf: &mut [u8], flags: i32) -> std::io::Result<usize> {
    // SAFETY: recv writes at most buf.len() bytes into the live buffer.
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_header(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        let len = (addresses.len() + tlvs.len()) as u16;
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(addresses);
        h.extend_from_slice(tlvs);
        h
    }

    #[test]
    fn v1_tcp4_tcp6_unknown() {
        let h = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(h, ProxyVersions::Any),
            Parsed::Done {
                len: 45,
                source: Some("192.0.2.7:56324".parse().unwrap())
            }
        );
        let h = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 443\r\n";
        assert_eq!(
            parse(h, ProxyVersions::V1),
            Parsed::Done {
                len: h.len(),
                source: Some("[2001:db8::1]:4000".parse().unwrap())
            }
        );
        let h = b"PROXY UNKNOWN\r\n\x16\x03\x01";
        assert_eq!(
            parse(h, ProxyVersions::V1),
            Parsed::Done {
                len: 15,
                source: None
            }
        );
    }

    #[test]
    fn v2_proxy_local_and_tlvs() {
        let mut addrs = vec![192, 0, 2, 7, 198, 51, 100, 1];
        addrs.extend_from_slice(&56324u16.to_be_bytes());
        addrs.extend_from_slice(&443u16.to_be_bytes());
        // An AWS-style TLV (type 0xEA) and a NOOP: skipped.
        let tlvs = [0xEA, 0, 3, 1, b'v', b'p', 0x04, 0, 1, 0];
        let h = v2_header(1, 0x11, &addrs, &tlvs);
        let mut with_request = h.clone();
        with_request.extend_from_slice(b"GET /");
        assert_eq!(
            parse(&with_request, ProxyVersions::V2),
            Parsed::Done {
                len: h.len(),
                source: Some("192.0.2.7:56324".parse().unwrap())
            }
        );
        let local = v2_header(0, 0x00, &[], &[]);
        assert_eq!(
            parse(&local, ProxyVersions::Any),
            Parsed::Done {
                len: 16,
                source: None
            }
        );
        let mut v6 = [0u8; 36];
        v6[15] = 1;
        v6[32..34].copy_from_slice(&8080u16.to_be_bytes());
        assert_eq!(
            parse(&v2_header(1, 0x21, &v6, &[]), ProxyVersions::Any),
            Parsed::Done {
                len: 52,
                source: Some("[::1]:8080".parse().unwrap())
            }
        );
    }

    #[test]
    fn every_prefix_of_a_header_is_incomplete() {
        let v1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n".to_vec();
        let v2 = v2_header(1, 0x11, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2], &[]);
        for h in [v1, v2] {
            for cut in 1..h.len() {
                assert_eq!(
                    parse(&h[..cut], ProxyVersions::Any),
                    Parsed::Incomplete,
                    "{:?}",
                    &h[..cut]
                );
            }
            assert!(matches!(parse(&h, ProxyVersions::Any), Parsed::Done { .. }));
        }
    }

    #[test]
    fn garbage_wrong_versions_and_oversize_are_refused() {
        let invalid = |b: &[u8], v| matches!(parse(b, v), Parsed::Invalid(_));
        assert!(invalid(b"GET / HTTP/1.1\r\n", ProxyVersions::Any));
        assert!(invalid(b"\x16\x03\x01", ProxyVersions::Any));
        assert!(invalid(b"PROXY TCP4 1.2.3.4\r\n", ProxyVersions::Any));
        assert!(invalid(b"PROXY TCP4 a b 1 2\r\n", ProxyVersions::Any));
        assert!(invalid(
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            ProxyVersions::Any
        ));
        assert!(invalid(b"PROXY UNKNOWN\r\n", ProxyVersions::V2));
        assert!(invalid(&v2_header(0, 0, &[], &[]), ProxyVersions::V1));
        assert!(invalid(
            &[b'P', b'R', b'O', b'X', b'Y', b' ', b'A'].repeat(20),
            ProxyVersions::Any
        ));
        let mut long = V2_SIGNATURE.to_vec();
        long.extend_from_slice(&[0x21, 0x11, 0x10, 0x01]);
        assert!(invalid(&long, ProxyVersions::Any));
        // A version nibble other than 2, a command other than LOCAL/PROXY.
        let mut bad = v2_header(0, 0, &[], &[]);
        bad[12] = 0x10;
        assert!(invalid(&bad, ProxyVersions::Any));
        bad[12] = 0x2F;
        assert!(invalid(&bad, ProxyVersions::Any));
        // Fewer address bytes than the family needs.
        assert!(invalid(
            &v2_header(1, 0x11, &[1, 2, 3], &[]),
            ProxyVersions::Any
        ));
    }
}

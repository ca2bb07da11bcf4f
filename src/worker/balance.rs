//! `[performance] reuseport_balancing = "cbpf"`: which worker's listener takes a new
//! connection, chosen by the client's address instead of the kernel's hash of the whole
//! 4-tuple — so every connection from one client lands on the same worker (its upstream pool
//! and caches stay warm, its rate of new connections stays on one core).
//!
//! A classic BPF program attached to the `SO_REUSEPORT` group with `SO_ATTACH_REUSEPORT_CBPF`
//! returns an index into the group's sockets (in the order they were bound):
//!
//! ```text
//! A = first byte of the IP header >> 4          (the IP version)
//! A = IPv4 source address, or the last 32 bits of the IPv6 source
//! A = (A * 0x9E3779B1) >> 16 % workers           (spread neighbouring addresses)
//! return A
//! ```
//!
//! Attaching fails on kernels without the option (before 4.5) or where seccomp forbids it; the
//! caller then logs it and the kernel's own hash stays in force.

use std::os::fd::RawFd;

// Classic BPF opcodes (linux/bpf_common.h, linux/filter.h).
const BPF_LD: u16 = 0x00;
const BPF_ALU: u16 = 0x04;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_W: u16 = 0x00;
const BPF_B: u16 = 0x10;
const BPF_ABS: u16 = 0x20;
const BPF_MUL: u16 = 0x20;
const BPF_RSH: u16 = 0x70;
const BPF_MOD: u16 = 0x90;
const BPF_JA: u16 = 0x00;
const BPF_JEQ: u16 = 0x10;
const BPF_K: u16 = 0x00;
const BPF_A: u16 = 0x10;
/// Offsets below this address the network header, whatever the skb's data points at.
const SKF_NET_OFF: i32 = -0x100000;
/// Fibonacci hashing's multiplier (2^32 / φ).
const SPREAD: u32 = 0x9E37_79B1;

fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn net(offset: i32) -> u32 {
    (SKF_NET_OFF + offset) as u32
}

/// The program for a group of `workers` sockets.
pub fn program(workers: u32) -> Vec<libc::sock_filter> {
    vec![
        // 0: A = version << 4 | IHL; A >>= 4
        op(BPF_LD | BPF_B | BPF_ABS, 0, 0, net(0)),
        op(BPF_ALU | BPF_RSH | BPF_K, 0, 0, 4),
        // 2: IPv6? → 5, else → 3
        op(BPF_JMP | BPF_JEQ | BPF_K, 2, 0, 6),
        // 3: IPv4 source address (bytes 12..16), then to the hash
        op(BPF_LD | BPF_W | BPF_ABS, 0, 0, net(12)),
        op(BPF_JMP | BPF_JA, 0, 0, 1),
        // 5: the last word of the IPv6 source address (bytes 8..24 → 20..24)
        op(BPF_LD | BPF_W | BPF_ABS, 0, 0, net(20)),
        // 6: spread, reduce to a socket index, return it
        op(BPF_ALU | BPF_MUL | BPF_K, 0, 0, SPREAD),
        op(BPF_ALU | BPF_RSH | BPF_K, 0, 0, 16),
        op(BPF_ALU | BPF_MOD | BPF_K, 0, 0, workers.max(1)),
        op(BPF_RET | BPF_A, 0, 0, 0),
    ]
}

/// Attaches [`program`] to the `SO_REUSEPORT` group of the listening socket `fd`.
pub fn attach(fd: RawFd, workers: u32) -> std::io::Result<()> {
    crate::net::sys::attach_reuseport_cbpf(fd, &mut program(workers))
}

/// The worker [`program`] picks for a client address (what the kernel computes), for tests
/// and the docs.
pub fn worker_for(ip: std::net::IpAddr, workers: u32) -> u32 {
    let word = match ip {
        std::net::IpAddr::V4(v4) => u32::from(v4),
        std::net::IpAddr::V6(v6) => {
            let o = v6.octets();
            u32::from_be_bytes([o[12], o[13], o[14], o[15]])
        }
    };
    (word.wrapping_mul(SPREAD) >> 16) % workers.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
    use std::os::fd::{AsRawFd, FromRawFd};

    /// A listening socket on `addr` with `SO_REUSEPORT` (std's listener has no such option).
    fn reuseport_listener(addr: SocketAddr) -> TcpListener {
        // SAFETY: plain socket calls on a descriptor owned by this function until it is
        // handed to the TcpListener.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0);
            let one: libc::c_int = 1;
            let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            let one_ptr = (&one as *const libc::c_int).cast();
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, one_ptr, len);
            let SocketAddr::V4(v4) = addr else {
                panic!("IPv4 only")
            };
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            let rc = libc::bind(
                fd,
                (&sin as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
            assert_eq!(libc::listen(fd, 128), 0);
            TcpListener::from_raw_fd(fd)
        }
    }

    /// Connects from `from` (a loopback address) to `to`.
    fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
        // SAFETY: as above; the descriptor goes to the TcpStream on success.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0);
            let sin = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(ip).to_be(),
                },
                sin_zero: [0; 8],
            };
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let local = sin(from, 0);
            assert_eq!(
                libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len),
                0
            );
            let SocketAddr::V4(v4) = to else {
                panic!("IPv4 only")
            };
            let remote = sin(*v4.ip(), v4.port());
            let rc = libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len);
            assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
            TcpStream::from_raw_fd(fd)
        }
    }

    #[test]
    fn the_kernel_runs_the_program_as_worker_for_says() {
        // A port of its own on a loopback address of its own.
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let workers = 3;
        let listeners: Vec<TcpListener> = (0..workers).map(|_| reuseport_listener(addr)).collect();
        attach(listeners[0].as_raw_fd(), workers).expect("SO_ATTACH_REUSEPORT_CBPF");
        for l in &listeners {
            l.set_nonblocking(true).unwrap();
        }
        let mut used = std::collections::HashSet::new();
        for last in 2..40u8 {
            let client = Ipv4Addr::new(127, 0, 3, last);
            let want = worker_for(client.into(), workers) as usize;
            used.insert(want);
            // Several connections from one address: all on the same listener.
            let conns: Vec<TcpStream> = (0..4).map(|_| connect_from(client, addr)).collect();
            for (i, l) in listeners.iter().enumerate() {
                let mut accepted = 0;
                while l.accept().is_ok() {
                    accepted += 1;
                }
                let expected = if i == want { conns.len() } else { 0 };
                assert_eq!(accepted, expected, "client {client}: listener {i}");
            }
        }
        assert_eq!(
            used.len(),
            workers as usize,
            "addresses spread over every worker"
        );
    }
}

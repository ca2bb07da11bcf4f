//! A binary upgrade's hand-over between the running process ("old") and the one started from
//! the new binary ("new"): a `SOCK_SEQPACKET` socket pair, one JSON [`Message`] per packet,
//! and the listening sockets passed with `SCM_RIGHTS` (the same sockets, so not a connection
//! waiting in their queues is lost — binding a second `SO_REUSEPORT` group and closing the
//! first would reset those).
//!
//! ```text
//!  old                                        new (started with --upgrade-fd N)
//!   spawn ──────────────────────────────────►  loads and checks its config
//!         ◄─────────────────────── Hello      (or Failed, and exits 1)
//!   Sockets, then Fds… ─────────────────────►  adopts them, starts its workers, admin, metrics
//!         ◄─────────────────────── Ready      (or Failed, and exits 1)
//!   stops accepting, drains, exits            serves
//! ```
//!
//! The old side is `control/upgrade.rs`; the new side is the binary's start-up (`main.rs`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Most descriptors in one packet (the kernel's `SCM_MAX_FD` is 253).
const FDS_PER_PACKET: usize = 200;
/// Largest packet read.
const MAX_PACKET: usize = 64 * 1024;

/// One packet of the hand-over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    /// New → old: the config loaded; send the sockets.
    Hello { pid: u32, version: String },
    /// Old → new: what the descriptors that follow (in [`Message::Fds`] packets, `fds` in all)
    /// are, in order: each listener's sockets (one per worker), then the admin socket, then the
    /// metrics listener.
    Sockets {
        listeners: Vec<ListenerSockets>,
        admin: bool,
        metrics: bool,
        fds: usize,
    },
    /// Old → new: a packet of descriptors.
    Fds,
    /// New → old: serving; the old process may stop accepting.
    Ready,
    /// New → old: it cannot go on (and exits 1); `reason` is for the operator.
    Failed { reason: String },
}

/// A listener's sockets in [`Message::Sockets`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerSockets {
    pub address: std::net::SocketAddr,
    pub count: usize,
}

/// One end of the hand-over.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// A connected pair: this process's end, and the end for the child (close-on-exec like
    /// every descriptor here; the spawn clears the flag in the child only).
    pub fn pair() -> io::Result<(Self, OwnedFd)> {
        let mut fds = [0; 2];
        // SAFETY: socketpair writes two descriptors into the live array.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (ours, theirs) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok((Self { fd: ours }, theirs))
    }

    /// The end a parent passed as `--upgrade-fd`. Marks it close-on-exec (so a restart with
    /// huge pages, or any child, does not keep it).
    ///
    /// # Safety
    /// `fd` must be an open descriptor that nothing else in this process owns.
    pub unsafe fn adopt(fd: RawFd) -> io::Result<Self> {
        // SAFETY: the caller's promise.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut kind: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes an int into the live local.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TYPE,
                (&mut kind as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc != 0 || kind != libc::SOCK_SEQPACKET {
            return Err(io::Error::other(
                "--upgrade-fd is not the hand-over socket of a running zerocopy-server",
            ));
        }
        // SAFETY: fcntl on the descriptor just adopted.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        Ok(Self { fd })
    }

    /// Keeps this end open across an `exec` of this process (the restart with huge pages,
    /// which passes `--upgrade-fd` on).
    pub fn keep_across_exec(&self) {
        // SAFETY: fcntl on a descriptor this channel owns.
        unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_SETFD, 0) };
    }

    /// Sends `message`, and `fds` with it.
    pub fn send(&self, message: &Message, fds: &[RawFd]) -> io::Result<()> {
        let bytes = serde_json::to_vec(message).map_err(io::Error::other)?;
        send_packet(self.fd.as_raw_fd(), &bytes, fds)
    }

    /// Sends the sockets: the [`Message::Sockets`] description, then the descriptors in
    /// packets of at most 200.
    pub fn send_sockets(
        &self,
        description: &Message,
        fds: &[RawFd],
        deadline: Instant,
    ) -> io::Result<()> {
        // A peer that stops reading cannot hold this past the deadline.
        let left = deadline.saturating_duration_since(Instant::now());
        let tv = libc::timeval {
            tv_sec: left.as_secs().max(1) as libc::time_t,
            tv_usec: 0,
        };
        // SAFETY: setsockopt reads the live timeval.
        unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        self.send(description, &[])?;
        for chunk in fds.chunks(FDS_PER_PACKET) {
            self.send(&Message::Fds, chunk)?;
        }
        Ok(())
    }

    /// Receives the next message and the descriptors that came with it, by `deadline`.
    /// `Ok(None)` when the other end closed.
    pub fn recv(&self, deadline: Instant) -> io::Result<Option<(Message, Vec<OwnedFd>)>> {
        let fd = self.fd.as_raw_fd();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
            }
            let mut poll = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
            // SAFETY: poll reads and writes the one live pollfd.
            let rc = unsafe { libc::poll(&mut poll, 1, ms) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if rc == 0 {
                continue;
            }
            let (bytes, fds) = recv_packet(fd)?;
            if bytes.is_empty() && fds.is_empty() {
                return Ok(None);
            }
            let message = serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a garbled hand-over message: {e}"),
                )
            })?;
            return Ok(Some((message, fds)));
        }
    }

    /// Receives the descriptors a [`Message::Sockets`] announced (`count` of them).
    pub fn recv_fds(&self, count: usize, deadline: Instant) -> io::Result<Vec<OwnedFd>> {
        let mut all = Vec::with_capacity(count);
        while all.len() < count {
            match self.recv(deadline)? {
                Some((Message::Fds, fds)) => all.extend(fds),
                Some((other, _)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("expected descriptors, got {other:?}"),
                    ))
                }
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the other process closed the hand-over",
                    ))
                }
            }
        }
        if all.len() != count {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("expected {count} descriptors, got {}", all.len()),
            ));
        }
        Ok(all)
    }
}

/// What a new process received: each listener's sockets, and the admin and metrics
/// listeners.
#[derive(Debug, Default)]
pub struct Passed {
    pub listeners: crate::worker::sockets::Inherited,
    pub admin: Option<OwnedFd>,
    pub metrics: Option<OwnedFd>,
}

impl Passed {
    /// Sorts the descriptors a [`Message::Sockets`] announced.
    pub fn sort(description: &Message, fds: Vec<OwnedFd>) -> Result<Self, String> {
        let Message::Sockets {
            listeners,
            admin,
            metrics,
            fds: count,
        } = description
        else {
            return Err(format!("expected the sockets, got {description:?}"));
        };
        if fds.len() != *count {
            return Err(format!("expected {count} sockets, got {}", fds.len()));
        }
        let mut fds = fds.into_iter();
        let mut passed = Self::default();
        for l in listeners {
            let sockets: Vec<OwnedFd> = fds.by_ref().take(l.count).collect();
            if sockets.len() != l.count {
                return Err(format!("too few sockets for {}", l.address));
            }
            passed.listeners.groups.push(crate::worker::sockets::Group {
                address: l.address,
                sockets,
                source: crate::worker::sockets::Source::Upgrade,
                nodelay: true,
            });
        }
        if *admin {
            passed.admin = fds.next();
        }
        if *metrics {
            passed.metrics = fds.next();
        }
        Ok(passed)
    }
}

/// Sends `bytes` and `fds` (`SCM_RIGHTS`) on the connected socket `fd`.
pub(crate) fn send_with_fds(fd: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    send_packet(fd, bytes, fds)
}

fn send_packet(fd: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is arithmetic on a length.
    let space = if fds.is_empty() {
        0
    } else {
        unsafe { libc::CMSG_SPACE(fd_bytes as u32) as usize }
    };
    // u64 words: the control buffer must be aligned for cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer holds CMSG_SPACE(fd_bytes) aligned bytes, so the first
        // header and its data (CMSG_LEN(fd_bytes)) fit; the fds are copied into it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                fd_bytes,
            );
        }
    }
    loop {
        // SAFETY: msg points at live buffers for the duration of the call.
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn recv_packet(fd: RawFd) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut bytes = vec![0u8; MAX_PACKET];
    // SAFETY: CMSG_SPACE is arithmetic on a length.
    let space = unsafe { libc::CMSG_SPACE((FDS_PER_PACKET * std::mem::size_of::<RawFd>()) as u32) };
    let mut control = vec![0u64; (space as usize).div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: bytes.as_mut_ptr().cast(),
        iov_len: bytes.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = (control.len() * 8) as _;
    let n = loop {
        // SAFETY: msg points at live buffers; received descriptors are close-on-exec.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: walks the control messages the kernel wrote within msg_controllen; each
    // SCM_RIGHTS payload is an array of descriptors now owned by this process.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let raw = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(raw));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a hand-over packet was truncated",
        ));
    }
    bytes.truncate(n);
    Ok((bytes, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn messages_and_descriptors_cross() {
        let (old, theirs) = Channel::pair().unwrap();
        // SAFETY: `theirs` is handed over whole.
        let new = unsafe { Channel::adopt(std::os::fd::IntoRawFd::into_raw_fd(theirs)) }.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        new.send(
            &Message::Hello {
                pid: 7,
                version: "1".into(),
            },
            &[],
        )
        .unwrap();
        let (m, fds) = old.recv(deadline).unwrap().unwrap();
        assert_eq!(
            m,
            Message::Hello {
                pid: 7,
                version: "1".into()
            }
        );
        assert!(fds.is_empty());
        // 450 descriptors: three packets.
        let listeners: Vec<std::net::TcpListener> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let raw: Vec<RawFd> = (0..450).map(|i| listeners[i % 3].as_raw_fd()).collect();
        let description = Message::Sockets {
            listeners: vec![],
            admin: false,
            metrics: false,
            fds: raw.len(),
        };
        old.send_sockets(&description, &raw, deadline).unwrap();
        let (m, _) = new.recv(deadline).unwrap().unwrap();
        assert_eq!(m, description);
        let got = new.recv_fds(450, deadline).unwrap();
        assert_eq!(got.len(), 450);
        // The same sockets: the same local address.
        let addr = |fd: &OwnedFd| {
            let l = std::net::TcpListener::from(fd.try_clone().unwrap());
            l.local_addr().unwrap()
        };
        assert_eq!(addr(&got[4]), listeners[1].local_addr().unwrap());
        // Close-on-exec.
        // SAFETY: fcntl on a live descriptor.
        let flags = unsafe { libc::fcntl(got[0].as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        drop(new);
        assert!(old.recv(deadline).unwrap().is_none());
    }

    #[test]
    fn a_silent_peer_times_out() {
        let (old, _theirs) = Channel::pair().unwrap();
        let e = old
            .recv(Instant::now() + Duration::from_millis(50))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}

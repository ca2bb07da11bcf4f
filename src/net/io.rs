//! Raw, non-blocking socket writes for the connection loop: `send(2)` on the socket's
//! descriptor, awaiting writability through the runtime when the socket is full.
//!
//! monoio has no sendfile op, so file bodies go out by `libc::sendfile` on the non-blocking
//! socket ([`super::disk`], which keeps the disk off the worker); heads and in-memory bodies use
//! `send(2)` with `MSG_MORE` when a body follows, so a small response leaves in one segment. A worker never blocks here: `EAGAIN` parks the task
//! on a readiness wait, bounded by the send timeout (a client that stops reading is dropped).

use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use monoio::net::TcpStream;

use crate::error::{Error, ErrorKind};

/// How long a write may wait for the client to make room (the original's write timeout).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Sets `O_NONBLOCK` on a socket (sockets accepted under io_uring start out blocking). One
/// `F_SETFL`, without reading the flags first: of the flags it can change, a socket of ours
/// only ever has `O_NONBLOCK`.
pub fn set_nonblocking(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; no memory is passed.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sets `TCP_NODELAY` on a listening socket: Linux copies it to every connection accepted
/// from it, which saves a `setsockopt` per connection.
pub fn set_listener_nodelay(fd: RawFd) -> std::io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `one` is a live c_int and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One non-blocking `recv(2)` of up to `max` bytes, appended to `buf`: for a socket known to be
/// readable, the bytes without a ring round trip. `WouldBlock` when there were none after all.
pub fn recv_now(stream: &TcpStream, buf: &mut Vec<u8>, max: usize) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(max);
    }
    let spare = buf.spare_capacity_mut();
    let want = spare.len().min(max);
    // SAFETY: `spare` is writable memory of at least `want` bytes; recv writes at most `want`.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            spare.as_mut_ptr().cast(),
            want,
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: recv initialised the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n as usize) };
    Ok(n as usize)
}

/// Writes all of `data`. With `more`, the kernel is told that a body follows (`MSG_MORE`).
pub async fn send_all(stream: &TcpStream, data: &[u8], more: bool) -> Result<(), Error> {
    send_all_counted(stream, data, more, &mut 0).await
}

/// [`send_all`], adding to `sent` what the socket took, also when it fails part-way.
pub async fn send_all_counted(
    stream: &TcpStream,
    mut data: &[u8],
    more: bool,
    sent: &mut u64,
) -> Result<(), Error> {
    let fd = stream.as_raw_fd();
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    while !data.is_empty() {
        // SAFETY: `data` is a live slice; send reads at most data.len() bytes from it.
        let n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), flags) };
        if n >= 0 {
            data = data.get(n as usize..).unwrap_or_default();
            *sent += n as u64;
            continue;
        }
        wait_writable(stream, std::io::Error::last_os_error()).await?;
    }
    Ok(())
}

/// After a failed write: waits for room on `EAGAIN`, returns on `EINTR`, fails otherwise.
pub(crate) async fn wait_writable(stream: &TcpStream, err: std::io::Error) -> Result<(), Error> {
    match err.kind() {
        std::io::ErrorKind::Interrupted => Ok(()),
        std::io::ErrorKind::WouldBlock => {
            match monoio::time::timeout(SEND_TIMEOUT, stream.writable(false)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(gone(e)),
                Err(_) => Err(Error::client(
                    ErrorKind::ClientGone,
                    "client stopped reading (send timeout)",
                )),
            }
        }
        _ => Err(gone(err)),
    }
}

fn gone(e: std::io::Error) -> Error {
    Error::client(ErrorKind::ClientGone, format!("write failed: {e}"))
}

/// Why a raw receive ended without data.
#[derive(Debug, PartialEq, Eq)]
pub enum RecvError {
    /// Nothing arrived before the deadline.
    Timeout,
    /// The socket failed (reset, …).
    Failed(std::io::ErrorKind),
}

/// Receives into `buf`'s spare capacity (growing it to at least `want` free bytes), waiting up
/// to `timeout` for data. `Ok(0)` is the end of the stream.
pub async fn recv_into(
    stream: &TcpStream,
    buf: &mut Vec<u8>,
    want: usize,
    timeout: Duration,
) -> Result<usize, RecvError> {
    recv_with(stream, buf, want, timeout, recv_raw).await
}

/// One non-blocking `recv(2)` into `buf`.
fn recv_raw(fd: RawFd, buf: &mut [MaybeUninit<u8>]) -> std::io::Result<usize> {
    // SAFETY: recv writes at most buf.len() bytes into the live buffer.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// [`recv_into`] with another non-blocking receive (kernel TLS reads record types too).
/// `recv` must write only the bytes it reports.
pub async fn recv_with(
    stream: &TcpStream,
    buf: &mut Vec<u8>,
    want: usize,
    timeout: Duration,
    recv: fn(RawFd, &mut [MaybeUninit<u8>]) -> std::io::Result<usize>,
) -> Result<usize, RecvError> {
    let fd = stream.as_raw_fd();
    if buf.capacity() - buf.len() < want {
        buf.reserve(want);
    }
    loop {
        match recv(fd, buf.spare_capacity_mut()) {
            Ok(n) => {
                // SAFETY: the first n bytes of the spare capacity were just initialised.
                unsafe { buf.set_len(buf.len() + n) };
                return Ok(n);
            }
            Err(err) => match err.kind() {
                std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::WouldBlock => {
                    match monoio::time::timeout(timeout, stream.readable(false)).await {
                        Ok(Ok(())) => continue,
                        Ok(Err(e)) => return Err(RecvError::Failed(e.kind())),
                        Err(_) => return Err(RecvError::Timeout),
                    }
                }
                kind => return Err(RecvError::Failed(kind)),
            },
        }
    }
}

/// Whether an idle pooled connection is still usable: nothing to read and not closed.
pub fn idle_and_open(stream: &TcpStream) -> bool {
    let mut b = 0u8;
    // SAFETY: peeks at most one byte into a live local.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut b as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    fn opt(fd: RawFd, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let rc = unsafe {
            libc::getsockopt(
                fd,
                level,
                name,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        v
    }

    /// The accept loop relies on it: connections inherit `TCP_NODELAY` from their listener
    /// (and not `O_NONBLOCK`, which each gets with one `F_SETFL`).
    #[test]
    fn accepted_sockets_inherit_nodelay_and_become_nonblocking() {
        let plain = TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = TcpStream::connect(plain.local_addr().unwrap()).unwrap();
        let (a, _) = plain.accept().unwrap();
        assert_eq!(opt(a.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY), 0);

        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        set_listener_nodelay(l.as_raw_fd()).unwrap();
        let _c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (a, _) = l.accept().unwrap();
        assert_ne!(opt(a.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY), 0);
        let flags = unsafe { libc::fcntl(a.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0);
        set_nonblocking(a.as_raw_fd()).unwrap();
        let flags = unsafe { libc::fcntl(a.as_raw_fd(), libc::F_GETFL) };
        assert_ne!(flags & libc::O_NONBLOCK, 0);
        assert_eq!(
            flags & libc::O_ACCMODE,
            libc::O_RDWR,
            "the access mode stays"
        );
    }
}

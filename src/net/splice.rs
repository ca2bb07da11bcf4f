//! Large proxied bodies moved with `splice(2)`: upstream socket → pipe → client socket, the
//! bytes never copied into userspace. Used for a `Content-Length` body between two plain TCP
//! sockets (not TLS, whose records need userspace) when at least [`MIN_BODY`] bytes are left;
//! `bench/RESULTS.md` has the measurement that chose it over copying.
//!
//! Each worker keeps its pipes for reuse (a pipe that did not end empty is closed instead).

use std::cell::RefCell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use monoio::net::TcpStream;

use crate::error::{Error, ErrorKind};
use crate::net::io::SEND_TIMEOUT;

/// Bodies with fewer bytes left than this are copied (a pipe's set-up does not pay off).
pub const MIN_BODY: u64 = 64 * 1024;
/// The pipe size asked for (the kernel's default is 64 KiB; pipe memory counts against the
/// user's `pipe-user-pages-soft`, so not more).
const PIPE_SIZE: libc::c_int = 256 * 1024;
/// After this many bytes moved without waiting, the worker's other tasks get a turn.
const YIELD_EVERY: u64 = 1024 * 1024;
/// Pipes kept per worker.
const KEEP: usize = 16;

/// One worker's pipes, kept for reuse (see [`crate::server::WorkerCtx`]).
#[derive(Debug, Default)]
pub struct Pipes(RefCell<Vec<Pipe>>);

/// Whether bodies go through [`relay`]: on, unless `ZEROCOPY_PROXY_BODY=copy` (for measuring
/// the two against each other).
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("ZEROCOPY_PROXY_BODY").map_or(true, |v| v != "copy"))
}

impl Pipes {
    /// A pipe for [`relay`]: a pooled one, or a new one; `None` when none can be had
    /// (descriptors short): the caller copies instead.
    pub fn take(&self) -> Option<Pipe> {
        if let Some(p) = self.0.try_borrow_mut().ok().and_then(|mut p| p.pop()) {
            return Some(p);
        }
        Pipe::new().ok()
    }

    /// Back to the pool (only an empty pipe).
    fn give(&self, pipe: Pipe) {
        if let Ok(mut p) = self.0.try_borrow_mut() {
            if p.len() < KEEP {
                p.push(pipe);
            }
        }
    }
}

/// A pipe between the two sockets (see [`Pipes::take`]).
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    fn new() -> std::io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two descriptors into the array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned here.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl on owned descriptors; a refused resize keeps the size the kernel gave,
        // which F_GETPIPE_SZ reports.
        let size = unsafe {
            libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE);
            libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ)
        };
        let capacity = if size > 0 { size as usize } else { 4096 };
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }
}

/// `splice(2)` without blocking: `Ok(None)` when it would block.
fn splice(from: libc::c_int, to: libc::c_int, len: usize) -> std::io::Result<Option<usize>> {
    loop {
        // SAFETY: splice between two open descriptors; no offsets (sockets and pipes).
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            std::io::ErrorKind::Interrupted => continue,
            std::io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(e),
        }
    }
}

/// Moves `len` bytes from `upstream` to `client`; adds what the client's socket took to `sent`.
/// An upstream that ends early or stays silent past `read_timeout` is an `Aborted` upstream
/// error; a client that stops reading is `ClientGone`.
pub async fn relay(
    pipes: &Pipes,
    pipe: Pipe,
    upstream: &TcpStream,
    client: &TcpStream,
    len: u64,
    read_timeout: Duration,
    sent: &mut u64,
) -> Result<(), Error> {
    let result = pump(&pipe, upstream, client, len, read_timeout, sent).await;
    match result {
        // Empty: reusable.
        Ok(()) => pipes.give(pipe),
        Err(_) => drop(pipe),
    }
    result
}

async fn pump(
    pipe: &Pipe,
    upstream: &TcpStream,
    client: &TcpStream,
    mut left: u64,
    read_timeout: Duration,
    sent: &mut u64,
) -> Result<(), Error> {
    let aborted = |what: &str| {
        Error::upstream(
            ErrorKind::Aborted,
            format!("the upstream {what} mid-response"),
        )
    };
    let gone = |e: std::io::Error| Error::client(ErrorKind::ClientGone, format!("send: {e}"));
    let (up, down) = (upstream.as_raw_fd(), client.as_raw_fd());
    let (pipe_r, pipe_w) = (pipe.read.as_raw_fd(), pipe.write.as_raw_fd());
    let mut in_pipe = 0usize;
    let mut upstream_ended = false;
    let mut since_yield = 0u64;
    while left > 0 || in_pipe > 0 {
        let mut moved = false;
        // Fill the pipe from the upstream.
        while left > 0 && in_pipe < pipe.capacity && !upstream_ended {
            let want = ((pipe.capacity - in_pipe) as u64).min(left) as usize;
            match splice(up, pipe_w, want).map_err(|_| aborted("failed"))? {
                // What is in the pipe still goes to the client; then the body ends short.
                Some(0) => upstream_ended = true,
                Some(n) => {
                    left -= n as u64;
                    in_pipe += n;
                    moved = true;
                }
                None => break,
            }
        }
        // Drain it into the client.
        while in_pipe > 0 {
            match splice(pipe_r, down, in_pipe).map_err(gone)? {
                Some(0) => return Err(gone(std::io::ErrorKind::WriteZero.into())),
                Some(n) => {
                    in_pipe -= n;
                    *sent += n as u64;
                    since_yield += n as u64;
                    moved = true;
                }
                None => break,
            }
        }
        if upstream_ended && in_pipe == 0 {
            return Err(aborted("closed"));
        }
        if moved {
            // A fast pair of sockets must not keep the worker's other connections waiting.
            if since_yield >= YIELD_EVERY {
                since_yield = 0;
                YieldOnce(false).await;
            }
            continue;
        }
        // Neither side could move: wait for the one that holds things up.
        if in_pipe > 0 {
            match monoio::time::timeout(SEND_TIMEOUT, client.writable(false)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(gone(e)),
                Err(_) => {
                    return Err(Error::client(
                        ErrorKind::ClientGone,
                        "client stopped reading (send timeout)",
                    ))
                }
            }
        } else {
            match monoio::time::timeout(read_timeout, upstream.readable(false)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(aborted("failed")),
                Err(_) => return Err(aborted("stalled")),
            }
        }
    }
    Ok(())
}

/// Returns `Pending` once (waking itself at once), so that the runtime runs its other tasks.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

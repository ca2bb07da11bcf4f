//! One client connection's lifecycle: accepted (and its TLS handshake done), then a loop of
//! waiting idle for a request (or parked without a task), reading and answering it
//! (`server/request.rs`), until it closes.
//!
//! Requests on a connection are handled strictly one after another, so pipelined requests are
//! answered in order; bytes after a head (a body, the next request) stay in the connection's
//! buffer. The snapshot is loaded per request and dropped before the next idle wait. Any error
//! becomes a response through [`crate::error::Error::status`], and the connection closes
//! whenever the framing of the stream is in doubt.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;
use monoio::net::TcpStream;

use super::park::{Parked, Parking};
use super::registry::{Registry, Woke};
use super::WorkerCtx;
use crate::config::defaults;
use crate::net::client::ClientStream;
use crate::net::io::{set_nonblocking, RecvError};
use crate::shared::{Admitted, Shared};

/// How long a closing connection keeps draining the client's input after an error.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// How much it drains at most.
const LINGER_BYTES: usize = 1024 * 1024;
/// Read size for request heads and bodies.
const READ_SIZE: usize = 16 * 1024;

/// Serves one accepted connection until it closes. The worker counted it open; this ends the
/// count.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    admitted: Admitted,
    registry: Rc<Registry>,
) {
    let (shared, worker) = (admitted.shared.clone(), admitted.worker);
    if let Err(e) = set_nonblocking(stream.as_raw_fd()) {
        log::warn!("{peer}: cannot make the socket non-blocking: {e}");
        return;
    }
    if !registry.nodelay_inherited.get() {
        let _ = stream.set_nodelay(true);
    }
    let (tls, limits, proxy) = {
        let snapshot = shared.snapshot.load();
        let listener = shared.listener_in(admitted.listener, &snapshot);
        let tls = listener
            .filter(|l| l.tls)
            .and_then(|l| snapshot.tls_for(l.http2).cloned());
        let proxy = listener
            .and_then(|l| l.proxy_protocol.as_ref())
            .map(|p| (p.versions, p.from.contains(peer.ip())));
        (tls, snapshot.head_limits(), proxy)
    };
    // The PROXY header, the handshake and the first request head must all be done within the
    // header timeout.
    let deadline = Instant::now() + limits.header_timeout;
    // Behind a load balancer, the client is the address its PROXY header names.
    let peer = match proxy {
        None => peer,
        Some((_, false)) => {
            log::debug!("{peer}: not in proxy_protocol_from, on a listener that requires a PROXY header; closed");
            shared.listeners[admitted.listener].refuse();
            return;
        }
        Some((versions, true)) => {
            // Boxed, as everything below that a connection does once: this task is what an
            // idle connection holds for its whole life, so it is kept to what every state
            // needs.
            match Box::pin(crate::net::proxy_header::read(&stream, versions, deadline)).await {
                Ok(source) => source.unwrap_or(peer),
                Err(why) => {
                    log::debug!("{peer}: {why}; closed");
                    shared.listeners[admitted.listener].refuse();
                    return;
                }
            }
        }
    };
    let (client, deadline) = match tls {
        None => (ClientStream::plain(stream), deadline),
        // Boxed, like the request below: a handshake's state is not kept for the connection's
        // life.
        Some(config) => {
            match Box::pin(super::tls::accept_tls(
                stream, peer, config, deadline, &shared, worker,
            ))
            .await
            {
                // HTTP/2, chosen by ALPN: its streams may be for any name the connection's
                // certificate covers.
                Some(h) if h.h2 => {
                    let names = h.sni.and_then(|sni| {
                        let cert = shared
                            .snapshot
                            .load()
                            .certificates
                            .as_ref()?
                            .choose(Some(&sni))?;
                        Some(super::h2::Names::new(sni, cert))
                    });
                    drop(shared);
                    let ctx = registry.ctx.clone();
                    // Boxed: an HTTP/2 connection's state (several KiB) is not every
                    // connection's task size.
                    let h2 = http2(h.client, Vec::new(), peer, admitted, ctx, names);
                    return Box::pin(h2).await;
                }
                // The first request head gets a header timeout of its own.
                Some(h) => (h.client, Instant::now() + limits.header_timeout),
                None => return,
            }
        }
    };
    drop(shared);
    connection(client, peer, admitted, registry, deadline, true, false).await;
}

/// Gives a parked connection with bytes to read (or a hang-up) a task again, from the accept
/// loop's side: it reads its next request as if it had never parked.
pub fn resume(parked: Parked, registry: &Rc<Registry>) {
    let Parked {
        fd,
        layer,
        peer,
        admitted,
        deadline,
        first,
    } = parked;
    match TcpStream::from_std(std::net::TcpStream::from(fd)) {
        Ok(stream) => {
            let client = ClientStream::resumed(stream, layer);
            monoio::spawn(connection(
                client,
                peer,
                admitted,
                registry.clone(),
                deadline,
                first,
                true,
            ));
        }
        // Closed (by the drop): as if its idle timeout had passed.
        Err(e) => log::debug!("{peer}: cannot resume a parked connection: {e}"),
    }
}

/// Serves a connection from its first (or next) wait for a request until it closes or parks.
/// The connection waits for a request until `deadline`; with `first`, that is also when the
/// head of its first request must be complete. A `resumed` connection (back from parking)
/// has bytes to read, or a hang-up, and reads at once.
async fn connection(
    client: ClientStream,
    peer: SocketAddr,
    admitted: Admitted,
    registry: Rc<Registry>,
    deadline: Instant,
    first: bool,
    resumed: bool,
) {
    let (shared, worker, listener) = (admitted.shared.clone(), admitted.worker, admitted.listener);
    let (id, idle) = registry.add(client.tcp().as_raw_fd());
    idle.set_parkable(true);
    let mut open = OpenGuard {
        admitted: Some(admitted),
        registry,
        id,
    };
    let mut conn = Conn {
        client,
        peer,
        worker,
        listener,
        shared,
        idle,
        buf: Vec::new(),
        ctx: open.registry.ctx.clone(),
        aborted: false,
        readable: false,
        h2c: false,
    };
    let mut state = State::start(deadline, first, resumed);
    loop {
        // Boxed: a connection waiting for its next request is this future, kept small.
        state = Box::pin(conn.run(state)).await;
        let State::Parking {
            deadline: until,
            first: is_first,
        } = state
        else {
            break;
        };
        if let Some(parking) = open.registry.parking.clone() {
            match park(&mut conn, &mut open, &parking, until, is_first) {
                // The table has it: this task and its stream (the original socket) end.
                Ok(()) => return,
                // Out of descriptors (EMFILE), or the epoll set refused it: the connection
                // waits in its task instead.
                Err(e) => {
                    log::debug!("{peer}: cannot park ({e}); the connection keeps its task")
                }
            }
        }
        conn.idle.set_parkable(false);
        state = State::start(until, is_first, false);
    }
    if conn.h2c {
        // Boxed: an HTTP/2 connection's state is its own.
        if let Some(admitted) = open.admitted.take() {
            let ctx = conn.ctx.clone();
            drop(open);
            Box::pin(http2(conn.client, conn.buf, conn.peer, admitted, ctx, None)).await;
        }
        return;
    }
    // A TLS connection ends with close_notify, so that the client can tell the end from a
    // truncation (sent if the socket takes it now; a plain socket just closes). Not after a
    // response that was cut off: that must look cut off.
    if conn.client.is_tls() && !conn.aborted {
        conn.client.shutdown_write();
    }
}

/// Serves the rest of a connection as HTTP/2 ([`super::h2`]), `replay` (bytes it sent
/// already) first.
async fn http2(
    client: ClientStream,
    replay: Vec<u8>,
    peer: SocketAddr,
    admitted: Admitted,
    ctx: Rc<WorkerCtx>,
    names: Option<super::h2::Names>,
) {
    let tls = client.is_tls();
    match client.into_poll(replay) {
        Ok(io) => super::h2::serve(io, peer, admitted, ctx, tls, names).await,
        Err(e) => log::warn!("{peer}: cannot serve HTTP/2 on this socket: {e}"),
    }
}

/// Parks an idle connection (see [`super::park`]): a duplicate of its socket, its TLS session
/// if it has one, and its place in the open counts move to the parking table; the caller then
/// ends the task, which closes the original socket. On failure nothing has moved.
fn park(
    conn: &mut Conn,
    open: &mut OpenGuard,
    parking: &Parking,
    deadline: Instant,
    first: bool,
) -> std::io::Result<()> {
    // A duplicate: monoio may still hold the original in a cancelled readiness wait, and
    // closes it when that is done.
    let fd = crate::net::sys::dup_cloexec(crate::net::sys::socket_fd(conn.client.tcp()))?;
    let Some(layer) = conn.client.park() else {
        return Err(std::io::Error::other("decrypted bytes wait to be read"));
    };
    let Some(admitted) = open.admitted.take() else {
        conn.client.unpark(layer);
        return Err(std::io::Error::other("no open-count guard"));
    };
    let parked = Parked {
        fd,
        layer,
        peer: conn.peer,
        admitted,
        deadline,
        first,
    };
    parking.park(parked).map_err(|(p, e)| {
        open.admitted = Some(p.admitted);
        conn.client.unpark(p.layer);
        e
    })
}

/// Ends a connection's registration and open count, however the task ends.
struct OpenGuard {
    /// Given back after the registry entry is gone (fields drop after `drop`); taken when the
    /// connection parks.
    admitted: Option<Admitted>,
    registry: Rc<Registry>,
    id: u64,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

pub(super) struct Conn {
    pub(super) client: ClientStream,
    pub(super) peer: SocketAddr,
    pub(super) worker: usize,
    /// The listener it came through (an index into [`Shared::listeners`]).
    pub(super) listener: usize,
    pub(super) shared: Arc<Shared>,
    /// The deadline while waiting for the next request, for the worker's idle sweep (and so
    /// that a drain can wake this connection).
    pub(super) idle: super::registry::Idle,
    /// Bytes read and not yet consumed: the rest of a body, pipelined requests.
    pub(super) buf: Vec<u8>,
    /// The worker's state (buffers, file cache, upstream pool, pipes).
    pub(super) ctx: Rc<WorkerCtx>,
    /// A response was cut off (or the client vanished): end without `close_notify`.
    pub(super) aborted: bool,
    /// The socket just woke readable: the next read of a plain connection takes the bytes
    /// with one `recv(2)` at once, without a ring round trip or a timer.
    pub(super) readable: bool,
    /// The client began with HTTP/2's preface (h2c prior knowledge): the connection moves to
    /// HTTP/2 with the bytes in `buf`.
    pub(super) h2c: bool,
}

/// What reading more bytes gave.
pub(super) enum Read {
    Data,
    Eof,
    Timeout,
}

/// Where a connection is in its life. [`Conn::run`] moves it from state to state until it
/// parks or closes; a request's own phases are in [`super::request`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Just accepted (or back from a failed park before its first request): a plain
    /// connection looks for its first request at once — it has usually arrived by the time the
    /// accept completes. Its head must be complete by `deadline`.
    Accepted { deadline: Instant },
    /// Back from the parking table: the bytes (or the hang-up) that woke it are read at once,
    /// also in a drain. `first`: the deadline of its first request's head, if it had none yet.
    Resumed { first: Option<Instant> },
    /// Waiting for the next request until `deadline`, holding no buffer, snapshot or timer:
    /// the worker's idle sweep ends the wait at the deadline (a drain at once), or asks the
    /// connection to park when it has waited a while.
    Idle {
        deadline: Instant,
        first: Option<Instant>,
    },
    /// Bytes are here: a request is read and answered ([`Conn::request`]); its head must be
    /// complete by `head_deadline` (by default `header_timeout` from its first byte).
    Request { head_deadline: Option<Instant> },
    /// Idle long enough to give up its task: it moves to the parking table and waits there
    /// until `deadline` (`first`: for its first request, whose head must be complete by then).
    Parking { deadline: Instant, first: bool },
    /// Done: it closes (after `close_notify` on TLS).
    Closing,
}

impl State {
    /// Where a connection starts: waiting for a request until `deadline` (with `first`, also
    /// the deadline of its first request's head); `resumed` from parking, it reads at once.
    fn start(deadline: Instant, first: bool, resumed: bool) -> Self {
        match (resumed, first) {
            (true, _) => Self::Resumed {
                first: first.then_some(deadline),
            },
            (false, true) => Self::Accepted { deadline },
            (false, false) => Self::Idle {
                deadline,
                first: None,
            },
        }
    }
}

impl Conn {
    /// Runs the connection from `state` until it parks ([`State::Parking`]) or closes
    /// ([`State::Closing`]).
    async fn run(&mut self, mut state: State) -> State {
        loop {
            state = match state {
                State::Accepted { deadline } if !self.client.is_tls() && self.look() => {
                    // The next wait gets a keep-alive deadline of its own.
                    State::Request {
                        head_deadline: Some(deadline),
                    }
                }
                State::Accepted { deadline } => State::Idle {
                    deadline,
                    first: Some(deadline),
                },
                State::Resumed { first } => {
                    self.buf = self.ctx.buffers.take();
                    self.readable = true;
                    State::Request {
                        head_deadline: first,
                    }
                }
                State::Idle { deadline, first } => self.idle(deadline, first).await,
                State::Request { head_deadline } => {
                    // Boxed: the state of a request in progress (its parse, a proxied
                    // exchange, a file, an error answer) lives on the heap only while there is
                    // one, and the task of an idle connection stays small.
                    if !Box::pin(self.request(head_deadline)).await {
                        State::Closing
                    } else if self.buf.is_empty() {
                        State::Idle {
                            deadline: Instant::now() + defaults::KEEPALIVE_IDLE_TIMEOUT,
                            first: None,
                        }
                    } else {
                        // Pipelined: the next request is here already.
                        State::Request {
                            head_deadline: None,
                        }
                    }
                }
                State::Parking { .. } | State::Closing => return state,
            };
        }
    }

    /// Waits idle for the next request until `deadline` (see [`State::Idle`]).
    async fn idle(&mut self, deadline: Instant, first: Option<Instant>) -> State {
        // In a drain, too: a request may be on its way; the worker ends idle waits after a
        // short grace (`worker::DRAIN_IDLE_GRACE`).
        self.ctx.buffers.give(std::mem::take(&mut self.buf));
        self.idle.begin(deadline);
        let woke = self.idle.wait(self.client.wait_readable()).await;
        // Still on: bytes arrived (whatever the clock says now). Ended: the sweep (past the
        // deadline) or a drain ended the wait.
        let swept = !self.idle.end();
        let ready = match woke {
            Woke::Park if !swept => {
                return State::Parking {
                    deadline,
                    first: first.is_some(),
                }
            }
            // Asked to park, then swept by a drain: a request may have come meanwhile.
            Woke::Park => true,
            Woke::Ready(ready) => ready,
        };
        if !ready || (swept && Instant::now() >= deadline) {
            return State::Closing;
        }
        self.buf = self.ctx.buffers.take();
        self.readable = true;
        State::Request {
            head_deadline: first,
        }
    }

    /// One `recv` without waiting, into a pooled buffer: `true` when it found bytes (or the
    /// end of the stream, which the next read then sees); `false` when there were none, and
    /// the buffer went back.
    fn look(&mut self) -> bool {
        let mut buf = self.ctx.buffers.take();
        match crate::net::io::recv_now(self.client.tcp_mut(), &mut buf, READ_SIZE) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.ctx.buffers.give(buf);
                false
            }
            Ok(n) => {
                self.buf = buf;
                self.readable = n == 0;
                true
            }
            Err(_) => {
                self.buf = buf;
                self.readable = true;
                true
            }
        }
    }

    /// Reads more bytes into the buffer, until `deadline`.
    pub(super) async fn read_more(&mut self, deadline: Instant) -> Read {
        if std::mem::take(&mut self.readable) && !self.client.is_tls() {
            match crate::net::io::recv_now(self.client.tcp_mut(), &mut self.buf, READ_SIZE) {
                Ok(0) => return Read::Eof,
                Ok(_) => return Read::Data,
                // Nothing after all (or interrupted): wait as usual.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => return Read::Eof,
            }
        }
        read_more(&mut self.client, &mut self.buf, deadline).await
    }

    /// Drains the client's input for a while after an error response on a closing connection
    /// (see [`linger`]).
    pub(super) async fn linger(&mut self) {
        linger(&mut self.client, &mut self.buf).await;
    }
}

/// Reads more bytes into `buf`, until `deadline`.
async fn read_more(client: &mut ClientStream, buf: &mut Vec<u8>, deadline: Instant) -> Read {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Read::Timeout;
        }
        if client.is_tls() {
            return match client.recv_into(buf, READ_SIZE, left).await {
                Ok(0) | Err(RecvError::Failed(_)) => Read::Eof,
                Ok(_) => Read::Data,
                Err(RecvError::Timeout) => Read::Timeout,
            };
        }
        let mut owned = std::mem::take(buf);
        if owned.capacity() - owned.len() < 4096 {
            owned.reserve(READ_SIZE);
        }
        // monoio reads into a Vec from index 0: read into its spare capacity instead.
        let filled = owned.len();
        let read = client.tcp_mut().read(owned.slice_mut(filled..));
        let (res, owned) = match monoio::time::timeout(left, read).await {
            Ok(r) => r,
            Err(_) => return Read::Timeout,
        };
        *buf = owned.into_inner();
        match res {
            Ok(0) => return Read::Eof,
            Ok(_) => return Read::Data,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if !client
                    .readable(deadline.saturating_duration_since(Instant::now()))
                    .await
                {
                    return if Instant::now() >= deadline {
                        Read::Timeout
                    } else {
                        Read::Eof
                    };
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Read::Eof,
        }
    }
}

/// Closes after an error response without destroying it: closing a socket with unread input
/// makes the kernel send a reset, which can discard the response before the client reads it.
/// So: shut down our side, then read and drop what the client still sends, for a bounded time
/// and amount (nginx's lingering close).
pub(super) async fn linger(client: &mut ClientStream, buf: &mut Vec<u8>) {
    client.shutdown_write();
    let deadline = Instant::now() + LINGER_TIME;
    let mut drained = 0;
    while drained < LINGER_BYTES {
        buf.clear();
        match read_more(client, buf, deadline).await {
            Read::Data => drained += buf.len(),
            Read::Eof | Read::Timeout => break,
        }
    }
}

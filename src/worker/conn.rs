//! One client connection: read a head, route it, answer it, repeat.
//!
//! Requests on a connection are handled strictly one after another, so pipelined requests are
//! answered in order; bytes after a head (a body, the next request) stay in the connection's
//! buffer. The snapshot is loaded per request and dropped before the next idle wait. Any error
//! becomes a response through [`Error::status`], and the connection closes whenever the framing
//! of the stream is in doubt.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;
use monoio::net::TcpStream;

use super::park::{Parked, Parking};
use super::{Admitted, Registry, Shared, Woke, WorkerStats};
use crate::access_log;
use crate::config::{defaults, Backend, RouteSecurity};
use crate::error::{Error, ErrorKind, Side};
use crate::http::h1::body::{transcode, BodyReader, BodyWriter, Framing};
use crate::http::h1::request as head;
use crate::http::request::{BodyKind, RequestHead};
use crate::http::response::{reason, ResponseHead};
use crate::http::{path, Method};
use crate::limiter::Verdict;
use crate::net::client::{ClientStream, Meter};
use crate::net::io::{set_nonblocking, RecvError};
use crate::proxy;
use crate::route::Target;
use crate::snapshot::Snapshot;
use crate::tls::RecordLayer;

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
    let (tls, limits) = {
        let snapshot = shared.snapshot.load();
        (snapshot.tls.clone(), snapshot.head_limits())
    };
    // The handshake, like the first request head, must be done within the header timeout.
    let deadline = Instant::now() + limits.header_timeout;
    let (client, deadline) = match tls {
        None => (ClientStream::plain(stream), deadline),
        // Boxed, like the request below: a handshake's state is not kept for the connection's
        // life.
        Some(config) => {
            match Box::pin(accept_tls(stream, peer, config, deadline, &shared, worker)).await {
                // The first request head gets a header timeout of its own.
                Some(client) => (client, Instant::now() + limits.header_timeout),
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
        peer,
        admitted,
        deadline,
        first,
    } = parked;
    match TcpStream::from_std(std::net::TcpStream::from(fd)) {
        Ok(stream) => {
            let client = ClientStream::plain(stream);
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
    let (shared, worker) = (admitted.shared.clone(), admitted.worker);
    let (id, idle) = registry.add(client.tcp().as_raw_fd());
    idle.set_parkable(!client.is_tls());
    let mut open = OpenGuard {
        admitted: Some(admitted),
        registry,
        id,
    };
    let mut conn = Conn {
        client,
        peer,
        worker,
        shared,
        idle,
        buf: Vec::new(),
        aborted: false,
        readable: false,
    };
    let (mut deadline, mut first, mut resumed) = (deadline, first, resumed);
    loop {
        // Boxed: a connection waiting for its next request is this future, kept small.
        let end = Box::pin(conn.run(deadline, first, resumed)).await;
        let End::Park {
            deadline: until,
            first: is_first,
        } = end
        else {
            break;
        };
        if let Some(parking) = open.registry.parking.clone() {
            match park(&conn, &mut open, &parking, until, is_first) {
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
        (deadline, first, resumed) = (until, is_first, false);
    }
    // A TLS connection ends with close_notify, so that the client can tell the end from a
    // truncation (sent if the socket takes it now; a plain socket just closes). Not after a
    // response that was cut off: that must look cut off.
    if conn.client.is_tls() && !conn.aborted {
        conn.client.shutdown_write();
    }
}

/// Parks an idle plain connection (see [`super::park`]): a duplicate of its socket and its
/// place in the open counts move to the parking table; the caller then ends the task, which
/// closes the original socket. On failure nothing has moved.
fn park(
    conn: &Conn,
    open: &mut OpenGuard,
    parking: &Parking,
    deadline: Instant,
    first: bool,
) -> std::io::Result<()> {
    // A duplicate: monoio may still hold the original in a cancelled readiness wait, and
    // closes it when that is done.
    // SAFETY: dup of the open socket.
    let fd = unsafe { libc::fcntl(conn.client.tcp().as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let Some(admitted) = open.admitted.take() else {
        return Err(std::io::Error::other("no open-count guard"));
    };
    let parked = Parked {
        // SAFETY: a new descriptor that nothing else owns.
        fd: unsafe { OwnedFd::from_raw_fd(fd) },
        peer: conn.peer,
        admitted,
        deadline,
        first,
    };
    parking.park(parked).map_err(|(p, e)| {
        open.admitted = Some(p.admitted);
        e
    })
}

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Completes the TLS handshake of a connection on a TLS listener, by `deadline`. A client that
/// speaks plain HTTP to the port gets a plain-text 400 saying so, and the connection closes.
///
/// Where the records then run follows the start-up [`RecordLayer`]: with kernel TLS the keys
/// move into the socket after the handshake, falling back to rustls or closing the connection
/// when the kernel cannot take this one, as `ktls_fallback_enabled` says.
async fn accept_tls(
    stream: TcpStream,
    peer: SocketAddr,
    config: Arc<rustls::ServerConfig>,
    deadline: Instant,
    shared: &Shared,
    worker: usize,
) -> Option<ClientStream> {
    let stats = &shared.workers[worker];
    if let RecordLayer::Refuse(_) = shared.record_layer {
        // Kernel TLS is unavailable and the operator asked for no userspace fallback (the
        // start-up log said so).
        log::debug!("{peer}: TLS connection refused: kernel TLS is unavailable");
        WorkerStats::bump(&stats.ktls_refused);
        return None;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    if !matches!(
        monoio::time::timeout(left, stream.readable(false)).await,
        Ok(Ok(()))
    ) {
        return None;
    }
    let mut first = 0u8;
    // SAFETY: peeks at most one byte into a live local.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut first as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n <= 0 {
        return None;
    }
    if first != TLS_HANDSHAKE_RECORD {
        log::debug!("{peer}: plain HTTP (or not TLS) on the TLS port; answering 400 and closing");
        if first.is_ascii_uppercase() {
            let body = "400 Bad Request: this port speaks HTTPS\n";
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let mut client = ClientStream::plain(stream);
            if client.send(answer.as_bytes(), false).await.is_ok() {
                linger(&mut client, &mut Vec::new()).await;
            }
        }
        return None;
    }
    let session = match rustls::ServerConnection::new(config) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("{peer}: cannot start a TLS session: {e}");
            return None;
        }
    };
    let mut session = Box::new(session);
    let done = match shared.record_layer {
        #[cfg(feature = "ktls")]
        RecordLayer::Kernel { .. } => {
            crate::net::tls::handshake_whole_records(&stream, &mut session, deadline).await
        }
        _ => crate::net::tls::handshake(&stream, &mut session, deadline).await,
    };
    if let Err(e) = done {
        log::debug!("{peer}: {e}");
        return None;
    }
    WorkerStats::bump(&stats.tls_handshakes);
    match &shared.record_layer {
        #[cfg(feature = "ktls")]
        RecordLayer::Kernel { support, fallback } => {
            use crate::tls::ktls::{offload, Offload};
            match offload(stream.as_raw_fd(), session, support) {
                Offload::Kernel { early } => {
                    WorkerStats::bump(&stats.ktls);
                    Some(ClientStream::kernel_tls(stream, early))
                }
                Offload::Userspace(session, why) if *fallback => {
                    log::debug!("{peer}: TLS stays in userspace: {why}");
                    WorkerStats::bump(&stats.ktls_fallback);
                    Some(ClientStream::tls(stream, session))
                }
                Offload::Userspace(_, why) | Offload::Failed(why) => {
                    log::debug!("{peer}: TLS connection closed: kernel TLS failed: {why}");
                    WorkerStats::bump(&stats.ktls_refused);
                    None
                }
            }
        }
        RecordLayer::Fallback(_) => {
            WorkerStats::bump(&stats.ktls_fallback);
            Some(ClientStream::tls(stream, session))
        }
        _ => Some(ClientStream::tls(stream, session)),
    }
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

/// Counts a request in flight from its parsed head to the end of its response.
struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    fn new(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Conn {
    client: ClientStream,
    peer: SocketAddr,
    worker: usize,
    shared: Arc<Shared>,
    /// The deadline while waiting for the next request, for the worker's idle sweep (and so
    /// that a drain can wake this connection).
    idle: super::Idle,
    /// Bytes read and not yet consumed: the rest of a body, pipelined requests.
    buf: Vec<u8>,
    /// A response was cut off (or the client vanished): end without `close_notify`.
    aborted: bool,
    /// The socket just woke readable: the next read of a plain connection takes the bytes
    /// with one `recv(2)` at once, without a ring round trip or a timer.
    readable: bool,
}

/// The sizes of a parsed head, measured as the limits count them.
#[derive(Clone, Copy, Debug)]
struct HeadSizes {
    /// The request line, without leading empty lines or its CRLF.
    request_line: usize,
    /// The header fields and the blank line after them.
    header_section: usize,
}

impl HeadSizes {
    fn measure(head: &[u8]) -> Self {
        let mut start = 0;
        while head.get(start..start + 2) == Some(b"\r\n") {
            start += 2;
        }
        let rest = head.get(start..).unwrap_or_default();
        let line = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or(rest.len());
        Self {
            request_line: line,
            header_section: rest.len().saturating_sub(line + 2),
        }
    }
}

/// What reading more bytes gave.
enum Read {
    Data,
    Eof,
    Timeout,
}

/// What a request's handling learnt for its counters and access log line.
#[derive(Debug, Default)]
struct Trace {
    /// The matched route's place in the snapshot's router.
    route: Option<usize>,
    /// The client address the route's policy applied to (see
    /// [`crate::security::client_address`]); the TCP peer until a route is known.
    client: Option<std::net::IpAddr>,
    upstream: proxy::UpstreamTrace,
}

/// How a connection's task ended.
enum End {
    Close,
    /// The idle sweep asked it to park; it waits for a request until `deadline` (`first`: its
    /// first request, whose head must be complete by then).
    Park {
        deadline: Instant,
        first: bool,
    },
}

/// How a request ended when it did not fail.
enum Outcome {
    /// The response is complete; the connection may carry another request.
    Done,
    /// The response is complete, and the connection must close (its framing said so).
    Close,
}

impl Conn {
    /// Waits for a request until `deadline` (with `first`, also the deadline of the first
    /// request's head), and serves requests until the connection closes or parks.
    async fn run(&mut self, deadline: Instant, first: bool, resumed: bool) -> End {
        let mut first_deadline = first.then_some(deadline);
        // A resumed connection reads first; its next wait gets a fresh keep-alive deadline.
        let mut idle_deadline = (!resumed).then_some(deadline);
        // Back from parking: the bytes (or the hang-up) that woke it are read at once, also
        // in a drain.
        let mut read_at_once = resumed;
        // A new plain connection's first request has usually arrived by the time the accept
        // completes: look before waiting (when nothing is there, that cost one recv).
        let mut look_first = first && !resumed && !self.client.is_tls();
        loop {
            if std::mem::take(&mut read_at_once) {
                self.buf = crate::net::buffers::take();
                self.readable = true;
            } else if std::mem::take(&mut look_first) && self.look() {
                // Its deadline is the head's, below; the next wait gets a keep-alive one.
                idle_deadline = None;
            } else if self.buf.is_empty() {
                // Idle: hold no snapshot and no buffer while waiting for the next request, and
                // no timer either: the worker's idle sweep ends the wait at the deadline (and
                // a drain that starts meanwhile ends it at once), or asks the connection to
                // park when it has waited a while.
                if self.shared.is_draining() {
                    return End::Close;
                }
                let deadline = idle_deadline
                    .take()
                    .unwrap_or_else(|| Instant::now() + defaults::KEEPALIVE_IDLE_TIMEOUT);
                crate::net::buffers::give(std::mem::take(&mut self.buf));
                self.idle.begin(deadline);
                let woke = self.idle.wait(self.client.wait_readable()).await;
                // Still on: bytes arrived (whatever the clock says now). Ended: the sweep
                // (past the deadline) or a drain ended the wait.
                let swept = !self.idle.end();
                let ready = match woke {
                    Woke::Park if !swept => {
                        return End::Park {
                            deadline,
                            first: first_deadline.is_some(),
                        }
                    }
                    // Asked to park, then swept by a drain: a request may have come meanwhile.
                    Woke::Park => true,
                    Woke::Ready(ready) => ready,
                };
                if !ready || (swept && Instant::now() >= deadline) {
                    return End::Close;
                }
                self.buf = crate::net::buffers::take();
                self.readable = true;
            }
            // Boxed: the state of a request in progress (its parse, a proxied exchange, a
            // file, an error answer) lives on the heap only while there is one, and the task of
            // an idle connection stays small.
            if !Box::pin(self.request(first_deadline.take())).await {
                return End::Close;
            }
        }
    }

    /// Reads one request head (complete by `deadline`, by default `header_timeout` from now)
    /// and answers it; `false` when the connection is to close.
    async fn request(&mut self, deadline: Option<Instant>) -> bool {
        let limits = self.shared.snapshot.load().head_limits();
        // The request's clock starts at its first byte (or when a pipelined one is next).
        let started = Instant::now();
        let deadline = deadline.unwrap_or(started + limits.header_timeout);
        self.client.meter = Meter::default();
        // Parse when a line may have ended (or the limits may be crossed), not on every byte a
        // slow client trickles in.
        let mut scanned = 0;
        let (req, consumed) = loop {
            let fresh = self.buf.get(scanned..).unwrap_or_default();
            if fresh.contains(&b'\n') || self.buf.len() > limits.max_header_size {
                match head::parse(&self.buf, limits.max_header_size) {
                    Ok(Some(parsed)) => break parsed,
                    Ok(None) => {}
                    Err(e) => {
                        let linger = self.fail(Error::from(e), false, None).await;
                        self.finish(None, None, &Trace::default(), started);
                        if linger {
                            self.linger().await;
                        }
                        return false;
                    }
                }
            }
            scanned = self.buf.len();
            // A read that times out takes its buffer with it: note first whether this request
            // has begun.
            let begun = !self.buf.is_empty();
            match self.read_more(deadline).await {
                Read::Data => {}
                Read::Eof => return false,
                Read::Timeout => {
                    if begun {
                        let e = Error::client(ErrorKind::ClientTimeout, "request head too slow");
                        let linger = self.fail(e, false, None).await;
                        self.finish(None, None, &Trace::default(), started);
                        if linger {
                            self.linger().await;
                        }
                    }
                    return false;
                }
            }
        };
        let sizes = HeadSizes::measure(&self.buf[..consumed]);
        self.buf.drain(..consumed);
        let shared = self.shared.clone();
        let _in_flight = InFlight::new(&shared.workers[self.worker].in_flight);
        let mut body_pending = !matches!(req.body, BodyKind::None | BodyKind::Length(0));
        let snapshot = self.shared.snapshot.load_full();
        let mut trace = Trace::default();
        let result = self
            .handle(&req, &snapshot, sizes, &mut body_pending, &mut trace)
            .await;
        let keep_alive = self.keep_alive(&req, body_pending);
        // A response that went out while the client may still be sending its body (an
        // upstream that answered early) closes with a lingering close, so that the client
        // reads it instead of a reset.
        let (go_on, linger) = match result {
            Ok(Outcome::Done) => (keep_alive, body_pending),
            Ok(Outcome::Close) => (false, body_pending),
            Err(e) => {
                let close = !keep_alive || e.must_close();
                (!close, self.fail(e, !close, Some(&req)).await)
            }
        };
        // Counted and logged before any lingering close: that is not the request's time.
        self.finish(Some(&req), Some(&snapshot), &trace, started);
        drop(snapshot);
        if linger {
            self.linger().await;
        }
        go_on
    }

    /// Routes and answers one request. `body_pending` is cleared once the body is consumed.
    async fn handle(
        &mut self,
        req: &RequestHead,
        snapshot: &Snapshot,
        sizes: HeadSizes,
        body_pending: &mut bool,
        trace: &mut Trace,
    ) -> Result<Outcome, Error> {
        if req.path == "*" {
            // `OPTIONS *`: a question about the server, not a resource.
            let mut h = ResponseHead::new(200);
            h.header("Allow", "GET, HEAD, OPTIONS").content_length(0);
            crate::files::connection_header(&mut h, req, self.keep_alive(req, *body_pending));
            self.client.send(&h.finish(), false).await?;
            return Ok(Outcome::Done);
        }
        let path = path::normalize(&req.path)
            .map_err(|e| Error::client(ErrorKind::BadRequest, e.reason))?;
        let host = req.host.as_deref().unwrap_or("");
        let m = snapshot
            .router
            .lookup(host, &path)
            .ok_or_else(|| Error::client(ErrorKind::NotFound, "no route for this host and path"))?;
        trace.route = Some(m.index);
        let security = &m.entry.route.security;
        // Behind trusted proxies, the client is the first untrusted hop of their chain.
        let client =
            crate::security::client_address(self.peer.ip(), req, &security.trusted_proxies);
        trace.client = Some(client);
        // Access policy, before anything of the body is read: addresses (deny first), then
        // methods.
        if !security.allows_ip(client) {
            return Err(Error::client(
                ErrorKind::Forbidden,
                "client address not allowed",
            ));
        }
        if let Some(methods) = &security.allowed_methods {
            if !methods.contains(&req.method) {
                return Err(Error::client(
                    ErrorKind::MethodNotAllowed(methods.allow_header()),
                    "method not allowed on this route",
                ));
            }
        }
        // The rate limit counts the requests that policy lets through, before any body.
        let limit = security.rate_limit_requests_per_min;
        if limit > 0 {
            let route = &m.entry.route.origin.key_path;
            let key = crate::security::limiter_key(client, security.rate_limit_ipv6_prefix);
            let verdict = self.shared.limiter.check(route, key, limit, Instant::now());
            if let Verdict::Deny { retry_after_secs } = verdict {
                return Err(Error::client(
                    ErrorKind::TooManyRequests(retry_after_secs),
                    "over the route's rate_limit_requests_per_min",
                ));
            }
        }
        if sizes.request_line > security.max_request_header_size {
            return Err(Error::client(
                ErrorKind::UriTooLong,
                "request line over the route's max_request_header_size",
            ));
        }
        if sizes.header_section > security.max_request_header_size {
            return Err(Error::client(
                ErrorKind::HeaderTooLarge,
                "header section over the route's max_request_header_size",
            ));
        }
        match &m.entry.route.backend {
            Backend::File(f) => {
                if !matches!(req.method, Method::Get | Method::Head) {
                    return Err(Error::client(
                        ErrorKind::MethodNotAllowed("GET, HEAD".into()),
                        "a File route serves GET and HEAD",
                    ));
                }
                // A client that waits for 100-continue gets the final answer instead, and the
                // connection closes (body_pending stays set): a File route has no use for it.
                if !req.expects_continue() {
                    self.discard_body(req, security).await?;
                    *body_pending = false;
                }
                let keep_alive = self.keep_alive(req, *body_pending);
                let stats = &self.shared.workers[self.worker];
                let cache = &snapshot.config.performance.file_cache;
                crate::files::serve(&mut self.client, req, &m, f, cache, stats, keep_alive).await?;
                Ok(Outcome::Done)
            }
            Backend::Proxy(p) => {
                let Some(upstream) = &m.entry.upstream else {
                    return Err(Error::internal("a Proxy route without a resolved upstream"));
                };
                let Target::Upstream(upstream_path) = m.target() else {
                    return Err(Error::internal("a Proxy route without an upstream path"));
                };
                let keep_alive = self.keep_alive(req, false);
                let tls = self.client.is_tls();
                let exchange = proxy::Exchange {
                    client: &mut self.client,
                    tls,
                    buf: &mut self.buf,
                    peer: self.peer,
                    req,
                    backend: p,
                    upstream,
                    security,
                    path: &upstream_path,
                    keep_alive,
                    worker: self.worker,
                };
                match proxy::forward(exchange, body_pending, &mut trace.upstream).await? {
                    proxy::Done::KeepAlive => Ok(Outcome::Done),
                    proxy::Done::Close => Ok(Outcome::Close),
                }
            }
        }
    }

    /// Whether the connection goes on after this request: the client wants it, its body was
    /// consumed, and the daemon is not draining (a response in progress then ends with
    /// `Connection: close`).
    fn keep_alive(&self, req: &RequestHead, body_pending: bool) -> bool {
        req.keep_alive && !body_pending && !self.shared.is_draining()
    }

    /// Reads and drops a request body that the route does not use, within the route's size
    /// limits and body timeout, so that the next pipelined request parses.
    async fn discard_body(&mut self, req: &RequestHead, sec: &RouteSecurity) -> Result<(), Error> {
        let too_large = || Error::client(ErrorKind::BodyTooLarge, "request body too large");
        let timeout = sec.client_body_timeout;
        if let BodyKind::Length(n) = req.body {
            if n > sec.max_request_body_size {
                return Err(too_large());
            }
        }
        let framing = Framing::of_request(req.body);
        let mut reader = BodyReader::new(framing);
        loop {
            // Everything buffered is decoded, then dropped in one go.
            let t = transcode(&mut reader, BodyWriter::Discard, &self.buf, &mut Vec::new())
                .map_err(|e| Error::client(ErrorKind::BadRequest, e.reason))?;
            if framing == Framing::Chunked && reader.body_bytes() > sec.max_chunked_body_size {
                return Err(too_large());
            }
            self.buf.drain(..t.consumed);
            if t.done {
                return Ok(());
            }
            self.read_body(timeout).await?;
        }
    }

    async fn read_body(&mut self, timeout: Duration) -> Result<(), Error> {
        match self.read_more(Instant::now() + timeout).await {
            Read::Data => Ok(()),
            Read::Eof => Err(Error::client(
                ErrorKind::ClientGone,
                "client closed mid-body",
            )),
            Read::Timeout => Err(Error::client(
                ErrorKind::ClientTimeout,
                "request body too slow",
            )),
        }
    }

    /// One `recv` without waiting, into a pooled buffer: `true` when it found bytes (or the
    /// end of the stream, which the next read then sees); `false` when there were none, and
    /// the buffer went back.
    fn look(&mut self) -> bool {
        let mut buf = crate::net::buffers::take();
        match crate::net::io::recv_now(self.client.tcp_mut(), &mut buf, READ_SIZE) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                crate::net::buffers::give(buf);
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
    async fn read_more(&mut self, deadline: Instant) -> Read {
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

    /// Counts a finished request on its route (or as unrouted) and writes its access log line.
    fn finish(
        &self,
        req: Option<&RequestHead>,
        snapshot: Option<&Snapshot>,
        trace: &Trace,
        started: Instant,
    ) {
        let elapsed = started.elapsed();
        let meter = self.client.meter;
        let entry = snapshot
            .zip(trace.route)
            .and_then(|(s, i)| s.router.entries().get(i));
        let metrics = entry.map_or(&self.shared.metrics.unrouted, |e| &*e.metrics);
        metrics.record(self.worker, meter.status, meter.sent, elapsed);
        WorkerStats::bump(&self.shared.workers[self.worker].requests);
        if let Some(format) = crate::logging::access_format() {
            let entry = access_log::Entry {
                time: time::OffsetDateTime::now_utc(),
                client: trace.client.unwrap_or(self.peer.ip()),
                request: req,
                status: meter.status,
                body_bytes: meter.body(),
                bytes: meter.sent,
                duration: elapsed,
                route: entry.map(|e| match &e.prefix {
                    Some(p) => format!("{}{p}", e.host),
                    None => e.host.clone(),
                }),
                upstream: trace.upstream.addr,
                upstream_time: trace.upstream.time,
            };
            crate::logging::access(|out| access_log::write(format, &entry, out));
        }
    }

    /// Drains the client's input for a while after an error response on a closing connection
    /// (see [`linger`]).
    async fn linger(&mut self) {
        linger(&mut self.client, &mut self.buf).await;
    }

    /// Sends the response for an error, if anyone is left to receive it, and logs it. `true`
    /// when the connection should now close with a [`Conn::linger`].
    async fn fail(&mut self, e: Error, keep_alive: bool, req: Option<&RequestHead>) -> bool {
        let Some(status) = e.status() else {
            // Nothing can be answered any more (the response began, or the client is gone).
            log::debug!("{}: {e}", self.peer);
            self.aborted = true;
            return false;
        };
        let what = req.map_or(String::new(), |r| format!("{} {}: ", r.method, r.path));
        match e.side {
            Side::Client => log::debug!("{}: {status}: {what}{e}", self.peer),
            Side::Upstream | Side::Internal => log::warn!("{}: {status}: {what}{e}", self.peer),
        }
        let body = format!("{status} {}\n", reason(status));
        let mut h = ResponseHead::new(status);
        h.header("Content-Type", "text/plain; charset=utf-8")
            .content_length(body.len() as u64);
        match &e.kind {
            ErrorKind::MethodNotAllowed(allow) => {
                h.header("Allow", allow);
            }
            ErrorKind::RangeNotSatisfiable(len) => {
                h.header("Content-Range", &format!("bytes */{len}"));
            }
            ErrorKind::TooManyRequests(secs) => {
                h.header("Retry-After", &secs.to_string());
            }
            _ => {}
        }
        match req {
            Some(r) => crate::files::connection_header(&mut h, r, keep_alive),
            None => {
                h.header("Connection", "close");
            }
        }
        let mut out = h.finish();
        if req.is_none_or(|r| r.method != Method::Head) {
            out.extend_from_slice(body.as_bytes());
        }
        self.client.send(&out, false).await.is_ok() && !keep_alive
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
async fn linger(client: &mut ClientStream, buf: &mut Vec<u8>) {
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

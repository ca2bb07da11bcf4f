//! HTTP/2 client connections: the `h2` crate's server over the connection's [`PollStream`],
//! with the settings and limits of `[http2]`, and what `h2` leaves to its user:
//!
//! - **Timeouts**: the preface and SETTINGS within `client_header_timeout_secs`, and the first
//!   request as well; a connection without an open stream for `idle_timeout_secs` gets
//!   GOAWAY; an optional PING every `keepalive_interval_secs` while idle, unanswered for as
//!   long: closed.
//! - **Work per connection**: handlers in flight are counted apart from `h2`'s stream count
//!   (a reset stream leaves `h2`'s count at once; its handler is cancelled at once too, see
//!   [`stream`]); a stream over `max_concurrent_streams` handlers is refused
//!   (`REFUSED_STREAM`, safe for the client to retry); after `max_requests_per_connection`
//!   streams the connection gets a graceful GOAWAY.
//! - **Drain**: a graceful GOAWAY (`h2` sends one with the last stream id after a PING round
//!   trip), the streams in flight finish, then the connection closes.
//!
//! Each stream runs in a task of its own ([`stream::run`]); the connection's task drives the
//! socket for all of them.

mod stream;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::Reason;
use rustls::sign::CertifiedKey;

use super::WorkerCtx;
use crate::config::Http2;
use crate::metrics::WorkerStats;
use crate::net::h2io::PollStream;
use crate::net::server_tls::ServerTls;
use crate::shared::{Admitted, Shared};

pub use stream::H2Downstream;

/// The most a connection's task sleeps between looks at the drain flag.
const TICK: Duration = Duration::from_secs(1);
/// Response bytes `h2` may buffer per stream beyond what the client's window takes.
const SEND_BUFFER: usize = 64 * 1024;
/// `h2`'s limits on reset streams, set explicitly so that a dependency update cannot loosen
/// them: streams a client resets before they are accepted (then GOAWAY), streams reset for
/// the client's errors (then GOAWAY, the "MadeYouReset" class), and how long a reset stream's
/// id is remembered.
const MAX_PENDING_ACCEPT_RESETS: usize = 20;
const MAX_LOCAL_ERROR_RESETS: usize = 1024;
const RESET_STREAM_MEMORY: Duration = Duration::from_secs(5);
/// The HPACK dynamic table the daemon keeps for a client (RFC 9113's default).
const HEADER_TABLE_SIZE: u32 = 4096;

/// What every stream of a connection shares.
pub(super) struct Connection {
    pub(super) peer: SocketAddr,
    pub(super) worker: usize,
    /// The listener it came through.
    pub(super) listener: usize,
    pub(super) shared: Arc<Shared>,
    pub(super) ctx: Rc<WorkerCtx>,
    /// The client came over TLS.
    pub(super) tls: bool,
    /// The name the client asked for by SNI, and the certificate it got.
    pub(super) names: Option<Names>,
    /// Stream handlers running.
    pub(super) in_flight: Cell<u32>,
    /// The connection stays counted open until its last stream is done.
    _open: Admitted,
}

/// Connection coalescing (RFC 9113 §9.1.1): a client may send requests for every name the
/// connection's certificate covers; a request for another name gets `421 Misdirected
/// Request`, and the client opens a connection of its own for it. Connections without SNI
/// (by address) are not checked.
pub struct Names {
    sni: String,
    cert: Arc<CertifiedKey>,
    /// Names asked about already, and the answer (a connection sees few).
    seen: RefCell<Vec<(String, bool)>>,
}

/// Most names remembered per connection.
const NAMES_SEEN: usize = 8;

impl Names {
    pub fn new(sni: String, cert: Arc<CertifiedKey>) -> Self {
        Self {
            sni,
            cert,
            seen: RefCell::new(Vec::new()),
        }
    }

    /// Whether a request for `host` (lower-case, no port) may come on this connection.
    pub(super) fn cover(&self, host: &str) -> bool {
        if host == self.sni {
            return true;
        }
        let mut seen = self.seen.borrow_mut();
        if let Some((_, ok)) = seen.iter().find(|(h, _)| h == host) {
            return *ok;
        }
        let ok = crate::tls::server::covers(&self.cert, host);
        if seen.len() < NAMES_SEEN {
            seen.push((host.to_owned(), ok));
        }
        ok
    }
}

/// Serves an HTTP/2 connection until it closes. `io` is past any TLS handshake; the client's
/// preface is the first thing it reads.
pub async fn serve(
    io: PollStream<ServerTls>,
    peer: SocketAddr,
    admitted: Admitted,
    ctx: Rc<WorkerCtx>,
    tls: bool,
    names: Option<Names>,
) {
    let (settings, limits) = {
        let snapshot = admitted.shared.snapshot.load();
        (snapshot.config.http2.clone(), snapshot.head_limits())
    };
    let conn = Rc::new(Connection {
        peer,
        worker: admitted.worker,
        listener: admitted.listener,
        shared: admitted.shared.clone(),
        ctx,
        tls,
        names,
        in_flight: Cell::new(0),
        _open: admitted,
    });
    let stats = &conn.shared.workers[conn.worker];
    WorkerStats::bump(&stats.h2_accepted);
    stats.h2_connections.fetch_add(1, Ordering::Relaxed);
    let max_header_list = u32::try_from(limits.max_header_size).unwrap_or(u32::MAX);
    let handshake = builder(&settings, max_header_list).handshake::<_, Bytes>(io);
    match monoio::time::timeout(limits.header_timeout, handshake).await {
        Ok(Ok(h2)) => run(h2, &conn, &settings, limits.header_timeout).await,
        Ok(Err(e)) => log::debug!("{peer}: HTTP/2 handshake failed: {e}"),
        Err(_) => log::debug!("{peer}: HTTP/2 handshake timed out"),
    }
    stats.h2_connections.fetch_sub(1, Ordering::Relaxed);
}

/// The server settings: `[http2]`, the header limit, and `h2`'s abuse limits.
fn builder(s: &Http2, max_header_list: u32) -> h2::server::Builder {
    let mut b = h2::server::Builder::new();
    b.max_concurrent_streams(s.max_concurrent_streams)
        .initial_window_size(s.initial_stream_window)
        .initial_connection_window_size(s.initial_connection_window)
        .max_frame_size(s.max_frame_size)
        .max_header_list_size(max_header_list)
        .header_table_size(HEADER_TABLE_SIZE)
        .max_send_buffer_size(SEND_BUFFER)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .max_concurrent_reset_streams(2 * s.max_concurrent_streams as usize)
        .reset_stream_duration(RESET_STREAM_MEMORY);
    b
}

/// Why a connection is being wound down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closing {
    /// Not closing.
    No,
    /// A graceful GOAWAY went out at this instant: the streams in flight finish.
    Graceful(Instant),
    /// Closed at this instant without waiting for anything; if `h2` cannot even write its
    /// GOAWAY (a client that stopped reading), the socket is dropped after [`ABRUPT_GRACE`].
    Abrupt(Instant),
}

/// How long an abrupt close waits for its GOAWAY to be written before the socket is dropped.
const ABRUPT_GRACE: Duration = Duration::from_secs(1);

/// Accepts streams and drives the connection until it ends.
async fn run(
    mut h2: h2::server::Connection<PollStream<ServerTls>, Bytes>,
    conn: &Rc<Connection>,
    settings: &Http2,
    header_timeout: Duration,
) {
    let peer = conn.peer;
    let stats = &conn.shared.workers[conn.worker];
    let mut ping = h2.ping_pong();
    let started = Instant::now();
    let mut requests = 0u64;
    let mut closing = Closing::No;
    // When the connection last had a stream in flight (or began).
    let mut idle_since = started;
    let mut ping_sent: Option<Instant> = None;
    let mut last_pong = started;
    loop {
        let busy = conn.in_flight.get() > 0 || h2.has_streams();
        let now = Instant::now();
        if busy {
            idle_since = now;
        }
        // What the connection waits for besides frames: its idle, first-request and
        // keep-alive deadlines, and the drain flag (looked at every tick).
        let mut wake = now + TICK;
        if closing == Closing::No {
            let idle_deadline = if requests == 0 {
                started + header_timeout
            } else {
                idle_since + settings.idle_timeout
            };
            if !busy && now >= idle_deadline {
                log::debug!("{peer}: HTTP/2 connection idle; GOAWAY");
                closing = goaway(&mut h2, stats);
                continue;
            }
            if conn.shared.is_draining() || requests >= settings.max_requests_per_connection {
                closing = goaway(&mut h2, stats);
                continue;
            }
            if !busy {
                wake = wake.min(idle_deadline);
            }
        }
        match closing {
            // A peer that never lets a graceful close finish (no PING answer, an unread
            // socket) is cut off once its streams are done and a header timeout has passed.
            Closing::Graceful(at) if !busy && now >= at + header_timeout => {
                h2.abrupt_shutdown(Reason::NO_ERROR);
                closing = Closing::Abrupt(now);
            }
            Closing::Graceful(at) => wake = wake.min(at + header_timeout),
            Closing::Abrupt(at) if now >= at + ABRUPT_GRACE => {
                log::debug!("{peer}: HTTP/2 connection dropped: its GOAWAY could not be sent");
                break;
            }
            Closing::Abrupt(at) => wake = wake.min(at + ABRUPT_GRACE),
            Closing::No => {}
        }
        let keepalive = settings.keepalive_interval;
        if !keepalive.is_zero() && !busy && closing == Closing::No {
            match ping_sent {
                Some(at) if now >= at + keepalive => {
                    log::debug!("{peer}: HTTP/2 PING unanswered; closing");
                    WorkerStats::bump(&stats.h2_goaway_error);
                    h2.abrupt_shutdown(Reason::NO_ERROR);
                    closing = Closing::Abrupt(now);
                    continue;
                }
                Some(at) => wake = wake.min(at + keepalive),
                None if now >= idle_since.max(last_pong) + keepalive => {
                    if let Some(p) = ping.as_mut() {
                        if p.send_ping(h2::Ping::opaque()).is_ok() {
                            ping_sent = Some(now);
                        }
                    }
                }
                None => wake = wake.min(idle_since.max(last_pong) + keepalive),
            }
        }
        let pong = async {
            match ping.as_mut() {
                Some(p) if ping_sent.is_some() => {
                    std::future::poll_fn(|cx| p.poll_pong(cx)).await.is_ok()
                }
                _ => std::future::pending().await,
            }
        };
        let sleep = monoio::time::sleep(wake.saturating_duration_since(Instant::now()));
        let event = monoio::select! {
            accepted = h2.accept() => Event::Accepted(accepted.map(|a| a.map(Box::new))),
            answered = pong => Event::Pong(answered),
            () = sleep => Event::Tick,
        };
        match event {
            Event::Tick => {}
            // An answered PING keeps the connection, not its streams: it stays idle.
            Event::Pong(true) => {
                ping_sent = None;
                last_pong = Instant::now();
            }
            Event::Pong(false) => ping_sent = None,
            // The connection ended: closed by the client, gracefully, or for an error
            // (`h2` has sent its GOAWAY).
            Event::Accepted(None) => break,
            Event::Accepted(Some(Err(e))) => {
                if e.is_go_away() && e.is_library() {
                    WorkerStats::bump(&stats.h2_goaway_error);
                }
                log::debug!("{peer}: HTTP/2 connection ended: {e}");
                break;
            }
            Event::Accepted(Some(Ok(accepted))) => {
                let (request, mut respond) = *accepted;
                requests += 1;
                WorkerStats::bump(&stats.h2_streams);
                if closing != Closing::No && requests > settings.max_requests_per_connection {
                    // Past the cap, during a graceful close the client has not let finish (the
                    // first GOAWAY still allows every stream id): refused, and a client that
                    // keeps opening streams anyway is cut off.
                    WorkerStats::bump(&stats.h2_refused);
                    respond.send_reset(Reason::REFUSED_STREAM);
                    let over = requests - settings.max_requests_per_connection;
                    if over > u64::from(settings.max_concurrent_streams) {
                        WorkerStats::bump(&stats.h2_goaway_error);
                        h2.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                        closing = Closing::Abrupt(Instant::now());
                    }
                    continue;
                }
                if conn.in_flight.get() >= settings.max_concurrent_streams {
                    WorkerStats::bump(&stats.h2_refused);
                    respond.send_reset(Reason::REFUSED_STREAM);
                    continue;
                }
                conn.in_flight.set(conn.in_flight.get() + 1);
                // Boxed first: the stream's future is large (a proxy exchange's state), and
                // spawning moves it by value twice.
                monoio::spawn(Box::pin(stream::run(request, respond, conn.clone())));
            }
        }
    }
}

/// A stream the client opened: its request and the handle its response goes out through.
type Accepted = (
    http::Request<h2::RecvStream>,
    h2::server::SendResponse<Bytes>,
);

/// What woke the connection's task.
enum Event {
    /// A stream (boxed: it is much larger than the other events), or the connection's end.
    Accepted(Option<Result<Box<Accepted>, h2::Error>>),
    /// A PING's answer came (`true`), or the PING failed.
    Pong(bool),
    Tick,
}

/// Starts a graceful close: GOAWAY, the streams in flight finish.
fn goaway(
    h2: &mut h2::server::Connection<PollStream<ServerTls>, Bytes>,
    stats: &crate::metrics::WorkerStats,
) -> Closing {
    h2.graceful_shutdown();
    WorkerStats::bump(&stats.h2_goaway_graceful);
    Closing::Graceful(Instant::now())
}

//! Connections to HTTP/2 upstreams (`protocol = "h2"`): per worker and server, a few
//! multiplexed connections, each driven by a task of its own. A stream goes to the least busy
//! connection that has room under the server's `SETTINGS_MAX_CONCURRENT_STREAMS`; when every
//! connection is full and there are [`MAX_CONNS`], to the least busy (where `h2` queues it).
//! A connection that received GOAWAY, failed or closed takes no new streams (the ones in
//! flight finish on it); one without streams for the group's idle timeout is closed by the
//! worker's sweep.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;

use super::pool::PoolKey;
use crate::error::{Error, ErrorKind};
use crate::net::h2io::PollStream;
use crate::net::upstream::{UpstreamConn, UpstreamTls};

/// Most connections per server and worker.
pub const MAX_CONNS: usize = 4;
/// The flow-control windows the daemon opens to an upstream: per stream and per connection.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 4 << 20;
/// The largest response header list taken from an upstream.
const MAX_HEADER_LIST: u32 = 64 * 1024;

/// One HTTP/2 connection to a server.
pub struct H2Conn {
    send: SendRequest<Bytes>,
    /// Streams open on it now.
    streams: Cell<usize>,
    /// Ended (GOAWAY, an error, the peer's close): no new streams.
    closed: Rc<Cell<bool>>,
    /// When its last stream ended (or it opened).
    idle_since: Cell<Instant>,
    /// How long it is kept without a stream.
    keep: Duration,
    pub addr: std::net::SocketAddr,
}

impl H2Conn {
    fn usable(&self) -> bool {
        !self.closed.get()
    }

    fn has_room(&self) -> bool {
        self.streams.get() < self.send.current_max_send_streams()
    }

    /// Marks it ended (a stream saw GOAWAY or a connection error).
    pub fn close(&self) {
        self.closed.set(true);
    }
}

/// A stream's hold on its connection: counted open until dropped.
pub struct Lease {
    pub conn: Rc<H2Conn>,
}

impl Lease {
    /// A handle to open the stream with, once the connection can take one.
    pub async fn ready(&self) -> Result<SendRequest<Bytes>, h2::Error> {
        self.conn.send.clone().ready().await
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let left = self.conn.streams.get().saturating_sub(1);
        self.conn.streams.set(left);
        if left == 0 {
            self.conn.idle_since.set(Instant::now());
        }
    }
}

/// One worker's HTTP/2 upstream connections, by server.
#[derive(Default)]
pub struct H2Pool(RefCell<HashMap<PoolKey, Vec<Rc<H2Conn>>>>);

impl H2Pool {
    /// A connection to `key` for one stream: an open one with room, else a new one (connected
    /// within `timeout`), else the least busy.
    pub async fn lease(
        &self,
        key: &PoolKey,
        tls: Option<&UpstreamTls>,
        timeout: Duration,
        keep: Duration,
    ) -> Result<(Lease, bool), Error> {
        if let Some(conn) = self.pick(key, false) {
            return Ok((lease(conn), true));
        }
        match connect(key, tls, timeout, keep).await {
            Ok(conn) => {
                let conn = Rc::new(conn);
                self.0
                    .borrow_mut()
                    .entry(key.clone())
                    .or_default()
                    .push(conn.clone());
                Ok((lease(conn), false))
            }
            // At the cap after all (another stream connected meanwhile), or the connect
            // failed while others are open: share the least busy.
            Err(e) => match self.pick(key, true) {
                Some(conn) => Ok((lease(conn), true)),
                None => Err(e),
            },
        }
    }

    /// The least busy usable connection: with room (or, with `full`, any); `None` when a new
    /// one should be opened.
    fn pick(&self, key: &PoolKey, full: bool) -> Option<Rc<H2Conn>> {
        let mut map = self.0.borrow_mut();
        let list = map.get_mut(key)?;
        list.retain(|c| c.usable() || c.streams.get() > 0);
        let usable = list.iter().filter(|c| c.usable());
        let best = usable.min_by_key(|c| c.streams.get())?;
        let at_cap = list.iter().filter(|c| c.usable()).count() >= MAX_CONNS;
        (best.has_room() || full || at_cap).then(|| best.clone())
    }

    /// Closes connections without streams for their group's idle timeout, and forgets ended
    /// ones. Each worker runs it every second.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.0.borrow_mut().retain(|_, list| {
            list.retain(|c| {
                c.streams.get() > 0
                    || (c.usable() && now.duration_since(c.idle_since.get()) < c.keep)
            });
            !list.is_empty()
        });
    }

    /// Open connections to `key` (for tests and stats).
    pub fn count(&self, key: &PoolKey) -> usize {
        self.0.borrow().get(key).map_or(0, Vec::len)
    }
}

fn lease(conn: Rc<H2Conn>) -> Lease {
    conn.streams.set(conn.streams.get() + 1);
    Lease { conn }
}

/// Connects, completes TLS (ALPN `h2`) if the group has it, and the HTTP/2 handshake; the
/// connection's task is spawned.
async fn connect(
    key: &PoolKey,
    tls: Option<&UpstreamTls>,
    timeout: Duration,
    keep: Duration,
) -> Result<H2Conn, Error> {
    let deadline = Instant::now() + timeout;
    let conn = UpstreamConn::connect(&[key.addr], tls, timeout).await?;
    let (tcp, session) = conn.into_parts();
    if let Some(s) = &session {
        if s.alpn_protocol() != Some(b"h2") {
            return Err(Error::upstream(
                ErrorKind::BadGateway,
                format!(
                    "{}: the upstream did not agree to HTTP/2 (ALPN h2); set protocol = \"http1\" \
                     if it speaks HTTP/1.1 only",
                    key.addr
                ),
            ));
        }
    }
    let io = PollStream::new(tcp, session, Vec::new())
        .map_err(|e| Error::internal(format!("upstream socket: {e}")))?;
    let handshake = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST)
        .enable_push(false)
        .handshake::<_, Bytes>(io);
    let left = deadline.saturating_duration_since(Instant::now());
    let (send, connection) = match monoio::time::timeout(left, handshake).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            return Err(Error::upstream(
                ErrorKind::BadGateway,
                format!("{}: HTTP/2 handshake: {e}", key.addr),
            ))
        }
        Err(_) => {
            return Err(Error::upstream(
                ErrorKind::GatewayTimeout,
                format!("{}: HTTP/2 handshake timed out", key.addr),
            ))
        }
    };
    let closed = Rc::new(Cell::new(false));
    let ended = closed.clone();
    let addr = key.addr;
    monoio::spawn(async move {
        if let Err(e) = connection.await {
            log::debug!("upstream {addr}: HTTP/2 connection ended: {e}");
        }
        ended.set(true);
    });
    Ok(H2Conn {
        send,
        streams: Cell::new(0),
        closed,
        idle_since: Cell::new(Instant::now()),
        keep,
        addr,
    })
}

//! Connections to HTTP/2 upstreams (`protocol = "h2"`): per worker and server, a few
//! multiplexed connections, each driven by a task of its own. A stream goes to the least busy
//! connection that has room under the server's `SETTINGS_MAX_CONCURRENT_STREAMS`; when every
//! connection is full and there are [`MAX_CONNS`], to the least busy (where `h2` queues it).
//! A connection that received GOAWAY, failed or closed takes no new streams (the ones in
//! flight finish on it); one without streams for the group's idle timeout is closed by the
//! worker's sweep.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;

use super::pool::PoolKey;
use crate::error::{Error, ErrorKind};
use crate::net::h2io::{client_handshake, ClientSettings, UPSTREAM_MAX_HEADER_LIST};
use crate::net::upstream::{UpstreamConn, UpstreamTls};

/// Most connections per server and worker.
pub const MAX_CONNS: usize = 4;
/// The flow-control windows the daemon opens to an upstream: per stream and per connection.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 4 << 20;

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
pub struct H2Pool(RefCell<HashMap<PoolKey, Server>>);

/// A server's connections, and the ones being opened.
#[derive(Default)]
struct Server {
    conns: Vec<Rc<H2Conn>>,
    /// Connects under way: streams that find every connection full wait for them rather
    /// than open more.
    connecting: usize,
    /// Tasks waiting for a connect to end.
    waiting: Vec<Waker>,
}

impl H2Pool {
    /// A connection to `key` for one stream: an open one with room, else a new one (connected
    /// within `timeout`; kept `keep` without streams), else the least busy. `true` with a
    /// connection that was open already.
    pub async fn lease(
        &self,
        key: &PoolKey,
        tls: Option<&UpstreamTls>,
        timeout: Duration,
        keep: Duration,
    ) -> Result<(Lease, bool), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.pick(key) {
                Pick::Use(conn) => return Ok((lease(conn), true)),
                Pick::Connect => break,
                Pick::Wait => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if monoio::time::timeout(left, self.connect_ended(key))
                        .await
                        .is_err()
                    {
                        return Err(Error::upstream(
                            ErrorKind::GatewayTimeout,
                            format!("{}: no HTTP/2 connection in time", key.addr),
                        ));
                    }
                }
            }
        }
        // Counted as under way until it ends, however it ends (a cancelled stream too).
        let guard = Connecting { pool: self, key };
        let left = deadline.saturating_duration_since(Instant::now());
        let result = connect(key, tls, left, keep).await;
        drop(guard);
        let conn = Rc::new(result?);
        let mut map = self.0.borrow_mut();
        map.entry(key.clone()).or_default().conns.push(conn.clone());
        Ok((lease(conn), false))
    }

    /// Waits until a connect to `key` under way ends.
    async fn connect_ended(&self, key: &PoolKey) {
        let mut registered = false;
        poll_fn(|cx| {
            if registered {
                return Poll::Ready(());
            }
            registered = true;
            if let Some(server) = self.0.borrow_mut().get_mut(key) {
                server.waiting.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await;
    }

    /// What a stream for `key` does: use the least busy connection with room; else open
    /// one, while fewer than [`MAX_CONNS`] are open or being opened; else share the least
    /// busy (where `h2` queues it), or wait for a connect under way.
    fn pick(&self, key: &PoolKey) -> Pick {
        let mut map = self.0.borrow_mut();
        let server = map.entry(key.clone()).or_default();
        server.conns.retain(|c| c.usable() || c.streams.get() > 0);
        let best = server
            .conns
            .iter()
            .filter(|c| c.usable())
            .min_by_key(|c| c.streams.get());
        let open = server.conns.iter().filter(|c| c.usable()).count();
        match best {
            Some(c) if c.has_room() => Pick::Use(c.clone()),
            _ if open + server.connecting < MAX_CONNS => {
                server.connecting += 1;
                Pick::Connect
            }
            Some(c) => Pick::Use(c.clone()),
            None => Pick::Wait,
        }
    }

    /// Closes connections without streams for their group's idle timeout, and forgets ended
    /// ones. Each worker runs it every second.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.0.borrow_mut().retain(|_, server| {
            server.conns.retain(|c| {
                c.streams.get() > 0
                    || (c.usable() && now.duration_since(c.idle_since.get()) < c.keep)
            });
            !server.conns.is_empty() || server.connecting > 0
        });
    }

    /// Open connections to `key` (for tests and stats).
    pub fn count(&self, key: &PoolKey) -> usize {
        self.0.borrow().get(key).map_or(0, |s| s.conns.len())
    }
}

/// A connect under way: when it ends, the count drops and its waiters wake.
struct Connecting<'a> {
    pool: &'a H2Pool,
    key: &'a PoolKey,
}

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        if let Some(server) = self.pool.0.borrow_mut().get_mut(self.key) {
            server.connecting = server.connecting.saturating_sub(1);
            for w in server.waiting.drain(..) {
                w.wake();
            }
        }
    }
}

/// What [`H2Pool::pick`] decided.
enum Pick {
    Use(Rc<H2Conn>),
    /// Open a connection (counted as under way).
    Connect,
    /// Every connection is being opened: wait for one.
    Wait,
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
    let settings = ClientSettings {
        stream_window: STREAM_WINDOW,
        connection_window: CONNECTION_WINDOW,
        max_header_list: UPSTREAM_MAX_HEADER_LIST,
    };
    let (send, connection) = client_handshake(conn, &settings, deadline).await?;
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

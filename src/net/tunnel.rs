//! The byte tunnel after a `101 Switching Protocols` (WebSocket): both directions copied at
//! once, each end's close passed on as a half-close, until both have closed or nothing has
//! moved for [`IDLE`].
//!
//! A TLS session (the client's on a TLS listener, an `https://` upstream's) is shared by the two directions through a
//! `RefCell` that is borrowed only between awaits — every wait is a readiness wait on the
//! socket — so neither direction can hold the other up.

use std::cell::{Cell, RefCell};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

use crate::net::io::{recv_into, send_all, RecvError};
use crate::net::tls::TlsSession;

use super::upstream::UpstreamConn;
use crate::net::client::ClientStream;

/// Idle time after which a tunnel is closed.
pub const IDLE: Duration = Duration::from_secs(300);
/// Read size.
const CHUNK: usize = 64 * 1024;
/// How often a direction with nothing to read checks the shared idle clock.
const TICK: Duration = Duration::from_secs(5);

/// Copies bytes between `client` and `upstream` until both sides are done.
pub async fn run(client: &mut ClientStream, upstream: UpstreamConn) {
    let to_client = relay(client, upstream).await;
    client.meter.sent += to_client;
}

/// Runs both directions; returns the bytes sent to the client.
async fn relay(client: &mut ClientStream, upstream: UpstreamConn) -> u64 {
    let (tcp, mut session) = upstream.into_parts();
    let up_session = session
        .as_deref_mut()
        .map(|s| RefCell::new(s as &mut dyn TlsSession));
    let up = match &up_session {
        None => End::Plain(&tcp),
        Some(s) => End::Tls(&tcp, s),
    };
    let (client_tcp, client_session) = client.parts();
    let down_session = client_session.map(|s| RefCell::new(s as &mut dyn TlsSession));
    let down = match &down_session {
        None => End::Plain(client_tcp),
        Some(s) => End::Tls(client_tcp, s),
    };
    let last = Cell::new(Instant::now());
    let (_, to_client) = monoio::join!(pipe(&down, &up, &last), pipe(&up, &down, &last));
    to_client
}

/// One end of the tunnel: a socket, and the TLS session over it if any.
enum End<'a, 's> {
    Plain(&'a TcpStream),
    Tls(&'a TcpStream, &'a RefCell<&'s mut dyn TlsSession>),
}

impl End<'_, '_> {
    async fn recv(&self, buf: &mut Vec<u8>) -> Result<usize, RecvError> {
        match self {
            End::Plain(s) => recv_into(s, buf, CHUNK, TICK).await,
            End::Tls(s, session) => loop {
                let got = super::tls::try_recv(s.as_raw_fd(), *session.borrow_mut(), buf, CHUNK)?;
                if let Some(n) = got {
                    return Ok(n);
                }
                match monoio::time::timeout(TICK, s.readable(false)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(RecvError::Failed(e.kind())),
                    Err(_) => return Err(RecvError::Timeout),
                }
            },
        }
    }

    async fn send(&self, mut data: &[u8]) -> Result<(), ()> {
        match self {
            End::Plain(s) => send_all(s, data, false).await.map_err(drop),
            End::Tls(s, session) => loop {
                let n = session
                    .borrow_mut()
                    .write_plaintext(&[std::io::IoSlice::new(data)])
                    .map_err(drop)?;
                data = data.get(n..).unwrap_or_default();
                loop {
                    // The borrow ends with this statement, before any await.
                    let flushed = super::tls::try_flush(s.as_raw_fd(), *session.borrow_mut());
                    match flushed {
                        Ok(()) => break,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            match monoio::time::timeout(IDLE, s.writable(false)).await {
                                Ok(Ok(())) => {}
                                _ => return Err(()),
                            }
                        }
                        Err(_) => return Err(()),
                    }
                }
                if data.is_empty() {
                    return Ok(());
                }
            },
        }
    }

    fn shutdown_write(&self) {
        let tcp = match self {
            End::Plain(s) => s,
            End::Tls(s, session) => {
                let mut session = session.borrow_mut();
                session.send_close_notify();
                let _ = super::tls::try_flush(s.as_raw_fd(), *session);
                s
            }
        };
        // SAFETY: shutdown on a descriptor owned by a live stream.
        unsafe { libc::shutdown(tcp.as_raw_fd(), libc::SHUT_WR) };
    }
}

/// Copies `from` → `to` until the end of `from` (or a failure, or the tunnel going idle), then
/// shuts `to`'s write side. Returns the bytes delivered to `to`.
async fn pipe(from: &End<'_, '_>, to: &End<'_, '_>, last: &Cell<Instant>) -> u64 {
    let mut moved = 0;
    let mut buf = Vec::with_capacity(CHUNK);
    loop {
        buf.clear();
        match from.recv(&mut buf).await {
            Ok(0) => break,
            Ok(_) => {
                last.set(Instant::now());
                if to.send(&buf).await.is_err() {
                    break;
                }
                moved += buf.len() as u64;
            }
            Err(RecvError::Timeout) if last.get().elapsed() < IDLE => continue,
            Err(_) => break,
        }
    }
    to.shutdown_write();
    moved
}

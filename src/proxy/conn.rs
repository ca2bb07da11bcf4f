//! A connection to an upstream: a TCP socket, and for an `https://` upstream the rustls client
//! session over it. The proxy and the pool see one type with the operations they need.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use rustls::ClientConnection;

use crate::error::{Error, ErrorKind};
use crate::tls;
use crate::worker::io::{self, RecvError};

use super::pool::Upstream;

/// An open connection to an upstream.
pub struct UpstreamConn {
    /// The address connected to.
    pub addr: std::net::SocketAddr,
    tcp: TcpStream,
    /// The TLS session for an `https://` upstream (boxed: pooled plain connections stay small).
    tls: Option<Box<ClientConnection>>,
}

impl UpstreamConn {
    /// Connects to `up` (trying its addresses in order) and, for `https://`, completes the TLS
    /// handshake, all within `timeout`: refused → 502, timed out → 504, a certificate or TLS
    /// failure → 502.
    pub async fn connect(up: &Upstream, timeout: Duration) -> Result<Self, Error> {
        let deadline = Instant::now() + timeout;
        let mut last = Error::upstream(ErrorKind::BadGateway, "the upstream has no address");
        for addr in &up.addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            let tcp = match monoio::time::timeout(left, TcpStream::connect_addr(*addr)).await {
                Ok(Ok(tcp)) => tcp,
                Ok(Err(e)) => {
                    last =
                        Error::upstream(ErrorKind::BadGateway, format!("connect to {addr}: {e}"));
                    continue;
                }
                Err(_) => {
                    last = Error::upstream(
                        ErrorKind::GatewayTimeout,
                        format!("connect to {addr}: timed out"),
                    );
                    continue;
                }
            };
            io::set_nonblocking(tcp.as_raw_fd())
                .map_err(|e| Error::internal(format!("upstream socket: {e}")))?;
            let _ = tcp.set_nodelay(true);
            let Some(t) = &up.tls else {
                return Ok(Self {
                    addr: *addr,
                    tcp,
                    tls: None,
                });
            };
            let mut session = ClientConnection::new(t.config.clone(), t.name.clone())
                .map_err(|e| Error::internal(format!("TLS client session: {e}")))?;
            return match tls::io::handshake(&tcp, &mut session, deadline).await {
                Ok(()) => Ok(Self {
                    addr: *addr,
                    tcp,
                    tls: Some(Box::new(session)),
                }),
                Err(tls::io::HandshakeError::Timeout) => Err(Error::upstream(
                    ErrorKind::GatewayTimeout,
                    format!("{addr}: TLS handshake timed out"),
                )),
                Err(e) => Err(Error::upstream(
                    ErrorKind::BadGateway,
                    format!("{addr} ({}): {e}", t.name.to_str()),
                )),
            };
        }
        Err(last)
    }

    /// Sends all of `data`; with `more`, a plain socket is told that more follows.
    pub async fn send(&mut self, data: &[u8], more: bool) -> Result<(), Error> {
        match &mut self.tls {
            None => io::send_all(&self.tcp, data, more).await,
            Some(s) => tls::io::send_all(&self.tcp, s, data).await,
        }
    }

    /// Sends `data` of a request body, like [`Self::send`], but stops when the upstream has
    /// something to say first: `Ok(false)` when it answered (or closed, or failed) before
    /// taking all of it — a server refusing a body (`413`) while the client still sends it.
    /// Waiting for room in the socket is also waiting for that answer.
    pub async fn send_body(&mut self, mut data: &[u8], more: bool) -> Result<bool, Error> {
        let fd = self.tcp.as_raw_fd();
        loop {
            let flushed = match &mut self.tls {
                None => {
                    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
                    // SAFETY: `data` is a live slice; send reads at most data.len() bytes.
                    let n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), flags) };
                    if n >= 0 {
                        data = data.get(n as usize..).unwrap_or_default();
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                }
                Some(s) => {
                    let n = std::io::Write::write(&mut s.writer(), data)
                        .map_err(|e| Error::internal(format!("TLS write: {e}")))?;
                    data = data.get(n..).unwrap_or_default();
                    tls::io::try_flush(fd, s)
                }
            };
            match flushed {
                // (Over TLS, `Ok` means every record went out.)
                Ok(()) if data.is_empty() => return Ok(true),
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let room = monoio::time::timeout(io::SEND_TIMEOUT, async {
                        monoio::select! {
                            _ = self.tcp.writable(false) => true,
                            _ = self.tcp.readable(false) => false,
                        }
                    })
                    .await;
                    match room {
                        Ok(true) => {}
                        // Readable: an answer, unless it was only TLS housekeeping (a TLS 1.3
                        // session ticket), which `answered` consumes.
                        Ok(false) if self.answered() => return Ok(false),
                        Ok(false) => {}
                        Err(_) => {
                            return Err(Error::upstream(
                                ErrorKind::GatewayTimeout,
                                "the upstream took no request body for 30 s",
                            ))
                        }
                    }
                }
                // Closed or reset while we sent: what it said before, if anything, is read
                // next.
                Err(_) => return Ok(false),
            }
        }
    }

    /// Whether the upstream has something to read — bytes of an answer, its close, an error —
    /// without taking any of it (TLS records that carry no data are consumed).
    pub fn answered(&mut self) -> bool {
        !self.idle_and_open()
    }

    /// Receives into `buf` (see [`io::recv_into`]); `Ok(0)` is the end of the stream.
    pub async fn recv_into(
        &mut self,
        buf: &mut Vec<u8>,
        want: usize,
        timeout: Duration,
    ) -> Result<usize, RecvError> {
        match &mut self.tls {
            None => io::recv_into(&self.tcp, buf, want, timeout).await,
            Some(s) => tls::io::recv_into(&self.tcp, s, buf, want, timeout).await,
        }
    }

    /// Waits up to `timeout` for a plain connection to become readable: before the first read
    /// of a response just asked for, which could only find nothing (one `recv` saved). `false`
    /// on a timeout. A TLS connection returns at once: rustls may hold plaintext already.
    pub async fn wait_readable(&self, timeout: Duration) -> bool {
        if self.tls.is_some() {
            return true;
        }
        // An error shows in the read that follows.
        monoio::time::timeout(timeout, self.tcp.readable(false))
            .await
            .is_ok()
    }

    /// Whether an idle pooled connection can be reused: open, and nothing unexpected waiting.
    pub fn idle_and_open(&mut self) -> bool {
        match &mut self.tls {
            None => io::idle_and_open(&self.tcp),
            Some(s) => tls::io::idle_and_open(&self.tcp, s),
        }
    }

    /// The socket, when the upstream speaks plain HTTP (for `splice`).
    pub fn plain_tcp(&self) -> Option<&TcpStream> {
        self.tls.is_none().then_some(&self.tcp)
    }

    /// The socket and the TLS session, for a tunnel that drives both directions at once.
    pub fn into_parts(self) -> (TcpStream, Option<Box<ClientConnection>>) {
        (self.tcp, self.tls)
    }
}

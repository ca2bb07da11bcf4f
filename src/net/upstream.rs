//! A connection to an upstream: a TCP socket, and for an `https://` upstream the rustls client
//! session over it. The proxy and the pool see one type with the operations they need.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use crate::error::{Error, ErrorKind};

use crate::net::io::{self, RecvError};

/// The TLS client side of an `https://` upstream.
#[derive(Clone, Debug)]
pub struct UpstreamTls {
    pub config: Arc<ClientConfig>,
    /// SNI and the name verified: `tls_server_name`, else the server's host.
    pub name: ServerName<'static>,
}

/// Why [`UpstreamConn::send_or_hear`] stopped before sending everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// It did not: all was sent.
    No,
    /// The upstream has something to read.
    Readable,
    /// The connection was closed or reset under the send.
    Closed,
}

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
    pub async fn connect(
        addrs: &[SocketAddr],
        tls: Option<&UpstreamTls>,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let deadline = Instant::now() + timeout;
        let mut last = Error::upstream(ErrorKind::BadGateway, "the upstream has no address");
        for addr in addrs {
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
            let Some(t) = tls else {
                return Ok(Self {
                    addr: *addr,
                    tcp,
                    tls: None,
                });
            };
            let mut session = ClientConnection::new(t.config.clone(), t.name.clone())
                .map_err(|e| Error::internal(format!("TLS client session: {e}")))?;
            return match super::tls::handshake(&tcp, &mut session, deadline).await {
                Ok(()) => Ok(Self {
                    addr: *addr,
                    tcp,
                    tls: Some(Box::new(session)),
                }),
                Err(super::tls::HandshakeError::Timeout) => Err(Error::upstream(
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
            Some(s) => super::tls::send_all(&self.tcp, &mut **s, data).await,
        }
    }

    /// Sends `data` of a request body, like [`Self::send`], but — while `listen` — stops when
    /// the upstream has something to say first: returns how much of `data` it took and why it
    /// stopped early. A server that refuses a body by its head (`413`) while the client still
    /// sends it stops reading, and waiting for room in its socket is then waiting for nothing
    /// but its answer.
    pub async fn send_or_hear(
        &mut self,
        data: &[u8],
        more: bool,
        listen: bool,
    ) -> Result<(usize, Stop), Error> {
        let fd = self.tcp.as_raw_fd();
        let mut taken = 0;
        loop {
            let rest = data.get(taken..).unwrap_or_default();
            let flushed = match &mut self.tls {
                None => {
                    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
                    // SAFETY: `rest` is a live slice; send reads at most rest.len() bytes.
                    let n = unsafe { libc::send(fd, rest.as_ptr().cast(), rest.len(), flags) };
                    if n >= 0 {
                        taken += n as usize;
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                }
                Some(s) => {
                    // What rustls takes is on its way (flushed below or at the next send).
                    taken += std::io::Write::write(&mut s.writer(), rest)
                        .map_err(|e| Error::internal(format!("TLS write: {e}")))?;
                    super::tls::try_flush(fd, &mut **s)
                }
            };
            let e = match flushed {
                // (Over TLS, `Ok` means every queued record went out.)
                Ok(()) if taken == data.len() => return Ok((taken, Stop::No)),
                Ok(()) => continue,
                Err(e) => e,
            };
            match e.kind() {
                std::io::ErrorKind::Interrupted => {}
                std::io::ErrorKind::WouldBlock => {
                    let timed_out = || {
                        Error::upstream(
                            ErrorKind::GatewayTimeout,
                            "the upstream took no request body for 30 s",
                        )
                    };
                    if !listen {
                        monoio::time::timeout(io::SEND_TIMEOUT, self.tcp.writable(false))
                            .await
                            .map_err(|_| timed_out())?
                            .map_err(|_| self.gone())?;
                        continue;
                    }
                    let room = monoio::time::timeout(io::SEND_TIMEOUT, async {
                        monoio::select! {
                            _ = self.tcp.writable(false) => true,
                            _ = self.tcp.readable(false) => false,
                        }
                    })
                    .await
                    .map_err(|_| timed_out())?;
                    // Readable: something to hear, unless it was only TLS housekeeping (a TLS
                    // 1.3 session ticket), which `answered` consumes.
                    if !room && self.answered() {
                        return Ok((taken, Stop::Readable));
                    }
                }
                // Closed or reset while we sent.
                std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted => return Ok((taken, Stop::Closed)),
                _ => return Err(self.gone()),
            }
        }
    }

    fn gone(&self) -> Error {
        Error::upstream(
            ErrorKind::BadGateway,
            format!("sending the request body to {} failed", self.addr),
        )
    }

    /// Waits until the socket has something to read (TLS records included, data or not); an
    /// error counts as readable. Cancel-safe: nothing is read.
    pub async fn socket_readable(&self) {
        let _ = self.tcp.readable(false).await;
    }

    /// Receives what is there now into `buf`, without waiting: `Ok(None)` when nothing is,
    /// `Ok(Some(0))` at the end of the stream.
    pub fn try_recv_into(
        &mut self,
        buf: &mut Vec<u8>,
        want: usize,
    ) -> Result<Option<usize>, RecvError> {
        match &mut self.tls {
            None => match io::recv_now(&self.tcp, buf, want) {
                Ok(n) => Ok(Some(n)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(None),
                Err(e) => Err(RecvError::Failed(e.kind())),
            },
            Some(s) => super::tls::try_recv(self.tcp.as_raw_fd(), &mut **s, buf, want),
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
            Some(s) => super::tls::recv_into(&self.tcp, &mut **s, buf, want, timeout).await,
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
            Some(s) => super::tls::idle_and_open(&self.tcp, &mut **s),
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

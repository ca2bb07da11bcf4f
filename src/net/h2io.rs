//! The byte stream an HTTP/2 connection runs on (and, for upstreams, HTTP/2's connection
//! preface and settings exchange over it, [`client_handshake`]): the `h2` crate reads and writes through
//! tokio's `AsyncRead`/`AsyncWrite`, which monoio offers as *poll-io* (the socket's readiness
//! through the ring, then plain `recv`/`send`). [`PollStream`] is that stream for a client or
//! an upstream: plain, kernel TLS (the kernel's records are plaintext to us), or rustls driven
//! here, with bytes already read replayed first (the h2c preface a connection sent before it
//! was known to speak HTTP/2, or what rustls decrypted before kTLS took over).

use std::future::Future;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use std::time::Instant;

use bytes::Bytes;
use monoio::net::tcp::stream_poll::TcpStreamPoll;
use monoio::net::TcpStream;
use rustls::ClientConnection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::tls::TlsSession;
use super::upstream::UpstreamConn;
use crate::error::{Error, ErrorKind};

/// An HTTP/2 client connection to an upstream, to be polled (driven) by its owner.
pub type ClientConnectionH2 = h2::client::Connection<PollStream<ClientConnection>, Bytes>;

/// The largest response header list taken from an upstream.
pub const UPSTREAM_MAX_HEADER_LIST: u32 = 64 * 1024;

/// What the daemon asks of an HTTP/2 upstream connection.
pub struct ClientSettings {
    pub stream_window: u32,
    pub connection_window: u32,
    pub max_header_list: u32,
}

/// HTTP/2 over a connected upstream (its TLS, if any, done and `h2` chosen by ALPN), by
/// `deadline`: the handle streams are opened with, and the connection to drive.
pub async fn client_handshake(
    conn: UpstreamConn,
    settings: &ClientSettings,
    deadline: Instant,
) -> Result<(h2::client::SendRequest<Bytes>, ClientConnectionH2), Error> {
    let addr = conn.addr;
    let (tcp, session) = conn.into_parts();
    if let Some(s) = &session {
        if s.alpn_protocol() != Some(b"h2") {
            return Err(Error::upstream(
                ErrorKind::BadGateway,
                format!(
                    "{addr}: the upstream did not agree to HTTP/2 (ALPN h2); set protocol = \
                     \"http1\" if it speaks HTTP/1.1 only"
                ),
            ));
        }
    }
    let io = PollStream::new(tcp, session, Vec::new())
        .map_err(|e| Error::internal(format!("upstream socket: {e}")))?;
    let handshake = h2::client::Builder::new()
        .initial_window_size(settings.stream_window)
        .initial_connection_window_size(settings.connection_window)
        .max_header_list_size(settings.max_header_list)
        .enable_push(false)
        .handshake::<_, Bytes>(io);
    let left = deadline.saturating_duration_since(Instant::now());
    match monoio::time::timeout(left, handshake).await {
        Ok(Ok(pair)) => Ok(pair),
        Ok(Err(e)) => Err(Error::upstream(
            ErrorKind::BadGateway,
            format!("{addr}: HTTP/2 handshake: {e}"),
        )),
        Err(_) => Err(Error::upstream(
            ErrorKind::GatewayTimeout,
            format!("{addr}: HTTP/2 handshake timed out"),
        )),
    }
}

/// A connection as HTTP/2 reads and writes it.
pub struct PollStream<C> {
    tcp: TcpStreamPoll,
    /// The rustls session, when TLS runs in userspace.
    tls: Option<Box<C>>,
    /// Bytes received before the hand-over, returned first.
    replay: Vec<u8>,
    replayed: usize,
    /// `close_notify` is queued (once).
    close_notified: bool,
    /// The peer's `close_notify` ended the stream (not a bare FIN).
    close_notify_received: bool,
    /// The kernel runs the TLS records (kTLS): the socket carries plaintext, and a record
    /// that is not application data is read with its type.
    #[cfg(feature = "ktls")]
    kernel_tls: bool,
    /// Our direction is shut: reading until the peer's end (see [`Linger`]).
    linger: Option<Linger>,
    /// Whether a close lingers (a client's connection); an upstream's does not need to.
    lingers: bool,
}

impl<C: TlsSession> PollStream<C> {
    /// Takes over a socket (and its rustls session, if any), replaying `replay` first. Fails
    /// (giving nothing back) when the runtime cannot watch the socket's readiness.
    pub fn new(tcp: TcpStream, tls: Option<Box<C>>, replay: Vec<u8>) -> io::Result<Self> {
        let tcp = tcp.try_into_poll_io().map_err(|(e, _)| e)?;
        Ok(Self {
            tcp,
            tls,
            replay,
            replayed: 0,
            close_notified: false,
            close_notify_received: false,
            #[cfg(feature = "ktls")]
            kernel_tls: false,
            linger: None,
            lingers: false,
        })
    }

    /// Takes over a socket whose TLS records the kernel runs, replaying `early` (what rustls
    /// decrypted before the hand-over, and bytes read since) first.
    #[cfg(feature = "ktls")]
    pub fn kernel_tls(tcp: TcpStream, early: Vec<u8>) -> io::Result<Self> {
        let mut stream = Self::new(tcp, None, early)?;
        stream.kernel_tls = true;
        Ok(stream)
    }

    /// Makes a close linger (see [`Linger`]): for a client's connection.
    pub fn lingering(mut self) -> Self {
        self.lingers = true;
        self
    }

    /// Whether the peer ended the stream with TLS's `close_notify` (a clean close; a bare FIN
    /// reads as the end too, for HTTP/2's framing to judge).
    pub fn close_notify_received(&self) -> bool {
        self.close_notify_received
    }

    /// Sends what rustls has queued, as far as the socket takes it now.
    fn flush_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(session) = self.tls.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        while session.wants_write() {
            let mut out = Sync {
                tcp: &mut self.tcp,
                cx,
            };
            match session.write_tls(&mut out) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<C: TlsSession + Unpin> AsyncRead for PollStream<C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.replayed < this.replay.len() {
            let rest = &this.replay[this.replayed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.replayed += n;
            if this.replayed == this.replay.len() {
                this.replay = Vec::new();
                this.replayed = 0;
            }
            return Poll::Ready(Ok(()));
        }
        #[cfg(feature = "ktls")]
        if this.kernel_tls {
            return this.poll_read_kernel(cx, buf);
        }
        if this.tls.is_none() {
            return Pin::new(&mut this.tcp).poll_read(cx, buf);
        }
        loop {
            // Replies rustls owes the peer (a key update, an alert) go out first, as far as
            // the socket takes them.
            if let Poll::Ready(Err(e)) = this.flush_tls(cx) {
                return Poll::Ready(Err(e));
            }
            let Some(session) = this.tls.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            match session.read_plaintext(buf.initialize_unfilled()) {
                Ok(n) => {
                    // 0: the peer's close_notify, the end of the stream.
                    this.close_notify_received |= n == 0;
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The connection ended without close_notify: the end, for HTTP/2's framing
                // to judge.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Poll::Ready(Ok(()));
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
            let mut input = Sync {
                tcp: &mut this.tcp,
                cx,
            };
            match session.read_tls(&mut input) {
                Ok(0) => return Poll::Ready(Ok(())),
                Ok(_) => {
                    if let Err(e) = session.process_new_packets() {
                        // The alert, best effort.
                        let _ = this.flush_tls(cx);
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl<C: TlsSession + Unpin> AsyncWrite for PollStream<C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.tls.is_none() {
            return Pin::new(&mut this.tcp).poll_write(cx, data);
        }
        this.poll_stage(cx, &[io::IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.tls.is_none() {
            return Pin::new(&mut this.tcp).poll_write_vectored(cx, data);
        }
        this.poll_stage(cx, data)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.tls.is_none() {
            return Pin::new(&mut this.tcp).poll_flush(cx);
        }
        this.flush_tls(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        #[cfg(feature = "ktls")]
        if this.kernel_tls && !this.close_notified {
            this.close_notified = true;
            // Best effort, as for HTTP/1.1: HTTP/2 flushed its frames first, so the alert
            // usually fits; when the socket's buffer is full it is not sent (debug log).
            use std::os::fd::AsRawFd;
            if let Err(e) = crate::tls::ktls::send_close_notify(this.tcp.as_raw_fd()) {
                log::debug!("close_notify on kernel TLS: {e}");
            }
        }
        if this.linger.is_none() {
            if let Some(session) = this.tls.as_mut() {
                if !this.close_notified {
                    session.send_close_notify();
                    this.close_notified = true;
                }
                // Every record, close_notify last, before the FIN.
                if this.flush_tls(cx)?.is_pending() {
                    return Poll::Pending;
                }
            }
            match Pin::new(&mut this.tcp).poll_shutdown(cx) {
                Poll::Pending => return Poll::Pending,
                // The peer reset the connection already: nothing is left to shut, or to read.
                Poll::Ready(Err(e)) if e.raw_os_error() == Some(libc::ENOTCONN) => {
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(r) => r?,
            }
            if !this.lingers {
                return Poll::Ready(Ok(()));
            }
            this.linger = Some(Linger {
                timer: Box::pin(monoio::time::sleep(LINGER_TIME)),
                read: 0,
            });
        }
        this.poll_linger(cx).map(Ok)
    }
}

/// How long a closed connection keeps reading what the peer still sends, at most.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);
/// How much it reads (and drops), at most.
const LINGER_BYTES: usize = 256 * 1024;

/// A lingering close: after our FIN the socket stays open for reading a little longer, so
/// that frames the peer sent before it saw our GOAWAY (a WINDOW_UPDATE, a PING's answer) do
/// not meet a closed socket, whose reset can destroy our last frames in the peer's receive
/// buffer before it reads them (nginx's `lingering_close` for the same reason).
struct Linger {
    timer: Pin<Box<monoio::time::Sleep>>,
    read: usize,
}

impl<C: TlsSession + Unpin> PollStream<C> {
    /// Reads and drops what the peer sends until its end, an error, or the linger's bounds.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut scratch = [0u8; 4096];
        loop {
            let Some(linger) = self.linger.as_mut() else {
                return Poll::Ready(());
            };
            if linger.read >= LINGER_BYTES || linger.timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            if self.close_notify_received {
                return Poll::Ready(());
            }
            let n = if let Some(session) = self.tls.as_mut() {
                // Plaintext rustls holds goes first (a full buffer fails read_tls); an end
                // of it is the peer's close_notify.
                loop {
                    match session.read_plaintext(&mut scratch) {
                        Ok(0) => {
                            self.close_notify_received = true;
                            return Poll::Ready(());
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                let mut input = Sync {
                    tcp: &mut self.tcp,
                    cx,
                };
                match session.read_tls(&mut input) {
                    Ok(0) => return Poll::Ready(()),
                    Ok(n) => {
                        // Its plaintext is dropped at the top of the next round.
                        if session.process_new_packets().is_err() {
                            return Poll::Ready(());
                        }
                        n
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                    Err(_) => return Poll::Ready(()),
                }
            } else {
                let mut buf = ReadBuf::new(&mut scratch);
                #[cfg(feature = "ktls")]
                let read = if self.kernel_tls {
                    self.poll_read_kernel(cx, &mut buf)
                } else {
                    Pin::new(&mut self.tcp).poll_read(cx, &mut buf)
                };
                #[cfg(not(feature = "ktls"))]
                let read = Pin::new(&mut self.tcp).poll_read(cx, &mut buf);
                match read {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(())) if !buf.filled().is_empty() => buf.filled().len(),
                    Poll::Ready(_) => return Poll::Ready(()),
                }
            };
            if let Some(linger) = self.linger.as_mut() {
                linger.read += n;
            }
        }
    }

    /// Reads plaintext from a kTLS socket. A plain `recv` fails with `EIO` when the next
    /// record is not application data (the kernel leaves it queued): that record is then
    /// read with its type — the peer's `close_notify` is the end of the stream, another
    /// alert or a post-handshake message (a TLS 1.3 key update) ends the connection.
    #[cfg(feature = "ktls")]
    fn poll_read_kernel(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.tcp).poll_read(cx, buf) {
            Poll::Ready(Err(e)) if e.raw_os_error() == Some(libc::EIO) => {}
            other => return other,
        }
        use std::os::fd::AsRawFd;
        // Into a buffer of our own: the caller's room may be a byte or two, and an alert
        // read in halves would lose its type.
        let mut record = [std::mem::MaybeUninit::<u8>::uninit(); 256];
        match crate::tls::ktls::recv(self.tcp.as_raw_fd(), &mut record) {
            Ok(0) => {
                self.close_notify_received = true;
                Poll::Ready(Ok(()))
            }
            Ok(n) => {
                // Application data after all (the record before was read by now): what does
                // not fit is replayed first by the next read.
                // SAFETY: recvmsg initialised the first n bytes of `record`.
                let got: &[u8] = unsafe { std::slice::from_raw_parts(record.as_ptr().cast(), n) };
                let fits = got.len().min(buf.remaining());
                buf.put_slice(&got[..fits]);
                self.replay = got[fits..].to_vec();
                self.replayed = 0;
                Poll::Ready(Ok(()))
            }
            // EIO from recv, then nothing from recvmsg: not a state to wait in.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "kernel TLS: a record recv could not read, and recvmsg found none",
            ))),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    /// Hands `data` to rustls — all slices of a vectored write in one go, so that HTTP/2's
    /// frame heads and payloads share records — and leaves the records for `poll_flush` (HTTP/2
    /// flushes after each batch of frames: one `send` per batch, not per write). Only when
    /// rustls's buffer is full are records sent here, to make room.
    fn poll_stage(
        &mut self,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let Some(session) = self.tls.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        let took = session.write_plaintext(data)?;
        let total: usize = data.iter().map(|d| d.len()).sum();
        if took > 0 || total == 0 {
            return Poll::Ready(Ok(took));
        }
        // Full: send what is buffered, then try again.
        if self.flush_tls(cx)?.is_pending() {
            return Poll::Pending;
        }
        let Some(session) = self.tls.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        match session.write_plaintext(data)? {
            0 => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            n => Poll::Ready(Ok(n)),
        }
    }
}

/// The socket as `std::io` for rustls, within one poll: not ready is `WouldBlock` (and the
/// task is woken when it is).
struct Sync<'a, 'b> {
    tcp: &'a mut TcpStreamPoll,
    cx: &'a mut Context<'b>,
}

impl Read for Sync<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(out);
        match Pin::new(&mut *self.tcp).poll_read(self.cx, &mut buf) {
            Poll::Ready(Ok(())) => Ok(buf.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for Sync<'_, '_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.tcp).poll_write(self.cx, data) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// rustls hands every queued record at once: one `writev`, not one `send` per record.
    fn write_vectored(&mut self, data: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match Pin::new(&mut *self.tcp).poll_write_vectored(self.cx, data) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

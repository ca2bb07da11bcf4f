//! A rustls connection driven over a non-blocking socket.
//!
//! rustls is sans-I/O: records go in through `read_tls` and out through `write_tls`. Here those
//! read and write the socket's descriptor directly (`recv`/`send` with `MSG_DONTWAIT`) and, on
//! `EAGAIN`, the task awaits readiness through the runtime, as [`crate::net::io`] does for
//! plain sockets. Every await is a readiness wait and nothing is read from the socket that is
//! not handed to rustls at once, so dropping one of these futures (a `select!` losing) loses no
//! bytes.

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use rustls::ClientConnection;

use crate::error::{Error, ErrorKind};
use crate::net::io::{wait_writable, RecvError};

/// Why a handshake did not complete.
#[derive(Debug)]
pub enum HandshakeError {
    /// The peer did not finish in time.
    Timeout,
    /// The peer closed the connection.
    Closed,
    /// The socket failed.
    Io(io::Error),
    /// The peer broke the protocol or failed verification (certificate, name, version, …).
    Tls(rustls::Error),
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout => f.write_str("TLS handshake timed out"),
            Self::Closed => f.write_str("the peer closed the connection during the TLS handshake"),
            Self::Io(e) => write!(f, "TLS handshake: {e}"),
            Self::Tls(e) => write!(f, "TLS handshake failed: {e}"),
        }
    }
}

/// A TLS session as the code here drives it: the calls of rustls's buffered API. A client's
/// session is a [`super::server_tls::ServerTls`] (rustls's unbuffered API, buffers held only
/// while they hold bytes); an upstream's is rustls's buffered `ClientConnection`.
pub trait TlsSession {
    /// Reads ciphertext from `rd` (one read); `Ok(0)` at its end.
    fn read_tls(&mut self, rd: &mut dyn Read) -> io::Result<usize>;
    /// Processes what was read: handshake messages, alerts, application data.
    fn process_new_packets(&mut self) -> Result<TlsState, rustls::Error>;
    /// Reads decrypted bytes: `Ok(0)` after the peer's `close_notify`, `UnexpectedEof` after
    /// the socket ended without one, `WouldBlock` when none are ready.
    fn read_plaintext(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Encrypts as much of `data` as fits what waits to be sent (0 when full).
    fn write_plaintext(&mut self, data: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Whether records wait to be sent.
    fn wants_write(&self) -> bool;
    /// Sends waiting records to `wr` (one write).
    fn write_tls(&mut self, wr: &mut dyn Write) -> io::Result<usize>;
    /// Queues `close_notify`.
    fn send_close_notify(&mut self);
    fn is_handshaking(&self) -> bool;
}

/// What a session holds after [`TlsSession::process_new_packets`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsState {
    /// Decrypted bytes ready to read.
    pub plaintext: usize,
    /// The peer sent `close_notify`.
    pub peer_closed: bool,
}

impl TlsSession for ClientConnection {
    fn read_tls(&mut self, rd: &mut dyn Read) -> io::Result<usize> {
        let common: &mut rustls::ConnectionCommon<_> = self;
        common.read_tls(rd)
    }

    fn process_new_packets(&mut self) -> Result<TlsState, rustls::Error> {
        let common: &mut rustls::ConnectionCommon<_> = self;
        common.process_new_packets().map(|state| TlsState {
            plaintext: state.plaintext_bytes_to_read(),
            peer_closed: state.peer_has_closed(),
        })
    }

    fn read_plaintext(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader().read(buf)
    }

    fn write_plaintext(&mut self, data: &[IoSlice<'_>]) -> io::Result<usize> {
        self.writer().write_vectored(data)
    }

    fn wants_write(&self) -> bool {
        let common: &rustls::CommonState = self;
        common.wants_write()
    }

    fn write_tls(&mut self, wr: &mut dyn Write) -> io::Result<usize> {
        let common: &mut rustls::ConnectionCommon<_> = self;
        common.write_tls(wr)
    }

    fn send_close_notify(&mut self) {
        let common: &mut rustls::CommonState = self;
        common.send_close_notify()
    }

    fn is_handshaking(&self) -> bool {
        let common: &rustls::CommonState = self;
        common.is_handshaking()
    }
}

/// Runs the handshake to completion, by `deadline`.
pub async fn handshake<T: TlsSession + ?Sized>(
    stream: &TcpStream,
    conn: &mut T,
    deadline: Instant,
) -> Result<(), HandshakeError> {
    drive_handshake(stream, conn, deadline, &mut Fd(stream.as_raw_fd())).await
}

/// [`handshake`], reading the socket one TLS record at a time: rustls is never handed part of
/// a record that follows the handshake, so after it every byte received is either decrypted
/// inside rustls or still in the socket. Kernel TLS needs this to take over the socket.
#[cfg(feature = "ktls")]
pub async fn handshake_whole_records<T: TlsSession + ?Sized>(
    stream: &TcpStream,
    conn: &mut T,
    deadline: Instant,
) -> Result<(), HandshakeError> {
    drive_handshake(
        stream,
        conn,
        deadline,
        &mut Records::new(stream.as_raw_fd()),
    )
    .await
}

async fn drive_handshake<T: TlsSession + ?Sized>(
    stream: &TcpStream,
    conn: &mut T,
    deadline: Instant,
    reader: &mut impl Read,
) -> Result<(), HandshakeError> {
    let fd = stream.as_raw_fd();
    loop {
        while conn.wants_write() {
            match conn.write_tls(&mut Fd(fd)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match monoio::time::timeout(left, stream.writable(false)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(HandshakeError::Io(e)),
                        Err(_) => return Err(HandshakeError::Timeout),
                    }
                }
                Err(e) => return Err(HandshakeError::Io(e)),
            }
        }
        if !conn.is_handshaking() {
            return Ok(());
        }
        match conn.read_tls(reader) {
            Ok(0) => return Err(HandshakeError::Closed),
            Ok(_) => {
                if let Err(e) = conn.process_new_packets() {
                    // Tell the peer why, best effort: every record rustls queued (in TLS 1.3
                    // the ServerHello can precede the alert, as for a refused ALPN protocol).
                    let _ = try_flush(fd, conn);
                    return Err(HandshakeError::Tls(e));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                match monoio::time::timeout(left, stream.readable(false)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(HandshakeError::Io(e)),
                    Err(_) => return Err(HandshakeError::Timeout),
                }
            }
            Err(e) => return Err(HandshakeError::Io(e)),
        }
    }
}

/// Encrypts and sends all of `data`. Errors are the socket's (a client-side `ClientGone`, to be
/// re-attributed by callers talking to an upstream).
pub async fn send_all<T: TlsSession + ?Sized>(
    stream: &TcpStream,
    conn: &mut T,
    mut data: &[u8],
) -> Result<(), Error> {
    loop {
        // rustls takes what fits its outgoing buffer; the rest goes after a flush.
        // It fails once the session has (the peer broke the protocol, or closed): the
        // connection's end, as a socket error would be.
        let n = conn
            .write_plaintext(&[IoSlice::new(data)])
            .map_err(|e| Error::client(ErrorKind::ClientGone, format!("TLS write: {e}")))?;
        data = data.get(n..).unwrap_or_default();
        flush(stream, conn).await?;
        if data.is_empty() {
            return Ok(());
        }
    }
}

/// Sends every record rustls has queued.
pub async fn flush<T: TlsSession + ?Sized>(stream: &TcpStream, conn: &mut T) -> Result<(), Error> {
    while let Err(e) = try_flush(stream.as_raw_fd(), conn) {
        wait_writable(stream, e).await?;
    }
    Ok(())
}

/// Sends queued records without waiting: `Ok` once all are out; `Err` is the socket's error
/// (`WouldBlock` when it is full).
pub fn try_flush<T: TlsSession + ?Sized>(fd: RawFd, conn: &mut T) -> io::Result<()> {
    while conn.wants_write() {
        match conn.write_tls(&mut Fd(fd)) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Receives decrypted bytes into `buf` (at most `want`), waiting up to `timeout` for records.
/// `Ok(0)` is the end of the stream: the peer's `close_notify`, or the connection's end without
/// one (many servers close that way; HTTP framing tells a truncated message apart).
pub async fn recv_into<T: TlsSession + ?Sized>(
    stream: &TcpStream,
    conn: &mut T,
    buf: &mut Vec<u8>,
    want: usize,
    timeout: Duration,
) -> Result<usize, RecvError> {
    loop {
        if let Some(n) = try_recv(stream.as_raw_fd(), conn, buf, want)? {
            return Ok(n);
        }
        match monoio::time::timeout(timeout, stream.readable(false)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(RecvError::Failed(e.kind())),
            Err(_) => return Err(RecvError::Timeout),
        }
    }
}

/// [`recv_into`] without waiting: `Ok(None)` when the socket has nothing more yet.
pub fn try_recv<T: TlsSession + ?Sized>(
    fd: RawFd,
    conn: &mut T,
    buf: &mut Vec<u8>,
    want: usize,
) -> Result<Option<usize>, RecvError> {
    loop {
        let state = conn
            .process_new_packets()
            .map_err(|_| RecvError::Failed(io::ErrorKind::InvalidData))?;
        let ready = state.plaintext;
        if ready > 0 {
            let len = buf.len();
            buf.resize(len + ready.min(want.max(1)), 0);
            return match conn.read_plaintext(&mut buf[len..]) {
                Ok(n) => {
                    buf.truncate(len + n);
                    Ok(Some(n))
                }
                Err(e) => {
                    buf.truncate(len);
                    Err(RecvError::Failed(e.kind()))
                }
            };
        }
        if state.peer_closed {
            return Ok(Some(0));
        }
        // Replies rustls owes the peer (a key update, an alert) go out as the socket allows.
        match try_flush(fd, conn) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(RecvError::Failed(e.kind())),
        }
        match conn.read_tls(&mut Fd(fd)) {
            Ok(0) => return Ok(Some(0)),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(RecvError::Failed(e.kind())),
        }
    }
}

/// Whether an idle TLS connection is still usable: not closed, no application data waiting.
/// Records that arrived while it sat idle (TLS 1.3 session tickets) are consumed here.
pub fn idle_and_open<T: TlsSession + ?Sized>(stream: &TcpStream, conn: &mut T) -> bool {
    let fd = stream.as_raw_fd();
    // Decrypted bytes left over from the last exchange (more than its framing said) make the
    // connection unusable, exactly as unread bytes on a plain socket do.
    match conn.process_new_packets() {
        Ok(state) if state.plaintext == 0 && !state.peer_closed => {}
        _ => return false,
    }
    loop {
        match conn.read_tls(&mut Fd(fd)) {
            Ok(0) => return false,
            Ok(_) => match conn.process_new_packets() {
                Ok(state) if state.plaintext == 0 && !state.peer_closed => {}
                _ => return false,
            },
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return e.kind() == io::ErrorKind::WouldBlock,
        }
    }
}

/// The socket as `Read`/`Write` for rustls: one non-blocking syscall per call.
struct Fd(RawFd);

impl Read for Fd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: recv writes at most buf.len() bytes into a live buffer.
        let n = unsafe {
            libc::recv(
                self.0,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// The socket as `Read` that stops at every TLS record boundary: it reads a record's 5-byte
/// header, then exactly the length the header gives, never more.
#[cfg(feature = "ktls")]
struct Records {
    fd: RawFd,
    header: [u8; 5],
    /// Header bytes read so far (while `body_left` is 0).
    have: usize,
    /// Bytes of the current record's body still to read.
    body_left: usize,
}

#[cfg(feature = "ktls")]
impl Records {
    fn new(fd: RawFd) -> Self {
        Self {
            fd,
            header: [0; 5],
            have: 0,
            body_left: 0,
        }
    }
}

#[cfg(feature = "ktls")]
impl Read for Records {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let limit = if self.body_left > 0 {
            self.body_left
        } else {
            self.header.len() - self.have
        };
        let take = buf.len().min(limit);
        let n = Fd(self.fd).read(&mut buf[..take])?;
        if self.body_left > 0 {
            self.body_left -= n;
        } else {
            self.header[self.have..self.have + n].copy_from_slice(&buf[..n]);
            self.have += n;
            if self.have == self.header.len() {
                self.body_left = u16::from_be_bytes([self.header[3], self.header[4]]) as usize;
                self.have = 0;
            }
        }
        Ok(n)
    }
}

impl Write for Fd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: send reads at most buf.len() bytes from a live buffer.
        let n = unsafe {
            libc::send(
                self.0,
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// All of rustls' queued records in one `sendmsg(2)` (the default would send only the
    /// first).
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        // SAFETY: an all-zero msghdr is valid (no address, no control data).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        // IoSlice is ABI-compatible with iovec on Unix; sendmsg only reads the slices.
        msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize) as _;
        // SAFETY: msg points at `bufs`, live for the call.
        let n = unsafe { libc::sendmsg(self.0, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(all(test, feature = "ktls"))]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn ktls_handshake_reads_stop_at_record_boundaries() {
        let (mut tx, rx) = UnixStream::pair().unwrap();
        rx.set_nonblocking(true).unwrap();
        // A 10-byte record, then a record whose header says 300 but only 3 bytes arrived.
        tx.write_all(&[0x16, 3, 3, 0, 10]).unwrap();
        tx.write_all(&[7; 10]).unwrap();
        tx.write_all(&[0x17, 3, 3, 1, 44, 1, 2, 3]).unwrap();
        let mut r = Records::new(rx.as_raw_fd());
        let mut buf = [0u8; 4096];
        let mut reads = Vec::new();
        loop {
            match r.read(&mut buf) {
                Ok(n) => reads.push(buf[..n].to_vec()),
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
                    break;
                }
            }
        }
        assert_eq!(
            reads,
            vec![
                vec![0x16, 3, 3, 0, 10],
                vec![7; 10],
                vec![0x17, 3, 3, 1, 44],
                vec![1, 2, 3],
            ]
        );
        assert_eq!(r.body_left, 297);
        // The rest of the record, and nothing past it, comes next.
        tx.write_all(&[9; 297]).unwrap();
        tx.write_all(&[0x15, 3, 3, 0, 2, 1, 0]).unwrap();
        assert_eq!(r.read(&mut buf).unwrap(), 297);
        assert_eq!(r.read(&mut buf).unwrap(), 5);
        assert_eq!(r.read(&mut buf).unwrap(), 2);
    }

    #[test]
    fn ktls_handshake_counts_a_header_split_across_reads() {
        let (mut tx, rx) = UnixStream::pair().unwrap();
        rx.set_nonblocking(true).unwrap();
        let mut r = Records::new(rx.as_raw_fd());
        let mut buf = [0u8; 64];
        tx.write_all(&[0x17, 3]).unwrap();
        assert_eq!(r.read(&mut buf).unwrap(), 2);
        tx.write_all(&[3, 0, 4, 1, 2, 3, 4, 0x17]).unwrap();
        assert_eq!(r.read(&mut buf).unwrap(), 3);
        assert_eq!(r.read(&mut buf).unwrap(), 4);
        assert_eq!(r.read(&mut buf).unwrap(), 1);
    }
}

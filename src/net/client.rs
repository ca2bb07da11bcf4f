//! A client connection's byte stream: the accepted socket, and on a TLS listener the rustls
//! server session over it. The connection loop, the file backend and the proxy write and read
//! through this one type, so every backend works the same over HTTP and HTTPS.
//!
//! Plain sockets keep the zero-copy path (`sendfile(2)`, `MSG_MORE`), and so do kernel-TLS
//! sockets (`--features ktls`), whose records the kernel encrypts. Over userspace TLS a file is
//! read in pieces with `pread(2)` and encrypted, as nginx does without kernel TLS.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use monoio::net::TcpStream;

use super::disk;
use super::io::{self, RecvError};
use super::server_tls::ServerTls;
use super::tls::TlsSession;
use crate::error::{Error, ErrorKind};

/// Piece size for file bodies over userspace TLS (one full TLS record).
const TLS_FILE_PIECE: usize = 16 * 1024;
/// A file up to this size, in the page cache, leaves with its head in one send (plain, kTLS).
const ONE_SEND_FILE: u64 = 16 * 1024;

/// An accepted client connection.
pub struct ClientStream {
    tcp: TcpStream,
    layer: Layer,
    /// What the current response has sent so far.
    pub meter: Meter,
}

/// The status and size of the response being sent, for logs and counters: every byte leaves
/// through [`ClientStream`], which counts it; the protocol writing a head notes its status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meter {
    /// The final status sent (0 until a status line has gone out; a `100 Continue` is
    /// replaced by the final status).
    pub status: u16,
    /// Bytes written to the client: heads and bodies, before encryption.
    pub sent: u64,
    /// Of those, the bytes of response heads (interim ones included).
    pub head: u64,
}

impl Meter {
    /// Notes a response head of `len` bytes with `status` that went out: the final status
    /// replaces an interim one (`100`, `103`), never the reverse; a `101` stays.
    pub fn note_head(&mut self, status: u16, len: u64) {
        let interim = (100..200).contains(&self.status) && self.status != 101;
        if self.status != 0 && !interim {
            return;
        }
        self.status = status;
        self.head += len;
    }

    /// Body bytes sent: everything after the response heads (nginx's `$body_bytes_sent`).
    pub fn body(&self) -> u64 {
        self.sent.saturating_sub(self.head)
    }
}

/// What a connection parked without a task keeps of its stream besides its socket
/// ([`crate::server::park`]): who runs its TLS records, and the session when rustls does.
pub enum ParkedLayer {
    Plain,
    Rustls(Box<ServerTls>),
    #[cfg(feature = "ktls")]
    Kernel,
}

impl ParkedLayer {
    /// Ends a parked connection that is being closed on `fd`: `close_notify` over TLS, sent
    /// if the socket takes it now, as an idle connection with a task sends it.
    pub fn close(&mut self, fd: std::os::fd::RawFd) {
        match self {
            Self::Plain => {}
            Self::Rustls(s) => {
                s.send_close_notify();
                let _ = super::tls::try_flush(fd, &mut **s);
            }
            #[cfg(feature = "ktls")]
            Self::Kernel => {
                let _ = crate::tls::ktls::send_close_notify(fd);
            }
        }
    }
}

/// Who runs the TLS records of a connection.
enum Layer {
    Plain,
    /// rustls in userspace (boxed: a plain connection stays small).
    Rustls(Box<ServerTls>),
    /// The kernel (kTLS): the socket reads and writes plaintext. `early` holds application
    /// data rustls decrypted before the hand-over, returned by the first receive.
    #[cfg(feature = "ktls")]
    Kernel {
        early: Vec<u8>,
    },
}

impl ClientStream {
    pub fn plain(tcp: TcpStream) -> Self {
        Self {
            tcp,
            layer: Layer::Plain,

            meter: Meter::default(),
        }
    }

    /// A connection whose TLS handshake has completed, its records run by rustls.
    pub fn tls(tcp: TcpStream, session: Box<ServerTls>) -> Self {
        Self {
            tcp,
            layer: Layer::Rustls(session),

            meter: Meter::default(),
        }
    }

    /// A connection back from parking, with what it kept ([`ClientStream::park`]).
    pub fn resumed(tcp: TcpStream, layer: ParkedLayer) -> Self {
        let layer = match layer {
            ParkedLayer::Plain => Layer::Plain,
            ParkedLayer::Rustls(s) => Layer::Rustls(s),
            #[cfg(feature = "ktls")]
            ParkedLayer::Kernel => Layer::Kernel { early: Vec::new() },
        };
        Self {
            tcp,
            layer,
            meter: Meter::default(),
        }
    }

    /// Takes what the connection must keep to wait for its next request on its socket alone,
    /// without a task: `None` when it cannot — something is readable already (decrypted
    /// plaintext, the peer's `close_notify`), which no socket readiness would announce, or the
    /// TLS session holds bytes (records the socket did not take, part of a record). The
    /// stream is left plain; [`ClientStream::unpark`] puts the layer back.
    pub fn park(&mut self) -> Option<ParkedLayer> {
        if self.buffered() {
            return None;
        }
        if let Layer::Rustls(s) = &mut self.layer {
            // Records rustls owes the peer go now; then nothing may be held — no unsent
            // record (only a readable socket wakes a parked connection) and no part of one
            // received (it would pin a buffer for the whole idle time).
            let _ = super::tls::try_flush(self.tcp.as_raw_fd(), &mut **s);
            if s.held_bytes() > 0 {
                return None;
            }
        }
        Some(match std::mem::replace(&mut self.layer, Layer::Plain) {
            Layer::Plain => ParkedLayer::Plain,
            Layer::Rustls(s) => ParkedLayer::Rustls(s),
            #[cfg(feature = "ktls")]
            Layer::Kernel { .. } => ParkedLayer::Kernel,
        })
    }

    /// Puts back what [`ClientStream::park`] took, when the connection did not park after all.
    pub fn unpark(&mut self, layer: ParkedLayer) {
        self.layer = match layer {
            ParkedLayer::Plain => Layer::Plain,
            ParkedLayer::Rustls(s) => Layer::Rustls(s),
            #[cfg(feature = "ktls")]
            ParkedLayer::Kernel => Layer::Kernel { early: Vec::new() },
        };
    }

    /// A connection whose TLS records the kernel runs (see [`crate::tls::ktls::offload`]).
    #[cfg(feature = "ktls")]
    pub fn kernel_tls(tcp: TcpStream, early: Vec<u8>) -> Self {
        Self {
            tcp,
            layer: Layer::Kernel { early },

            meter: Meter::default(),
        }
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    pub fn tcp_mut(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    /// The socket and the count of bytes sent, when the client speaks plain HTTP (for
    /// `splice`, which writes to the socket directly).
    pub fn plain_parts(&mut self) -> Option<(&TcpStream, &mut u64)> {
        match self.layer {
            Layer::Plain => Some((&self.tcp, &mut self.meter.sent)),
            _ => None,
        }
    }

    /// Whether the client speaks TLS (in userspace or through the kernel).
    pub fn is_tls(&self) -> bool {
        !matches!(self.layer, Layer::Plain)
    }

    /// Writes all of `data`; with `more`, a plain socket is told that a body follows.
    pub async fn send(&mut self, data: &[u8], more: bool) -> Result<(), Error> {
        match &mut self.layer {
            Layer::Plain => {
                return io::send_all_counted(&self.tcp, data, more, &mut self.meter.sent).await
            }
            // What rustls took counts once the socket took it all.
            Layer::Rustls(s) => {
                let sent = super::tls::send_all(&self.tcp, &mut **s, data).await;
                if sent.is_ok() {
                    self.meter.sent += data.len() as u64;
                }
                sent
            }
            // Not `MSG_MORE`: kernel TLS would hold the record open, without TCP's 200 ms
            // limit, until more data came — a streamed response waiting on its upstream would
            // stall.
            #[cfg(feature = "ktls")]
            Layer::Kernel { .. } => {
                io::send_all_counted(&self.tcp, data, false, &mut self.meter.sent).await
            }
        }
    }

    /// Sends a response `head` and then `len` bytes of the file `fd` from `offset`:
    /// `sendfile(2)` on a plain or kTLS socket (the head with `MSG_MORE` on a plain one; a
    /// small file in the page cache read into the head's buffer and sent with it),
    /// `pread(2)` and encryption over userspace TLS, where the head shares the first record
    /// with the file's first bytes — one record and one send for a small file. Either way the
    /// disk is read off the worker ([`disk`]).
    pub async fn send_head_and_file(
        &mut self,
        head: &mut Vec<u8>,
        file: disk::Source,
        offset: u64,
        len: u64,
    ) -> Result<(), Error> {
        let Layer::Rustls(session) = &mut self.layer else {
            // A small file the page cache holds leaves with its head, in one send: one
            // `preadv2(RWF_NOWAIT)` is both the read and the proof that no disk is needed.
            if !file.remote && len <= ONE_SEND_FILE {
                let filled = head.len();
                // SAFETY: the backend holds the file open until its response is sent.
                let fd = unsafe { BorrowedFd::borrow_raw(file.fd) };
                match super::sys::pread_nowait_append(fd, head, len as usize, offset) {
                    Ok(n) if n as u64 == len => return self.send(head, false).await,
                    _ => head.truncate(filled),
                }
            }
            self.send(head, true).await?;
            return disk::sendfile_all(&self.tcp, file, offset, len, &mut self.meter.sent).await;
        };
        let mut out = Vec::with_capacity(TLS_FILE_PIECE.min(head.len() + len as usize));
        out.extend_from_slice(head);
        let (mut at, end) = (offset, offset.saturating_add(len));
        while at < end {
            let room = TLS_FILE_PIECE.saturating_sub(out.len()).max(1024);
            let want = ((end - at) as usize).min(room);
            // Until a byte has gone, a failed read is still answered (503 when the file I/O
            // threads are full or late); after, it cuts the response off.
            let begun = at > offset;
            let read = disk::pread_append(file, &mut out, want, at).await;
            let n = read.map_err(|e| if begun { e.cut_off() } else { e })?;
            if n == 0 {
                return Err(Error::client(
                    ErrorKind::ClientGone,
                    "file shrank while it was being sent",
                ));
            }
            super::tls::send_all(&self.tcp, &mut **session, &out).await?;
            self.meter.sent += out.len() as u64;
            out.clear();
            at += n as u64;
        }
        if !out.is_empty() {
            super::tls::send_all(&self.tcp, &mut **session, &out).await?;
            self.meter.sent += out.len() as u64;
        }
        Ok(())
    }

    /// Receives into `buf` (see [`io::recv_into`]); `Ok(0)` is the end of the stream.
    pub async fn recv_into(
        &mut self,
        buf: &mut Vec<u8>,
        want: usize,
        timeout: Duration,
    ) -> Result<usize, RecvError> {
        match &mut self.layer {
            Layer::Plain => io::recv_into(&self.tcp, buf, want, timeout).await,
            Layer::Rustls(s) => {
                super::tls::recv_into(&self.tcp, &mut **s, buf, want, timeout).await
            }
            #[cfg(feature = "ktls")]
            Layer::Kernel { early } if !early.is_empty() => {
                let n = early.len();
                buf.append(early);
                Ok(n)
            }
            #[cfg(feature = "ktls")]
            Layer::Kernel { .. } => {
                io::recv_with(&self.tcp, buf, want, timeout, crate::tls::ktls::recv).await
            }
        }
    }

    /// Waits until there is something to read, for at most `timeout`: `false` on timeout or a
    /// failed socket. Over TLS, decrypted bytes already buffered count at once.
    pub async fn readable(&mut self, timeout: Duration) -> bool {
        if self.buffered() {
            return true;
        }
        matches!(
            monoio::time::timeout(timeout, self.tcp.readable(false)).await,
            Ok(Ok(()))
        )
    }

    /// Waits until there is something to read (or the socket fails, or the worker's idle sweep
    /// shuts its read side), without a timer of its own: `false` when the socket failed.
    pub async fn wait_readable(&mut self) -> bool {
        self.buffered() || self.tcp.readable(false).await.is_ok()
    }

    /// Whether something can be read without the socket: plaintext that rustls decrypted
    /// already (or its end), or kTLS's early data.
    fn buffered(&mut self) -> bool {
        match &mut self.layer {
            Layer::Plain => false,
            Layer::Rustls(s) => s
                .process_new_packets()
                .map_or(true, |st| st.plaintext > 0 || st.peer_closed),
            #[cfg(feature = "ktls")]
            Layer::Kernel { early } => !early.is_empty(),
        }
    }

    /// Shuts our direction: `close_notify` first over TLS (sent if the socket takes it now).
    pub fn shutdown_write(&mut self) {
        match &mut self.layer {
            Layer::Plain => {}
            Layer::Rustls(s) => {
                s.send_close_notify();
                let _ = super::tls::try_flush(self.tcp.as_raw_fd(), &mut **s);
            }
            #[cfg(feature = "ktls")]
            Layer::Kernel { .. } => {
                let _ = crate::tls::ktls::send_close_notify(self.tcp.as_raw_fd());
            }
        }
        // SAFETY: shutdown on a descriptor owned by a live stream.
        unsafe { libc::shutdown(self.tcp.as_raw_fd(), libc::SHUT_WR) };
    }

    /// Whether the client chose HTTP/2 by ALPN.
    pub fn alpn_h2(&self) -> bool {
        match &self.layer {
            Layer::Rustls(s) => s.alpn_protocol() == Some(b"h2"),
            _ => false,
        }
    }

    /// Hands the connection to HTTP/2 ([`super::h2io`]), `replay` (bytes already read) first.
    pub fn into_poll(self, replay: Vec<u8>) -> std::io::Result<super::h2io::PollStream<ServerTls>> {
        match self.layer {
            Layer::Plain => {
                super::h2io::PollStream::new(self.tcp, None, replay).map(|s| s.lingering())
            }
            Layer::Rustls(s) => {
                super::h2io::PollStream::new(self.tcp, Some(s), replay).map(|s| s.lingering())
            }
            #[cfg(feature = "ktls")]
            Layer::Kernel { mut early } => {
                early.extend_from_slice(&replay);
                super::h2io::PollStream::kernel_tls(self.tcp, early).map(|s| s.lingering())
            }
        }
    }

    /// The socket and the userspace TLS session, for a tunnel that drives both directions at
    /// once. On kernel TLS the socket carries plaintext and there is no session.
    pub fn parts(&mut self) -> (&TcpStream, Option<&mut ServerTls>) {
        match &mut self.layer {
            Layer::Rustls(s) => (&self.tcp, Some(&mut **s)),
            _ => (&self.tcp, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meter_keeps_the_final_status() {
        let mut m = Meter::default();
        m.note_head(100, 25);
        assert_eq!(m.status, 100);
        m.note_head(201, 30);
        assert_eq!(m.status, 201);
        assert_eq!(m.head, 25 + 30, "both heads");
        m.note_head(500, 10);
        assert_eq!(
            (m.status, m.head),
            (201, 55),
            "nothing after a final status"
        );
        let mut m = Meter::default();
        m.note_head(101, 30);
        m.note_head(200, 30);
        assert_eq!(m.status, 101);
        m.sent = 100;
        assert_eq!(m.body(), 70);
    }
}

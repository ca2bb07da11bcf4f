//! A client connection's byte stream: the accepted socket, and on a TLS listener the rustls
//! server session over it. The connection loop, the file backend and the proxy write and read
//! through this one type, so every backend works the same over HTTP and HTTPS.
//!
//! Plain sockets keep the zero-copy path (`sendfile(2)`, `MSG_MORE`). Over userspace TLS a file
//! is read in pieces with `pread(2)` and encrypted, as nginx does without kernel TLS.

use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use monoio::net::TcpStream;
use rustls::ServerConnection;

use super::io::{self, RecvError};
use crate::error::{Error, ErrorKind};
use crate::tls;

/// Piece size for file bodies over userspace TLS (one full TLS record).
const TLS_FILE_PIECE: usize = 16 * 1024;

/// An accepted client connection.
pub struct ClientStream {
    tcp: TcpStream,
    /// The TLS session on a TLS listener (boxed: a plain connection stays small).
    tls: Option<Box<ServerConnection>>,
}

impl ClientStream {
    pub fn plain(tcp: TcpStream) -> Self {
        Self { tcp, tls: None }
    }

    /// A connection whose TLS handshake has completed.
    pub fn tls(tcp: TcpStream, session: ServerConnection) -> Self {
        Self {
            tcp,
            tls: Some(Box::new(session)),
        }
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    pub fn tcp_mut(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Writes all of `data`; with `more`, a plain socket is told that a body follows.
    pub async fn send(&mut self, data: &[u8], more: bool) -> Result<(), Error> {
        match &mut self.tls {
            None => io::send_all(&self.tcp, data, more).await,
            Some(s) => tls::io::send_all(&self.tcp, s, data).await,
        }
    }

    /// Sends `len` bytes of the file `fd` from `offset`: `sendfile(2)` on a plain socket,
    /// `pread(2)` and encryption over TLS.
    pub async fn send_file(&mut self, fd: RawFd, offset: u64, len: u64) -> Result<(), Error> {
        let Some(session) = &mut self.tls else {
            return io::sendfile_all(&self.tcp, fd, offset, len).await;
        };
        let mut piece = vec![0u8; TLS_FILE_PIECE.min(len as usize)];
        let (mut at, end) = (offset, offset.saturating_add(len));
        while at < end {
            let want = ((end - at) as usize).min(piece.len());
            // SAFETY: pread writes at most `want` bytes into the live buffer `piece`.
            let n = unsafe { libc::pread(fd, piece.as_mut_ptr().cast(), want, at as libc::off_t) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::internal(format!("reading the file: {e}")));
            }
            if n == 0 {
                return Err(Error::client(
                    ErrorKind::ClientGone,
                    "file shrank while it was being sent",
                ));
            }
            tls::io::send_all(&self.tcp, session, &piece[..n as usize]).await?;
            at += n as u64;
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
        match &mut self.tls {
            None => io::recv_into(&self.tcp, buf, want, timeout).await,
            Some(s) => tls::io::recv_into(&self.tcp, s, buf, want, timeout).await,
        }
    }

    /// Waits until there is something to read, for at most `timeout`: `false` on timeout or a
    /// failed socket. Over TLS, decrypted bytes already buffered count at once.
    pub async fn readable(&mut self, timeout: Duration) -> bool {
        if let Some(s) = &mut self.tls {
            if s.process_new_packets().map_or(true, |st| {
                st.plaintext_bytes_to_read() > 0 || st.peer_has_closed()
            }) {
                return true;
            }
        }
        matches!(
            monoio::time::timeout(timeout, self.tcp.readable(false)).await,
            Ok(Ok(()))
        )
    }

    /// Shuts our direction: `close_notify` first over TLS (sent if the socket takes it now).
    pub fn shutdown_write(&mut self) {
        if let Some(s) = &mut self.tls {
            s.send_close_notify();
            let _ = tls::io::try_flush(self.tcp.as_raw_fd(), s);
        }
        // SAFETY: shutdown on a descriptor owned by a live stream.
        unsafe { libc::shutdown(self.tcp.as_raw_fd(), libc::SHUT_WR) };
    }

    /// The socket and the TLS session, for a tunnel that drives both directions at once.
    pub fn parts(&mut self) -> (&TcpStream, Option<&mut ServerConnection>) {
        (&self.tcp, self.tls.as_deref_mut())
    }
}

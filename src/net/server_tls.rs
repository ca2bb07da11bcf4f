//! A client's TLS session on rustls's unbuffered API, whose buffers exist only while they hold
//! bytes: an idle HTTPS connection keeps its keys and state (about 2 KiB) and no buffer.
//!
//! rustls's buffered `ServerConnection` keeps a 4 KiB receive buffer for as long as the
//! connection lives (it shrinks an idle one to 4 KiB, never to nothing). Here the bytes
//! received, the plaintext not yet read and the records not yet sent each sit in a [`Buf`] taken
//! from the worker thread's pool when bytes arrive and given back the moment it is empty.
//!
//! [`ServerTls`] offers the calls the buffered API offers ([`TlsSession`]), so the code that
//! drives sessions over sockets ([`super::tls`], [`super::h2io`], [`super::tunnel`]) runs this
//! one and an upstream's buffered `ClientConnection` alike. The unbuffered contract's sharp
//! edges are kept here:
//!
//! - Bytes rustls retains (a handshake message split over records) stay at the same offsets
//!   from the front of what it is handed next: the receive buffer only ever drops what rustls
//!   says to discard, from its front.
//! - An error is remembered and returned from then on; rustls is not called again after one
//!   (it would decrypt the bad record again and send a second alert), except to encode the
//!   alert it queued.
//! - rustls stops after each record it decrypts, so it holds no plaintext limit of its own:
//!   reading from the socket stops while 16 KiB of plaintext wait unread, as rustls's buffered
//!   API does.
//! - The name the client asked for (SNI) is recorded by the certificate resolver, which rustls
//!   calls synchronously while it processes the ClientHello, and taken here right after.

use std::cell::RefCell;
use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};

use super::tls::{TlsSession, TlsState};

/// Size of a receive (and plaintext) buffer: one TLS record as it comes off the wire (16 KiB
/// of payload, 2 KiB of expansion, the 5-byte header) with room to spare.
const IN_SIZE: usize = 20 * 1024;
/// Size of a send buffer: 64 KiB of application data encrypted (the buffered API's default
/// limit on what waits to be sent), so a large body leaves four records per `send`.
const OUT_SIZE: usize = 65 * 1024;
/// Room kept in a send buffer for the records' headers, nonces and tags.
const OUT_OVERHEAD: usize = 512;
/// How large the receive buffer may grow for a handshake message that spans records (rustls's
/// limit on one message is 64 KiB).
const MAX_INPUT: usize = 64 * 1024 + IN_SIZE;
/// Decrypted bytes waiting to be read, past which nothing more is read from the socket.
const MAX_PENDING_PLAIN: usize = 16 * 1024;
/// Free buffers of each size a worker thread keeps for its connections.
const POOL_KEEP: usize = 16;

thread_local! {
    /// This thread's free receive buffers, each `IN_SIZE` long (zeroed once, when first made).
    static IN_POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    /// This thread's free send buffers, each `OUT_SIZE` long.
    static OUT_POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    /// Where the slices of a vectored write are gathered for `encrypt`, which takes one.
    static STAGING: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A client's TLS session (see the module documentation).
pub struct ServerTls {
    conn: UnbufferedServerConnection,
    /// Ciphertext received and not yet processed; bytes rustls retains at the front.
    input: Buf<IN_SIZE>,
    /// Plaintext decrypted and not yet read.
    plain: Buf<IN_SIZE>,
    /// Records encoded and not yet sent.
    output: Buf<OUT_SIZE>,
    /// The first error; every later call returns it.
    error: Option<Box<rustls::Error>>,
    /// The peer's `close_notify` arrived.
    peer_closed: bool,
    /// The socket ended (a read returned 0).
    eof: bool,
    /// The name the client asked for (SNI), lower-case.
    sni: Option<Box<str>>,
}

impl ServerTls {
    pub fn new(config: Arc<rustls::ServerConfig>) -> Result<Self, rustls::Error> {
        Ok(Self {
            conn: UnbufferedServerConnection::new(config)?,
            input: Buf::default(),
            plain: Buf::default(),
            output: Buf::default(),
            error: None,
            peer_closed: false,
            eof: false,
            sni: None,
        })
    }

    /// The name the client asked for (SNI), lower-case, once the ClientHello was processed.
    pub fn server_name(&self) -> Option<&str> {
        self.sni.as_deref()
    }

    /// The protocol the client chose by ALPN.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// The cipher suite agreed on, once the handshake has got that far.
    pub fn negotiated_cipher_suite(&self) -> Option<rustls::SupportedCipherSuite> {
        self.conn.negotiated_cipher_suite()
    }

    /// Bytes of buffer this session holds (0 when idle: nothing received, unread or unsent).
    pub fn held_bytes(&self) -> usize {
        self.input.data.capacity() + self.plain.data.capacity() + self.output.data.capacity()
    }

    /// Whether received bytes wait that rustls has not made a record of yet (part of one).
    pub fn has_unprocessed_input(&self) -> bool {
        !self.input.is_empty()
    }

    /// Takes the plaintext decrypted and not yet read (for kernel TLS's hand-over).
    pub fn take_plaintext(&mut self) -> Vec<u8> {
        let out = self.plain.filled().to_vec();
        self.plain.consume(out.len());
        out
    }

    /// The session's keys, for the kernel to run its records (kTLS). The session must be past
    /// its handshake with nothing left to send (rustls refuses otherwise).
    pub fn into_kernel(self) -> Result<rustls::ExtractedSecrets, rustls::Error> {
        let Self { conn, .. } = self;
        conn.dangerous_into_kernel_connection()
            .map(|(secrets, _)| secrets)
    }

    /// Runs rustls over the bytes received: decrypted data moves to `plain`, records to send
    /// to `output`, until rustls needs more bytes or can take data to send. With `write`, that
    /// data is encrypted then (how many bytes of it is returned).
    fn pump(&mut self, mut write: Option<Outgoing<'_>>) -> Result<usize, rustls::Error> {
        if let Some(e) = &self.error {
            return Err((**e).clone());
        }
        let mut wrote = 0;
        loop {
            let Self {
                conn,
                input,
                plain,
                output,
                peer_closed,
                ..
            } = self;
            let UnbufferedStatus { discard, state } = conn.process_tls_records(input.filled_mut());
            let mut done = false;
            let outcome = match state {
                Err(e) => Err(e),
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    let mut got = Ok(());
                    while let Some(record) = traffic.next_record() {
                        match record {
                            Ok(r) => plain.append(r.payload),
                            Err(e) => {
                                got = Err(e);
                                break;
                            }
                        }
                    }
                    got
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => loop {
                    match encode.encode(output.room(0)) {
                        Ok(n) => {
                            output.end += n;
                            break Ok(());
                        }
                        Err(EncodeError::InsufficientSize(s)) => {
                            output.room(s.required_size);
                        }
                        Err(EncodeError::AlreadyEncoded) => break Ok(()),
                    }
                },
                // The records are in `output` already; the caller sends them.
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    Ok(())
                }
                Ok(ConnectionState::PeerClosed) => {
                    *peer_closed = true;
                    Ok(())
                }
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    done = true;
                    match write.take() {
                        None => Ok(()),
                        Some(Outgoing::Data(data)) => loop {
                            match traffic.encrypt(data, output.room(0)) {
                                Ok(n) => {
                                    output.end += n;
                                    wrote = data.len();
                                    break Ok(());
                                }
                                Err(EncryptError::InsufficientSize(s)) => {
                                    output.room(s.required_size);
                                }
                                Err(EncryptError::EncryptExhausted) => {
                                    break Err(rustls::Error::EncryptError);
                                }
                            }
                        },
                        Some(Outgoing::CloseNotify) => loop {
                            match traffic.queue_close_notify(output.room(0)) {
                                Ok(n) => {
                                    output.end += n;
                                    break Ok(());
                                }
                                Err(EncryptError::InsufficientSize(s)) => {
                                    output.room(s.required_size);
                                }
                                Err(EncryptError::EncryptExhausted) => break Ok(()),
                            }
                        },
                    }
                }
                // Early data is never accepted (rustls's default, kept), so never offered.
                Ok(ConnectionState::ReadEarlyData(_)) => Err(rustls::Error::General(
                    "early data offered, but it is not accepted".into(),
                )),
                Ok(ConnectionState::BlockedHandshake | ConnectionState::Closed) => {
                    done = true;
                    Ok(())
                }
                Ok(_) => {
                    done = true;
                    Ok(())
                }
            };
            input.discard(discard);
            if self.conn.is_handshaking() {
                if let Some(name) = crate::tls::server::take_sni() {
                    self.sni = Some(name.into_boxed_str());
                }
            }
            if let Err(e) = outcome {
                self.fail(e.clone());
                return Err(e);
            }
            if done {
                break;
            }
        }
        self.input.release_if_empty();
        self.plain.release_if_empty();
        self.output.release_if_empty();
        if let Some(Outgoing::Data(_)) = write {
            // Still handshaking or closed: nothing can be sent.
            return Err(rustls::Error::General(
                "no application data can be sent on this TLS connection now".into(),
            ));
        }
        Ok(wrote)
    }

    /// Remembers `e`, and encodes the records rustls queued with it (the alert telling the
    /// peer why, and whatever preceded it) for the caller to send. rustls is not asked to
    /// process anything after this.
    fn fail(&mut self, e: rustls::Error) {
        self.error = Some(Box::new(e));
        for _ in 0..16 {
            if !self.conn.wants_write() {
                break;
            }
            let Self {
                conn,
                input,
                output,
                ..
            } = self;
            let UnbufferedStatus { discard, state } = conn.process_tls_records(input.filled_mut());
            let Ok(ConnectionState::EncodeTlsData(mut encode)) = state else {
                break;
            };
            loop {
                match encode.encode(output.room(0)) {
                    Ok(n) => {
                        output.end += n;
                        break;
                    }
                    Err(EncodeError::InsufficientSize(s)) => {
                        output.room(s.required_size);
                    }
                    Err(EncodeError::AlreadyEncoded) => break,
                }
            }
            input.discard(discard);
        }
        self.output.release_if_empty();
    }
}

/// What [`ServerTls::pump`] is asked to send once rustls can.
enum Outgoing<'a> {
    Data(&'a [u8]),
    CloseNotify,
}

impl TlsSession for ServerTls {
    fn read_tls(&mut self, rd: &mut dyn Read) -> io::Result<usize> {
        if self.peer_closed || self.error.is_some() {
            return Ok(0);
        }
        if self.plain.len() >= MAX_PENDING_PLAIN {
            return Err(io::Error::other("received plaintext buffer full"));
        }
        if self.input.len() >= MAX_INPUT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS message buffer full",
            ));
        }
        let read = rd.read(self.input.room(1));
        match read {
            Ok(0) => self.eof = true,
            Ok(n) => self.input.end += n,
            Err(_) => {}
        }
        self.input.release_if_empty();
        read
    }

    fn process_new_packets(&mut self) -> Result<TlsState, rustls::Error> {
        self.pump(None)?;
        Ok(TlsState {
            plaintext: self.plain.len(),
            peer_closed: self.peer_closed,
        })
    }

    fn read_plaintext(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.plain.is_empty() {
            let n = self.plain.len().min(buf.len());
            buf[..n].copy_from_slice(&self.plain.filled()[..n]);
            self.plain.consume(n);
            return Ok(n);
        }
        if self.peer_closed {
            return Ok(0);
        }
        if self.eof {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn write_plaintext(&mut self, data: &[IoSlice<'_>]) -> io::Result<usize> {
        let room = OUT_SIZE.saturating_sub(self.output.len() + OUT_OVERHEAD);
        let total: usize = data.iter().map(|d| d.len()).sum();
        let take = total.min(room);
        if take == 0 {
            return Ok(0);
        }
        let sent = match data.iter().find(|d| !d.is_empty()) {
            Some(first) if first.len() >= take => self.pump(Some(Outgoing::Data(&first[..take]))),
            _ => STAGING.with(|staging| {
                let mut staging = staging.borrow_mut();
                staging.clear();
                for d in data {
                    let left = take - staging.len();
                    if left == 0 {
                        break;
                    }
                    staging.extend_from_slice(&d[..d.len().min(left)]);
                }
                let sent = self.pump(Some(Outgoing::Data(&staging)));
                if staging.capacity() > OUT_SIZE {
                    *staging = Vec::new();
                }
                sent
            }),
        };
        sent.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    fn wants_write(&self) -> bool {
        !self.output.is_empty()
    }

    fn write_tls(&mut self, wr: &mut dyn Write) -> io::Result<usize> {
        if self.output.is_empty() {
            return Ok(0);
        }
        let n = wr.write(self.output.filled())?;
        self.output.consume(n);
        Ok(n)
    }

    fn send_close_notify(&mut self) {
        if self.error.is_none() {
            let _ = self.pump(Some(Outgoing::CloseNotify));
        }
    }

    fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }
}

/// A buffer from the thread's pool of `SIZE`-byte buffers while it holds bytes (`start..end`),
/// nothing while empty.
#[derive(Default)]
struct Buf<const SIZE: usize> {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl<const SIZE: usize> Buf<SIZE> {
    fn pool() -> &'static std::thread::LocalKey<RefCell<Vec<Vec<u8>>>> {
        if SIZE == OUT_SIZE {
            &OUT_POOL
        } else {
            &IN_POOL
        }
    }

    fn len(&self) -> usize {
        self.end - self.start
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    fn filled_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.end]
    }

    /// Drops `n` bytes from the front; the buffer goes back to the pool once empty.
    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        self.release_if_empty();
    }

    /// Drops `n` bytes from the front, keeping the buffer (rustls's `discard`).
    fn discard(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    fn append(&mut self, bytes: &[u8]) {
        let room = self.room(bytes.len());
        room[..bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// The free space after the bytes held, at least `want` long (and never empty): the
    /// buffer is taken from the pool, its bytes moved to the front, or it grows, as needed.
    fn room(&mut self, want: usize) -> &mut [u8] {
        let want = want.max(1);
        if self.data.is_empty() {
            self.data = Self::pool()
                .with(|p| p.borrow_mut().pop())
                .unwrap_or_else(|| vec![0; SIZE]);
            self.start = 0;
            self.end = 0;
        }
        if self.data.len() - self.end < want && self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.data.len() - self.end < want {
            let grown = (self.data.len() * 2).min(MAX_INPUT).max(self.end + want);
            self.data.resize(grown, 0);
        }
        &mut self.data[self.end..]
    }

    /// Gives the buffer back to the pool when it holds nothing (a grown one is dropped).
    fn release_if_empty(&mut self) {
        if !self.is_empty() || self.data.capacity() == 0 {
            return;
        }
        let data = std::mem::take(&mut self.data);
        self.start = 0;
        self.end = 0;
        if data.len() == SIZE {
            Self::pool().with(|p| {
                let mut pool = p.borrow_mut();
                if pool.len() < POOL_KEEP {
                    pool.push(data);
                }
            });
        }
    }
}

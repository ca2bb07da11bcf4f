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
const OUT_SIZE: usize = 64 * 1024 + OUT_OVERHEAD;
/// Room kept in a send buffer for the records' headers, nonces and tags.
const OUT_OVERHEAD: usize = 512;
/// How large the receive buffer may grow for a handshake message that spans records (rustls's
/// limit on one message is 64 KiB).
const MAX_INPUT: usize = 64 * 1024 + IN_SIZE;
/// The smallest part of a larger write that is encrypted as a record of its own when the send
/// buffer is nearly full (below it, the buffer is sent first).
const MIN_RECORD: usize = 4096;
/// Free space below which the receive buffer moves its bytes to the front before a read (a
/// record's header is 5 bytes).
const MIN_READ: usize = 512;
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
    /// rustls has processed every byte received and has nothing for us: asking again before
    /// more bytes arrive would find nothing (the request path asks often).
    settled: bool,
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
            settled: false,
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
        if write.is_none() && self.settled {
            return Ok(0);
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
            let handshaking = conn.is_handshaking();
            if handshaking {
                // Nothing left over from elsewhere is taken for this connection's name.
                crate::tls::server::take_sni();
            }
            let UnbufferedStatus { discard, state } = conn.process_tls_records(input.filled_mut());
            let mut extra_discard = 0;
            let mut done = false;
            let outcome = match state {
                Err(e) => Err(e),
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    let mut got = Ok(());
                    while let Some(record) = traffic.next_record() {
                        match record {
                            Ok(r) => {
                                // 0 in rustls 0.23 (it copies records out); counted all the
                                // same, as the contract says.
                                extra_discard += r.discard;
                                plain.append(r.payload);
                            }
                            Err(e) => {
                                got = Err(e);
                                break;
                            }
                        }
                    }
                    got
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    // `AlreadyEncoded` cannot happen: each state is encoded once.
                    let _ = output.fill(|room| encode.encode(room), encode_needs);
                    Ok(())
                }
                // The records are in `output` already; the caller sends them.
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    Ok(())
                }
                Ok(ConnectionState::PeerClosed) => {
                    *peer_closed = true;
                    // rustls reads nothing after the peer's close_notify: what came after it
                    // is dropped, and its buffer goes back.
                    extra_discard = input.len().saturating_sub(discard);
                    Ok(())
                }
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    done = true;
                    match write.take() {
                        None => Ok(()),
                        Some(Outgoing::Data(data)) => output
                            .fill(|room| traffic.encrypt(data, room), encrypt_needs)
                            .map(|_| wrote = data.len())
                            // The keys' limit (TLS 1.2; TLS 1.3 refreshes them).
                            .map_err(|_| rustls::Error::EncryptError),
                        Some(Outgoing::CloseNotify) => {
                            let _ =
                                output.fill(|room| traffic.queue_close_notify(room), encrypt_needs);
                            Ok(())
                        }
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
            input.discard(discard + extra_discard);
            if handshaking {
                if let Some(name) = crate::tls::server::take_sni() {
                    self.sni = name.map(String::into_boxed_str);
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
        self.settled = true;
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
        // Never processed now (rustls is not called again but to encode the alert).
        let retained = self.input.len();
        self.input.discard(retained);
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
            let _ = output.fill(|room| encode.encode(room), encode_needs);
            input.discard(discard);
        }
        self.input.release_if_empty();
        self.output.release_if_empty();
    }
}

/// The size rustls asks for when its records do not fit.
fn encode_needs(e: &EncodeError) -> Option<usize> {
    match e {
        EncodeError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    }
}

fn encrypt_needs(e: &EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
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
        let read = rd.read(self.input.room(MIN_READ));
        match read {
            Ok(0) => self.eof = true,
            Ok(n) => {
                self.input.end += n;
                self.settled = false;
            }
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
        // Not a small record in a nearly full buffer: what waits is sent first.
        if take == 0 || (take < total && take < MIN_RECORD && !self.output.is_empty()) {
            return Ok(0);
        }
        let sent = match data.iter().find(|d| !d.is_empty()) {
            Some(first) if first.len() >= take => self.pump(Some(Outgoing::Data(&first[..take]))),
            _ => STAGING.with(|staging| {
                let mut staging = staging.borrow_mut();
                staging.clear();
                staging.reserve_exact(take);
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

    /// Queued once the handshake is done (rustls offers no way to write before); no caller
    /// closes a session mid-handshake, it just drops it.
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

    /// Appends what `write` puts into the free space; when it does not fit, the buffer grows
    /// to the size `needs` reads from the error, and `write` runs again.
    fn fill<E>(
        &mut self,
        mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
        needs: impl Fn(&E) -> Option<usize>,
    ) -> Result<usize, E> {
        loop {
            match write(self.room(0)) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) => match needs(&e) {
                    Some(size) => {
                        self.room(size);
                    }
                    None => return Err(e),
                },
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::server::{ClientHello, ResolvesServerCert};
    use rustls::sign::CertifiedKey;
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};

    /// One certificate, and the name of every ClientHello noted as the real resolver does.
    #[derive(Debug)]
    struct Noting(Arc<CertifiedKey>);

    impl ResolvesServerCert for Noting {
        fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            if let Some(name) = hello.server_name() {
                crate::tls::server::note_sni(Some(name.to_ascii_lowercase()));
            }
            Some(self.0.clone())
        }
    }

    fn configs(
        version: &'static rustls::SupportedProtocolVersion,
        client_fragment: Option<usize>,
    ) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![
            "localhost".into(),
            "a.test".into(),
            "127.0.0.1".into(),
        ])
        .unwrap()
        .self_signed(&key)
        .unwrap();
        let der = CertificateDer::from(cert.der().to_vec());
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&private).unwrap();
        let certified = Arc::new(CertifiedKey::new(vec![der.clone()], signing));
        let mut roots = RootCertStore::empty();
        roots.add(der).unwrap();
        let server = ServerConfig::builder_with_protocol_versions(&[version])
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Noting(certified)));
        let mut client = ClientConfig::builder_with_protocol_versions(&[version])
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.max_fragment_size = client_fragment;
        (Arc::new(server), Arc::new(client))
    }

    /// A reader handing out at most `step` bytes per read.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.bytes.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = self.bytes.len().min(self.step).min(buf.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    /// The client's records to the server, `step` bytes per read; the server processes each.
    fn to_server(client: &mut ClientConnection, server: &mut ServerTls, step: usize) {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        let mut rd = Trickle { bytes: &wire, step };
        while !rd.bytes.is_empty() {
            server.read_tls(&mut rd).unwrap();
            server.process_new_packets().unwrap();
        }
    }

    /// The server's records to the client; returns the plaintext the client read.
    fn to_client(server: &mut ServerTls, client: &mut ClientConnection) -> Vec<u8> {
        let mut wire = Vec::new();
        while server.wants_write() {
            TlsSession::write_tls(server, &mut wire).unwrap();
        }
        let mut rd = wire.as_slice();
        let mut got = Vec::new();
        while !rd.is_empty() {
            client.read_tls(&mut rd).unwrap();
            client.process_new_packets().unwrap();
            let _ = client.reader().read_to_end(&mut got);
        }
        got
    }

    fn connect(
        version: &'static rustls::SupportedProtocolVersion,
        client_fragment: Option<usize>,
        step: usize,
    ) -> (ServerTls, ClientConnection) {
        connect_to("A.test", version, client_fragment, step)
    }

    fn connect_to(
        name: &'static str,
        version: &'static rustls::SupportedProtocolVersion,
        client_fragment: Option<usize>,
        step: usize,
    ) -> (ServerTls, ClientConnection) {
        let (server_config, client_config) = configs(version, client_fragment);
        let mut server = ServerTls::new(server_config).unwrap();
        let name = ServerName::try_from(name).unwrap();
        let mut client = ClientConnection::new(client_config, name).unwrap();
        for _ in 0..10 {
            to_server(&mut client, &mut server, step);
            to_client(&mut server, &mut client);
            if !server.is_handshaking() && !client.is_handshaking() {
                break;
            }
        }
        assert!(!server.is_handshaking() && !client.is_handshaking());
        (server, client)
    }

    fn read_all(server: &mut ServerTls, chunk: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = vec![0; chunk];
        loop {
            match server.read_plaintext(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    #[test]
    fn an_idle_session_holds_no_buffer() {
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let (mut server, mut client) = connect(version, None, usize::MAX);
            assert_eq!(server.server_name(), Some("a.test"), "{version:?}");
            for round in 0..3 {
                client
                    .writer()
                    .write_all(b"GET / HTTP/1.1\r\n\r\n")
                    .unwrap();
                to_server(&mut client, &mut server, usize::MAX);
                assert_eq!(read_all(&mut server, 4096), b"GET / HTTP/1.1\r\n\r\n");
                let answer = IoSlice::new(b"HTTP/1.1 200 OK\r\n\r\n");
                assert_eq!(server.write_plaintext(&[answer]).unwrap(), 19);
                assert!(server.held_bytes() > 0);
                assert_eq!(
                    to_client(&mut server, &mut client),
                    b"HTTP/1.1 200 OK\r\n\r\n"
                );
                assert_eq!(server.held_bytes(), 0, "{version:?}, round {round}");
            }
        }
    }

    #[test]
    fn the_name_is_the_clients_own() {
        let (server, _) = connect(&rustls::version::TLS13, None, usize::MAX);
        assert_eq!(server.server_name(), Some("a.test"));
        // A name noted for no connection (or left by one) is not taken by the next, and a
        // client that sends none (an IP address) has none.
        crate::tls::server::note_sni(Some("stale.test".into()));
        let (server, _) = connect_to("127.0.0.1", &rustls::version::TLS13, None, usize::MAX);
        assert_eq!(server.server_name(), None);
        let (server, _) = connect_to("localhost", &rustls::version::TLS12, None, usize::MAX);
        assert_eq!(server.server_name(), Some("localhost"));
    }

    #[test]
    fn bytes_after_the_peers_close_notify_are_dropped() {
        let (mut server, mut client) = connect(&rustls::version::TLS13, None, usize::MAX);
        client.writer().write_all(b"bye").unwrap();
        client.send_close_notify();
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        wire.extend_from_slice(&[0x17, 3, 3, 0, 200, 1, 2, 3]);
        server.read_tls(&mut wire.as_slice()).unwrap();
        let state = server.process_new_packets().unwrap();
        assert_eq!((state.plaintext, state.peer_closed), (3, true));
        assert_eq!(read_all(&mut server, 64), b"bye");
        assert_eq!(server.held_bytes(), 0);
        assert_eq!(server.read_tls(&mut [9u8; 10].as_slice()).unwrap(), 0);
    }

    #[test]
    fn records_split_anywhere_are_joined() {
        // The client's handshake in 64-byte records, and every byte read on its own: rustls
        // retains the parts of a message across calls, at the front of the receive buffer.
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let (mut server, mut client) = connect(version, Some(64), 1);
            assert_eq!(server.server_name(), Some("a.test"));
            let body: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
            client.writer().write_all(&body).unwrap();
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            // Reads of 7,000 bytes: records end mid-buffer, and what is left of one moves to
            // the front before the next read.
            let mut got = Vec::new();
            let mut rd = Trickle {
                bytes: &wire,
                step: 7000,
            };
            while !rd.bytes.is_empty() {
                server.read_tls(&mut rd).unwrap();
                server.process_new_packets().unwrap();
                got.extend(read_all(&mut server, 1000));
            }
            assert!(got == body, "{version:?}: {} bytes", got.len());
            assert_eq!(server.held_bytes(), 0);
        }
    }

    #[test]
    fn unread_plaintext_stops_reading_the_socket() {
        let (mut server, mut client) = connect(&rustls::version::TLS13, None, usize::MAX);
        client.writer().write_all(&[7; 40_000]).unwrap();
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        let mut rd = wire.as_slice();
        let mut full = false;
        for _ in 0..10 {
            match server.read_tls(&mut rd) {
                Ok(_) => {
                    let state = server.process_new_packets().unwrap();
                    assert!(state.plaintext > 0 || !rd.is_empty());
                }
                Err(e) => {
                    assert_eq!(e.to_string(), "received plaintext buffer full");
                    full = true;
                    break;
                }
            }
        }
        assert!(full);
        let first = read_all(&mut server, 100_000);
        assert!(first.len() >= MAX_PENDING_PLAIN && first.len() < 40_000);
        let mut rest = Vec::new();
        while !rd.is_empty() {
            server.read_tls(&mut rd).unwrap();
            server.process_new_packets().unwrap();
            rest.extend(read_all(&mut server, 100_000));
        }
        assert_eq!(first.len() + rest.len(), 40_000);
        assert_eq!(server.held_bytes(), 0);
    }

    #[test]
    fn close_notify_ends_the_stream_and_a_bare_end_truncates_it() {
        let (mut server, mut client) = connect(&rustls::version::TLS13, None, usize::MAX);
        client.writer().write_all(b"last words").unwrap();
        client.send_close_notify();
        to_server(&mut client, &mut server, usize::MAX);
        let state = server.process_new_packets().unwrap();
        assert_eq!((state.plaintext, state.peer_closed), (10, true));
        assert_eq!(read_all(&mut server, 4), b"last words");
        assert_eq!(server.read_plaintext(&mut [0; 8]).unwrap(), 0);
        // Our answer and our close_notify still go out, cleanly.
        server.write_plaintext(&[IoSlice::new(b"bye")]).unwrap();
        server.send_close_notify();
        assert_eq!(to_client(&mut server, &mut client), b"bye");
        assert_eq!(client.reader().read(&mut [0; 8]).unwrap(), 0, "a clean end");
        assert_eq!(server.held_bytes(), 0);

        let (mut server, _client) = connect(&rustls::version::TLS13, None, usize::MAX);
        assert_eq!(server.read_tls(&mut io::empty()).unwrap(), 0);
        let state = server.process_new_packets().unwrap();
        assert!(!state.peer_closed);
        let e = server.read_plaintext(&mut [0; 8]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_bad_record_fails_once_with_an_alert() {
        let (mut server, mut client) = connect(&rustls::version::TLS13, None, usize::MAX);
        client
            .writer()
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .unwrap();
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        let last = wire.len() - 1;
        wire[last] ^= 1;
        server.read_tls(&mut wire.as_slice()).unwrap();
        let first = server.process_new_packets().unwrap_err();
        assert_eq!(first, rustls::Error::DecryptError);
        // Remembered: rustls is not asked again (a debug build would panic on a second
        // fatal alert), nothing more is read, and nothing can be sent.
        for _ in 0..3 {
            assert_eq!(server.process_new_packets().unwrap_err(), first);
        }
        assert_eq!(server.read_tls(&mut [1u8, 2, 3].as_slice()).unwrap(), 0);
        assert!(server.write_plaintext(&[IoSlice::new(b"x")]).is_err());
        server.send_close_notify();
        // The client is told why.
        let mut alert = Vec::new();
        while server.wants_write() {
            TlsSession::write_tls(&mut server, &mut alert).unwrap();
        }
        client.read_tls(&mut alert.as_slice()).unwrap();
        assert_eq!(
            client.process_new_packets().unwrap_err(),
            rustls::Error::AlertReceived(rustls::AlertDescription::BadRecordMac)
        );
        assert_eq!(server.held_bytes(), 0);
    }

    #[test]
    fn a_key_update_from_the_client_is_answered() {
        let (mut server, mut client) = connect(&rustls::version::TLS13, None, usize::MAX);
        for round in 0..3 {
            client.refresh_traffic_keys().unwrap();
            client.writer().write_all(b"ping").unwrap();
            to_server(&mut client, &mut server, usize::MAX);
            assert_eq!(read_all(&mut server, 64), b"ping", "round {round}");
            server.write_plaintext(&[IoSlice::new(b"pong")]).unwrap();
            assert_eq!(
                to_client(&mut server, &mut client),
                b"pong",
                "round {round}"
            );
        }
    }

    #[test]
    fn large_and_vectored_writes_leave_64_kib_a_send() {
        let (mut server, mut client) = connect(&rustls::version::TLS12, None, usize::MAX);
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let (head, rest) = body.split_at(100);
        let mut at = 0;
        let mut got = Vec::new();
        while at < body.len() {
            let slices: Vec<IoSlice<'_>> = if at < head.len() {
                vec![IoSlice::new(&head[at..]), IoSlice::new(rest)]
            } else {
                vec![IoSlice::new(&body[at..])]
            };
            let took = server.write_plaintext(&slices).unwrap();
            assert!(took > 0 && took <= 64 * 1024, "{took}");
            if took == 64 * 1024 {
                // Full until sent.
                assert_eq!(server.write_plaintext(&slices[..1]).unwrap(), 0);
            }
            at += took;
            got.extend(to_client(&mut server, &mut client));
        }
        assert!(got == body);
        assert_eq!(server.held_bytes(), 0);
    }
}

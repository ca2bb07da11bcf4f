//! Kernel TLS (`--features ktls`): after the rustls handshake the session's keys move into the
//! kernel, so the socket itself encrypts and decrypts and files go out by `sendfile(2)`.
//!
//! The conversion from rustls's extracted secrets to the kernel's crypto-info structs is
//! ktls2's ([`ktls2::CryptoInfo::from_rustls`]). ktls2's socket helpers are private and its
//! stream entry points need a tokio reactor (they panic inside a monoio runtime), so the few
//! socket options live here: `TCP_ULP "tls"`, `SOL_TLS`/`TLS_TX`/`TLS_RX`, a `close_notify`
//! alert sent as a control record, and a receive that reads the record type of control
//! records.
//!
//! [`probe`] runs once at start-up on the main thread: it asks the kernel for the `tls` upper
//! layer protocol and, when it is there, tries each (version, cipher) pair on a loopback
//! connection with zero keys. [`offload`] then moves one handshaken connection to the kernel,
//! or hands the session back untouched when it cannot (the caller falls back or refuses).
//!
//! Not handled in the kernel: a TLS 1.3 `KeyUpdate` from the client (the connection ends with
//! an error; clients send it after very long transfers only) and TLS 1.2 renegotiation (rustls
//! refuses it anyway).

use std::io;
use std::mem::MaybeUninit;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

use ktls2::CryptoInfo;
use ktls_sys::bindings as sys;
use rustls::{CipherSuite, ConnectionTrafficSecrets, SupportedCipherSuite};

use crate::net::server_tls::ServerTls;
use crate::net::tls::TlsSession;

/// TLS record type of an alert.
const RECORD_ALERT: u8 = 21;
/// TLS record type of application data.
const RECORD_APPLICATION_DATA: u8 = 23;
/// Alert description `close_notify`.
const CLOSE_NOTIFY: u8 = 0;

/// A record cipher the kernel may implement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cipher {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

/// The (TLS version, cipher) pairs this kernel accepted at start-up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Support {
    /// Indexed `[tls13 as usize][cipher as usize]`.
    accepted: [[bool; 3]; 2],
}

impl Support {
    /// Whether a connection on `suite` can move to the kernel.
    pub fn accepts(&self, suite: SupportedCipherSuite) -> bool {
        classify(suite).is_some_and(|(tls13, c)| self.accepted[tls13 as usize][c as usize])
    }

    /// What the kernel accepts, for the start-up log: `TLS1.3 AES-128-GCM, …`.
    pub fn describe(&self) -> String {
        let mut out = Vec::new();
        for (tls13, version) in [(true, "TLS1.3"), (false, "TLS1.2")] {
            for c in [
                Cipher::Aes128Gcm,
                Cipher::Aes256Gcm,
                Cipher::Chacha20Poly1305,
            ] {
                if self.accepted[tls13 as usize][c as usize] {
                    out.push(format!("{version} {}", c.name()));
                }
            }
        }
        out.join(", ")
    }
}

impl Cipher {
    fn name(self) -> &'static str {
        match self {
            Self::Aes128Gcm => "AES-128-GCM",
            Self::Aes256Gcm => "AES-256-GCM",
            Self::Chacha20Poly1305 => "ChaCha20-Poly1305",
        }
    }
}

/// Asks the kernel whether it can run TLS records: `Err` says why not, in words for the log.
pub fn probe() -> Result<Support, String> {
    // The ULP lookup comes before the socket-state check: a kernel without the `tls` module
    // answers ENOENT (loading it on demand when it can), one with it ENOTCONN, since the
    // socket is not connected.
    // SAFETY: a fresh socket, closed below; setsockopt reads 3 bytes of a static string.
    let err = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(format!(
                "cannot open a socket: {}",
                io::Error::last_os_error()
            ));
        }
        let r = libc::setsockopt(fd, libc::SOL_TCP, libc::TCP_ULP, c"tls".as_ptr().cast(), 3);
        let err = io::Error::last_os_error();
        libc::close(fd);
        if r == 0 {
            None
        } else {
            Some(err)
        }
    };
    match err.and_then(|e| e.raw_os_error()) {
        Some(libc::ENOENT) => {
            return Err(
                "the kernel has no TLS support (TCP_ULP \"tls\": ENOENT; load it with \
                        `modprobe tls`)"
                    .into(),
            )
        }
        Some(libc::ENOTCONN) | None => {}
        Some(e) => {
            return Err(format!(
                "TCP_ULP \"tls\": {}",
                io::Error::from_raw_os_error(e)
            ))
        }
    }
    let mut support = Support::default();
    for tls13 in [false, true] {
        for cipher in [
            Cipher::Aes128Gcm,
            Cipher::Aes256Gcm,
            Cipher::Chacha20Poly1305,
        ] {
            support.accepted[tls13 as usize][cipher as usize] = try_cipher(tls13, cipher).is_ok();
        }
    }
    if support == Support::default() {
        return Err("the kernel's TLS module accepts none of the ciphers rustls negotiates".into());
    }
    Ok(support)
}

/// Sets up a loopback connection with zero keys for `cipher`: the kernel's answer is the test.
fn try_cipher(tls13: bool, cipher: Cipher) -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (_server, _) = listener.accept()?;
    let fd = client.as_raw_fd();
    set_ulp(fd)?;
    let version = if tls13 {
        libc::TLS_1_3_VERSION
    } else {
        libc::TLS_1_2_VERSION
    };
    let info = match cipher {
        Cipher::Aes128Gcm => CryptoInfo::AesGcm128(sys::tls12_crypto_info_aes_gcm_128 {
            info: sys::tls_crypto_info {
                version,
                cipher_type: sys::TLS_CIPHER_AES_GCM_128 as _,
            },
            iv: Default::default(),
            key: Default::default(),
            salt: Default::default(),
            rec_seq: Default::default(),
        }),
        Cipher::Aes256Gcm => CryptoInfo::AesGcm256(sys::tls12_crypto_info_aes_gcm_256 {
            info: sys::tls_crypto_info {
                version,
                cipher_type: sys::TLS_CIPHER_AES_GCM_256 as _,
            },
            iv: Default::default(),
            key: Default::default(),
            salt: Default::default(),
            rec_seq: Default::default(),
        }),
        Cipher::Chacha20Poly1305 => {
            CryptoInfo::Chacha20Poly1305(sys::tls12_crypto_info_chacha20_poly1305 {
                info: sys::tls_crypto_info {
                    version,
                    cipher_type: sys::TLS_CIPHER_CHACHA20_POLY1305 as _,
                },
                iv: Default::default(),
                key: Default::default(),
                salt: sys::__IncompleteArrayField::new(),
                rec_seq: Default::default(),
            })
        }
    };
    set_crypto_info(fd, libc::TLS_TX, &info)?;
    set_crypto_info(fd, libc::TLS_RX, &info)
}

/// The version and cipher of a rustls suite, when the kernel could run it.
fn classify(suite: SupportedCipherSuite) -> Option<(bool, Cipher)> {
    use CipherSuite as S;
    Some(match suite.suite() {
        S::TLS13_AES_128_GCM_SHA256 => (true, Cipher::Aes128Gcm),
        S::TLS13_AES_256_GCM_SHA384 => (true, Cipher::Aes256Gcm),
        S::TLS13_CHACHA20_POLY1305_SHA256 => (true, Cipher::Chacha20Poly1305),
        S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => {
            (false, Cipher::Aes128Gcm)
        }
        S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => {
            (false, Cipher::Aes256Gcm)
        }
        S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        | S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => (false, Cipher::Chacha20Poly1305),
        _ => return None,
    })
}

/// Which way a crypto-info is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// What the kernel encrypts (`TLS_TX`).
    Send,
    /// What the kernel decrypts (`TLS_RX`).
    Receive,
}

/// The kernel's crypto-info for one direction of a session. Key and IV lengths are checked
/// here, so ktls2's conversion (which asserts them) cannot panic.
///
/// TLS 1.2 AES-GCM sends an explicit 8-byte nonce with every record. rustls derives it as
/// `E XOR seq` from the key block's `E`, while the kernel sends the `iv` it is given and then
/// adds one per record. Given `E` itself, the kernel's first record would reuse the nonce of the
/// record rustls sent at sequence 0 (the `Finished`): a GCM nonce reuse, which gives away the
/// authentication key. So for sending, the kernel starts at `E + 2^32`: every nonce rustls
/// used (`E XOR s`, `s < seq < 2^32`) differs from `E` in its low 32 bits only, and the kernel's
/// count cannot come back to them before 2^64 - 2^32 records. Receiving reads each record's
/// nonce off the wire, and TLS 1.3 and ChaCha20 derive nonces from the sequence number.
pub fn crypto_info(
    suite: SupportedCipherSuite,
    secrets: (u64, ConnectionTrafficSecrets),
    direction: Direction,
) -> Result<CryptoInfo, String> {
    let (key, iv) = match &secrets.1 {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (key.as_ref().len(), iv.as_ref()),
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (key.as_ref().len(), iv.as_ref()),
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (key.as_ref().len(), iv.as_ref()),
        _ => return Err(format!("{:?} has no kernel cipher", suite.suite())),
    };
    let key_ok = match &secrets.1 {
        ConnectionTrafficSecrets::Aes128Gcm { .. } => key == 16 || key == 32,
        _ => key == 32,
    };
    if !key_ok || iv.len() != 12 {
        return Err(format!(
            "{:?}: unexpected key ({key} bytes) or IV ({} bytes)",
            suite.suite(),
            iv.len()
        ));
    }
    let mut info = CryptoInfo::from_rustls(suite, secrets).map_err(|e| e.to_string())?;
    if direction == Direction::Send && matches!(suite, SupportedCipherSuite::Tls12(_)) {
        let fresh = |iv: &mut [u8; 8]| {
            *iv = u64::from_be_bytes(*iv).wrapping_add(1 << 32).to_be_bytes();
        };
        match &mut info {
            CryptoInfo::AesGcm128(i) => fresh(&mut i.iv),
            CryptoInfo::AesGcm256(i) => fresh(&mut i.iv),
            _ => {}
        }
    }
    Ok(info)
}

/// What [`offload`] did with a session.
pub enum Offload {
    /// The kernel runs the records now; `early` is application data rustls had already
    /// decrypted (a request sent along with the client's `Finished`), to be read first.
    Kernel { early: Vec<u8> },
    /// Nothing changed; the session is returned to run in userspace. The string says why.
    Userspace(Box<ServerTls>, String),
    /// The keys were extracted but the kernel refused them: the connection cannot go on.
    Failed(String),
}

/// Moves a completed server session on `fd` into the kernel.
///
/// The handshake must have been read with [`crate::net::tls::handshake_whole_records`] (so rustls
/// holds no part of a following record) and every record rustls queued must have been sent.
pub fn offload(fd: RawFd, mut session: Box<ServerTls>, support: &Support) -> Offload {
    let Some(suite) = session.negotiated_cipher_suite() else {
        return Offload::Userspace(session, "no cipher suite was negotiated".into());
    };
    if !support.accepts(suite) {
        return Offload::Userspace(
            session,
            format!("the kernel does not run {:?}", suite.suite()),
        );
    }
    if session.wants_write() {
        return Offload::Userspace(session, "TLS records are still queued".into());
    }
    match session.process_new_packets() {
        Ok(state) if state.peer_closed => {
            return Offload::Userspace(session, "the client already closed".into())
        }
        Ok(_) => {}
        Err(e) => return Offload::Userspace(session, format!("TLS error: {e}")),
    }
    if session.has_unprocessed_input() {
        return Offload::Userspace(session, "part of a record was read already".into());
    }
    // An established socket with the ULP but no keys yet passes bytes through unchanged, so
    // a failure here leaves the session usable in userspace (nothing was taken out of it yet).
    if let Err(e) = set_ulp(fd) {
        return Offload::Userspace(session, format!("TCP_ULP \"tls\": {e}"));
    }
    let early = session.take_plaintext();
    let secrets = match session.into_kernel() {
        Ok(s) => s,
        Err(e) => return Offload::Failed(format!("extracting the session's keys: {e}")),
    };
    let tx = crypto_info(suite, secrets.tx, Direction::Send);
    let rx = crypto_info(suite, secrets.rx, Direction::Receive);
    let (tx, rx) = match (tx, rx) {
        (Ok(tx), Ok(rx)) => (tx, rx),
        (Err(e), _) | (_, Err(e)) => return Offload::Failed(e),
    };
    if let Err(e) = set_crypto_info(fd, libc::TLS_TX, &tx) {
        return Offload::Failed(format!("TLS_TX: {e}"));
    }
    if let Err(e) = set_crypto_info(fd, libc::TLS_RX, &rx) {
        return Offload::Failed(format!("TLS_RX: {e}"));
    }
    Offload::Kernel { early }
}

/// Receives application data from a kTLS socket into `buf`, without waiting. A `close_notify`
/// from the peer is the end of the stream (`Ok(0)`); another alert or a post-handshake
/// message fails the connection.
pub fn recv(fd: RawFd, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
    // Room for one control message carrying the one-byte record type.
    #[repr(C, align(8))]
    struct Control([u8; 32]);
    let mut control = Control([0; 32]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: all-zero is a valid msghdr; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control.0.len() as _;
    // SAFETY: recvmsg writes at most iov_len bytes into `buf` and msg_controllen into `control`.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    let mut record = RECORD_APPLICATION_DATA;
    // SAFETY: the CMSG macros walk the control buffer the kernel just filled, within
    // msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_TLS
                && (*c).cmsg_type == libc::TLS_GET_RECORD_TYPE
                && (*c).cmsg_len as usize >= libc::CMSG_LEN(1) as usize
            {
                record = *libc::CMSG_DATA(c);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if record == RECORD_APPLICATION_DATA {
        return Ok(n);
    }
    // SAFETY: the first n bytes were written by recvmsg.
    let body: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), n) };
    match (record, body) {
        (RECORD_ALERT, [_, CLOSE_NOTIFY]) => Ok(0),
        (RECORD_ALERT, [_, description]) => Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            format!("TLS alert {description} from the peer"),
        )),
        _ => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("TLS record type {record} on kernel TLS (a key update?)"),
        )),
    }
}

/// Sends a `close_notify` alert through the kernel, without waiting.
pub fn send_close_notify(fd: RawFd) -> io::Result<()> {
    #[repr(C, align(8))]
    struct Control([u8; 32]);
    let mut control = Control([0; 32]);
    let mut alert = [1u8, CLOSE_NOTIFY]; // level warning, description close_notify
    let mut iov = libc::iovec {
        iov_base: alert.as_mut_ptr().cast(),
        iov_len: alert.len(),
    };
    // SAFETY: all-zero is a valid msghdr; the pointers set below outlive the call, and the
    // control message written through the CMSG macros fits the 32-byte buffer (CMSG_SPACE(1)
    // is 24 on 64-bit Linux).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(1) as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() {
            return Err(io::Error::other("no room for the control message"));
        }
        (*c).cmsg_level = libc::SOL_TLS;
        (*c).cmsg_type = libc::TLS_SET_RECORD_TYPE;
        (*c).cmsg_len = libc::CMSG_LEN(1) as _;
        *libc::CMSG_DATA(c) = RECORD_ALERT;
        if libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn set_ulp(fd: RawFd) -> io::Result<()> {
    // SAFETY: setsockopt reads 3 bytes of a static string.
    let r =
        unsafe { libc::setsockopt(fd, libc::SOL_TCP, libc::TCP_ULP, c"tls".as_ptr().cast(), 3) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_crypto_info(fd: RawFd, direction: libc::c_int, info: &CryptoInfo) -> io::Result<()> {
    // SAFETY: ktls2 gives the struct's address and exact size; setsockopt only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_TLS,
            direction,
            info.as_ptr(),
            info.size() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::aws_lc_rs::{cipher_suite as suites, default_provider};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};
    use std::io::Read as _;
    use std::io::Write as _;
    use std::sync::Arc;

    /// A CA-signed ECDSA P-256 certificate for `localhost`, and a client trusting the CA.
    fn configs(suite: SupportedCipherSuite) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(ca.der().to_vec())).unwrap();
        let provider = Arc::new(rustls::crypto::CryptoProvider {
            cipher_suites: vec![suite],
            ..default_provider()
        });
        let version = match suite {
            SupportedCipherSuite::Tls12(_) => &rustls::version::TLS12,
            SupportedCipherSuite::Tls13(_) => &rustls::version::TLS13,
        };
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(leaf.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        server.enable_secret_extraction = true;
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.enable_secret_extraction = true;
        (Arc::new(server), Arc::new(client))
    }

    /// Runs a handshake in memory, then one request and response so that sequence numbers are
    /// past zero, and returns both sides' secrets.
    fn handshake(
        suite: SupportedCipherSuite,
    ) -> (rustls::ExtractedSecrets, rustls::ExtractedSecrets) {
        let (server_config, client_config) = configs(suite);
        let mut server = Box::new(ServerTls::new(server_config).unwrap());
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = ClientConnection::new(client_config, name).unwrap();
        client
            .writer()
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .unwrap();
        let mut answered = false;
        for _ in 0..20 {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            if !wire.is_empty() {
                server.read_tls(&mut wire.as_slice()).unwrap();
            }
            server.process_new_packets().unwrap();
            if !server.is_handshaking() && !answered {
                let response = std::io::IoSlice::new(b"HTTP/1.1 200 OK\r\n\r\n");
                assert_eq!(server.write_plaintext(&[response]).unwrap(), 19);
                answered = true;
            }
            let mut wire = Vec::new();
            while server.wants_write() {
                TlsSession::write_tls(&mut *server, &mut wire).unwrap();
            }
            client.read_tls(&mut wire.as_slice()).unwrap();
            client.process_new_packets().unwrap();
        }
        assert!(!server.is_handshaking() && !client.is_handshaking());
        assert_eq!(server.negotiated_cipher_suite(), Some(suite));
        assert_eq!(server.take_plaintext(), b"GET / HTTP/1.1\r\n\r\n");
        let mut got = Vec::new();
        client.reader().read_to_end(&mut got).unwrap_err();
        assert_eq!(got, b"HTTP/1.1 200 OK\r\n\r\n");
        (
            (*server).into_kernel().unwrap(),
            client.dangerous_extract_secrets().unwrap(),
        )
    }

    fn key_iv(s: &ConnectionTrafficSecrets) -> (Vec<u8>, Vec<u8>) {
        match s {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv }
            | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
            | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (key.as_ref().to_vec(), iv.as_ref().to_vec())
            }
            _ => panic!("unexpected secrets"),
        }
    }

    fn bytes(info: &CryptoInfo) -> Vec<u8> {
        // SAFETY: ktls2 gives the address and size of a live plain-old-data struct.
        unsafe { std::slice::from_raw_parts(info.as_ptr().cast::<u8>(), info.size()).to_vec() }
    }

    /// The kernel's struct layout (`linux/tls.h`): version, cipher type, then for AES-GCM the
    /// explicit IV (the last 8 bytes of rustls's 12-byte IV), the key, the salt (its first 4)
    /// and the record sequence number; ChaCha20 takes the whole IV and has no salt.
    fn check_one_direction(
        suite: SupportedCipherSuite,
        sent: (u64, ConnectionTrafficSecrets),
        received: (u64, ConnectionTrafficSecrets),
    ) {
        let (key, iv) = key_iv(&sent.1);
        assert_eq!((sent.0, key_iv(&sent.1)), (received.0, key_iv(&received.1)));
        let seq_n = sent.0;
        let seq = seq_n.to_be_bytes();
        let tx = bytes(&crypto_info(suite, sent, Direction::Send).unwrap());
        let rx = bytes(&crypto_info(suite, received, Direction::Receive).unwrap());
        let (tls13, cipher) = classify(suite).unwrap();
        let version = if tls13 {
            libc::TLS_1_3_VERSION
        } else {
            libc::TLS_1_2_VERSION
        };
        // TLS 1.2 AES-GCM: the sender's kernel counts explicit nonces up from E + 2^32.
        let explicit = u64::from_be_bytes(iv[4..].try_into().unwrap());
        let tx_explicit = if tls13 {
            explicit
        } else {
            explicit.wrapping_add(1 << 32)
        }
        .to_be_bytes();
        for (info, nonce) in [(&tx, &tx_explicit[..]), (&rx, &iv[4..])] {
            assert_eq!(u16::from_ne_bytes([info[0], info[1]]), version);
            let cipher_type = u16::from_ne_bytes([info[2], info[3]]);
            let (expect_type, fields): (u16, Vec<&[u8]>) = match cipher {
                Cipher::Aes128Gcm => (
                    libc::TLS_CIPHER_AES_GCM_128,
                    vec![nonce, &key, &iv[..4], &seq],
                ),
                Cipher::Aes256Gcm => (
                    libc::TLS_CIPHER_AES_GCM_256,
                    vec![nonce, &key, &iv[..4], &seq],
                ),
                Cipher::Chacha20Poly1305 => {
                    (libc::TLS_CIPHER_CHACHA20_POLY1305, vec![&iv, &key, &seq])
                }
            };
            assert_eq!(cipher_type, expect_type);
            assert_eq!(&info[4..], fields.concat().as_slice());
        }
        if !tls13 && cipher != Cipher::Chacha20Poly1305 {
            // No nonce the kernel will send (a few thousand records' worth checked) is one
            // that rustls already used at sequence numbers 0..seq.
            let first = u64::from_be_bytes(tx_explicit);
            for s in 0..seq_n {
                let used = explicit ^ s;
                assert!(
                    used.wrapping_sub(first) > 1 << 40,
                    "kernel nonce {first:#x} + k meets rustls's nonce {used:#x} (seq {s})"
                );
            }
        } else {
            assert_eq!(tx, rx, "both ends must give the kernel the same state");
        }
        let key_len = match cipher {
            Cipher::Aes128Gcm => 16,
            _ => 32,
        };
        assert_eq!(key.len(), key_len);
    }

    fn check(suite: SupportedCipherSuite) {
        let (server, client) = handshake(suite);
        // What the server sends, the client receives, and the other way round.
        assert!(
            server.tx.0 > 0 && server.rx.0 > 0,
            "sequence numbers carry over"
        );
        check_one_direction(suite, server.tx, client.rx);
        check_one_direction(suite, client.tx, server.rx);
    }

    #[test]
    fn crypto_info_tls13_aes_128_gcm() {
        check(suites::TLS13_AES_128_GCM_SHA256);
    }

    #[test]
    fn crypto_info_tls13_aes_256_gcm() {
        check(suites::TLS13_AES_256_GCM_SHA384);
    }

    #[test]
    fn crypto_info_tls13_chacha20_poly1305() {
        check(suites::TLS13_CHACHA20_POLY1305_SHA256);
    }

    #[test]
    fn crypto_info_tls12_aes_128_gcm() {
        check(suites::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256);
    }

    #[test]
    fn crypto_info_tls12_aes_256_gcm() {
        check(suites::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384);
    }

    #[test]
    fn crypto_info_tls12_chacha20_poly1305() {
        check(suites::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256);
    }

    #[test]
    fn every_default_suite_has_a_kernel_cipher() {
        for suite in default_provider().cipher_suites {
            assert!(classify(suite).is_some(), "{:?}", suite.suite());
        }
        let support = Support {
            accepted: [[true, true, false], [true, false, false]],
        };
        assert!(support.accepts(suites::TLS13_AES_128_GCM_SHA256));
        assert!(!support.accepts(suites::TLS13_AES_256_GCM_SHA384));
        assert!(support.accepts(suites::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384));
        assert!(!support.accepts(suites::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256));
        assert_eq!(
            support.describe(),
            "TLS1.3 AES-128-GCM, TLS1.2 AES-128-GCM, TLS1.2 AES-256-GCM"
        );
    }

    #[test]
    fn probe_answers_for_this_kernel() {
        // This machine's kernel has no TLS: the probe must say so and name the fix. A kernel
        // with the module must accept at least AES-128-GCM, which every kTLS kernel has.
        // Probe first: as root, the probe itself may load the module.
        let probed = probe();
        let has_tls = std::path::Path::new("/sys/module/tls").exists();
        match probed {
            Ok(support) => {
                assert!(has_tls, "probe found kTLS but /sys/module/tls is absent");
                assert!(support.accepts(suites::TLS13_AES_128_GCM_SHA256));
            }
            Err(why) => {
                assert!(
                    !has_tls,
                    "the tls module is loaded but the probe said: {why}"
                );
                assert!(why.contains("TCP_ULP") || why.contains("cipher"), "{why}");
            }
        }
    }
}

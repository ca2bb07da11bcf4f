//! A TLS front for the test upstream: terminates TLS with rustls on 127.0.0.1 and relays the
//! plaintext both ways to a plain [`crate::upstream::Upstream`], one upstream connection per TLS
//! connection (so the upstream's connection count is the TLS connection count). With it every
//! upstream path of the proxy tests is also an `https://` upstream.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection};

/// A running TLS front. Stops accepting when dropped.
pub struct TlsFront {
    pub addr: SocketAddr,
    /// Completed TLS handshakes.
    pub handshakes: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl TlsFront {
    /// Serves TLS with `config` on a fresh port, relaying to `backend`.
    pub fn start(config: Arc<ServerConfig>, backend: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the TLS front");
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (handshakes, stop) = (handshakes.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (config, handshakes) = (config.clone(), handshakes.clone());
                    std::thread::spawn(move || relay(stream, config, backend, &handshakes));
                }
            });
        }
        Self {
            addr,
            handshakes,
            stop,
        }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// One TLS connection: this thread carries client → backend; a second one backend → client.
/// The rustls state is shared under a lock that is never held across a blocking call; a second
/// lock keeps the two threads' records from interleaving on the socket.
fn relay(tls: TcpStream, config: Arc<ServerConfig>, backend: SocketAddr, handshakes: &AtomicUsize) {
    let _ = tls.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(plain) = TcpStream::connect(backend) else {
        return;
    };
    let Ok(session) = ServerConnection::new(config) else {
        return;
    };
    let session = Arc::new(Mutex::new(session));
    let socket_out = Arc::new(Mutex::new(tls.try_clone().expect("clone")));
    let back = {
        let (session, socket_out) = (session.clone(), socket_out.clone());
        let mut plain = plain.try_clone().expect("clone");
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match plain.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => 0,
                };
                let mut s = session.lock().unwrap();
                if n == 0 {
                    s.send_close_notify();
                } else if s.writer().write_all(&buf[..n]).is_err() {
                    return;
                }
                let mut out = Vec::new();
                while s.wants_write() {
                    if s.write_tls(&mut out).is_err() {
                        break;
                    }
                }
                let mut sock = socket_out.lock().unwrap();
                drop(s);
                if sock.write_all(&out).is_err() {
                    return;
                }
                if n == 0 {
                    let _ = sock.shutdown(Shutdown::Write);
                    return;
                }
            }
        })
    };
    let mut tls_in = tls;
    let mut plain_out = plain;
    let mut buf = vec![0u8; 64 * 1024];
    let mut counted = false;
    loop {
        let n = match tls_in.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => 0,
        };
        if n == 0 {
            let _ = plain_out.shutdown(Shutdown::Write);
            break;
        }
        let mut s = session.lock().unwrap();
        let mut input = &buf[..n];
        let mut plaintext = Vec::new();
        let mut failed = false;
        while !input.is_empty() {
            if s.read_tls(&mut input).is_err() {
                failed = true;
                break;
            }
            match s.process_new_packets() {
                Ok(state) => {
                    let mut take = vec![0u8; state.plaintext_bytes_to_read()];
                    if s.reader().read_exact(&mut take).is_ok() {
                        plaintext.extend_from_slice(&take);
                    }
                }
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if !counted && !s.is_handshaking() {
            counted = true;
            handshakes.fetch_add(1, Ordering::SeqCst);
        }
        let mut out = Vec::new();
        while s.wants_write() {
            if s.write_tls(&mut out).is_err() {
                break;
            }
        }
        let mut sock = socket_out.lock().unwrap();
        drop(s);
        let _ = sock.write_all(&out);
        drop(sock);
        if failed || plain_out.write_all(&plaintext).is_err() {
            let _ = plain_out.shutdown(Shutdown::Both);
            break;
        }
    }
    let _ = back.join();
}

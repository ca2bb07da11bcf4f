//! The client of the kTLS VM check (`tests/ktls-vm/run.sh`; not part of the test suite).
//!
//! ```text
//! ktls-vm-fetch gen DIR                  writes DIR/ca.pem, DIR/site.pem, DIR/site.key
//!                                        (a CA and an ECDSA P-256 certificate for site.test)
//! ktls-vm-fetch get ADDR CA ROOT PATH…   for each kTLS cipher (AES-128-GCM, AES-256-GCM,
//!                                        ChaCha20-Poly1305) on TLS 1.2 and on TLS 1.3: one
//!                                        keep-alive connection GETs every PATH and compares the body with ROOT/PATH,
//!                                        waits 1 s (the connection parks; with
//!                                        KTLS_VM_PROXYCTL=path, `proxyctl status` must say so),
//!                                        GETs the first PATH again, then asks for
//!                                        `Connection: close` and expects the daemon's close_notify
//! ktls-vm-fetch h2 ADDR CA ROOT PATH…    the same ciphers over HTTP/2 (ALPN h2): one
//!                                        connection GETs every PATH as a stream, then waits
//!                                        for the daemon's GOAWAY (its
//!                                        `max_requests_per_connection` is the number of
//!                                        PATHs) and its close_notify
//! ktls-vm-fetch idle ADDR CA N PID       N keep-alive connections (after 300 to warm up), one
//!                                        GET /index.html each, then idle: prints the growth
//!                                        of the daemon's (PID) resident memory per connection
//!                                        once they have parked (with KTLS_VM_PROXYCTL=path,
//!                                        `proxyctl status` must count them all parked)
//! ```
//!
//! Prints one line per connection; exits 1 on the first difference.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

type Tls = StreamOwned<ClientConnection, TcpStream>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("gen") if args.len() == 2 => gen(Path::new(&args[1])),
        Some("get") if args.len() >= 5 => get(&args[1], &args[2], &args[3], &args[4..], false),
        Some("h2") if args.len() >= 5 => get(&args[1], &args[2], &args[3], &args[4..], true),
        Some("idle") if args.len() == 5 => idle(&args[1], &args[2], &args[3], &args[4]),
        _ => Err(
            "usage: ktls-vm-fetch gen DIR | get|h2 ADDR CA ROOT PATH... | idle ADDR CA N PID"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}

fn gen(dir: &Path) -> Result<(), String> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let err = |e: rcgen::Error| e.to_string();
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(params, KeyPair::generate().map_err(err)?).map_err(err)?;
    let key = KeyPair::generate().map_err(err)?;
    let leaf = CertificateParams::new(vec!["site.test".to_string()])
        .map_err(err)?
        .signed_by(&key, &ca)
        .map_err(err)?;
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))
    };
    write("ca.pem", ca.pem())?;
    write("site.pem", leaf.pem())?;
    write("site.key", key.serialize_pem())
}

fn get(addr: &str, ca: &str, root: &str, paths: &[String], h2: bool) -> Result<(), String> {
    let ca = CertificateDer::from_pem_file(ca).map_err(|e| format!("{ca}: {e}"))?;
    let mut roots = RootCertStore::empty();
    roots.add(ca).map_err(|e| e.to_string())?;
    use rustls::crypto::aws_lc_rs::{cipher_suite as cs, default_provider};
    for suite in [
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ] {
        let version = match suite {
            rustls::SupportedCipherSuite::Tls12(_) => &rustls::version::TLS12,
            rustls::SupportedCipherSuite::Tls13(_) => &rustls::version::TLS13,
        };
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: vec![suite],
            ..default_provider()
        };
        let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[version])
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        if h2 {
            config.alpn_protocols = vec![b"h2".to_vec()];
        }
        let name = ServerName::try_from("site.test").map_err(|e| e.to_string())?;
        let config = Arc::new(config);
        let conn =
            ClientConnection::new(config.clone(), name.clone()).map_err(|e| e.to_string())?;
        let tcp = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        if h2 {
            let failed = |e| format!("{version:?} {:?} over HTTP/2: {e}", suite.suite());
            let bytes = http2::session(tcp, conn, root, paths, true).map_err(failed)?;
            println!(
                "ok {version:?} {:?} over HTTP/2: {} streams on one connection, {bytes} body \
                 bytes identical, GOAWAY and close_notify received",
                suite.suite(),
                paths.len()
            );
            // The client closes this one (GOAWAY, close_notify): the daemon reads the alert
            // as the end of the stream (the script checks its log for an I/O error).
            let conn = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
            let tcp = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
            http2::session(tcp, conn, root, &paths[..1], false).map_err(failed)?;
            println!("ok {version:?} over HTTP/2: one stream, closed by the client");
            continue;
        }
        let mut tls = StreamOwned::new(conn, tcp);
        let mut bytes = 0;
        for path in paths {
            let want = std::fs::read(Path::new(root).join(path.trim_start_matches('/')))
                .map_err(|e| format!("{root}{path}: {e}"))?;
            let body = request(&mut tls, path, false)?;
            if body != want {
                return Err(format!(
                    "{version:?} {path}: {} bytes received, {} expected, first difference at {}",
                    body.len(),
                    want.len(),
                    body.iter().zip(&want).take_while(|(a, b)| a == b).count()
                ));
            }
            bytes += body.len();
        }
        // Idle for a while, the connection parks (its task goes; the kernel keeps its keys),
        // then serves the next request as before. With KTLS_VM_PROXYCTL, `proxyctl status`
        // must count it parked meanwhile.
        std::thread::sleep(std::time::Duration::from_millis(1000));
        check_parked(1).map_err(|e| format!("{version:?}: {e}"))?;
        let want = std::fs::read(Path::new(root).join(paths[0].trim_start_matches('/')))
            .map_err(|e| format!("{root}{}: {e}", paths[0]))?;
        if request(&mut tls, &paths[0], false)? != want {
            return Err(format!("{version:?}: after parking, {} differs", paths[0]));
        }
        // The last request closes the connection: the daemon's close_notify must come first
        // (rustls reports a close without one as an error).
        request(&mut tls, &paths[0], true)?;
        let mut rest = Vec::new();
        tls.read_to_end(&mut rest)
            .map_err(|e| format!("{version:?}: no clean close_notify: {e}"))?;
        let suite = tls
            .conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default();
        println!(
            "ok {version:?} {suite}: {} requests on one connection (parked before the last two), \
             {bytes} body bytes identical, close_notify received",
            paths.len() + 2
        );
    }
    Ok(())
}

/// With KTLS_VM_PROXYCTL (proxyctl's path), checks that `proxyctl status` counts `want` idle
/// connections parked.
fn check_parked(want: usize) -> Result<(), String> {
    let Ok(proxyctl) = std::env::var("KTLS_VM_PROXYCTL") else {
        return Ok(());
    };
    let out = std::process::Command::new(&proxyctl)
        .args(["--socket", "/tmp/admin.sock", "status", "--json"])
        .output()
        .map_err(|e| format!("{proxyctl}: {e}"))?;
    let status = String::from_utf8_lossy(&out.stdout).replace([' ', '\n'], "");
    if status.contains(&format!("\"idle_parked\":{want},")) {
        Ok(())
    } else {
        Err(format!(
            "{want} idle connections should be parked: {status}"
        ))
    }
}

/// Resident memory per idle kTLS connection: the daemon keeps no TLS state of its own for them
/// (the kernel holds the keys) and, parked, no task either.
fn idle(addr: &str, ca: &str, count: &str, pid: &str) -> Result<(), String> {
    let n: usize = count.parse().map_err(|e| format!("{count}: {e}"))?;
    let ca = CertificateDer::from_pem_file(ca).map_err(|e| format!("{ca}: {e}"))?;
    let mut roots = RootCertStore::empty();
    roots.add(ca).map_err(|e| e.to_string())?;
    let config = Arc::new(
        ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let rss_kib = || -> Result<u64, String> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| "no VmRSS".to_string())
    };
    let open = |k: usize| -> Result<Vec<Tls>, String> {
        (0..k)
            .map(|_| {
                let name = ServerName::try_from("site.test").map_err(|e| e.to_string())?;
                let conn =
                    ClientConnection::new(config.clone(), name).map_err(|e| e.to_string())?;
                let tcp = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
                let mut tls = StreamOwned::new(conn, tcp);
                request(&mut tls, "/index.html", false)?;
                Ok(tls)
            })
            .collect()
    };
    // Enough to warm up with that the worker gives freed memory back (it does after 256
    // connections have parked) before the first measure, as after the second.
    let settle = std::time::Duration::from_millis(2500);
    let warm = open(300)?;
    std::thread::sleep(settle);
    let before = rss_kib()?;
    let conns = open(n)?;
    std::thread::sleep(settle);
    let after = rss_kib()?;
    check_parked(n + warm.len())?;
    println!(
        "ok idle: {n} connections, {} bytes of the daemon's resident memory each \
         ({before} → {after} KiB)",
        after.saturating_sub(before) * 1024 / n as u64
    );
    drop((warm, conns));
    Ok(())
}

/// One GET on the connection; the body of a 200 response with a Content-Length.
fn request(tls: &mut Tls, path: &str, close: bool) -> Result<Vec<u8>, String> {
    let close = if close { "Connection: close\r\n" } else { "" };
    write!(tls, "GET {path} HTTP/1.1\r\nHost: site.test\r\n{close}\r\n")
        .and_then(|()| tls.flush())
        .map_err(|e| format!("send: {e}"))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tls.read_exact(&mut byte)
            .map_err(|e| format!("{path}: reading the head: {e}"))?;
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{path}: {head}"));
    }
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .ok_or_else(|| format!("{path}: no Content-Length: {head}"))?;
    let mut body = vec![0u8; len];
    tls.read_exact(&mut body)
        .map_err(|e| format!("{path}: reading {len} body bytes: {e}"))?;
    Ok(body)
}

/// The HTTP/2 client: the daemon's own [`PollStream`] (rustls in userspace here) under the
/// `h2` crate, on a monoio runtime.
mod http2 {
    use std::cell::RefCell;
    use std::io;
    use std::net::TcpStream;
    use std::path::Path;
    use std::pin::Pin;
    use std::rc::Rc;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use bytes::Bytes;
    use rustls::ClientConnection;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use zerocopy_server::net::h2io::PollStream;

    type Stream = PollStream<ClientConnection>;

    /// The GETs of `paths` as streams on one connection; the body bytes compared.
    pub fn session(
        mut tcp: TcpStream,
        mut conn: ClientConnection,
        root: &str,
        paths: &[String],
        daemon_closes: bool,
    ) -> Result<usize, String> {
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp)
                .map_err(|e| format!("TLS handshake: {e}"))?;
        }
        if conn.alpn_protocol() != Some(b"h2") {
            return Err("the daemon did not choose h2 by ALPN".into());
        }
        tcp.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        runtime.block_on(async move {
            let tcp = monoio::net::TcpStream::from_std(tcp).map_err(|e| e.to_string())?;
            let io =
                Stream::new(tcp, Some(Box::new(conn)), Vec::new()).map_err(|e| e.to_string())?;
            let io = Rc::new(RefCell::new(io));
            let (mut send, connection) = h2::client::handshake(Shared(io.clone()))
                .await
                .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
            let driver = monoio::spawn(connection);
            let mut bytes = 0;
            for path in paths {
                let want = std::fs::read(Path::new(root).join(path.trim_start_matches('/')))
                    .map_err(|e| format!("{root}{path}: {e}"))?;
                let body = get(&mut send, path).await?;
                if body != want {
                    return Err(format!(
                        "{path}: {} bytes received, {} expected, first difference at {}",
                        body.len(),
                        want.len(),
                        body.iter().zip(&want).take_while(|(a, b)| a == b).count()
                    ));
                }
                bytes += body.len();
            }
            if !daemon_closes {
                drop(send);
                return match monoio::time::timeout(Duration::from_secs(10), driver).await {
                    Ok(Ok(())) => Ok(bytes),
                    Ok(Err(e)) => Err(format!("closing: {e}")),
                    Err(_) => Err("closing took more than 10 s".into()),
                };
            }
            // The daemon closes after the last stream: GOAWAY, then close_notify. (`h2` may
            // still fail a last write of its own, such as its GOAWAY, on the closed socket.)
            let ended = monoio::time::timeout(Duration::from_secs(10), driver).await;
            if ended.is_err() {
                return Err("the daemon did not close the connection".into());
            }
            if io.borrow().close_notify_received() {
                return Ok(bytes);
            }
            let clean = monoio::time::timeout(Duration::from_secs(10), until_end(&io)).await;
            match clean {
                Ok(Ok(())) if io.borrow().close_notify_received() => Ok(bytes),
                Ok(Ok(())) => Err(format!(
                    "the connection ended without close_notify ({ended:?})"
                )),
                Ok(Err(e)) => Err(format!("reading to the end: {e} ({ended:?})")),
                Err(_) => Err("the connection did not end".into()),
            }
        })
    }

    async fn get(send: &mut h2::client::SendRequest<Bytes>, path: &str) -> Result<Vec<u8>, String> {
        let err = |e: h2::Error| format!("{path}: {e}");
        let ready = send.clone().ready().await.map_err(err)?;
        *send = ready;
        let request = http::Request::get(format!("https://site.test{path}"))
            .body(())
            .map_err(|e| e.to_string())?;
        let (response, _) = send.send_request(request, true).map_err(err)?;
        let response = response.await.map_err(err)?;
        if response.status() != 200 {
            return Err(format!("{path}: status {}", response.status()));
        }
        let mut body = response.into_body();
        let mut out = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(err)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Reads (and drops) what is left until the end of the stream.
    async fn until_end(io: &Rc<RefCell<Stream>>) -> io::Result<()> {
        let mut scratch = [0u8; 4096];
        loop {
            let n = std::future::poll_fn(|cx| {
                let mut buf = ReadBuf::new(&mut scratch);
                let mut io = io.borrow_mut();
                Pin::new(&mut *io)
                    .poll_read(cx, &mut buf)
                    .map_ok(|()| buf.filled().len())
            })
            .await?;
            if n == 0 {
                return Ok(());
            }
        }
    }

    /// The stream, shared with `h2` so that it can be read after the connection is done.
    struct Shared(Rc<RefCell<Stream>>);

    impl AsyncRead for Shared {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Shared {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, data)
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut *self.0.borrow_mut()).poll_shutdown(cx)
        }
    }
}

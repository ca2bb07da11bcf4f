//! The client of the kTLS VM check (`tests/ktls-vm/run.sh`; not part of the test suite).
//!
//! ```text
//! ktls-vm-fetch gen DIR                  writes DIR/ca.pem, DIR/site.pem, DIR/site.key
//!                                        (a CA and an ECDSA P-256 certificate for site.test)
//! ktls-vm-fetch get ADDR CA ROOT PATH…   for each kTLS cipher (AES-128-GCM, AES-256-GCM,
//!                                        ChaCha20-Poly1305) on TLS 1.2 and on TLS 1.3: one
//!                                        keep-alive connection GETs every PATH and compares the body with ROOT/PATH,
//!                                        then asks for `Connection: close` and expects the
//!                                        daemon's close_notify
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
        Some("get") if args.len() >= 5 => get(&args[1], &args[2], &args[3], &args[4..]),
        _ => Err("usage: ktls-vm-fetch gen DIR | get ADDR CA ROOT PATH...".into()),
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

fn get(addr: &str, ca: &str, root: &str, paths: &[String]) -> Result<(), String> {
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
        let config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[version])
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        let name = ServerName::try_from("site.test").map_err(|e| e.to_string())?;
        let conn = ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
        let tcp = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
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
            "ok {version:?} {suite}: {} requests on one connection, {bytes} body bytes identical, \
             close_notify received",
            paths.len() + 1
        );
    }
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

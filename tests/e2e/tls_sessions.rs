//! TLS session resumption that scales: a returning client resumes after 1,000 other clients'
//! handshakes, after a reload, and at another daemon that shares the session ticket key file —
//! over TLS 1.2 and 1.3; and a client offering only an ALPN protocol the daemon does not speak
//! gets the `no_application_protocol` alert (TLS 1.3 too), not a bare close.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::{
    ClientConfig, ClientConnection, HandshakeKind, StreamOwned, SupportedProtocolVersion,
};

use crate::common::{free_addr, Driver, Server, Site};
use crate::pki::Pki;
use crate::upstream::connect_tcp;

const TLS12: &SupportedProtocolVersion = &rustls::version::TLS12;
const TLS13: &SupportedProtocolVersion = &rustls::version::TLS13;

/// A client configuration of one TLS version, trusting `pki`, with a session store of its own
/// (each client a different browser, as far as resumption goes).
fn client(pki: &Pki, version: &'static SupportedProtocolVersion, alpn: &[u8]) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(pki.ca_pem().as_bytes()).unwrap())
        .unwrap();
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

/// One request over a new connection of `config` to `addr`: how the handshake went.
fn visit(addr: SocketAddr, config: &Arc<ClientConfig>) -> Result<HandshakeKind, rustls::Error> {
    let name = rustls::pki_types::ServerName::try_from("site.test").unwrap();
    let conn = ClientConnection::new(config.clone(), name).unwrap();
    let mut tls = StreamOwned::new(conn, connect_tcp(addr));
    while tls.conn.is_handshaking() {
        if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
            return Err(
                match e.into_inner().map(|i| i.downcast::<rustls::Error>()) {
                    Some(Ok(e)) => *e,
                    _ => rustls::Error::General("handshake I/O".into()),
                },
            );
        }
    }
    let kind = tls.conn.handshake_kind().unwrap();
    // A request and its whole answer: TLS 1.3 tickets arrive after the handshake.
    tls.write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut all = Vec::new();
    let _ = tls.read_to_end(&mut all);
    assert!(
        all.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&all)
    );
    Ok(kind)
}

/// Two TLS daemons for `site.test` with one certificate; `tls_extra` goes into `[tls]`
/// (`{dir}` is the shared directory, which holds `ticket.key`).
struct Pair {
    a: Server,
    b: Server,
    pki: Pki,
    _site: Site,
}

fn pair(d: Driver, tls_extra: &str) -> Pair {
    let pki = Pki::new();
    let site = Site::new();
    let leaf = pki.leaf(&["site.test"]);
    site.file("site.pem", &leaf.cert_pem);
    site.file("site.key", &leaf.key_pem);
    site.file("www/index.html", "hello\n");
    site.file("ticket.key", (0..80u8).collect::<Vec<u8>>());
    let dir = site.path().display().to_string();
    let start = || {
        let addr = free_addr();
        let toml = format!(
            "[server]\nlisten = \"{addr}\"\nthreads = 2\n[admin]\nsocket = \"{{dir}}/admin.sock\"\n\
             [tls]\ncert_path = \"{dir}/site.pem\"\nkey_path = \"{dir}/site.key\"\n{}\n\
             [path_routes.\"site.test\"]\n\"/\" = {{ path = \"{dir}/www\" }}\n",
            tls_extra.replace("{dir}", &dir)
        );
        Server::start_with_config(d, addr, &toml)
    };
    let (a, b) = (start(), start());
    Pair {
        a,
        b,
        pki,
        _site: site,
    }
}

/// Resumption after 1,000 other handshakes and after a reload, TLS 1.2 and 1.3. Before:
/// rustls' default cache of 256 sessions, no tickets, a new cache at every reload. (Under
/// io_uring only: handshakes do not depend on the io driver, and 1,000 of them take a while.)
#[test]
fn sessions_resume_after_many_handshakes_and_a_reload() {
    // Without the session cache: tickets alone resume, TLS 1.2 and 1.3.
    let p = pair(Driver::Uring, "session_cache_size = 0");
    let addr = p.a.addr;
    let returning: Vec<_> = [TLS12, TLS13]
        .into_iter()
        .map(|v| client(&p.pki, v, b"http/1.1"))
        .collect();
    for c in &returning {
        assert_eq!(visit(addr, c).unwrap(), HandshakeKind::Full);
        assert_eq!(visit(addr, c).unwrap(), HandshakeKind::Resumed);
    }
    for i in 0..1000 {
        let v = if i % 2 == 0 { TLS12 } else { TLS13 };
        assert_eq!(
            visit(addr, &client(&p.pki, v, b"http/1.1")).unwrap(),
            HandshakeKind::Full
        );
    }
    for (c, v) in returning.iter().zip(["1.2", "1.3"]) {
        assert_eq!(visit(addr, c).unwrap(), HandshakeKind::Resumed, "TLS {v}");
    }
    let report = p.a.proxyctl_json(&["reload"]);
    assert_eq!(report["ok"], true, "{report}");
    for (c, v) in returning.iter().zip(["1.2", "1.3"]) {
        assert_eq!(
            visit(addr, c).unwrap(),
            HandshakeKind::Resumed,
            "TLS {v} after a reload"
        );
    }
    // Each daemon has keys of its own: no resumption across them without a shared file.
    for (c, v) in returning.iter().zip(["1.2", "1.3"]) {
        assert_eq!(visit(p.b.addr, c).unwrap(), HandshakeKind::Full, "TLS {v}");
    }
}

/// Two daemons sharing `session_ticket_key_file` resume each other's sessions; with
/// `session_tickets = false` sessions still resume at the same daemon (the session cache).
fn a_shared_ticket_key_file_resumes_across_daemons(d: Driver) {
    let p = pair(d, "session_ticket_key_file = \"{dir}/ticket.key\"");
    for v in [TLS12, TLS13] {
        let c = client(&p.pki, v, b"http/1.1");
        assert_eq!(visit(p.a.addr, &c).unwrap(), HandshakeKind::Full);
        assert_eq!(
            visit(p.b.addr, &c).unwrap(),
            HandshakeKind::Resumed,
            "{v:?}"
        );
        assert_eq!(
            visit(p.a.addr, &c).unwrap(),
            HandshakeKind::Resumed,
            "{v:?}"
        );
    }
    let q = pair(d, "session_tickets = false");
    for v in [TLS12, TLS13] {
        let c = client(&q.pki, v, b"http/1.1");
        assert_eq!(visit(q.a.addr, &c).unwrap(), HandshakeKind::Full);
        assert_eq!(
            visit(q.a.addr, &c).unwrap(),
            HandshakeKind::Resumed,
            "{v:?}"
        );
        assert_eq!(visit(q.b.addr, &c).unwrap(), HandshakeKind::Full, "{v:?}");
    }
}

/// A client that offers only protocols the daemon does not speak gets the
/// `no_application_protocol` alert — over TLS 1.3 too, where the ServerHello precedes it.
fn an_unknown_alpn_protocol_gets_its_alert(d: Driver) {
    let p = pair(d, "");
    for v in [TLS12, TLS13] {
        let err = visit(p.a.addr, &client(&p.pki, v, b"spdy/3")).unwrap_err();
        assert_eq!(
            err,
            rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol),
            "{v:?}"
        );
    }
}

crate::both_drivers!(
    a_shared_ticket_key_file_resumes_across_daemons,
    an_unknown_alpn_protocol_gets_its_alert,
);

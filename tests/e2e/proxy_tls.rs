//! `https://` upstreams: the daemon verifies the upstream's certificate (webpki roots by
//! default, `ca_file` to trust a private CA), sends `tls_server_name` as SNI and verification
//! name when set, pools TLS connections, and tunnels WebSockets over them. The upstream is the
//! plain test upstream behind [`TlsFront`], with certificates from a throwaway CA.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::{check, Driver, Server, Site};
use crate::pki::Pki;
use crate::tls_front::TlsFront;
use crate::upstream::{pattern, report, Upstream, Wire};

/// The daemon in front of an HTTPS upstream. Fields drop in order: the daemon goes first.
struct Https {
    s: Server,
    front: TlsFront,
    up: Upstream,
    _site: Site,
}

/// An HTTPS upstream whose certificate names `cert_names`, reached by the route `h.test /api/`
/// → `https://127.0.0.1:PORT/app/` with `extra` route keys (`{ca}` is replaced by the path of
/// the test CA's certificate).
fn start(d: Driver, up: Upstream, cert_names: &[&str], extra: &str) -> Https {
    let pki = Pki::new();
    let front = TlsFront::start(pki.leaf(cert_names).server_config(), up.addr);
    let site = Site::new();
    let ca = pki.write_ca(site.path(), "ca.pem");
    let extra = extra.replace("{ca}", &ca.display().to_string());
    let s = Server::start(d, &site, &routes(front.addr, &extra));
    Https {
        s,
        front,
        up,
        _site: site,
    }
}

fn routes(front: SocketAddr, extra: &str) -> String {
    format!(
        r#"[path_routes."h.test"."/api/"]
type = "Proxy"
url = "https://{front}/app/"
{extra}
"#
    )
}

fn get_on(w: &mut Wire, target: &str) -> crate::upstream::RawResponse {
    w.send(format!("GET {target} HTTP/1.1\r\nHost: h.test\r\n\r\n").as_bytes());
    w.response(false)
}

fn https_upstream_with_a_private_ca(d: Driver) {
    let h = start(d, Upstream::start(), &["127.0.0.1"], r#"ca_file = "{ca}""#);
    let mut w = Wire::connect(h.s.addr);
    let r = get_on(&mut w, "/api/v1/users?q=a%20b&x=1");
    let rep = report(&r.to_response());
    assert_eq!(rep["target"], "/app/v1/users?q=a%20b&x=1");
    // Bodies both ways, in every framing, through TLS.
    let big = pattern(3 * 1024 * 1024 + 7);
    w.send(
        format!(
            "POST /api/echo HTTP/1.1\r\nHost: h.test\r\nContent-Length: {}\r\n\r\n",
            big.len()
        )
        .as_bytes(),
    );
    w.stream.write_all(&big).unwrap();
    let r = w.response(false);
    assert_eq!(r.status, 200);
    assert!(r.body == big, "echo differs ({} bytes back)", r.body.len());
    let r = get_on(&mut w, "/api/chunked/100000");
    assert!(r.body == pattern(100_000), "chunked body differs");
    let r = get_on(&mut w, "/api/bytes/2000000");
    assert!(r.body == pattern(2_000_000), "long body differs");
    // One TLS connection carried all of it.
    assert_eq!(h.front.handshakes.load(Ordering::SeqCst), 1);
}

fn https_connections_are_pooled(d: Driver) {
    let h = start(d, Upstream::start(), &["127.0.0.1"], r#"ca_file = "{ca}""#);
    for i in 0..4 {
        // A new client connection each time: the upstream connection comes from the pool.
        let mut w = Wire::connect(h.s.addr);
        let r = get_on(&mut w, &format!("/api/n{i}"));
        assert_eq!(report(&r.to_response())["target"], format!("/app/n{i}"));
    }
    assert_eq!(h.front.handshakes.load(Ordering::SeqCst), 1);
    assert_eq!(h.up.connections.load(Ordering::SeqCst), 1);
}

/// The upstream closes an idle pooled connection (close_notify, then FIN): the daemon notices
/// before reuse, so even a POST — never retried — goes through on a fresh connection.
fn closed_pooled_https_connection_is_noticed(d: Driver) {
    let h = start(
        d,
        Upstream::with_idle_close(Duration::from_millis(200)),
        &["127.0.0.1"],
        r#"ca_file = "{ca}""#,
    );
    let mut w = Wire::connect(h.s.addr);
    assert_eq!(get_on(&mut w, "/api/one").status, 200);
    assert!(h
        .up
        .wait_until(Duration::from_secs(2), |u| u.open_connections() == 0));
    std::thread::sleep(Duration::from_millis(200));
    w.send(b"POST /api/two HTTP/1.1\r\nHost: h.test\r\nContent-Length: 2\r\n\r\nhi");
    let r = w.response(false);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(report(&r.to_response())["target"], "/app/two");
    assert_eq!(h.front.handshakes.load(Ordering::SeqCst), 2);
}

fn unknown_ca_is_502(d: Driver) {
    // No ca_file: the webpki roots do not know the test CA.
    let h = start(d, Upstream::start(), &["127.0.0.1"], "");
    let mut w = Wire::connect(h.s.addr);
    let r = get_on(&mut w, "/api/x");
    assert_eq!(r.status, 502, "{}", r.text());
    let log = h.s.wait_log("UnknownIssuer");
    assert!(log.contains("UnknownIssuer"), "{log}");
    assert_eq!(h.up.requests.load(Ordering::SeqCst), 0);
}

fn tls_server_name_is_sni_and_the_name_verified(d: Driver) {
    // The certificate names upstream.test only; the URL's host is 127.0.0.1.
    let h = start(
        d,
        Upstream::start(),
        &["upstream.test"],
        "ca_file = \"{ca}\"\ntls_server_name = \"upstream.test\"",
    );
    let mut w = Wire::connect(h.s.addr);
    let r = get_on(&mut w, "/api/named");
    assert_eq!(report(&r.to_response())["target"], "/app/named");
    drop(w);
    drop(h);
    // Without it, the name checked is 127.0.0.1, which the certificate does not carry.
    let h = start(
        d,
        Upstream::start(),
        &["upstream.test"],
        r#"ca_file = "{ca}""#,
    );
    let mut w = Wire::connect(h.s.addr);
    let r = get_on(&mut w, "/api/named");
    assert_eq!(r.status, 502, "{}", r.text());
    let log = h.s.wait_log("not valid for name");
    assert!(
        log.contains("certificate not valid for name \"127.0.0.1\""),
        "{log}"
    );
}

fn websocket_over_an_https_upstream(d: Driver) {
    let h = start(d, Upstream::start(), &["127.0.0.1"], r#"ca_file = "{ca}""#);
    let mut w = Wire::connect(h.s.addr);
    w.send(b"GET /api/ws HTTP/1.1\r\nHost: h.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!(w.response(false).status, 101);
    for i in 0..3u8 {
        let msg = [b'm', b's', b'g', b'0' + i];
        w.send(&msg);
        assert_eq!(w.take(msg.len()).unwrap(), msg, "round trip {i}");
    }
    // Both directions at once, more than a socket buffer holds.
    let big = pattern(2_000_000);
    let mut writer = w.stream.try_clone().unwrap();
    let sent = big.clone();
    let t = std::thread::spawn(move || writer.write_all(&sent).unwrap());
    assert!(w.take(big.len()).unwrap() == big, "burst differs");
    t.join().unwrap();
    w.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(w.is_closed(), "the tunnel stayed open");
}

/// A `ca_file` that holds no certificate is refused by `--check`, naming the key.
fn ca_file_without_certificates_is_a_config_error(_d: Driver) {
    let site = Site::new();
    let bad = site.file("bad-ca.pem", "this is not a certificate\n");
    let cfg = site.file(
        "server.toml",
        format!(
            "[server]\nlisten = \"127.0.0.1:1\"\n\n{}",
            routes(
                "127.0.0.1:9".parse().unwrap(),
                &format!("ca_file = {:?}", bad.display().to_string())
            )
        ),
    );
    let out = check(&cfg);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("path_routes.\"h.test\".\"/api/\".ca_file") && err.contains("bad-ca.pem"),
        "{err}"
    );
    assert!(err.contains("holds no PEM certificate"), "{err}");
}

crate::both_drivers!(
    https_upstream_with_a_private_ca,
    https_connections_are_pooled,
    closed_pooled_https_connection_is_noticed,
    unknown_ca_is_502,
    tls_server_name_is_sni_and_the_name_verified,
    websocket_over_an_https_upstream,
    ca_file_without_certificates_is_a_config_error,
);

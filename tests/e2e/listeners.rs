//! `[[listeners]]`: several addresses (plain and TLS, IPv4 and IPv6) in one daemon, a plain
//! listener that redirects to HTTPS, and PROXY protocol v1/v2 listeners behind which the
//! address the load balancer names is the client for policy, forwarding and the access log.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{free_addr, Driver, Server, Site};
use crate::pki::Pki;
use crate::tls::write_pair;
use crate::upstream::{header_values, Upstream};

/// A free port on `[::1]`.
fn free_v6() -> SocketAddr {
    TcpListener::bind("[::1]:0").unwrap().local_addr().unwrap()
}

/// A free port on the IPv4 address of `like`.
fn free_on(like: SocketAddr) -> SocketAddr {
    TcpListener::bind((like.ip(), 0))
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The daemon with `listeners` (TOML, `{site}` replaced) and routes for `site.test`: files
/// from `www/` and `/app/` proxied to `up`.
fn start(d: Driver, site: &Site, first: SocketAddr, listeners: &str, up: &Upstream) -> Server {
    site.file("www/index.html", "hello\n");
    site.file("www/.well-known/acme-challenge/token1", "acme-token\n");
    let dir = site.path().display();
    let toml = format!(
        r#"[server]
threads = 1

[logging]
level = "debug"
access_log = "{{dir}}/access.log"
access_log_format = "json"
flush_interval_ms = 1

[security]
client_header_timeout_secs = 1

[admin]
socket = "{{dir}}/admin.sock"

[tls]
cert_path = "{dir}/site.pem"
key_path = "{dir}/site.key"

{listeners}

[path_routes."site.test"]
"/" = {{ path = "{dir}/www" }}
"/app/" = {{ type = "Proxy", url = "http://{u}" }}
"/only-doc/" = {{ path = "{dir}/www", security = {{ allowed_ips = ["192.0.2.0/24"] }} }}
"#,
        u = up.addr,
    );
    Server::start_with_config(d, first, &toml)
}

/// A site whose certificate (`site.pem`/`site.key`, from `pki`) serves `site.test` and
/// `localhost`, and an upstream for its `/app/` route.
fn fixture() -> (Site, Pki, Upstream) {
    let site = Site::new();
    let pki = Pki::new();
    write_pair(site.path(), "site", &pki.leaf(&["site.test", "localhost"]));
    (site, pki, Upstream::start())
}

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "5"])
        .args(args)
        .output()
        .expect("run curl");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn status_json(s: &Server) -> Value {
    s.proxyctl_json(&["status"])
}

/// Plain and TLS listeners on IPv4 and IPv6 in one daemon; `http2 = false` on one TLS
/// listener keeps ALPN to HTTP/1.1 there; `proxyctl status` lists them all.
fn plain_and_tls_on_v4_and_v6(d: Driver) {
    let (site, _pki, up) = fixture();
    let plain4 = free_addr();
    let tls4 = free_on(plain4);
    let (plain6, tls6) = (free_v6(), free_v6());
    let listeners = format!(
        r#"[[listeners]]
address = "{plain4}"

[[listeners]]
address = "{tls4}"
tls = true

[[listeners]]
address = "{plain6}"
ipv6_only = true

[[listeners]]
address = "{tls6}"
tls = true
ipv6_only = true
http2 = false
"#
    );
    let s = start(d, &site, plain4, &listeners, &up);
    let insecure = ["-k", "-H", "Host: site.test"];
    for url in [
        format!("http://{plain4}/index.html"),
        format!("https://{tls4}/index.html"),
        format!("http://{plain6}/index.html"),
        format!("https://{tls6}/index.html"),
    ] {
        let (body, err) = curl(&[&insecure[..], &["-g", &url]].concat());
        assert_eq!(body, "hello\n", "{url}: {err}");
    }
    // ALPN: h2 where http2 is on (the default), HTTP/1.1 where it is off.
    let version = |url: String| {
        let (v, err) = curl(
            &[
                &insecure[..],
                &[
                    "-g",
                    "--http2",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_version}",
                    &url,
                ],
            ]
            .concat(),
        );
        assert!(!v.is_empty(), "{url}: {err}");
        v
    };
    assert_eq!(version(format!("https://{tls4}/index.html")), "2");
    assert_eq!(version(format!("https://{tls6}/index.html")), "1.1");
    // A TLS client on the plain port, and plain HTTP on the TLS port, fail as they should.
    let (_, err) = curl(&["-k", &format!("https://{plain4}/")]);
    assert!(!err.is_empty());
    let mut c = TcpStream::connect(tls4).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    let status = status_json(&s);
    let listed: Vec<(String, bool, bool)> = status["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["address"].as_str().unwrap().to_string(),
                l["tls"].as_bool().unwrap(),
                l["http2"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            (plain4.to_string(), false, true),
            (tls4.to_string(), true, true),
            (plain6.to_string(), false, true),
            (tls6.to_string(), true, false),
        ]
    );
    for l in status["listeners"].as_array().unwrap() {
        assert!(l["accepted"].as_u64().unwrap() >= 1, "{l}");
        assert_eq!(l["sockets"], "bound");
        assert_eq!(l["proxy_protocol"], "off");
    }
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(status["started_at_unix_ms"].as_u64().unwrap() > 0);
    let text = String::from_utf8(s.proxyctl(&["status"]).stdout).unwrap();
    assert!(text.contains(&format!("{tls6} https, ")), "{text}");
}

/// `redirect_to_https`: every request gets `308` to the same host, path and query over
/// HTTPS (the port of the first TLS listener, or `https_port`), escaped; exempt paths are
/// served as usual.
fn redirect_to_https(d: Driver) {
    let (site, _pki, up) = fixture();
    let plain = free_addr();
    let tls = free_on(plain);
    let fixed = free_on(plain);
    let listeners = format!(
        r#"[[listeners]]
address = "{plain}"
redirect_to_https = true
redirect_exempt = ["/.well-known/acme-challenge/"]

[[listeners]]
address = "{tls}"
tls = true

[[listeners]]
address = "{fixed}"
redirect_to_https = true
https_port = 443
"#
    );
    let s = start(d, &site, plain, &listeners, &up);
    let get = |addr: SocketAddr, raw: &str| {
        let mut w = crate::upstream::Wire::connect(addr);
        w.send(raw.as_bytes());
        w.response(raw.starts_with("HEAD "))
    };
    let r = get(
        plain,
        "GET /a%20b/c\"d?x=1&y=<2> HTTP/1.1\r\nHost: Site.Test:80\r\n\r\n",
    );
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some(format!("https://site.test:{}/a%20b/c%22d?x=1&y=%3C2%3E", tls.port()).as_str())
    );
    assert_eq!(r.text(), "308 Permanent Redirect\n");
    // Every method, every path — routed or not.
    let r = get(
        plain,
        "POST /nowhere HTTP/1.1\r\nHost: other.test\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    );
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some(format!("https://other.test:{}/nowhere", tls.port()).as_str())
    );
    let r = get(plain, "HEAD /x HTTP/1.1\r\nHost: site.test\r\n\r\n");
    assert_eq!((r.status, r.body.len()), (308, 0));
    // Port 443 is left out.
    let r = get(fixed, "GET /p?q HTTP/1.1\r\nHost: site.test\r\n\r\n");
    assert_eq!(r.header("location"), Some("https://site.test/p?q"));
    // The ACME challenge is served over plain HTTP; a path that only looks like it after
    // normalisation is not exempt.
    let r = get(
        plain,
        "GET /.well-known/acme-challenge/token1 HTTP/1.1\r\nHost: site.test\r\n\r\n",
    );
    assert_eq!((r.status, r.text().as_str()), (200, "acme-token\n"));
    let r = get(
        plain,
        "GET /.well-known/acme-challenge/../../index.html HTTP/1.1\r\nHost: site.test\r\n\r\n",
    );
    assert_eq!(r.status, 308);
    // No host to redirect to.
    let r = get(plain, "GET /x HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 400);
    // The TLS listener serves.
    let (body, err) = curl(&["-k", "-H", "Host: site.test", &format!("https://{tls}/")]);
    assert_eq!(body, "hello\n", "{err}");
    let status = status_json(&s);
    assert_eq!(
        status["listeners"][0]["redirect_to_https"].as_u64(),
        Some(u64::from(tls.port()))
    );
}

fn v2_header(source: SocketAddr, dest: SocketAddr) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21);
    let mut body = Vec::new();
    match (source, dest) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            h.push(0x11);
            body.extend_from_slice(&s.ip().octets());
            body.extend_from_slice(&d.ip().octets());
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            h.push(0x21);
            body.extend_from_slice(&s.ip().octets());
            body.extend_from_slice(&d.ip().octets());
        }
        _ => panic!("mixed families"),
    }
    body.extend_from_slice(&source.port().to_be_bytes());
    body.extend_from_slice(&dest.port().to_be_bytes());
    // A TLV the daemon ignores (an AWS VPC endpoint id).
    body.extend_from_slice(&[0xEA, 0, 4, 1, b'v', b'p', b'c']);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(&body);
    h
}

/// Sends `parts` with a pause between them; the whole answer until the daemon closes (empty
/// when it closed or reset the connection unanswered).
fn exchange(addr: SocketAddr, parts: &[&[u8]], pause: Duration) -> Vec<u8> {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(pause);
        }
        // A refused connection may be reset before the rest is written.
        if c.write_all(p).is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    out
}

fn access_log(s: &Server, n: usize) -> Vec<Value> {
    let path = s.config_path.with_file_name("access.log");
    for _ in 0..250 {
        let lines: Vec<Value> = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= n {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("fewer than {n} access log lines");
}

/// PROXY protocol v1 and v2: the address in the header is the client — for `allowed_ips`,
/// `X-Forwarded-For` and the access log; `UNKNOWN`/`LOCAL` keep the TCP peer; headers split
/// across writes are read whole.
fn proxy_protocol_names_the_client(d: Driver) {
    let (site, pki, up) = fixture();
    let any = free_addr();
    let v1 = free_on(any);
    let tls = free_on(any);
    let listeners = format!(
        r#"[[listeners]]
address = "{any}"
proxy_protocol = "any"
proxy_protocol_from = ["127.0.0.0/8"]

[[listeners]]
address = "{v1}"
proxy_protocol = "v1"
proxy_protocol_from = ["127.0.0.0/8", "::1"]

[[listeners]]
address = "{tls}"
tls = true
proxy_protocol = "v2"
proxy_protocol_from = ["127.0.0.0/8"]
"#
    );
    let s = start(d, &site, any, &listeners, &up);
    let request =
        |path: &str| format!("GET {path} HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n");
    let client: SocketAddr = "192.0.2.44:51000".parse().unwrap();
    // v1, in one write: the route admits 192.0.2.0/24 only — the PROXY address counts.
    let header = format!(
        "PROXY TCP4 192.0.2.44 {} 51000 {}\r\n",
        any.ip(),
        any.port()
    );
    let out = exchange(
        any,
        &[format!("{header}{}", request("/only-doc/index.html")).as_bytes()],
        Duration::ZERO,
    );
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    // v2, split inside the signature, the length and the addresses, then the request.
    let h2 = v2_header(client, any);
    let out = exchange(
        any,
        &[
            &h2[..5],
            &h2[5..15],
            &h2[15..20],
            &h2[20..],
            request("/app/report").as_bytes(),
        ],
        Duration::from_millis(60),
    );
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = &out[out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    let rep: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(header_values(&rep, "x-forwarded-for"), vec!["192.0.2.44"]);
    // UNKNOWN keeps the TCP peer: loopback, not in 192.0.2.0/24.
    let out = exchange(
        v1,
        &[
            b"PROXY UNKNOWN\r\n",
            request("/only-doc/index.html").as_bytes(),
        ],
        Duration::from_millis(30),
    );
    assert!(
        out.starts_with(b"HTTP/1.1 403"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    // v1 over IPv6 addresses, split mid-address.
    let h = "PROXY TCP6 2001:db8::7 2001:db8::1 40000 80\r\n";
    let out = exchange(
        v1,
        &[
            &h.as_bytes()[..20],
            &h.as_bytes()[20..],
            request("/app/report").as_bytes(),
        ],
        Duration::from_millis(30),
    );
    let body = &out[out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    let rep: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(header_values(&rep, "x-forwarded-for"), vec!["2001:db8::7"]);
    // PROXY v2 before TLS: curl sends a v1 header, which this listener refuses; a v2 header
    // followed by the handshake is served.
    let (body, _) = curl(&[
        "-k",
        "--haproxy-protocol",
        "-H",
        "Host: site.test",
        &format!("https://{tls}/"),
    ]);
    assert_eq!(body, "");
    let mut raw = TcpStream::connect(tls).unwrap();
    raw.write_all(&v2_header("192.0.2.9:4444".parse().unwrap(), tls))
        .unwrap();
    let conn = crate::tls::tls_over(raw, "site.test", &pki);
    let mut w = crate::upstream::Wire::new(conn);
    w.send(request("/only-doc/index.html").as_bytes());
    assert_eq!(w.response(false).status, 200);
    // The access log names the PROXY addresses.
    let log = access_log(&s, 5);
    let clients: Vec<&str> = log.iter().filter_map(|l| l["client"].as_str()).collect();
    assert!(clients.contains(&"192.0.2.44"), "{clients:?}");
    assert!(clients.contains(&"2001:db8::7"), "{clients:?}");
    assert!(clients.contains(&"192.0.2.9"), "{clients:?}");
}

/// A listener that requires a PROXY header closes, without a byte, a connection without one,
/// with garbage, with the wrong version, from a peer outside `proxy_protocol_from`, or whose
/// header never completes (within `client_header_timeout_secs`).
fn proxy_protocol_refusals(d: Driver) {
    let (site, _pki, up) = fixture();
    let v2 = free_addr();
    let elsewhere = free_on(v2);
    let listeners = format!(
        r#"[[listeners]]
address = "{v2}"
proxy_protocol = "v2"
proxy_protocol_from = ["127.0.0.0/8"]

[[listeners]]
address = "{elsewhere}"
proxy_protocol = "any"
proxy_protocol_from = ["10.0.0.0/8"]
"#
    );
    let s = start(d, &site, v2, &listeners, &up);
    // The harness's readiness probe (a connection closed without a byte) counts already.
    let before = status_json(&s)["listeners"][0]["proxy_refused"]
        .as_u64()
        .unwrap();
    let get = b"GET /index.html HTTP/1.1\r\nHost: site.test\r\n\r\n";
    assert_eq!(exchange(v2, &[get], Duration::ZERO), b"");
    assert_eq!(
        exchange(v2, &[b"\x16\x03\x01\x00\x05hello"], Duration::ZERO),
        b""
    );
    let v1 = format!("PROXY TCP4 192.0.2.1 {} 1 2\r\n", v2.ip());
    assert_eq!(exchange(v2, &[v1.as_bytes(), get], Duration::ZERO), b"");
    let mut bad = v2_header("192.0.2.1:1".parse().unwrap(), v2);
    bad[12] = 0x22; // command 2: neither LOCAL nor PROXY
    assert_eq!(exchange(v2, &[&bad, get], Duration::ZERO), b"");
    // From a peer outside proxy_protocol_from, even with a good header.
    let good = v2_header("192.0.2.1:1".parse().unwrap(), elsewhere);
    assert_eq!(exchange(elsewhere, &[&good, get], Duration::ZERO), b"");
    // Half a header, then silence: closed at the header timeout (1 s).
    let started = Instant::now();
    let h = v2_header("192.0.2.1:1".parse().unwrap(), v2);
    assert_eq!(exchange(v2, &[&h[..10]], Duration::ZERO), b"");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    // A good one still works.
    let out = exchange(v2, &[&h, get], Duration::ZERO);
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let status = status_json(&s);
    assert_eq!(status["listeners"][0]["proxy_refused"], before + 5);
    assert_eq!(status["listeners"][1]["proxy_refused"], 1);
    assert_eq!(status["listeners"][1]["proxy_protocol"], "any");
}

/// A bad `[[listeners]]` table is refused with its key path and the fix.
fn bad_listeners_are_refused(_d: Driver) {
    let site = Site::new();
    let cases = [
        (
            "[server]\nlisten = \"127.0.0.1:1\"\n[[listeners]]\naddress = \"127.0.0.1:2\"\n",
            "server.listen: [server] listen and [[listeners]] cannot both be set",
        ),
        (
            "[[listeners]]\naddress = \"127.0.0.1:2\"\ntls = true\n",
            "listeners[0].tls: tls = true needs certificates",
        ),
        (
            "[[listeners]]\naddress = \"127.0.0.1:2\"\nproxy_protocol = \"v2\"\n",
            "listeners[0].proxy_protocol_from: required key is missing",
        ),
        (
            "[[listeners]]\naddress = \"127.0.0.1:2\"\nproxy_protocol = \"v3\"\nproxy_protocol_from = []\n",
            "listeners[0].proxy_protocol: unknown proxy_protocol \"v3\"",
        ),
        (
            "[[listeners]]\naddress = \"[::]:2\"\n[[listeners]]\naddress = \"0.0.0.0:2\"\n",
            "listeners[1].address: 0.0.0.0:2 and [::]:2 (listeners[0]) share port 2",
        ),
        (
            "[[listeners]]\naddress = \"127.0.0.1:2\"\nhttps_port = 8443\n",
            "listeners[0].https_port: only used with redirect_to_https = true",
        ),
        (
            "[[listeners]]\naddress = \"127.0.0.1:2\"\n[[listeners]]\naddress = \"127.0.0.1:2\"\n",
            "listeners[1].address: 127.0.0.1:2 is also the address of listeners[0]",
        ),
        (
            "[server]\nthreads = 1\n",
            "server.listen: required key is missing; add e.g. listen = \"0.0.0.0:80\" to [server], or [[listeners]]",
        ),
    ];
    for (toml, want) in cases {
        let path = site.file(
            "bad.toml",
            format!(
                "{toml}[path_routes.h]\n\"/\" = {{ path = \"{}\" }}\n",
                site.path().display()
            ),
        );
        let out = crate::common::check(&path);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{toml}");
        assert!(err.contains(want), "{toml}\nwant {want}\ngot {err}");
    }
}

crate::both_drivers!(
    plain_and_tls_on_v4_and_v6,
    redirect_to_https,
    proxy_protocol_names_the_client,
    proxy_protocol_refusals,
);

#[test]
fn bad_listeners_are_refused_with_the_fix() {
    bad_listeners_are_refused(Driver::Uring);
}

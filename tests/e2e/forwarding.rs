//! What reaches an upstream, and who the client is: the authority of an absolute-form target,
//! forwarding headers a client cannot forge (`Forwarded`, underscore names), trusted proxies
//! and the client address their chain names (policy, rate limits per IPv6 /64, access log),
//! `X-Forwarded-Proto` behind TLS, and `Upgrade` protocols — `h2c` never tunnelled.

use std::io::Read;
use std::time::Duration;

use serde_json::Value;

use crate::common::{free_addr, Driver, Server, Site};
use crate::upstream::{header_values, report, RawResponse, Upstream, Wire};

/// The daemon in front of one upstream, with an access log. Fields drop in order.
struct Front {
    s: Server,
    up: Upstream,
    _site: Site,
}

/// `public.test` and `admin.internal` both proxy to the same upstream (a shared backend that
/// dispatches on Host); `admin.internal` admits only 10.0.0.0/8. `trusted.test` trusts
/// loopback peers and admits only 203.0.113.0/24, 3 requests a minute; `open.test` trusts
/// nobody and admits the same network. `extra` goes into `public.test`'s table.
fn start(d: Driver, extra: &str) -> Front {
    let up = Upstream::start();
    let site = Site::new();
    let u = up.addr;
    let rest = format!(
        r#"[logging]
access_log = "{{dir}}/access.log"
access_log_format = "json"
flush_interval_ms = 1

[host_routes."public.test"]
type = "Proxy"
url = "http://{u}"
{extra}

[host_routes."admin.internal"]
type = "Proxy"
url = "http://{u}"
security = {{ allowed_ips = ["10.0.0.0/8"] }}

[host_routes."trusted.test"]
type = "Proxy"
url = "http://{u}"
security = {{ trusted_proxies = ["127.0.0.0/8"], allowed_ips = ["203.0.113.0/24", "2001:db8::/32"], rate_limit_requests_per_min = 3 }}

[host_routes."wide.test"]
type = "Proxy"
url = "http://{u}"
security = {{ trusted_proxies = ["127.0.0.0/8"], rate_limit_requests_per_min = 3, rate_limit_ipv6_prefix = 128 }}

[host_routes."open.test"]
type = "Proxy"
url = "http://{u}"
security = {{ allowed_ips = ["203.0.113.0/24"] }}
"#
    );
    let addr = free_addr();
    let toml = format!(
        "[server]\nlisten = \"{addr}\"\nthreads = 1\n\n[admin]\nsocket = \"{{dir}}/admin.sock\"\n\n{rest}"
    );
    let s = Server::start_with_config(d, addr, &toml);
    Front { s, up, _site: site }
}

impl Front {
    fn send(&self, raw: &str) -> RawResponse {
        let mut w = Wire::connect(self.s.addr);
        w.send(raw.as_bytes());
        w.response(raw.starts_with("HEAD "))
    }

    fn get(&self, host: &str, target: &str, extra: &str) -> RawResponse {
        self.send(&format!(
            "GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
        ))
    }

    fn access_log(&self) -> Vec<Value> {
        let path = self.s.config_path.with_file_name("access.log");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The access log's entries once there are `n`.
    fn wait_access_log(&self, n: usize) -> Vec<Value> {
        for _ in 0..250 {
            let lines = self.access_log();
            if lines.len() >= n {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.access_log()
    }
}

fn json(r: &RawResponse) -> Value {
    report(&r.to_response())
}

/// RFC 9112 §3.2.2: the authority of an absolute-form target wins, and what the upstream is
/// told — `Host`, `X-Forwarded-Host`, `Forwarded: host=` — is the authority the request was
/// routed and authorised by, never a `Host` header that says otherwise.
fn absolute_form_authority_is_forwarded(d: Driver) {
    let f = start(d, "");
    // Routed as public.test, so the upstream must hear public.test, not admin.internal (whose
    // route would have refused this client).
    let r = f.get("admin.internal", "http://public.test/x", "");
    let rep = json(&r);
    assert_eq!(header_values(&rep, "host"), ["public.test"], "{rep}");
    assert_eq!(header_values(&rep, "x-forwarded-host"), ["public.test"]);
    let fwd = header_values(&rep, "forwarded");
    assert!(fwd[0].ends_with(";proto=http;host=public.test"), "{fwd:?}");
    assert_eq!(rep["target"], "/x");
    // The port of the target's authority goes along (preserve_host: the client's authority).
    let rep = json(&f.get("admin.internal", "HTTP://public.test:8080/y?q=1", ""));
    assert_eq!(header_values(&rep, "host"), ["public.test:8080"]);
    assert_eq!(
        header_values(&rep, "x-forwarded-host"),
        ["public.test:8080"]
    );
    assert!(header_values(&rep, "forwarded")[0].ends_with(";host=\"public.test:8080\""));
    // The other way round, the policy of the target's route applies.
    assert_eq!(
        f.get("public.test", "http://admin.internal/x", "").status,
        403
    );
    // An empty or invalid authority is a 400, and nothing reaches the upstream.
    let before = f.up.requests.load(std::sync::atomic::Ordering::SeqCst);
    for target in [
        "http:///x",
        "http://pub lic.test/x",
        "http://x:y/",
        "http://a@public.test/",
    ] {
        let r = f.get("public.test", target, "");
        assert_eq!(r.status, 400, "{target}");
    }
    assert_eq!(
        f.up.requests.load(std::sync::atomic::Ordering::SeqCst),
        before
    );
    // The access log names the host the request was routed by.
    let log = f.wait_access_log(3);
    assert_eq!(log[0]["host"], "public.test", "{:?}", log[0]);
    assert_eq!(log[0]["route"], "public.test");
    assert_eq!(log[2]["host"], "admin.internal");
    assert_eq!(log[2]["status"], 403);
}

/// `Forwarded` is appended to like `X-Forwarded-For`, so its right-most element is the
/// daemon's own statement; headers with `_` in their names do not reach the upstream unless
/// the route allows them.
fn client_forwarding_headers_cannot_be_spoofed(d: Driver) {
    let f = start(d, "security = { allow_underscores_in_headers = false }");
    let mut w = Wire::connect(f.s.addr);
    let peer = w.stream.local_addr().unwrap().ip().to_string();
    w.send(
        b"GET /x HTTP/1.1\r\nHost: public.test\r\nForwarded: for=6.6.6.6;proto=https\r\n\
          X_Forwarded_For: 6.6.6.6\r\nX-Real_IP: 6.6.6.6\r\nX-Forwarded-For: 7.7.7.7\r\n\
          Connection: close\r\n\r\n",
    );
    let rep = json(&w.response(false));
    let names: Vec<String> = rep["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap().to_string())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains('_')),
        "underscore headers reached the upstream: {names:?}"
    );
    assert_eq!(
        header_values(&rep, "forwarded"),
        [format!(
            "for=6.6.6.6;proto=https, for={peer};proto=http;host=public.test"
        )]
    );
    assert_eq!(
        header_values(&rep, "x-forwarded-for"),
        [format!("7.7.7.7, {peer}")]
    );
    // A malformed Forwarded (an unclosed quote) would swallow the daemon's element: dropped.
    let rep = json(&f.get("public.test", "/x", "Forwarded: for=\"6.6.6.6\r\n"));
    let fwd = header_values(&rep, "forwarded");
    assert_eq!(fwd.len(), 1);
    assert!(
        fwd[0].starts_with("for=127.") && !fwd[0].contains("6.6.6.6"),
        "{fwd:?}"
    );
    // A route that allows them forwards them as they came.
    let g = start(d, "security = { allow_underscores_in_headers = true }");
    let rep = json(&g.get("public.test", "/x", "X_Custom: yes\r\n"));
    assert_eq!(header_values(&rep, "x_custom"), ["yes"]);
    // Without any Forwarded from the client, the daemon's element alone.
    let rep = json(&g.get("public.test", "/x", ""));
    let fwd = header_values(&rep, "forwarded");
    assert_eq!(fwd.len(), 1);
    assert!(fwd[0].starts_with("for=127."), "{fwd:?}");
}

/// IPv6 peers are written `for="[…]"` (RFC 7239 §6).
#[test]
fn forwarded_for_an_ipv6_peer_is_quoted_and_bracketed() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback");
        return;
    }
    let up = Upstream::start();
    let site = Site::new();
    let probe = std::net::TcpListener::bind("[::1]:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let toml = format!(
        "[server]\nlisten = \"{addr}\"\nthreads = 1\n[admin]\nsocket = \"{{dir}}/admin.sock\"\n\
         [host_routes.\"v6.test\"]\ntype = \"Proxy\"\nurl = \"http://{}\"\n",
        up.addr
    );
    let s = Server::start_with_config(Driver::Uring, addr, &toml);
    let _site = site;
    let mut w = Wire::connect(s.addr);
    w.send(b"GET / HTTP/1.1\r\nHost: v6.test\r\nConnection: close\r\n\r\n");
    let rep = json(&w.response(false));
    assert_eq!(
        header_values(&rep, "forwarded"),
        ["for=\"[::1]\";proto=http;host=v6.test"]
    );
    assert_eq!(header_values(&rep, "x-forwarded-for"), ["::1"]);
}

/// Behind trusted proxies the client is the right-most untrusted address of their chain: for
/// `allowed_ips`, for the rate limiter (IPv6 per /64 by default) and in the access log. From
/// anyone else the chain is not believed.
fn trusted_proxies_name_the_client(d: Driver) {
    let f = start(d, "");
    let xff = |chain: &str| format!("X-Forwarded-For: {chain}\r\n");
    // The peer (loopback) is trusted: the client is the last untrusted hop.
    assert_eq!(f.get("trusted.test", "/a", &xff("203.0.113.5")).status, 200);
    assert_eq!(
        f.get("trusted.test", "/b", &xff("6.6.6.6, 203.0.113.6"))
            .status,
        200,
        "what lies left of the first untrusted hop is the client's own claim"
    );
    assert_eq!(
        f.get("trusted.test", "/c", &xff("203.0.113.7, 6.6.6.6"))
            .status,
        403,
        "the right-most untrusted hop is 6.6.6.6"
    );
    // Forwarded when there is no X-Forwarded-For.
    assert_eq!(
        f.get(
            "trusted.test",
            "/d",
            "Forwarded: for=\"203.0.113.8:4711\"\r\n"
        )
        .status,
        200
    );
    // A route that trusts nobody: the peer is the client, whatever the headers say.
    assert_eq!(f.get("open.test", "/e", &xff("203.0.113.5")).status, 403);
    // The upstream still gets the whole chain, with the peer appended.
    let rep = json(&f.get("trusted.test", "/f", &xff("203.0.113.9")));
    let chain = &header_values(&rep, "x-forwarded-for")[0];
    assert!(chain.starts_with("203.0.113.9, 127."), "{chain}");
    // The access log's client is the one the policy saw.
    let log = f.wait_access_log(6);
    let clients: Vec<&str> = log.iter().map(|l| l["client"].as_str().unwrap()).collect();
    assert_eq!(
        clients[..5],
        [
            "203.0.113.5",
            "203.0.113.6",
            "6.6.6.6",
            "203.0.113.8",
            clients[4]
        ]
    );
    assert!(clients[4].starts_with("127."), "{clients:?}");
    // Rate limits count 203.0.113.9 and .5 apart (IPv4: per address) …
    let v4: Vec<u16> = (0..4)
        .map(|_| f.get("trusted.test", "/r", &xff("203.0.113.99")).status)
        .collect();
    assert_eq!(v4, [200, 200, 200, 429]);
    // … and IPv6 clients per /64: rotating addresses inside one /64 does not escape it.
    let v6: Vec<u16> = (1..=4)
        .map(|i| {
            f.get("trusted.test", "/r", &xff(&format!("2001:db8:1:2::{i}")))
                .status
        })
        .collect();
    assert_eq!(v6, [200, 200, 200, 429]);
    assert_eq!(
        f.get("trusted.test", "/r", &xff("2001:db8:1:3::1")).status,
        200,
        "another /64 has a window of its own"
    );
    // rate_limit_ipv6_prefix = 128 counts every address alone.
    let wide: Vec<u16> = (1..=4)
        .map(|i| {
            f.get("wide.test", "/r", &xff(&format!("2001:db8:9:9::{i}")))
                .status
        })
        .collect();
    assert_eq!(wide, [200, 200, 200, 200]);
}

/// `X-Forwarded-Proto` (and `Forwarded: proto=`) say `https` behind a TLS listener.
fn forwarded_proto_is_https_behind_tls(d: Driver) {
    let up = Upstream::start();
    let h = crate::tls::start(
        d,
        "",
        &format!(
            "[host_routes.\"api.test\"]\ntype = \"Proxy\"\nurl = \"http://{}\"\n",
            up.addr
        ),
    );
    let tls = crate::tls::tls_connect(h.s.addr, "site.test", crate::tls::Trust::Any, None).unwrap();
    let mut w = Wire::new(tls);
    w.send(b"GET /p HTTP/1.1\r\nHost: api.test\r\nX-Forwarded-Proto: http\r\n\r\n");
    let rep = json(&w.response(false));
    assert_eq!(header_values(&rep, "x-forwarded-proto"), ["https"]);
    let fwd = &header_values(&rep, "forwarded")[0];
    assert!(fwd.contains(";proto=https;host=api.test"), "{fwd}");
}

/// `Upgrade: h2c` is never forwarded (it would hand the connection to the upstream past every
/// later request's routing and policy); only the route's `allowed_upgrades` are, and a refused
/// upgrade is served as a plain request.
fn h2c_upgrades_are_never_tunnelled(d: Driver) {
    let f = start(d, "");
    let h2c = "GET /h2c HTTP/1.1\r\nHost: public.test\r\nConnection: Upgrade, HTTP2-Settings\r\n\
               Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";
    let mut w = Wire::connect(f.s.addr);
    w.send(h2c.as_bytes());
    let r = w.response(false);
    assert_eq!(r.status, 200, "answered as a plain request");
    let rep = json(&r);
    for name in ["upgrade", "http2-settings", "connection"] {
        assert!(
            header_values(&rep, name).is_empty(),
            "{name} forwarded: {rep}"
        );
    }
    // The connection is still HTTP/1.1 to the daemon: the next request is routed as usual.
    w.send(b"GET /next HTTP/1.1\r\nHost: admin.internal\r\n\r\n");
    assert_eq!(w.response(false).status, 403);
    // HTTP2-Settings is dropped even when Connection does not name it.
    let rep = json(&f.get(
        "public.test",
        "/h2c",
        "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n",
    ));
    assert!(header_values(&rep, "http2-settings").is_empty(), "{rep}");
    // WebSocket, allowed by default, still upgrades.
    let mut w = Wire::connect(f.s.addr);
    w.send(
        b"GET /ws HTTP/1.1\r\nHost: public.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    assert_eq!(w.response(false).status, 101);
    w.send(b"ping");
    let mut got = [0u8; 4];
    w.stream.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    // An upstream that switches protocols unasked, or to one that was not offered, is a bad
    // gateway, not a tunnel.
    assert_eq!(f.get("public.test", "/force101", "").status, 502);
    let offered = "Connection: Upgrade\r\nUpgrade: websocket\r\n";
    assert_eq!(f.get("public.test", "/force101", offered).status, 502);
    // A route that allows no upgrade sends WebSocket requests as plain ones too.
    let g = start(d, "security = { allowed_upgrades = [] }");
    let r = g.get(
        "public.test",
        "/ws",
        "Connection: Upgrade\r\nUpgrade: websocket\r\n",
    );
    assert_eq!(r.status, 400, "the upstream saw no upgrade");
}

crate::both_drivers!(
    absolute_form_authority_is_forwarded,
    client_forwarding_headers_cannot_be_spoofed,
    trusted_proxies_name_the_client,
    forwarded_proto_is_https_behind_tls,
    h2c_upgrades_are_never_tunnelled,
);

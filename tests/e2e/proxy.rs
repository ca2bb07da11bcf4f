//! Proxy routes end to end: the real daemon in front of real upstream servers
//! ([`crate::upstream::Upstream`]) on loopback. Routing, header rules, bodies both ways, limits,
//! pipelining, the upstream connection pool, faults and WebSocket tunnels.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Driver, Server, Site};
use crate::upstream::{header_values, pattern, report, Framing, RawResponse, Upstream, Wire};

/// The daemon in front of one upstream. Fields drop in order: the daemon goes first.
struct Proxied {
    s: Server,
    up: Upstream,
    _site: Site,
}

/// The standard routes to `up`: `h.test` `/api/` → `/app/`, `h.test` `/backend` → `/`, and the
/// whole of `api.test` → `/` with `preserve_host = false`. `api_extra` goes into the `/api/`
/// route's table (e.g. a `security = { … }` line).
fn routes(up: SocketAddr, api_extra: &str) -> String {
    format!(
        r#"[path_routes."h.test"."/api/"]
type = "Proxy"
url = "http://{up}/app/"
{api_extra}

[path_routes."h.test"."/backend"]
type = "Proxy"
url = "http://{up}"

[host_routes."api.test"]
type = "Proxy"
url = "http://{up}"
preserve_host = false
"#
    )
}

fn start_with(d: Driver, up: Upstream, api_extra: &str) -> Proxied {
    let site = Site::new();
    let s = Server::start(d, &site, &routes(up.addr, api_extra));
    Proxied { s, up, _site: site }
}

fn start(d: Driver) -> Proxied {
    start_with(d, Upstream::start(), "")
}

impl Proxied {
    fn connect(&self) -> Wire {
        Wire::connect(self.s.addr)
    }

    /// `GET target` with `Host: host` and `extra` header lines on a fresh connection.
    fn get(&self, host: &str, target: &str, extra: &str) -> RawResponse {
        let mut w = self.connect();
        w.send(
            format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
                .as_bytes(),
        );
        w.response(false)
    }

    /// The upstream's report of `GET target` with `Host: host` and `extra` header lines.
    fn report(&self, host: &str, target: &str, extra: &str) -> Value {
        json(&self.get(host, target, extra))
    }

    fn requests(&self) -> usize {
        self.up.requests.load(Ordering::SeqCst)
    }

    fn connections(&self) -> usize {
        self.up.connections.load(Ordering::SeqCst)
    }
}

fn json(r: &RawResponse) -> Value {
    report(&r.to_response())
}

/// `GET target` on `w` (keep-alive), `Host: h.test`.
fn get_on(w: &mut Wire, target: &str) -> RawResponse {
    w.send(format!("GET {target} HTTP/1.1\r\nHost: h.test\r\n\r\n").as_bytes());
    w.response(false)
}

/// Header names of a report, lowercased, in order.
fn names(report: &Value) -> Vec<String> {
    report["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap().to_ascii_lowercase())
        .collect()
}

/// A chunked encoding of `data` in chunks of `size`.
fn chunked(data: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / size * 8 + 8);
    for c in data.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Sends `head` and `body` from another thread while reading the response here, so neither
/// side can block the other whatever the daemon buffers.
fn exchange(w: &mut Wire, head: &[u8], body: &[u8]) -> RawResponse {
    let mut writer = w.stream.try_clone().unwrap();
    let mut all = head.to_vec();
    all.extend_from_slice(body);
    let t = std::thread::spawn(move || {
        let _ = writer.write_all(&all);
    });
    let r = w.response(false);
    t.join().unwrap();
    r
}

fn routing_rows(d: Driver) {
    let p = start(d);
    for (host, target, want) in [
        ("h.test", "/api/v1/users", "/app/v1/users"),
        ("h.test", "/backend", "/"),
        ("h.test", "/backend/users", "/users"),
        ("api.test", "/x/y", "/x/y"),
        ("h.test", "/api/a?x=1&y=%20z&&", "/app/a?x=1&y=%20z&&"),
        ("h.test", "/backend?q=1", "/?q=1"),
        ("h.test", "/api/a%20b", "/app/a%20b"),
        ("h.test", "/api/%3Fx", "/app/%3Fx"),
    ] {
        let r = p.report(host, target, "");
        assert_eq!(r["target"], want, "{host}{target}");
        assert_eq!(r["method"], "GET", "{host}{target}");
        assert_eq!(r["version"], "HTTP/1.1", "{host}{target}");
    }
    // The method goes through as is.
    let mut w = p.connect();
    w.send(b"DELETE /api/thing HTTP/1.1\r\nHost: h.test\r\n\r\n");
    let r = json(&w.response(false));
    assert_eq!(
        (r["method"].as_str(), r["target"].as_str()),
        (Some("DELETE"), Some("/app/thing"))
    );
}

fn hop_by_hop_request_headers_are_not_forwarded(d: Driver) {
    let p = start(d);
    let r = p.report(
        "h.test",
        "/api/hop-test",
        "Connection: keep-alive, X-Drop-Me\r\nX-Drop-Me: 1\r\nKeep-Alive: timeout=5\r\n\
         Proxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-Foo\r\nUpgrade: h2c\r\n\
         X-Keep: yes\r\n",
    );
    let seen = names(&r);
    for h in [
        "x-drop-me",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ] {
        assert!(
            !seen.contains(&h.to_string()),
            "{h} was forwarded: {seen:?}"
        );
    }
    for v in header_values(&r, "connection") {
        let v = v.to_ascii_lowercase();
        assert!(!v.contains("x-drop-me"), "Connection: {v}");
        assert!(!v.contains("keep-alive"), "Connection: {v}");
        assert!(!v.contains("upgrade"), "Connection: {v}");
    }
    assert_eq!(header_values(&r, "x-keep"), ["yes"]);
    // An Upgrade without `Connection: upgrade` is no upgrade, and is not forwarded either.
    let r = p.report("h.test", "/api/u", "Upgrade: websocket\r\n");
    assert!(header_values(&r, "upgrade").is_empty(), "{r}");
}

fn end_to_end_headers_are_forwarded_in_order(d: Driver) {
    let p = start(d);
    let r = p.report(
        "h.test",
        "/api/e2e",
        "X-Custom: a\r\nCookie: c=1\r\nAccept: text/plain\r\nX-Custom: b\r\nUser-Agent: e2e/1\r\n",
    );
    let ours = ["x-custom", "cookie", "accept", "user-agent"];
    let got: Vec<(String, String)> = r["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_ascii_lowercase(),
                h[1].as_str().unwrap().to_string(),
            )
        })
        .filter(|(n, _)| ours.contains(&n.as_str()))
        .collect();
    let want: Vec<(String, String)> = [
        ("x-custom", "a"),
        ("cookie", "c=1"),
        ("accept", "text/plain"),
        ("x-custom", "b"),
        ("user-agent", "e2e/1"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    assert_eq!(got, want);
}

fn host_is_the_clients_unless_preserve_host_is_off(d: Driver) {
    let p = start(d);
    let r = p.report("h.test", "/api/h", "");
    assert_eq!(header_values(&r, "host"), ["h.test"]);
    let r = p.report("api.test", "/h", "");
    assert_eq!(header_values(&r, "host"), [p.up.addr.to_string()]);
}

fn forwarded_headers_are_set(d: Driver) {
    let p = start(d);
    // Without an X-Forwarded-For: the peer's address.
    let mut w = p.connect();
    let peer = w.stream.local_addr().unwrap().ip().to_string();
    let r = json(&get_on(&mut w, "/api/f"));
    assert_eq!(header_values(&r, "x-forwarded-for"), [peer.as_str()]);
    assert_eq!(header_values(&r, "x-forwarded-proto"), ["http"]);
    assert_eq!(header_values(&r, "x-forwarded-host"), ["h.test"]);
    // With one: the peer is appended.
    w.send(b"GET /api/f HTTP/1.1\r\nHost: h.test\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n");
    let r = json(&w.response(false));
    let xff = header_values(&r, "x-forwarded-for");
    assert_eq!(xff.len(), 1, "one X-Forwarded-For line: {xff:?}");
    let hops: Vec<&str> = xff[0].split(',').map(str::trim).collect();
    assert_eq!(hops, ["1.2.3.4", peer.as_str()], "{xff:?}");
    assert!(xff[0].ends_with(&peer));
    // The host route's X-Forwarded-Host is its own host.
    let r = p.report("api.test", "/f", "");
    assert_eq!(header_values(&r, "x-forwarded-host"), ["api.test"]);
}

/// What the proxy itself vouches for (scheme, host) replaces what a client claims.
fn client_forwarded_proto_and_host_are_replaced(d: Driver) {
    let p = start(d);
    let r = p.report(
        "h.test",
        "/api/f",
        "X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.test\r\n",
    );
    assert_eq!(header_values(&r, "x-forwarded-proto"), ["http"]);
    assert_eq!(header_values(&r, "x-forwarded-host"), ["h.test"]);
}

fn hop_by_hop_response_headers_are_not_passed_back(d: Driver) {
    let p = start(d);
    let mut w = p.connect();
    let r = get_on(&mut w, "/api/hop");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hop");
    assert_eq!(r.header("x-end"), Some("1"), "end-to-end headers pass");
    for h in ["x-hop-resp", "keep-alive", "proxy-connection"] {
        assert_eq!(r.header(h), None, "{h} passed back: {:?}", r.headers);
    }
    for v in r.header_all("connection") {
        assert!(!v.to_ascii_lowercase().contains("x-hop-resp"), "{v}");
    }
    // The connection is still in step.
    assert_eq!(json(&get_on(&mut w, "/api/next"))["target"], "/app/next");
}

fn chunked_upstream_response_arrives_intact(d: Driver) {
    let p = start(d);
    let mut w = p.connect();
    let r = get_on(&mut w, "/api/chunked/1000000");
    assert_eq!(r.status, 200);
    assert!(r.complete, "{:?} cut short at {}", r.framing, r.body.len());
    assert!(
        matches!(r.framing, Framing::Chunked | Framing::Length(1_000_000)),
        "{:?}",
        r.framing
    );
    assert_eq!(r.body.len(), 1_000_000);
    assert!(r.body == pattern(1_000_000), "body differs");
    assert_eq!(r.header("connection"), None);
    assert_eq!(json(&get_on(&mut w, "/api/next"))["target"], "/app/next");
}

fn close_delimited_upstream_response_arrives_intact(d: Driver) {
    let p = start(d);
    let mut w = p.connect();
    let r = get_on(&mut w, "/api/close/100000");
    assert_eq!(r.status, 200);
    assert!(r.complete, "{:?} cut short at {}", r.framing, r.body.len());
    assert_eq!(r.body.len(), 100_000);
    assert!(r.body == pattern(100_000), "body differs");
    let closes = r
        .header_all("connection")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("close"));
    let next = match r.framing {
        // Delimited by the close: read_response read to EOF already.
        Framing::Close => None,
        _ if closes => {
            assert!(w.is_closed(), "Connection: close, and yet open");
            None
        }
        // Well framed and kept open: the connection goes on.
        _ => Some(json(&get_on(&mut w, "/api/next"))),
    };
    // The upstream closed its connection; the next request needs (and gets) a fresh one.
    let next = next.unwrap_or_else(|| p.report("h.test", "/api/next", ""));
    assert_eq!(next["target"], "/app/next");
    assert_eq!(next["connection_requests"], 1);
    assert_eq!(p.connections(), 2);
}

fn large_bodies_stream_both_ways(d: Driver) {
    let p = start_with(
        d,
        Upstream::start(),
        "security = { max_request_body_size = 20971520, max_chunked_body_size = 20971520 }",
    );
    let data = pattern(10 << 20);
    let mut w = p.connect();
    // Content-Length request body.
    let head = format!(
        "POST /api/echo HTTP/1.1\r\nHost: h.test\r\nContent-Length: {}\r\n\r\n",
        data.len()
    );
    let r = exchange(&mut w, head.as_bytes(), &data);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), data.len());
    assert!(r.body == data, "echo differs");
    // Chunked request body, 64 KiB chunks.
    let head = "POST /api/echo HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    let r = exchange(&mut w, head.as_bytes(), &chunked(&data, 64 << 10));
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), data.len());
    assert!(r.body == data, "chunked echo differs");
    // A 10 MiB response.
    let r = get_on(&mut w, "/api/bytes/10485760");
    assert_eq!(r.status, 200);
    assert!(r.complete);
    assert!(r.body == data, "response body differs");
}

fn request_body_framing_reaches_the_upstream(d: Driver) {
    let p = start(d);
    let mut w = p.connect();
    w.send(b"POST /api/form HTTP/1.1\r\nHost: h.test\r\nContent-Length: 11\r\n\r\nhello world");
    let r = json(&w.response(false));
    assert_eq!(r["method"], "POST");
    assert_eq!(r["chunked"], false);
    assert_eq!(r["body_len"], 11);
    assert_eq!(r["body"], "hello world");
    assert_eq!(header_values(&r, "content-length"), ["11"]);
    let mut req =
        b"PUT /api/form HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(&chunked(&pattern(5000), 1000));
    w.send(&req);
    let r = json(&w.response(false));
    assert_eq!(r["method"], "PUT");
    assert_eq!(r["chunked"], true);
    assert_eq!(r["body_len"], 5000);
    assert_eq!(
        r["body"].as_str().unwrap(),
        String::from_utf8_lossy(&pattern(5000))
    );
    assert!(header_values(&r, "content-length").is_empty());
    // No body: none announced.
    let r = json(&get_on(&mut w, "/api/nobody"));
    assert_eq!(r["body_len"], 0);
    assert_eq!(r["chunked"], false);
}

fn body_limits_answer_413_before_the_upstream(d: Driver) {
    let p = start_with(
        d,
        Upstream::start(),
        "security = { max_request_body_size = 100, max_chunked_body_size = 100 }",
    );
    // At the limit: forwarded.
    let mut w = p.connect();
    let mut req = b"POST /api/ok HTTP/1.1\r\nHost: h.test\r\nContent-Length: 100\r\n\r\n".to_vec();
    req.extend_from_slice(&[b'x'; 100]);
    w.send(&req);
    assert_eq!(json(&w.response(false))["body_len"], 100);
    let before = p.requests();
    // Over it by Content-Length: 413, and the upstream never hears of it.
    let r = p.get("h.test", "/api/big", "Content-Length: 101\r\n");
    assert_eq!(r.status, 413);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        p.requests(),
        before,
        "the upstream saw the oversized request"
    );
    assert!(p.up.received().iter().all(|r| r["target"] != "/app/big"));
    // Chunked over the limit: 413 (the upstream answers only after the whole body).
    let mut w = p.connect();
    let mut req =
        b"POST /api/bigchunks HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    req.extend_from_slice(&chunked(&[b'y'; 200], 50));
    let r = exchange(&mut w, &req, b"");
    assert_eq!(r.status, 413);
    assert!(p
        .up
        .received()
        .iter()
        .all(|r| r["target"] != "/app/bigchunks"));
}

/// A client that asks for `100 Continue` (as curl does for larger bodies) gets its body
/// through: whether the 100 comes from the daemon or the upstream, or the client stops waiting.
fn expect_continue_through_the_proxy(d: Driver) {
    let p = start(d);
    let mut w = p.connect();
    let data = pattern(5000);
    w.send(
        b"POST /api/echo HTTP/1.1\r\nHost: h.test\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n",
    );
    w.stream
        .set_read_timeout(Some(Duration::from_millis(1000)))
        .unwrap();
    let early = match w.read_response(false) {
        Ok(Some(r)) => Some(r),
        Ok(None) => panic!("closed instead of answering Expect: 100-continue"),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("{e}"),
    };
    w.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    if let Some(r) = &early {
        assert_eq!(r.status, 100, "a final answer before the body: {r:?}");
    }
    w.send(&data);
    let r = w.response(false);
    assert_eq!(r.status, 200);
    assert!(r.body == data, "echo differs");
    // One 100 at most: the next response is the next request's.
    assert_eq!(json(&get_on(&mut w, "/api/next"))["target"], "/app/next");
}

/// An HTTP/1.0 client cannot read chunked: a chunked upstream body reaches it close-delimited.
fn http10_client_gets_a_body_it_can_read(d: Driver) {
    let p = start(d);
    let mut w = p.connect();
    w.send(b"GET /api/chunked/100000 HTTP/1.0\r\nHost: h.test\r\n\r\n");
    let r = w.response(false);
    assert_eq!(r.status, 200);
    assert!(
        r.framing != Framing::Chunked,
        "chunked to an HTTP/1.0 client"
    );
    assert!(r.complete);
    assert!(r.body == pattern(100_000), "body differs");
    assert!(w.is_closed());
    // And an HTTP/1.0 request goes upstream as HTTP/1.1 with a Host.
    let mut w = p.connect();
    w.send(b"GET /api/v HTTP/1.0\r\nHost: h.test\r\n\r\n");
    let r = json(&w.response(false));
    assert_eq!(r["version"], "HTTP/1.1");
    assert_eq!(header_values(&r, "host"), ["h.test"]);
}

fn pipelined_requests_are_answered_in_order(d: Driver) {
    let p = start(d);
    let mut w = p.connect();
    w.send(
        b"GET /api/p1 HTTP/1.1\r\nHost: h.test\r\n\r\n\
          GET /backend/p2 HTTP/1.1\r\nHost: h.test\r\n\r\n\
          GET /api/p3 HTTP/1.1\r\nHost: h.test\r\n\r\n",
    );
    let targets: Vec<String> = (0..3)
        .map(|_| {
            json(&w.response(false))["target"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(targets, ["/app/p1", "/p2", "/app/p3"]);
}

/// A HEAD response carries no body: the pipelined request after it still parses.
fn head_response_has_no_body(d: Driver) {
    let p = start(d);
    let mut w = p.connect();
    w.send(
        b"HEAD /api/bytes/100 HTTP/1.1\r\nHost: h.test\r\n\r\nGET /api/after HTTP/1.1\r\nHost: h.test\r\n\r\n",
    );
    assert_eq!(w.response(true).status, 200);
    assert_eq!(json(&w.response(false))["target"], "/app/after");
    assert_eq!(p.up.received()[0]["method"], "HEAD");
}

/// The upstream's Content-Length on a HEAD response is the size a GET would get; it passes
/// through like any end-to-end header (as the File routes send it for HEAD).
fn head_response_keeps_the_upstreams_content_length(d: Driver) {
    let p = start(d);
    let mut w = p.connect();
    w.send(b"HEAD /api/bytes/100 HTTP/1.1\r\nHost: h.test\r\n\r\n");
    let r = w.response(true);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("100"), "{:?}", r.headers);
    assert_eq!(r.header("transfer-encoding"), None);
}

fn upstream_connections_are_reused(d: Driver) {
    let p = start(d);
    for _ in 0..2 {
        let mut w = p.connect();
        for i in 0..10 {
            let r = json(&get_on(&mut w, &format!("/api/n{i}")));
            assert_eq!(r["target"], format!("/app/n{i}"));
        }
    }
    assert_eq!(p.requests(), 20);
    assert!(
        p.connections() <= 2,
        "{} upstream connections for 20 sequential requests",
        p.connections()
    );
    let last = p.up.received().last().unwrap()["connection_requests"].clone();
    assert!(last.as_u64().unwrap() >= 10, "{last}");
    // The upstream closes after /close/N; the next request gets a fresh connection.
    let before = p.connections();
    let r = p.get("h.test", "/api/close/10", "");
    assert_eq!(r.body, pattern(10));
    let r = p.report("h.test", "/api/again", "");
    assert_eq!(r["target"], "/app/again");
    if before == 1 {
        // The only pooled connection is gone: a fresh one.
        assert_eq!(r["connection_requests"], 1);
        assert_eq!(p.connections(), 2);
    }
}

/// An upstream that drops idle keep-alive connections silently: the pooled one is dead by the
/// next request, which must still succeed.
fn stale_pooled_connection_is_not_an_error(d: Driver) {
    let p = start_with(d, Upstream::with_idle_close(Duration::from_millis(300)), "");
    let mut w = p.connect();
    assert_eq!(json(&get_on(&mut w, "/api/one"))["target"], "/app/one");
    assert!(p
        .up
        .wait_until(Duration::from_secs(2), |u| u.open_connections() == 0));
    std::thread::sleep(Duration::from_millis(100));
    for t in ["/api/two", "/api/three"] {
        let r = get_on(&mut w, t);
        assert_eq!(r.status, 200, "{t}: {}", r.text());
        assert_eq!(json(&r)["target"], t.replace("/api/", "/app/"));
    }
    assert!(p.connections() >= 2);
}

fn idle_pool_is_bounded(d: Driver) {
    let p = start_with(
        d,
        Upstream::start(),
        "security = { max_idle_connections_per_host = 1 }",
    );
    // Three at once: three upstream connections.
    let mut clients: Vec<Wire> = (0..3).map(|_| p.connect()).collect();
    for w in &mut clients {
        w.send(b"GET /api/slow/400 HTTP/1.1\r\nHost: h.test\r\n\r\n");
    }
    for w in &mut clients {
        assert_eq!(w.response(false).body, b"slow");
    }
    assert_eq!(p.connections(), 3);
    // The two beyond the cap wait a grace of 2 s for more load (see the next test)...
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(p.up.open_connections(), 3, "the surplus closed at once");
    // ...then only one is kept idle, and it is the one reused.
    assert!(
        p.up.wait_until(Duration::from_secs(4), |u| u.open_connections() <= 1),
        "{} idle upstream connections kept, at most 1 allowed",
        p.up.open_connections()
    );
    for (i, w) in clients.iter_mut().enumerate() {
        let r = json(&get_on(w, &format!("/api/later{i}")));
        assert!(r["connection_requests"].as_u64().unwrap() >= 2, "{r}");
    }
    assert_eq!(p.connections(), 3);
}

/// With the default cap (8 idle per upstream and worker), 20 clients whose requests are in
/// flight together keep reusing their 20 upstream connections round after round: the ones
/// beyond the cap are not closed as they come back, so the next round needs none new.
fn bursts_beyond_the_idle_cap_reuse_connections(d: Driver) {
    let p = start(d);
    let mut clients: Vec<Wire> = (0..20).map(|_| p.connect()).collect();
    for _ in 0..5 {
        for w in &mut clients {
            w.send(b"GET /api/slow/100 HTTP/1.1\r\nHost: h.test\r\n\r\n");
        }
        for w in &mut clients {
            assert_eq!(w.response(false).body, b"slow");
        }
    }
    assert_eq!(p.requests(), 100);
    assert_eq!(
        p.connections(),
        20,
        "upstream connections opened for 5 rounds of 20 requests at once"
    );
    // `proxyctl stats`: 20 opened for 100 requests = 200 per 1,000, and in the JSON.
    let st = p.s.proxyctl_json(&["stats"]);
    let up = &st["upstreams"][0];
    assert_eq!(
        (up["connects"].as_u64(), up["reuses"].as_u64()),
        (Some(20), Some(80))
    );
    let out = p.s.proxyctl(&["stats"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let row: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("http://"))
        .unwrap_or_else(|| panic!("{text}"))
        .split_whitespace()
        .collect();
    assert!(text.contains("OPENED/1K"), "{text}");
    assert_eq!(row[2..5], ["20", "80", "200.0"], "{text}");
}

/// An idle upstream connection is closed after `idle_connection_timeout_secs`, whether or
/// not another request comes.
fn idle_pool_connections_expire(d: Driver) {
    let p = start_with(
        d,
        Upstream::start(),
        "security = { idle_connection_timeout_secs = 1 }",
    );
    let mut w = p.connect();
    assert_eq!(json(&get_on(&mut w, "/api/one"))["target"], "/app/one");
    let done = Instant::now();
    assert_eq!(p.up.open_connections(), 1);
    assert!(
        p.up.wait_until(Duration::from_secs(3), |u| u.open_connections() == 0),
        "an idle upstream connection outlived idle_connection_timeout_secs"
    );
    assert!(
        done.elapsed() >= Duration::from_millis(800),
        "closed before the idle timeout"
    );
    // A request after that gets a fresh connection.
    let r = json(&get_on(&mut w, "/api/two"));
    assert_eq!(r["connection_requests"], 1);
    assert_eq!(p.connections(), 2);
}

fn upstream_down_is_502(d: Driver) {
    let site = Site::new();
    let closed = Upstream::closed_port();
    let s = Server::start(
        d,
        &site,
        &format!(
            r#"[path_routes."h.test"."/api/"]
type = "Proxy"
url = "http://{closed}/app/"
"#
        ),
    );
    let start = Instant::now();
    let mut w = Wire::connect(s.addr);
    w.send(b"GET /api/x HTTP/1.1\r\nHost: h.test\r\n\r\n");
    let r = w.response(false);
    assert_eq!(r.status, 502);
    assert!(start.elapsed() < Duration::from_secs(3));
}

fn slow_upstream_times_out_with_504(d: Driver) {
    let p = start_with(
        d,
        Upstream::start(),
        "security = { backend_response_timeout_secs = 1 }",
    );
    let mut w = p.connect();
    let start = Instant::now();
    w.send(b"GET /api/slow/3000 HTTP/1.1\r\nHost: h.test\r\n\r\n");
    let r = w.response(false);
    let took = start.elapsed();
    assert_eq!(r.status, 504);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    // Within the timeout: fine.
    assert_eq!(p.get("h.test", "/api/slow/200", "").body, b"slow");
}

fn upstream_reset_is_502(d: Driver) {
    let p = start(d);
    let r = p.get("h.test", "/api/reset", "");
    assert_eq!(r.status, 502);
    let tries =
        p.up.received()
            .iter()
            .filter(|r| r["target"] == "/app/reset")
            .count();
    assert!((1..=2).contains(&tries), "{tries} attempts");
    // The route still works.
    assert_eq!(p.report("h.test", "/api/ok", "")["target"], "/app/ok");
}

/// A request that is not idempotent is never sent twice, even when it failed on a reused
/// connection before any response byte.
fn non_idempotent_request_is_not_retried(d: Driver) {
    let p = start(d);
    let mut w = p.connect();
    // Warm the pool so that the POST goes out on a reused connection.
    assert_eq!(json(&get_on(&mut w, "/api/warm"))["target"], "/app/warm");
    w.send(b"POST /api/reset HTTP/1.1\r\nHost: h.test\r\nContent-Length: 4\r\n\r\ndata");
    assert_eq!(w.response(false).status, 502);
    std::thread::sleep(Duration::from_millis(100));
    let posts =
        p.up.received()
            .iter()
            .filter(|r| r["target"] == "/app/reset")
            .count();
    assert_eq!(posts, 1, "a POST was retried");
}

fn upstream_garbage_is_502(d: Driver) {
    let p = start(d);
    let r = p.get("h.test", "/api/garbage", "");
    assert_eq!(r.status, 502);
    assert!(!r.text().contains("NOT HTTP"));
    assert_eq!(p.report("h.test", "/api/ok", "")["target"], "/app/ok");
}

/// A response the upstream cuts short must not look complete to the client: it gets the head
/// and part of the body, then the connection closes.
fn truncated_upstream_response_is_never_complete(d: Driver) {
    let p = start(d);
    let mut w = p.connect();
    w.send(b"GET /api/truncate/1000 HTTP/1.1\r\nHost: h.test\r\n\r\nGET /api/next HTTP/1.1\r\nHost: h.test\r\n\r\n");
    let r = w.response(false);
    if r.status == 502 {
        // Caught before anything was sent: a complete 502 is honest too.
        return;
    }
    assert_eq!(r.status, 200);
    assert!(
        !r.complete,
        "a truncated body looked complete: {:?}",
        r.framing
    );
    assert!(r.body.len() < 1000);
    assert!(
        r.body == pattern(r.body.len()),
        "the part that came is right"
    );
    assert!(w.is_closed(), "the connection must close after a cut body");
}

/// The same cut with a body large enough to go through `splice`: every byte the upstream sent
/// reaches the client (what was in the pipe too), then the connection closes.
fn truncated_large_body_through_splice_delivers_what_came(d: Driver) {
    let p = start(d);
    let mut w = p.connect();
    w.send(b"GET /api/truncate/1000000 HTTP/1.1\r\nHost: h.test\r\n\r\n");
    let r = w.response(false);
    assert_eq!(r.status, 200);
    assert!(!r.complete, "a truncated body looked complete");
    assert_eq!(r.body.len(), 500_000, "all that the upstream sent, no more");
    assert!(r.body == pattern(500_000), "the part that came is right");
    assert!(w.is_closed(), "the connection must close after a cut body");
    // The worker goes on: a whole large body through the same route.
    let r = p.get("h.test", "/api/bytes/300000", "");
    assert_eq!(r.status, 200);
    assert!(r.body == pattern(300_000));
}

fn websocket_upgrade_tunnels_bytes(d: Driver) {
    let p = start(d);
    let mut w = p.connect();
    w.send(
        b"GET /api/ws HTTP/1.1\r\nHost: h.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    let r = w.response(false);
    assert_eq!(r.status, 101);
    assert!(r
        .header("upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket")));
    assert!(r
        .header("connection")
        .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade")));
    for i in 0..5u8 {
        let msg = [b'\x81', 5, b'h', b'e', b'l', b'l', b'0' + i];
        w.send(&msg);
        assert_eq!(w.take(msg.len()).unwrap(), msg, "round trip {i}");
    }
    // A larger burst, both directions at once.
    let big = pattern(300_000);
    let mut writer = w.stream.try_clone().unwrap();
    let sent = big.clone();
    let t = std::thread::spawn(move || writer.write_all(&sent).unwrap());
    assert!(w.take(big.len()).unwrap() == big, "burst differs");
    t.join().unwrap();
    // Closing the client's side ends the tunnel: the upstream sees EOF and closes, and so
    // does the daemon.
    w.stream.shutdown(Shutdown::Write).unwrap();
    assert!(w.is_closed(), "the tunnel stayed open");
    assert!(
        p.up.wait_until(Duration::from_secs(2), |u| u.open_connections() == 0),
        "the upstream side of the tunnel stayed open"
    );
}

fn websocket_tunnel_ends_when_the_client_disappears(d: Driver) {
    let p = start(d);
    let mut w = p.connect();
    w.send(b"GET /api/ws HTTP/1.1\r\nHost: h.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!(w.response(false).status, 101);
    w.send(b"ping");
    let mut got = [0u8; 4];
    w.stream.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    drop(w);
    assert!(
        p.up.wait_until(Duration::from_secs(2), |u| u.open_connections() == 0),
        "the upstream side of the tunnel stayed open"
    );
}

/// Peak resident memory of a process, from `/proc/PID/status` (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Bodies are streamed, never buffered whole: 100 MiB each way through the proxy, downloaded
/// by a client that reads slowly, and the daemon's peak memory stays far below the body size.
fn hundred_mib_each_way_in_bounded_memory(d: Driver) {
    const N: usize = 100 * 1024 * 1024;
    let p = start_with(
        d,
        Upstream::start(),
        "security = { max_request_body_size = 209715200 }",
    );
    // Download, read in small steps with pauses: the client is the bottleneck.
    let mut c = std::net::TcpStream::connect(p.s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(format!("GET /api/bytes/{N} HTTP/1.1\r\nHost: h.test\r\n\r\n").as_bytes())
        .unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut head = Vec::new();
    let mut got = 0usize;
    let mut reads = 0u32;
    loop {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {got} body bytes");
        let mut data = &buf[..n];
        if head.is_empty() || !head.ends_with(b"\r\n\r\n") {
            let end = data.windows(4).position(|w| w == b"\r\n\r\n");
            match end {
                Some(i) if head.is_empty() => {
                    head.extend_from_slice(&data[..i + 4]);
                    data = &data[i + 4..];
                }
                _ => panic!("expected the head in the first read"),
            }
            assert!(
                head.starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&head)
            );
        }
        for (k, b) in data.iter().enumerate() {
            assert_eq!(*b, ((got + k) * 31 % 251) as u8, "byte {} differs", got + k);
        }
        got += data.len();
        if got >= N {
            break;
        }
        reads += 1;
        if reads.is_multiple_of(8) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert_eq!(got, N);
    // Upload, streamed in 1 MiB writes.
    let mut c = std::net::TcpStream::connect(p.s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(
        format!("POST /api/upload HTTP/1.1\r\nHost: h.test\r\nContent-Length: {N}\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let piece = vec![7u8; 1024 * 1024];
    for _ in 0..100 {
        c.write_all(&piece).unwrap();
    }
    let mut w = Wire::new(c);
    let r = w.response(false);
    assert_eq!(r.status, 200);
    assert_eq!(json(&r)["body_len"], N);
    // Streaming, not buffering: the daemon never held anything near 100 MiB.
    let peak = peak_rss(p.s.child.id());
    assert!(peak < 48 * 1024 * 1024, "peak RSS {} MiB", peak >> 20);
}

crate::both_drivers!(
    hundred_mib_each_way_in_bounded_memory,
    routing_rows,
    hop_by_hop_request_headers_are_not_forwarded,
    end_to_end_headers_are_forwarded_in_order,
    host_is_the_clients_unless_preserve_host_is_off,
    forwarded_headers_are_set,
    client_forwarded_proto_and_host_are_replaced,
    hop_by_hop_response_headers_are_not_passed_back,
    chunked_upstream_response_arrives_intact,
    close_delimited_upstream_response_arrives_intact,
    large_bodies_stream_both_ways,
    request_body_framing_reaches_the_upstream,
    body_limits_answer_413_before_the_upstream,
    expect_continue_through_the_proxy,
    http10_client_gets_a_body_it_can_read,
    pipelined_requests_are_answered_in_order,
    head_response_has_no_body,
    head_response_keeps_the_upstreams_content_length,
    upstream_connections_are_reused,
    stale_pooled_connection_is_not_an_error,
    idle_pool_is_bounded,
    bursts_beyond_the_idle_cap_reuse_connections,
    idle_pool_connections_expire,
    upstream_down_is_502,
    slow_upstream_times_out_with_504,
    upstream_reset_is_502,
    non_idempotent_request_is_not_retried,
    upstream_garbage_is_502,
    truncated_upstream_response_is_never_complete,
    truncated_large_body_through_splice_delivers_what_came,
    websocket_upgrade_tunnels_bytes,
    websocket_tunnel_ends_when_the_client_disappears,
);

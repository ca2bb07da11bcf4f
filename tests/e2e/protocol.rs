//! HTTP/1.1 behaviour: keep-alive, pipelining, HTTP/1.0, HEAD, headers, bodies, bad input.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::common::{Driver, Server, Site};

fn site() -> Site {
    let s = Site::new();
    s.file("index.html", "<h1>home</h1>\n");
    s.file("a.txt", "aaaa");
    s.file("b.txt", "bbbbbbbb");
    s
}

fn server(driver: Driver, site: &Site) -> Server {
    Server::start(
        driver,
        site,
        r#"[host_routes."example.com"]
path = "{site}"
"#,
    )
}

fn get_has_date_server_and_length(d: Driver) {
    let site = site();
    let s = server(d, &site);
    let r = s.get("example.com", "/a.txt");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"aaaa");
    assert_eq!(r.header("content-length"), Some("4"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert!(r.header("server").unwrap().starts_with("zerocopy-server/"));
    let date = r.header("date").expect("a Date header");
    assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
    assert_eq!(r.header("connection"), Some("close"));
}

fn keep_alive_serves_many_requests_on_one_connection(d: Driver) {
    let site = site();
    let s = server(d, &site);
    let mut c = s.connect();
    for i in 0..20 {
        let path = if i % 2 == 0 { "/a.txt" } else { "/b.txt" };
        c.send(format!("GET {path} HTTP/1.1\r\nHost: example.com\r\n\r\n").as_bytes());
        let r = c.response(false);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), None);
        assert_eq!(r.body.len(), if i % 2 == 0 { 4 } else { 8 });
    }
}

fn pipelined_responses_come_in_order(d: Driver) {
    let site = site();
    let s = server(d, &site);
    let mut c = s.connect();
    let mut batch = Vec::new();
    for p in ["/a.txt", "/b.txt", "/missing", "/", "/a.txt"] {
        batch
            .extend_from_slice(format!("GET {p} HTTP/1.1\r\nHost: example.com\r\n\r\n").as_bytes());
    }
    c.send(&batch);
    let got: Vec<(u16, Vec<u8>)> = (0..5)
        .map(|_| {
            let r = c.response(false);
            (r.status, r.body)
        })
        .collect();
    assert_eq!(got[0], (200, b"aaaa".to_vec()));
    assert_eq!(got[1], (200, b"bbbbbbbb".to_vec()));
    assert_eq!(got[2].0, 404);
    assert_eq!(got[3], (200, b"<h1>home</h1>\n".to_vec()));
    assert_eq!(got[4], (200, b"aaaa".to_vec()));
}

fn http10_closes_unless_keep_alive_is_asked(d: Driver) {
    let site = site();
    let s = server(d, &site);
    let mut c = s.connect();
    c.send(b"GET /a.txt HTTP/1.0\r\nHost: example.com\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed());

    let mut c = s.connect();
    c.send(b"GET /a.txt HTTP/1.0\r\nHost: example.com\r\nConnection: keep-alive\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.header("connection"), Some("keep-alive"));
    c.send(b"GET /b.txt HTTP/1.0\r\nHost: example.com\r\n\r\n");
    assert_eq!(c.response(false).body, b"bbbbbbbb");
    assert!(c.is_closed());
}

fn connection_close_is_honoured(d: Driver) {
    let site = site();
    let s = server(d, &site);
    let mut c = s.connect();
    c.send(b"GET /a.txt HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\nGET /b.txt HTTP/1.1\r\nHost: example.com\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed(), "no second response after Connection: close");
}

fn head_sends_headers_without_body(d: Driver) {
    let site = site();
    let s = server(d, &site);
    let mut c = s.connect();
    // The GET after the HEAD parses only if the HEAD response carried no body.
    c.send(b"HEAD /b.txt HTTP/1.1\r\nHost: example.com\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: example.com\r\n\r\n");
    let r = c.response(true);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("8"));
    let r = c.response(false);
    assert_eq!(r.body, b"aaaa");
}

fn request_bodies_are_consumed_for_the_next_request(d: Driver) {
    let site = site();
    let s = server(d, &site);
    let mut c = s.connect();
    c.send(b"GET /a.txt HTTP/1.1\r\nHost: example.com\r\nContent-Length: 11\r\n\r\nGET /x HTTPGET /b.txt HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert_eq!(c.response(false).body, b"aaaa");
    assert_eq!(c.response(false).body, b"bbbbbbbb");
    c.send(b"GET /a.txt HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n3\r\nGET\r\n0\r\nTrailer: x\r\n\r\nGET /b.txt HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert_eq!(c.response(false).body, b"aaaa");
    assert_eq!(c.response(false).body, b"bbbbbbbb");
}

/// A head and a body that arrive a few bytes at a time are assembled, not overwritten.
fn requests_split_across_many_writes(d: Driver) {
    let site = site();
    let s = server(d, &site);
    let mut c = s.connect();
    let raw: &[u8] = b"GET /a.txt HTTP/1.1\r\nHost: example.com\r\nX-Long: 0123456789abcdef\r\nContent-Length: 10\r\n\r\n0123456789GET /b.txt HTTP/1.1\r\nHost: example.com\r\n\r\n";
    for piece in raw.chunks(3) {
        c.send(piece);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(c.response(false).body, b"aaaa");
    assert_eq!(c.response(false).body, b"bbbbbbbb");
}

/// A File route has no use for a body the client holds back for `100 Continue`: it answers at
/// once and closes instead of asking for the body.
fn expect_continue_on_a_file_route_answers_without_the_body(d: Driver) {
    let site = site();
    let s = server(d, &site);
    let mut c = s.connect();
    c.send(b"GET /a.txt HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"aaaa");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed());
}

fn body_limits_and_body_timeout(d: Driver) {
    let site = site();
    let s = Server::start(
        d,
        &site,
        r#"[security]
max_request_body_size = 100
max_chunked_body_size = 10
client_body_timeout_secs = 1

[host_routes."example.com"]
path = "{site}"
"#,
    );
    // Content-Length over the limit: 413 before any body byte is read.
    let r = s.raw(b"GET /a.txt HTTP/1.1\r\nHost: example.com\r\nContent-Length: 101\r\n\r\n");
    assert_eq!(r.status, 413);
    assert_eq!(r.header("connection"), Some("close"));
    // At the limit: fine.
    let mut req =
        b"GET /a.txt HTTP/1.1\r\nHost: example.com\r\nContent-Length: 100\r\n\r\n".to_vec();
    req.extend_from_slice(&[b'x'; 100]);
    assert_eq!(s.raw(&req).status, 200);
    // Chunked over the limit while streaming.
    let r = s.raw(b"GET /a.txt HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\nworld!\r\n0\r\n\r\n");
    assert_eq!(r.status, 413);
    // A body that stops arriving: 408 after the body timeout.
    let mut c = s.connect();
    c.send(b"GET /a.txt HTTP/1.1\r\nHost: example.com\r\nContent-Length: 10\r\n\r\nabc");
    let start = Instant::now();
    let r = c.response(false);
    assert_eq!(r.status, 408);
    assert!(start.elapsed() >= Duration::from_millis(900));
    assert!(c.is_closed());
}

/// Error responses to HEAD carry no body: the pipelined request after one still parses.
fn head_errors_have_no_body(d: Driver) {
    let site = site();
    let s = server(d, &site);
    let mut c = s.connect();
    c.send(b"HEAD /missing HTTP/1.1\r\nHost: example.com\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: example.com\r\n\r\n");
    let r = c.response(true);
    assert_eq!(r.status, 404);
    assert_ne!(r.header("content-length"), Some("0"));
    assert_eq!(c.response(false).body, b"aaaa");
}

fn options_asterisk_is_answered(d: Driver) {
    let site = site();
    let s = server(d, &site);
    let mut c = s.connect();
    c.send(b"OPTIONS * HTTP/1.1\r\nHost: example.com\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: example.com\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 200);
    assert!(r.header("allow").unwrap().contains("GET"));
    assert_eq!(c.response(false).body, b"aaaa");
}

/// Each bad request gets its precise status and the connection closes.
fn malformed_requests_get_precise_statuses_and_close(d: Driver) {
    let site = site();
    let s = server(d, &site);
    let long_target = format!(
        "GET /{} HTTP/1.1\r\nHost: example.com\r\n\r\n",
        "a".repeat(9000)
    );
    let big_headers = format!(
        "GET / HTTP/1.1\r\nHost: example.com\r\nX-Big: {}\r\n\r\n",
        "b".repeat(9000)
    );
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("garbage", b"GARBAGE\r\n\r\n".to_vec(), 400),
        ("bad request line", b"GET  / HTTP/1.1\r\nHost: example.com\r\n\r\n".to_vec(), 400),
        ("request line too long", long_target.into_bytes(), 414),
        ("headers too large", big_headers.into_bytes(), 431),
        ("no Host in HTTP/1.1", b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400),
        ("no Host in absolute-form HTTP/1.1", b"GET http://example.com/ HTTP/1.1\r\n\r\n".to_vec(), 400),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: example.com\r\nHost: other\r\n\r\n".to_vec(), 400),
        ("CL and TE", b"GET / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(), 400),
        ("differing CLs", b"GET / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".to_vec(), 400),
        ("bad CL", b"GET / HTTP/1.1\r\nHost: example.com\r\nContent-Length: -1\r\n\r\n".to_vec(), 400),
        ("TE not ending in chunked", b"GET / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(), 400),
        ("unknown TE", b"GET / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: foo, chunked\r\n\r\n".to_vec(), 501),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: example.com\r\nX-A: 1\r\n  folded\r\n\r\n".to_vec(), 400),
        ("space before colon", b"GET / HTTP/1.1\r\nHost : example.com\r\n\r\n".to_vec(), 400),
        ("bare LF", b"GET / HTTP/1.1\nHost: example.com\n\n".to_vec(), 400),
        ("NUL in header", b"GET / HTTP/1.1\r\nHost: example.com\r\nX-A: a\0b\r\n\r\n".to_vec(), 400),
        ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: example.com\r\n\r\n".to_vec(), 505),
        ("bad chunk size", b"GET / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(), 400),
    ];
    for (name, raw, status) in cases {
        let mut c = s.connect();
        c.send(&raw);
        let r = c.response(false);
        assert_eq!(r.status, status, "{name}");
        assert_eq!(r.header("connection"), Some("close"), "{name}");
        assert!(c.is_closed(), "{name}: the connection must close");
    }
}

fn method_a_file_route_cannot_serve_is_405_with_allow(d: Driver) {
    let site = site();
    let s = server(d, &site);
    let mut c = s.connect();
    c.send(b"DELETE /a.txt HTTP/1.1\r\nHost: example.com\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: example.com\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    // Without a body the connection stays usable.
    assert_eq!(c.response(false).body, b"aaaa");
    // With a body it closes: the body was never read.
    let mut c = s.connect();
    c.send(b"POST /a.txt HTTP/1.1\r\nHost: example.com\r\nContent-Length: 4\r\n\r\nabcd");
    let r = c.response(false);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed());
}

fn slow_head_gets_408_at_the_deadline(d: Driver) {
    let site = site();
    let s = Server::start(
        d,
        &site,
        r#"[security]
client_header_timeout_secs = 1

[host_routes."example.com"]
path = "{site}"
"#,
    );
    let mut c = s.connect();
    let start = Instant::now();
    // A byte at a time, slower than the deadline allows in total.
    for b in b"GET /a.txt HTTP/1.1\r\nHo" {
        if c.stream.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(60));
        if start.elapsed() > Duration::from_millis(1500) {
            break;
        }
    }
    let r = c.response(false);
    assert_eq!(r.status, 408);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert!(c.is_closed());
}

fn stricter_route_header_limit_applies_once_routed(d: Driver) {
    let site = site();
    let s = Server::start(
        d,
        &site,
        r#"[path_routes."example.com"."/small/"]
path = "{site}"
security = { max_request_header_size = 1024 }

[path_routes."example.com"."/"]
path = "{site}"
"#,
    );
    let pad = "p".repeat(2000);
    let r = s.raw(
        format!("GET /a.txt HTTP/1.1\r\nHost: example.com\r\nX-Pad: {pad}\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 200);
    let r = s.raw(
        format!("GET /small/a.txt HTTP/1.1\r\nHost: example.com\r\nX-Pad: {pad}\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(r.status, 431);
    let r = s.raw(b"GET /small/a.txt HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert_eq!(r.status, 200);
    // The request line is held to the route's limit too.
    let long = "q".repeat(1100);
    let r =
        s.raw(format!("GET /small/a.txt?{long} HTTP/1.1\r\nHost: example.com\r\n\r\n").as_bytes());
    assert_eq!(r.status, 414);
    let r = s.raw(format!("GET /a.txt?{long} HTTP/1.1\r\nHost: example.com\r\n\r\n").as_bytes());
    assert_eq!(r.status, 200);
}

fn idle_client_that_never_sends_is_dropped(d: Driver) {
    let site = site();
    let s = Server::start(
        d,
        &site,
        r#"[security]
client_header_timeout_secs = 1

[host_routes."example.com"]
path = "{site}"
"#,
    );
    let mut c = s.connect();
    let start = Instant::now();
    assert!(c.try_response(false).is_none(), "silent close, no response");
    assert!(start.elapsed() < Duration::from_secs(4));
}

crate::both_drivers!(
    get_has_date_server_and_length,
    keep_alive_serves_many_requests_on_one_connection,
    pipelined_responses_come_in_order,
    http10_closes_unless_keep_alive_is_asked,
    connection_close_is_honoured,
    head_sends_headers_without_body,
    request_bodies_are_consumed_for_the_next_request,
    requests_split_across_many_writes,
    expect_continue_on_a_file_route_answers_without_the_body,
    body_limits_and_body_timeout,
    head_errors_have_no_body,
    options_asterisk_is_answered,
    malformed_requests_get_precise_statuses_and_close,
    method_a_file_route_cannot_serve_is_405_with_allow,
    slow_head_gets_408_at_the_deadline,
    stricter_route_header_limit_applies_once_routed,
    idle_client_that_never_sends_is_dropped,
);

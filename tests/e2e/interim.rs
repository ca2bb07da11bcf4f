//! Upstream edge cases: interim (1xx) responses — a `103 Early Hints` and the final response
//! in one write, in two, several of them, a flood of them, an unsolicited `100` — an upstream
//! that answers while the client is still sending a large body, `100 Continue` never sent to an
//! HTTP/1.0 client, and transfer codings that never reach an upstream as they came.

use std::io::Write;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use crate::common::{Driver, Server, Site};
use crate::upstream::{header_values, report, Upstream, Wire};

/// The daemon in front of one upstream at `h.test/` (a 3 s response timeout, so that a
/// response the daemon failed to see shows as a quick 504). Fields drop in order.
struct Front {
    s: Server,
    up: Upstream,
    _site: Site,
}

fn start(d: Driver, security: &str) -> Front {
    let up = Upstream::start();
    let site = Site::new();
    site.file("f.txt", "file");
    let s = Server::start(
        d,
        &site,
        &format!(
            "[path_routes.\"h.test\".\"/\"]\ntype = \"Proxy\"\nurl = \"http://{}\"\n\
             security = {{ backend_response_timeout_secs = 3{security} }}\n\n\
             [path_routes.\"h.test\".\"/files/\"]\npath = \"{{site}}\"\n",
            up.addr
        ),
    );
    Front { s, up, _site: site }
}

/// A 103 and the final response in one write: both reach an HTTP/1.1 client at once, the
/// hint first (before the fix, the bytes after the 103 waited unparsed for the timeout).
fn early_hints_and_the_final_response_in_one_write(d: Driver) {
    let f = start(d, "");
    let mut w = Wire::connect(f.s.addr);
    let started = Instant::now();
    w.send(b"GET /interim/1 HTTP/1.1\r\nHost: h.test\r\n\r\n");
    let hint = w.response(false);
    assert_eq!(hint.status, 103);
    assert_eq!(hint.header("link"), Some("</s0.css>; rel=preload"));
    let r = w.response(false);
    assert_eq!((r.status, r.text().as_str()), (200, "final"));
    // (Well before the 3 s response timeout that a missed final response runs into.)
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    // The connection goes on.
    w.send(b"GET /interim/3 HTTP/1.1\r\nHost: h.test\r\n\r\n");
    for i in 0..3 {
        let hint = w.response(false);
        assert_eq!(hint.status, 103);
        assert_eq!(
            hint.header("link"),
            Some(format!("</s{i}.css>; rel=preload").as_str())
        );
    }
    assert_eq!(w.response(false).status, 200);
}

/// A 103, a pause, then the final response.
fn early_hints_then_a_pause(d: Driver) {
    let f = start(d, "");
    let mut w = Wire::connect(f.s.addr);
    w.send(b"GET /interim-split HTTP/1.1\r\nHost: h.test\r\n\r\n");
    assert_eq!(w.response(false).status, 103);
    let r = w.response(false);
    assert_eq!((r.status, r.text().as_str()), (200, "final"));
}

/// An HTTP/1.0 client cannot take a 1xx: it gets the final response only; an upstream's own
/// `100 Continue` never reaches a client (the daemon answers `Expect` itself).
fn interim_responses_an_http10_client_never_sees(d: Driver) {
    let f = start(d, "");
    let mut w = Wire::connect(f.s.addr);
    w.send(b"GET /interim/2 HTTP/1.0\r\nHost: h.test\r\n\r\n");
    let r = w.response(false);
    assert_eq!((r.status, r.text().as_str()), (200, "final"));
    let mut w = Wire::connect(f.s.addr);
    w.send(b"GET /unsolicited-100 HTTP/1.1\r\nHost: h.test\r\n\r\n");
    let r = w.response(false);
    assert_eq!((r.status, r.text().as_str()), (200, "final"));
}

/// More than 16 interim responses for one request: a 502, not an endless relay.
fn an_interim_flood_is_a_bad_gateway(d: Driver) {
    let f = start(d, "");
    let mut w = Wire::connect(f.s.addr);
    w.send(b"GET /interim/100 HTTP/1.1\r\nHost: h.test\r\n\r\n");
    let mut hints = 0;
    let last = loop {
        let r = w.response(false);
        if r.status != 103 {
            break r;
        }
        hints += 1;
    };
    assert_eq!(last.status, 502);
    assert_eq!(hints, 16, "the first 16 were relayed");
}

/// An upstream that refuses a large body by its head (413) while the client is still sending
/// it: the client gets the 413 at once (before the fix: a 502 after about 30 s) with
/// `Connection: close`, the rest of the body is never read, and the close is a lingering one
/// (the response is not lost to a reset).
fn an_early_answer_reaches_a_client_still_sending(d: Driver) {
    let f = start(d, ", max_request_body_size = 1073741824");
    let mut w = Wire::connect(f.s.addr);
    let total: usize = 256 * 1024 * 1024;
    w.send(
        format!("POST /refuse-body HTTP/1.1\r\nHost: h.test\r\nContent-Length: {total}\r\n\r\n")
            .as_bytes(),
    );
    let mut writer = w.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < total {
            if writer.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
        let _ = writer.shutdown(Shutdown::Write);
        sent
    });
    let started = Instant::now();
    let r = w.response(false);
    assert_eq!((r.status, r.text().as_str()), (413, "too big\n"));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let sent = sender.join().unwrap();
    assert!(
        sent < total,
        "the daemon stopped reading the body ({sent} of {total} bytes)"
    );
    assert!(
        w.read_response(false).map_or(true, |r| r.is_none()),
        "then it closed"
    );
}

/// POSTs `body` to `target` from another thread (so that the response can be read meanwhile);
/// the thread says whether all of it went out.
fn upload(w: &mut Wire, target: &str, body: &[u8]) -> std::thread::JoinHandle<bool> {
    let mut all = format!(
        "POST {target} HTTP/1.1\r\nHost: h.test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    all.extend_from_slice(body);
    let mut writer = w.stream.try_clone().unwrap();
    std::thread::spawn(move || writer.write_all(&all).is_ok())
}

/// An early answer that does not refuse the body (a `200` without `Connection: close`) does
/// not stop it (RFC 9112 §9.3): the whole body reaches the upstream, and both connections go
/// on.
fn an_early_success_does_not_stop_the_body(d: Driver) {
    let f = start(d, ", max_request_body_size = 67108864");
    let mut w = Wire::connect(f.s.addr);
    let body = crate::upstream::pattern(8 * 1024 * 1024);
    let sender = upload(&mut w, "/early-ok", &body);
    let r = w.response(false);
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert_eq!(r.header("connection"), None, "the connection goes on");
    assert!(sender.join().unwrap());
    w.send(b"GET /next HTTP/1.1\r\nHost: h.test\r\n\r\n");
    let next = report(&w.response(false).to_response());
    assert_eq!(next["target"], "/next");
    let early =
        f.up.received()
            .into_iter()
            .find(|r| r["target"] == "/early-ok")
            .expect("the upstream reported the upload");
    assert_eq!(early["body_len"], body.len(), "the whole body went");
}

/// An upstream that sends `100 Continue` unasked before it reads a large body has not
/// answered: the body goes on, and its final response arrives.
fn an_unasked_100_continue_is_not_an_early_answer(d: Driver) {
    let f = start(d, ", max_request_body_size = 67108864");
    let mut w = Wire::connect(f.s.addr);
    let body = crate::upstream::pattern(8 * 1024 * 1024);
    let sender = upload(&mut w, "/continue-anyway", &body);
    let r = w.response(false);
    assert_eq!(r.status, 200);
    assert!(
        r.body == body,
        "the whole body went through ({} bytes back)",
        r.body.len()
    );
    assert!(sender.join().unwrap());
}

/// `backend_response_timeout_secs` bounds the time to the response head and then every pause
/// between two reads of the body, as documented (nginx's `proxy_read_timeout`): a pause within
/// it is waited out, a longer one cuts the response off and closes the client connection.
fn the_response_timeout_bounds_pauses_in_the_body(d: Driver) {
    let f = start(d, "");
    let mut w = Wire::connect(f.s.addr);
    w.send(b"GET /pause-body/1500 HTTP/1.1\r\nHost: h.test\r\n\r\n");
    let r = w.response(false);
    assert!(r.complete && r.text() == "0123456789", "{:?}", r.text());
    let mut w = Wire::connect(f.s.addr);
    let started = Instant::now();
    w.send(b"GET /pause-body/6000 HTTP/1.1\r\nHost: h.test\r\n\r\n");
    let r = w.response(false);
    assert_eq!(r.status, 200);
    assert!(!r.complete, "cut off, never complete: {:?}", r.text());
    assert_eq!(r.text(), "01234");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(10),
        "{took:?}"
    );
}

/// `Expect: 100-continue` from an HTTP/1.0 client gets no `100 Continue` (RFC 9110 §15.2) —
/// on a Proxy route and on a File route — and its body is still read.
fn no_100_continue_for_http10(d: Driver) {
    let f = start(d, "");
    for (method, target, body) in [("POST", "/echo", "hello"), ("GET", "/files/f.txt", "file")] {
        let mut w = Wire::connect(f.s.addr);
        w.stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        w.send(
            format!(
                "{method} {target} HTTP/1.0\r\nHost: h.test\r\nExpect: 100-continue\r\n\
                 Content-Length: 5\r\n\r\n"
            )
            .as_bytes(),
        );
        // Nothing may come before the body is sent.
        assert!(
            matches!(w.fill(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut),
            "{target}: something came before the body: {:?}",
            String::from_utf8_lossy(&w.buf)
        );
        w.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        w.send(b"hello");
        let r = w.response(false);
        assert_eq!((r.status, r.text().as_str()), (200, body), "{target}");
    }
    // HTTP/1.1 still gets it.
    let mut w = Wire::connect(f.s.addr);
    w.send(
        b"POST /echo HTTP/1.1\r\nHost: h.test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    assert_eq!(w.response(false).status, 100);
    w.send(b"hello");
    assert_eq!(w.response(false).text(), "hello");
}

/// `TE` never crosses (it is hop-by-hop); the upstream's `Transfer-Encoding` is only ever
/// `chunked`; a request body under another coding (`gzip, chunked`) is refused with 501 —
/// forwarding it as plain `chunked` would hand the upstream bytes it cannot read.
fn transfer_codings_reach_the_upstream_only_as_chunked(d: Driver) {
    let f = start(d, "");
    let mut w = Wire::connect(f.s.addr);
    w.send(
        b"POST /echo-report HTTP/1.1\r\nHost: h.test\r\nTE: gzip, chunked\r\nConnection: TE\r\n\
          Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    let rep = report(&w.response(false).to_response());
    assert!(header_values(&rep, "te").is_empty(), "{rep}");
    assert_eq!(header_values(&rep, "transfer-encoding"), ["chunked"]);
    assert_eq!(rep["body"], "hello");
    let before = f.up.requests.load(std::sync::atomic::Ordering::SeqCst);
    let mut w = Wire::connect(f.s.addr);
    w.send(
        b"POST /echo HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(w.response(false).status, 501);
    assert_eq!(
        f.up.requests.load(std::sync::atomic::Ordering::SeqCst),
        before
    );
}

crate::both_drivers!(
    early_hints_and_the_final_response_in_one_write,
    early_hints_then_a_pause,
    interim_responses_an_http10_client_never_sees,
    an_interim_flood_is_a_bad_gateway,
    an_early_answer_reaches_a_client_still_sending,
    an_unasked_100_continue_is_not_an_early_answer,
    an_early_success_does_not_stop_the_body,
    the_response_timeout_bounds_pauses_in_the_body,
    no_100_continue_for_http10,
    transfer_codings_reach_the_upstream_only_as_chunked,
);

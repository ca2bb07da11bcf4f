//! An HTTP/2 connection's limits and lifecycle: a client's reset cancels the upstream request
//! at once; `max_concurrent_streams`, `max_requests_per_connection` (GOAWAY), the first
//! request's and the idle timeout (GOAWAY), keep-alive PINGs, and a drain's graceful GOAWAY
//! with the streams in flight finished.

use std::io::Read;
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{attack, h2c, PEER};
use crate::both_drivers;
use crate::common::Driver;
use crate::upstream::Upstream;

/// `peer.py MODE` against `s` at `path`, in the background (its JSON on its stdout).
fn background(s: &crate::common::Server, mode: &str, path: &str) -> std::process::Child {
    super::python()
        .args([PEER, mode, &s.addr.ip().to_string()])
        .arg(s.addr.port().to_string())
        .args(["h2.test", path])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn a_client_reset_cancels_the_upstream_request(d: Driver) {
    // An upstream that reads a request, never answers, and reports when the daemon hangs up.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let asked = Instant::now();
        while !matches!(c.read(&mut buf), Ok(0) | Err(_)) {}
        let _ = tx.send(asked.elapsed());
    });
    let (s, _site) = h2c(d, "", Some(addr), "");
    // The client resets its stream half a second after sending it.
    let r = attack(&s, "reset-after", "/app/hang");
    assert_eq!(r["closed"], false, "the connection goes on: {r}");
    let held = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the upstream connection is closed");
    assert!(
        held < Duration::from_millis(1500),
        "the upstream request ended {held:?} after it began (the reset came at 0.5 s)"
    );
}

fn max_concurrent_streams_refuses_the_extra(d: Driver) {
    let up = Upstream::start();
    let (s, _site) = h2c(d, "max_concurrent_streams = 2", Some(up.addr), "");
    let r = attack(&s, "together", "/app/slow/700");
    let statuses = r["statuses"].as_array().unwrap();
    assert_eq!(statuses.len(), 2, "two answered: {r}");
    assert!(r["rst"].as_u64().unwrap() >= 1, "the third refused: {r}");
}

fn max_requests_per_connection_ends_with_goaway(d: Driver) {
    let (s, _site) = h2c(d, "max_requests_per_connection = 3", None, "");
    let r = attack(&s, "sequential", "/");
    assert_eq!(r["statuses"], serde_json::json!([200, 200, 200]), "{r}");
    assert_eq!(r["goaway"], 0, "a graceful GOAWAY (NO_ERROR): {r}");
}

fn the_close_lingers_for_frames_already_sent(d: Driver) {
    let (s, _site) = h2c(d, "max_requests_per_connection = 1", None, "");
    let r = attack(&s, "linger", "/");
    assert_eq!(r["statuses"], serde_json::json!([200]), "{r}");
    assert_eq!(
        (r["goaway"].clone(), r["closed"].clone()),
        (0.into(), true.into()),
        "GOAWAY, then the daemon's FIN: {r}"
    );
    assert_eq!(
        r["reset"], false,
        "frames sent after the daemon's FIN are read, not answered with a reset: {r}"
    );
}

fn idle_and_first_request_timeouts_end_with_goaway(d: Driver) {
    let (s, _site) = h2c(
        d,
        "idle_timeout_secs = 1",
        None,
        "[security]\nclient_header_timeout_secs = 1\n",
    );
    let started = Instant::now();
    let r = attack(&s, "one-then-wait", "/");
    assert_eq!(r["statuses"], serde_json::json!([200]), "{r}");
    assert_eq!(
        (r["goaway"].clone(), r["closed"].clone()),
        (0.into(), true.into()),
        "{r}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // No request at all: closed after the header timeout.
    let started = Instant::now();
    let r = attack(&s, "silent", "/");
    assert_eq!(
        (r["goaway"].clone(), r["closed"].clone()),
        (0.into(), true.into()),
        "{r}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

fn keepalive_pings_an_idle_connection(d: Driver) {
    let (s, _site) = h2c(
        d,
        "keepalive_interval_secs = 1\nidle_timeout_secs = 4",
        None,
        "",
    );
    let r = attack(&s, "one-then-wait", "/");
    assert_eq!(r["statuses"], serde_json::json!([200]), "{r}");
    assert!(r["pings"].as_u64().unwrap() >= 2, "PINGs while idle: {r}");
    assert_eq!(r["goaway"], 0, "then the idle timeout: {r}");
}

fn a_drain_finishes_streams_in_flight_after_goaway(d: Driver) {
    let up = Upstream::start();
    let (s, _site) = h2c(d, "", Some(up.addr), "");
    let client = background(&s, "one-then-wait", "/app/slow/1500");
    std::thread::sleep(Duration::from_millis(500));
    s.signal(libc::SIGTERM);
    let out = client.wait_with_output().unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        r["statuses"],
        serde_json::json!([200]),
        "the stream in flight finished: {r}"
    );
    assert_eq!(r["goaway"], 0, "{r}");
    assert_eq!(r["closed"], true, "{r}");
}

/// A reload applies to the next stream of an open connection: a route added between two
/// requests on one connection serves the second.
fn a_reload_applies_to_the_next_stream(d: Driver) {
    let (s, site) = h2c(d, "", None, "");
    let client = background(&s, "two-apart", "/v/index.html");
    std::thread::sleep(Duration::from_millis(400));
    let text = std::fs::read_to_string(&s.config_path).unwrap().replace(
        "[path_routes.\"h2.test\"]\n",
        &format!(
            "[path_routes.\"h2.test\"]\n\"/v/\" = {{ path = \"{}/www\" }}\n",
            site.path().display()
        ),
    );
    std::fs::write(&s.config_path, text).unwrap();
    assert_eq!(s.wait_generation(2), 2, "{}", s.log());
    let out = client.wait_with_output().unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["statuses"], serde_json::json!([404, 200]), "{r}");
}

/// A fast uploader to an upstream that reads nothing gets only as far as the windows and
/// the sockets' buffers allow: the daemon holds no more of the body than its stream window.
fn a_fast_upload_to_a_stalled_upstream_is_held_back(d: Driver) {
    // An upstream that takes the connection and the head, then reads nothing for a while.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((c, _)) = listener.accept() {
            std::thread::sleep(Duration::from_secs(6));
            drop(c);
        }
    });
    let (s, _site) = h2c(d, "", Some(addr), "");
    let before = super::rss_kib(&s);
    let out = super::python()
        .args([PEER, "upload", &s.addr.ip().to_string()])
        .arg(s.addr.port().to_string())
        .args(["h2.test", "/app/upload", "2"])
        .output()
        .unwrap();
    let r: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let sent = r["sent"].as_u64().unwrap();
    let grown = super::rss_kib(&s).saturating_sub(before);
    // The stream window (256 KiB) and the sockets' buffers on loopback, not the ~GiB two
    // seconds of loopback would carry.
    assert!(sent < 16 << 20, "the client got {sent} bytes out");
    assert!(grown < 16 * 1024, "RSS grew by {grown} KiB");
}

/// `proxyctl status` shows HTTP/2 connections and streams open; `stats` and Prometheus count
/// streams, resets and GOAWAYs.
fn status_stats_and_metrics_count_http2(d: Driver) {
    let up = Upstream::start();
    let metrics = crate::common::free_addr();
    let (s, _site) = super::h2c_admin(
        d,
        "idle_timeout_secs = 1",
        Some(up.addr),
        &format!("metrics_listen = \"{metrics}\""),
        "",
    );
    let client = background(&s, "one-then-wait", "/app/slow/1500");
    std::thread::sleep(Duration::from_millis(700));
    let status = s.proxyctl(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("http/2 "))
        .unwrap_or_default();
    assert!(line.ends_with(" 1 connections, 1 streams open"), "{text}");
    let out = client.wait_with_output().unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["statuses"], serde_json::json!([200]), "{r}");
    attack(&s, "reset-after", "/app/slow/3000");
    let stats = s.proxyctl_json(&["stats"]);
    let h2 = &stats["http2"];
    assert_eq!(h2["connections_total"], 2, "{h2}");
    assert_eq!(h2["streams_total"], 2, "{h2}");
    assert_eq!(h2["resets_received"], 1, "{h2}");
    assert!(
        h2["goaway_graceful"].as_u64().unwrap() >= 1,
        "the idle timeout's: {h2}"
    );
    let mut c = std::net::TcpStream::connect(metrics).unwrap();
    std::io::Write::write_all(
        &mut c,
        b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut body = String::new();
    c.read_to_string(&mut body).unwrap();
    assert!(body.contains("zerocopy_http2_streams_total 2"), "{body}");
    assert!(
        body.contains("zerocopy_http2_resets_total{by=\"client\"} 1"),
        "{body}"
    );
}

both_drivers!(
    a_reload_applies_to_the_next_stream,
    a_fast_upload_to_a_stalled_upstream_is_held_back,
    status_stats_and_metrics_count_http2,
    a_client_reset_cancels_the_upstream_request,
    max_concurrent_streams_refuses_the_extra,
    max_requests_per_connection_ends_with_goaway,
    the_close_lingers_for_frames_already_sent,
    idle_and_first_request_timeouts_end_with_goaway,
    keepalive_pings_an_idle_connection,
    a_drain_finishes_streams_in_flight_after_goaway,
);

//! The Prometheus scrape listener (`[admin] metrics_listen`): a thread of its own that answers
//! `GET /metrics` with text the control loop renders ([`crate::metrics::prometheus::render`]),
//! never a worker — and the probes, from shared atomics alone (never the control loop, which
//! may be busy with a reload):
//!
//! - `GET /healthz` (liveness): 200 while every worker's loop runs (draining included); 503
//!   when one has not run for [`STUCK_AFTER`] (it is blocked), or before the workers serve.
//! - `GET /readyz` (readiness): 200 while the daemon takes new work; 503 from the first moment
//!   of a drain (a stop, or a binary upgrade's hand-over), so that a load balancer stops
//!   sending before connections are refused.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use super::admin::Served;
use super::Event;
use crate::metrics::prometheus;
use crate::shared::{Health, Shared};
use std::os::fd::AsRawFd;
use std::sync::Arc;

/// Most scrapes served at once; past it a scraper is answered 503 at once.
const MAX_SCRAPERS: usize = 64;
/// How long a scraper may take to send its request or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A worker whose loop has not run this long is reported stuck by `/healthz`.
pub const STUCK_AFTER: Duration = Duration::from_secs(10);

/// Binds `addr` for scrapes (an error names the address).
pub fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).map_err(|e| {
        format!("cannot listen for Prometheus scrapes on [admin] metrics_listen = \"{addr}\": {e}")
    })
}

/// Serves `GET /metrics` on a thread of its own: the text is rendered by the control loop
/// (an [`Event::Metrics`]), never on a worker. Anything else gets a 404 (or 405).
pub fn serve(
    listener: TcpListener,
    events: Sender<Event>,
    shared: Arc<Shared>,
) -> std::io::Result<Served> {
    listener.set_nonblocking(true)?;
    let fd = listener.as_raw_fd();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let open = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let thread = std::thread::Builder::new()
        .name("zcs-metrics".into())
        .spawn(move || {
            while super::admin::wait_acceptable(fd, &stopped) {
                let Ok((mut stream, _)) = listener.accept() else {
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                if open.load(std::sync::atomic::Ordering::Relaxed) >= MAX_SCRAPERS {
                    // Answered without waiting: a client that does not read cannot stall the
                    // accept loop.
                    let _ = stream.set_nonblocking(true);
                    let _ = stream.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\
                          Retry-After: 1\r\nConnection: close\r\n\r\nbusy\n",
                    );
                    continue;
                }
                open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (events, open, shared) = (events.clone(), open.clone(), shared.clone());
                let _ = std::thread::Builder::new()
                    .name("zcs-metrics-conn".into())
                    .spawn(move || {
                        scrape(stream, &events, &shared);
                        open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    });
            }
        })?;
    Ok(Served::new(fd, stop, thread))
}

/// A probe's answer: whether it passes, and its text.
fn probe_answer(health: Health, readiness: bool) -> (bool, String) {
    match health {
        Health::Ready => (true, if readiness { "ready\n" } else { "ok\n" }.into()),
        Health::Draining if readiness => (false, "draining\n".into()),
        Health::Draining => (true, "ok (draining)\n".into()),
        Health::Starting => (false, "starting\n".into()),
        Health::Stuck { worker, late_ms } => (
            false,
            format!("worker {worker} has not run for {} ms\n", late_ms),
        ),
    }
}

/// Answers one HTTP/1.x request and closes.
fn scrape(mut stream: TcpStream, events: &Sender<Event>, shared: &Shared) {
    // One deadline for the whole request, however it trickles in.
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 16 * 1024 {
            return;
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next());
    let path = target.map(|t| t.split(|&b| b == b'?').next().unwrap_or_default());
    let (status, content_type, body) = match (method, path) {
        (b"GET" | b"HEAD", Some(b"/metrics")) => {
            let (tx, rx) = mpsc::channel();
            if events.send(Event::Metrics { reply: tx }).is_err() {
                return;
            }
            match rx.recv_timeout(IO_TIMEOUT) {
                Ok(text) => ("200 OK", prometheus::CONTENT_TYPE, text),
                Err(_) => return,
            }
        }
        (b"GET" | b"HEAD", Some(probe @ (b"/healthz" | b"/readyz"))) => {
            let (ok, text) = probe_answer(shared.health(STUCK_AFTER), probe == b"/readyz");
            let status = if ok {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            (status, "text/plain; charset=utf-8", text)
        }
        (b"GET" | b"HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "metrics are at /metrics; probes at /healthz and /readyz\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "GET /metrics, /healthz or /readyz\n".to_string(),
        ),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != b"HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    super::admin::write_by(&mut stream, &out, std::time::Instant::now() + IO_TIMEOUT);
}

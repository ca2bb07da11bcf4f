//! Real upstream servers for the proxy tests: plain HTTP/1.1 on 127.0.0.1 with keep-alive,
//! started by each test and stopped when dropped; and [`Wire`], a raw HTTP/1.1 reader (heads,
//! Content-Length, chunked and close-delimited bodies) shared by the upstream and the tests.
//!
//! What an [`Upstream`] answers depends on the path it receives (the query is ignored; a leading
//! `/app` segment is stripped first, so `/app/bytes/5` behaves like `/bytes/5`):
//!
//! | path | answer |
//! |---|---|
//! | `/bytes/N` | 200, `Content-Length: N`, N [`pattern`] bytes |
//! | `/status/N` | status N, `text/plain` body `upstream N`, `Retry-After: 7`, `X-Up: 1` |
//! | `/text/N` | 200, `text/plain`, N bytes of [`text`] |
//! | `/status-long/N` | status N, `text/plain`, 100,000 bytes of [`text`] |
//! | `/text-no-transform/N` | like `/text/N`, with `Cache-Control: public, no-transform` |
//! | `/text-encoded/N` | 200, `text/plain`, `Content-Encoding: gzip` (not really), N pattern bytes |
//! | `/chunked-text/N` | 200, `application/json`, chunked: N bytes of [`text`] |
//! | `/chunked/N` | 200, chunked: N pattern bytes in 4096-byte chunks, trailer `X-Trailer: yes` |
//! | `/close/N` | 200, no length, `Connection: close`, N pattern bytes, then close |
//! | `/echo` | 200, the request body |
//! | `/slow/MS` | sleeps MS ms, then 200 `slow` |
//! | `/reset` | no response: the connection is reset (SO_LINGER 0) |
//! | `/garbage` | `NOT HTTP AT ALL\r\n\r\n`, then close |
//! | `/truncate/N` | `Content-Length: N`, N/2 pattern bytes, then close |
//! | `/ws` | with `Upgrade: websocket`: 101, then echoes raw bytes until EOF; else 400 |
//! | `/hop` | 200 `hop` with hop-by-hop response headers (`Connection: keep-alive, X-Hop-Resp`, `X-Hop-Resp`, `Keep-Alive`, `Proxy-Connection`) and an end-to-end `X-End: 1` |
//! | `/interim/N` | N `103 Early Hints` heads (each with a `Link`) and then `200 final`, all in one write |
//! | `/interim-split` | a `103 Early Hints`, a pause of 200 ms, then `200 final` |
//! | `/unsolicited-100` | `100 Continue` and `200 final` in one write, whatever the request asked |
//! | `/force101` | `101 Switching Protocols` whatever the request asked, then echoes bytes |
//! | `/h2c` | with `Upgrade: h2c`: 101 to h2c, then echoes raw bytes; else the report |
//! | `/pause-body/MS` | `Content-Length: 10`, 5 bytes, a pause of MS ms, the other 5 |
//! | `/early-ok` | `200 ok` as soon as the head arrives, then reads the whole body (reported) and keeps the connection |
//! | `/continue-anyway` | like `/echo`, with a `100 Continue` before reading the body, asked for or not |
//! | `/refuse-body` | answers `413` with `Connection: close` as soon as the head arrives, reads none of the body, and holds the connection for 5 s |
//! | anything else | 200 JSON: what was received (see [`report`]) |
//!
//! Every request body is read first (Content-Length or chunked; `Expect: 100-continue` gets a
//! `100 Continue`). HEAD gets the head only.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::Response;

/// The body bytes every upstream path sends: byte `i` is `i * 31 % 251`.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

/// Compressible text: N bytes of numbered lines.
pub fn text(n: usize) -> Vec<u8> {
    let mut out: Vec<u8> = (0..)
        .flat_map(|i| {
            format!("line {i}: the quick brown fox jumps over the lazy dog\n").into_bytes()
        })
        .take(n)
        .collect();
    out.truncate(n);
    out
}

/// Parses the JSON report an upstream answers on its default paths.
pub fn report(r: &Response) -> Value {
    assert_eq!(
        r.status,
        200,
        "expected an upstream report, got {} {:?}",
        r.status,
        r.text()
    );
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("not a JSON report ({e}): {:?}", r.text()))
}

/// The values of header `name` (any case) in a report, in the order received.
pub fn header_values(report: &Value, name: &str) -> Vec<String> {
    report["headers"]
        .as_array()
        .expect("a report with headers")
        .iter()
        .filter(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|h| h[1].as_str().unwrap().to_string())
        .collect()
}

/// How long an upstream connection waits for bytes (between requests too) unless told
/// otherwise; a leftover connection thread ends after this.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

struct Shared {
    stop: AtomicBool,
    /// Clones of the open connections, so that drop can shut them down. A connection removes
    /// its own entry before it closes (a dup'ed fd would keep the socket open).
    open: Mutex<HashMap<u64, TcpStream>>,
    next_id: AtomicU64,
    /// The report of every request received, in order of arrival.
    received: Mutex<Vec<Value>>,
    /// Close a connection that stays idle this long between requests.
    idle_close: Option<Duration>,
}

/// A running upstream server. Stops when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    /// Accepted TCP connections.
    pub connections: Arc<AtomicUsize>,
    /// Request heads received (on every path).
    pub requests: Arc<AtomicUsize>,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Upstream {
    pub fn start() -> Self {
        Self::start_opts(None)
    }

    /// An upstream that closes a keep-alive connection after `idle` without a request (as real
    /// servers do), without telling the client.
    pub fn with_idle_close(idle: Duration) -> Self {
        Self::start_opts(Some(idle))
    }

    fn start_opts(idle_close: Option<Duration>) -> Self {
        // An address of its own (a fresh 127.x.y.z), so that no other test's listener can take
        // its port once it is dropped.
        let ip = crate::common::free_addr().ip();
        let listener = TcpListener::bind((ip, 0)).expect("bind an upstream");
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            received: Mutex::new(Vec::new()),
            idle_close,
        });
        let accept = {
            let (connections, requests, shared) =
                (connections.clone(), requests.clone(), shared.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
                    if let Ok(clone) = stream.try_clone() {
                        shared.open.lock().unwrap().insert(id, clone);
                    }
                    let (requests, shared) = (requests.clone(), shared.clone());
                    std::thread::spawn(move || {
                        let guard = OpenGuard {
                            shared: shared.clone(),
                            id,
                        };
                        serve(stream, &shared, &requests, &guard);
                    });
                }
            })
        };
        Upstream {
            addr,
            connections,
            requests,
            shared,
            accept: Some(accept),
        }
    }

    /// A loopback address where nothing listens.
    pub fn closed_port() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }

    /// Connections open now (accepted and not yet closed by either side as far as the upstream
    /// has noticed).
    pub fn open_connections(&self) -> usize {
        self.shared.open.lock().unwrap().len()
    }

    /// The reports of every request received so far (also for paths that answer otherwise).
    pub fn received(&self) -> Vec<Value> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits up to `within` for `cond`; whether it held.
    pub fn wait_until(&self, within: Duration, cond: impl Fn(&Self) -> bool) -> bool {
        let start = Instant::now();
        loop {
            if cond(self) {
                return true;
            }
            if start.elapsed() > within {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        for s in self.shared.open.lock().unwrap().values() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Forgets a connection when its thread ends.
struct OpenGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl OpenGuard {
    fn forget(&self) {
        self.shared.open.lock().unwrap().remove(&self.id);
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.forget();
    }
}

/// Header lines, names lowercased.
pub type Headers = Vec<(String, String)>;

/// A request head as received.
struct Request {
    method: String,
    target: String,
    /// The minor version: 1 for HTTP/1.1.
    minor: u8,
    /// Names as received.
    headers: Vec<(String, Vec<u8>)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// Whether a comma-separated header (all of its lines) holds `token`.
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| {
                String::from_utf8_lossy(v)
                    .split(',')
                    .map(|t| t.trim().to_ascii_lowercase())
                    .collect::<Vec<_>>()
            })
            .any(|t| t == token)
    }
}

/// One upstream connection: requests until EOF, an error or a close.
fn serve(stream: TcpStream, shared: &Shared, requests: &AtomicUsize, guard: &OpenGuard) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
    let mut w = Wire::new(stream);
    let mut index = 0u64;
    loop {
        let idle = shared.idle_close.unwrap_or(READ_TIMEOUT);
        let _ = w.stream.set_read_timeout(Some(idle));
        let req = match w.read_request_head() {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) if e.kind() == ErrorKind::InvalidData => {
                let _ = w.stream.write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                return;
            }
            Err(_) => return,
        };
        let _ = w.stream.set_read_timeout(Some(READ_TIMEOUT));
        index += 1;
        requests.fetch_add(1, Ordering::SeqCst);
        let chunked = req
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().trim_end().ends_with("chunked"));
        let length = req
            .header("content-length")
            .and_then(|l| l.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let has_body = chunked || length > 0;
        if req.target.ends_with("/refuse-body") {
            // As a server that refuses a body by its head does: the answer at once, none of
            // the body read, the connection held (a slow close).
            let _ = w.stream.write_all(
                b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big\n",
            );
            std::thread::sleep(Duration::from_secs(5));
            return;
        }
        // Answered before the body is read, then the body read (and dropped) as a server that
        // keeps the connection does.
        let early_ok = req.target.ends_with("/early-ok");
        if early_ok {
            let _ = w
                .stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
        if has_body
            && (req.has_token("expect", "100-continue") || req.target.ends_with("/continue-anyway"))
        {
            let _ = w.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let body = if chunked {
            match w.read_chunked() {
                Ok((body, _trailers)) => body,
                Err(_) => return,
            }
        } else {
            match w.take(length) {
                Ok(body) => body,
                Err(_) => return,
            }
        };
        let report = json!({
            "method": req.method,
            "target": req.target,
            "version": format!("HTTP/1.{}", req.minor),
            "headers": req.headers.iter()
                .map(|(n, v)| json!([n, String::from_utf8_lossy(v)]))
                .collect::<Vec<_>>(),
            "body_len": body.len(),
            "body": if body.len() <= 65536 {
                Value::String(String::from_utf8_lossy(&body).into_owned())
            } else {
                Value::Null
            },
            "chunked": chunked,
            "connection_requests": index,
        });
        shared.received.lock().unwrap().push(report.clone());
        if early_ok {
            continue;
        }
        let close = req.has_token("connection", "close")
            || (req.minor == 0 && !req.has_token("connection", "keep-alive"));
        match answer(&mut w, &req, &body, report, close, guard) {
            Ok(Next::KeepAlive) if !close => {}
            Ok(Next::Reset) => return,
            _ => {
                let _ = w.stream.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

/// What becomes of a connection after an answer.
enum Next {
    /// Another request may follow (unless the request asked to close).
    KeepAlive,
    /// Shut down and close.
    Close,
    /// Close with a RST.
    Reset,
}

/// Writes the answer to one request.
fn answer(
    w: &mut Wire,
    req: &Request,
    body: &[u8],
    report: Value,
    close: bool,
    guard: &OpenGuard,
) -> io::Result<Next> {
    let head_only = req.method == "HEAD";
    let path = req.target.split('?').next().unwrap_or("");
    let path = match path.strip_prefix("/app") {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ => path,
    };
    let num = |prefix: &str| -> Option<usize> { path.strip_prefix(prefix)?.parse().ok() };
    let conn = if close { "Connection: close\r\n" } else { "" };
    let s = &mut w.stream;
    if let Some(n) = num("/bytes/") {
        simple(s, "200 OK", "", &pattern(n), head_only, close)?;
    } else if let Some(n) = num("/status/") {
        let status = format!("{n} Upstream");
        let extra = "Content-Type: text/plain\r\nRetry-After: 7\r\nX-Up: 1\r\n";
        simple(
            s,
            &status,
            extra,
            format!("upstream {n}\n").as_bytes(),
            head_only,
            close,
        )?;
    } else if let Some(n) = num("/status-long/") {
        let status = format!("{n} Upstream");
        simple(
            s,
            &status,
            "Content-Type: text/plain\r\n",
            &text(100_000),
            head_only,
            close,
        )?;
    } else if let Some(n) = num("/text-no-transform/") {
        let extra = "Content-Type: text/plain\r\nCache-Control: public, no-transform\r\n";
        simple(s, "200 OK", extra, &text(n), head_only, close)?;
    } else if let Some(n) = num("/text-encoded/") {
        let extra = "Content-Type: text/plain\r\nContent-Encoding: gzip\r\n";
        simple(s, "200 OK", extra, &pattern(n), head_only, close)?;
    } else if let Some(n) = num("/text/") {
        let extra = "Content-Type: text/plain; charset=utf-8\r\n";
        simple(s, "200 OK", extra, &text(n), head_only, close)?;
    } else if let Some(n) = num("/chunked-text/") {
        s.write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n{conn}\r\n"
            )
            .as_bytes(),
        )?;
        if !head_only {
            let mut out = Vec::new();
            for c in text(n).chunks(4096) {
                out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                out.extend_from_slice(c);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
            s.write_all(&out)?;
        }
    } else if let Some(n) = num("/chunked/") {
        s.write_all(
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Trailer\r\n{conn}\r\n"
            )
            .as_bytes(),
        )?;
        if !head_only {
            let data = pattern(n);
            let mut out = Vec::with_capacity(n + n / 512 + 64);
            for c in data.chunks(4096) {
                out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                out.extend_from_slice(c);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\nX-Trailer: yes\r\n\r\n");
            s.write_all(&out)?;
        }
    } else if let Some(n) = num("/close/") {
        s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
        if !head_only {
            s.write_all(&pattern(n))?;
        }
        return Ok(Next::Close);
    } else if path == "/echo" || path == "/continue-anyway" {
        simple(s, "200 OK", "", body, head_only, close)?;
    } else if let Some(ms) = num("/slow/") {
        std::thread::sleep(Duration::from_millis(ms as u64));
        simple(s, "200 OK", "", b"slow", head_only, close)?;
    } else if path == "/reset" {
        // Closing the only descriptor with SO_LINGER 0 sends a RST (a shutdown would send a
        // FIN): drop the registry's clone now, the connection's own when `serve` returns.
        guard.forget();
        set_linger_zero(s);
        return Ok(Next::Reset);
    } else if path == "/garbage" {
        s.write_all(b"NOT HTTP AT ALL\r\n\r\n")?;
        return Ok(Next::Close);
    } else if let Some(n) = num("/truncate/") {
        s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n").as_bytes())?;
        s.write_all(&pattern(n / 2))?;
        return Ok(Next::Close);
    } else if path == "/ws" {
        if !req.has_token("upgrade", "websocket") {
            simple(
                s,
                "400 Bad Request",
                "",
                b"not an upgrade",
                head_only,
                close,
            )?;
            return Ok(Next::KeepAlive);
        }
        s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        )?;
        // The tunnel: raw bytes back until EOF.
        if !w.buf.is_empty() {
            let early = std::mem::take(&mut w.buf);
            w.stream.write_all(&early)?;
        }
        let mut tmp = vec![0u8; 65536];
        loop {
            match w.stream.read(&mut tmp) {
                Ok(0) | Err(_) => return Ok(Next::Close),
                Ok(n) => w.stream.write_all(&tmp[..n])?,
            }
        }
    } else if let Some(ms) = num("/pause-body/") {
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")?;
        std::thread::sleep(Duration::from_millis(ms as u64));
        s.write_all(b"56789")?;
    } else if let Some(n) = num("/interim/") {
        let mut out = Vec::new();
        for i in 0..n {
            out.extend_from_slice(
                format!("HTTP/1.1 103 Early Hints\r\nLink: </s{i}.css>; rel=preload\r\n\r\n")
                    .as_bytes(),
            );
        }
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal");
        s.write_all(&out)?;
    } else if path == "/interim-split" {
        s.write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")?;
        std::thread::sleep(Duration::from_millis(200));
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")?;
    } else if path == "/unsolicited-100" {
        s.write_all(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
        )?;
    } else if path == "/force101" || (path == "/h2c" && req.has_token("upgrade", "h2c")) {
        let proto = if path == "/h2c" { "h2c" } else { "x-anything" };
        s.write_all(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: {proto}\r\nConnection: Upgrade\r\n\r\n"
            )
            .as_bytes(),
        )?;
        let mut tmp = vec![0u8; 65536];
        loop {
            match w.stream.read(&mut tmp) {
                Ok(0) | Err(_) => return Ok(Next::Close),
                Ok(n) => w.stream.write_all(&tmp[..n])?,
            }
        }
    } else if path == "/hop" {
        let hop = format!(
            "Connection: {}, X-Hop-Resp\r\nX-Hop-Resp: 1\r\nKeep-Alive: timeout=30\r\n\
             Proxy-Connection: keep-alive\r\nX-End: 1\r\n",
            if close { "close" } else { "keep-alive" }
        );
        let head = format!("HTTP/1.1 200 OK\r\n{hop}Content-Length: 3\r\n\r\n");
        s.write_all(head.as_bytes())?;
        if !head_only {
            s.write_all(b"hop")?;
        }
    } else {
        let json = serde_json::to_vec(&report).unwrap();
        simple(
            s,
            "200 OK",
            "Content-Type: application/json\r\n",
            &json,
            head_only,
            close,
        )?;
    }
    Ok(Next::KeepAlive)
}

/// A response with a Content-Length (and `Connection: close` when closing).
fn simple(
    s: &mut TcpStream,
    status: &str,
    extra: &str,
    body: &[u8],
    head_only: bool,
    close: bool,
) -> io::Result<()> {
    let conn = if close { "Connection: close\r\n" } else { "" };
    let mut out = format!(
        "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\n{conn}\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    s.write_all(&out)
}

fn set_linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own with a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// How a response body was delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body by definition (HEAD, 1xx, 204, 304).
    None,
    Length(usize),
    Chunked,
    /// Delimited by the connection's close.
    Close,
}

/// A response read by [`Wire::read_response`].
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body as far as it arrived.
    pub body: Vec<u8>,
    pub framing: Framing,
    /// Whether the body arrived whole by its framing (a close-delimited body is always whole).
    pub complete: bool,
    /// Chunked trailers, names lowercased.
    pub trailers: Vec<(String, String)>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, one per header line.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The harness's [`Response`], for [`report`].
    pub fn to_response(&self) -> Response {
        Response {
            status: self.status,
            headers: self.headers.clone(),
            body: self.body.clone(),
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A buffered raw HTTP/1.1 connection, over TCP or anything else that reads and writes (a TLS
/// client stream).
pub struct Wire<S = TcpStream> {
    pub stream: S,
    /// Bytes read and not yet consumed.
    pub buf: Vec<u8>,
    /// Whether the peer reset the connection.
    pub reset: bool,
}

impl Wire {
    /// Connects with a 10 s read timeout and no Nagle delay.
    pub fn connect(addr: SocketAddr) -> Self {
        Self::new(connect_tcp(addr))
    }
}

/// A TCP connection with a 10 s read timeout and no Nagle delay.
pub fn connect_tcp(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

impl<S: Read + Write> Wire<S> {
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buf: Vec::new(),
            reset: false,
        }
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).expect("send");
    }

    /// Reads more: `Ok(false)` at EOF or on a reset; timeouts are errors.
    pub fn fill(&mut self) -> io::Result<bool> {
        let mut tmp = [0u8; 65536];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ) =>
                {
                    self.reset = true;
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Exactly `n` bytes; `Err` with what arrived when the connection ended first.
    pub fn take(&mut self, n: usize) -> Result<Vec<u8>, Vec<u8>> {
        let mut out = Vec::with_capacity(n.min(64 << 20));
        while out.len() < n {
            if self.buf.is_empty() {
                match self.fill() {
                    Ok(true) => {}
                    _ => return Err(out),
                }
            }
            let k = (n - out.len()).min(self.buf.len());
            out.extend_from_slice(&self.buf[..k]);
            self.buf.drain(..k);
        }
        Ok(out)
    }

    /// Everything until EOF (or a reset or timeout).
    pub fn read_to_end(&mut self) -> Vec<u8> {
        while let Ok(true) = self.fill() {}
        std::mem::take(&mut self.buf)
    }

    /// Whether the peer has closed (EOF or reset within the read timeout, nothing unread).
    pub fn is_closed(&mut self) -> bool {
        self.buf.is_empty() && matches!(self.fill(), Ok(false))
    }

    /// A line without its CRLF; `None` when the connection ends first.
    fn line(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut from = 0;
        loop {
            if let Some(i) = self.buf[from..].windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..from + i].to_vec();
                self.buf.drain(..from + i + 2);
                return Ok(Some(line));
            }
            from = self.buf.len().saturating_sub(1);
            if self.buf.len() > 64 << 10 {
                return Err(io::Error::new(ErrorKind::InvalidData, "line too long"));
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// A chunked body and its trailers (names lowercased). `Err(InvalidData)` on bad framing,
    /// `Err(UnexpectedEof)` when the connection ends first.
    pub fn read_chunked(&mut self) -> io::Result<(Vec<u8>, Headers)> {
        let mut body = Vec::new();
        self.read_chunked_into(&mut body).map(|t| (body, t))
    }

    fn read_chunked_into(&mut self, body: &mut Vec<u8>) -> io::Result<Headers> {
        let eof = || io::Error::new(ErrorKind::UnexpectedEof, "closed mid chunked body");
        let bad = |m: &str| io::Error::new(ErrorKind::InvalidData, m.to_string());
        loop {
            let line = self.line()?.ok_or_else(eof)?;
            let line = String::from_utf8_lossy(&line).into_owned();
            let size = line.split(';').next().unwrap().trim_matches([' ', '\t']);
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| bad(&format!("bad chunk size line {line:?}")))?;
            if size == 0 {
                let mut trailers = Vec::new();
                loop {
                    let t = self.line()?.ok_or_else(eof)?;
                    if t.is_empty() {
                        return Ok(trailers);
                    }
                    let t = String::from_utf8_lossy(&t).into_owned();
                    let (n, v) = t.split_once(':').ok_or_else(|| bad("bad trailer"))?;
                    trailers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
            }
            match self.take(size) {
                Ok(data) => body.extend_from_slice(&data),
                Err(part) => {
                    body.extend_from_slice(&part);
                    return Err(eof());
                }
            }
            let crlf = self.take(2).map_err(|_| eof())?;
            if crlf != b"\r\n" {
                return Err(bad("chunk data not followed by CRLF"));
            }
        }
    }

    /// A request head; `None` at EOF before any byte.
    fn read_request_head(&mut self) -> io::Result<Option<Request>> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 128];
            let mut r = httparse::Request::new(&mut headers);
            match r.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let req = Request {
                        method: r.method.unwrap().to_string(),
                        target: r.path.unwrap().to_string(),
                        minor: r.version.unwrap(),
                        headers: r
                            .headers
                            .iter()
                            .map(|h| (h.name.to_string(), h.value.to_vec()))
                            .collect(),
                    };
                    self.buf.drain(..n);
                    return Ok(Some(req));
                }
                Ok(httparse::Status::Partial) => {
                    if self.buf.len() > 1 << 20 {
                        return Err(io::Error::new(ErrorKind::InvalidData, "head too large"));
                    }
                    if !self.fill()? {
                        return if self.buf.is_empty() {
                            Ok(None)
                        } else {
                            Err(io::Error::new(ErrorKind::UnexpectedEof, "closed mid-head"))
                        };
                    }
                }
                Err(e) => return Err(io::Error::new(ErrorKind::InvalidData, e.to_string())),
            }
        }
    }

    /// One response (`head_request`: it answers a HEAD). `Ok(None)` when the connection ended
    /// before any byte of it; `Err(UnexpectedEof)` when it ended mid-head; `Err(InvalidData)`
    /// for a head that does not parse. A body cut short comes back with `complete == false`.
    pub fn read_response(&mut self, head_request: bool) -> io::Result<Option<RawResponse>> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 128];
            let mut r = httparse::Response::new(&mut headers);
            let n = match r.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => {
                    if !self.fill()? {
                        return if self.buf.is_empty() {
                            Ok(None)
                        } else {
                            Err(io::Error::new(
                                ErrorKind::UnexpectedEof,
                                format!(
                                    "closed mid-head: {:?}",
                                    String::from_utf8_lossy(&self.buf)
                                ),
                            ))
                        };
                    }
                    continue;
                }
                Err(e) => {
                    return Err(io::Error::new(
                        ErrorKind::InvalidData,
                        format!("{e}: {:?}", String::from_utf8_lossy(&self.buf)),
                    ))
                }
            };
            let status = r.code.unwrap();
            let headers: Vec<(String, String)> = r
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            self.buf.drain(..n);
            let mut resp = RawResponse {
                status,
                headers,
                body: Vec::new(),
                framing: Framing::None,
                complete: true,
                trailers: Vec::new(),
            };
            if head_request || status / 100 == 1 || status == 204 || status == 304 {
                return Ok(Some(resp));
            }
            let chunked = resp
                .header_all("transfer-encoding")
                .iter()
                .any(|v| v.to_ascii_lowercase().contains("chunked"));
            if chunked {
                resp.framing = Framing::Chunked;
                let mut body = Vec::new();
                match self.read_chunked_into(&mut body) {
                    Ok(t) => resp.trailers = t,
                    Err(e) if e.kind() == ErrorKind::UnexpectedEof => resp.complete = false,
                    Err(e) => return Err(e),
                }
                resp.body = body;
            } else if let Some(len) = resp.header("content-length") {
                let len: usize = len
                    .trim()
                    .parse()
                    .map_err(|_| io::Error::new(ErrorKind::InvalidData, "bad Content-Length"))?;
                resp.framing = Framing::Length(len);
                match self.take(len) {
                    Ok(b) => resp.body = b,
                    Err(part) => {
                        resp.body = part;
                        resp.complete = false;
                    }
                }
            } else {
                resp.framing = Framing::Close;
                resp.body = self.read_to_end();
            }
            return Ok(Some(resp));
        }
    }

    /// [`Wire::read_response`] that panics unless a response head arrived.
    pub fn response(&mut self, head_request: bool) -> RawResponse {
        match self.read_response(head_request) {
            Ok(Some(r)) => r,
            Ok(None) => panic!("connection closed before a response"),
            Err(e) => panic!("no response: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(w: &mut Wire, target: &str, extra: &str) -> RawResponse {
        w.send(format!("GET {target} HTTP/1.1\r\nHost: up.test\r\n{extra}\r\n").as_bytes());
        w.response(false)
    }

    fn json(r: &RawResponse) -> Value {
        report(&r.to_response())
    }

    #[test]
    fn pattern_is_the_documented_sequence() {
        let p = pattern(300);
        assert_eq!(&p[..4], &[0, 31, 62, 93]);
        assert_eq!(p[9], (9 * 31 % 251) as u8);
        assert_eq!(p[251], 0);
    }

    #[test]
    fn keep_alive_reports_requests_in_order() {
        let up = Upstream::start();
        let mut w = Wire::connect(up.addr);
        for i in 1..=3u64 {
            w.send(
                b"POST /app/a%20b?x=1&&y HTTP/1.1\r\nHost: up.test\r\nX-A: one\r\n\
                  x-a: two\r\nContent-Length: 5\r\n\r\nhello",
            );
            let r = w.response(false);
            assert_eq!(r.header("content-type"), Some("application/json"));
            let j = json(&r);
            assert_eq!(j["method"], "POST");
            assert_eq!(j["target"], "/app/a%20b?x=1&&y");
            assert_eq!(j["version"], "HTTP/1.1");
            assert_eq!(j["body"], "hello");
            assert_eq!(j["body_len"], 5);
            assert_eq!(j["chunked"], false);
            assert_eq!(j["connection_requests"], i);
            assert_eq!(header_values(&j, "X-A"), ["one", "two"]);
            assert_eq!(j["headers"][1][0], "X-A", "names as received");
            assert_eq!(j["headers"][2][0], "x-a");
        }
        assert_eq!(up.connections.load(Ordering::SeqCst), 1);
        assert_eq!(up.requests.load(Ordering::SeqCst), 3);
        assert_eq!(up.received().len(), 3);
        // Connection: close is honoured.
        let r = get(&mut w, "/x", "Connection: close\r\n");
        assert_eq!(r.header("connection"), Some("close"));
        assert!(w.is_closed());
    }

    #[test]
    fn chunked_request_bodies_are_decoded() {
        let up = Upstream::start();
        let mut w = Wire::connect(up.addr);
        w.send(b"POST /report HTTP/1.1\r\nHost: up.test\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-T: 1\r\n\r\n");
        let j = json(&w.response(false));
        assert_eq!(j["chunked"], true);
        assert_eq!(j["body"], "hello world");
        assert_eq!(j["body_len"], 11);
        // A big chunked echo, then the connection is still in step.
        let data = pattern(300_000);
        let mut req =
            b"POST /echo HTTP/1.1\r\nHost: up.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for c in data.chunks(65536) {
            req.extend_from_slice(format!("{:X}\r\n", c.len()).as_bytes());
            req.extend_from_slice(c);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
        w.send(&req);
        let r = w.response(false);
        assert_eq!(r.framing, Framing::Length(300_000));
        assert!(r.body == data);
        assert_eq!(json(&get(&mut w, "/after", ""))["connection_requests"], 3);
    }

    #[test]
    fn expect_continue_gets_100_first() {
        let up = Upstream::start();
        let mut w = Wire::connect(up.addr);
        w.send(b"POST /echo HTTP/1.1\r\nHost: up.test\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
        assert_eq!(w.response(false).status, 100);
        w.send(b"abc");
        assert_eq!(w.response(false).body, b"abc");
    }

    #[test]
    fn bytes_chunked_and_close_bodies() {
        let up = Upstream::start();
        let mut w = Wire::connect(up.addr);
        let r = get(&mut w, "/bytes/100000", "");
        assert_eq!(r.framing, Framing::Length(100_000));
        assert!(r.body == pattern(100_000));
        let r = get(&mut w, "/app/chunked/10000", "");
        assert_eq!(r.framing, Framing::Chunked);
        assert!(r.complete);
        assert!(r.body == pattern(10_000));
        assert_eq!(r.trailers, [("x-trailer".to_string(), "yes".to_string())]);
        w.send(b"HEAD /bytes/7 HTTP/1.1\r\nHost: up.test\r\n\r\n");
        let r = w.response(true);
        assert_eq!(r.header("content-length"), Some("7"));
        let r = get(&mut w, "/hop", "");
        assert_eq!(r.header("x-hop-resp"), Some("1"));
        assert_eq!(r.header("x-end"), Some("1"));
        assert_eq!(r.body, b"hop");
        let r = get(&mut w, "/close/5000", "");
        assert_eq!(r.framing, Framing::Close);
        assert_eq!(r.header("connection"), Some("close"));
        assert!(r.body == pattern(5000));
        assert!(w.is_closed());
        assert_eq!(up.connections.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn echo_of_ten_mebibytes() {
        let up = Upstream::start();
        let mut w = Wire::connect(up.addr);
        let data = pattern(10 << 20);
        let mut req = format!(
            "PUT /app/echo HTTP/1.1\r\nHost: up.test\r\nContent-Length: {}\r\n\r\n",
            data.len()
        )
        .into_bytes();
        req.extend_from_slice(&data);
        w.send(&req);
        let r = w.response(false);
        assert_eq!(r.status, 200);
        assert!(r.body == data);
    }

    #[test]
    fn faults() {
        let up = Upstream::start();
        // Reset: no response, a RST.
        let mut w = Wire::connect(up.addr);
        w.send(b"GET /reset HTTP/1.1\r\nHost: up.test\r\n\r\n");
        assert!(w.read_response(false).unwrap().is_none());
        assert!(w.reset, "a RST, not a FIN");
        // Garbage.
        let mut w = Wire::connect(up.addr);
        w.send(b"GET /garbage HTTP/1.1\r\nHost: up.test\r\n\r\n");
        assert_eq!(w.read_to_end(), b"NOT HTTP AT ALL\r\n\r\n");
        assert!(!w.reset);
        // Truncate.
        let mut w = Wire::connect(up.addr);
        let r = get(&mut w, "/truncate/1000", "");
        assert_eq!(r.framing, Framing::Length(1000));
        assert!(!r.complete);
        assert!(r.body == pattern(500));
        // Slow.
        let mut w = Wire::connect(up.addr);
        let start = Instant::now();
        let r = get(&mut w, "/slow/300", "");
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert_eq!(r.body, b"slow");
        // Closed port.
        let err = TcpStream::connect(Upstream::closed_port()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    }

    #[test]
    fn websocket_upgrade_echoes() {
        let up = Upstream::start();
        let mut w = Wire::connect(up.addr);
        let r = get(&mut w, "/ws", "");
        assert_eq!(r.status, 400);
        w.send(b"GET /app/ws HTTP/1.1\r\nHost: up.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nearly");
        let r = w.response(false);
        assert_eq!(r.status, 101);
        assert_eq!(w.take(5).unwrap(), b"early");
        w.send(b"\x00\x01binary\xff");
        assert_eq!(w.take(9).unwrap(), b"\x00\x01binary\xff");
        w.stream.shutdown(Shutdown::Write).unwrap();
        assert!(w.is_closed());
        assert!(up.wait_until(Duration::from_secs(2), |u| u.open_connections() == 0));
    }

    #[test]
    fn idle_close_and_drop_stop_the_server() {
        let up = Upstream::with_idle_close(Duration::from_millis(200));
        let mut w = Wire::connect(up.addr);
        assert_eq!(get(&mut w, "/x", "").status, 200);
        assert_eq!(up.open_connections(), 1);
        let start = Instant::now();
        assert!(w.is_closed());
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(up.wait_until(Duration::from_secs(2), |u| u.open_connections() == 0));

        let up = Upstream::start();
        let addr = up.addr;
        let mut w = Wire::connect(addr);
        assert_eq!(get(&mut w, "/x", "").status, 200);
        drop(up);
        assert!(w.is_closed(), "open connections are shut down");
        assert!(TcpStream::connect(addr).is_err(), "the listener is gone");
    }
}

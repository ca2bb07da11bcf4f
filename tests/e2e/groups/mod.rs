//! Upstream groups end to end: several real upstream servers ([`Node`]) on loopback, each on
//! its own 127.x.y.z address, behind the real daemon; they can be killed, hung, made to answer
//! 503 or to close without answering, and restarted on the same address.

mod admin;
mod balance;
mod health;
mod load;
mod retry;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::{free_addr, Driver, Server, Site};

/// What a [`Node`] does with requests (its health path answers by [`Node::set_healthy`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// 200 with the node's name as the body.
    Ok = 0,
    /// 503.
    Unavailable = 1,
    /// Reads the request and never answers.
    Hang = 2,
    /// Reads the request and closes without a byte.
    Close = 3,
}

struct Shared {
    name: String,
    mode: AtomicU8,
    healthy: AtomicBool,
    /// Health answers start with a `103 Early Hints` in the same write.
    health_interim: AtomicBool,
    /// Delay before each traffic answer, in milliseconds.
    delay_ms: AtomicU64,
    stop: AtomicBool,
    open: Mutex<HashMap<u64, TcpStream>>,
    next: AtomicU64,
    /// Requests on other paths than the health path, and on it.
    traffic: AtomicUsize,
    checks: AtomicUsize,
    /// Methods of traffic requests, in order.
    methods: Mutex<Vec<String>>,
}

/// A small HTTP/1.1 upstream (keep-alive, thread per connection).
pub struct Node {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

pub const HEALTH_PATH: &str = "/healthz";

impl Node {
    pub fn start(name: &str) -> Self {
        let addr = SocketAddr::new(free_addr().ip(), 0);
        Self::start_at(name, addr)
    }

    /// On `addr` (port 0: one the kernel picks).
    pub fn start_at(name: &str, addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).expect("bind a node");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            name: name.to_string(),
            mode: AtomicU8::new(Mode::Ok as u8),
            healthy: AtomicBool::new(true),
            health_interim: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            open: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            traffic: AtomicUsize::new(0),
            checks: AtomicUsize::new(0),
            methods: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.stop.load(SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let id = s.next.fetch_add(1, SeqCst);
                if let Ok(c) = stream.try_clone() {
                    s.open.lock().unwrap().insert(id, c);
                }
                let s = s.clone();
                std::thread::spawn(move || {
                    serve(stream, &s);
                    s.open.lock().unwrap().remove(&id);
                });
            }
        });
        Node {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    pub fn set(&self, mode: Mode) {
        self.shared.mode.store(mode as u8, SeqCst);
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.shared.healthy.store(healthy, SeqCst);
    }

    pub fn set_health_interim(&self, on: bool) {
        self.shared.health_interim.store(on, SeqCst);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.shared.delay_ms.store(delay.as_millis() as u64, SeqCst);
    }

    /// Traffic requests received (not health checks).
    pub fn traffic(&self) -> usize {
        self.shared.traffic.load(SeqCst)
    }

    pub fn checks(&self) -> usize {
        self.shared.checks.load(SeqCst)
    }

    pub fn methods(&self) -> Vec<String> {
        self.shared.methods.lock().unwrap().clone()
    }

    pub fn open_connections(&self) -> usize {
        self.shared.open.lock().unwrap().len()
    }
}

impl Drop for Node {
    /// Stops listening and resets every connection (a killed server).
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        for s in self.shared.open.lock().unwrap().values() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn serve(mut stream: TcpStream, s: &Shared) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // A head, then its Content-Length body.
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < end + length {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..end + length);
        let mut words = head.split_whitespace();
        let method = words.next().unwrap_or_default().to_string();
        let path = words.next().unwrap_or_default().to_string();
        if path == HEALTH_PATH {
            s.checks.fetch_add(1, SeqCst);
            let status = if s.healthy.load(SeqCst) && !s.stop.load(SeqCst) {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            let interim = if s.health_interim.load(SeqCst) {
                "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
            } else {
                ""
            };
            let _ = stream.write_all(
                format!("{interim}HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
            );
            continue;
        }
        s.traffic.fetch_add(1, SeqCst);
        s.methods.lock().unwrap().push(method);
        let delay = s.delay_ms.load(SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        let body = &s.name;
        let answer = match s.mode.load(SeqCst) {
            0 => format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
            1 => "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy".into(),
            2 => {
                while !s.stop.load(SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
            _ => {
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
        };
        if stream.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// A daemon with one Proxy route `/` on host `g.test` to group `g`, whose keys are `group`
/// (TOML lines of `[upstreams.g]` after `servers`, and its sub-tables).
pub fn daemon(nodes: &[&Node], group: &str) -> Server {
    daemon_env(nodes, group, &[])
}

pub fn daemon_env(nodes: &[&Node], group: &str, env: &[(&str, &str)]) -> Server {
    let servers: Vec<String> = nodes
        .iter()
        .map(|n| format!("{{ address = \"{}\" }}", n.addr))
        .collect();
    let config = groups_config(&servers.join(", "), group);
    start(&config, env)
}

/// The config of [`daemon`], with `servers` as written.
pub fn groups_config(servers: &str, group: &str) -> String {
    format!(
        "[upstreams.g]\nservers = [{servers}]\n{group}\n\n\
         [path_routes.\"g.test\".\"/\"]\ntype = \"Proxy\"\nupstream = \"g\"\n\
         security = {{ backend_response_timeout_secs = 2, backend_connect_timeout_secs = 1 }}\n"
    )
}

pub fn start(config: &str, env: &[(&str, &str)]) -> Server {
    let site = Site::new();
    let addr = free_addr();
    let toml = format!(
        "[server]\nlisten = \"{addr}\"\nthreads = 2\n[logging]\nlevel = \"info\"\n\n\
         [admin]\nsocket = \"{{dir}}/admin.sock\"\n\n{config}"
    );
    let _ = site;
    Server::start_with_env(Driver::Uring, addr, &toml, env)
}

/// The outcome of one request: the status and body, or why there was none.
pub type Outcome = Result<(u16, String), String>;

/// A keep-alive client that never panics on what the server does.
pub struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            stream: None,
            buf: Vec::new(),
        }
    }

    /// `method path` to host `g.test` with `extra` header lines; reconnects when needed.
    pub fn request(&mut self, method: &str, path: &str, extra: &str, body: &str) -> Outcome {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr).map_err(|e| format!("connect: {e}"))?;
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.set_nodelay(true).unwrap();
            self.stream = Some(s);
            self.buf.clear();
        }
        let raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: g.test\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let r = self.exchange(raw.as_bytes());
        if r.is_err() {
            self.stream = None;
        }
        r
    }

    pub fn get(&mut self, path: &str) -> Outcome {
        self.request("GET", path, "", "")
    }

    fn exchange(&mut self, raw: &[u8]) -> Outcome {
        let s = self.stream.as_mut().ok_or("no connection")?;
        s.write_all(raw).map_err(|e| format!("send: {e}"))?;
        let mut chunk = [0u8; 8192];
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut r = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = r.parse(&self.buf) {
                let status = r.code.unwrap_or(0);
                let len: usize = r
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                    .unwrap_or(0);
                let close = r.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("connection")
                        && h.value.eq_ignore_ascii_case(b"close")
                });
                if self.buf.len() >= n + len {
                    let body = String::from_utf8_lossy(&self.buf[n..n + len]).into_owned();
                    self.buf.drain(..n + len);
                    if close {
                        self.stream = None;
                    }
                    return Ok((status, body));
                }
            }
            let s = self.stream.as_mut().ok_or("no connection")?;
            match s.read(&mut chunk) {
                Ok(0) => return Err("closed".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }
}

/// How many of `n` GETs each body (node name) answered, and the failures.
pub fn tally(server: &Server, n: usize, extra: &str) -> (HashMap<String, usize>, Vec<String>) {
    let mut conn = Conn::new(server.addr);
    let mut counts = HashMap::new();
    let mut failures = Vec::new();
    for _ in 0..n {
        match conn.request("GET", "/", extra, "") {
            Ok((200, body)) => *counts.entry(body).or_insert(0) += 1,
            Ok((status, body)) => failures.push(format!("{status} {body}")),
            Err(e) => failures.push(e),
        }
    }
    (counts, failures)
}

/// Waits up to `within` for `cond`.
pub fn wait_for(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// The server rows of group `g` from `proxyctl upstreams g --json`.
pub fn servers(server: &Server) -> Vec<serde_json::Value> {
    let v = server.proxyctl_json(&["upstreams", "g"]);
    v[0]["servers"].as_array().cloned().unwrap_or_default()
}

/// The `state` of the server at `addr` in group `g`.
pub fn state_of(server: &Server, addr: SocketAddr) -> String {
    servers(server)
        .iter()
        .find(|s| s["address"] == addr.to_string())
        .map(|s| s["state"].as_str().unwrap_or_default().to_string())
        .unwrap_or_else(|| "absent".into())
}

/// The daemon's log once `needle` is in it (waiting up to 5 s); panics if it never is.
pub fn logged(server: &Server, needle: &str) -> String {
    let log = server.wait_log(needle);
    assert!(log.contains(needle), "{needle:?} not logged:\n{log}");
    log
}

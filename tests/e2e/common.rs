//! The end-to-end harness: starts the real `zerocopy-server` binary on a loopback address with a
//! generated config and docroot, and speaks raw HTTP/1.1 to it.
//!
//! Every server gets its own loopback address (127.x.y.z) and a port the kernel picked, so tests
//! run in parallel without meeting each other even though the daemon binds with SO_REUSEPORT.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_zerocopy-server");

/// The io drivers every behaviour is tested under.
#[derive(Clone, Copy, Debug)]
pub enum Driver {
    Uring,
    Epoll,
}

impl Driver {
    pub fn arg(self) -> &'static str {
        match self {
            Driver::Uring => "uring",
            Driver::Epoll => "epoll",
        }
    }
}

/// Generates `mod uring` and `mod epoll` with one `#[test]` per listed function, each taking
/// a [`Driver`].
#[macro_export]
macro_rules! both_drivers {
    ($($name:ident),* $(,)?) => {
        mod uring {
            $( #[test] fn $name() { super::$name($crate::common::Driver::Uring) } )*
        }
        mod epoll {
            $( #[test] fn $name() { super::$name($crate::common::Driver::Epoll) } )*
        }
    };
}

/// A fresh loopback address with a free port.
pub fn free_addr() -> SocketAddr {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let ip = format!(
        "127.{}.{}.{}",
        1 + pid % 250,
        1 + (pid / 250 + n) % 250,
        1 + n % 250
    );
    let l = TcpListener::bind(format!("{ip}:0")).expect("bind a loopback address");
    l.local_addr().unwrap()
}

/// A temporary directory with files in it.
pub struct Site {
    pub dir: tempfile::TempDir,
}

impl Site {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `rel` (creating parent directories) and returns its full path.
    pub fn file(&self, rel: &str, body: impl AsRef<[u8]>) -> PathBuf {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
        p
    }

    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

/// A running daemon. Killed on drop.
pub struct Server {
    pub addr: SocketAddr,
    pub child: Child,
    pub config_path: PathBuf,
    pub admin_socket: PathBuf,
    /// The daemon's stderr.
    pub log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts the daemon with `routes` (TOML appended after a `[server]` table that listens on a
    /// fresh address with one worker). `{site}` in `routes` is replaced by `site`'s path.
    pub fn start(driver: Driver, site: &Site, routes: &str) -> Self {
        Self::start_full(driver, site, "threads = 1\n", routes)
    }

    /// Like [`Server::start`], with extra keys in `[server]`.
    pub fn start_full(driver: Driver, site: &Site, server_extra: &str, rest: &str) -> Self {
        let addr = free_addr();
        let toml = format!(
            "[server]\nlisten = \"{addr}\"\n{server_extra}\n[logging]\nlevel = \"debug\"\n\n\
             [admin]\nsocket = \"{{dir}}/admin.sock\"\n\n{}",
            rest.replace("{site}", &site.path().display().to_string())
        );
        Self::start_with_config(driver, addr, &toml)
    }

    pub fn start_with_config(driver: Driver, addr: SocketAddr, toml: &str) -> Self {
        Self::start_with_env(driver, addr, toml, &[])
    }

    /// [`Server::start_with_config`], with environment variables for the daemon.
    pub fn start_with_env(
        driver: Driver,
        addr: SocketAddr,
        toml: &str,
        env: &[(&str, &str)],
    ) -> Self {
        // Built before any daemon starts, so that the first `proxyctl` call of a timed test
        // does not spend seconds compiling in the middle of it.
        proxyctl_bin();
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("config.toml");
        let toml = toml.replace("{dir}", &dir.path().display().to_string());
        std::fs::write(&config_path, &toml).unwrap();
        // The admin socket the config names (the daemon's default when it names none).
        let admin_socket = toml
            .lines()
            .find_map(|l| l.trim().strip_prefix("socket = \""))
            .and_then(|rest| rest.strip_suffix('"'))
            .map_or_else(
                || PathBuf::from("/run/zerocopy-server/admin.sock"),
                PathBuf::from,
            );
        let log_path = dir.path().join("stderr.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&config_path)
            .arg("--io-driver")
            .arg(driver.arg())
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start zerocopy-server");
        let mut server = Server {
            addr,
            child,
            config_path,
            admin_socket,
            log_path,
            _dir: dir,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            // Listening (the kernel queues connections) and the admin socket exists: start-up
            // is complete, the workers serve.
            // (Connectable, not merely present: a stale socket file from an earlier daemon
            // exists before this one has bound its own.)
            let admin_ready = self.admin_socket.as_os_str().is_empty()
                || std::os::unix::net::UnixStream::connect(&self.admin_socket).is_ok();
            if admin_ready && TcpStream::connect(self.addr).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "zerocopy-server exited with {status} before listening:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "zerocopy-server did not listen on {} within 10 s",
            self.addr
        );
    }

    /// What the daemon has written to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits up to 5 s for `needle` to appear in the log.
    pub fn wait_log(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let log = self.log();
            if log.contains(needle) || start.elapsed() > Duration::from_secs(5) {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// One request on a fresh connection; `raw` is sent as is.
    pub fn raw(&self, raw: &[u8]) -> Response {
        let mut c = self.connect();
        c.send(raw);
        c.response(raw.starts_with(b"HEAD "))
    }

    /// `GET path` with `Host: host` on a fresh connection.
    pub fn get(&self, host: &str, path: &str) -> Response {
        self.raw(
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client connection that can pipeline: responses are parsed from one buffer.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).expect("send");
    }

    /// Reads one response (`head_request`: the request was HEAD, so no body follows).
    pub fn response(&mut self, head_request: bool) -> Response {
        self.try_response(head_request)
            .expect("a complete response")
    }

    /// Reads one response, or `None` when the connection closed first.
    pub fn try_response(&mut self, head_request: bool) -> Option<Response> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut headers);
            match r.parse(&self.buf).expect("a well-formed response head") {
                httparse::Status::Complete(n) => {
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
                    let mut resp = Response {
                        status,
                        headers,
                        body: Vec::new(),
                    };
                    if head_request || status == 304 || status == 204 || status / 100 == 1 {
                        return Some(resp);
                    }
                    match resp.header("content-length") {
                        Some(len) => {
                            let len: usize = len.parse().unwrap();
                            while self.buf.len() < len {
                                if !self.fill() {
                                    panic!(
                                        "connection closed mid-body ({} of {len})",
                                        self.buf.len()
                                    );
                                }
                            }
                            resp.body = self.buf.drain(..len).collect();
                        }
                        None => {
                            while self.fill() {}
                            resp.body = std::mem::take(&mut self.buf);
                        }
                    }
                    return Some(resp);
                }
                httparse::Status::Partial => {
                    if !self.fill() {
                        assert!(
                            self.buf.is_empty(),
                            "connection closed mid-head: {:?}",
                            String::from_utf8_lossy(&self.buf)
                        );
                        return None;
                    }
                }
            }
        }
    }

    /// Reads more; false at EOF or reset.
    fn fill(&mut self) -> bool {
        let mut tmp = [0u8; 65536];
        match self.stream.read(&mut tmp) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => false,
            Err(e) => panic!("read failed: {e}"),
        }
    }

    /// Whether the server closed the connection (EOF within the read timeout, nothing left).
    pub fn is_closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill()
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The `proxyctl` binary of this workspace, built once per test process (it belongs to another
/// package, so cargo does not hand its path to these tests).
pub fn proxyctl_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let status = Command::new(env!("CARGO"))
                .args(["build", "-p", "proxyctl", "--locked", "--quiet"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("run cargo build -p proxyctl");
            assert!(status.success(), "cargo build -p proxyctl failed");
            // The daemon binary sits in the same target directory.
            Path::new(BIN).with_file_name("proxyctl")
        })
        .clone()
}

impl Server {
    /// Runs `proxyctl --socket <this server's socket> ARGS…`.
    pub fn proxyctl(&self, args: &[&str]) -> Output {
        Command::new(proxyctl_bin())
            .arg("--socket")
            .arg(&self.admin_socket)
            .args(args)
            .output()
            .expect("run proxyctl")
    }

    /// `proxyctl … --json`, parsed; panics unless it printed JSON.
    pub fn proxyctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.proxyctl(&all);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "proxyctl {args:?} printed no JSON ({e}): {}{}\nthe daemon's log:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log()
            )
        })
    }

    /// One admin request over the socket, without the CLI; the first response line.
    pub fn admin(&self, request: serde_json::Value) -> serde_json::Value {
        use std::io::BufRead;
        let mut req = request;
        req["version"] = serde_json::json!(1);
        let mut s =
            std::os::unix::net::UnixStream::connect(&self.admin_socket).expect("admin socket");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(format!("{req}\n").as_bytes()).unwrap();
        let mut line = String::new();
        std::io::BufReader::new(s).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }

    /// The serving generation, asked over the admin socket.
    pub fn generation(&self) -> u64 {
        self.admin(serde_json::json!({"command": "status"}))["data"]["generation"]
            .as_u64()
            .unwrap()
    }

    /// Waits up to 5 s for the generation to reach `at_least`.
    pub fn wait_generation(&self, at_least: u64) -> u64 {
        let start = Instant::now();
        loop {
            let g = self.generation();
            if g >= at_least || start.elapsed() > Duration::from_secs(5) {
                return g;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Panics with the daemon's log if it has exited.
    pub fn assert_alive(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!("zerocopy-server exited ({st}); its log:\n{}", self.log());
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill with the child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits up to `within` for the daemon to exit; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < within {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Still running: what each of its threads is doing, for the failure it will cause
        // (gdb where the machine has it).
        let pid = self.child.id();
        let threads = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "for t in /proc/{pid}/task/*; do echo $(cat $t/comm) $(cat $t/wchan); done; \
                 gdb -p {pid} -batch -ex 'thread apply all bt' 2>&1"
            ))
            .output();
        if let Ok(out) = threads {
            eprintln!(
                "the daemon did not exit within {within:?}; its threads:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        None
    }
}

/// Runs `zerocopy-server --check --config PATH`.
pub fn check(path: &Path) -> Output {
    Command::new(BIN)
        .arg("--check")
        .arg("--config")
        .arg(path)
        .output()
        .expect("run zerocopy-server --check")
}

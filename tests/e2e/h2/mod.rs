//! HTTP/2 end to end: real clients (curl, nghttp, Python `httpx`) over h2c and TLS
//! ([`clients`]), proxying between HTTP/2 clients and HTTP/1 upstreams ([`proxy`]), the
//! connection's limits, timeouts and drain ([`limits`]), and the known HTTP/2 attacks written
//! as raw frames by `peer.py` ([`attacks`]).

mod attacks;
mod clients;
mod grpc;
mod limits;
mod proxy;
mod upstreams;

use std::net::SocketAddr;
use std::process::{Command, Output};

use serde_json::Value;

use crate::common::{free_addr, Driver, Server, Site};
use crate::upstream::pattern;

/// The raw-frame peer and `httpx` client (see its docstring).
pub const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/h2/peer.py");

/// A plain daemon with h2c on: `h2.test` serves files at `/` (`index.html`, `big.bin` of
/// 1 MiB + 7) and proxies `/app/` to `upstream` when there is one; `http2` is extra
/// `[http2]` keys, `rest` more TOML.
pub fn h2c(d: Driver, http2: &str, upstream: Option<SocketAddr>, rest: &str) -> (Server, Site) {
    h2c_admin(d, http2, upstream, "", rest)
}

/// [`h2c`], with extra `[admin]` keys.
pub fn h2c_admin(
    d: Driver,
    http2: &str,
    upstream: Option<SocketAddr>,
    admin: &str,
    rest: &str,
) -> (Server, Site) {
    let site = Site::new();
    site.file("www/index.html", "hello over h2\n");
    site.file("www/big.bin", pattern(1024 * 1024 + 7));
    let proxy = upstream.map_or(String::new(), |u| {
        format!("\"/app/\" = {{ type = \"Proxy\", url = \"http://{u}\" }}\n")
    });
    let addr = free_addr();
    let toml = format!(
        "[server]\nlisten = \"{addr}\"\nthreads = 1\n\n[logging]\nlevel = \"debug\"\n\
         access_log = \"{{dir}}/access.log\"\naccess_log_format = \"json\"\n\n\
         [admin]\nsocket = \"{{dir}}/admin.sock\"\n{admin}\n\n[http2]\nh2c = true\n{http2}\n\n\
         [path_routes.\"h2.test\"]\n\"/\" = {{ path = \"{}/www\" }}\n{proxy}\n{rest}",
        site.path().display()
    );
    (Server::start_with_config(d, addr, &toml), site)
}

/// Runs curl with `args`; its output is the response head (`-D -`), then the body.
pub fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "-D", "-", "--max-time", "20"])
        .args(args)
        .output()
        .expect("run curl (apt-get install curl)")
}

/// curl with HTTP/2 prior knowledge against `s`, for `h2.test` at `target`.
pub fn curl_h2c(s: &Server, target: &str, extra: &[&str]) -> Output {
    let url = format!("http://{}{target}", s.addr);
    let mut args = vec!["--http2-prior-knowledge", "-H", "Host: h2.test", &url];
    args.extend_from_slice(extra);
    curl(&args)
}

/// The status line and head of curl's output (or its error), and the body after it.
pub fn split(out: &Output) -> (String, Vec<u8>) {
    let raw = &out.stdout;
    if raw.is_empty() {
        return (
            String::from_utf8_lossy(&out.stderr).into_owned(),
            Vec::new(),
        );
    }
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |i| i + 4);
    (
        String::from_utf8_lossy(&raw[..end]).to_lowercase(),
        raw[end..].to_vec(),
    )
}

/// `python3` able to import the Python peers' packages (`h2`, `httpx`, `grpcio`, and httpx's
/// `brotli` and `zstandard` decoders): the system's,
/// or one with them installed from PyPI (once per test run) into `target/python-h2`.
pub fn python() -> Command {
    static PATH: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    const IMPORTS: &str =
        "import h2, hpack, httpx, grpc, brotli, zstandard, opentelemetry.proto.collector.trace.v1";
    let extra = PATH.get_or_init(|| {
        let has = |path: Option<&std::path::Path>| {
            let mut c = Command::new("python3");
            if let Some(p) = path {
                c.env("PYTHONPATH", p);
            }
            c.args(["-c", IMPORTS])
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if has(None) {
            return None;
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/python-h2");
        if !has(Some(&dir)) {
            let status = Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "--target"])
                .arg(&dir)
                .args([
                    "h2",
                    "httpx[http2]",
                    "grpcio",
                    "brotli",
                    "zstandard",
                    "opentelemetry-proto",
                ])
                .status()
                .expect("python3 -m pip (apt-get install python3-pip)");
            assert!(
                status.success(),
                "pip install h2 httpx grpcio into {dir:?} failed"
            );
        }
        Some(dir)
    });
    let mut c = Command::new("python3");
    if let Some(dir) = extra {
        c.env("PYTHONPATH", dir);
    }
    c
}

/// Whether the command-line tool `name` is installed (`nghttp`, `h2load`: Debian's
/// `nghttp2-client`). CI must have it; elsewhere a test without it says so and is skipped.
pub fn have(name: &str) -> bool {
    let found = Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var_os("CI").is_none(), "CI must have {name}");
        eprintln!("skipped: no {name} (apt-get install nghttp2-client)");
    }
    found
}

/// Runs `peer.py` with `args` and parses the JSON it prints.
pub fn peer(args: &[&str]) -> Value {
    let out = python()
        .arg(PEER)
        .args(args)
        .output()
        .expect("run python3 (pip install h2 httpx)");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "peer.py {args:?}: {e}\nstdout: {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `peer.py ATTACK` against `s` for `h2.test` at `path`.
pub fn attack(s: &Server, name: &str, path: &str) -> Value {
    let (host, port) = (s.addr.ip().to_string(), s.addr.port().to_string());
    peer(&[name, &host, &port, "h2.test", path])
}

/// The daemon's resident memory, KiB.
pub fn rss_kib(s: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The access log's JSON entries, once there are `n` (the log is flushed every second).
pub fn access_log(s: &Server, n: usize) -> Vec<Value> {
    let path = s.config_path.with_file_name("access.log");
    let read = || -> Vec<Value> {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let start = std::time::Instant::now();
    while read().len() < n && start.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    read()
}

//! Logs and metrics end to end: `[logging] level` (and its live change), size rotation,
//! `SIGUSR1` reopening, dropped lines counted; the access log in both formats for a File and a
//! Proxy request; `proxyctl stats` matching the requests sent; `/metrics` read by Python's
//! `prometheus_client` parser.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{free_addr, Driver, Server, Site};
use crate::upstream::Upstream;

/// A config with a File route at `h/files/` and, when `upstream` is given, a Proxy route at
/// `h/api/`; `logging` and `admin` are appended to their tables.
fn config(
    addr: SocketAddr,
    site: &Site,
    upstream: Option<SocketAddr>,
    logging: &str,
    admin: &str,
) -> String {
    // Lines at once, unless the test says otherwise.
    let flush = if logging.contains("flush_interval_ms") {
        ""
    } else {
        "flush_interval_ms = 1\n"
    };
    let proxy = upstream.map_or(String::new(), |u| {
        format!("\"/api\" = {{ type = \"Proxy\", url = \"http://{u}\" }}\n")
    });
    format!(
        "[server]\nlisten = \"{addr}\"\nthreads = 1\n\n[logging]\n{flush}{logging}\n\n\
         [admin]\nsocket = \"{{dir}}/admin.sock\"\n{admin}\n\n[path_routes.\"h\"]\n\
         \"/files\" = {{ path = \"{}\" }}\n{proxy}",
        site.path().display()
    )
}

/// The directory of the server's config (where `{dir}` pointed).
fn dir(s: &Server) -> PathBuf {
    s.config_path.parent().unwrap().to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits up to 5 s for `path` to hold `lines` lines; returns them.
fn wait_lines(path: &Path, lines: usize) -> Vec<String> {
    let start = Instant::now();
    loop {
        let text = read(path);
        if text.lines().count() >= lines || start.elapsed() > Duration::from_secs(5) {
            return text.lines().map(str::to_string).collect();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits up to 5 s for `path` to contain `needle`; returns the file.
fn wait_for(path: &Path, needle: &str) -> String {
    let start = Instant::now();
    loop {
        let text = read(path);
        if text.contains(needle) || start.elapsed() > Duration::from_secs(5) {
            return text;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One request on a fresh connection that closes; every byte the server sent.
fn exchange(addr: SocketAddr, path: &str) -> Vec<u8> {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: h\r\nUser-Agent: e2e \"quoted\"\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    c.read_to_end(&mut all).unwrap();
    all
}

fn level_filters_and_changes_live(d: Driver) {
    let site = Site::new();
    let addr = free_addr();
    let logging = "level = \"warn\"\nfile_path = \"{dir}/z.log\"";
    let toml = config(addr, &site, None, logging, "");
    let s = Server::start_with_config(d, addr, &toml);
    let log = dir(&s).join("z.log");
    // debug (a 404), info (a reload), warn (a refused reload).
    assert_eq!(s.get("h", "/files/nope").status, 404);
    s.admin(serde_json::json!({"command": "reload"}));
    std::fs::write(&s.config_path, "[server]\nlisten = 1\n").unwrap();
    s.admin(serde_json::json!({"command": "reload"}));
    let text = wait_for(&log, "refused");
    assert!(text.contains("WARN"), "{text}");
    assert!(!text.contains("INFO"), "info lines at level warn:\n{text}");
    assert!(
        !text.contains("DEBUG"),
        "debug lines at level warn:\n{text}"
    );
    // A reload to level debug applies at once, without a restart.
    std::fs::write(
        &s.config_path,
        toml.replace("\"warn\"", "\"debug\"")
            .replace("{dir}", &dir(&s).display().to_string()),
    )
    .unwrap();
    let report = s.admin(serde_json::json!({"command": "reload"}));
    assert_eq!(report["data"]["ok"], true, "{report}");
    assert_eq!(report["data"]["restart_required"], serde_json::json!([]));
    assert_eq!(s.get("h", "/files/still-nope").status, 404);
    let text = wait_for(&log, "still-nope");
    let line = text
        .lines()
        .find(|l| l.contains("GET /files/still-nope"))
        .unwrap_or_else(|| panic!("no debug line after the level changed:\n{text}"));
    assert!(line.contains("DEBUG") && line.contains("404"), "{line}");
}

/// The body of a response read whole by [`exchange`]: what follows its head.
fn body_of(response: &[u8]) -> &[u8] {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    &response[end..]
}

/// The access log line of one File and one Proxy request, in `format`.
fn access_lines(d: Driver, format: &str) -> (Vec<u8>, Vec<u8>, SocketAddr, Vec<String>) {
    let site = Site::new();
    site.file("f.txt", "file body");
    let up = Upstream::start();
    let addr = free_addr();
    let logging = format!("access_log = \"{{dir}}/access.log\"\naccess_log_format = \"{format}\"");
    let s = Server::start_with_config(d, addr, &config(addr, &site, Some(up.addr), &logging, ""));
    let file = exchange(addr, "/files/f.txt?x=1");
    let proxied = exchange(addr, "/api/echo");
    let lines = wait_lines(&dir(&s).join("access.log"), 2);
    assert_eq!(lines.len(), 2, "{lines:?}");
    (file, proxied, up.addr, lines)
}

fn access_log_combined(d: Driver) {
    let (file, proxied, up, lines) = access_lines(d, "combined");
    assert!(file.starts_with(b"HTTP/1.1 200"));
    // addr - - [time] "request" status bytes "referer" "agent" key=value…
    let f = &lines[0];
    assert!(f.starts_with("127."), "{f}");
    let (before, after) = f.split_once(" +0000] ").unwrap();
    assert!(before.contains(" - - ["), "{f}");
    // `%b` is the body's bytes (nginx's $body_bytes_sent), not head and body.
    let expected = format!(
        "\"GET /files/f.txt?x=1 HTTP/1.1\" 200 {} \"-\" \"e2e \\x22quoted\\x22\" host=\"h\" \
         route=\"h/files\" request_time=",
        body_of(&file).len()
    );
    assert!(
        after.starts_with(&expected),
        "{after}\nexpected: {expected}"
    );
    // The request id is the last field, as the response stated it.
    let (rest, id) = after
        .rsplit_once(" request_id=")
        .expect("a request_id field");
    assert!(rest.ends_with(" upstream=- upstream_time=-"), "{f}");
    let head = String::from_utf8_lossy(&file);
    assert!(
        head.contains(&format!("\r\nX-Request-Id: {id}\r\n")),
        "{id} not in {head}"
    );
    let p = &lines[1];
    assert!(
        p.contains(&format!(
            "\"GET /api/echo HTTP/1.1\" 200 {} ",
            body_of(&proxied).len()
        )),
        "{p}"
    );
    assert!(p.contains(" route=\"h/api\" "), "{p}");
    assert!(
        p.contains(&format!(" upstream={up} upstream_time=0.")),
        "{p}"
    );
}

fn access_log_json(d: Driver) {
    let (file, proxied, up, lines) = access_lines(d, "json");
    let f: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(f["method"], "GET");
    assert_eq!(f["target"], "/files/f.txt?x=1");
    assert_eq!(f["host"], "h");
    assert_eq!(f["status"], 200);
    assert_eq!(f["bytes"], body_of(&file).len());
    assert_eq!(f["bytes_sent"], file.len(), "head and body");
    assert_eq!(f["route"], "h/files");
    assert_eq!(f["upstream"], Value::Null);
    assert_eq!(f["user_agent"], "e2e \"quoted\"");
    assert!(f["client"].as_str().unwrap().starts_with("127."));
    assert!(f["time"].as_str().unwrap().ends_with('Z'));
    assert!(f["duration"].as_f64().unwrap() < 5.0);
    let p: Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(p["route"], "h/api");
    assert_eq!(p["bytes"], body_of(&proxied).len());
    assert_eq!(p["bytes_sent"], proxied.len());
    assert_eq!(p["upstream"], up.to_string());
    let ut = p["upstream_time"].as_f64().unwrap();
    assert!(ut > 0.0 && ut <= p["duration"].as_f64().unwrap(), "{p}");
}

/// `%b` of the combined line is the response body's bytes — 0 for HEAD and 304, as nginx
/// writes — and a real log analyser (GoAccess, Debian's `goaccess`) reads the lines and sums
/// them to the body bytes sent.
fn access_log_bytes_are_body_bytes(d: Driver) {
    let site = Site::new();
    site.file("f.txt", "0123456789".repeat(100));
    let up = Upstream::start();
    let addr = free_addr();
    let logging = "access_log = \"{dir}/access.log\"";
    let s = Server::start_with_config(d, addr, &config(addr, &site, Some(up.addr), logging, ""));
    let get = exchange(addr, "/files/f.txt");
    assert_eq!(body_of(&get).len(), 1000);
    let etag = String::from_utf8_lossy(&get)
        .lines()
        .find_map(|l| l.strip_prefix("ETag: ").map(str::to_string))
        .expect("an ETag");
    let raw = |req: String| {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(req.as_bytes()).unwrap();
        let mut all = Vec::new();
        c.read_to_end(&mut all).unwrap();
        all
    };
    let head = raw("HEAD /files/f.txt HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".into());
    assert!(head.starts_with(b"HTTP/1.1 200"));
    let not_modified = raw(format!(
        "GET /files/f.txt HTTP/1.1\r\nHost: h\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n"
    ));
    assert!(not_modified.starts_with(b"HTTP/1.1 304"));
    let proxied = exchange(addr, "/api/bytes/777");
    assert_eq!(body_of(&proxied).len(), 777);
    let log = dir(&s).join("access.log");
    let lines = wait_lines(&log, 4);
    assert_eq!(lines.len(), 4, "{lines:?}");
    let bytes: Vec<&str> = lines
        .iter()
        .map(|l| l.split_once("\" ").unwrap().1.split(' ').nth(1).unwrap())
        .collect();
    assert_eq!(bytes, ["1000", "0", "0", "777"], "{lines:?}");
    // GoAccess reads every line as combined, and its bandwidth is the bodies' bytes.
    let Ok(v) = std::process::Command::new("goaccess")
        .arg("--version")
        .output()
    else {
        // CI installs it (.ci/run); elsewhere this part is skipped.
        assert!(std::env::var_os("CI").is_none(), "CI must have goaccess");
        eprintln!("skipped: no goaccess (apt-get install goaccess)");
        return;
    };
    assert!(v.status.success());
    let report = dir(&s).join("report.json");
    let out = std::process::Command::new("goaccess")
        .arg(&log)
        .args(["--log-format=COMBINED", "--no-global-config", "-o"])
        .arg(&report)
        .output()
        .unwrap();
    assert!(out.status.success(), "goaccess: {out:?}");
    let report: Value = serde_json::from_str(&read(&report)).unwrap();
    let general = &report["general"];
    assert_eq!(general["valid_requests"], 4, "{general}");
    assert_eq!(general["failed_requests"], 0, "{general}");
    assert_eq!(general["bandwidth"], 1777, "{general}");
}

fn logs_rotate_at_max_log_size(d: Driver) {
    let site = Site::new();
    site.file("f.txt", "x");
    let addr = free_addr();
    // Lines wait in the writer's buffer (300 ms), and the size limit still holds per line.
    let logging = "level = \"debug\"\nmax_log_size = 3000\nflush_interval_ms = 300\n\
                   file_path = \"{dir}/z.log\"\naccess_log = \"{dir}/access.log\"";
    let s = Server::start_with_config(d, addr, &config(addr, &site, None, logging, ""));
    // Each a debug line in z.log (a 404) and an access log line: far more than 6 files hold.
    for i in 0..150 {
        exchange(addr, &format!("/files/nope?request={i}"));
    }
    let dir = dir(&s);
    let last = wait_for(&dir.join("access.log"), "request=149 ");
    assert!(last.contains("request=149 "), "{last}");
    let mut seen = Vec::new();
    for name in ["z.log", "access.log"] {
        for n in 0..=5 {
            let f = match n {
                0 => dir.join(name),
                n => dir.join(format!("{name}.{n}")),
            };
            let len = std::fs::metadata(&f)
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
                .len();
            assert!(len <= 3000, "{} is {len} bytes", f.display());
            if name == "access.log" {
                for line in read(&f).lines() {
                    let n: u32 = line
                        .split("request=")
                        .nth(1)
                        .and_then(|r| r.split(' ').next())
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| panic!("{line}"));
                    seen.push(n);
                }
            }
        }
        assert!(
            !dir.join(format!("{name}.6")).exists(),
            "more than 5 rotated {name} files"
        );
    }
    // The newest lines, none missing: a contiguous run up to the last request.
    seen.sort_unstable();
    assert!(seen.len() > 40, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[1] == w[0] + 1), "{seen:?}");
    assert_eq!(seen.last(), Some(&149));
}

fn sigusr1_reopens_the_log_files(d: Driver) {
    let site = Site::new();
    site.file("f.txt", "x");
    let addr = free_addr();
    let logging = "file_path = \"{dir}/z.log\"\naccess_log = \"{dir}/access.log\"";
    let s = Server::start_with_config(d, addr, &config(addr, &site, None, logging, ""));
    let dir = dir(&s);
    exchange(addr, "/files/f.txt?before");
    wait_for(&dir.join("access.log"), "before");
    // An external rotator renames the files, then signals.
    std::fs::rename(dir.join("z.log"), dir.join("z.log.old")).unwrap();
    std::fs::rename(dir.join("access.log"), dir.join("access.log.old")).unwrap();
    s.signal(libc::SIGUSR1);
    let text = wait_for(&dir.join("z.log"), "reopen");
    assert!(text.contains("reopen"), "no new z.log after SIGUSR1");
    exchange(addr, "/files/f.txt?after");
    let new = wait_for(&dir.join("access.log"), "after");
    assert!(new.contains("after") && !new.contains("before"), "{new}");
    assert!(!read(&dir.join("access.log.old")).contains("after"));
}

/// `proxyctl stats --json`.
fn stats(s: &Server) -> Value {
    s.proxyctl_json(&["stats"])
}

fn route<'a>(stats: &'a Value, host: &str, prefix: Option<&str>) -> &'a Value {
    stats["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["host"] == host && r["prefix"].as_str() == prefix)
        .unwrap_or_else(|| panic!("no route {host} {prefix:?} in {stats}"))
}

fn stats_match_the_requests_sent(d: Driver) {
    let site = Site::new();
    site.file("f.txt", "0123456789");
    let up = Upstream::start();
    let addr = free_addr();
    let s = Server::start_with_config(d, addr, &config(addr, &site, Some(up.addr), "", ""));
    let mut file_bytes = 0;
    for _ in 0..7 {
        file_bytes += exchange(addr, "/files/f.txt").len();
    }
    for _ in 0..3 {
        file_bytes += exchange(addr, "/files/missing").len();
    }
    // Two proxied requests on one keep-alive connection: one connect, then one reuse.
    let mut c = s.connect();
    for _ in 0..2 {
        c.send(b"GET /api/x HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(c.response(false).status, 200);
    }
    drop(c);
    assert_eq!(s.get("unknown.example", "/").status, 404);
    let st = stats(&s);
    let files = route(&st, "h", Some("/files"));
    assert_eq!(files["backend"], "File");
    assert_eq!(files["requests"], 10);
    assert_eq!(files["responses"]["2xx"], 7);
    assert_eq!(files["responses"]["4xx"], 3);
    assert_eq!(files["bytes_sent"], file_bytes);
    let counts: u64 = files["latency"]["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(counts, 10, "one latency observation per request");
    let api = route(&st, "h", Some("/api"));
    assert_eq!(
        (api["requests"].clone(), api["responses"]["2xx"].clone()),
        (2.into(), 2.into())
    );
    let none = route(&st, "", None);
    assert_eq!(none["requests"], 1);
    assert_eq!(none["responses"]["4xx"], 1);
    let ups = &st["upstreams"][0];
    assert_eq!(
        ups["upstream"],
        format!("http://{}:{}", up.addr.ip(), up.addr.port())
    );
    assert_eq!(
        (ups["connects"].clone(), ups["reuses"].clone()),
        (1.into(), 1.into())
    );
    assert_eq!(ups["failures"], 0);
    assert_eq!(st["workers"][0]["requests"], 13);
    // 10 + 1 + 1 connections and the start-up probe of the test harness; proxyctl's are not
    // client connections.
    assert_eq!(st["connections"]["total"], 13);
    assert_eq!(st["reloads"]["succeeded"], 0);

    // For people: one row per route, the unrouted row because it has a request.
    let out = s.proxyctl(&["stats"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("h/files "))
        .unwrap_or_else(|| panic!("{text}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[..3], ["h/files", "File", "10"], "{text}");
    assert!(text.lines().any(|l| l.starts_with("(no route) ")), "{text}");
    assert!(
        text.contains(&format!("http://{}:{}", up.addr.ip(), up.addr.port())),
        "{text}"
    );

    // --watch: rates over the last second, once a second.
    let watcher = std::thread::spawn({
        let (bin, socket) = (crate::common::proxyctl_bin(), s.admin_socket.clone());
        move || {
            std::process::Command::new(bin)
                .arg("--socket")
                .arg(socket)
                .args(["stats", "--watch", "--count", "2"])
                .output()
                .unwrap()
        }
    });
    let until = Instant::now() + Duration::from_millis(2300);
    while Instant::now() < until {
        exchange(addr, "/files/f.txt");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = watcher.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("over the last 1.").count(), 2, "{text}");
    let rates: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("h/files "))
        .map(|l| l.split_whitespace().nth(3).unwrap().parse().unwrap())
        .collect();
    assert_eq!(rates.len(), 2, "{text}");
    assert!(
        rates.iter().all(|&r| r > 1.0),
        "requests were sent all along: {text}"
    );
}

fn dropped_log_lines_are_counted(d: Driver) {
    let site = Site::new();
    let addr = free_addr();
    // One line of room, and a burst of debug lines (one per 404).
    let logging = "level = \"debug\"\nchannel_size = 1\nfile_path = \"{dir}/z.log\"";
    let s = Server::start_with_config(d, addr, &config(addr, &site, None, logging, ""));
    let mut c = s.connect();
    let burst = "GET /files/nope HTTP/1.1\r\nHost: h\r\n\r\n".repeat(2000);
    c.send(burst.as_bytes());
    for _ in 0..2000 {
        assert_eq!(c.response(false).status, 404);
    }
    let dropped = stats(&s)["log_lines_dropped"].as_u64().unwrap();
    assert!(
        dropped > 0,
        "2000 lines into a channel of 1 and none dropped"
    );
    // Nothing is lost without being counted (the last lines may still be on their way).
    let start = Instant::now();
    let written = loop {
        let written = read(&dir(&s).join("z.log")).matches("/files/nope").count() as u64;
        if written + dropped >= 2000 || start.elapsed() > Duration::from_secs(5) {
            break written;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        written + dropped >= 2000,
        "written {written} + dropped {dropped}"
    );
    assert!(written < 2000);
}

/// `GET /metrics` from `addr`: the status line and the body.
fn scrape(addr: SocketAddr, path: &str) -> (String, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: m\r\n\r\n").unwrap();
    let mut all = String::new();
    c.read_to_string(&mut all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

/// Parses Prometheus text with Python's `prometheus_client` and prints `name{labels} value`
/// per sample, one per line.
const PARSE: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        print(f"{family.type} {s.name}{{{labels}}} {float(s.value)}")
"#;

/// `python3` able to import `prometheus_client`: the system's, or one with the package
/// installed (once per test run) into `target/python` from PyPI.
fn python_with_prometheus_client() -> std::process::Command {
    static PATH: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    let extra = PATH.get_or_init(|| {
        let has = |path: Option<&Path>| {
            let mut c = std::process::Command::new("python3");
            if let Some(p) = path {
                c.env("PYTHONPATH", p);
            }
            c.args(["-c", "import prometheus_client"])
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if has(None) {
            return None;
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/python");
        if !has(Some(&dir)) {
            let status = std::process::Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "--target"])
                .arg(&dir)
                .arg("prometheus_client")
                .status()
                .expect("python3 -m pip");
            assert!(
                status.success(),
                "pip install prometheus_client into {dir:?} failed"
            );
        }
        Some(dir)
    });
    let mut c = std::process::Command::new("python3");
    if let Some(dir) = extra {
        c.env("PYTHONPATH", dir);
    }
    c
}

fn metrics_parse_as_prometheus_text(d: Driver) {
    let site = Site::new();
    site.file("f.txt", "0123456789");
    let up = Upstream::start();
    let addr = free_addr();
    let metrics = free_addr();
    let admin = format!("metrics_listen = \"{metrics}\"");
    let _server =
        Server::start_with_config(d, addr, &config(addr, &site, Some(up.addr), "", &admin));
    for _ in 0..3 {
        exchange(addr, "/files/f.txt");
    }
    exchange(addr, "/api/y");
    let (head, body) = scrape(metrics, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let mut py = python_with_prometheus_client()
        .args(["-c", PARSE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    py.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = py.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "prometheus_client could not parse /metrics ({stderr}):\n{body}"
    );
    let samples = String::from_utf8_lossy(&out.stdout);
    for sample in [
        "counter zerocopy_requests_total{backend=\"File\",route=\"h/files\"} 3.0",
        "counter zerocopy_responses_total{backend=\"File\",class=\"2xx\",route=\"h/files\"} 3.0",
        "counter zerocopy_requests_total{backend=\"Proxy\",route=\"h/api\"} 1.0",
        "histogram zerocopy_request_duration_seconds_count{backend=\"File\",route=\"h/files\"} 3.0",
        "histogram zerocopy_request_duration_seconds_bucket{backend=\"File\",le=\"+Inf\",route=\"h/files\"} 3.0",
        // 4 exchanges and the harness's start-up probe (the open gauge may still count a
        // connection the client saw close, so it is only checked for its type).
        "counter zerocopy_connections_total{} 5.0",
        "counter zerocopy_reloads_total{result=\"succeeded\"} 0.0",
        "counter zerocopy_log_lines_dropped_total{} 0.0",
    ] {
        assert!(samples.lines().any(|l| l == sample), "{sample}\nnot in:\n{samples}");
    }
    assert!(
        samples
            .lines()
            .any(|l| l.starts_with("gauge zerocopy_connections_open{} ")),
        "{samples}"
    );
    assert!(
        samples
            .lines()
            .any(|l| l.starts_with("gauge zerocopy_connections_parked{} ")),
        "{samples}"
    );
    // One request, over a new connection (connections opened per 1,000 requests is
    // 1000 * connects / requests).
    for series in ["upstream_connects", "upstream_requests"] {
        let upstream = format!(
            "counter zerocopy_{series}_total{{upstream=\"http://{}:{}\"}} 1.0",
            up.addr.ip(),
            up.addr.port()
        );
        assert!(
            samples.lines().any(|l| l == upstream),
            "{upstream}\nnot in:\n{samples}"
        );
    }
    // Only /metrics is served.
    assert!(scrape(metrics, "/other").0.starts_with("HTTP/1.1 404"));
}

crate::both_drivers!(
    level_filters_and_changes_live,
    access_log_combined,
    access_log_json,
    access_log_bytes_are_body_bytes,
    logs_rotate_at_max_log_size,
    sigusr1_reopens_the_log_files,
    stats_match_the_requests_sent,
    dropped_log_lines_are_counted,
    metrics_parse_as_prometheus_text,
);

//! Operations end to end: request ids (generated, kept only from trusted peers, at the
//! upstream, in the response, the access log and the error log), W3C trace context (kept,
//! started, malformed ones replaced), spans received by an OTLP/HTTP receiver that decodes
//! them with the OpenTelemetry project's Python types, a dead collector, and the probes
//! `/healthz` and `/readyz` (503 from the first moment of a drain).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::both_drivers;
use crate::common::{free_addr, Driver, Response, Server};
use crate::upstream::{header_values, report, Upstream};

both_drivers! {
    request_ids_are_generated_kept_from_trusted_peers_and_everywhere,
    trace_context_is_kept_from_trusted_peers_else_started,
    sampled_spans_reach_an_otlp_collector,
    a_dead_collector_drops_spans_and_requests_go_on,
    probes_answer_and_readyz_fails_at_the_start_of_a_drain,
}

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A daemon with `/api` (untrusted peers) and `/trusted` (127.0.0.0/8 trusted) proxied to
/// `up`, a JSON access log, and `extra` appended (a `[tracing]` table, say).
fn start(d: Driver, up: SocketAddr, admin: &str, extra: &str) -> Server {
    let addr = free_addr();
    let toml = format!(
        "[server]\nlisten = \"{addr}\"\nthreads = 1\n\n[logging]\nlevel = \"debug\"\n\
         flush_interval_ms = 1\naccess_log = \"{{dir}}/access.log\"\naccess_log_format = \"json\"\n\n\
         [admin]\nsocket = \"{{dir}}/admin.sock\"\n{admin}\n\n{extra}\n\n[path_routes.\"h\"]\n\
         \"/api\" = {{ type = \"Proxy\", url = \"http://{up}\" }}\n\
         \"/trusted\" = {{ type = \"Proxy\", url = \"http://{up}\", security = {{ trusted_proxies = [\"127.0.0.0/8\"] }} }}\n"
    );
    Server::start_with_config(d, addr, &toml)
}

fn get(s: &Server, path: &str, fields: &str) -> Response {
    s.raw(format!("GET {path} HTTP/1.1\r\nHost: h\r\n{fields}Connection: close\r\n\r\n").as_bytes())
}

fn is_id(v: &str) -> bool {
    v.len() == 32
        && v.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The access log's JSON lines, once it has `n`.
fn access_lines(s: &Server, n: usize) -> Vec<Value> {
    let path = s.config_path.parent().unwrap().join("access.log");
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().count() >= n || start.elapsed() > Duration::from_secs(5) {
            return text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn request_ids_are_generated_kept_from_trusted_peers_and_everywhere(d: Driver) {
    let up = Upstream::start();
    let s = start(d, up.addr, "", "");
    // None sent: one is made, and the upstream, the response and the log all have it.
    let r = get(&s, "/api/a", "");
    let id = r
        .header("x-request-id")
        .expect("an id in the response")
        .to_string();
    assert!(is_id(&id), "{id}");
    assert_eq!(header_values(&report(&r), "x-request-id"), vec![id.clone()]);
    // From an untrusted peer, a client's id is replaced (once, not added to).
    let r = get(&s, "/api/b", "X-Request-Id: client-chosen\r\n");
    let replaced = r.header("x-request-id").unwrap().to_string();
    assert!(is_id(&replaced) && replaced != id, "{replaced}");
    assert_eq!(
        header_values(&report(&r), "x-request-id"),
        vec![replaced.clone()]
    );
    // From a trusted one it is kept — when it is a sane token.
    let r = get(&s, "/trusted/c", "X-Request-Id: lb-7f3a-01\r\n");
    assert_eq!(r.header("x-request-id"), Some("lb-7f3a-01"));
    assert_eq!(
        header_values(&report(&r), "x-request-id"),
        vec!["lb-7f3a-01"]
    );
    let r = get(&s, "/trusted/d", "X-Request-Id: a\"quote\r\n");
    assert!(is_id(r.header("x-request-id").unwrap()));
    // The daemon's own answers carry one too, and its error log line names it.
    let r = get(&s, "/nowhere", "");
    assert_eq!(r.status, 404);
    let missing = r.header("x-request-id").unwrap().to_string();
    assert!(is_id(&missing));
    let log = s.wait_log(&format!("request_id={missing}"));
    assert!(
        log.lines()
            .any(|l| l.contains("404") && l.contains(&format!("request_id={missing}"))),
        "{log}"
    );
    // A head too malformed to route still gets an id (its 400, its log line).
    let r = s.raw(b"GET /x HTTP/1.1\r\nHost: h\r\nBad Header: x\r\n\r\n");
    assert_eq!(r.status, 400);
    let bad = r.header("x-request-id").unwrap().to_string();
    let lines = access_lines(&s, 6);
    let ids: Vec<&str> = lines
        .iter()
        .map(|l| l["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids[0], id);
    assert_eq!(ids[1], replaced);
    assert_eq!(ids[2], "lb-7f3a-01");
    assert_eq!(ids[4], missing);
    assert_eq!(ids[5], bad);

    // `request_id_header = ""` turns them off: the client's field goes on untouched.
    let up2 = Upstream::start();
    let off = start(d, up2.addr, "", "").reconfigure_server("request_id_header = \"\"");
    let r = get(&off, "/api/e", "X-Request-Id: mine\r\n");
    assert_eq!(r.header("x-request-id"), None);
    assert_eq!(header_values(&report(&r), "x-request-id"), vec!["mine"]);
}

trait Reconfigure {
    fn reconfigure_server(self, line: &str) -> Server;
}

impl Reconfigure for Server {
    /// The same config with `line` added to `[server]`, reloaded.
    fn reconfigure_server(self, line: &str) -> Server {
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        let generation = self.generation();
        std::fs::write(
            &self.config_path,
            text.replacen("threads = 1\n", &format!("threads = 1\n{line}\n"), 1),
        )
        .unwrap();
        self.proxyctl(&["reload"]);
        self.wait_generation(generation + 1);
        self
    }
}

fn trace_context_is_kept_from_trusted_peers_else_started(d: Driver) {
    let up = Upstream::start();
    let s = start(d, up.addr, "", "");
    let fields = format!("traceparent: {TP}\r\ntracestate: vendor=1\r\n");
    // Trusted, and nothing exported: both go on exactly as they came.
    let r = report(&get(&s, "/trusted/a", &fields));
    assert_eq!(header_values(&r, "traceparent"), vec![TP]);
    assert_eq!(header_values(&r, "tracestate"), vec!["vendor=1"]);
    // A kept trace spans many requests: this one's id is its own.
    let id = header_values(&r, "x-request-id").remove(0);
    assert!(is_id(&id) && id != TP[3..35], "{id}");
    // Untrusted: a new trace, and the untrusted tracestate is dropped.
    let r = report(&get(&s, "/api/b", &fields));
    let tp = header_values(&r, "traceparent");
    assert_eq!(tp.len(), 1);
    assert_ne!(&tp[0][3..35], &TP[3..35], "{tp:?}");
    assert!(
        tp[0].starts_with("00-") && tp[0].ends_with("-00"),
        "unsampled: {tp:?}"
    );
    assert!(header_values(&r, "tracestate").is_empty());
    assert_eq!(header_values(&r, "x-request-id"), vec![&tp[0][3..35]]);
    // Trusted but malformed (upper-case hex): replaced, its tracestate dropped.
    let bad = format!(
        "traceparent: {}\r\ntracestate: vendor=1\r\n",
        TP.to_uppercase()
    );
    let r = report(&get(&s, "/trusted/c", &bad));
    let tp = header_values(&r, "traceparent");
    assert_eq!(tp.len(), 1);
    assert_ne!(tp[0].to_lowercase(), TP);
    assert!(header_values(&r, "tracestate").is_empty());
    // None at all: a trace starts.
    let r = report(&get(&s, "/api/d", ""));
    let tp = header_values(&r, "traceparent");
    assert_eq!(tp.len(), 1, "{r}");
    assert_eq!(tp[0].len(), 55);
    // propagate = false: the client's fields go on as any other, none is made.
    let up2 = Upstream::start();
    let off = start(d, up2.addr, "", "[tracing]\npropagate = false\n");
    let r = report(&get(&off, "/api/e", &fields));
    assert_eq!(header_values(&r, "traceparent"), vec![TP]);
    let r = report(&get(&off, "/api/f", ""));
    assert!(header_values(&r, "traceparent").is_empty());
}

/// The test's OTLP/HTTP receiver (`otlp_receiver.py`): its address, and its process whose
/// stdout has one JSON line per span.
struct Receiver {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Receiver {
    fn start(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/otlp_receiver.py");
        let child = crate::h2::python()
            .arg(script)
            .arg(&port_file)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let port = wait_port(&port_file);
        Self {
            port,
            child,
            _dir: dir,
        }
    }

    /// Reads spans until `n` have come (or 10 s pass).
    fn spans(&mut self, n: usize) -> Vec<Value> {
        let out = self.child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx
                    .send(serde_json::from_str::<Value>(&line).unwrap())
                    .is_err()
                {
                    return;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut spans = Vec::new();
        while spans.len() < n {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(s) => spans.push(s),
                Err(_) => break,
            }
        }
        spans
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_port(file: &Path) -> u16 {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if let Ok(p) = std::fs::read_to_string(file) {
            return p.trim().parse().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the OTLP receiver did not start");
}

fn sampled_spans_reach_an_otlp_collector(d: Driver) {
    let mut receiver = Receiver::start(&[]);
    let up = Upstream::start();
    let tracing = format!(
        "[tracing]\nsample_ratio = 1.0\notlp_endpoint = \"http://127.0.0.1:{}/v1/traces\"\n\
         service_name = \"edge-test\"\nexport_interval_ms = 100\n",
        receiver.port
    );
    let s = start(d, up.addr, "", &tracing);
    // A new trace (sampled at ratio 1), and a trusted peer's sampled one.
    let new = report(&get(&s, "/api/new?q=1", "User-Agent: e2e\r\n"));
    let new_tp = header_values(&new, "traceparent").remove(0);
    let fields = format!("traceparent: {TP}\r\ntracestate: vendor=1\r\n");
    let kept = report(&get(&s, "/trusted/kept", &fields));
    let kept_tp = header_values(&kept, "traceparent").remove(0);
    // Exported: same trace, this request's span is the upstream's parent; tracestate kept.
    assert_eq!(&kept_tp[..36], &TP[..36]);
    assert_ne!(&kept_tp[36..52], &TP[36..52]);
    assert!(kept_tp.ends_with("-01"));
    assert_eq!(header_values(&kept, "tracestate"), vec!["vendor=1"]);
    let spans = receiver.spans(2);
    assert_eq!(spans.len(), 2, "{spans:?}");
    let by_trace = |t: &str| {
        spans
            .iter()
            .find(|s| s["trace_id"] == t)
            .unwrap_or_else(|| panic!("no span of trace {t}: {spans:?}"))
    };
    let a = by_trace(&new_tp[3..35]);
    assert_eq!(a["span_id"], &new_tp[36..52]);
    assert_eq!(a["parent_span_id"], "");
    assert_eq!(a["name"], "GET /api");
    assert_eq!(a["kind"], 2, "SPAN_KIND_SERVER");
    assert_eq!(a["scope"], "zerocopy-server");
    assert_eq!(a["resource"]["service.name"], "edge-test");
    let attrs = &a["attributes"];
    assert_eq!(attrs["http.request.method"], "GET");
    assert_eq!(attrs["url.path"], "/api/new");
    assert_eq!(attrs["url.query"], "q=1");
    assert_eq!(attrs["http.route"], "/api");
    assert_eq!(attrs["http.response.status_code"], 200);
    assert_eq!(attrs["user_agent.original"], "e2e");
    assert_eq!(attrs["zerocopy.upstream.address"], up.addr.to_string());
    assert_eq!(
        attrs["zerocopy.request_id"],
        &new_tp[3..35],
        "a new trace's id is the request's"
    );
    assert!(a["end"].as_u64().unwrap() >= a["start"].as_u64().unwrap());
    let b = by_trace(&TP[3..35]);
    assert_eq!(
        b["parent_span_id"],
        &TP[36..52],
        "the trusted peer's span is the parent"
    );
    assert_eq!(b["span_id"], &kept_tp[36..52]);
    let stats = s.proxyctl_json(&["stats"]);
    assert_eq!(
        stats["tracing"]["spans_exported"], 2,
        "{}",
        stats["tracing"]
    );
}

fn a_dead_collector_drops_spans_and_requests_go_on(d: Driver) {
    // A collector that takes a second to answer each export, with a 503.
    let receiver = Receiver::start(&["--status", "503", "--delay", "1"]);
    let up = Upstream::start();
    let tracing = format!(
        "[tracing]\nsample_ratio = 1.0\notlp_endpoint = \"http://127.0.0.1:{}/v1/traces\"\n\
         export_interval_ms = 100\nexport_batch_size = 2\nexport_queue_size = 4\n",
        receiver.port
    );
    let s = start(d, up.addr, "", &tracing);
    // No request waits for the exporter (each export takes a second).
    for i in 0..40 {
        let started = Instant::now();
        assert_eq!(get(&s, &format!("/api/{i}"), "").status, 200);
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "request {i} took {took:?}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let tracing = loop {
        let t = s.proxyctl_json(&["stats"])["tracing"].clone();
        let dropped = t["spans_dropped_queue_full"].as_u64().unwrap()
            + t["spans_dropped_export_failed"].as_u64().unwrap();
        if dropped == 40 || Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(tracing["spans_exported"], 0, "{tracing}");
    assert!(
        tracing["export_failures"].as_u64().unwrap() >= 1,
        "{tracing}"
    );
    assert!(
        tracing["spans_dropped_queue_full"].as_u64().unwrap() >= 1,
        "{tracing}"
    );
    assert!(
        s.log().contains("not exported to http://127.0.0.1"),
        "{}",
        s.log()
    );
}

/// `GET path` on the metrics listener: status and body.
fn probe(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    let status = out.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

fn probes_answer_and_readyz_fails_at_the_start_of_a_drain(d: Driver) {
    let up = Upstream::start();
    let metrics = free_addr();
    let mut s = start(d, up.addr, &format!("metrics_listen = \"{metrics}\""), "");
    assert_eq!(probe(metrics, "/healthz"), (200, "ok\n".into()));
    assert_eq!(probe(metrics, "/readyz"), (200, "ready\n".into()));
    // A slow request keeps the drain going.
    let addr = s.addr;
    let slow = std::thread::spawn(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"GET /api/slow/1500 HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap();
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        out
    });
    std::thread::sleep(Duration::from_millis(300));
    s.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut ready = probe(metrics, "/readyz");
    while ready.0 == 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        ready = probe(metrics, "/readyz");
    }
    assert_eq!(ready, (503, "draining\n".into()));
    // Alive while draining: liveness must not kill a process finishing its requests.
    assert_eq!(probe(metrics, "/healthz"), (200, "ok (draining)\n".into()));
    let out = slow.join().unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0));
}

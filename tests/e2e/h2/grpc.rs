//! gRPC end to end with Python `grpcio` on both sides: unary (with trailers), server
//! streaming, client streaming, bidirectional in lock step, a deadline that reaches the
//! server as `grpc-timeout`, an error status passed through, and a client's cancellation
//! reaching the server — through an h2c upstream and through a TLS one (with a TLS client);
//! and the daemon's own errors as gRPC statuses: 14 when the upstream is down, 4 when it is
//! too slow, 8 over a rate limit.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::h2c;
use crate::both_drivers;
use crate::common::{Driver, Server};

const GRPC_PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/h2/grpc_peer.py");

/// A gRPC server (`grpc_peer.py serve`), stopped when dropped.
struct GrpcServer {
    child: Child,
    port: u16,
    events: PathBuf,
    _dir: tempfile::TempDir,
}

impl GrpcServer {
    /// `tls`: the certificate and key files it serves with.
    fn start(tls: Option<(&std::path::Path, &std::path::Path)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("events.txt");
        let mut cmd = super::python();
        cmd.args([GRPC_PEER, "serve"]).arg(&events);
        if let Some((cert, key)) = tls {
            cmd.arg("--tls").arg(cert).arg(key);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run python3 (pip install grpcio)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("grpc server: {line:?}"));
        Self {
            child,
            port,
            events,
            _dir: dir,
        }
    }

    /// The events it noted, once `want` is among them (or 5 s passed).
    fn events(&self, want: &str) -> String {
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&self.events).unwrap_or_default();
            if text.contains(want) || start.elapsed() > Duration::from_secs(5) {
                return text;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `grpc_peer.py call` against `s` with `args`.
fn call(s: &Server, args: &[&str]) -> Value {
    let out = super::python()
        .args([GRPC_PEER, "call", &s.addr.to_string()])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "grpc call: {e}: {text}\n{}\ndaemon:\n{}",
            String::from_utf8_lossy(&out.stderr),
            s.log()
        )
    })
}

/// Every kind of call went through, and the server saw the deadline and the cancellation.
fn assert_all_calls(r: &Value, server: &GrpcServer) {
    assert_eq!(r["unary"], "echo:hi", "{r}");
    assert_eq!(r["unary_trailer"], "unary", "trailing metadata: {r}");
    assert_eq!(
        r["server_stream"],
        serde_json::json!(["part-0", "part-1", "part-2", "part-3", "part-4"])
    );
    assert_eq!(r["client_stream"], "a+b+c");
    assert_eq!(
        r["bidi"],
        serde_json::json!(["re:one", "re:two", "re:three"])
    );
    assert_eq!(
        r["bidi_lockstep"], true,
        "each answer before the next message: {r}"
    );
    assert_eq!(r["deadline"], 4, "DEADLINE_EXCEEDED: {r}");
    assert_eq!(
        r["fail"]["code"], 9,
        "the server's FAILED_PRECONDITION: {r}"
    );
    assert_eq!(r["fail"]["details"], "asked to fail");
    assert_eq!(r["cancelled_after"], 2);
    let events = server.events("cancelled");
    assert!(
        events.contains("cancelled"),
        "the cancel reached the server: {events}"
    );
    let seen = events
        .lines()
        .find_map(|l| l.strip_prefix("deadline-seen "))
        .unwrap_or("none");
    let seen: f64 = seen.parse().unwrap_or(-1.0);
    assert!(seen > 0.0 && seen <= 0.5, "grpc-timeout went up: {events}");
}

fn grpc_through_an_h2c_upstream(d: Driver) {
    let server = GrpcServer::start(None);
    let (s, _site) = h2c(
        d,
        "",
        None,
        &format!(
            "[host_routes.\"grpc.test\"]\ntype = \"Proxy\"\nurl = \"http://127.0.0.1:{}\"\n\
             upstream_protocol = \"h2\"\n",
            server.port
        ),
    );
    let r = call(&s, &["--authority", "grpc.test"]);
    assert_all_calls(&r, &server);
}

fn grpc_over_tls_both_sides(d: Driver) {
    let h = crate::tls::start(d, "", "");
    let upstream = h.pki.leaf(&["grpc.internal"]);
    crate::tls::write_pair(h.site.path(), "grpc", &upstream);
    let dir = h.site.path().to_path_buf();
    let server = GrpcServer::start(Some((&dir.join("grpc.pem"), &dir.join("grpc.key"))));
    let ca = h.pki.write_ca(&dir, "ca.pem");
    // The route and its TLS h2 group, by a reload.
    let text = std::fs::read_to_string(&h.s.config_path).unwrap().replace(
        "[path_routes.\"site.test\"]",
        &format!(
            "[upstreams.grpc]\nservers = [{{ address = \"127.0.0.1:{}\" }}]\nprotocol = \"h2\"\n\
             tls = true\nca_file = \"{}\"\ntls_server_name = \"grpc.internal\"\n\n\
             [path_routes.\"site.test\"]\n\"/test.Echo/\" = {{ type = \"Proxy\", upstream = \"grpc\", \
             upstream_path = \"/test.Echo/\" }}",
            server.port,
            ca.display()
        ),
    );
    std::fs::write(&h.s.config_path, text).unwrap();
    assert_eq!(h.s.wait_generation(2), 2, "{}", h.s.log());
    let r = call(&h.s, &["--tls", ca.to_str().unwrap(), "site.test"]);
    assert_all_calls(&r, &server);
}

fn the_daemons_errors_are_grpc_statuses(d: Driver) {
    let server = GrpcServer::start(None);
    let dead = crate::upstream::Upstream::closed_port();
    let (s, _site) = h2c(
        d,
        "",
        None,
        &format!(
            "[host_routes.\"down.test\"]\ntype = \"Proxy\"\nurl = \"http://{dead}\"\n\
             upstream_protocol = \"h2\"\n\n\
             [host_routes.\"slow.test\"]\ntype = \"Proxy\"\nurl = \"http://127.0.0.1:{p}\"\n\
             upstream_protocol = \"h2\"\nsecurity = {{ backend_response_timeout_secs = 1 }}\n\n\
             [host_routes.\"limited.test\"]\ntype = \"Proxy\"\nurl = \"http://127.0.0.1:{p}\"\n\
             upstream_protocol = \"h2\"\nsecurity = {{ rate_limit_requests_per_min = 1 }}\n",
            p = server.port
        ),
    );
    let r = call(&s, &["--authority", "down.test", "--case", "unary"]);
    assert_eq!(r["unary"]["code"], 14, "UNAVAILABLE: {r}");
    assert_eq!(
        r["unary"]["details"], "502 Bad Gateway",
        "no upstream address leaks: {r}"
    );
    let r = call(&s, &["--authority", "slow.test", "--case", "slow"]);
    assert_eq!(r["slow"]["code"], 4, "DEADLINE_EXCEEDED: {r}");
    assert_eq!(r["slow"]["details"], "504 Gateway Timeout");
    let r = call(&s, &["--authority", "limited.test", "--case", "unary"]);
    assert_eq!(r["unary"], "echo:hi");
    let r = call(&s, &["--authority", "limited.test", "--case", "unary"]);
    assert_eq!(r["unary"]["code"], 8, "RESOURCE_EXHAUSTED: {r}");
}

both_drivers!(
    grpc_through_an_h2c_upstream,
    grpc_over_tls_both_sides,
    the_daemons_errors_are_grpc_statuses,
);

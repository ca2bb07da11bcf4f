//! HTTP/2 upstreams for any client: HTTP/1.1 clients reach an h2c upstream (another daemon
//! with h2c on); streams share a few connections per server; an upstream's GOAWAY moves new
//! streams to a new connection and fails none; a refused stream goes to another server; health
//! checks speak HTTP/2.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{curl, h2c, split, PEER};
use crate::both_drivers;
use crate::common::{Driver, Server, Site};
use crate::groups::{state_of, wait_for};
use crate::upstream::pattern;

/// A daemon whose `h2.test` host route goes to group `g` (`protocol = "h2"`, `servers`, and
/// `group` keys): the client's name is kept, so an upstream daemon from [`h2c`] serves it.
fn front(d: Driver, servers: &[SocketAddr], group: &str) -> (Server, Site) {
    let list: Vec<String> = servers
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    h2c(
        d,
        "",
        None,
        &format!(
            "[upstreams.g]\nservers = [{}]\nprotocol = \"h2\"\n{group}\n\n\
             [host_routes.\"h2.test\"]\ntype = \"Proxy\"\nupstream = \"g\"\n",
            list.join(", ")
        ),
    )
}

/// curl over HTTP/1.1 for `h2.test`.
fn get(s: &Server, path: &str, extra: &[&str]) -> (String, Vec<u8>) {
    let url = format!("http://{}{path}", s.addr);
    let mut args = vec!["--http1.1", "-H", "Host: h2.test", url.as_str()];
    args.extend_from_slice(extra);
    split(&curl(&args))
}

/// The upstream daemon's HTTP/2 counters.
fn h2_stats(s: &Server) -> serde_json::Value {
    s.proxyctl_json(&["stats"])["http2"].clone()
}

fn http1_clients_reach_an_h2_upstream(d: Driver) {
    let (up, _site) = h2c(d, "", None, "");
    let (s, _fs) = front(d, &[up.addr], "");
    let (head, body) = get(&s, "/big.bin", &[]);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-length: 1048583"), "{head}");
    assert_eq!(body, pattern(1024 * 1024 + 7));
    let (head, body) = get(&s, "/big.bin", &["-r", "10-19"]);
    assert!(head.starts_with("http/1.1 206"), "{head}");
    assert_eq!(body, pattern(1024 * 1024 + 7)[10..20]);
    let (head, body) = get(&s, "/", &["-I"]);
    assert!(head.contains("content-length: 14"), "HEAD: {head}");
    assert!(!String::from_utf8_lossy(&body).contains("hello"));
    let (head, _) = get(&s, "/missing", &[]);
    assert!(head.starts_with("http/1.1 404"), "{head}");
    // And HTTP/2 clients too.
    let (head, body) = split(&super::curl_h2c(&s, "/", &[]));
    assert!(head.starts_with("http/2 200"), "{head}");
    assert_eq!(body, b"hello over h2\n");
    assert_eq!(
        h2_stats(&up)["connections_total"],
        1,
        "one connection carried all"
    );
}

fn streams_share_a_few_connections(d: Driver) {
    if !super::have("h2load") {
        return;
    }
    let (up, _site) = h2c(d, "", None, "");
    let (s, _fs) = front(d, &[up.addr], "");
    // 400 requests, 100 at a time, from 10 client connections.
    let out = Command::new("h2load")
        .args([
            "-n",
            "400",
            "-c",
            "10",
            "-m",
            "10",
            "-H",
            ":authority: h2.test",
        ])
        .arg(format!("http://{}/", s.addr))
        .output()
        .expect("run h2load (apt-get install nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("400 succeeded"), "{text}");
    let total = h2_stats(&up)["connections_total"].as_u64().unwrap();
    assert!(
        (1..=4).contains(&total),
        "a few multiplexed connections to the upstream, not one per request: {total}"
    );
}

fn an_upstream_goaway_fails_no_request(d: Driver) {
    let (up, _site) = h2c(d, "max_requests_per_connection = 3", None, "");
    let (s, _fs) = front(d, &[up.addr], "");
    for i in 0..10 {
        let (head, _) = get(&s, "/", &[]);
        assert!(head.starts_with("http/1.1 200"), "request {i}: {head}");
    }
    let total = h2_stats(&up)["connections_total"].as_u64().unwrap();
    assert!(total >= 4, "new connections after each GOAWAY: {total}");
}

/// A Python `h2` server (`peer.py h2-server MODE`), stopped when dropped.
struct PyH2(Child, SocketAddr);

impl PyH2 {
    fn start(mode: &str) -> Self {
        let mut child = super::python()
            .args([PEER, "h2-server", mode])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line.trim().parse().unwrap();
        Self(child, SocketAddr::from(([127, 0, 0, 1], port)))
    }
}

impl Drop for PyH2 {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn a_refused_stream_goes_to_another_server(d: Driver) {
    let refusing = PyH2::start("refuse");
    let serving = PyH2::start("ok");
    let (s, _fs) = front(d, &[refusing.1, serving.1], "");
    // A POST as well: a refused stream was never seen, whatever the method.
    for i in 0..6 {
        let extra: &[&str] = if i % 2 == 0 { &[] } else { &["-d", "x=1"] };
        let (head, body) = get(&s, "/", extra);
        assert!(head.starts_with("http/1.1 200"), "request {i}: {head}");
        assert_eq!(body, b"served by ok");
    }
    let stats = s.proxyctl_json(&["stats"]);
    let retries = &stats["groups"][0]["retries"];
    assert!(retries.to_string().contains("refused-stream"), "{stats}");
}

fn health_checks_speak_h2(d: Driver) {
    let (up, _site) = h2c(d, "", None, "");
    let refusing = PyH2::start("refuse");
    let (s, _fs) = front(
        d,
        &[up.addr, refusing.1],
        "[upstreams.g.health_check]\nkind = \"http\"\npath = \"/\"\nhost = \"h2.test\"\n\
         interval_ms = 100\nhealthy_threshold = 1\nunhealthy_threshold = 1\n",
    );
    assert!(
        wait_for(Duration::from_secs(5), || state_of(&s, refusing.1)
            == "unhealthy"),
        "a refused check stream fails: {}",
        s.log()
    );
    assert_eq!(state_of(&s, up.addr), "healthy");
    assert!(
        wait_for(Duration::from_secs(5), || h2_stats(&up)["streams_total"]
            .as_u64()
            .is_some_and(|n| n >= 1)),
        "checks over HTTP/2"
    );
}

/// A 304 whose end comes in an empty DATA frame has no body for an HTTP/1.1 client either: the
/// keep-alive connection carries the next request.
fn a_304_from_an_h2_upstream_has_no_body(d: Driver) {
    let up = PyH2::start("304");
    let (s, _fs) = front(d, &[up.1], "");
    let url = format!("http://{}/a", s.addr);
    let out = super::curl(&["--http1.1", "-H", "Host: h2.test", &url, &url]);
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert_eq!(text.matches("http/1.1 304").count(), 2, "{text}");
    assert!(!text.contains("transfer-encoding"), "{text}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
}

both_drivers!(
    a_304_from_an_h2_upstream_has_no_body,
    http1_clients_reach_an_h2_upstream,
    streams_share_a_few_connections,
    an_upstream_goaway_fails_no_request,
    a_refused_stream_goes_to_another_server,
    health_checks_speak_h2,
);

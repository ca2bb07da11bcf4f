//! HTTP/2 clients through Proxy routes to HTTP/1.1 upstreams: the request re-framed for
//! HTTP/1.1 (`Host` from `:authority`, cookies joined, a body of unknown length chunked), the
//! response re-framed for HTTP/2 (connection fields dropped, chunked trailers as HTTP/2
//! trailers), bodies streamed both ways, and an upstream failure as a status or a reset
//! stream.

use std::process::Command;

use serde_json::Value;

use super::{curl_h2c, h2c, peer, split};
use crate::both_drivers;
use crate::common::Driver;
use crate::upstream::{pattern, Upstream};

fn a_request_is_reframed_for_http1(d: Driver) {
    let up = Upstream::start();
    let (s, _site) = h2c(d, "", Some(up.addr), "");
    let out = curl_h2c(
        &s,
        "/app/report?q=1",
        &[
            "-H",
            "Cookie: a=1",
            "-H",
            "Cookie: b=2",
            "-H",
            "X-Custom: yes",
        ],
    );
    let (head, body) = split(&out);
    assert!(head.starts_with("http/2 200"), "{head}");
    let r: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(r["version"], "HTTP/1.1");
    assert_eq!(r["target"], "/report?q=1", "the route's prefix is stripped");
    let field = |name: &str| -> Vec<String> {
        r["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
            .map(|h| h[1].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(field("host"), ["h2.test"]);
    assert_eq!(field("cookie"), ["a=1; b=2"], "joined into one field");
    assert_eq!(field("x-custom"), ["yes"]);
    assert_eq!(field("x-forwarded-proto"), ["http"]);
    assert!(field("te").is_empty() && field("connection").is_empty());
}

fn bodies_stream_both_ways(d: Driver) {
    let up = Upstream::start();
    let (s, site) = h2c(d, "", Some(up.addr), "");
    // With a length (httpx sends content-length): 300 kB echoed through both windows.
    let url = format!("http://{}/app/echo", s.addr);
    let r = super::python()
        .args([
            "-c",
            &format!(
                "import httpx, json\n\
             c = httpx.Client(http1=False, http2=True)\n\
             body = bytes(i % 251 for i in range(300000))\n\
             r = c.post({url:?}, content=body, headers={{'host': 'h2.test'}})\n\
             print(json.dumps([r.http_version, r.status_code, r.content == body]))"
            ),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&r.stdout);
    assert_eq!(
        text.trim(),
        r#"["HTTP/2", 200, true]"#,
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let echoed = up.received().last().cloned().unwrap();
    assert_eq!(echoed["body_len"], 300000);
    assert_eq!(echoed["chunked"], false);
    // Without a length (curl -T - streams stdin): chunked to the upstream.
    let file = site.file("upload.bin", pattern(100_000));
    let out = Command::new("curl")
        .args([
            "-sS",
            "-D",
            "-",
            "--http2-prior-knowledge",
            "-H",
            "Host: h2.test",
            "-T",
            "-",
        ])
        .arg(format!("http://{}/app/echo", s.addr))
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    let (head, body) = split(&out);
    assert!(head.starts_with("http/2 200"), "{head}");
    assert_eq!(body.len(), 100_000);
    let echoed = up.received().last().cloned().unwrap();
    assert_eq!(echoed["body_len"], 100_000);
    assert_eq!(echoed["chunked"], true, "no length: chunked for HTTP/1.1");
    if super::have("nghttp") {
        // A large chunked response, and its trailer as an HTTP/2 trailer.
        let out = Command::new("nghttp")
            .args(["-v", "-H", ":authority: h2.test"])
            .arg(format!("http://{}/app/chunked/200000", s.addr))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(":status: 200"), "{text}");
        assert!(
            text.contains("x-trailer: yes"),
            "the trailer arrives: {text}"
        );
        assert!(!text.contains("transfer-encoding"), "{text}");
    }
}

fn upstream_failures_are_statuses_or_resets(d: Driver) {
    let up = Upstream::start();
    let (s, _site) = h2c(d, "", Some(up.addr), "");
    // Nothing sent yet: a status.
    let dead = Upstream::closed_port();
    let (s2, _site2) = h2c(d, "", Some(dead), "");
    let (head, _) = split(&curl_h2c(&s2, "/app/x", &[]));
    assert!(head.starts_with("http/2 502"), "{head}");
    // Cut off mid-response: the stream is reset, never complete.
    let out = curl_h2c(&s, "/app/truncate/100000", &[]);
    assert!(!out.status.success(), "curl sees the stream cut off");
    // And the connection carries other streams still (a fresh request works).
    let (head, _) = split(&curl_h2c(&s, "/app/bytes/10", &[]));
    assert!(head.starts_with("http/2 200"), "{head}");
    let url = format!("http://{}/app/bytes/5", s.addr);
    let r = peer(&["fetch", &url, "--prior-knowledge", "--host", "h2.test"]);
    assert_eq!(r[0]["status"], 200);
}

/// A declared length is held to `max_request_body_size`, not to `max_chunked_body_size`.
fn a_declared_length_is_not_a_chunked_body(d: Driver) {
    let up = Upstream::start();
    let (s, _site) = h2c(
        d,
        "",
        Some(up.addr),
        "[security]\nmax_chunked_body_size = 1000\n",
    );
    let url = format!("http://{}/app/echo", s.addr);
    let r = peer(&[
        "fetch",
        &url,
        "--prior-knowledge",
        "--host",
        "h2.test",
        "--post",
        "300000",
    ]);
    assert_eq!(r[0]["status"], 200, "{r}");
    assert_eq!(r[0]["length"], 300000);
}

fn a_declared_length_ends_with_its_last_data_frame(d: Driver) {
    let up = Upstream::start();
    let (s, _site) = h2c(d, "", Some(up.addr), "");
    for n in [1000u64, 200_000] {
        let r = super::attack(&s, "frames", &format!("/app/bytes/{n}"));
        assert_eq!(r["ended"], true, "{r}");
        let data: Vec<(u64, u64)> = r["frames"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f[0] == 0)
            .map(|f| (f[1].as_u64().unwrap(), f[2].as_u64().unwrap()))
            .collect();
        assert_eq!(data.iter().map(|(_, len)| len).sum::<u64>(), n, "{r}");
        assert!(
            data.iter().all(|&(_, len)| len > 0),
            "no empty DATA frame just to end the stream: {r}"
        );
        let (flags, _) = data.last().copied().unwrap();
        assert_eq!(flags & 1, 1, "the last DATA frame carries END_STREAM: {r}");
    }
}

both_drivers!(
    a_declared_length_ends_with_its_last_data_frame,
    a_declared_length_is_not_a_chunked_body,
    a_request_is_reframed_for_http1,
    bodies_stream_both_ways,
    upstream_failures_are_statuses_or_resets,
);

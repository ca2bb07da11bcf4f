//! Real HTTP/2 clients: curl with prior knowledge (h2c) and by ALPN over TLS, nghttp, and
//! Python's `httpx`; files with ranges, validators and `HEAD`, as HTTP/1 gets them; the access
//! log says `HTTP/2.0`; h2c is off unless configured, and `[http2] enabled = false` keeps TLS
//! clients on HTTP/1.1.

use std::process::Command;

use super::{access_log, curl, curl_h2c, h2c, peer, split};
use crate::both_drivers;
use crate::common::{free_addr, Driver, Server, Site};
use crate::upstream::pattern;

fn curl_with_prior_knowledge_gets_files_ranges_and_validators(d: Driver) {
    let (s, _site) = h2c(d, "", None, "");
    let out = curl_h2c(&s, "/", &[]);
    let (head, body) = split(&out);
    assert!(head.starts_with("http/2 200"), "{head}");
    assert_eq!(body, b"hello over h2\n");
    assert!(head.contains("content-length: 14\r\n"), "{head}");
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .expect("an ETag")
        .trim()
        .to_string();

    let (head, body) = split(&curl_h2c(&s, "/big.bin", &[]));
    assert!(head.starts_with("http/2 200"), "{head}");
    assert_eq!(
        body,
        pattern(1024 * 1024 + 7),
        "a 1 MiB file through the window"
    );

    let (head, body) = split(&curl_h2c(&s, "/big.bin", &["-r", "1000-1999"]));
    assert!(head.starts_with("http/2 206"), "{head}");
    assert!(
        head.contains("content-range: bytes 1000-1999/1048583"),
        "{head}"
    );
    assert_eq!(body, pattern(1024 * 1024 + 7)[1000..2000]);

    let inm = format!("If-None-Match: {etag}");
    let (head, body) = split(&curl_h2c(&s, "/", &["-H", &inm]));
    assert!(head.starts_with("http/2 304"), "{head}");
    assert!(body.is_empty());

    // (curl -I writes the head twice: -D and the output.)
    let (head, body) = split(&curl_h2c(&s, "/", &["-I"]));
    assert!(head.starts_with("http/2 200"), "{head}");
    assert!(
        head.contains("content-length: 14"),
        "HEAD tells the length: {head}"
    );
    assert!(!String::from_utf8_lossy(&body).contains("hello"));

    let (head, _) = split(&curl_h2c(&s, "/missing", &[]));
    assert!(head.starts_with("http/2 404"), "{head}");
    let (head, _) = split(&curl_h2c(&s, "/", &["-X", "DELETE"]));
    assert!(head.starts_with("http/2 405"), "{head}");
    assert!(head.contains("allow: get, head"), "{head}");

    // Every stream in the access log, as HTTP/2.0.
    let log = access_log(&s, 7);
    assert_eq!(log.len(), 7, "{log:?}");
    assert!(log.iter().all(|e| e["protocol"] == "HTTP/2.0"), "{log:?}");
    let statuses: Vec<u64> = log.iter().map(|e| e["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [200, 200, 206, 304, 200, 404, 405]);
    assert_eq!(log[1]["bytes"], 1024 * 1024 + 7);
    assert_eq!(log[0]["host"], "h2.test");
}

fn nghttp_and_httpx_multiplex_on_one_connection(d: Driver) {
    let (s, _site) = h2c(d, "", None, "");
    let base = format!("http://{}", s.addr);
    if super::have("nghttp") {
        // nghttp: three streams at once on one connection (-n: discard bodies, -s: stats).
        let out = Command::new("nghttp")
            .args(["-ns", "-H", ":authority: h2.test"])
            .args([
                format!("{base}/"),
                format!("{base}/big.bin"),
                format!("{base}/index.html"),
            ])
            .output()
            .expect("run nghttp (apt-get install nghttp2-client)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert_eq!(text.matches(" 200 ").count(), 3, "{text}");
    }
    // httpx with prior knowledge: ten requests on one connection.
    let r = peer(&[
        "fetch",
        &format!("{base}/"),
        "--prior-knowledge",
        "--count",
        "10",
        "--host",
        "h2.test",
    ]);
    let r = r.as_array().unwrap();
    assert_eq!(r.len(), 10);
    for one in r {
        assert_eq!(one["version"], "HTTP/2");
        assert_eq!(one["status"], 200);
        assert_eq!(one["length"], 14);
    }
}

fn alpn_chooses_h2_over_tls(d: Driver) {
    let h = crate::tls::start(d, "", "");
    let ca = h.pki.write_ca(h.site.path(), "ca.pem");
    let ca = ca.to_str().unwrap();
    let port = h.s.addr.port();
    let resolve = format!("site.test:{port}:{}", h.s.addr.ip());
    let url = format!("https://site.test:{port}/");
    let out = curl(&["--http2", "--cacert", ca, "--resolve", &resolve, &url]);
    let (head, body) = split(&out);
    assert!(head.starts_with("http/2 200"), "{head}");
    assert_eq!(body, b"hello over tls\n");
    // A 3 MiB file: read in pieces and encrypted by rustls (no sendfile under HTTP/2).
    let big = format!("https://site.test:{port}/big.bin");
    let (head, body) = split(&curl(&[
        "--http2",
        "--cacert",
        ca,
        "--resolve",
        &resolve,
        &big,
    ]));
    assert!(head.starts_with("http/2 200"), "{head}");
    assert_eq!(body, pattern(3 * 1024 * 1024 + 5));
    // An HTTP/1.1-only client still gets HTTP/1.1.
    let (head, _) = split(&curl(&[
        "--http1.1",
        "--cacert",
        ca,
        "--resolve",
        &resolve,
        &url,
    ]));
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // httpx negotiates h2 too.
    let addr = format!("https://site.test:{port}/");
    let ip = h.s.addr.ip().to_string();
    let r = super::python()
        .args(["-c", &format!(
            "import httpx, json\n\
             t = httpx.HTTPTransport(http2=True, verify={ca:?})\n\
             import socket\n\
             orig = socket.getaddrinfo\n\
             socket.getaddrinfo = lambda h, *a, **k: orig({ip:?} if h == 'site.test' else h, *a, **k)\n\
             r = httpx.Client(transport=t).get({addr:?})\n\
             print(json.dumps([r.http_version, r.status_code, r.text]))"
        )])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&r.stdout);
    assert_eq!(
        text.trim(),
        r#"["HTTP/2", 200, "hello over tls\n"]"#,
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
}

fn enabled_false_keeps_tls_on_http1(d: Driver) {
    let h = crate::tls::start(d, "", "[http2]\nenabled = false\n");
    let ca = h.pki.write_ca(h.site.path(), "ca.pem");
    let port = h.s.addr.port();
    let resolve = format!("site.test:{port}:{}", h.s.addr.ip());
    let url = format!("https://site.test:{port}/");
    let out = curl(&[
        "--http2",
        "--cacert",
        ca.to_str().unwrap(),
        "--resolve",
        &resolve,
        &url,
    ]);
    let (head, body) = split(&out);
    assert!(
        head.starts_with("http/1.1 200"),
        "ALPN offers only http/1.1: {head}"
    );
    assert_eq!(body, b"hello over tls\n");
}

fn h2c_is_off_unless_configured(d: Driver) {
    let site = Site::new();
    site.file("www/index.html", "x");
    let s = Server::start(
        d,
        &site,
        "[host_routes.\"h2.test\"]\npath = \"{site}/www\"\n",
    );
    let out = curl_h2c(&s, "/", &[]);
    let (head, _) = split(&out);
    assert!(!head.starts_with("http/2"), "{head}");
    // An HTTP/1 client is unaffected, and so is an `Upgrade: h2c` (ignored, RFC 9113).
    let url = format!("http://{}/", s.addr);
    let (head, body) = split(&curl(&["--http2", "-H", "Host: h2.test", &url]));
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, b"x");
    let _ = free_addr();
}

fn upgrade_h2c_is_ignored_when_h2c_is_on(d: Driver) {
    let (s, _site) = h2c(d, "", None, "");
    let url = format!("http://{}/", s.addr);
    // curl --http2 on plain HTTP asks for `Upgrade: h2c`: answered as HTTP/1.1.
    let (head, body) = split(&curl(&["--http2", "-H", "Host: h2.test", &url]));
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, b"hello over h2\n");
}

/// Connection coalescing: over a connection whose certificate covers `a.test` and `b.test`,
/// both are served; `c.test` (another certificate's name) gets `421 Misdirected Request`.
fn coalescing_stays_within_the_certificate(d: Driver) {
    let h = crate::tls::start(d, "", "");
    let both = h.pki.leaf(&["a.test", "b.test"]);
    let other = h.pki.leaf(&["c.test"]);
    crate::tls::write_pair(h.site.path(), "both", &both);
    crate::tls::write_pair(h.site.path(), "other", &other);
    let dir = h.site.path().display().to_string();
    let text = std::fs::read_to_string(&h.s.config_path).unwrap().replace(
        "[path_routes",
        &format!(
            "[[tls.certificates]]\ncert_path = \"{dir}/both.pem\"\nkey_path = \"{dir}/both.key\"\n\
             server_names = [\"a.test\", \"b.test\"]\n\n\
             [[tls.certificates]]\ncert_path = \"{dir}/other.pem\"\nkey_path = \"{dir}/other.key\"\n\
             server_names = [\"c.test\"]\n\n\
             [host_routes.\"a.test\"]\npath = \"{dir}/www\"\n\
             [host_routes.\"b.test\"]\npath = \"{dir}/www\"\n\
             [host_routes.\"c.test\"]\npath = \"{dir}/www\"\n\n\
             [path_routes",
        ),
    );
    std::fs::write(&h.s.config_path, text).unwrap();
    assert_eq!(h.s.wait_generation(2), 2, "{}", h.s.log());
    let ca = h.pki.write_ca(h.site.path(), "ca.pem");
    let (ip, port) = (h.s.addr.ip().to_string(), h.s.addr.port().to_string());
    let ca = ca.to_str().unwrap();
    let r = peer(&[
        "coalesce", &ip, &port, ca, "a.test", "a.test", "b.test", "c.test",
    ]);
    assert_eq!(
        r,
        serde_json::json!({"a.test": 200, "b.test": 200, "c.test": 421})
    );
    // The same over a connection for c.test: a.test is the misdirected one.
    let r = peer(&["coalesce", &ip, &port, ca, "c.test", "c.test", "a.test"]);
    assert_eq!(r, serde_json::json!({"c.test": 200, "a.test": 421}));
}

both_drivers!(
    curl_with_prior_knowledge_gets_files_ranges_and_validators,
    nghttp_and_httpx_multiplex_on_one_connection,
    alpn_chooses_h2_over_tls,
    enabled_false_keeps_tls_on_http1,
    h2c_is_off_unless_configured,
    upgrade_h2c_is_ignored_when_h2c_is_on,
    coalescing_stays_within_the_certificate,
);

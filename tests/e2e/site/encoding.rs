//! Precompressed variants of File routes and compression on the fly: the coding chosen by
//! `Accept-Encoding`, `Vary`, variant validators, ranges, HEAD and 304, decoded by real clients
//! (curl `--compressed`, Python httpx with its brotli and zstandard decoders) into the original
//! bytes.

use std::io::Read;
use std::process::Command;

use super::{all, get_with};
use crate::common::{Driver, Response, Server, Site};
use crate::upstream::{text, Upstream};

/// Decodes a body by its `Content-Encoding`.
fn decode(r: &Response) -> Vec<u8> {
    let mut out = Vec::new();
    match r.header("content-encoding") {
        None => out = r.body.clone(),
        Some("gzip") => {
            flate2::read::GzDecoder::new(&r.body[..])
                .read_to_end(&mut out)
                .unwrap();
        }
        Some("br") => {
            brotli::Decompressor::new(&r.body[..], 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        Some("zstd") => out = zstd::stream::decode_all(&r.body[..]).unwrap(),
        Some(other) => panic!("unexpected coding {other}"),
    }
    out
}

fn ae(s: &Server, path: &str, accept: &str) -> Response {
    get_with(s, "site.test", path, &[("Accept-Encoding", accept)])
}

/// `x.css.br`, `.zst` and `.gz` beside `x.css`, chosen in the route's order among what the
/// client accepts; the original's type, the variant's length, its own ETag; ranges and
/// conditionals on the variant; `Vary` on every answer; sendfile and memory modes alike.
fn precompressed_variants(d: Driver) {
    let site = Site::new();
    let css = text(50_000);
    site.file("www/x.css", &css);
    let br = brotli_of(&css);
    let gz = gzip_of(&css);
    site.file("www/x.css.br", &br);
    site.file("www/x.css.gz", &gz);
    let zst = zstd::stream::encode_all(&css[..], 19).unwrap();
    site.file("www/x.css.zst", &zst);
    site.file("www/only.js", "plain();");
    let s = Server::start(
        d,
        &site,
        r#"
[path_routes."site.test"."/"]
path = "{site}/www"
precompressed = ["br", "zstd", "gzip"]

[path_routes."site.test"."/mem/"]
path = "{site}/www"
mode = "memory"
precompressed = ["gzip", "br"]
"#,
    );
    let r = ae(&s, "/x.css", "gzip, deflate, br, zstd");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert_eq!(r.header("content-type"), Some("text/css"));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    assert_eq!(r.body, br);
    assert_eq!(decode(&r), css);
    let br_etag = r.header("etag").unwrap().to_string();
    assert!(br_etag.ends_with("-br\""), "{br_etag}");
    let r = ae(&s, "/x.css", "zstd, gzip");
    assert_eq!(r.header("content-encoding"), Some("zstd"));
    assert_eq!(r.body, zst);
    // The best the client takes that exists: no .zst in the memory route's list.
    let r = ae(&s, "/x.css", "*;q=0.5, br;q=0");
    assert_eq!(r.header("content-encoding"), Some("zstd"), "* takes zstd");
    let r = ae(&s, "/x.css", "identity;q=0, gzip");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let r = ae(&s, "/x.css", "br;q=0, gzip;q=0.5");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    // Identity: the original, still varying.
    let plain = s.get("site.test", "/x.css");
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.body, css);
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
    assert_ne!(plain.header("etag").unwrap(), br_etag);
    let r = ae(&s, "/only.js", "br");
    assert_eq!(
        (r.header("content-encoding"), r.text().as_str()),
        (None, "plain();")
    );
    // Range on the variant, and 304 by the variant's ETag.
    let r = get_with(
        &s,
        "site.test",
        "/x.css",
        &[("Accept-Encoding", "br"), ("Range", "bytes=0-9")],
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, br[..10]);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 0-9/{}", br.len()).as_str())
    );
    let r = get_with(
        &s,
        "site.test",
        "/x.css",
        &[("Accept-Encoding", "br"), ("If-None-Match", &br_etag)],
    );
    assert_eq!(r.status, 304);
    let r = s.raw(
        b"HEAD /x.css HTTP/1.1\r\nHost: site.test\r\nAccept-Encoding: br\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        r.header("content-length"),
        Some(br.len().to_string().as_str())
    );
    assert!(r.body.is_empty());
    // Memory mode: the route's own order.
    let r = ae(&s, "/mem/x.css", "br, gzip");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.body, gz);
    assert!(r.header("etag").unwrap().ends_with("-gzip\""));
    assert_eq!(s.get("site.test", "/mem/x.css").body, css);
}

/// `compress`: text from any backend compressed for the client's coding and decoded back to
/// the original by curl and httpx; small bodies, other types, ranges, HTTP/1.0, no-transform
/// and bodies already encoded stay as they are.
fn compression_on_the_fly(d: Driver) {
    let site = Site::new();
    let big = text(200_000);
    site.file("www/big.txt", &big);
    site.file("www/small.txt", "tiny");
    site.file("www/logo.png", vec![7u8; 5000]);
    let up = Upstream::start();
    let s = Server::start(
        d,
        &site,
        &format!(
            r#"
[path_routes."site.test"."/"]
path = "{{site}}/www"
compress = ["br", "zstd", "gzip"]

[path_routes."site.test"."/mem/"]
path = "{{site}}/www"
mode = "memory"
compress = ["gzip"]

[path_routes."site.test"."/api/"]
type = "Proxy"
url = "http://{up}/app/"
compress = ["zstd", "gzip"]
compress_level = {{ gzip = 1, zstd = 5 }}
"#,
            up = up.addr
        ),
    );
    for (accept, coding) in [("br", "br"), ("gzip, zstd", "zstd"), ("gzip", "gzip")] {
        let r = ae(&s, "/big.txt", accept);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding"), Some(coding), "{accept}");
        assert_eq!(r.header("vary"), Some("Accept-Encoding"));
        assert!(r.header("etag").unwrap().starts_with("W/\""), "weak");
        assert_eq!(r.header("accept-ranges"), None);
        assert!(r.body.len() < big.len() / 4);
        assert_eq!(decode(&r), big, "{accept}");
    }
    // Memory mode: compressed once at load, served with the copy's own (strong) ETag and
    // length; a range is of the original.
    let r = ae(&s, "/mem/big.txt", "br, gzip");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert!(r.header("etag").unwrap().ends_with("-gzip\""), "{r:?}");
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    assert_eq!(decode(&r), big);
    let r = get_with(
        &s,
        "site.test",
        "/mem/big.txt",
        &[("Accept-Encoding", "gzip"), ("Range", "bytes=0-4")],
    );
    assert_eq!((r.status, r.header("content-encoding")), (206, None));
    assert_eq!(r.body, big[..5]);
    let r = ae(&s, "/api/text/100000", "br, gzip");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(decode(&r), text(100_000));
    let r = ae(&s, "/api/chunked-text/300000", "zstd");
    assert_eq!(r.header("content-encoding"), Some("zstd"));
    assert_eq!(decode(&r), text(300_000));
    // Not compressed: already encoded, no-transform, too small, not a listed type, a range,
    // HTTP/1.0, no Accept-Encoding.
    let r = ae(&s, "/api/text-encoded/5000", "gzip");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.body, crate::upstream::pattern(5000), "passed as it is");
    let r = ae(&s, "/api/text-no-transform/5000", "gzip");
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.body, text(5000));
    assert_eq!(
        ae(&s, "/small.txt", "gzip").header("content-encoding"),
        None
    );
    assert_eq!(ae(&s, "/logo.png", "gzip").header("content-encoding"), None);
    let r = get_with(
        &s,
        "site.test",
        "/big.txt",
        &[("Accept-Encoding", "gzip"), ("Range", "bytes=10-19")],
    );
    assert_eq!((r.status, r.header("content-encoding")), (206, None));
    assert_eq!(r.body, big[10..20]);
    let r = super::send(
        &s,
        "GET /big.txt HTTP/1.0\r\nHost: site.test\r\nAccept-Encoding: gzip\r\n\r\n",
    );
    assert_eq!((r.status, r.header("content-encoding")), (200, None));
    assert_eq!(
        s.get("site.test", "/big.txt").header("content-encoding"),
        None
    );
    // HEAD says the coding, and no length.
    let r = super::send(
        &s,
        "HEAD /big.txt HTTP/1.1\r\nHost: site.test\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert!(r.body.is_empty());
    assert_eq!(all(&r, "vary"), vec!["Accept-Encoding"]);

    // Revalidation: the weak validator of the compressed answer gets a 304 that says it too.
    let etag = ae(&s, "/big.txt", "gzip")
        .header("etag")
        .unwrap()
        .to_string();
    let r = get_with(
        &s,
        "site.test",
        "/big.txt",
        &[("Accept-Encoding", "gzip"), ("If-None-Match", &etag)],
    );
    assert_eq!((r.status, r.header("etag")), (304, Some(etag.as_str())));
    // Two compressed (chunked) answers on one connection: each ends where it should.
    let mut w = crate::upstream::Wire::connect(s.addr);
    for path in ["/big.txt", "/api/chunked-text/50000"] {
        w.send(
            format!("GET {path} HTTP/1.1\r\nHost: site.test\r\nAccept-Encoding: gzip\r\n\r\n")
                .as_bytes(),
        );
        let r = w.response(false).to_response();
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert!(decode(&r).starts_with(b"line 0: the quick"), "{path}");
    }

    // Real clients decode it.
    let url = format!("http://{}/big.txt", s.addr);
    let out = Command::new("curl")
        .args([
            "-sS",
            "--compressed",
            "--max-time",
            "10",
            "-H",
            "Host: site.test",
            &url,
        ])
        .output()
        .expect("run curl");
    assert_eq!(out.stdout, big, "curl --compressed");
    let script = r#"
import sys, httpx, hashlib
for coding in ("br", "zstd", "gzip"):
    r = httpx.get(sys.argv[1], headers={"Host": "site.test", "Accept-Encoding": coding})
    print(coding, r.headers.get("content-encoding"), hashlib.sha256(r.content).hexdigest())
"#;
    let out = crate::h2::python()
        .args(["-c", script, &url])
        .output()
        .expect("run python3");
    let printed = String::from_utf8_lossy(&out.stdout);
    let digest = sha256_hex(&big);
    for coding in ["br", "zstd", "gzip"] {
        assert!(
            printed.contains(&format!("{coding} {coding} {digest}")),
            "{printed}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The same rules over HTTP/2 (the exchange is protocol-neutral): header rules, an error
/// page, a redirect, a compressed proxied body and a precompressed file, with curl.
fn the_features_over_http2(d: Driver) {
    let up = Upstream::start();
    let site = Site::new();
    let css = text(30_000);
    site.file("w/x.css", &css);
    site.file("w/x.css.gz", gzip_of(&css));
    site.file("404.html", "custom 404");
    let s = Server::start(
        d,
        &site,
        &format!(
            r#"
[http2]
h2c = true

[path_routes."site.test"."/"]
path = "{{site}}/w"
precompressed = ["gzip"]
error_pages = {{ "404" = "{{site}}/404.html" }}
headers = {{ set = {{ "X-Frame-Options" = "DENY" }} }}

[path_routes."site.test"."/api/"]
type = "Proxy"
url = "http://{up}/app/"
compress = ["gzip"]

[path_routes."site.test"."/old/"]
type = "Redirect"
url = "/new/{{rest}}"
"#,
            up = up.addr
        ),
    );
    let h2 = |path: &str, extra: &[&str]| {
        let url = format!("http://{}{path}", s.addr);
        let mut args = vec!["--http2-prior-knowledge", "-H", "Host: site.test", &url];
        args.extend_from_slice(extra);
        crate::h2::split(&crate::h2::curl(&args))
    };
    let (head, body) = h2("/x.css", &["--compressed"]);
    assert!(head.starts_with("http/2 200"), "{head}");
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(head.contains("x-frame-options: deny"), "{head}");
    assert_eq!(body, css);
    let (head, body) = h2("/nope", &[]);
    assert!(head.starts_with("http/2 404"), "{head}");
    assert!(head.contains("x-frame-options: deny"), "{head}");
    assert_eq!(body, b"custom 404");
    let (head, body) = h2("/api/chunked-text/100000", &["--compressed"]);
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert_eq!(body, text(100_000));
    let (head, _) = h2("/old/a%20b", &[]);
    assert!(head.starts_with("http/2 308"), "{head}");
    assert!(head.contains("location: /new/a%20b"), "{head}");
}

fn sha256_hex(data: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        })
        .expect("run sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn brotli_of(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 9, 22);
        std::io::Write::write_all(&mut w, data).unwrap();
    }
    out
}

fn gzip_of(data: &[u8]) -> Vec<u8> {
    let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut w, data).unwrap();
    w.finish().unwrap()
}

crate::both_drivers!(
    precompressed_variants,
    compression_on_the_fly,
    the_features_over_http2
);

//! Error pages (the daemon's own errors, and upstream errors with `intercept_errors`) and the
//! single-page-app fallback of File routes.

use super::get_with;
use crate::common::{Driver, Server, Site};
use crate::upstream::Upstream;

const PAGE_404: &str = "<h1>Branded 404</h1>";
const PAGE_50X: &str = "<h1>We are on it</h1>";

/// The route's pages over its host's, the status kept, the page's type; an upstream error
/// passes unchanged unless the route intercepts it.
fn error_pages_replace_the_daemons_answers(d: Driver) {
    let site = Site::new();
    site.file("www/index.html", "home");
    site.file("errors/404.html", PAGE_404);
    site.file("errors/50x.html", PAGE_50X);
    site.file("errors/403.txt", "go away\n");
    let up = Upstream::start();
    let closed = Upstream::closed_port();
    let s = Server::start(
        d,
        &site,
        &format!(
            r#"
[host_defaults."site.test"]
error_pages = {{ "404" = "{{site}}/errors/404.html", "5xx" = "{{site}}/errors/50x.html" }}
headers = {{ set = {{ "X-Host" = "1" }} }}

[host_defaults."bare.test"]
error_pages = {{ "4xx" = "{{site}}/errors/404.html" }}
headers = {{ set = {{ "X-Bare" = "1" }} }}

[path_routes."bare.test"."/only/"]
path = "{{site}}/www"

[path_routes."site.test"."/"]
path = "{{site}}/www"

[path_routes."site.test"."/private/"]
path = "{{site}}/www"
error_pages = {{ "403" = "{{site}}/errors/403.txt" }}
security = {{ allowed_ips = ["10.0.0.0/8"] }}

[path_routes."site.test"."/down/"]
type = "Proxy"
url = "http://{closed}"

[path_routes."site.test"."/api/"]
type = "Proxy"
url = "http://{up}/app/"

[path_routes."site.test"."/caught/"]
type = "Proxy"
url = "http://{up}/app/"
intercept_errors = true
"#,
            up = up.addr
        ),
    );
    for path in ["/nope.html", "/private/nope"] {
        let r = s.get("site.test", path);
        if path.starts_with("/private") {
            // The route's page for 403; policy comes before the file.
            assert_eq!(r.status, 403);
            assert_eq!(r.text(), "go away\n");
            assert_eq!(r.header("content-type"), Some("text/plain"));
            continue;
        }
        assert_eq!(r.status, 404);
        assert_eq!(r.text(), PAGE_404);
        assert_eq!(r.header("content-type"), Some("text/html"));
        assert_eq!(r.header("x-host"), Some("1"));
    }
    // No route of the host matches: the host's page.
    let r = s.get("bare.test", "/elsewhere");
    assert_eq!((r.status, r.text().as_str()), (404, PAGE_404));
    assert_eq!(r.header("x-bare"), Some("1"));
    let r = s.get("site.test", "/down/x");
    assert_eq!(r.status, 502);
    assert_eq!(r.text(), PAGE_50X);
    // Another host has no pages.
    let r = s.get("other.test", "/");
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "404 Not Found\n");
    // HEAD: the page's length, no body.
    let r = s.raw(b"HEAD /nope HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 404);
    assert_eq!(
        r.header("content-length"),
        Some(PAGE_404.len().to_string().as_str())
    );
    assert!(r.body.is_empty());

    // An upstream's own 503 passes unchanged...
    let r = s.get("site.test", "/api/status/503");
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "upstream 503\n");
    assert_eq!(r.header("x-up"), Some("1"));
    // ...unless the route intercepts it: the page, the status, Retry-After kept.
    let r = s.get("site.test", "/caught/status/503");
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), PAGE_50X);
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(r.header("x-up"), None);
    assert_eq!(r.header("x-host"), Some("1"));
    let r = s.get("site.test", "/caught/status/404");
    assert_eq!((r.status, r.text().as_str()), (404, PAGE_404));
    // A status without a page, and a success, pass.
    let r = s.get("site.test", "/caught/status/409");
    assert_eq!((r.status, r.text().as_str()), (409, "upstream 409\n"));
    assert_eq!(s.get("site.test", "/caught/bytes/5").status, 200);
    // A long (streamed) upstream error body is swallowed whole: the client's connection and
    // the upstream's both go on to the next request.
    let mut c = s.connect();
    for path in [
        "/caught/status/500",
        "/caught/status-long/502",
        "/caught/status-long/503",
    ] {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: site.test\r\n\r\n").as_bytes());
        let r = c.response(false);
        assert_eq!((r.status / 100, r.text().as_str()), (5, PAGE_50X), "{path}");
    }
    c.send(b"GET /caught/bytes/7 HTTP/1.1\r\nHost: site.test\r\n\r\n");
    assert_eq!(c.response(false).body.len(), 7);
    assert!(
        up.received().len() >= 6,
        "every request reached the upstream"
    );
}

/// `fallback = "index.html"`: client-side routes get the app, files and assets stay
/// themselves, an existing directory without an index is not a client route, and nothing
/// escapes the root; `fallback_status` changes the status; sendfile and memory modes alike.
fn spa_fallback(d: Driver) {
    let site = Site::new();
    site.file("app/index.html", "<app>");
    site.file("app/assets/app.js", "js();");
    site.mkdir("app/empty");
    site.file("secret.txt", "outside");
    let s = Server::start(
        d,
        &site,
        r#"
[path_routes."site.test"."/"]
path = "{site}/app"
fallback = "index.html"

[path_routes."site.test"."/mem/"]
path = "{site}/app"
mode = "memory"
fallback = "index.html"

[path_routes."site.test"."/soft404/"]
path = "{site}/app"
fallback = "index.html"
fallback_status = 404
"#,
    );
    for prefix in ["", "/mem"] {
        let r = s.get("site.test", &format!("{prefix}/users/42/settings"));
        assert_eq!((r.status, r.text().as_str()), (200, "<app>"), "{prefix}");
        assert_eq!(r.header("content-type"), Some("text/html"));
        let r = s.get("site.test", &format!("{prefix}/assets/app.js"));
        assert_eq!((r.status, r.text().as_str()), (200, "js();"), "{prefix}");
        let r = s.get("site.test", &format!("{prefix}/empty/"));
        assert_eq!(r.status, 404, "{prefix}: a directory is not a client route");
        // Conditional requests work on the fallback.
        let etag = s
            .get("site.test", &format!("{prefix}/x"))
            .header("etag")
            .unwrap()
            .to_string();
        let r = get_with(
            &s,
            "site.test",
            &format!("{prefix}/y"),
            &[("If-None-Match", &etag)],
        );
        assert_eq!(r.status, 304, "{prefix}");
    }
    let r = s.get("site.test", "/soft404/no/such/page");
    assert_eq!((r.status, r.text().as_str()), (404, "<app>"));
    let r = get_with(&s, "site.test", "/soft404/z", &[("Range", "bytes=0-1")]);
    assert_eq!((r.status, r.text().as_str()), (404, "<app>"), "no range");
}

/// `autoindex = true`: an HTML listing of a directory without an index (names escaped,
/// sorted, directories first, no dotfiles unless asked), JSON for `Accept: application/json`,
/// a redirect to the trailing slash; a directory with an index is served as before; memory
/// mode too. Off by default.
fn directory_listings(d: Driver) {
    let site = Site::new();
    site.file("pub/b.txt", "bb");
    site.file("pub/a <&> b.txt", "a");
    site.file("pub/.secret", "s");
    site.file("pub/sub/x.txt", "x");
    site.file("pub/withindex/index.html", "idx");
    std::os::unix::fs::symlink("/etc", site.path().join("pub/escape")).unwrap();
    let s = Server::start(
        d,
        &site,
        r#"
[path_routes."site.test"."/files/"]
path = "{site}/pub"
autoindex = true

[path_routes."site.test"."/all/"]
path = "{site}/pub"
autoindex = true
autoindex_hidden = true

[path_routes."site.test"."/mem/"]
path = "{site}/pub"
mode = "memory"
autoindex = true

[path_routes."site.test"."/off/"]
path = "{site}/pub"
"#,
    );
    for prefix in ["/files", "/mem"] {
        let r = s.get("site.test", &format!("{prefix}/"));
        assert_eq!(r.status, 200, "{prefix}");
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        let page = r.text();
        assert!(page.contains(&format!("Index of {prefix}/")), "{page}");
        assert!(
            page.contains("<a href=\"a%20%3C%26%3E%20b.txt\">a &lt;&amp;&gt; b.txt</a>"),
            "{page}"
        );
        let (sub, a, b) = (
            page.find("sub/</a>").unwrap(),
            page.find("a &lt;").unwrap(),
            page.find(">b.txt</a>").unwrap(),
        );
        assert!(sub < a && a < b, "directories first, then by name: {page}");
        assert!(!page.contains(".secret"), "{page}");
        assert!(
            !page.contains("escape"),
            "a symlink out of the root: {page}"
        );
        let r = get_with(
            &s,
            "site.test",
            &format!("{prefix}/sub/"),
            &[("Accept", "application/json")],
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(j[0]["name"], "x.txt");
        assert_eq!(j[0]["type"], "file");
        assert_eq!(j[0]["size"], 1);
        let r = s.get("site.test", &format!("{prefix}/sub?x=1"));
        assert_eq!(r.status, 301, "{prefix}");
        assert_eq!(
            r.header("location"),
            Some(format!("{prefix}/sub/?x=1").as_str())
        );
        assert_eq!(
            s.get("site.test", &format!("{prefix}/withindex/")).text(),
            "idx"
        );
    }
    assert!(s.get("site.test", "/all/").text().contains(".secret"));
    // A dot-directory is not listed by name either; the redirect is to the routed path.
    site.file("pub/.git/config", "x");
    assert_eq!(s.get("site.test", "/files/.git/").status, 404);
    let r = s.get("site.test", "//files//sub");
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some("/files/sub/"),
        "never //…, another host"
    );
    assert_eq!(s.get("site.test", "/off/").status, 404, "off by default");
    assert_eq!(s.get("site.test", "/off/sub/").status, 404);
}

crate::both_drivers!(
    error_pages_replace_the_daemons_answers,
    spa_fallback,
    directory_listings
);

//! What a site needs from its routes: header rules, Redirect and Respond routes (here), error
//! pages and the SPA fallback ([`pages`]), precompressed files and compression on the fly
//! ([`encoding`]), and the config's refusals and `explain` ([`checks`]).

mod checks;
mod encoding;
mod pages;

use crate::common::{Driver, Response, Server, Site};
use crate::upstream::{header_values, report, Upstream};

/// A request with extra header lines, on a fresh connection; a chunked body is de-chunked.
pub fn get_with(s: &Server, host: &str, target: &str, headers: &[(&str, &str)]) -> Response {
    let mut raw = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (n, v) in headers {
        raw.push_str(&format!("{n}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    send(s, &raw)
}

/// Sends `raw` on a fresh connection and reads the response by its framing.
pub fn send(s: &Server, raw: &str) -> Response {
    let mut w = crate::upstream::Wire::connect(s.addr);
    w.send(raw.as_bytes());
    let r = w.response(raw.starts_with("HEAD "));
    assert!(r.complete, "{r:?}");
    r.to_response()
}

/// Every value of a response header.
pub fn all(r: &Response, name: &str) -> Vec<String> {
    r.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .collect()
}

/// HSTS and friends on every response of a host, a route's own rules over its host's, the
/// daemon's own 404s included (or not, with `headers_on_errors = false`), upstream fields
/// replaced, and `request_headers` on what the upstream gets.
fn header_rules_apply_to_every_response(d: Driver) {
    let site = Site::new();
    site.file("www/index.html", "home");
    let up = Upstream::start();
    let s = Server::start(
        d,
        &site,
        &format!(
            r#"
[host_defaults."site.test"]
headers = {{ set = {{ "Strict-Transport-Security" = "max-age=63072000", "X-Frame-Options" = "SAMEORIGIN" }}, remove = ["Server"] }}

[path_routes."site.test"."/"]
path = "{{site}}/www"
headers = {{ set = {{ "X-Frame-Options" = "DENY" }}, add = {{ "Link" = ["</a.css>; rel=preload", "</b.js>; rel=preload"] }} }}

[path_routes."site.test"."/quiet/"]
path = "{{site}}/www"
headers_on_errors = false
headers = {{ set = {{ "X-Route" = "quiet" }} }}

[path_routes."site.test"."/api/"]
type = "Proxy"
url = "http://{up}/app/"
headers = {{ set = {{ "X-Up" = "daemon" }} }}
request_headers = {{ set = {{ "X-Env" = "prod" }}, remove = ["Cookie", "X-Forwarded-Host"] }}
"#,
            up = up.addr
        ),
    );
    let r = s.get("site.test", "/");
    assert_eq!((r.status, r.text().as_str()), (200, "home"));
    assert_eq!(
        r.header("strict-transport-security"),
        Some("max-age=63072000")
    );
    assert_eq!(all(&r, "x-frame-options"), vec!["DENY"], "the route's wins");
    assert_eq!(
        all(&r, "link"),
        vec!["</a.css>; rel=preload", "</b.js>; rel=preload"]
    );
    assert_eq!(r.header("server"), None, "removed by the host");
    assert!(r.header("date").is_some());

    // The daemon's own 404 on the route, and on the host where no route matches.
    let r = s.get("site.test", "/missing.html");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert!(r.header("strict-transport-security").is_some());
    let r = s.get("site.test", "/quiet/missing");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-route"), None, "headers_on_errors = false");
    assert_eq!(
        s.get("site.test", "/quiet/").header("x-route"),
        Some("quiet")
    );

    // An upstream's field is replaced; the upstream sees the request rules.
    let r = s.get("site.test", "/api/status/200");
    assert_eq!(r.status, 200);
    assert_eq!(all(&r, "x-up"), vec!["daemon"]);
    let r = get_with(
        &s,
        "site.test",
        "/api/report",
        &[("Cookie", "secret=1"), ("X-Env", "dev")],
    );
    let rep = report(&r);
    assert_eq!(header_values(&rep, "x-env"), vec!["prod"]);
    assert!(header_values(&rep, "cookie").is_empty(), "{rep}");
    assert!(header_values(&rep, "x-forwarded-host").is_empty(), "{rep}");
    assert_eq!(header_values(&rep, "x-forwarded-proto"), vec!["http"]);
}

/// `type = "Redirect"`: placeholders escaped into an absolute Location, the status chosen, a
/// request's own CR/LF never reaching the head; curl follows it.
fn redirect_routes(d: Driver) {
    let site = Site::new();
    site.file("www/new/a b/c.txt", "moved here");
    let s = Server::start(
        d,
        &site,
        r#"
[path_routes."site.test"."/old/"]
type = "Redirect"
url = "{scheme}://{host}:{port}/new/{rest}{query}"
status = 301

[path_routes."site.test"."/go"]
type = "Redirect"
url = "https://example.org{path}"

[path_routes."site.test"."/rel/"]
type = "Redirect"
url = "/new/{rest}{query}"
status = 302

[path_routes."site.test"."/new/"]
path = "{site}/www/new"
"#
        .replace("{port}", "PORT")
        .as_str(),
    );
    let r = s.get("site.test", "/old/a%20b/c.txt?x=1&y=%C3%A9");
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some("http://site.test:PORT/new/a%20b/c.txt?x=1&y=%C3%A9")
    );
    let r = s.get("site.test", "/go/x/%3F%23?q");
    assert_eq!(r.status, 308, "the default");
    assert_eq!(
        r.header("location"),
        Some("https://example.org/go/x/%3F%23"),
        "no {{query}} in the url: the query is left out"
    );
    let r = s.get("site.test", "/go");
    assert_eq!(r.header("location"), Some("https://example.org/go"));
    // An encoded CR LF never reaches a Location: the path is refused before routing (the
    // template's own escaping is unit-tested in http/redirect.rs).
    let r = s.get("site.test", "/old/%0D%0ASet-Cookie:%20x=1");
    assert_eq!(r.status, 400);
    assert_eq!(r.header("set-cookie"), None);
    // A HEAD gets the redirect without a body; POST too (any method).
    let r = s.raw(b"HEAD /go/a HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 308);
    assert!(r.body.is_empty());
    let r = s.raw(
        b"POST /go/a HTTP/1.1\r\nHost: site.test\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    );
    assert_eq!(r.status, 308);

    // curl follows a relative Location to the file, path escapes and all.
    let url = format!("http://{}/rel/a%20b/c.txt", s.addr);
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-L",
            "--max-time",
            "10",
            "-H",
            "Host: site.test",
            &url,
        ])
        .output()
        .expect("run curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "moved here");
}

/// `type = "Respond"`: fixed answers with and without a body, for any method; HEAD gets the
/// length; a 204 none.
fn respond_routes(d: Driver) {
    let site = Site::new();
    let s = Server::start(
        d,
        &site,
        r#"
[path_routes."site.test"."/healthz"]
type = "Respond"
status = 200
body = "ok\n"

[path_routes."site.test"."/"]
type = "Respond"
status = 503
body = "<h1>Back soon</h1>"
content_type = "text/html; charset=utf-8"
headers = { set = { "Retry-After" = "120" } }

[path_routes."site.test"."/ping"]
type = "Respond"
status = 204
"#,
    );
    let r = s.get("site.test", "/healthz");
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    let r = s.get("site.test", "/anything/else");
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "<h1>Back soon</h1>");
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("retry-after"), Some("120"));
    let r = s.raw(b"HEAD /healthz HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n");
    assert_eq!((r.status, r.header("content-length")), (200, Some("3")));
    assert!(r.body.is_empty());
    let r = s.raw(
        b"DELETE /ping HTTP/1.1\r\nHost: site.test\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    );
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-length"), None);
}

crate::both_drivers!(
    header_rules_apply_to_every_response,
    redirect_routes,
    respond_routes
);

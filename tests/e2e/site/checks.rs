//! The route features' keys refused at `--check` with their key paths, a reload that keeps
//! serving through a bad one, and what `proxyctl explain` and `routes` show of them.

use crate::common::{check, Driver, Server, Site};

/// Each bad value is refused with its line and key path, all in one run.
#[test]
fn bad_site_keys_are_refused_with_their_key_paths() {
    let site = Site::new();
    site.mkdir("www");
    site.file("big.html", vec![b'x'; 2 * 1024 * 1024]);
    let root = site.path().display();
    let cfg = site.file(
        "bad.toml",
        format!(
            r#"[server]
listen = "127.0.0.1:1"

[path_routes."a.test"."/r/"]
type = "Redirect"
url = "https://{{host}}/x"
status = 200

[path_routes."a.test"."/h/"]
path = "{root}/www"
headers = {{ set = {{ "Content-Length" = "5" }}, remove = ["Transfer-Encoding"] }}

[path_routes."a.test"."/v/"]
path = "{root}/www"
headers = {{ add = {{ "X-Evil" = "a\r\nSet-Cookie: x" }} }}

[path_routes."a.test"."/p/"]
path = "{root}/www"
error_pages = {{ "404" = "{root}/missing.html", "5xx" = "{root}/big.html", "200" = "{root}/big.html" }}

[path_routes."a.test"."/c/"]
path = "{root}/www"
compress = ["br", "deflate"]
precompressed = ["gzip", "gzip"]

[path_routes."a.test"."/t/"]
type = "Redirect"
url = "https://{{host}}/{{nope}}"
path = "{root}/www"

[path_routes."a.test"."/s/"]
type = "Respond"
status = 204
body = "no"

[path_routes."a.test"."/f/"]
path = "{root}/www"
fallback = "../etc/passwd"

[path_routes."a.test"."/g/"]
path = "{root}/www"
fallback = "index.html"
fallback_status = 204
"#
        ),
    );
    let out = check(&cfg);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for (key, why) in [
        (r#""/r/".status"#, "200 is not a redirect"),
        (
            r#""/h/".headers.set.Content-Length"#,
            "cannot be set or removed",
        ),
        (r#""/h/".headers.remove[0]"#, "cannot be set or removed"),
        (r#""/v/".headers.add.X-Evil"#, "must not contain '\\r'"),
        (r#""/p/".error_pages.404"#, "missing.html"),
        (r#""/p/".error_pages.5xx"#, "big.html"),
        (r#""/p/".error_pages.200"#, "not an error status"),
        (r#""/c/".compress[1]"#, "unknown encoding \"deflate\""),
        (r#""/c/".precompressed[1]"#, "listed twice"),
        (r#""/t/".url"#, "unknown placeholder {nope}"),
        (r#""/t/".path"#, "belongs to File routes"),
        (r#""/s/".body"#, "has no body"),
        (r#""/f/".fallback"#, "below the route's root"),
        (r#""/g/".fallback_status"#, "200 or an error status"),
    ] {
        let line = err
            .lines()
            .find(|l| l.contains(key))
            .unwrap_or_else(|| panic!("no error for {key}:\n{err}"));
        assert!(line.contains(why), "{key}: {line}");
    }
    assert!(err.contains("bad.toml:7:"), "line of the status: {err}");
}

/// A reload to a bad error page keeps the running config; `explain` shows a route's headers,
/// redirect target, fallback and encoding; `routes` the new types.
fn explain_and_routes_show_the_features(d: Driver) {
    let site = Site::new();
    site.file("www/index.html", "app");
    site.file("404.html", "nope");
    let s = Server::start(
        d,
        &site,
        r#"
[path_routes."site.test"."/"]
path = "{site}/www"
fallback = "index.html"
precompressed = ["br"]
error_pages = { "404" = "{site}/404.html" }
headers = { set = { "X-Frame-Options" = "DENY" }, remove = ["Server"] }

[path_routes."site.test"."/old/"]
type = "Redirect"
url = "https://{host}/new/{rest}{query}"
status = 301

[path_routes."site.test"."/healthz"]
type = "Respond"
body = "ok"

[path_routes."site.test"."/api/"]
type = "Proxy"
url = "http://127.0.0.1:9"
compress = ["gzip"]
"#,
    );
    let e = s.proxyctl_json(&["explain", "site.test", "/old/a%20b?x=1"]);
    assert_eq!(e["backend"], "Redirect");
    assert_eq!(e["status"], 301);
    assert_eq!(e["resolved"], "https://site.test/new/a%20b?x=1");
    let e = s.proxyctl_json(&["explain", "site.test", "/some/route"]);
    assert_eq!(e["fallback"], "index.html (200)");
    assert_eq!(e["encoding"], "precompressed variants: br");
    let headers: Vec<String> = serde_json::from_value(e["headers"].clone()).unwrap();
    assert!(
        headers.contains(&"+X-Frame-Options: DENY".to_string()),
        "{headers:?}"
    );
    assert!(headers.contains(&"-server".to_string()), "{headers:?}");
    let e = s.proxyctl_json(&["explain", "site.test", "/api/x"]);
    assert_eq!(e["encoding"], "compressed on the fly: gzip");
    let e = s.proxyctl_json(&[
        "explain",
        "site.test",
        "/api/x",
        "--accept-encoding",
        "br;q=1, gzip;q=0.5",
    ]);
    assert_eq!(
        e["encoding"],
        "compressed on the fly: gzip; this request: gzip (a 2xx of a listed type, 1024 bytes or more)"
    );
    let e = s.proxyctl_json(&["explain", "site.test", "/api/x", "--accept-encoding", "br"]);
    assert!(e["encoding"]
        .as_str()
        .unwrap()
        .ends_with("this request: not compressed"));
    let e = s.proxyctl_json(&[
        "explain",
        "site.test",
        "/x.css",
        "--accept-encoding",
        "gzip, br",
    ]);
    assert_eq!(
        e["encoding"],
        "precompressed variants: br; this request: the first of br whose file exists"
    );
    let out = s.proxyctl(&["explain", "site.test", "/healthz"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Respond route /healthz"), "{text}");
    let out = s.proxyctl(&["routes"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Redirect") && text.contains("301 https://{host}/new/{rest}{query}"),
        "{text}"
    );
    assert!(text.contains("Respond"), "{text}");

    // A reload whose error page went missing is refused; the old page keeps serving.
    let good = std::fs::read_to_string(&s.config_path).unwrap();
    std::fs::write(&s.config_path, good.replace("404.html", "gone.html")).unwrap();
    let out = s.proxyctl(&["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error_pages.404"), "{err}");
    assert_eq!(s.get("site.test", "/healthz").text(), "ok");
}

crate::both_drivers!(explain_and_routes_show_the_features);

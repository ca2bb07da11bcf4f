//! Routing end to end: the spec's tables against real files, host rules, segment boundaries.

use crate::common::{Driver, Server, Site};

/// The spec's example routes, on a temporary docroot.
fn spec_site() -> (Site, String) {
    let s = Site::new();
    s.file("robots.txt", "User-agent: *\n");
    s.file("index.html", "root index\n");
    s.file("assets/css/style.css", "body{}\n");
    s.file("assets/index.html", "assets index\n");
    s.file("docs/index.html", "docs index\n");
    s.file("docs/guide/intro.html", "intro\n");
    s.file("user/profile.html", "profile\n");
    s.file("user/index.html", "not the index of /user/\n");
    s.file("example/index.html", "whole host\n");
    s.file("example/a/b.txt", "b\n");
    let routes = r#"
[host_routes."files.example.com"]
type = "File"
path = "{site}/example"

[path_routes."example.com"."/robots.txt"]
type = "File"
path = "{site}/robots.txt"

[path_routes."example.com"."/static/"]
type = "File"
path = "{site}/assets/"
mode = "sendfile"

[path_routes."example.com"."/docs"]
type = "File"
path = "{site}/docs/"

[path_routes."example.com"."/user/"]
type = "File"
path = "{site}/user/"
index = "profile.html"

[path_routes."example.com"]
"/" = { type = "File", path = "{site}/index.html" }
"/mem/" = { path = "{site}/assets", mode = "memory" }
"#
    .to_string();
    (s, routes)
}

fn spec_table_rows(d: Driver) {
    let (site, routes) = spec_site();
    let s = Server::start(d, &site, &routes);
    for (path, status, body) in [
        ("/robots.txt", 200, "User-agent: *\n"),
        ("/robots.txt/extra", 404, ""),
        ("/static/css/style.css", 200, "body{}\n"),
        ("/static/", 200, "assets index\n"),
        ("/static", 200, "assets index\n"),
        ("/docs", 200, "docs index\n"),
        ("/docs/", 200, "docs index\n"),
        ("/docs/guide/intro.html", 200, "intro\n"),
        ("/user/", 200, "profile\n"),
        ("/user", 200, "profile\n"),
        ("/", 200, "root index\n"),
        ("/docsfoo", 404, ""),
        ("/mem/css/style.css", 200, "body{}\n"),
        ("/mem/", 200, "assets index\n"),
        ("/mem", 200, "assets index\n"),
    ] {
        let r = s.get("example.com", path);
        assert_eq!(r.status, status, "{path}");
        if status == 200 {
            assert_eq!(r.text(), body, "{path}");
        }
        // No redirects, ever.
        assert!(r.header("location").is_none(), "{path}");
    }
}

fn hosts_match_exactly_case_insensitively_port_stripped(d: Driver) {
    let (site, routes) = spec_site();
    let s = Server::start(d, &site, &routes);
    assert_eq!(s.get("files.example.com", "/").text(), "whole host\n");
    assert_eq!(s.get("FILES.Example.COM:8443", "/a/b.txt").text(), "b\n");
    assert_eq!(s.get("example.com:80", "/robots.txt").status, 200);
    assert_eq!(s.get("www.example.com", "/").status, 404);
    assert_eq!(s.get("example.co", "/").status, 404);
    // Absolute-form: the host comes from the target, not the Host header.
    let r = s.raw(b"GET http://files.example.com/a/b.txt HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n");
    assert_eq!(r.text(), "b\n");
}

fn host_route_wins_over_path_routes(d: Driver) {
    let site = Site::new();
    site.file("host/x.txt", "host\n");
    site.file("path/x.txt", "path\n");
    let s = Server::start(
        d,
        &site,
        r#"[host_routes."h.test"]
path = "{site}/host"

[path_routes."h.test"."/"]
path = "{site}/path"
"#,
    );
    assert_eq!(s.get("h.test", "/x.txt").text(), "host\n");
}

fn longest_prefix_wins(d: Driver) {
    let site = Site::new();
    for dir in ["root", "a", "ab"] {
        site.file(&format!("{dir}/f.txt"), dir);
    }
    let s = Server::start(
        d,
        &site,
        r#"[path_routes."h.test"]
"/" = { path = "{site}/root" }
"/a" = { path = "{site}/a" }
"/a/b/" = { path = "{site}/ab" }
"#,
    );
    assert_eq!(s.get("h.test", "/f.txt").text(), "root");
    assert_eq!(s.get("h.test", "/a/f.txt").text(), "a");
    assert_eq!(s.get("h.test", "/a/b/f.txt").text(), "ab");
    assert_eq!(
        s.get("h.test", "/ab/f.txt").status,
        404,
        "/ab is not under /a"
    );
}

/// The policy of a route cannot be dodged by encoding its prefix.
fn matching_happens_on_the_normalised_path(d: Driver) {
    let site = Site::new();
    site.file("open/secret/x.txt", "wrong route\n");
    site.file("secret/x.txt", "secret route\n");
    let s = Server::start(
        d,
        &site,
        r#"[path_routes."h.test"]
"/" = { path = "{site}/open" }
"/secret/" = { path = "{site}/secret" }
"#,
    );
    assert_eq!(s.get("h.test", "/%73ecret/x.txt").text(), "secret route\n");
    assert_eq!(
        s.get("h.test", "/a/../secret/x.txt").text(),
        "secret route\n"
    );
    assert_eq!(s.get("h.test", "//secret//x.txt").text(), "secret route\n");
}

crate::both_drivers!(
    spec_table_rows,
    hosts_match_exactly_case_insensitively_port_stripped,
    host_route_wins_over_path_routes,
    longest_prefix_wins,
    matching_happens_on_the_normalised_path,
);

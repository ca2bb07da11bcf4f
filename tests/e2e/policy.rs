//! Per-route access policy end to end: `allowed_ips` / `denied_ips` (403, deny first) and
//! `allowed_methods` (405 with `Allow`), checked before any body is read, and `[security]`
//! defaults applying to every route.

use crate::common::{Driver, Server, Site};

fn site() -> Site {
    let s = Site::new();
    s.file("f.txt", "f");
    s
}

fn status(s: &Server, path: &str) -> u16 {
    s.get("h", path).status
}

fn ip_rules(d: Driver) {
    let site = site();
    // Test clients connect from 127.x.y.z (the server's own loopback address).
    let s = Server::start(
        d,
        &site,
        r#"[path_routes."h"]
"/open/" = { path = "{site}" }
"/allowed/" = { path = "{site}", security = { allowed_ips = ["127.0.0.0/8"] } }
"/elsewhere/" = { path = "{site}", security = { allowed_ips = ["10.0.0.0/8", "2001:db8::/32"] } }
"/denied/" = { path = "{site}", security = { denied_ips = ["127.0.0.0/8"] } }
"/both/" = { path = "{site}", security = { allowed_ips = ["127.0.0.0/8"], denied_ips = ["127.0.0.0/8"] } }
"#,
    );
    assert_eq!(status(&s, "/open/f.txt"), 200);
    assert_eq!(status(&s, "/allowed/f.txt"), 200);
    assert_eq!(status(&s, "/elsewhere/f.txt"), 403);
    assert_eq!(status(&s, "/denied/f.txt"), 403);
    assert_eq!(status(&s, "/both/f.txt"), 403, "deny wins over allow");
    // Refused before the body is read: the connection stays usable only without a body.
    let mut c = s.connect();
    c.send(
        b"GET /denied/f.txt HTTP/1.1\r\nHost: h\r\n\r\nGET /open/f.txt HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    assert_eq!(c.response(false).status, 403);
    assert_eq!(c.response(false).body, b"f");
}

fn method_rules(d: Driver) {
    let site = site();
    let s = Server::start(
        d,
        &site,
        r#"[path_routes."h"]
"/get-only/" = { path = "{site}", security = { allowed_methods = ["GET"] } }
"/any/" = { path = "{site}" }
"#,
    );
    assert_eq!(status(&s, "/get-only/f.txt"), 200);
    let mut c = s.connect();
    c.send(b"HEAD /get-only/f.txt HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.response(true);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET"));
    c.send(b"HEAD /any/f.txt HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(c.response(true).status, 200);
}

fn security_defaults_apply_to_every_route(d: Driver) {
    let site = site();
    let s = Server::start(
        d,
        &site,
        r#"[security]
allowed_ips = ["10.0.0.0/8"]

[path_routes."h"]
"/default/" = { path = "{site}" }
"/own/" = { path = "{site}", security = { allowed_ips = ["127.0.0.0/8"] } }
"#,
    );
    assert_eq!(status(&s, "/default/f.txt"), 403);
    assert_eq!(status(&s, "/own/f.txt"), 200, "a route's own key wins");
}

crate::both_drivers!(
    ip_rules,
    method_rules,
    security_defaults_apply_to_every_route
);

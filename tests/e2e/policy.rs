//! Per-route access policy end to end: `allowed_ips` / `denied_ips` (403, deny first) and
//! `allowed_methods` (405 with `Allow`), checked before any body is read; the rate limit (429
//! with `Retry-After`, one count for all workers, kept across reloads); the global connection
//! cap; and `[security]` defaults applying to every route.

use std::time::{Duration, Instant};

use crate::common::{Client, Driver, Server, Site};

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

/// Statuses of `n` requests for `path`, each on a new connection (so both workers take some).
fn statuses(s: &Server, path: &str, n: usize) -> Vec<u16> {
    (0..n).map(|_| status(s, path)).collect()
}

fn rate_limit_is_one_window_for_all_workers(d: Driver) {
    let site = site();
    let s = Server::start_full(
        d,
        &site,
        "threads = 2\n",
        r#"[security]
rate_limit_requests_per_min = 7

[path_routes."h"]
"/limited/" = { path = "{site}", security = { rate_limit_requests_per_min = 20 } }
"/default/" = { path = "{site}" }
"/open/" = { path = "{site}", security = { rate_limit_requests_per_min = 0 } }
"#,
    );
    let got = statuses(&s, "/limited/f.txt", 30);
    assert_eq!(got.iter().filter(|&&c| c == 200).count(), 20, "{got:?}");
    assert_eq!(got.iter().filter(|&&c| c == 429).count(), 10, "{got:?}");
    assert!(got[..20].iter().all(|&c| c == 200), "{got:?}");
    // The refusal says when to come back, and keeps the connection.
    let mut c = s.connect();
    c.send(b"GET /limited/f.txt HTTP/1.1\r\nHost: h\r\n\r\nGET /open/f.txt HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 429);
    // 20 requests this minute against 20 a minute: a request fits again once the next minute
    // has weighed this one's 20 down to 19, 3 s into it — so between 3 and 63 s from now.
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((3..=63).contains(&retry), "{retry}");
    assert_eq!(c.response(false).status, 200);
    // The [security] default applies to a route without its own key; 0 means unlimited.
    let got = statuses(&s, "/default/f.txt", 10);
    assert_eq!(got.iter().filter(|&&c| c == 200).count(), 7, "{got:?}");
    assert!(statuses(&s, "/open/f.txt", 40).iter().all(|&c| c == 200));
    // A reload that leaves the route in place keeps its window.
    let text = std::fs::read_to_string(&s.config_path).unwrap();
    std::fs::write(
        &s.config_path,
        format!(
            "{text}\"/new/\" = {{ path = \"{}\" }}\n",
            site.path().display()
        ),
    )
    .unwrap();
    assert_eq!(s.wait_generation(2), 2, "{}", s.log());
    assert_eq!(status(&s, "/new/f.txt"), 200);
    assert_eq!(
        status(&s, "/limited/f.txt"),
        429,
        "the window was lost on reload"
    );
}

/// Waits until the daemon counts `n` open connections.
fn wait_open(s: &Server, n: u64) {
    let t = Instant::now();
    while s.proxyctl_json(&["status"])["connections"] != n {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "never {n} open connections"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn connection_cap_closes_the_connections_over_it(d: Driver) {
    let site = site();
    let s = Server::start_full(
        d,
        &site,
        "threads = 2\n",
        r#"[security]
max_concurrent_connections = 3

[path_routes."h"]
"/" = { path = "{site}" }
"#,
    );
    // (The harness's readiness check may still be open.)
    wait_open(&s, 0);
    let mut held: Vec<Client> = (0..3)
        .map(|_| {
            let mut c = s.connect();
            c.send(b"GET /f.txt HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(c.response(false).status, 200);
            c
        })
        .collect();
    wait_open(&s, 3);
    // The fourth is closed at once, unanswered, however many workers there are.
    for _ in 0..4 {
        let mut c = s.connect();
        assert!(c.try_response(false).is_none(), "served over the cap");
    }
    let st = s.proxyctl_json(&["status"]);
    assert_eq!(st["connections_over_cap"], 4, "{st}");
    assert_eq!(st["connections"], 3, "{st}");
    // The held ones still work; when one closes, a new one gets in.
    for c in &mut held {
        c.send(b"GET /f.txt HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(c.response(false).status, 200);
    }
    drop(held.pop());
    wait_open(&s, 2);
    assert_eq!(status(&s, "/f.txt"), 200);
    let text = String::from_utf8_lossy(&s.proxyctl(&["status"]).stdout).to_string();
    assert!(
        text.contains("(4 closed at accept over max_concurrent_connections)"),
        "{text}"
    );
}

crate::both_drivers!(
    ip_rules,
    method_rules,
    security_defaults_apply_to_every_route,
    rate_limit_is_one_window_for_all_workers,
    connection_cap_closes_the_connections_over_it,
);

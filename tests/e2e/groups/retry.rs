//! Retries across servers: which requests, how many, and the budget.

use std::time::Instant;

use super::*;

#[test]
fn the_retry_budget_bounds_extra_attempts() {
    let nodes = [Node::start("a"), Node::start("b"), Node::start("c")];
    for n in &nodes {
        n.set(Mode::Unavailable);
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    let server = daemon(
        &refs,
        "[upstreams.g.outlier]\nconsecutive_failures = 0\n\
         [upstreams.g.retry]\nattempts = 2\non = [\"503\"]\nbudget_percent = 0\nmin_retries_per_sec = 5",
    );
    let t = Instant::now();
    let (_, failures) = tally(&server, 200, "");
    let secs = t.elapsed().as_secs() + 1;
    assert_eq!(failures.len(), 200, "a dead fleet answers 503");
    let attempts: usize = nodes.iter().map(Node::traffic).sum();
    let extra = attempts - 200;
    // At most 5 retries per second (one more second for a window boundary); without the
    // budget, 400.
    assert!(
        extra <= 5 * secs as usize + 5,
        "{extra} retries in {secs} s"
    );
    assert!(extra >= 5, "the budget's floor allows some: {extra}");
    let g = &server.proxyctl_json(&["upstreams", "g"])[0];
    assert_eq!(g["retries"]["503"], extra as u64);
    assert!(g["retry_budget_exhausted"].as_u64().unwrap() > 100);
}

#[test]
fn each_try_goes_to_a_server_not_tried_yet() {
    let nodes = [Node::start("a"), Node::start("b"), Node::start("c")];
    for n in &nodes[..2] {
        n.set(Mode::Unavailable);
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    let server = daemon(
        &refs,
        "[upstreams.g.outlier]\nconsecutive_failures = 0\n\
         [upstreams.g.retry]\nattempts = 2\non = [\"503\"]\nmin_retries_per_sec = 1000",
    );
    let (counts, failures) = tally(&server, 30, "");
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(counts["c"], 30);
    // Never the same server twice for one request: at most one 503 from each of a and b.
    assert!(nodes[0].traffic() <= 30 && nodes[1].traffic() <= 30);
    assert_eq!(nodes[2].traffic(), 30);
}

#[test]
fn a_post_is_not_retried_once_sent() {
    let (a, b) = (Node::start("a"), Node::start("b"));
    a.set(Mode::Close);
    let config = "[upstreams.g.outlier]\nconsecutive_failures = 0";
    let server = daemon(&[&a, &b], config);
    let mut conn = Conn::new(server.addr);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(conn.request("POST", "/", "", "payload").map(|r| r.0));
    }
    // Those that landed on a, which took them and closed, are 502: not sent again.
    let failed = statuses.iter().filter(|s| **s == Ok(502)).count();
    assert!(failed >= 1, "{statuses:?}");
    assert_eq!(failed, a.traffic(), "{statuses:?}");
    assert_eq!(a.traffic() + b.traffic(), 4, "no POST was sent twice");
    // A GET is idempotent: retried on b (reset before response is retried by default).
    let (counts, failures) = tally(&server, 4, "");
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(counts["b"], 4);

    // non_idempotent = true: a POST without a body is sent again.
    let (c, d) = (Node::start("c"), Node::start("d"));
    c.set(Mode::Close);
    let server = daemon(
        &[&c, &d],
        "[upstreams.g.outlier]\nconsecutive_failures = 0\n[upstreams.g.retry]\nnon_idempotent = true",
    );
    let mut conn = Conn::new(server.addr);
    for _ in 0..4 {
        assert_eq!(conn.request("POST", "/", "", "").unwrap().0, 200);
    }
    // Each met c first (round robin comes back to it) and was sent again to d.
    assert!(c.traffic() >= 1);
    assert_eq!(d.traffic(), 4);
}

#[test]
fn a_post_is_retried_when_nothing_was_sent() {
    let b = Node::start("b");
    let dead = Node::start("dead");
    let dead_addr = dead.addr;
    drop(dead);
    let config = groups_config(
        &format!(
            "{{ address = \"{dead_addr}\" }}, {{ address = \"{}\" }}",
            b.addr
        ),
        "[upstreams.g.outlier]\nconsecutive_failures = 0",
    );
    let server = start(&config, &[]);
    let mut conn = Conn::new(server.addr);
    for _ in 0..4 {
        let (status, body) = conn.request("POST", "/", "", "a body").unwrap();
        assert_eq!((status, body.as_str()), (200, "b"));
    }
    assert_eq!(b.methods(), ["POST"; 4]);
}

#[test]
fn a_status_with_no_server_left_reaches_the_client_as_sent() {
    let a = Node::start("a");
    a.set(Mode::Unavailable);
    let server = daemon(
        &[&a],
        "[upstreams.g.outlier]\nconsecutive_failures = 0\n[upstreams.g.retry]\non = [\"503\"]",
    );
    let mut conn = Conn::new(server.addr);
    // The only server answered 503: no other to try, so its own answer goes out.
    assert_eq!(conn.get("/").unwrap(), (503, "busy".to_string()));
    assert_eq!(a.traffic(), 1);
    let g = &server.proxyctl_json(&["upstreams", "g"])[0];
    assert_eq!(g["retries"]["503"], 0);
    assert_eq!(g["no_server"], 0);
}

#[test]
fn a_retry_may_go_to_a_backup() {
    let (a, backup) = (Node::start("a"), Node::start("backup"));
    a.set(Mode::Close);
    let config = groups_config(
        &format!(
            "{{ address = \"{}\" }}, {{ address = \"{}\", backup = true }}",
            a.addr, backup.addr
        ),
        "[upstreams.g.outlier]\nconsecutive_failures = 0",
    );
    let server = start(&config, &[]);
    let (counts, failures) = tally(&server, 3, "");
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(counts["backup"], 3);
    assert_eq!(a.traffic(), 3, "the primary first, each time");
}

//! Distribution per algorithm.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::*;

#[test]
fn round_robin_follows_weights() {
    let (a, b, c) = (Node::start("a"), Node::start("b"), Node::start("c"));
    let config = groups_config(
        &format!(
            "{{ address = \"{}\" }}, {{ address = \"{}\", weight = 2 }}, {{ address = \"{}\" }}",
            a.addr, b.addr, c.addr
        ),
        "",
    );
    let server = start(&config, &[]);
    // One connection stays on one worker: whole cycles of the smooth schedule.
    let (counts, failures) = tally(&server, 400, "");
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(counts["a"], 100, "{counts:?}");
    assert_eq!(counts["b"], 200, "{counts:?}");
    assert_eq!(counts["c"], 100, "{counts:?}");
}

#[test]
fn random_follows_weights() {
    let (a, b) = (Node::start("a"), Node::start("b"));
    let config = groups_config(
        &format!(
            "{{ address = \"{}\" }}, {{ address = \"{}\", weight = 3 }}",
            a.addr, b.addr
        ),
        "balance = \"random\"",
    );
    let server = start(&config, &[]);
    let (counts, failures) = tally(&server, 800, "");
    assert!(failures.is_empty(), "{failures:?}");
    // Expected 200 and 600.
    assert!((130..=270).contains(&counts["a"]), "{counts:?}");
}

#[test]
fn hash_is_stable_and_a_leaving_server_moves_only_its_keys() {
    let nodes = [Node::start("a"), Node::start("b"), Node::start("c")];
    let refs: Vec<&Node> = nodes.iter().collect();
    let server = daemon(&refs, "balance = \"hash\"\nhash_key = \"header:X-User\"");
    let owner = |server: &Server, user: usize| {
        let mut conn = Conn::new(server.addr);
        conn.request("GET", "/", &format!("X-User: user-{user}\r\n"), "")
            .expect("an answer")
            .1
    };
    let mut before = HashMap::new();
    for user in 0..60 {
        let first = owner(&server, user);
        for _ in 0..3 {
            assert_eq!(owner(&server, user), first, "user {user} moved");
        }
        before.insert(user, first);
    }
    let spread: std::collections::HashSet<&String> = before.values().collect();
    assert_eq!(spread.len(), 3, "every server owns keys: {before:?}");
    // Server b leaves the group (a reload): only b's users move.
    let config = std::fs::read_to_string(&server.config_path).unwrap();
    let without_b = config.replace(&format!("{{ address = \"{}\" }}, ", nodes[1].addr), "");
    assert_ne!(config, without_b);
    std::fs::write(&server.config_path, without_b).unwrap();
    server.wait_generation(2);
    for (user, was) in &before {
        let now = owner(&server, *user);
        if was != "b" {
            assert_eq!(&now, was, "user {user} moved although its server stayed");
        } else {
            assert_ne!(now, "b");
        }
    }
    // A cookie works the same way; no key at all is spread over the servers.
    let config = groups_config(
        &refs
            .iter()
            .map(|n| format!("{{ address = \"{}\" }}", n.addr))
            .collect::<Vec<_>>()
            .join(", "),
        "balance = \"hash\"\nhash_key = \"cookie:sid\"",
    );
    let server = start(&config, &[]);
    let mut conn = Conn::new(server.addr);
    let first = conn
        .request("GET", "/", "Cookie: a=1; sid=abc\r\n", "")
        .unwrap()
        .1;
    for _ in 0..5 {
        assert_eq!(
            conn.request("GET", "/", "Cookie: sid=abc; b=2\r\n", "")
                .unwrap()
                .1,
            first
        );
    }
    let (counts, _) = tally(&server, 60, "");
    assert!(counts.len() >= 2, "no key: spread at random: {counts:?}");
}

#[test]
fn least_request_prefers_the_idle_server() {
    let (slow, fast) = (Node::start("slow"), Node::start("fast"));
    slow.set_delay(Duration::from_millis(150));
    let server = daemon(&[&slow, &fast], "balance = \"least_request\"");
    let addr = server.addr;
    let deadline = Instant::now() + Duration::from_secs(2);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut conn = Conn::new(addr);
                while Instant::now() < deadline {
                    assert_eq!(conn.get("/").expect("an answer").0, 200);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (s, f) = (slow.traffic(), fast.traffic());
    // Round robin would split the requests evenly between the two; the busy server gets
    // only the requests where both picks are it, or it has fewer in flight.
    assert!(f >= 4 * s, "slow {s}, fast {f}");
}

#[test]
fn slow_start_ramps_a_returning_server_up() {
    let (a, b) = (Node::start("a"), Node::start("b"));
    let server = daemon(&[&a, &b], "slow_start_secs = 3");
    let b_addr = b.addr.to_string();
    assert!(server
        .proxyctl(&["upstream", "g", &b_addr, "disable"])
        .status
        .success());
    assert!(server
        .proxyctl(&["upstream", "g", &b_addr, "enable"])
        .status
        .success());
    // Just back: a small share (about 5 % rising to 50 % over 3 s).
    let (early, failures) = tally(&server, 200, "");
    assert!(failures.is_empty(), "{failures:?}");
    let share = *early.get("b").unwrap_or(&0);
    assert!(share < 50, "b took {share} of 200 at once");
    std::thread::sleep(Duration::from_secs(3));
    let (later, _) = tally(&server, 200, "");
    assert_eq!(later["b"], 100, "the full share after slow start");
}

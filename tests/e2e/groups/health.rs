//! Active checks, passive ejection, the all-unhealthy policy, DNS, and state across reloads.

use std::time::{Duration, Instant};

use super::*;

const FAST_CHECKS: &str = "[upstreams.g.health_check]\npath = \"/healthz\"\ninterval_ms = 100\n\
                           timeout_ms = 200\njitter_percent = 0\nhealthy_threshold = 2\n\
                           unhealthy_threshold = 3\n";

#[test]
fn active_checks_fall_and_rise() {
    let (a, b) = (Node::start("a"), Node::start("b"));
    let server = daemon(&[&a, &b], FAST_CHECKS);
    assert!(
        wait_for(Duration::from_secs(3), || b.checks() >= 2),
        "b is checked"
    );
    assert_eq!(state_of(&server, b.addr), "healthy");
    // Down at the third failing check: about 300 ms at 100 ms intervals.
    b.set_healthy(false);
    let t = Instant::now();
    assert!(wait_for(Duration::from_secs(3), || state_of(
        &server, b.addr
    ) == "unhealthy"));
    let fell = t.elapsed();
    assert!(fell >= Duration::from_millis(150), "fell after {fell:?}");
    let row = servers(&server)
        .into_iter()
        .find(|s| s["address"] == b.addr.to_string())
        .unwrap();
    assert_eq!(row["last_check_error"], "status 503");
    assert!(row["last_transition"]
        .as_str()
        .unwrap()
        .starts_with("unhealthy after 3 failing checks"));
    let before = b.traffic();
    let (counts, failures) = tally(&server, 20, "");
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(counts["a"], 20);
    assert_eq!(b.traffic(), before, "no traffic to the unhealthy server");
    // Up at the second passing check.
    b.set_healthy(true);
    let t = Instant::now();
    assert!(wait_for(Duration::from_secs(3), || state_of(
        &server, b.addr
    ) == "healthy"));
    let rose = t.elapsed();
    assert!(rose < Duration::from_secs(1), "rose after {rose:?}");
    let (counts, _) = tally(&server, 20, "");
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");
    logged(&server, "unhealthy after 3 failing checks");
    logged(&server, "healthy after 2 passing checks");
    // Checks run once per daemon, not per worker (two workers here): about 10 per second.
    let n0 = a.checks();
    std::thread::sleep(Duration::from_secs(1));
    let per_second = a.checks() - n0;
    assert!(
        (5..=15).contains(&per_second),
        "{per_second} checks in a second"
    );
}

#[test]
fn initial_state_unhealthy_waits_for_checks() {
    let a = Node::start("a");
    let checks = "initial_state = \"unhealthy\"\n[upstreams.g.health_check]\ninterval_ms = 400\n\
                  jitter_percent = 0\nhealthy_threshold = 2\n";
    let server = daemon(&[&a], checks);
    assert_eq!(state_of(&server, a.addr), "unhealthy");
    assert!(wait_for(Duration::from_secs(4), || state_of(
        &server, a.addr
    ) == "healthy"));
    assert_eq!(tally(&server, 3, "").0["a"], 3);
}

#[test]
fn a_hung_server_is_ejected() {
    let (a, b) = (Node::start("a"), Node::start("b"));
    b.set(Mode::Hang);
    let server = daemon(
        &[&a, &b],
        "[upstreams.g.outlier]\nconsecutive_failures = 1\n[upstreams.g.retry]\non = [\"timeout\"]",
    );
    // The request that meets b waits out the response timeout (2 s), then goes to a.
    let t = Instant::now();
    let (counts, failures) = tally(&server, 10, "");
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(counts["a"], 10);
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "only one wait: {:?}",
        t.elapsed()
    );
    assert_eq!(b.traffic(), 1);
    assert_eq!(state_of(&server, b.addr), "ejected");
    let row = servers(&server)
        .into_iter()
        .find(|s| s["address"] == b.addr.to_string())
        .unwrap();
    assert_eq!(row["failures_by_kind"]["timeout"], 1);
}

#[test]
fn a_killed_server_is_ejected_and_costs_no_request() {
    let (a, c) = (Node::start("a"), Node::start("c"));
    let b = Node::start("b");
    let b_addr = b.addr;
    let server = daemon(&[&a, &b, &c], "");
    assert!(tally(&server, 9, "").1.is_empty());
    drop(b);
    let (counts, failures) = tally(&server, 30, "");
    assert!(
        failures.is_empty(),
        "connect failures are retried elsewhere: {failures:?}"
    );
    assert_eq!(counts.values().sum::<usize>(), 30);
    // The fifth connect failure in a row ejects it.
    assert_eq!(state_of(&server, b_addr), "ejected");
    let row = servers(&server)
        .into_iter()
        .find(|s| s["address"] == b_addr.to_string())
        .unwrap();
    assert_eq!(row["failures_by_kind"]["connect"], 5);
    assert_eq!(row["ejections"], 1);
}

#[test]
fn ejections_grow_and_end() {
    let (a, b) = (Node::start("a"), Node::start("b"));
    b.set(Mode::Unavailable);
    let server = daemon(
        &[&a, &b],
        "[upstreams.g.outlier]\nconsecutive_failures = 2\nejection_secs = 1\nmax_ejection_secs = 10",
    );
    let ejected_for = |server: &Server| {
        let row = servers(server)
            .into_iter()
            .find(|s| s["address"] == b.addr.to_string())
            .unwrap();
        let until = row["ejected_until_unix_ms"].as_u64()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        Some(until.saturating_sub(now))
    };
    // 503s pass through to the client (no retry on 503 by default) and count.
    let (_, failures) = tally(&server, 4, "");
    assert_eq!(failures.len(), 2, "b answered twice: {failures:?}");
    let first = ejected_for(&server).expect("ejected");
    assert!(
        first <= 1000 && first > 500,
        "first ejection: {first} ms left"
    );
    assert!(wait_for(Duration::from_secs(3), || state_of(
        &server, b.addr
    ) == "healthy"));
    logged(&server, "back from ejection");
    tally(&server, 4, "");
    let second = ejected_for(&server).expect("ejected again");
    assert!(
        second > 1500 && second <= 2000,
        "second ejection: {second} ms left"
    );
}

#[test]
fn all_unhealthy_fails_open_or_fails() {
    let (a, b) = (Node::start("a"), Node::start("b"));
    for n in [&a, &b] {
        n.set_healthy(false);
    }
    let server = daemon(&[&a, &b], FAST_CHECKS);
    assert!(wait_for(Duration::from_secs(3), || {
        servers(&server).iter().all(|s| s["state"] == "unhealthy")
    }));
    // try_all (the default): the requests still reach the servers, counted and logged once.
    let (counts, failures) = tally(&server, 10, "");
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(counts.values().sum::<usize>(), 10);
    let g = &server.proxyctl_json(&["upstreams", "g"])[0];
    assert_eq!(g["failing_open"], true);
    assert_eq!(g["failed_open"], 10);
    assert_eq!(
        logged(&server, "failing open")
            .matches("failing open")
            .count(),
        1
    );
    // Healthy again: no longer failing open, logged once.
    a.set_healthy(true);
    assert!(wait_for(Duration::from_secs(3), || state_of(
        &server, a.addr
    ) == "healthy"));
    tally(&server, 2, "");
    assert_eq!(
        server.proxyctl_json(&["upstreams", "g"])[0]["failing_open"],
        false
    );
    logged(&server, "no longer failing open");

    // fail: 503 from the daemon, nothing reaches the servers.
    let (c, d) = (Node::start("c"), Node::start("d"));
    for n in [&c, &d] {
        n.set_healthy(false);
    }
    let server = daemon(
        &[&c, &d],
        &format!("on_all_unhealthy = \"fail\"\n{FAST_CHECKS}"),
    );
    assert!(wait_for(Duration::from_secs(3), || {
        servers(&server).iter().all(|s| s["state"] == "unhealthy")
    }));
    let mut conn = Conn::new(server.addr);
    let (status, _) = conn.get("/").unwrap();
    assert_eq!(status, 503);
    assert_eq!(c.traffic() + d.traffic(), 0);
    assert_eq!(server.proxyctl_json(&["upstreams", "g"])[0]["no_server"], 1);
}

#[test]
fn backups_serve_only_when_no_primary_can() {
    let (a, backup) = (Node::start("a"), Node::start("backup"));
    let config = groups_config(
        &format!(
            "{{ address = \"{}\" }}, {{ address = \"{}\", backup = true }}",
            a.addr, backup.addr
        ),
        FAST_CHECKS,
    );
    let server = start(&config, &[]);
    assert_eq!(tally(&server, 10, "").0["a"], 10);
    a.set_healthy(false);
    assert!(wait_for(Duration::from_secs(3), || state_of(
        &server, a.addr
    ) == "unhealthy"));
    assert_eq!(tally(&server, 10, "").0["backup"], 10);
    assert_eq!(
        server.proxyctl_json(&["upstreams", "g"])[0]["failing_open"],
        false
    );
}

#[test]
fn a_reload_keeps_an_ejection() {
    let (a, b) = (Node::start("a"), Node::start("b"));
    b.set(Mode::Unavailable);
    let server = daemon(&[&a, &b], "[upstreams.g.outlier]\nconsecutive_failures = 1");
    tally(&server, 2, "");
    assert_eq!(state_of(&server, b.addr), "ejected");
    let mut config = std::fs::read_to_string(&server.config_path).unwrap();
    config.push_str("\n# changed\n");
    std::fs::write(&server.config_path, config).unwrap();
    assert_eq!(server.wait_generation(2), 2);
    assert_eq!(state_of(&server, b.addr), "ejected");
    let before = b.traffic();
    tally(&server, 6, "");
    assert_eq!(b.traffic(), before);
}

#[test]
fn dns_changes_are_followed() {
    let a = Node::start("a");
    // b: another address, the same port (a name gives addresses, the config the port).
    let b = Node::start_at("b", SocketAddr::new(free_addr().ip(), a.addr.port()));
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, format!("# test names\n{} svc.test\n", a.addr.ip())).unwrap();
    let config = groups_config(
        &format!("{{ address = \"svc.test:{}\" }}", a.addr.port()),
        "dns_refresh_secs = 1",
    );
    let server = start(&config, &[("ZEROCOPY_HOSTS_FILE", hosts.to_str().unwrap())]);
    assert_eq!(tally(&server, 5, "").0["a"], 5);
    assert_eq!(
        servers(&server)[0]["server"],
        format!("svc.test:{}", a.addr.port())
    );
    // The name moves to b: b takes the traffic, a's pooled connections close.
    std::fs::write(&hosts, format!("{} svc.test\n", b.addr.ip())).unwrap();
    assert!(wait_for(Duration::from_secs(4), || tally(&server, 1, "")
        .0
        .contains_key("b")));
    assert!(wait_for(Duration::from_secs(3), || a.open_connections() == 0));
    let before = a.traffic();
    assert_eq!(tally(&server, 5, "").0["b"], 5);
    assert_eq!(a.traffic(), before);
    // Both: both serve.
    std::fs::write(
        &hosts,
        format!("{} svc.test\n{} svc.test\n", a.addr.ip(), b.addr.ip()),
    )
    .unwrap();
    assert!(wait_for(Duration::from_secs(4), || servers(&server).len() == 2));
    assert_eq!(tally(&server, 10, "").0.len(), 2);
    // A failed lookup keeps the last good answer (the name is listed without an address).
    std::fs::write(&hosts, "not-an-address svc.test\n").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(servers(&server).len(), 2);
    assert!(tally(&server, 4, "").1.is_empty());
    logged(&server, "keeping its last addresses");
}

#[test]
fn checks_speak_tls_and_tcp_checks_only_connect() {
    // A TLS group: traffic and checks both through TLS, verified against a private CA.
    let pki = crate::pki::Pki::new();
    let a = Node::start("a");
    let front =
        crate::tls_front::TlsFront::start(pki.leaf(&["api.internal"]).server_config(), a.addr);
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.write_ca(dir.path(), "ca.pem");
    let config = groups_config(
        &format!("{{ address = \"{}\" }}", front.addr),
        &format!(
            "tls = true\ntls_server_name = \"api.internal\"\nca_file = \"{}\"\n{FAST_CHECKS}",
            ca.display()
        ),
    );
    a.set_health_interim(true);
    let server = start(&config, &[]);
    assert!(
        wait_for(Duration::from_secs(3), || a.checks() >= 2),
        "checks through TLS"
    );
    assert_eq!(state_of(&server, front.addr), "healthy");
    // (Each answer began with a 103: the check looks past it.)
    assert_eq!(
        servers(&server)[0]["last_check_error"],
        serde_json::Value::Null
    );
    assert_eq!(tally(&server, 3, "").0["a"], 3);
    assert!(front.handshakes.load(std::sync::atomic::Ordering::SeqCst) >= 3);

    // A tcp check sends nothing; a server that stops listening goes down.
    let b = Node::start("b");
    let c = Node::start("c");
    let c_addr = c.addr;
    let server = daemon(
        &[&b, &c],
        "[upstreams.g.health_check]\nkind = \"tcp\"\ninterval_ms = 100\njitter_percent = 0\nunhealthy_threshold = 2",
    );
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(b.checks(), 0);
    assert_eq!(
        servers(&server)[0]["last_check_error"],
        serde_json::Value::Null
    );
    assert!(servers(&server)[0]["last_check_unix_ms"].as_u64().is_some());
    drop(c);
    assert!(wait_for(Duration::from_secs(3), || state_of(
        &server, c_addr
    ) == "unhealthy"));
    assert_eq!(tally(&server, 4, "").0["b"], 4);
}

#[test]
fn each_tls_server_is_verified_as_its_own_name() {
    let pki = crate::pki::Pki::new();
    let (a, b) = (Node::start("a"), Node::start("b"));
    let front_a = crate::tls_front::TlsFront::start(pki.leaf(&["a.test"]).server_config(), a.addr);
    let front_b = crate::tls_front::TlsFront::start(pki.leaf(&["b.test"]).server_config(), b.addr);
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.write_ca(dir.path(), "ca.pem");
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        format!(
            "{} a.test\n{} b.test\n",
            front_a.addr.ip(),
            front_b.addr.ip()
        ),
    )
    .unwrap();
    let config = groups_config(
        &format!(
            "{{ address = \"a.test:{}\" }}, {{ address = \"b.test:{}\" }}",
            front_a.addr.port(),
            front_b.addr.port()
        ),
        &format!("tls = true\nca_file = \"{}\"", ca.display()),
    );
    let server = start(&config, &[("ZEROCOPY_HOSTS_FILE", hosts.to_str().unwrap())]);
    let (counts, failures) = tally(&server, 4, "");
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!((counts["a"], counts["b"]), (2, 2));
}

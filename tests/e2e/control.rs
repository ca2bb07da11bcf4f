//! The control plane end to end: live reload (file rewrite, rename-over, SIGHUP, `proxyctl
//! reload`), refusal of bad files, reload under load, drain, `proxyctl` in both output forms,
//! the admin socket, the lifecycle and systemd notifications.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{proxyctl_bin, Client, Driver, Server, Site};

/// A site with two docroots, `a` and `b`, whose `x.txt` says which one it is.
fn two_roots() -> Site {
    let s = Site::new();
    s.file("a/x.txt", "A");
    s.file("b/x.txt", "B");
    s
}

fn routes_to(site: &Site, root: &str) -> String {
    format!(
        "[path_routes.\"h\".\"/\"]\npath = \"{}/{root}\"\n",
        site.path().display()
    )
}

/// Replaces the route section of the server's config, keeping its head.
fn config_with(s: &Server, routes: &str) -> String {
    let text = std::fs::read_to_string(&s.config_path).unwrap();
    let head = text.split("[path_routes").next().unwrap();
    format!("{head}{routes}")
}

fn get_x(c: &mut Client) -> String {
    c.send(b"GET /x.txt HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 200);
    r.text()
}

/// Polls the same keep-alive connection until it is served `want`.
fn wait_served(c: &mut Client, want: &str) {
    let start = Instant::now();
    while get_x(c) != want {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "never served {want:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start(site: &Site, root: &str) -> Server {
    Server::start(Driver::Uring, site, &routes_to(site, root))
}

#[test]
fn reload_by_rewriting_the_file_in_place() {
    let site = two_roots();
    let s = start(&site, "a");
    let mut c = s.connect();
    assert_eq!(get_x(&mut c), "A");
    let started = Instant::now();
    std::fs::write(&s.config_path, config_with(&s, &routes_to(&site, "b"))).unwrap();
    // Served on the connection that was already open, within a second.
    wait_served(&mut c, "B");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(s.generation(), 2);
    let log = s.wait_log("reloaded (file): generation 2");
    assert!(
        log.contains("reloaded (file): generation 2; routes +0 -0 ~1"),
        "{log}"
    );
    let reloading = log
        .find("state: running -> reloading")
        .expect("reloading in the log");
    let back = log
        .find("state: reloading -> running")
        .expect("back to running in the log");
    assert!(reloading < back, "{log}");
}

#[test]
fn reload_by_rename_over() {
    let site = two_roots();
    let s = start(&site, "a");
    let mut c = s.connect();
    assert_eq!(get_x(&mut c), "A");
    // As editors and config managers do: a temporary file in the same directory, renamed over.
    let tmp = s.config_path.with_file_name(".config.toml.swp");
    std::fs::write(&tmp, config_with(&s, &routes_to(&site, "b"))).unwrap();
    std::fs::rename(&tmp, &s.config_path).unwrap();
    wait_served(&mut c, "B");
    // And once more, to show the watch survived the rename.
    std::fs::write(&tmp, config_with(&s, &routes_to(&site, "a"))).unwrap();
    std::fs::rename(&tmp, &s.config_path).unwrap();
    wait_served(&mut c, "A");
    assert_eq!(s.generation(), 3);
}

/// Kubernetes mounts a ConfigMap as `config.toml -> ..data/config.toml`, `..data -> ..<ts>`, and
/// updates it by pointing a new `..data` symlink at a new directory, renamed over the old one.
#[test]
fn reload_by_kubernetes_style_symlink_swap() {
    let site = two_roots();
    let mount = tempfile::tempdir().unwrap();
    let m = mount.path();
    let addr = crate::common::free_addr();
    let head = format!(
        "[server]\nlisten = \"{addr}\"\nthreads = 1\n[admin]\nsocket = \"{}/admin.sock\"\n",
        m.display()
    );
    let publish = |version: &str, root: &str| {
        let dir = m.join(format!("..{version}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(
            dir.join("config.toml"),
            format!("{head}{}", routes_to(&site, root)),
        )
        .unwrap();
        std::os::unix::fs::symlink(format!("..{version}"), m.join("..data_tmp")).unwrap();
        std::fs::rename(m.join("..data_tmp"), m.join("..data")).unwrap();
    };
    publish("v1", "a");
    std::os::unix::fs::symlink("..data/config.toml", m.join("config.toml")).unwrap();
    let mut child = std::process::Command::new(crate::common::BIN)
        .arg("--config")
        .arg(m.join("config.toml"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut c = loop {
        if std::net::TcpStream::connect(addr).is_ok() {
            break Client::connect(addr);
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(get_x(&mut c), "A");
    publish("v2", "b");
    wait_served(&mut c, "B");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn unchanged_bytes_swap_nothing() {
    let site = two_roots();
    let s = start(&site, "a");
    let text = std::fs::read_to_string(&s.config_path).unwrap();
    std::fs::write(&s.config_path, &text).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(s.generation(), 1);
}

/// Other files in the config's directory — here the daemon's own log, and a file written
/// repeatedly — are not config events: the watcher ignores them (before, a log file beside the
/// config fed its own lines back as events, forty times a second).
#[test]
fn other_files_beside_the_config_are_ignored() {
    let site = two_roots();
    let s = start(&site, "a");
    let dir = s.config_path.parent().unwrap().to_path_buf();
    for i in 0..10 {
        std::fs::write(dir.join("other.txt"), format!("{i}")).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(400));
    let log = s.log();
    assert!(
        !log.contains("config file event"),
        "an unrelated file was taken for a config event:\n{log}"
    );
    // The config file itself still is one.
    let text = std::fs::read_to_string(&s.config_path).unwrap();
    std::fs::write(&s.config_path, &text).unwrap();
    let log = s.wait_log("config file event");
    assert_eq!(log.matches("config file event").count(), 1, "{log}");
    assert_eq!(s.generation(), 1);
}

/// SIGHUP always rebuilds: memory-mode bytes are read again even though the config file did
/// not change.
#[test]
fn reload_by_sighup_rereads_memory_files() {
    let site = Site::new();
    let f = site.file("m.txt", "old");
    let s = Server::start(
        Driver::Uring,
        &site,
        "[path_routes.\"h\".\"/m.txt\"]\npath = \"{site}/m.txt\"\nmode = \"memory\"\n",
    );
    assert_eq!(s.get("h", "/m.txt").text(), "old");
    std::fs::write(&f, "new").unwrap();
    assert_eq!(s.get("h", "/m.txt").text(), "old");
    s.signal(libc::SIGHUP);
    assert_eq!(s.wait_generation(2), 2);
    assert_eq!(s.get("h", "/m.txt").text(), "new");
    let status = s.proxyctl_json(&["status"]);
    assert_eq!(status["last_reload"]["trigger"], "signal");
    assert_eq!(status["last_reload"]["ok"], true);
}

#[test]
fn reload_by_proxyctl() {
    let site = Site::new();
    let f = site.file("m.txt", "old");
    let s = Server::start(
        Driver::Uring,
        &site,
        "[path_routes.\"h\".\"/m.txt\"]\npath = \"{site}/m.txt\"\nmode = \"memory\"\n",
    );
    std::fs::write(&f, "new").unwrap();
    let out = s.proxyctl(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("reloaded: generation 2"),
        "{out:?}"
    );
    assert_eq!(s.get("h", "/m.txt").text(), "new");
    let json = s.proxyctl_json(&["reload"]);
    assert_eq!(json["ok"], true);
    assert_eq!(json["generation"], 3);
    assert_eq!(json["trigger"], "admin");
}

#[test]
fn a_bad_file_is_refused_and_the_old_routes_keep_serving() {
    let site = two_roots();
    let s = start(&site, "a");
    let mut c = s.connect();
    assert_eq!(get_x(&mut c), "A");
    let bad = config_with(&s, &format!("{}mode = \"mmap\"\n", routes_to(&site, "b")));
    std::fs::write(&s.config_path, &bad).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    // Still generation 1, still A — on the open connection and on a new one.
    assert_eq!(get_x(&mut c), "A");
    assert_eq!(s.get("h", "/x.txt").text(), "A");
    assert_eq!(s.generation(), 1);
    let status = s.proxyctl_json(&["status"]);
    assert_eq!(status["last_reload"]["ok"], false);
    let error = status["last_reload"]["error"].as_str().unwrap();
    let file = s.config_path.display().to_string();
    assert!(error.contains(&format!("{file}:")), "{error}");
    assert!(
        error.contains("path_routes.h.\"/\".mode: unknown mode \"mmap\""),
        "{error}"
    );
    let log = s.wait_log("refused; still serving generation 1");
    assert!(log.contains("unknown mode"), "{log}");
    // proxyctl reload says so, exit 1.
    let out = s.proxyctl(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown mode"),
        "{out:?}"
    );
    // Human status shows the failure.
    let out = s.proxyctl(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAILED"), "{text}");
    // Fixing the file recovers.
    std::fs::write(&s.config_path, config_with(&s, &routes_to(&site, "b"))).unwrap();
    wait_served(&mut c, "B");
}

#[test]
fn restart_only_keys_are_reported_not_ignored() {
    let site = two_roots();
    let s = start(&site, "a");
    let text = std::fs::read_to_string(&s.config_path)
        .unwrap()
        .replace("threads = 1", "threads = 2");
    let text = text.replace("/a\"", "/b\"");
    std::fs::write(&s.config_path, text).unwrap();
    assert_eq!(s.wait_generation(2), 2);
    let status = s.proxyctl_json(&["status"]);
    assert_eq!(
        status["last_reload"]["restart_required"],
        serde_json::json!(["server.threads"])
    );
    // The live part applied; the restart part did not.
    assert_eq!(s.get("h", "/x.txt").text(), "B");
    assert_eq!(status["workers"], 1);
    let log = s.wait_log("restart required for changes to: server.threads");
    assert!(log.contains("restart required"), "{log}");
}

/// The heart of it: a client sends keep-alive requests without pause while the config is
/// swapped 50 times. Not one request fails, and the open connections see the new routes.
fn reload_under_load(d: Driver) {
    let site = two_roots();
    let s = Server::start_full(d, &site, "threads = 2", &routes_to(&site, "a"));
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (addr, stop, served) = (s.addr, stop.clone(), served.clone());
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let (mut seen_a, mut seen_b, mut switches, mut last) = (0, 0, 0, String::new());
                while !stop.load(Ordering::Relaxed) {
                    c.send(b"GET /x.txt HTTP/1.1\r\nHost: h\r\n\r\n");
                    let r = c.response(false);
                    assert_eq!(r.status, 200, "a request failed during reloads");
                    let body = r.text();
                    match body.as_str() {
                        "A" => seen_a += 1,
                        "B" => seen_b += 1,
                        other => panic!("unexpected body {other:?}"),
                    }
                    if !last.is_empty() && last != body {
                        switches += 1;
                    }
                    last = body;
                    served.fetch_add(1, Ordering::Relaxed);
                }
                (seen_a, seen_b, switches)
            })
        })
        .collect();
    let mut generation = 1;
    for i in 0..50 {
        let root = if i % 2 == 0 { "b" } else { "a" };
        std::fs::write(&s.config_path, config_with(&s, &routes_to(&site, root))).unwrap();
        generation = s.wait_generation(generation + 1);
        assert!(generation >= i + 2, "reload {i} did not happen");
        std::thread::sleep(Duration::from_millis(15));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let (a, b, switches) = c.join().expect("a client failed");
        assert!(
            a > 0 && b > 0,
            "each connection saw both configs: a={a} b={b}"
        );
        assert!(
            switches >= 10,
            "the open connection followed the swaps: {switches}"
        );
    }
    assert!(served.load(Ordering::Relaxed) > 200);
}

/// Drain with a slow response in flight: it completes with 200 and `Connection: close`, new
/// connections are refused, idle keep-alive connections are closed, and the daemon exits 0.
fn drain_finishes_in_flight_work(d: Driver) {
    let site = Site::new();
    let body: Vec<u8> = (0..16 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    site.file("big.bin", &body);
    let mut s = Server::start(d, &site, "[host_routes.\"h\"]\npath = \"{site}\"\n");
    // An idle keep-alive connection.
    let mut idle = s.connect();
    idle.send(b"GET /big.bin HTTP/1.1\r\nHost: h\r\nRange: bytes=0-0\r\n\r\n");
    assert_eq!(idle.response(false).status, 206);
    // A slow reader in the middle of a 16 MiB response.
    let mut slow = s.connect();
    slow.stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    slow.send(b"GET /big.bin HTTP/1.1\r\nHost: h\r\n\r\n");
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            match slow.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("slow reader: {e}"),
            }
        }
        got
    });
    std::thread::sleep(Duration::from_millis(200));
    s.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    s.assert_alive();
    // The status shows the drain, new connections are refused, the idle one was closed.
    let status = s.proxyctl_json(&["status"]);
    assert_eq!(status["state"], "draining");
    assert!(status["connections"].as_u64().unwrap() >= 1);
    assert!(
        std::net::TcpStream::connect(s.addr).is_err(),
        "new connections must be refused"
    );
    assert!(
        idle.is_closed(),
        "idle keep-alive connections close on drain"
    );
    // A reload during the drain is refused, and the state stays "draining".
    let r = s.proxyctl_json(&["reload"]);
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().contains("draining"));
    assert_eq!(s.proxyctl_json(&["status"])["state"], "draining");
    let got = reader.join().unwrap();
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&got[..head_end]);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        got[head_end..] == body[..],
        "the in-flight body arrived whole"
    );
    // 30 s: the process's last steps are the kernel's (closing the inotify watcher waits for
    // an SRCU grace period in `__flush_work`), which a loaded CI machine has seen take over
    // 10 s after the daemon's own "stopped".
    let code = s.wait_exit(Duration::from_secs(30));
    assert_eq!(
        code,
        Some(0),
        "the daemon did not exit 0; its log:\n{}",
        s.log()
    );
    let log = s.log();
    let order = [
        "state: starting",
        "state: starting -> running",
        "state: running -> draining",
        "state: draining -> stopped",
    ];
    let mut at = 0;
    for step in order {
        let i = log[at..]
            .find(step)
            .unwrap_or_else(|| panic!("{step:?} missing or out of order:\n{log}"));
        at += i;
    }
}

#[test]
fn proxyctl_drain_reports_progress_until_stopped() {
    let site = Site::new();
    site.file("big.bin", vec![7u8; 8 * 1024 * 1024]);
    let mut s = Server::start(
        Driver::Uring,
        &site,
        "[host_routes.\"h\"]\npath = \"{site}\"\n",
    );
    // Hold a response open by not reading it.
    let mut stuck = s.connect();
    stuck.send(b"GET /big.bin HTTP/1.1\r\nHost: h\r\n\r\n");
    std::thread::sleep(Duration::from_millis(100));
    let out = s.proxyctl(&["drain", "--timeout", "2", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 2, "{lines:?}");
    assert!(lines[0]["connections"].as_u64().unwrap() >= 1);
    assert_eq!(lines.last().unwrap()["seconds_left"], 0);
    // The stuck response could not finish: the deadline ended it, and still exit 0.
    assert_eq!(s.wait_exit(Duration::from_secs(3)), Some(0));
    drop(stuck);
}

#[test]
fn proxyctl_drain_human_output() {
    let site = Site::new();
    let mut s = Server::start(
        Driver::Uring,
        &site,
        "[host_routes.\"h\"]\npath = \"{site}\"\n",
    );
    let out = s.proxyctl(&["drain"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("draining: "), "{text}");
    assert!(text.trim_end().ends_with("stopped"), "{text}");
    assert_eq!(s.wait_exit(Duration::from_secs(3)), Some(0));
}

#[test]
fn a_second_stop_signal_exits_at_once() {
    let site = Site::new();
    site.file("big.bin", vec![7u8; 8 * 1024 * 1024]);
    let mut s = Server::start(
        Driver::Uring,
        &site,
        "[host_routes.\"h\"]\npath = \"{site}\"\n",
    );
    let mut stuck = s.connect();
    stuck.send(b"GET /big.bin HTTP/1.1\r\nHost: h\r\n\r\n");
    std::thread::sleep(Duration::from_millis(100));
    s.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        s.wait_exit(Duration::from_millis(100)),
        None,
        "waits for the stuck response"
    );
    s.signal(libc::SIGINT);
    assert_eq!(s.wait_exit(Duration::from_secs(1)), Some(0));
    assert!(s.log().contains("second stop signal"));
    drop(stuck);
}

#[test]
fn proxyctl_status_routes_explain_check_human_and_json() {
    let site = Site::new();
    site.file("www/index.html", "i");
    site.file("robots.txt", "r");
    let s = Server::start(
        Driver::Uring,
        &site,
        r#"[host_routes."api.test"]
type = "Proxy"
url = "http://127.0.0.1:9/base/"

[path_routes."h.test"."/robots.txt"]
path = "{site}/robots.txt"

[path_routes."h.test"."/static/"]
path = "{site}/www"
mode = "memory"
security = { allowed_methods = ["GET", "HEAD"], allowed_ips = ["10.0.0.0/8"], rate_limit_requests_per_min = 60 }
"#,
    );
    // status
    let st = s.proxyctl_json(&["status"]);
    for key in [
        "state",
        "generation",
        "connections",
        "pid",
        "uptime_secs",
        "workers",
        "in_flight",
        "config_path",
    ] {
        assert!(st.get(key).is_some(), "status --json lacks {key}: {st}");
    }
    assert_eq!(st["state"], "running");
    assert_eq!(st["generation"], 1);
    assert_eq!(st["last_reload"]["ok"], true);
    assert_eq!(st["last_reload"]["trigger"], "start");
    assert!(st["last_reload"]["error"].is_null());
    let out = s.proxyctl(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for word in [
        "running",
        "generation",
        &s.config_path.display().to_string(),
    ] {
        assert!(text.contains(word), "status lacks {word}: {text}");
    }
    // routes
    let routes = s.proxyctl_json(&["routes"]);
    let routes = routes.as_array().unwrap();
    assert_eq!(routes.len(), 3);
    let api = routes.iter().find(|r| r["host"] == "api.test").unwrap();
    assert!(api["prefix"].is_null());
    assert_eq!(api["backend"], "Proxy");
    assert_eq!(api["target"], "http://127.0.0.1:9/base/");
    // Prefixes as written in the file ("/static/" stays "/static/").
    let st_route = routes.iter().find(|r| r["prefix"] == "/static/").unwrap();
    assert_eq!(st_route["backend"], "File");
    assert_eq!(
        st_route["policy"]["allowed_ips"],
        serde_json::json!(["10.0.0.0/8"])
    );
    let out = s.proxyctl(&["routes"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("HOST") && text.contains("BACKEND"), "{text}");
    assert!(
        text.contains("api.test") && text.contains("/static/ ") && text.contains("10.0.0.0/8"),
        "{text}"
    );
    // explain: a proxy route, with prefix stripping and the query kept
    let ex = s.proxyctl_json(&["explain", "API.test:8080", "/v1/users?x=1"]);
    assert_eq!(ex["matched"], true);
    assert_eq!(ex["host"], "api.test");
    assert!(ex["prefix"].is_null());
    assert_eq!(ex["backend"], "Proxy");
    assert_eq!(ex["resolved"], "http://127.0.0.1:9/base/v1/users?x=1");
    assert!(ex["status"].is_null(), "forwarded: the upstream answers");
    // An absolute-form target's authority wins over the Host header, as for a request.
    let ex = s.proxyctl_json(&["explain", "h.test", "http://api.test/v1/x"]);
    assert_eq!(ex["host"], "api.test");
    assert_eq!(ex["resolved"], "http://127.0.0.1:9/base/v1/x");
    // explain: a directory route resolves to its index
    let ex = s.proxyctl_json(&["explain", "h.test", "/static"]);
    assert_eq!(
        ex["resolved"],
        site.path().join("www/index.html").display().to_string()
    );
    assert_eq!(ex["policy"]["rate_limit_requests_per_min"], 60);
    assert_eq!(ex["prefix"], "/static/");
    assert_eq!(ex["status"], 200);
    let out = s.proxyctl(&["explain", "h.test", "/static/"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("index.html"));
    // explain says what the daemon would answer, and exits 1 unless it would serve it; each
    // answer is checked against a real request.
    let answers: [(&[&str], u16, &str); 7] = [
        (&["explain", "nowhere.test", "/"], 404, "no route for host"),
        (&["explain", "h.test", "/nothing"], 404, "no route of"),
        (
            &["explain", "h.test", "/static/missing.html"],
            404,
            "not found",
        ),
        (&["explain", "h.test", "/robots.txt/extra"], 404, "exactly"),
        (
            &["explain", "h.test", "/static/", "-X", "POST"],
            405,
            "allowed_methods",
        ),
        (
            &["explain", "h.test", "/static/", "--from", "192.0.2.1"],
            403,
            "not allowed",
        ),
        (&["explain", "h.test", "/%2e%2e/x"], 400, "refused"),
    ];
    for (args, status, why) in answers {
        let out = s.proxyctl(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&status.to_string()), "{args:?}: {text}");
        let ex = s.proxyctl_json(args);
        assert_eq!(ex["status"], status, "{args:?}: {ex}");
        assert!(
            ex["reason"].as_str().unwrap().contains(why),
            "{args:?}: {ex}"
        );
    }
    let out = s.proxyctl(&["explain", "h.test", "/static/", "--from", "10.1.2.3"]);
    assert!(out.status.success(), "an allowed address: {out:?}");
    assert_eq!(s.get("h.test", "/robots.txt/extra").status, 404);
    assert_eq!(s.get("nowhere.test", "/").status, 404);
    // An exact-file route whose file went away: 404, as a request gets.
    let ex = s.proxyctl_json(&["explain", "h.test", "/robots.txt"]);
    assert_eq!(ex["status"], 200, "{ex}");
    std::fs::remove_file(site.path().join("robots.txt")).unwrap();
    assert_eq!(s.get("h.test", "/robots.txt").status, 404);
    let ex = s.proxyctl_json(&["explain", "h.test", "/robots.txt"]);
    assert_eq!(ex["status"], 404, "{ex}");
    assert_eq!(ex["matched"], true);
    let out = s.proxyctl(&["explain", "h.test", "/robots.txt"]);
    assert_eq!(out.status.code(), Some(1));
    site.file("robots.txt", "r");
    // check: the running file
    let out = s.proxyctl(&["check"]);
    assert!(out.status.success(), "{out:?}");
    // check: another file, with what a reload would change
    let other = site.file(
        "other.toml",
        format!(
            "[server]\nlisten = \"127.0.0.1:1\"\nthreads = 4\n\n[path_routes.\"h.test\".\"/static\"]\npath = \"{}/www\"\n\n[path_routes.\"h.test\".\"/new/\"]\npath = \"{}/www\"\n",
            site.path().display(),
            site.path().display()
        ),
    );
    // The daemon itself reads no file but its own config for a check: asked for another path
    // without its text (which proxyctl sends), it refuses.
    let raw = s.admin(serde_json::json!({"command": "check", "file": other.to_str().unwrap()}));
    assert_eq!(raw["data"]["ok"], false);
    assert!(
        raw["data"]["errors"][0]
            .as_str()
            .unwrap()
            .contains("send the file's text"),
        "{raw}"
    );
    let ck = s.proxyctl_json(&["check", other.to_str().unwrap()]);
    assert_eq!(ck["ok"], true);
    // Routes as written: "/new/" is shown so; "/static" is the same route as "/static/" (its
    // policy and mode changed).
    assert_eq!(
        ck["changes"]["added"],
        serde_json::json!([{"host": "h.test", "prefix": "/new/"}])
    );
    assert_eq!(
        ck["changes"]["changed"],
        serde_json::json!([{"host": "h.test", "prefix": "/static"}])
    );
    assert_eq!(
        ck["changes"]["removed"],
        serde_json::json!([{"host": "api.test", "prefix": null}, {"host": "h.test", "prefix": "/robots.txt"}])
    );
    let restart = ck["restart_required"].as_array().unwrap();
    assert!(
        restart.contains(&serde_json::json!("server.listen")),
        "{ck}"
    );
    assert!(
        restart.contains(&serde_json::json!("server.threads")),
        "{ck}"
    );
    let out = s.proxyctl(&["check", other.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/new") && text.contains("server.threads"),
        "{text}"
    );
    // check: a bad file, exit 1, nothing applied
    let bad = site.file("bad.toml", "[server]\nlisten = \"nope\"\n");
    let out = s.proxyctl(&["check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let ck = s.proxyctl_json(&["check", bad.to_str().unwrap()]);
    assert_eq!(ck["ok"], false);
    assert!(ck["errors"][0].as_str().unwrap().contains("server.listen"));
    assert_eq!(s.generation(), 1);
}

#[test]
fn admin_socket_mode_stale_and_live() {
    let site = Site::new();
    let s = Server::start(
        Driver::Uring,
        &site,
        "[host_routes.\"h\"]\npath = \"{site}\"\n",
    );
    let mode = std::fs::metadata(&s.admin_socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
    // A second daemon on the same socket is refused, with a clear message.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"{}\"\n[admin]\nsocket = \"{}\"\n",
            crate::common::free_addr(),
            s.admin_socket.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(crate::common::BIN)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another zerocopy-server answers"),
        "{out:?}"
    );
    // A stale socket file (nobody listening) is replaced; a missing directory is created.
    let stale_dir = tempfile::tempdir().unwrap();
    let sock = stale_dir.path().join("run/zcs/admin.sock");
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    // A file that is not a socket is never deleted: start-up is refused instead.
    let not_socket = stale_dir.path().join("precious.txt");
    std::fs::write(&not_socket, "keep me").unwrap();
    let cfg2 = stale_dir.path().join("c2.toml");
    let text2 = format!(
        "[server]\nlisten = \"{}\"\n[admin]\nsocket = \"{}\"\n",
        crate::common::free_addr(),
        not_socket.display()
    );
    std::fs::write(&cfg2, text2).unwrap();
    let out = std::process::Command::new(crate::common::BIN)
        .arg("--config")
        .arg(&cfg2)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a socket"),
        "{out:?}"
    );
    assert_eq!(std::fs::read_to_string(&not_socket).unwrap(), "keep me");
    // A missing directory is created.
    let fresh = stale_dir.path().join("new/dir/admin.sock");
    let fresh_addr = crate::common::free_addr();
    let fresh_toml = format!(
        "[server]\nlisten = \"{fresh_addr}\"\nthreads = 1\n[admin]\nsocket = \"{}\"\n",
        fresh.display()
    );
    let s3 = Server::start_with_config(Driver::Uring, fresh_addr, &fresh_toml);
    assert!(fresh.exists());
    drop(s3);
    let addr = crate::common::free_addr();
    let toml = format!(
        "[server]\nlisten = \"{addr}\"\nthreads = 1\n[admin]\nsocket = \"{}\"\n",
        sock.display()
    );
    let s2 = Server::start_with_config(Driver::Uring, addr, &toml);
    let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    c.write_all(b"{\"version\":1,\"command\":\"status\"}\n")
        .unwrap();
    drop(s2);
}

#[test]
fn proxyctl_without_a_daemon_says_so() {
    let out = std::process::Command::new(proxyctl_bin())
        .args(["--socket", "/nonexistent/zcs.sock", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "proxyctl: is zerocopy-server running? /nonexistent/zcs.sock: no such file"
    );
}

#[test]
fn an_old_protocol_version_gets_a_clear_error() {
    let site = Site::new();
    let s = Server::start(
        Driver::Uring,
        &site,
        "[host_routes.\"h\"]\npath = \"{site}\"\n",
    );
    use std::io::BufRead;
    let mut c = std::os::unix::net::UnixStream::connect(&s.admin_socket).unwrap();
    c.write_all(b"{\"version\":99,\"command\":\"status\"}\n")
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(c).read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["result"], "error");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("version 99 is not supported"),
        "{v}"
    );
}

/// `Type=notify`: READY=1 once listening, RELOADING=1 then READY=1 around a reload, STOPPING=1
/// on drain.
#[test]
fn systemd_notifications() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let site = Site::new();
    let addr = crate::common::free_addr();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"{addr}\"\nthreads = 1\n[admin]\nsocket = \"{}/admin.sock\"\n[host_routes.h]\npath = \"{}\"\n",
            dir.path().display(),
            site.path().display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(crate::common::BIN)
        .arg("--config")
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &notify_path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let mut next = || {
        let n = notify.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next(), "READY=1");
    assert!(
        std::net::TcpStream::connect(addr).is_ok(),
        "listening when READY=1 is sent"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    assert!(next().starts_with("RELOADING=1\nMONOTONIC_USEC="));
    assert_eq!(next(), "READY=1");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(next(), "STOPPING=1");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// The shipped units (the service, and the socket-activation example) pass `systemd-analyze
/// verify` (with the binary paths pointed at this build). Skipped where systemd-analyze is
/// missing.
#[test]
fn systemd_unit_verifies() {
    let Ok(v) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        // CI installs it (.ci/run); elsewhere the check is skipped.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have systemd-analyze"
        );
        eprintln!("skipped: no systemd-analyze");
        return;
    };
    assert!(v.status.success());
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/zerocopy-server.service"
    ))
    .unwrap()
    .replace("/usr/local/bin/zerocopy-server", crate::common::BIN)
    .replace("/usr/local/bin/proxyctl", proxyctl_bin().to_str().unwrap());
    for key in [
        "Type=notify",
        "ExecReload=",
        "RuntimeDirectory=",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "Environment=GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=",
        // A binary upgrade: the new process speaks before it is the main one, and the old
        // one, still draining, is not the one SIGTERM goes to.
        "NotifyAccess=all",
        "KillMode=mixed",
    ] {
        assert!(unit.contains(key), "the unit lacks {key}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zerocopy-server.service");
    std::fs::write(&path, unit).unwrap();
    // The socket-activation example, next to its service.
    let socket = dir.path().join("zerocopy-server.socket");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/systemd/socket/zerocopy-server.socket"
        ),
        &socket,
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .arg(&socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

crate::both_drivers!(reload_under_load, drain_finishes_in_flight_work);

//! The control plane never hangs: files a config names that never end (a FIFO, `/dev/zero`, a
//! 10 GB file) are refused at once; a slow reload build does not stop `status` or `SIGTERM`,
//! and one past its deadline is given up; silent clients of the admin socket and of the
//! metrics listener cannot lock anyone out.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_addr, proxyctl_bin, Driver, Server, Site, BIN};

/// Runs `cmd`, failing the test if it has not ended within `within`.
fn run_within(cmd: &mut Command, within: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(within) {
        Ok(out) => (out.unwrap(), started.elapsed()),
        Err(_) => {
            // SAFETY: kill of the child's pid.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("{cmd:?} did not end within {within:?}");
        }
    }
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

/// A FIFO, `/dev/zero` or a 10 GB file named as a CA, certificate, key or memory-mode file is
/// refused at once with its key — by `proxyctl check` while the daemon keeps answering, and
/// by `--check` — where before the control thread hung forever (or read without end).
#[test]
fn files_that_never_end_are_refused_at_once() {
    let site = Site::new();
    site.file("www/index.html", "x");
    let s = Server::start(
        Driver::Uring,
        &site,
        "[path_routes.\"h\".\"/\"]\npath = \"{site}/www\"\n",
    );
    let fifo = site.path().join("fifo.pem");
    mkfifo(&fifo);
    let huge = site.path().join("huge.pem");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(10 << 30)
        .unwrap();
    let head = format!("[server]\nlisten = \"{}\"\n", free_addr());
    let cases = [
        (
            format!(
                "{head}[path_routes.\"h\".\"/api/\"]\ntype = \"Proxy\"\nurl = \"https://127.0.0.1:9\"\nca_file = \"{}\"\n",
                fifo.display()
            ),
            "ca_file",
            "not a regular file",
        ),
        (
            format!(
                "{head}[tls]\ncert_path = \"/dev/zero\"\nkey_path = \"{}\"\n",
                fifo.display()
            ),
            "tls.cert_path",
            "not a regular file",
        ),
        (
            format!(
                "{head}[path_routes.\"h\".\"/api/\"]\ntype = \"Proxy\"\nurl = \"https://127.0.0.1:9\"\nca_file = \"{}\"\n",
                huge.display()
            ),
            "ca_file",
            "larger than 1 MiB",
        ),
        (
            format!(
                "{head}[path_routes.\"h\".\"/m\"]\npath = \"{}\"\nmode = \"memory\"\n",
                fifo.display()
            ),
            "path_routes.h.\"/m\".path",
            "neither a regular file nor a directory",
        ),
    ];
    for (i, (text, key, reason)) in cases.iter().enumerate() {
        let file = site.file(&format!("case{i}.toml"), text);
        let (out, took) = run_within(
            Command::new(proxyctl_bin())
                .arg("--socket")
                .arg(&s.admin_socket)
                .arg("check")
                .arg(&file),
            Duration::from_secs(10),
        );
        assert_eq!(out.status.code(), Some(1), "case {i}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(key) && text.contains(reason),
            "case {i}: {text}"
        );
        assert!(took < Duration::from_secs(3), "case {i} took {took:?}");
        let (out, took) = run_within(
            Command::new(BIN).arg("--check").arg("--config").arg(&file),
            Duration::from_secs(10),
        );
        assert_eq!(out.status.code(), Some(1), "case {i}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(reason),
            "case {i}: {out:?}"
        );
        assert!(took < Duration::from_secs(3), "case {i} took {took:?}");
    }
    // A 10 GB certificate (`--check` only: a reload cannot add [tls]).
    let file = site.file(
        "huge-cert.toml",
        format!(
            "{head}[tls]\ncert_path = \"{}\"\nkey_path = \"{}\"\n",
            huge.display(),
            huge.display()
        ),
    );
    let (out, took) = run_within(
        Command::new(BIN).arg("--check").arg("--config").arg(&file),
        Duration::from_secs(10),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("tls.cert_path") && err.contains("larger than 1 MiB"),
        "{err}"
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    // The daemon answered throughout and still does; SIGTERM still works.
    assert_eq!(s.proxyctl_json(&["status"])["state"], "running");
    let mut s = s;
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(5)), Some(0));
}

fn start_slow(site: &Site, env: &[(&str, &str)]) -> Server {
    site.file("www/index.html", "x");
    let addr = free_addr();
    let toml = format!(
        "[server]\nlisten = \"{addr}\"\nthreads = 1\n[logging]\nlevel = \"debug\"\n\
         [admin]\nsocket = \"{{dir}}/admin.sock\"\n[path_routes.\"h\".\"/\"]\npath = \"{}/www\"\n",
        site.path().display()
    );
    Server::start_with_env(Driver::Uring, addr, &toml, env)
}

/// A reload whose build takes long (standing in for a DNS lookup that hangs) runs off the
/// control thread: `status` answers meanwhile (state `reloading`), and `SIGTERM` ends the daemon
/// without waiting for the build.
#[test]
fn a_slow_build_stops_neither_status_nor_sigterm() {
    let site = Site::new();
    let mut s = start_slow(&site, &[("ZEROCOPY_TEST_BUILD_DELAY_MS", "6000")]);
    let reload = |s: &Server| {
        let socket = s.admin_socket.clone();
        std::thread::spawn(move || {
            Command::new(proxyctl_bin())
                .arg("--socket")
                .arg(&socket)
                .args(["reload", "--json"])
                .output()
                .unwrap()
        })
    };
    let reloading = |s: &Server| {
        // Each status answers at once, the build running or not.
        let started = Instant::now();
        let st = s.admin(serde_json::json!({"command": "status"}));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "status took {:?}",
            started.elapsed()
        );
        st["data"]["state"] == "reloading"
    };
    let wait_reloading = |s: &Server| {
        let started = Instant::now();
        while !reloading(s) {
            assert!(
                started.elapsed() < Duration::from_secs(4),
                "no reload began"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let first = reload(&s);
    wait_reloading(&s);
    // Requests are served from the old snapshot meanwhile.
    assert_eq!(s.get("h", "/").status, 200);
    let out = first.join().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["generation"], 2);
    assert!(!reloading(&s), "running again");
    // Once more, and SIGTERM in the middle of the build: the daemon exits well before the
    // build would end.
    let _second = reload(&s);
    wait_reloading(&s);
    let started = Instant::now();
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(4)), Some(0), "{}", s.log());
    assert!(started.elapsed() < Duration::from_secs(4));
}

/// A build past its deadline is given up: the reload is reported as failed, the old config
/// keeps serving, and the build's late result is dropped.
#[test]
fn a_build_past_its_deadline_is_given_up() {
    let site = Site::new();
    let s = start_slow(
        &site,
        &[
            ("ZEROCOPY_TEST_BUILD_DELAY_MS", "4000"),
            ("ZEROCOPY_TEST_BUILD_DEADLINE_MS", "500"),
        ],
    );
    let started = Instant::now();
    let report = s.proxyctl_json(&["reload"]);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered before the build ended: {:?}",
        started.elapsed()
    );
    assert_eq!(report["ok"], false, "{report}");
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("did not finish building within 0.5s"),
        "{report}"
    );
    assert_eq!(report["generation"], 1);
    // The late result comes and goes: still generation 1, running, serving.
    let log = s.wait_log("abandoned config build");
    assert!(log.contains("abandoned config build"), "{log}");
    let st = s.proxyctl_json(&["status"]);
    assert_eq!(
        (st["generation"].as_u64(), st["state"].as_str()),
        (Some(1), Some("running"))
    );
    assert_eq!(st["last_reload"]["ok"], false);
    assert_eq!(s.get("h", "/").status, 200);
}

/// 40 admin clients that connect and say nothing do not keep `proxyctl` out; past the bound,
/// a client is told "busy" at once; a silent client is closed after 5 s, and so is one that
/// trickles a byte a second without ever ending its line.
#[test]
fn silent_admin_clients_do_not_lock_out_proxyctl() {
    let site = Site::new();
    let s = start_slow(&site, &[]);
    let silent: Vec<UnixStream> = (0..40)
        .map(|_| UnixStream::connect(&s.admin_socket).unwrap())
        .collect();
    let mut trickle = UnixStream::connect(&s.admin_socket).unwrap();
    let trickler = std::thread::spawn(move || {
        let started = Instant::now();
        for _ in 0..20 {
            if trickle.write_all(b" ").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        started.elapsed()
    });
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let st = s.admin(serde_json::json!({"command": "status"}));
    assert_eq!(st["data"]["state"], "running", "{st}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(s.proxyctl(&["status"]).status.success());
    // Past 64 open at once: "busy", at once.
    let more: Vec<UnixStream> = (0..30)
        .map(|_| UnixStream::connect(&s.admin_socket).unwrap())
        .collect();
    let last = more.last().unwrap();
    last.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut line = String::new();
    BufReader::new(last).read_line(&mut line).unwrap();
    assert!(line.contains("busy"), "{line}");
    // The silent ones are closed by the daemon after 5 s.
    let first = &silent[0];
    first
        .set_read_timeout(Some(Duration::from_secs(8)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert_eq!((&*first).read(&mut buf).unwrap(), 0, "closed by the daemon");
    // The trickler too: its writes fail after about 5 s, not after its 10 s of bytes.
    let lasted = trickler.join().unwrap();
    assert!(lasted < Duration::from_secs(8), "{lasted:?}");
    drop(more);
    drop(silent);
    std::thread::sleep(Duration::from_millis(200));
    assert!(s.proxyctl(&["status"]).status.success());
}

/// 40 scrapers that connect and say nothing do not stop a real scrape.
#[test]
fn silent_metrics_clients_do_not_block_scrapes() {
    let site = Site::new();
    site.file("www/index.html", "x");
    let addr = free_addr();
    let metrics = free_addr();
    let toml = format!(
        "[server]\nlisten = \"{addr}\"\nthreads = 1\n[admin]\nsocket = \"{{dir}}/admin.sock\"\n\
         metrics_listen = \"{metrics}\"\n[path_routes.\"h\".\"/\"]\npath = \"{}/www\"\n",
        site.path().display()
    );
    let _s = Server::start_with_config(Driver::Uring, addr, &toml);
    let silent: Vec<std::net::TcpStream> = (0..40)
        .map(|_| std::net::TcpStream::connect(metrics).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let mut c = std::net::TcpStream::connect(metrics).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n")
        .unwrap();
    let mut all = Vec::new();
    c.read_to_end(&mut all).unwrap();
    assert!(
        all.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&all)
    );
    // (One scrape, no process started: a second is plenty.)
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
}

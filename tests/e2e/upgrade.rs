//! Binary upgrades (`proxyctl upgrade`, `SIGUSR2`): under load without a failed request or a
//! refused connection, ten times in a row; a WebSocket tunnel that lives on in the old process
//! until its drain deadline; rollback when the new binary exits, hangs or refuses its config;
//! systemd told the new main pid; and systemd socket activation.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{free_addr, proxyctl_bin, Driver, Server, Site, BIN};
use crate::upstream::{pattern, Upstream};

/// Routes of most tests here: `h` serves `{site}/www` (where `f.bin` is).
const FILES: &str = "[path_routes.h]\n\"/\" = { path = \"{site}/www\" }\n";

/// The daemon and every process an upgrade started: all killed at the end.
struct Daemon {
    s: Server,
    pids: Vec<i32>,
}

impl Daemon {
    fn start(d: Driver, site: &Site, server_extra: &str, rest: &str) -> Self {
        site.file("www/f.bin", pattern(4096));
        let s = Server::start_full(d, site, &format!("threads = 2\n{server_extra}"), rest);
        let pid = s.child.id() as i32;
        Self { s, pids: vec![pid] }
    }

    fn status(&self) -> Value {
        self.s.proxyctl_json(&["status"])
    }

    /// `status` once a reload the config watcher started (the tests rewrite the config) is
    /// over: within 10 s.
    fn settled_status(&self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = self.status();
            if st["state"] != "reloading" || Instant::now() > deadline {
                return st;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> i32 {
        self.status()["pid"].as_i64().unwrap() as i32
    }

    /// `proxyctl upgrade ARGS`: exit code, stdout, stderr.
    fn upgrade(&mut self, args: &[&str]) -> (i32, String, String) {
        let out = self.s.proxyctl(&[&["upgrade"], args].concat());
        let code = out.status.code().unwrap_or(-1);
        if code == 0 {
            let pid = self.pid();
            self.pids.push(pid);
        }
        (
            code,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Also whoever serves now (a test that failed half-way may not have noted it).
        if let Some(pid) = serving_pid(&self.s.admin_socket) {
            self.pids.push(pid);
        }
        for &pid in &self.pids {
            // SAFETY: kill with a pid this test started (directly or through an upgrade).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// The pid `status` reports, asked within 2 s; `None` on any failure.
fn serving_pid(admin: &std::path::Path) -> Option<i32> {
    let mut s = std::os::unix::net::UnixStream::connect(admin).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"{\"version\":1,\"command\":\"status\"}\n")
        .ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    let v: Value = serde_json::from_str(&line).ok()?;
    v["data"]["pid"].as_i64().map(|p| p as i32)
}

fn alive(pid: i32) -> bool {
    // A zombie (the first daemon is this test's child) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.split(' ').nth(2).is_none_or(|state| state != "Z"))
}

fn wait_gone(pid: i32, within: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// What the load generator saw.
#[derive(Default)]
struct Load {
    requests: AtomicU64,
    /// Connections refused or reset before a request went out.
    refused: AtomicU64,
    /// Requests sent and not answered in full (no response, a cut body, a wrong byte).
    failed: AtomicU64,
    /// Responses that said `Connection: close` (the old process draining).
    closes: AtomicU64,
}

/// One keep-alive client: GET `/f.bin` in a loop until `stop`, reconnecting after a
/// `Connection: close`, checking every byte.
fn client(addr: SocketAddr, stop: &AtomicBool, load: &Load) {
    let want = pattern(4096);
    let mut conn: Option<BufReader<TcpStream>> = None;
    while !stop.load(Ordering::Relaxed) {
        let c = match &mut conn {
            Some(c) => c,
            None => match TcpStream::connect(addr) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    conn.insert(BufReader::new(s))
                }
                Err(_) => {
                    load.refused.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            },
        };
        let sent = c
            .get_mut()
            .write_all(b"GET /f.bin HTTP/1.1\r\nHost: h\r\n\r\n");
        if sent.is_err() {
            load.failed.fetch_add(1, Ordering::Relaxed);
            conn = None;
            continue;
        }
        match read_response(c) {
            Some((body, close)) if body == want => {
                load.requests.fetch_add(1, Ordering::Relaxed);
                if close {
                    load.closes.fetch_add(1, Ordering::Relaxed);
                    conn = None;
                }
            }
            _ => {
                load.failed.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
        }
    }
}

/// A response's body and whether it said `Connection: close`; `None` when it did not arrive
/// whole.
fn read_response(c: &mut BufReader<TcpStream>) -> Option<(Vec<u8>, bool)> {
    let mut line = String::new();
    c.read_line(&mut line).ok()?;
    if !line.starts_with("HTTP/1.1 200") {
        return None;
    }
    let (mut len, mut close) = (None, false);
    loop {
        line.clear();
        c.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (name, value) = l.split_once(':')?;
        if name.eq_ignore_ascii_case("content-length") {
            len = value.trim().parse().ok();
        }
        if name.eq_ignore_ascii_case("connection") && value.trim().eq_ignore_ascii_case("close") {
            close = true;
        }
    }
    let mut body = vec![0; len?];
    c.read_exact(&mut body).ok()?;
    Some((body, close))
}

/// Ten upgrades in a row while 50 keep-alive clients keep the daemon busy: every request is
/// answered in full, no connection is refused, and each old process exits once drained.
fn ten_upgrades_under_load(d: Driver, upgrades: usize) {
    let site = Site::new();
    let mut daemon = Daemon::start(d, &site, "", FILES);
    let addr = daemon.s.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Load::default());
    let clients: Vec<_> = (0..50)
        .map(|_| {
            let (stop, load) = (stop.clone(), load.clone());
            std::thread::spawn(move || client(addr, &stop, &load))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut old = Vec::new();
    for i in 0..upgrades {
        let before = daemon.pid();
        let (code, out, err) = daemon.upgrade(&[]);
        assert_eq!(code, 0, "upgrade {i}: {out}{err}\n{}", daemon.s.log());
        assert!(out.contains("upgraded: pid "), "{out}");
        let after = daemon.pid();
        assert_ne!(before, after, "upgrade {i}");
        old.push(before);
        let served = load.requests.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(250));
        assert!(
            load.requests.load(Ordering::Relaxed) > served,
            "requests flow after upgrade {i}"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let (requests, refused, failed, closes) = (
        load.requests.load(Ordering::Relaxed),
        load.refused.load(Ordering::Relaxed),
        load.failed.load(Ordering::Relaxed),
        load.closes.load(Ordering::Relaxed),
    );
    eprintln!("{upgrades} upgrades: {requests} requests, {closes} closed by a drain, {refused} refused, {failed} failed");
    assert_eq!((refused, failed), (0, 0), "{}", daemon.s.log());
    assert!(requests > 1000, "{requests}");
    assert!(
        closes >= 50,
        "each old process closed its connections politely: {closes}"
    );
    for pid in old {
        assert!(
            wait_gone(pid, Duration::from_secs(10)),
            "old pid {pid} drained and exited"
        );
    }
    let status = daemon.status();
    assert_eq!(status["state"], "running");
    assert_eq!(status["last_upgrade"]["ok"], true);
    assert_eq!(status["listeners"][0]["sockets"], "inherited");
}

fn upgrade_under_load(d: Driver) {
    ten_upgrades_under_load(d, 10);
}

fn upgrade_under_load_epoll(d: Driver) {
    ten_upgrades_under_load(d, 3);
}

/// A WebSocket tunnel opened before an upgrade keeps working in the old process until its
/// drain deadline (`shutdown_timeout_secs`), while new connections go to the new process.
fn websocket_lives_until_the_drain_deadline(d: Driver) {
    let up = Upstream::start();
    let site = Site::new();
    let mut daemon = Daemon::start(
        d,
        &site,
        "shutdown_timeout_secs = 3\n",
        &format!(
            "[path_routes.h]\n\"/\" = {{ path = \"{{site}}/www\" }}\n\"/app/\" = {{ type = \"Proxy\", url = \"http://{}\" }}\n",
            up.addr
        ),
    );
    let mut ws = TcpStream::connect(daemon.s.addr).unwrap();
    ws.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    ws.write_all(
        b"GET /app/ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        ws.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let echo = |ws: &mut TcpStream, msg: &[u8]| {
        ws.write_all(msg).unwrap();
        let mut got = vec![0; msg.len()];
        ws.read_exact(&mut got).unwrap();
        assert_eq!(got, msg);
    };
    echo(&mut ws, b"before");
    let old = daemon.pid();
    let (code, out, err) = daemon.upgrade(&[]);
    assert_eq!(code, 0, "{out}{err}");
    let upgraded = Instant::now();
    echo(&mut ws, b"after the upgrade");
    assert!(alive(old), "the old process drains with the tunnel open");
    // New connections: the new process.
    let r = daemon.s.get("h", "/f.bin");
    assert_eq!(r.status, 200);
    std::thread::sleep(Duration::from_secs(1));
    echo(&mut ws, b"still there");
    // At the deadline the old process closes the tunnel and exits.
    let mut rest = Vec::new();
    let _ = ws.read_to_end(&mut rest);
    let closed = upgraded.elapsed();
    assert!(
        closed >= Duration::from_millis(2500) && closed < Duration::from_secs(8),
        "closed after {closed:?}"
    );
    assert!(wait_gone(old, Duration::from_secs(5)));
}

/// An executable shell script `name` in `site` running `body`.
fn script(site: &Site, name: &str, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = site.file(name, format!("#!/bin/sh\n{body}\n"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// `proxyctl upgrade --binary BINARY` on a thread of its own: what it printed, once it ends.
fn upgrade_in_background(
    daemon: &Daemon,
    binary: &std::path::Path,
) -> std::thread::JoinHandle<std::process::Output> {
    let (socket, binary) = (daemon.s.admin_socket.clone(), binary.to_path_buf());
    std::thread::spawn(move || {
        Command::new(proxyctl_bin())
            .arg("--socket")
            .arg(socket)
            .args(["upgrade", "--binary"])
            .arg(binary)
            .output()
            .unwrap()
    })
}

/// A new binary that exits, one that never becomes ready, and one that refuses the config are
/// each rolled back: `proxyctl upgrade` exits 1 with the reason, the running daemon serves on
/// and says so in `status`; one upgrade at a time; a good upgrade then works.
fn failed_upgrades_roll_back(d: Driver) {
    let site = Site::new();
    let mut daemon = Daemon::start(d, &site, "upgrade_timeout_secs = 2\n", FILES);
    let pid = daemon.pid();
    let exits = script(&site, "exits.sh", "echo 'broken build' >&2\nexit 1");
    let hangs = script(&site, "hangs.sh", "exec sleep 60");
    let serves = |daemon: &Daemon| {
        assert_eq!(daemon.s.get("h", "/f.bin").status, 200);
        let st = daemon.settled_status();
        assert_eq!(st["pid"].as_i64(), Some(i64::from(pid)));
        assert_eq!(st["state"], "running");
        st
    };

    let (code, _, err) = daemon.upgrade(&["--binary", exits.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the new process exited before it was ready"),
        "{err}"
    );
    let st = serves(&daemon);
    assert_eq!(st["last_upgrade"]["ok"], false);
    assert!(st["last_upgrade"]["error"]
        .as_str()
        .unwrap()
        .contains("exited"));

    // Never ready: killed at upgrade_timeout_secs. Meanwhile a second upgrade is refused.
    let started = Instant::now();
    let hang = upgrade_in_background(&daemon, &hangs);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(daemon.status()["state"], "upgrading");
    let (code, _, err) = daemon.upgrade(&[]);
    assert_eq!(code, 1);
    assert!(err.contains("an upgrade is already under way"), "{err}");
    let out = hang.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("not ready within upgrade_timeout_secs"),
        "{err}"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "{took:?}"
    );
    let hung_pid = serves(&daemon)["last_upgrade"]["new_pid"].as_i64().unwrap() as i32;
    assert!(
        wait_gone(hung_pid, Duration::from_secs(2)),
        "the hung binary was killed"
    );

    // The same binary, but the config on disk is now broken: the new process refuses it.
    let good = std::fs::read_to_string(&daemon.s.config_path).unwrap();
    std::fs::write(
        &daemon.s.config_path,
        format!("{good}\n[server]\nbogus = 1\n"),
    )
    .unwrap();
    let (code, _, err) = daemon.upgrade(&[]);
    assert_eq!(code, 1);
    assert!(err.contains("refused the config"), "{err}");
    serves(&daemon);

    // A config the new process takes, but with other threads: it fails once it has the
    // sockets (one per worker), and is rolled back.
    std::fs::write(
        &daemon.s.config_path,
        good.replace("threads = 2", "threads = 1"),
    )
    .unwrap();
    let (code, _, err) = daemon.upgrade(&[]);
    assert_eq!(code, 1);
    assert!(err.contains("[server] threads cannot change"), "{err}");
    serves(&daemon);

    // --binary runs a program as the daemon's user: not for anyone the socket lets in.
    let dir = daemon.s.admin_socket.parent().unwrap().to_path_buf();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        &daemon.s.admin_socket,
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(proxyctl_bin())
            .arg("--socket")
            .arg(&daemon.s.admin_socket)
            .args(args)
            .output()
            .unwrap()
    };
    if std::env::var("USER").as_deref() == Ok("root") || unsafe { libc::geteuid() } == 0 {
        let out = as_nobody(&["upgrade", "--binary", "/bin/true"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("only root or uid"), "{err}");
        assert!(as_nobody(&["status"]).status.success());
        serves(&daemon);
    }

    std::fs::write(&daemon.s.config_path, good).unwrap();
    let (code, out, err) = daemon.upgrade(&[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_ne!(daemon.pid(), pid);
    assert_eq!(daemon.s.get("h", "/f.bin").status, 200);
}

/// A drain that begins during an upgrade wins: the new process is killed, `proxyctl upgrade`
/// says why, and the daemon drains and exits 0.
fn a_drain_cancels_an_upgrade(d: Driver) {
    let site = Site::new();
    let mut daemon = Daemon::start(d, &site, "upgrade_timeout_secs = 20\n", FILES);
    let hangs = script(&site, "hangs.sh", "exec sleep 60");
    let upgrade = upgrade_in_background(&daemon, &hangs);
    std::thread::sleep(Duration::from_millis(500));
    let new = daemon.status()["last_upgrade"].clone();
    assert!(new.is_null(), "{new}");
    daemon.s.signal(libc::SIGTERM);
    let out = upgrade.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("upgrade cancelled: the daemon began draining"),
        "{err}"
    );
    assert_eq!(
        daemon.s.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        daemon.s.log()
    );
    let log = daemon.s.log();
    assert!(!log.contains("serves; this process drains"), "{log}");
    // The hung binary is gone (killed, not left behind).
    let left = Command::new("pgrep")
        .arg("-f")
        .arg(hangs.to_str().unwrap())
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&left.stdout)
    );
}

/// An upgrade adds and removes listeners without a restart: the new process takes over the
/// sockets it still has and binds the new ones; a removed one closes with the old process.
fn an_upgrade_changes_the_listeners(d: Driver) {
    let site = Site::new();
    let mut daemon = Daemon::start(d, &site, "", FILES);
    let a = daemon.s.addr;
    let b = TcpListener::bind((a.ip(), 0))
        .unwrap()
        .local_addr()
        .unwrap();
    let original = std::fs::read_to_string(&daemon.s.config_path).unwrap();
    let both = original
        .replace(&format!("listen = \"{a}\"\n"), "")
        .replacen(
            "[server]\n",
            &format!(
                "[[listeners]]\naddress = \"{a}\"\n[[listeners]]\naddress = \"{b}\"\n[server]\n"
            ),
            1,
        );
    std::fs::write(&daemon.s.config_path, &both).unwrap();
    // A reload cannot bind: the change is reported as needing a restart (or an upgrade).
    let r = daemon.s.proxyctl_json(&["reload"]);
    let restart = r["restart_required"].to_string();
    assert!(restart.contains("proxyctl upgrade"), "{r}");
    assert!(TcpStream::connect(b).is_err());
    let (code, out, err) = daemon.upgrade(&[]);
    assert_eq!(code, 0, "{out}{err}");
    let st = daemon.status();
    assert_eq!(st["listeners"][0]["address"], a.to_string());
    assert_eq!(st["listeners"][0]["sockets"], "inherited");
    assert_eq!(st["listeners"][1]["address"], b.to_string());
    assert_eq!(st["listeners"][1]["sockets"], "bound");
    let get = |addr: SocketAddr| {
        let mut c = TcpStream::connect(addr).ok()?;
        c.write_all(b"GET /f.bin HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut out = Vec::new();
        c.read_to_end(&mut out).ok()?;
        Some(out.starts_with(b"HTTP/1.1 200"))
    };
    assert_eq!((get(a), get(b)), (Some(true), Some(true)));
    // Now without `a`: once the process that had it is gone, it refuses.
    let only_b = both.replacen(&format!("[[listeners]]\naddress = \"{a}\"\n"), "", 1);
    std::fs::write(&daemon.s.config_path, &only_b).unwrap();
    let previous = daemon.pid();
    let (code, out, err) = daemon.upgrade(&[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(wait_gone(previous, Duration::from_secs(10)));
    assert_eq!(get(a), None, "the removed listener closed");
    assert_eq!(get(b), Some(true));
}

/// An HTTP/2 stream in flight when the upgrade happens finishes on the old process, whose
/// connection then ends with GOAWAY; new HTTP/2 connections go to the new process.
fn http2_streams_finish_across_an_upgrade(d: Driver) {
    let up = Upstream::start();
    let (s, _site) = crate::h2::h2c(d, "", Some(up.addr), "");
    let mut daemon = Daemon {
        pids: vec![s.child.id() as i32],
        s,
    };
    let old = daemon.pid();
    let client = crate::h2::python()
        .args([
            crate::h2::PEER,
            "one-then-wait",
            &daemon.s.addr.ip().to_string(),
        ])
        .arg(daemon.s.addr.port().to_string())
        .args(["h2.test", "/app/slow/1500"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (code, out, err) = daemon.upgrade(&[]);
    assert_eq!(code, 0, "{out}{err}");
    let out = client.wait_with_output().unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        r["statuses"],
        serde_json::json!([200]),
        "the stream finished: {r}"
    );
    assert_eq!(r["goaway"], 0, "a graceful GOAWAY: {r}");
    assert_eq!(r["closed"], true, "{r}");
    assert!(wait_gone(old, Duration::from_secs(10)));
    let (head, _) = crate::h2::split(&crate::h2::curl_h2c(&daemon.s, "/index.html", &[]));
    assert!(
        head.to_ascii_lowercase().starts_with("http/2 200"),
        "{head}"
    );
}

/// A new config that turns on huge pages restarts the new process on itself (to set up the
/// allocator) — the hand-over socket survives that.
fn an_upgrade_into_huge_pages(d: Driver) {
    let site = Site::new();
    let mut daemon = Daemon::start(d, &site, "", FILES);
    let text = std::fs::read_to_string(&daemon.s.config_path).unwrap();
    std::fs::write(
        &daemon.s.config_path,
        format!("{text}\n[performance]\nhuge_pages_enabled = true\n"),
    )
    .unwrap();
    let (code, out, err) = daemon.upgrade(&[]);
    assert_eq!(code, 0, "{out}{err}\n{}", daemon.s.log());
    assert_eq!(daemon.s.get("h", "/f.bin").status, 200);
}

/// `SIGUSR2` upgrades; under systemd (`NOTIFY_SOCKET`) the old process tells systemd the new
/// main pid, then waits on `BARRIER=1`, and never says `STOPPING=1`.
fn sigusr2_and_systemd_main_pid(d: Driver) {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let site = Site::new();
    site.file("www/f.bin", pattern(4096));
    let addr = free_addr();
    let metrics = free_addr();
    let toml = format!(
        "[server]\nlisten = \"{addr}\"\nthreads = 1\n[admin]\nsocket = \"{{dir}}/admin.sock\"\n\
         metrics_listen = \"{metrics}\"\n[path_routes.h]\n\"/\" = {{ path = \"{}/www\" }}\n",
        site.path().display()
    );
    let s = Server::start_with_env(
        d,
        addr,
        &toml,
        &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())],
    );
    let mut daemon = Daemon {
        pids: vec![s.child.id() as i32],
        s,
    };
    let next = || {
        let mut buf = [0u8; 4096];
        let n = notify.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next(), "READY=1");
    let old = daemon.pid();
    daemon.s.signal(libc::SIGUSR2);
    let reloading = next();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    let main = next();
    let new: i32 = main
        .strip_prefix("MAINPID=")
        .and_then(|m| m.split('\n').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{main}"));
    assert!(main.contains("\nREADY=1\n"), "{main}");
    assert_ne!(new, old);
    // The barrier came with a pipe, closed by this read (the descriptor is dropped).
    assert_eq!(next(), "BARRIER=1");
    daemon.pids.push(new);
    assert_eq!(daemon.pid(), new);
    assert!(wait_gone(old, Duration::from_secs(10)));
    notify.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 512];
    while let Ok(n) = notify.recv(&mut buf) {
        let msg = String::from_utf8_lossy(&buf[..n]);
        assert!(
            !msg.contains("STOPPING=1"),
            "the old process is not main any more: {msg}"
        );
        assert!(
            !msg.contains("READY=1"),
            "only the old process announces readiness: {msg}"
        );
    }
    assert_eq!(daemon.s.get("h", "/f.bin").status, 200);
    // The metrics listener moved too: the old process is gone, and scrapes are answered.
    let mut scrape = crate::upstream::Wire::connect(metrics);
    scrape.send(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n");
    let r = scrape.response(false);
    assert_eq!(r.status, 200);
    assert!(r.text().contains("zerocopy_uptime_seconds"), "{}", r.text());
}

/// Socket activation: a socket systemd passed (`LISTEN_FDS`) serves the listener with its
/// address — connections queued before the daemon started included — and another listener is
/// bound as usual; an upgrade then passes both on.
fn socket_activation(d: Driver) {
    let site = Site::new();
    site.file("www/f.bin", pattern(4096));
    let activated = TcpListener::bind(free_addr()).unwrap();
    let addr = activated.local_addr().unwrap();
    let bound = TcpListener::bind((addr.ip(), 0))
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let admin = dir.path().join("admin.sock");
    std::fs::write(
        &config,
        format!(
            "[server]\nthreads = 2\n[[listeners]]\naddress = \"{addr}\"\n[[listeners]]\naddress = \"{bound}\"\n\
             [admin]\nsocket = \"{}\"\n[path_routes.h]\n\"/\" = {{ path = \"{}/www\" }}\n",
            admin.display(),
            site.path().display()
        ),
    )
    .unwrap();
    // A client that connects before the daemon exists waits in the backlog.
    let mut early = TcpStream::connect(addr).unwrap();
    early
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    early
        .write_all(b"GET /f.bin HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .unwrap();
    let fd = activated.as_raw_fd();
    let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let mut command = Command::new("sh");
    command
        .args(["-c", "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\""])
        .arg(BIN)
        .arg("--config")
        .arg(&config)
        .arg("--io-driver")
        .arg(d.arg())
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: between fork and exec, dup2 puts the listening socket at descriptor 3 (without
    // close-on-exec), as systemd does.
    unsafe {
        command.pre_exec(move || {
            // dup2 onto itself would leave close-on-exec set.
            let rc = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().unwrap();
    // Killed however the test ends.
    let mut pids = Pids(vec![child.id() as i32], child);
    drop(activated);

    let mut answer = Vec::new();
    let read = early.read_to_end(&mut answer);
    let log = || std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert!(
        read.is_ok() && answer.starts_with(b"HTTP/1.1 200"),
        "{read:?} {}\n{}",
        String::from_utf8_lossy(&answer),
        log()
    );
    let proxyctl = |args: &[&str]| {
        Command::new(proxyctl_bin())
            .arg("--socket")
            .arg(&admin)
            .args(args)
            .output()
            .unwrap()
    };
    let start = Instant::now();
    while !admin.exists() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let status: Value = serde_json::from_slice(&proxyctl(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status["listeners"][0]["sockets"], "systemd");
    assert_eq!(status["listeners"][1]["sockets"], "bound");
    let get = |a: SocketAddr| {
        let mut c = TcpStream::connect(a).unwrap();
        c.write_all(b"GET /f.bin HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = Vec::new();
        c.read_to_end(&mut out).unwrap();
        out.starts_with(b"HTTP/1.1 200")
    };
    assert!(get(addr) && get(bound));
    let out = proxyctl(&["upgrade"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&proxyctl(&["status", "--json"]).stdout).unwrap();
    pids.0.push(status["pid"].as_i64().unwrap() as i32);
    assert_eq!(status["listeners"][0]["sockets"], "inherited");
    assert!(get(addr) && get(bound));
}

/// Processes a test started, killed (and the first one reaped) when it ends.
struct Pids(Vec<i32>, std::process::Child);

impl Drop for Pids {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: kill with pids this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = self.1.wait();
    }
}

crate::both_drivers!(
    websocket_lives_until_the_drain_deadline,
    failed_upgrades_roll_back,
    a_drain_cancels_an_upgrade,
    an_upgrade_changes_the_listeners,
    an_upgrade_into_huge_pages,
    http2_streams_finish_across_an_upgrade,
    sigusr2_and_systemd_main_pid,
    socket_activation,
);

#[test]
fn ten_upgrades_under_load_uring() {
    upgrade_under_load(Driver::Uring);
}

#[test]
fn upgrades_under_load_epoll() {
    upgrade_under_load_epoll(Driver::Epoll);
}

//! The File backend end to end, in both modes: validators, conditional requests, ranges,
//! indexes, large files, and path containment.

use crate::common::{Driver, Server, Site};

fn site() -> Site {
    let s = Site::new();
    s.file("www/index.html", "<p>index</p>\n");
    s.file("www/style.css", "p{}\n");
    s.file("www/data.bin", (0..=255u8).collect::<Vec<u8>>());
    s.file("www/sub/index.html", "sub index\n");
    s.file("www/sub/custom.html", "custom\n");
    s.mkdir("www/noindex");
    s.file("www/noindex/file.txt", "x");
    s.file("outside.txt", "secret outside the root\n");
    std::os::unix::fs::symlink(
        s.path().join("outside.txt"),
        s.path().join("www/escape.txt"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        s.path().join("www/style.css"),
        s.path().join("www/inside.css"),
    )
    .unwrap();
    std::os::unix::fs::symlink("style.css", s.path().join("www/relative.css")).unwrap();
    std::os::unix::fs::symlink("../outside.txt", s.path().join("www/escape-relative.txt")).unwrap();
    std::os::unix::fs::symlink(s.path(), s.path().join("www/up")).unwrap();
    s
}

/// `mode` is a route mode, or `uncached`: `sendfile` with the file cache off.
fn server(d: Driver, site: &Site, mode: &str) -> Server {
    let (mode, performance) = match mode {
        "uncached" => (
            "sendfile",
            "[performance]\nfile_cache_max_file_size = 0\n\n",
        ),
        mode => (mode, ""),
    };
    Server::start(
        d,
        site,
        &format!(
            r#"{performance}[path_routes."h.test"."/"]
path = "{{site}}/www"
mode = "{mode}"

[path_routes."h.test"."/custom/"]
path = "{{site}}/www/sub"
mode = "{mode}"
index = "custom.html"
"#
        ),
    )
}

fn validators_and_conditionals(d: Driver, mode: &str) {
    let site = site();
    let s = server(d, &site, mode);
    let r = s.get("h.test", "/style.css");
    assert_eq!(r.status, 200, "{mode}");
    assert_eq!(r.body, b"p{}\n");
    assert_eq!(r.header("content-type"), Some("text/css"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    let etag = r.header("etag").expect("ETag").to_string();
    let lm = r
        .header("last-modified")
        .expect("Last-Modified")
        .to_string();
    assert!(httpdate::parse_http_date(&lm).is_ok());

    let inm = |v: &str| {
        s.raw(format!("GET /style.css HTTP/1.1\r\nHost: h.test\r\nIf-None-Match: {v}\r\nConnection: close\r\n\r\n").as_bytes())
    };
    let r = inm(&etag);
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(r.header("content-length"), None);
    // A 304 carries no body: the request pipelined after it parses.
    let mut c = s.connect();
    c.send(format!("GET /style.css HTTP/1.1\r\nHost: h.test\r\nIf-None-Match: {etag}\r\n\r\nGET /index.html HTTP/1.1\r\nHost: h.test\r\n\r\n").as_bytes());
    assert_eq!(c.response(false).status, 304);
    assert_eq!(c.response(false).body, b"<p>index</p>\n");
    assert_eq!(inm(&format!("\"nope\", W/{etag}")).status, 304);
    assert_eq!(inm("\"nope\"").status, 200);

    let ims = |v: &str| {
        s.raw(format!("GET /style.css HTTP/1.1\r\nHost: h.test\r\nIf-Modified-Since: {v}\r\nConnection: close\r\n\r\n").as_bytes())
    };
    assert_eq!(ims(&lm).status, 304);
    assert_eq!(ims("Thu, 01 Jan 1970 00:00:00 GMT").status, 200);
    // If-None-Match wins over If-Modified-Since.
    let r = s.raw(format!("GET /style.css HTTP/1.1\r\nHost: h.test\r\nIf-None-Match: \"nope\"\r\nIf-Modified-Since: {lm}\r\nConnection: close\r\n\r\n").as_bytes());
    assert_eq!(r.status, 200);
}

fn ranges(d: Driver, mode: &str) {
    let site = site();
    let s = server(d, &site, mode);
    let range = |v: &str| {
        s.raw(
            format!(
                "GET /data.bin HTTP/1.1\r\nHost: h.test\r\nRange: {v}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
    };
    let r = range("bytes=10-19");
    assert_eq!(r.status, 206, "{mode}");
    assert_eq!(r.header("content-range"), Some("bytes 10-19/256"));
    assert_eq!(r.body, (10..20u8).collect::<Vec<u8>>());
    let r = range("bytes=-6");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, (250..=255u8).collect::<Vec<u8>>());
    let r = range("bytes=250-");
    assert_eq!(r.header("content-range"), Some("bytes 250-255/256"));
    let r = range("bytes=256-");
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */256"));
    // Several ranges: the whole file.
    let r = range("bytes=0-1,5-6");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 256);
    // If-Range with the current validator: the range.
    let etag = s
        .get("h.test", "/data.bin")
        .header("etag")
        .unwrap()
        .to_string();
    let r = s.raw(format!("GET /data.bin HTTP/1.1\r\nHost: h.test\r\nRange: bytes=0-1\r\nIf-Range: {etag}\r\nConnection: close\r\n\r\n").as_bytes());
    assert_eq!(r.status, 206);
    assert_eq!(r.body, [0, 1]);
    // If-Range with a stale validator: the whole file.
    let r = s.raw(b"GET /data.bin HTTP/1.1\r\nHost: h.test\r\nRange: bytes=0-0\r\nIf-Range: \"stale\"\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);
    // HEAD ignores Range.
    let mut c = s.connect();
    c.send(b"HEAD /data.bin HTTP/1.1\r\nHost: h.test\r\nRange: bytes=0-0\r\n\r\n");
    let r = c.response(true);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("256"));
}

fn indexes(d: Driver, mode: &str) {
    let site = site();
    let s = server(d, &site, mode);
    assert_eq!(s.get("h.test", "/").text(), "<p>index</p>\n", "{mode}");
    assert_eq!(s.get("h.test", "/sub/").text(), "sub index\n");
    assert_eq!(s.get("h.test", "/sub").text(), "sub index\n");
    assert_eq!(s.get("h.test", "/custom/").text(), "custom\n");
    assert_eq!(s.get("h.test", "/custom").text(), "custom\n");
    // A directory without its index: 404, never a listing.
    assert_eq!(s.get("h.test", "/noindex/").status, 404);
    assert_eq!(s.get("h.test", "/noindex").status, 404);
    assert_eq!(s.get("h.test", "/missing.txt").status, 404);
}

fn traversal_never_escapes_the_root(d: Driver, mode: &str) {
    let site = site();
    let s = server(d, &site, mode);
    for path in [
        "/../outside.txt",
        "/sub/../../outside.txt",
        "/%2e%2e/outside.txt",
        "/sub/%2E%2E/%2e%2e/outside.txt",
        "/..%2foutside.txt",
        "/sub%2f..%2f..%2foutside.txt",
        "/..%5coutside.txt",
        "/..\\outside.txt",
        "/style.css%00.html",
    ] {
        let r = s.get("h.test", path);
        assert_eq!(r.status, 400, "{mode} {path}");
        assert!(!r.text().contains("secret"), "{mode} {path}");
    }
    // Symlinks that lead outside, absolute or relative, to a file or a directory: refused
    // (403 on disk; in memory mode they were left out when loading, so 404).
    let refused = if mode == "memory" { 404 } else { 403 };
    for path in ["/escape.txt", "/escape-relative.txt", "/up/outside.txt"] {
        let r = s.get("h.test", path);
        assert_eq!(r.status, refused, "{mode} {path}");
        assert!(!r.text().contains("secret"), "{mode} {path}");
    }
    // Symlinks that stay inside, absolute or relative: followed.
    assert_eq!(s.get("h.test", "/inside.css").text(), "p{}\n", "{mode}");
    assert_eq!(s.get("h.test", "/relative.css").text(), "p{}\n", "{mode}");
}

fn sendfile_validators_and_conditionals(d: Driver) {
    validators_and_conditionals(d, "sendfile")
}
fn memory_validators_and_conditionals(d: Driver) {
    validators_and_conditionals(d, "memory")
}
fn sendfile_ranges(d: Driver) {
    ranges(d, "sendfile")
}
fn memory_ranges(d: Driver) {
    ranges(d, "memory")
}
fn sendfile_indexes(d: Driver) {
    indexes(d, "sendfile")
}
fn memory_indexes(d: Driver) {
    indexes(d, "memory")
}
fn sendfile_traversal(d: Driver) {
    traversal_never_escapes_the_root(d, "sendfile")
}
fn uncached_validators_and_conditionals(d: Driver) {
    validators_and_conditionals(d, "uncached")
}
fn uncached_ranges(d: Driver) {
    ranges(d, "uncached")
}
fn uncached_indexes(d: Driver) {
    indexes(d, "uncached")
}
fn uncached_traversal(d: Driver) {
    traversal_never_escapes_the_root(d, "uncached")
}
fn memory_traversal(d: Driver) {
    traversal_never_escapes_the_root(d, "memory")
}

/// A large file arrives intact, on a keep-alive connection, twice.
fn large_file_by_sendfile(d: Driver) {
    let site = Site::new();
    let data: Vec<u8> = (0..8 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    site.file("big.bin", &data);
    let s = Server::start(d, &site, "[host_routes.\"h.test\"]\npath = \"{site}\"\n");
    let mut c = s.connect();
    for _ in 0..2 {
        c.send(b"GET /big.bin HTTP/1.1\r\nHost: h.test\r\n\r\n");
        let r = c.response(false);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert!(r.body == data, "body differs");
    }
}

/// Special files in a docroot never hang a worker: a FIFO is a 404, and the worker goes on.
fn fifos_and_symlink_loops(d: Driver) {
    let site = Site::new();
    site.file("f.txt", "f");
    let fifo = std::ffi::CString::new(site.path().join("pipe").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    std::os::unix::fs::symlink(".", site.path().join("loop")).unwrap();
    let s = Server::start(
        d,
        &site,
        r#"[path_routes."h.test"]
"/" = { path = "{site}" }
"/mem/" = { path = "{site}", mode = "memory" }
"#,
    );
    assert_eq!(s.get("h.test", "/pipe").status, 404);
    assert_eq!(s.get("h.test", "/f.txt").text(), "f");
    assert_eq!(s.get("h.test", "/mem/pipe").status, 404);
    assert_eq!(s.get("h.test", "/mem/f.txt").text(), "f");
    assert_eq!(s.get("h.test", "/loop/f.txt").text(), "f");
}

/// The memory mode really serves from memory: changing the file on disk does not change what
/// is served until the config is loaded again.
fn memory_mode_holds_the_bytes(d: Driver) {
    let site = Site::new();
    let f = site.file("m.txt", "first");
    let s = Server::start(
        d,
        &site,
        "[path_routes.\"h.test\".\"/m.txt\"]\npath = \"{site}/m.txt\"\nmode = \"memory\"\n",
    );
    assert_eq!(s.get("h.test", "/m.txt").text(), "first");
    std::fs::write(&f, "second").unwrap();
    assert_eq!(s.get("h.test", "/m.txt").text(), "first");
}

fn cache_counts(s: &Server) -> [u64; 4] {
    let c = &s.proxyctl_json(&["stats"])["file_cache"];
    ["files", "bytes", "hits", "misses"].map(|k| c[k].as_u64().unwrap())
}

/// Rewrites the running config with `from` replaced by `to` and waits for the reload.
fn reload(s: &Server, from: &str, to: &str) {
    let text = std::fs::read_to_string(&s.config_path).unwrap();
    assert!(text.contains(from), "{text}");
    let generation = s.generation();
    std::fs::write(&s.config_path, text.replace(from, to)).unwrap();
    assert_eq!(
        s.wait_generation(generation + 1),
        generation + 1,
        "{}",
        s.log()
    );
}

/// `sendfile`-mode routes keep small files in the worker's cache: served from memory while
/// the cache trusts them, checked against the disk after `file_cache_valid_ms` (every request
/// with 0), never for files over `file_cache_max_file_size`, and not at all with 0 there.
fn file_cache_serves_small_files_from_memory(d: Driver) {
    let site = Site::new();
    let a = site.file("a.txt", "first");
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    site.file("big.bin", &big);
    let one = site.file("one.txt", "exact");
    // Files changed within two seconds are cached only for what is left of those seconds (a
    // write in the same timestamp tick as the read would go unseen): let these settle first.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let s = Server::start(
        d,
        &site,
        r#"[performance]
file_cache_valid_ms = 600000

[path_routes."h.test"]
"/" = { path = "{site}" }
"/one" = { path = "{site}/one.txt" }
"#,
    );
    // [files, bytes, hits, misses]
    assert_eq!(cache_counts(&s), [0, 0, 0, 0]);
    let r = s.get("h.test", "/a.txt");
    assert_eq!((r.status, r.text()), (200, "first".to_string()));
    assert_eq!(cache_counts(&s), [1, 5, 0, 1]);
    assert_eq!(s.get("h.test", "/a.txt").text(), "first");
    assert_eq!(cache_counts(&s), [1, 5, 1, 1]);
    // Within file_cache_valid_ms the cached bytes are served as they are, whole: headers and
    // body from the same read.
    std::fs::write(&a, "second!").unwrap();
    let r = s.get("h.test", "/a.txt");
    assert_eq!(r.text(), "first");
    assert_eq!(r.header("content-length"), Some("5"));
    assert_eq!(cache_counts(&s), [1, 5, 2, 1]);
    // Over file_cache_max_file_size (64 KiB by default): from disk each time.
    for _ in 0..2 {
        let r = s.get("h.test", "/big.bin");
        assert!(r.status == 200 && r.body == big, "big.bin differs");
    }
    assert_eq!(cache_counts(&s), [1, 5, 2, 3]);
    assert_eq!(s.get("h.test", "/one").text(), "exact");
    assert_eq!(cache_counts(&s), [2, 10, 2, 4]);
    let table = String::from_utf8(s.proxyctl(&["stats"]).stdout).unwrap();
    assert!(
        table.contains("file cache: 2 files, 10B held, 2 hits, 4 misses\n"),
        "{table}"
    );

    // With 0, every request checks the file: changes in place, renames over it and removals
    // are all seen at once, for directory and exact-file routes.
    reload(
        &s,
        "file_cache_valid_ms = 600000",
        "file_cache_valid_ms = 0",
    );
    assert_eq!(s.get("h.test", "/a.txt").text(), "second!");
    assert_eq!(cache_counts(&s), [2, 12, 2, 5]);
    assert_eq!(s.get("h.test", "/a.txt").text(), "second!");
    assert_eq!(cache_counts(&s), [2, 12, 3, 5]);
    let tmp = site.file("a.tmp", "third");
    std::fs::rename(&tmp, &a).unwrap();
    assert_eq!(s.get("h.test", "/a.txt").text(), "third");
    std::fs::remove_file(&a).unwrap();
    assert_eq!(s.get("h.test", "/a.txt").status, 404);
    std::fs::write(&one, "changed").unwrap();
    assert_eq!(s.get("h.test", "/one").text(), "changed");
    assert_eq!(cache_counts(&s), [1, 7, 3, 8]);

    // Off: nothing is cached or counted, and the files are served from disk.
    reload(
        &s,
        "file_cache_valid_ms = 0",
        "file_cache_max_file_size = 0",
    );
    std::fs::write(&one, "off").unwrap();
    assert_eq!(s.get("h.test", "/one").text(), "off");
    site.file("a.txt", "back");
    assert_eq!(s.get("h.test", "/a.txt").text(), "back");
    assert_eq!(cache_counts(&s)[2..], [3, 8]);
}

crate::both_drivers!(
    a_disk_that_hangs_mid_body_cuts_the_response_off,
    a_hung_disk_gets_503_after_the_file_io_timeout,
    cached_a_slow_disk_does_not_stall_the_worker,
    uncached_a_slow_disk_does_not_stall_the_worker,
    uncached_validators_and_conditionals,
    uncached_ranges,
    uncached_indexes,
    uncached_traversal,
    file_cache_serves_small_files_from_memory,
    sendfile_validators_and_conditionals,
    memory_validators_and_conditionals,
    sendfile_ranges,
    memory_ranges,
    sendfile_indexes,
    memory_indexes,
    sendfile_traversal,
    memory_traversal,
    large_file_by_sendfile,
    memory_mode_holds_the_bytes,
    fifos_and_symlink_loops,
);

/// A slow disk (`slowfs.py`, a FUSE file system whose every lookup and read waits), mounted
/// for one test and unmounted when dropped.
pub struct SlowDisk {
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl SlowDisk {
    pub fn mount(delay_secs: f64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let script =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/slowfs.py");
        let child = std::process::Command::new("python3")
            .arg(script)
            .arg(dir.path())
            .arg(delay_secs.to_string())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut disk = Self { dir, child };
        let start = std::time::Instant::now();
        // Mounted when the root is another file system than the directory's parent's.
        let dev = |p: &std::path::Path| {
            std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(p).unwrap())
        };
        while dev(disk.dir.path()) == dev(disk.dir.path().parent().unwrap()) {
            if let Ok(Some(status)) = disk.child.try_wait() {
                let mut err = String::new();
                std::io::Read::read_to_string(disk.child.stderr.as_mut().unwrap(), &mut err)
                    .unwrap();
                panic!(
                    "slowfs.py exited with {status}: the tests need FUSE (/dev/fuse, root, \
                     Debian's libfuse2 and `pip install fusepy`): {err}"
                );
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "slowfs.py did not mount"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        disk
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for SlowDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("fusermount")
            .arg("-u")
            .arg(self.dir.path())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A daemon with `fast.txt` on a site at `/` and the slow disk at `/slow/`, with `performance`
/// lines for its `[performance]` section; and the site, which lives as long as the test holds it.
fn slow_disk_server(d: Driver, disk: &SlowDisk, performance: &str) -> (Server, Site) {
    let site = Site::new();
    site.file("fast.txt", "fast\n");
    let s = Server::start(
        d,
        &site,
        &format!(
            r#"[performance]
{performance}

[path_routes."h.test"."/"]
path = "{{site}}"

[path_routes."h.test"."/slow/"]
path = "{slow}"
"#,
            slow = disk.path().display()
        ),
    );
    (s, site)
}

/// Runs `slow` (a request that waits for the slow disk) on a thread, and meanwhile `fast`
/// again and again, each answered within 600 ms (a worker that waited for the disk would take
/// the disk's delay): the slow answer and how many fast ones came before it.
pub fn fast_while_slow<R: Send + 'static>(
    slow: impl FnOnce() -> R + Send + 'static,
    mut fast: impl FnMut(),
) -> (R, usize) {
    use std::time::{Duration, Instant};
    let asked = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiting = std::thread::spawn(move || {
        let r = slow();
        let _ = tx.send(());
        r
    });
    let mut answered = 0;
    // Until the slow answer comes (or its thread fails: its panic is then the test's).
    while rx.try_recv() == Err(std::sync::mpsc::TryRecvError::Empty) {
        let at = Instant::now();
        fast();
        assert!(
            at.elapsed() < Duration::from_millis(600),
            "a fast request waited {:?} behind a slow disk",
            at.elapsed()
        );
        answered += 1;
        assert!(
            asked.elapsed() < Duration::from_secs(20),
            "the slow answer never came"
        );
    }
    (waiting.join().unwrap(), answered)
}

/// A file on a slow disk does not stall the worker: its open, reads, sends and the cache's
/// checks of it wait on a file I/O thread while the one worker goes on answering other
/// requests at once — from the first request until the slow answer has come, and again when the
/// cached copy is due for its check.
fn a_slow_disk_does_not_stall_the_worker(d: Driver, mode: &str) {
    use std::time::{Duration, Instant};
    let disk = SlowDisk::mount(0.8);
    let performance = match mode {
        // Nothing cached: the file goes out by sendfile.
        "uncached" => "file_cache_max_file_size = 0",
        _ => "file_cache_valid_ms = 100",
    };
    let (s, _site) = slow_disk_server(d, &disk, performance);
    // Twice: the first time cold; the second, after the cache's check is due (or, uncached,
    // through the same open and send again).
    for round in 0..2 {
        let mut slow = s.connect();
        let asked = Instant::now();
        slow.send(b"GET /slow/slow7.txt HTTP/1.1\r\nHost: h.test\r\n\r\n");
        let (r, fast) = fast_while_slow(
            move || slow.response(false),
            || {
                let r = s.get("h.test", "/fast.txt");
                assert_eq!((r.status, r.text().as_str()), (200, "fast\n"));
            },
        );
        assert_eq!((r.status, r.text().as_str()), (200, "slow file 7\n"));
        assert!(
            fast >= 3 && asked.elapsed() > Duration::from_millis(800),
            "round {round}: the slow file came after {:?} ({fast} fast requests meanwhile): \
             the disk was not slow",
            asked.elapsed()
        );
        std::thread::sleep(Duration::from_millis(150));
    }
    let st = s.proxyctl_json(&["stats"]);
    assert!(
        st["file_cache"]["offloaded"].as_u64() >= Some(2),
        "{}",
        st["file_cache"]
    );
}

/// A disk that does not answer in `file_io_timeout_ms` gets its request a 503, and the worker
/// goes on serving (the thread that waits for it stays taken until the disk answers).
fn a_hung_disk_gets_503_after_the_file_io_timeout(d: Driver) {
    use std::time::{Duration, Instant};
    let disk = SlowDisk::mount(3.0);
    let (s, _site) = slow_disk_server(d, &disk, "file_io_timeout_ms = 300");
    let asked = Instant::now();
    let r = s.get("h.test", "/slow/slow3.txt");
    let waited = asked.elapsed();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(2500),
        "503 after {waited:?}"
    );
    assert_eq!(s.get("h.test", "/fast.txt").text(), "fast\n");
}

/// A disk that stops answering in the middle of a body (its file found at once, its bytes
/// never): the response is cut off — the connection closes at `file_io_timeout_ms`, with no
/// error status written into the body — and the worker goes on serving.
fn a_disk_that_hangs_mid_body_cuts_the_response_off(d: Driver) {
    use std::io::Read;
    use std::time::{Duration, Instant};
    let disk = SlowDisk::mount(4.0);
    let performance = "file_io_timeout_ms = 500\nfile_cache_max_file_size = 0";
    let (s, _site) = slow_disk_server(d, &disk, performance);
    let mut sock = std::net::TcpStream::connect(s.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let asked = Instant::now();
    std::io::Write::write_all(
        &mut sock,
        b"GET /slow/late.txt HTTP/1.1\r\nHost: h.test\r\n\r\n",
    )
    .unwrap();
    let mut got = Vec::new();
    sock.read_to_end(&mut got).unwrap();
    let waited = asked.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("Content-Length: 10\r\n"), "{text}");
    assert!(
        !text.contains("late file") && !text.contains(" 503 "),
        "only the head, then the end: {text}"
    );
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_millis(3000),
        "closed after {waited:?}, not at the file I/O timeout"
    );
    assert_eq!(s.get("h.test", "/fast.txt").text(), "fast\n");
}

fn cached_a_slow_disk_does_not_stall_the_worker(d: Driver) {
    a_slow_disk_does_not_stall_the_worker(d, "sendfile");
}

fn uncached_a_slow_disk_does_not_stall_the_worker(d: Driver) {
    a_slow_disk_does_not_stall_the_worker(d, "uncached");
}

//! Idle keep-alive connections park (they give up their task and wait as a table entry in the
//! worker's epoll set) and come back when bytes arrive, keeping their deadlines; a drain and
//! the idle timeout close them. (TLS connections park too: `tls.rs`.)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::{Driver, Server, Site};

/// Open connections and parked ones, from `proxyctl status`.
fn counts(s: &Server) -> (u64, u64) {
    let st = s.proxyctl_json(&["status"]);
    (
        st["connections"].as_u64().unwrap(),
        st["idle_parked"].as_u64().unwrap(),
    )
}

/// Polls `proxyctl status` until `want` (open, parked) shows, or fails after 5 s.
fn wait_counts(s: &Server, want: (u64, u64)) {
    let start = Instant::now();
    let mut got = counts(s);
    while got != want && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
        got = counts(s);
    }
    assert_eq!(got, want, "(open, parked)\n{}", s.log());
}

fn site() -> Site {
    let site = Site::new();
    site.file("f.txt", "hello, parked world\n");
    site
}

/// The daemon serving `site` for host `h`, with `extra` (TOML tables) before the route.
fn start(d: Driver, site: &Site, extra: &str) -> Server {
    Server::start(
        d,
        site,
        &format!("{extra}\n[host_routes.\"h\"]\npath = \"{{site}}\"\n"),
    )
}

/// Sends a GET for /f.txt and reads its response (the body is 20 bytes).
fn get(c: &mut TcpStream) {
    c.write_all(b"GET /f.txt HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    let text = read_response(c);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("\r\n\r\nhello, parked world\n"), "{text}");
}

fn read_response(c: &mut TcpStream) -> String {
    let mut all = read_responses(c, 1);
    all.remove(0)
}

/// Reads `n` whole responses (each with a Content-Length) and nothing after them.
fn read_responses(c: &mut TcpStream, n: usize) -> Vec<String> {
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < n {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if got.len() >= end + 4 + len {
                out.push(text[..end + 4 + len].to_string());
                got.drain(..end + 4 + len);
                continue;
            }
        }
        let n = c.read(&mut buf).expect("a response");
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.is_empty(), "more than {n} responses");
    out
}

fn is_closed(c: &mut TcpStream, within: Duration) -> bool {
    c.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 64];
    match c.read(&mut b) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

fn idle_connections_park_and_come_back(d: Driver) {
    let site = site();
    let s = start(d, &site, "");
    let mut conns: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut c = TcpStream::connect(s.addr).unwrap();
            get(&mut c);
            c
        })
        .collect();
    // Two idle sweeps (100 ms apart) later, all of them have parked.
    wait_counts(&s, (20, 20));
    let stats = s.proxyctl_json(&["stats"]);
    assert_eq!(stats["connections"]["parked"], 20, "{stats}");
    let table = String::from_utf8(s.proxyctl(&["stats"]).stdout).unwrap();
    assert!(
        table.contains("connections: 20 open (20 parked)"),
        "{table}"
    );
    // Each comes back for its next request, pipelined ones too.
    for c in &mut conns {
        get(c);
    }
    conns[0]
        .write_all(b"GET /f.txt HTTP/1.1\r\nHost: h\r\n\r\nGET /f.txt HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    for r in read_responses(&mut conns[0], 2) {
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }
    // And parks again; a parked connection whose client goes away is closed and uncounted.
    wait_counts(&s, (20, 20));
    conns.truncate(15);
    wait_counts(&s, (15, 15));
    for c in &mut conns {
        get(c);
    }
}

fn a_parked_connection_keeps_its_first_head_deadline(d: Driver) {
    let site = site();
    let s = start(d, &site, "[security]\nclient_header_timeout_secs = 3\n");
    let start = Instant::now();
    let mut c = TcpStream::connect(s.addr).unwrap();
    wait_counts(&s, (1, 1));
    // Half a head after parking: the header timeout still runs from the accept, so the 408
    // comes about 3 s after the connect, not 3 s after these bytes.
    std::thread::sleep(Duration::from_millis(1500).saturating_sub(start.elapsed()));
    c.write_all(b"GET /f.txt HTTP/1.1\r\nHo").unwrap();
    let wrote = start.elapsed();
    assert!(wrote < Duration::from_millis(2500), "wrote after {wrote:?}");
    let text = read_response(&mut c);
    let took = start.elapsed();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        took < wrote + Duration::from_millis(2500),
        "408 after {took:?}, bytes at {wrote:?}"
    );
    assert!(is_closed(&mut c, Duration::from_secs(3)));
    wait_counts(&s, (0, 0));
    // A parked connection that never sends is closed at that deadline.
    let start = Instant::now();
    let mut c = TcpStream::connect(s.addr).unwrap();
    wait_counts(&s, (1, 1));
    assert!(is_closed(&mut c, Duration::from_secs(5)));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_millis(4500),
        "closed after {took:?}"
    );
    wait_counts(&s, (0, 0));
}

fn a_resumed_connection_gets_a_fresh_keep_alive_deadline(d: Driver) {
    let site = site();
    let s = start(d, &site, "[security]\nclient_header_timeout_secs = 3\n");
    let start = Instant::now();
    let mut c = TcpStream::connect(s.addr).unwrap();
    // Parked while waiting for its first request, then served.
    wait_counts(&s, (1, 1));
    get(&mut c);
    // Past the first request's header deadline (3 s from the accept): the connection is now
    // a keep-alive one with 60 s to go, not held to the deadline it parked with.
    std::thread::sleep(Duration::from_millis(3600).saturating_sub(start.elapsed()));
    get(&mut c);
    wait_counts(&s, (1, 1));
}

fn a_drain_closes_parked_connections(d: Driver) {
    let site = site();
    let mut s = start(d, &site, "");
    let mut conns: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut c = TcpStream::connect(s.addr).unwrap();
            get(&mut c);
            c
        })
        .collect();
    wait_counts(&s, (5, 5));
    let start = Instant::now();
    s.signal(libc::SIGTERM);
    // Without the drain closing them, the parked connections would hold the daemon for their
    // 60 s keep-alive timeout.
    assert_eq!(s.wait_exit(Duration::from_secs(5)), Some(0), "{}", s.log());
    assert!(start.elapsed() < Duration::from_secs(3));
    for c in &mut conns {
        assert!(is_closed(c, Duration::from_secs(2)));
    }
}

fn a_drain_answers_a_request_that_reached_a_parked_connection(d: Driver) {
    let site = site();
    let mut s = start(d, &site, "");
    let mut c = TcpStream::connect(s.addr).unwrap();
    get(&mut c);
    wait_counts(&s, (1, 1));
    // On loopback the request is in the daemon's socket before the signal is sent. Whether the
    // drain or the parking watcher sees it first, it is answered (with `Connection: close`
    // when the drain was first), never dropped.
    c.write_all(b"GET /f.txt HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    s.signal(libc::SIGTERM);
    let text = read_response(&mut c);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(is_closed(&mut c, Duration::from_secs(2)));
    assert_eq!(s.wait_exit(Duration::from_secs(5)), Some(0), "{}", s.log());
}

crate::both_drivers!(
    idle_connections_park_and_come_back,
    a_parked_connection_keeps_its_first_head_deadline,
    a_resumed_connection_gets_a_fresh_keep_alive_deadline,
    a_drain_closes_parked_connections,
    a_drain_answers_a_request_that_reached_a_parked_connection,
);

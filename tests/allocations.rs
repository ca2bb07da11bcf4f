//! Heap allocations per request on the data path, counted by a global allocator: a worker runs
//! in this process (the same code the binary runs), a client on this thread sends keep-alive
//! requests from fixed buffers, and the allocations of the whole process during those requests
//! are divided by their number.
//!
//! Run with `--nocapture` to see the figures; the assertions keep them from growing back.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use zerocopy_server::metrics::Registry;
use zerocopy_server::snapshot::Snapshot;
use zerocopy_server::tls::RecordLayer;
use zerocopy_server::worker::{IoDriver, Shared, Workers};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Starts one worker serving `dir` on a fresh loopback port.
fn serve(dir: &std::path::Path, driver: IoDriver) -> (SocketAddr, Workers) {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let toml = format!(
        "[server]\nlisten = \"{addr}\"\nthreads = 1\n[logging]\nlevel = \"off\"\n\
         [path_routes.\"h\"]\n\"/\" = {{ path = \"{}\" }}\n",
        dir.display()
    );
    let config = zerocopy_server::config::parse(&toml, &dir.join("config.toml")).expect("config");
    let metrics = Arc::new(Registry::new(1));
    let sessions = Arc::new(zerocopy_server::tls::sessions::Sessions::new());
    let fleet = Arc::new(zerocopy_server::group::Fleet::default());
    let listeners = config.listeners.clone();
    let sockets = zerocopy_server::worker::sockets::prepare(
        &listeners,
        1,
        &mut Default::default(),
        config.performance.reuseport_balancing,
    )
    .expect("sockets");
    let snapshot = Snapshot::build(config, 1, &metrics, &fleet, &sessions).expect("snapshot");
    let shared = Arc::new(Shared::new(
        ArcSwap::from_pointee(snapshot),
        1,
        RecordLayer::decide(None),
        metrics,
        sessions,
        fleet,
        &listeners,
    ));
    let workers = Workers::start(sockets, driver, shared).expect("workers");
    workers.go();
    (addr, workers)
}

/// Allocations per keep-alive request for `path`, over `n` requests after a warm-up.
fn per_request(addr: SocketAddr, path: &str, n: u64) -> f64 {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").into_bytes();
    let mut buf = vec![0u8; 64 * 1024];
    let mut exchange = |c: &mut TcpStream| {
        c.write_all(&request).unwrap();
        // One response: the head, then Content-Length bytes (the files here are small).
        let mut got = 0;
        loop {
            let n = c.read(&mut buf[got..]).unwrap();
            assert!(n > 0, "closed");
            got += n;
            let data = &buf[..got];
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&data[..end]).unwrap();
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .unwrap()
                    .parse()
                    .unwrap();
                if got >= end + 4 + len {
                    return;
                }
            }
        }
    };
    for _ in 0..200 {
        exchange(&mut c);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..n {
        exchange(&mut c);
    }
    (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / n as f64
}

#[test]
fn allocations_per_keep_alive_request() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("1k.bin"), vec![7u8; 1024]).unwrap();
    for driver in [IoDriver::Uring, IoDriver::Epoll] {
        let (addr, _workers) = serve(dir.path(), driver);
        let per = per_request(addr, "/1k.bin", 2000);
        println!("{driver:?}: {per:.2} allocations per keep-alive request (1 KiB file)");
        assert!(
            per <= MAX_PER_REQUEST,
            "{driver:?}: {per:.2} allocations per request"
        );
    }
}

/// What a keep-alive file request may allocate at most: 20 before the worker's buffer pools
/// (request buffers per connection, response heads per worker) and allocation-free header
/// writing, 11 after (the request head's fields, path normalisation, the boxed request).
const MAX_PER_REQUEST: f64 = 12.0;

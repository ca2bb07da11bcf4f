//! Workers: the thread count, the io driver actually in use, and SO_REUSEPORT sharing.

use crate::common::{Driver, Server, Site};

fn worker_threads(s: &Server) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", s.child.id()))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .filter(|n| n.starts_with("zcs-worker-"))
        .collect();
    names.sort();
    names
}

fn threads_setting_starts_that_many_workers(d: Driver) {
    let site = Site::new();
    site.file("f.txt", "f");
    let s = Server::start_full(
        d,
        &site,
        "threads = 3",
        "[host_routes.\"h\"]\npath = \"{site}\"\n",
    );
    assert_eq!(
        worker_threads(&s),
        ["zcs-worker-0", "zcs-worker-1", "zcs-worker-2"]
    );
    // Every connection is served, whichever worker's listener the kernel picks.
    for _ in 0..30 {
        assert_eq!(s.get("h", "/f.txt").text(), "f");
    }
    let want = match d {
        Driver::Uring => "(io_uring)",
        Driver::Epoll => "(epoll)",
    };
    let log = s.wait_log(want);
    assert!(
        log.contains(&format!("3 workers listening on {} {want}", s.addr)),
        "{log}"
    );
}

fn zero_threads_means_one_per_core(d: Driver) {
    let site = Site::new();
    let s = Server::start_full(
        d,
        &site,
        "threads = 0",
        "[host_routes.\"h\"]\npath = \"{site}\"\n",
    );
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(worker_threads(&s).len(), cores);
}

crate::both_drivers!(
    threads_setting_starts_that_many_workers,
    zero_threads_means_one_per_core
);

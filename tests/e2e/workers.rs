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

/// The worker threads' ids and the CPUs each may run on.
fn worker_affinity(s: &Server) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{}/task", s.child.id())).unwrap() {
        let t = t.unwrap().path();
        // A short-lived thread (the admin server's, for the harness's readiness check) may
        // end between the listing and the read; workers live as long as the daemon.
        let Ok(name) = std::fs::read_to_string(t.join("comm")) else {
            continue;
        };
        let name = name.trim().to_string();
        if !name.starts_with("zcs-worker-") {
            continue;
        }
        let status = std::fs::read_to_string(t.join("status")).unwrap();
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_string();
        out.push((name, cpus));
    }
    out.sort();
    out
}

/// Listening sockets on the server's port, from /proc/net/tcp.
fn listeners(s: &Server) -> usize {
    let port = format!(":{:04X}", s.addr.port());
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&port) && f[3] == "0A"
        })
        .count()
}

/// Whether the process holds an io_uring instance.
fn has_io_uring(s: &Server) -> bool {
    std::fs::read_dir(format!("/proc/{}/fd", s.child.id()))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .any(|l| l.to_string_lossy().contains("io_uring"))
}

fn threads_setting_starts_that_many_pinned_workers(d: Driver) {
    let site = Site::new();
    site.file("f.txt", "f");
    let s = Server::start_full(
        d,
        &site,
        "threads = 3",
        "[host_routes.\"h\"]\npath = \"{site}\"\n",
    );
    let workers = worker_threads(&s);
    assert_eq!(workers, ["zcs-worker-0", "zcs-worker-1", "zcs-worker-2"]);
    // Each worker is pinned to one core, round-robin over the cores.
    let cores = std::thread::available_parallelism().unwrap().get();
    for (i, (name, cpus)) in worker_affinity(&s).iter().enumerate() {
        assert_eq!(cpus, &(i % cores).to_string(), "{name}");
    }
    // One SO_REUSEPORT listener per worker.
    assert_eq!(listeners(&s), 3);
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
    // The driver really in use: an io_uring instance exists only under io_uring.
    assert_eq!(has_io_uring(&s), matches!(d, Driver::Uring));
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
    assert_eq!(listeners(&s), cores);
}

/// Started as root with `drop_privileges_user`, the daemon serves as that user.
fn drops_privileges_after_binding(d: Driver) {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let site = Site::new();
    site.file("f.txt", "f");
    std::fs::set_permissions(
        site.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let s = Server::start(
        d,
        &site,
        "[security]\ndrop_privileges_user = \"nobody\"\n\n[host_routes.\"h\"]\npath = \"{site}\"\n",
    );
    assert_eq!(s.get("h", "/f.txt").text(), "f");
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.child.id())).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let nobody = zerocopy_server::privileges::user("nobody").unwrap().uid;
    assert!(
        uid.split_whitespace()
            .skip(1)
            .all(|u| u == nobody.to_string()),
        "{uid}"
    );
}

crate::both_drivers!(
    threads_setting_starts_that_many_pinned_workers,
    zero_threads_means_one_per_core,
    drops_privileges_after_binding,
);

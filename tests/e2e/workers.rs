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

/// One request on a connection made from the loopback address `from`.
fn request_from(from: std::net::Ipv4Addr, to: std::net::SocketAddr) {
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    let std::net::SocketAddr::V4(to) = to else {
        panic!("IPv4 only")
    };
    let sin = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a fresh socket, bound and connected, then owned by the TcpStream.
    let mut s = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let local = sin(from, 0);
        assert_eq!(
            libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len),
            0
        );
        let remote = sin(*to.ip(), to.port());
        let rc = libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len);
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        std::net::TcpStream::from_raw_fd(fd)
    };
    s.write_all(b"GET /f.txt HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    assert!(all.starts_with(b"HTTP/1.1 200"));
}

/// Connections accepted per worker, from `proxyctl stats`.
fn accepted_per_worker(s: &Server) -> Vec<u64> {
    s.proxyctl_json(&["stats"])["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["connections_total"].as_u64().unwrap())
        .collect()
}

fn cbpf_keeps_a_client_address_on_one_worker(d: Driver) {
    let site = Site::new();
    site.file("f.txt", "f");
    let s = Server::start_full(
        d,
        &site,
        "threads = 2\n[performance]\nreuseport_balancing = \"cbpf\"\n",
        "[host_routes.\"h\"]\npath = \"{site}\"\n",
    );
    assert!(
        s.wait_log("connections go to workers by client address")
            .contains("connections go to workers by client address"),
        "{}",
        s.log()
    );
    // worker_for's index is a place in the SO_REUSEPORT group (bind order), the same mapping
    // for every address: addresses with one index share a worker, others do not.
    let mut worker_of_index = std::collections::HashMap::new();
    for last in 10..22u8 {
        let client = std::net::Ipv4Addr::new(127, 0, 9, last);
        let index = zerocopy_server::worker::balance::worker_for(client.into(), 2);
        let before = accepted_per_worker(&s);
        for _ in 0..6 {
            request_from(client, s.addr);
        }
        let after = accepted_per_worker(&s);
        let got: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        let worker = got
            .iter()
            .position(|&n| n == 6)
            .unwrap_or_else(|| panic!("client {client}: connections per worker {got:?}"));
        assert_eq!(got.iter().sum::<u64>(), 6, "{got:?}");
        let expected = *worker_of_index.entry(index).or_insert(worker);
        assert_eq!(worker, expected, "client {client} (index {index})");
    }
    assert_eq!(worker_of_index.len(), 2, "both workers take clients");
    assert_ne!(worker_of_index[&0], worker_of_index[&1]);
}

/// Reserves explicit 2 MiB pages for the test when none are (root only), and gives them back.
struct HugePagePool {
    before: Option<String>,
}

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

impl HugePagePool {
    fn ensure(pages: u64) -> Self {
        let now = std::fs::read_to_string(NR_HUGEPAGES).unwrap_or_default();
        if now.trim().parse::<u64>().unwrap_or(0) >= pages {
            return Self { before: None };
        }
        match std::fs::write(NR_HUGEPAGES, pages.to_string()) {
            Ok(()) => Self { before: Some(now) },
            Err(_) => Self { before: None },
        }
    }
}

impl Drop for HugePagePool {
    fn drop(&mut self) {
        if let Some(before) = &self.before {
            let _ = std::fs::write(NR_HUGEPAGES, before.trim());
        }
    }
}

/// Free explicit huge pages on the system.
fn free_huge_pages() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// KiB of explicit huge pages the process maps.
fn hugetlb_kib(s: &Server) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/smaps", s.child.id()))
        .unwrap()
        .lines()
        .filter_map(|l| {
            l.strip_prefix("Private_Hugetlb:")
                .or_else(|| l.strip_prefix("Shared_Hugetlb:"))
        })
        .filter_map(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .sum()
}

fn huge_pages_back_the_heaps_when_enabled(d: Driver) {
    let site = Site::new();
    site.file("f.txt", "f");
    // One daemon at a time takes from the pool (the io_uring and epoll runs of this test).
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let _pool = HugePagePool::ensure(64);
    let routes = "[host_routes.\"h\"]\npath = \"{site}\"\n";
    let on = Server::start_full(
        d,
        &site,
        "threads = 1\n[performance]\nhuge_pages_enabled = true\n",
        routes,
    );
    let off = Server::start(d, &site, routes);
    for s in [&on, &off] {
        for _ in 0..50 {
            assert_eq!(s.get("h", "/f.txt").status, 200);
        }
    }
    assert_eq!(hugetlb_kib(&off), 0, "huge pages without the knob");
    let log = on.wait_log("huge_pages_enabled: ");
    if free_huge_pages() == 0 && hugetlb_kib(&on) == 0 {
        // Not root: no pool to take from; what the daemon said is all there is to check.
        assert!(log.contains("huge_pages_enabled: "), "{log}");
        return;
    }
    assert!(log.contains("mimalloc uses large OS pages"), "{log}");
    assert!(hugetlb_kib(&on) >= 2048, "no 2 MiB page mapped:\n{log}");
}

crate::both_drivers!(
    cbpf_keeps_a_client_address_on_one_worker,
    huge_pages_back_the_heaps_when_enabled,
    threads_setting_starts_that_many_pinned_workers,
    zero_threads_means_one_per_core,
    drops_privileges_after_binding,
);

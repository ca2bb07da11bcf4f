//! `[performance] huge_pages_enabled`: mimalloc's large OS pages, when the system has them.
//!
//! mimalloc then asks for 2 MiB pages (`MAP_HUGETLB`, from the pool that
//! `/proc/sys/vm/nr_hugepages` reserves) for the memory it maps, and falls back to transparent
//! huge pages (`madvise(MADV_HUGEPAGE)`) or plain 4 KiB pages where it cannot get them. mimalloc
//! reads the option once, at its first allocation, so the daemon turns it on through its
//! environment by executing itself again ([`restart_with_huge_pages`]). Without either kind of
//! huge page on the system the option stays off: normal pages, and one line at info says why.
//!
//! [`release_freed`] gives a thread's freed memory back to the system, for a worker whose burst
//! of connections has gone idle.

use std::path::Path;

/// What the system offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HugePages {
    /// Free pages in the explicit (hugetlbfs) pool, less those reserved by mappings.
    pub free: u64,
    /// The page size of that pool, in KiB.
    pub size_kib: u64,
    /// The transparent huge pages mode: `always`, `madvise` or `never` (`None`: no THP).
    pub transparent: Option<String>,
}

impl HugePages {
    /// Reads `/proc/meminfo` and `/sys/kernel/mm/transparent_hugepage/enabled`.
    pub fn probe() -> Self {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let field = |name: &str| -> u64 {
            meminfo
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let thp = Path::new("/sys/kernel/mm/transparent_hugepage/enabled");
        Self {
            // Reserved pages are free until touched, but promised to another mapping.
            free: field("HugePages_Free:").saturating_sub(field("HugePages_Rsvd:")),
            size_kib: field("Hugepagesize:"),
            transparent: std::fs::read_to_string(thp)
                .ok()
                .and_then(|s| selected_mode(&s)),
        }
    }

    /// The arena size (MiB) that half the free explicit pages can back (the pool may have other
    /// users), up to mimalloc's usual 1 GiB; `None` without explicit pages.
    pub fn arena_mib(&self) -> Option<u64> {
        let mib = (self.free * self.size_kib / 1024 / 2).min(1024);
        (mib > 0).then_some(mib)
    }

    /// Whether mimalloc can get huge pages of either kind.
    pub fn available(&self) -> bool {
        self.free > 0 || matches!(self.transparent.as_deref(), Some("always" | "madvise"))
    }

    pub fn describe(&self) -> String {
        format!(
            "{} free {} KiB pages reserved, transparent huge pages {}",
            self.free,
            self.size_kib,
            self.transparent.as_deref().unwrap_or("unsupported")
        )
    }
}

/// The bracketed choice of a sysfs mode list: `always [madvise] never` → `madvise`.
fn selected_mode(list: &str) -> Option<String> {
    let start = list.find('[')? + 1;
    let end = start + list.get(start..)?.find(']')?;
    list.get(start..end).map(str::to_string)
}

/// The environment variable through which mimalloc reads the option at its start.
pub const MIMALLOC_ENV: &str = "MIMALLOC_ALLOW_LARGE_OS_PAGES";

/// Gives the memory this thread's heap has freed back to the system now, instead of when
/// mimalloc would (it keeps freed pages for reuse). Costs a walk over the heap's pages: for
/// occasional use, after a burst.
pub fn release_freed() {
    // SAFETY: no arguments but a flag; collects the calling thread's heap.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// mimalloc settles where its memory comes from at its first allocation, long before the
/// config is read: so when the system has huge pages and the option is not on yet, the daemon
/// executes itself again, the same process (pid, descriptors, arguments), with the option in
/// its environment. Returns when there is nothing to do, or when that fails — the daemon then
/// goes on with normal pages and [`huge_pages_state`] says so.
pub fn restart_with_huge_pages() {
    let system = HugePages::probe();
    if std::env::var_os(MIMALLOC_ENV).is_some() || !system.available() {
        return;
    }
    use std::os::unix::process::CommandExt;
    // /proc/self/exe: the running binary even when its file was replaced by an upgrade.
    let mut command = std::process::Command::new("/proc/self/exe");
    if let Some(arg0) = std::env::args_os().next() {
        command.arg0(arg0);
    }
    command
        .args(std::env::args_os().skip(1))
        .env(MIMALLOC_ENV, "1");
    if let Some(mib) = system.arena_mib() {
        // mimalloc maps its memory in arenas of 1 GiB; one that the reserved pool cannot
        // hold falls back to normal pages whole.
        command.env("MIMALLOC_ARENA_RESERVE", format!("{mib}MiB"));
    }
    let error = command.exec();
    // Only a failed exec returns; the log is not up yet.
    eprintln!("zerocopy-server: huge_pages_enabled: cannot restart with large OS pages: {error}");
}

/// What `huge_pages_enabled` achieved, for the start-up log.
pub fn huge_pages_state() -> String {
    let system = HugePages::probe();
    if !system.available() {
        return format!(
            "huge_pages_enabled: the system has no huge pages ({}); normal pages",
            system.describe()
        );
    }
    // SAFETY: reads a mimalloc option.
    let on =
        unsafe { libmimalloc_sys::mi_option_is_enabled(libmimalloc_sys::mi_option_large_os_pages) };
    if on {
        format!(
            "huge_pages_enabled: mimalloc uses large OS pages ({})",
            system.describe()
        )
    } else {
        format!(
            "huge_pages_enabled: large OS pages could not be turned on ({}); normal pages",
            system.describe()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_selected_mode_is_the_bracketed_one() {
        assert_eq!(
            selected_mode("always [madvise] never\n").as_deref(),
            Some("madvise")
        );
        assert_eq!(
            selected_mode("[always] madvise never").as_deref(),
            Some("always")
        );
        assert_eq!(selected_mode("always madvise never"), None);
        let none = HugePages {
            free: 0,
            size_kib: 2048,
            transparent: Some("never".into()),
        };
        assert!(!none.available());
        assert!(HugePages {
            free: 3,
            ..none.clone()
        }
        .available());
        assert!(HugePages {
            transparent: Some("madvise".into()),
            ..none.clone()
        }
        .available());
        assert_eq!(none.arena_mib(), None);
        let pool = |free| HugePages {
            free,
            ..none.clone()
        };
        assert_eq!(pool(64).arena_mib(), Some(64));
        assert_eq!(pool(100_000).arena_mib(), Some(1024));
    }
}

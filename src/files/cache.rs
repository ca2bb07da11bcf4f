//! The per-worker file cache: the bytes of small files that `sendfile`-mode routes serve, held
//! in memory between requests, so that a hot file costs one `send(2)` instead of `openat2`,
//! `fstat`, `sendfile` and `close` per request. It is nginx's `open_file_cache` taken one step
//! further: the bytes, not only the descriptor.
//!
//! **Freshness.** An entry is served as it is for `file_cache_valid_ms` after it was last
//! checked. The first request after that checks the file with one `stat(2)` of the path that
//! was opened (below the route root's descriptor) and compares device, inode, size and the
//! modification and change times: anything different (the file rewritten in place, replaced by
//! a rename, removed) drops the entry, and the request opens the file again. With
//! `file_cache_valid_ms = 0` every request checks. A cached response is always whole: bytes and
//! metadata come from one read, confirmed by a second `fstat` after it, so a file that changes
//! while it is read is served from disk and not cached; and a file changed within [`RACY`] of
//! its read is read again once that has passed, since a write in the same timestamp tick would
//! leave every compared field as it was.
//!
//! **Containment** stays the file backend's: an entry is only made from a descriptor that
//! `openat2(RESOLVE_BENEATH)` (or its checked fallback) opened, and a check that finds another
//! inode at the path (a symlink swapped in, say) sends the request back to that open.
//!
//! **Memory.** Files up to `file_cache_max_file_size` bytes are cached, up to `file_cache_size`
//! bytes per worker. When a new file does not fit, the least recently used entries unused for
//! [`ADMIT_AFTER_IDLE`] go until a tenth of the space is free (none used more recently: the new
//! file is not cached); entries unused for [`INACTIVE`] are dropped by the worker's
//! sweep. Each worker has its own cache (a thread-local, no lock), and what a request takes from
//! it is an `Rc`, never a borrow held across an `.await`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{MemFile, Opened, Wait};
use crate::config::FileCache;
use crate::metrics::WorkerStats;
use crate::net::sys;
use crate::route::Target;

/// How long an entry no request used stays cached.
pub const INACTIVE: Duration = Duration::from_secs(60);

/// How long a cached file must have gone unused before a new file may take its place in a full
/// cache. While every entry was used more recently, new files are served from disk and not
/// cached: a working set larger than the cache does not churn it (each miss reading a file,
/// evicting another and reading that one again), and a hot set keeps its place against a
/// stream of files asked for once.
pub const ADMIT_AFTER_IDLE: Duration = Duration::from_secs(5);

/// How long a full cache that found too little to evict admits nothing without looking again.
const RECHECK: Duration = Duration::from_secs(1);

/// A cached file.
pub struct Cached {
    pub file: MemFile,
    identity: Identity,
    /// The path opened (relative to `root`, or absolute for an exact-file route), to `stat`.
    path: CString,
    checked: Cell<Instant>,
    used: Cell<Instant>,
    /// For a file changed within [`RACY`] of its read: when the entry must be read again.
    expires: Option<Instant>,
    /// When the open of the file it was read from began.
    read: Instant,
}

/// How recently a file may have changed for its read to be doubtful. A write that lands after
/// the read within the same timestamp tick (a jiffy; a second or two on some filesystems)
/// leaves size and times as they were, so the read could hold a torn mix that every later
/// check would pass. Such an entry is served only until `RACY` has passed, then read again
/// (the "racily clean" problem, as git handles it).
pub const RACY: Duration = Duration::from_secs(2);

/// Whether a file's last change (its ctime) is within [`RACY`] of `now`, or in the future.
fn racy(st: &libc::stat, now: SystemTime) -> bool {
    let changed = Duration::new(
        u64::try_from(st.st_ctime).unwrap_or(0),
        u32::try_from(st.st_ctime_nsec).unwrap_or(0),
    );
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    now.checked_sub(changed).is_none_or(|age| age < RACY)
}

/// Where a request's file is cached: the route's root (an exact-file route's path) and the
/// relative path the request named (empty for an exact-file route).
pub struct Key<'a> {
    root: &'a Path,
    relative: &'a str,
    /// Whether `root` is a directory whose descriptor resolves `path`.
    in_dir: bool,
}

impl<'a> Key<'a> {
    /// The path a check stats: relative to the root's descriptor, or the exact file's own.
    fn path(&self) -> &[u8] {
        if self.in_dir {
            self.relative.as_bytes()
        } else {
            self.root.as_os_str().as_bytes()
        }
    }

    pub fn of(target: &'a Target<'_>) -> Option<Self> {
        match target {
            Target::File(path) => Some(Self {
                root: path,
                relative: "",
                in_dir: false,
            }),
            Target::InDir { root, relative } => Some(Self {
                root,
                relative,
                in_dir: true,
            }),
            Target::Upstream(_) | Target::NotFound => None,
        }
    }
}

/// What the cache holds for a request.
pub enum Lookup {
    /// The file, fresh.
    Hit(Rc<Cached>),
    /// Nothing (counted as a miss).
    Miss,
    /// The file, due for its check: [`confirm`] it with the identity of what its path names
    /// now ([`Check`]), on the worker for a local file system, on a file I/O thread otherwise.
    Check(Rc<Cached>),
}

/// The cached file for `key`: fresh, due for its check, or none.
pub fn lookup(
    state: &super::FilesState,
    key: &Key<'_>,
    config: &FileCache,
    now: Instant,
    stats: &WorkerStats,
) -> Lookup {
    let found = state
        .cache
        .borrow()
        .roots
        .get(key.root)
        .and_then(|files| files.get(key.relative))
        .cloned();
    let Some(entry) = found else {
        WorkerStats::bump(&stats.file_cache_misses);
        return Lookup::Miss;
    };
    if entry.expires.is_some_and(|at| now >= at) {
        forget(state, key, stats);
        return Lookup::Miss;
    }
    if now.saturating_duration_since(entry.checked.get()) >= config.valid {
        return Lookup::Check(entry);
    }
    entry.used.set(now);
    WorkerStats::bump(&stats.file_cache_hits);
    Lookup::Hit(entry)
}

/// An entry due for its check, after it: kept when `now_there` (what its path names now, see
/// [`Check`]) is the file it was read from, else dropped (`None`: the request opens the file).
pub fn confirm(
    state: &super::FilesState,
    key: &Key<'_>,
    entry: Rc<Cached>,
    now_there: Option<Identity>,
    now: Instant,
    stats: &WorkerStats,
) -> Option<Rc<Cached>> {
    if now_there != Some(entry.identity) {
        forget(state, key, stats);
        return None;
    }
    entry.checked.set(now);
    entry.used.set(now);
    WorkerStats::bump(&stats.file_cache_hits);
    Some(entry)
}

fn forget(state: &super::FilesState, key: &Key<'_>, stats: &WorkerStats) {
    state
        .cache
        .borrow_mut()
        .remove(key.root, key.relative, stats);
    WorkerStats::bump(&stats.file_cache_misses);
}

/// On a worker (a local file system): the identity of what `entry`'s path names now, from the
/// dentry cache alone and without leaving the root's file system (`openat2(O_PATH,
/// RESOLVE_CACHED | RESOLVE_NO_XDEV)` and `fstat`); `Err` when that cannot tell without the disk
/// (or a mount below the root) — then a [`Check`] runs on a file I/O thread.
pub fn check_cached(
    state: &super::FilesState,
    key: &Key<'_>,
    entry: &Cached,
) -> Result<Option<Identity>, ()> {
    if !crate::net::offload::cached_opens() {
        return Err(());
    }
    let root = match key.in_dir {
        true => Some(state.root_dir(key.root, Wait::Never).map_err(|_| ())?),
        false => None,
    };
    let flags = libc::O_PATH | libc::O_CLOEXEC;
    let resolve = match root {
        Some(_) => libc::RESOLVE_CACHED | libc::RESOLVE_NO_XDEV,
        None => libc::RESOLVE_CACHED,
    };
    let dir = root.as_ref().map(|fd| fd.as_fd());
    match sys::open_beneath(dir, &entry.path, flags, resolve) {
        Ok(fd) => Ok(sys::fstat(fd.as_fd()).ok().map(|st| Identity::of(&st))),
        // Gone: the entry goes. Anything else (not cached, a mount, out of descriptors): the
        // thread's `stat` decides.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => Ok(None),
        Err(_) => Err(()),
    }
}

/// Marks an entry as checked while its check runs on a file I/O thread: the requests for it
/// meanwhile are served the entry instead of sending a check each. Returns when it was checked
/// before, to put back ([`unchecked`]) if the check fails.
pub fn checking(entry: &Cached, now: Instant) -> Instant {
    entry.checked.replace(now)
}

/// A check that could not run (the file I/O threads full or late): the entry is due again.
pub fn unchecked(entry: &Cached, before: Instant) {
    entry.checked.set(before);
}

/// The check of a cached file: one `stat` of the path it was opened by, below the route root's
/// descriptor. Owned, so that it can run on a file I/O thread.
pub struct Check {
    /// The route's root and its descriptor when the worker had it (a directory route).
    root: Option<(PathBuf, Option<std::sync::Arc<OwnedFd>>)>,
    path: CString,
}

impl Check {
    pub fn of(state: &super::FilesState, key: &Key<'_>, entry: &Cached) -> Self {
        let root = key.in_dir.then(|| {
            let fd = state.root_dir(key.root, Wait::Never).ok();
            (key.root.to_path_buf(), fd)
        });
        Self {
            root,
            path: entry.path.clone(),
        }
    }

    /// On a file I/O thread: the identity of what the path names now, `None` when it is gone.
    pub fn run(self) -> Option<Identity> {
        let root = match self.root {
            Some((path, fd)) => Some(super::root_or_open(fd, &path).ok()?),
            None => None,
        };
        let st = sys::stat_at(root.as_ref().map(|fd| fd.as_fd()), &self.path).ok()?;
        Some(Identity::of(&st))
    }
}

/// Whether a file just opened is one for the cache: small enough, not the index served for a
/// directory named without its trailing slash (the index is the route's, not the key's), and
/// with room for it (see [`ADMIT_AFTER_IDLE`]).
pub fn wants(state: &super::FilesState, opened: &Opened, config: &FileCache, now: Instant) -> bool {
    let len = opened.meta.len;
    config.enabled()
        && len <= config.max_file_size
        && len <= config.size
        && !opened.via_index
        && state.cache.borrow().admits(len, config.size, now)
}

/// [`wants`] before the file is open (its size unknown): whether the cache may take a file of
/// the largest size it caches.
pub fn may_want(state: &super::FilesState, config: &FileCache, now: Instant) -> bool {
    let len = config.max_file_size.min(config.size);
    config.enabled() && state.cache.borrow().admits(len, config.size, now)
}

/// A file read whole for the cache.
pub struct Read {
    pub body: Vec<u8>,
    /// Taken before the read: a change in the same tick as any part of it counts as racy.
    pub at: SystemTime,
    /// `fstat` of the file after the read: unchanged from the open's, the read is whole. Taken
    /// where the read ran (on a file I/O thread, for a file system that may make it wait).
    after: libc::stat,
}

/// Reads all of a file of `len` bytes for the cache. `Wait::Never` reads only what the page
/// cache holds and answers `Err(true)` when the disk would be needed; `Err(false)`: an error or
/// a short file (sent by `sendfile` instead).
pub fn read(fd: &OwnedFd, len: u64, wait: Wait) -> Result<Read, bool> {
    let at = SystemTime::now();
    let body = read_whole(fd, len, wait)?;
    let after = super::stat(fd).map_err(|_| false)?;
    Ok(Read { body, at, after })
}

/// Puts a file just opened for `key` and read whole into the cache, when it is unchanged by the
/// time it was read and has room (or a newer read of it is there already); `None` (changed
/// while read) leaves it to `sendfile`.
pub fn fill(
    state: &super::FilesState,
    key: Key<'_>,
    opened: &Opened,
    read: Read,
    config: &FileCache,
    now: Instant,
    stats: &WorkerStats,
) -> Option<Rc<Cached>> {
    let len = opened.meta.len;
    let identity = Identity::of(&opened.st);
    if read.body.len() as u64 != len || Identity::of(&read.after) != identity {
        return None;
    }
    let entry = Rc::new(Cached {
        file: MemFile::new(opened.meta.clone(), read.body),
        identity,
        path: CString::new(key.path()).ok()?,
        checked: Cell::new(now),
        used: Cell::new(now),
        expires: racy(&opened.st, read.at).then(|| now + RACY),
        read: opened.at,
    });
    let mut cache = state.cache.borrow_mut();
    // Two requests that missed together open and read the file on two threads: the one opened
    // last has the newer file, whichever finished last. This one serves its request either way.
    let newer = cache
        .roots
        .get(key.root)
        .and_then(|files| files.get(key.relative))
        .is_some_and(|e| e.read > entry.read);
    if newer || !cache.make_room(len, config.size, now, stats) {
        return Some(entry);
    }
    cache.insert(key, entry.clone(), stats);
    Some(entry)
}

/// Drops entries unused for [`INACTIVE`]; the worker's idle sweep calls it.
pub fn sweep(cache: &RefCell<Cache>, now: Instant, stats: &WorkerStats) {
    let mut cache = cache.borrow_mut();
    if cache.files > 0 {
        cache.retain(
            |e| now.saturating_duration_since(e.used.get()) < INACTIVE,
            stats,
        );
    }
}

/// One worker's cached files.
#[derive(Default)]
pub struct Cache {
    /// Entries by root, then by relative path (two levels, so a lookup needs no allocation).
    roots: HashMap<PathBuf, HashMap<String, Rc<Cached>>>,
    files: u64,
    bytes: u64,
    /// Set when the cache was full and too few entries had gone unused for
    /// [`ADMIT_AFTER_IDLE`]: until then nothing is admitted, without looking (a look sorts every
    /// entry; a miss must not pay that each time).
    evictable_at: Option<Instant>,
}

impl Cache {
    /// Whether a file of `len` bytes could be cached now: it fits, or entries may have gone
    /// unused long enough to make room.
    fn admits(&self, len: u64, size: u64, now: Instant) -> bool {
        self.bytes + len <= size || self.evictable_at.is_none_or(|at| now >= at)
    }

    fn insert(&mut self, key: Key<'_>, entry: Rc<Cached>, stats: &WorkerStats) {
        let len = entry.file.body.len() as u64;
        let files = self.roots.entry(key.root.to_path_buf()).or_default();
        if let Some(old) = files.insert(key.relative.to_string(), entry) {
            self.files -= 1;
            self.bytes -= old.file.body.len() as u64;
        }
        self.files += 1;
        self.bytes += len;
        self.publish(stats);
    }

    fn remove(&mut self, root: &Path, relative: &str, stats: &WorkerStats) {
        let Some(files) = self.roots.get_mut(root) else {
            return;
        };
        if let Some(old) = files.remove(relative) {
            self.files -= 1;
            self.bytes -= old.file.body.len() as u64;
        }
        if files.is_empty() {
            self.roots.remove(root);
        }
        self.publish(stats);
    }

    fn retain(&mut self, mut keep: impl FnMut(&Cached) -> bool, stats: &WorkerStats) {
        let (mut files, mut bytes) = (0, 0);
        self.roots.retain(|_, entries| {
            entries.retain(|_, e| keep(e));
            files += entries.len() as u64;
            bytes += entries
                .values()
                .map(|e| e.file.body.len() as u64)
                .sum::<u64>();
            !entries.is_empty()
        });
        (self.files, self.bytes) = (files, bytes);
        self.publish(stats);
    }

    /// Makes room for `len` more bytes: the least recently used entries go until a tenth of
    /// the space is free besides — but only entries unused for [`ADMIT_AFTER_IDLE`]. When those
    /// cannot make room, nothing goes, `false` (the file is not cached), and nothing is admitted
    /// for [`RECHECK`].
    fn make_room(&mut self, len: u64, size: u64, now: Instant, stats: &WorkerStats) -> bool {
        if self.bytes + len <= size {
            return true;
        }
        let target = size.saturating_sub(size / 10).saturating_sub(len);
        let idle_before = now.checked_sub(ADMIT_AFTER_IDLE);
        let mut uses: Vec<(Instant, u64)> = self
            .roots
            .values()
            .flat_map(|files| files.values())
            .map(|e| (e.used.get(), e.file.body.len() as u64))
            .collect();
        let idle: u64 = uses
            .iter()
            .filter(|(used, _)| idle_before.is_some_and(|before| *used <= before))
            .map(|(_, len)| len)
            .sum();
        let Some(idle_before) = idle_before.filter(|_| self.bytes + len - idle <= size) else {
            self.evictable_at = Some(now + RECHECK);
            return false;
        };
        uses.sort_unstable_by_key(|(used, _)| std::cmp::Reverse(*used));
        // Keep the most recent entries while they fit under the target.
        let mut kept = 0;
        let mut cutoff = idle_before;
        for (used, len) in uses {
            if kept + len > target {
                cutoff = cutoff.min(used);
                break;
            }
            kept += len;
        }
        self.retain(|e| e.used.get() > cutoff, stats);
        self.evictable_at = None;
        true
    }

    fn publish(&self, stats: &WorkerStats) {
        stats.file_cache_files.store(self.files, Ordering::Relaxed);
        stats.file_cache_bytes.store(self.bytes, Ordering::Relaxed);
    }
}

/// What says a file is unchanged: the same inode, size, modification and change times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    dev: u64,
    ino: u64,
    size: i64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    fn of(st: &libc::stat) -> Self {
        Self {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }
}

/// Reads all `len` bytes of a file from offset 0; `Err(false)` on an error or a short file,
/// `Err(true)` when `Wait::Never` and a byte is not in the page cache (or the file system cannot
/// tell: `EOPNOTSUPP`, as tmpfs answers).
fn read_whole(fd: &OwnedFd, len: u64, wait: Wait) -> Result<Vec<u8>, bool> {
    let len = usize::try_from(len).map_err(|_| false)?;
    let mut body = Vec::with_capacity(len);
    while body.len() < len {
        let done = body.len();
        let n = match wait {
            Wait::Never => sys::pread_nowait_append(fd.as_fd(), &mut body, len - done, done as u64),
            Wait::Allowed => sys::pread_append(fd.as_fd(), &mut body, len - done, done as u64),
        };
        match n {
            Ok(n) if n > 0 => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EAGAIN) | Some(libc::EOPNOTSUPP)
                ) =>
            {
                return Err(wait == Wait::Never)
            }
            _ => return Err(false),
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::FileMeta;
    use std::os::fd::AsRawFd;

    fn entry(len: usize, used: Instant) -> Rc<Cached> {
        Rc::new(Cached {
            file: MemFile::new(
                FileMeta::new(len as u64, 0, Path::new("f.bin")),
                vec![0; len],
            ),
            // SAFETY: an all-zero `stat` is a valid value.
            identity: Identity::of(&unsafe { std::mem::zeroed() }),
            path: CString::new("f.bin").unwrap(),
            checked: Cell::new(used),
            used: Cell::new(used),
            expires: None,
            read: used,
        })
    }

    fn key<'a>(root: &'a Path, relative: &'a str) -> Key<'a> {
        Key {
            root,
            relative,
            in_dir: true,
        }
    }

    fn names(c: &Cache) -> Vec<String> {
        let mut v: Vec<String> = c
            .roots
            .iter()
            .flat_map(|(root, files)| files.keys().map(move |k| format!("{}/{k}", root.display())))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn counts_files_and_bytes_as_entries_come_and_go() {
        let stats = WorkerStats::default();
        let mut c = Cache::default();
        let t = Instant::now();
        let (r1, r2) = (Path::new("/r1"), Path::new("/r2"));
        c.insert(key(r1, "a"), entry(10, t), &stats);
        c.insert(key(r1, "b"), entry(20, t), &stats);
        c.insert(key(r2, "a"), entry(30, t), &stats);
        assert_eq!((c.files, c.bytes), (3, 60));
        // Replacing an entry counts the new size only.
        c.insert(key(r1, "a"), entry(5, t), &stats);
        assert_eq!((c.files, c.bytes), (3, 55));
        c.remove(r2, "a", &stats);
        c.remove(r2, "missing", &stats);
        c.remove(Path::new("/nowhere"), "a", &stats);
        assert_eq!((c.files, c.bytes), (2, 25));
        assert!(!c.roots.contains_key(r2), "an emptied root goes");
        assert_eq!(stats.file_cache_files.load(Ordering::Relaxed), 2);
        assert_eq!(stats.file_cache_bytes.load(Ordering::Relaxed), 25);
    }

    #[test]
    fn making_room_drops_the_least_recently_used_first() {
        let stats = WorkerStats::default();
        let mut c = Cache::default();
        let t = Instant::now();
        let r = Path::new("/r");
        for (i, name) in ["old", "mid", "new", "newest"].iter().enumerate() {
            c.insert(
                key(r, name),
                entry(25, t + Duration::from_secs(i as u64)),
                &stats,
            );
        }
        // 100 of 100 bytes held: room for 25 more leaves a tenth free besides, so the two
        // oldest go (100 - 10 - 25 = 65 bytes may stay: two entries).
        let later = t + Duration::from_secs(3) + ADMIT_AFTER_IDLE;
        assert!(c.make_room(25, 100, later, &stats));
        assert_eq!(names(&c), ["/r/new", "/r/newest"]);
        assert_eq!((c.files, c.bytes), (2, 50));
        // Enough room already: nothing goes.
        assert!(c.make_room(50, 100, later, &stats));
        assert_eq!(c.files, 2);
        // A file as large as the whole cache empties it.
        assert!(c.make_room(100, 100, later, &stats));
        assert_eq!((c.files, c.bytes), (0, 0));
    }

    #[test]
    fn a_full_cache_admits_a_new_file_only_in_place_of_an_idle_one() {
        let stats = WorkerStats::default();
        let mut c = Cache::default();
        let t = Instant::now();
        let r = Path::new("/r");
        c.insert(key(r, "a"), entry(50, t), &stats);
        c.insert(
            key(r, "b"),
            entry(50, t + Duration::from_millis(500)),
            &stats,
        );
        // Both used lately: a new file is not cached, and the cache does not look again for a
        // second.
        let now = t + Duration::from_millis(900);
        assert!(c.admits(50, 100, now), "nothing known yet: look");
        assert!(!c.make_room(50, 100, now, &stats));
        assert_eq!(c.files, 2);
        assert!(!c.admits(50, 100, now + Duration::from_millis(50)));
        assert!(
            c.admits(10, 200, now),
            "a file that fits is always admitted"
        );
        // Once the older one has gone unused long enough, it makes way (the newer one stays,
        // though a tenth of the space is not free then).
        let now = t + ADMIT_AFTER_IDLE;
        assert!(c.admits(50, 100, now));
        assert!(c.make_room(50, 100, now, &stats));
        assert_eq!(names(&c), ["/r/b"]);
    }

    #[test]
    fn sweeping_drops_entries_unused_for_a_minute() {
        let stats = WorkerStats::default();
        let t = Instant::now();
        let cache = RefCell::new(Cache::default());
        {
            let mut c = cache.borrow_mut();
            c.insert(key(Path::new("/s"), "idle"), entry(1, t), &stats);
            c.insert(key(Path::new("/s"), "busy"), entry(2, t + INACTIVE), &stats);
        }
        sweep(&cache, t + INACTIVE + Duration::from_millis(1), &stats);
        assert_eq!(names(&cache.borrow()), ["/s/busy"]);
        assert_eq!(stats.file_cache_bytes.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn reads_a_whole_file_and_refuses_a_short_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let fd: OwnedFd = std::fs::File::open(&path).unwrap().into();
        let len = data.len() as u64;
        assert_eq!(
            read_whole(&fd, len, Wait::Allowed).as_deref(),
            Ok(&data[..])
        );
        assert_eq!(read_whole(&fd, 0, Wait::Allowed).as_deref(), Ok(&[][..]));
        // The file shrank since its fstat: not cached.
        assert_eq!(read_whole(&fd, len + 1, Wait::Allowed), Err(false));
        assert_eq!(read_whole(&fd, len + 1, Wait::Never), Err(false));
    }

    #[test]
    fn a_read_that_would_wait_for_the_disk_is_refused_on_a_worker() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data = vec![7u8; 64 * 1024];
        let file = std::fs::File::create(&path).unwrap();
        std::io::Write::write_all(&mut &file, &data).unwrap();
        file.sync_all().unwrap();
        let fd: OwnedFd = std::fs::File::open(&path).unwrap().into();
        // SAFETY: fd is open; a zeroed statfs is valid for fstatfs to fill.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut fs) }, 0);
        let tmpfs = fs.f_type == libc::TMPFS_MAGIC;
        // Out of the page cache (written back, then dropped): a worker must not wait for it.
        let drop_pages = || {
            // SAFETY: fd is open; the advice takes no pointers.
            let rc =
                unsafe { libc::posix_fadvise(fd.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            assert_eq!(rc, 0);
        };
        drop_pages();
        assert_eq!(read_whole(&fd, data.len() as u64, Wait::Never), Err(true));
        // A file I/O thread reads it; then it is in the page cache, and a worker may read it
        // (tmpfs cannot tell, so there it always goes to the threads).
        let len = data.len() as u64;
        assert_eq!(
            read_whole(&fd, len, Wait::Allowed).as_deref(),
            Ok(&data[..])
        );
        let warm = read_whole(&fd, len, Wait::Never);
        if tmpfs {
            assert_eq!(warm, Err(true));
        } else {
            assert_eq!(warm.as_deref(), Ok(&data[..]));
        }
    }

    #[test]
    fn a_change_within_two_seconds_is_racy() {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        st.st_ctime = 1_000_000;
        st.st_ctime_nsec = 500_000_000;
        let at = |secs: f64| UNIX_EPOCH + Duration::from_secs_f64(secs);
        assert!(racy(&st, at(1_000_000.6)));
        assert!(racy(&st, at(1_000_002.4)));
        assert!(!racy(&st, at(1_000_002.6)));
        assert!(
            racy(&st, at(999_999.0)),
            "a change in the future is doubtful too"
        );
    }

    #[test]
    fn fills_from_disk_and_reads_a_racy_file_again() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/index.html"), "index").unwrap();
        std::fs::write(dir.path().join("f.txt"), "fresh").unwrap();
        let stats = WorkerStats::default();
        let state = super::super::FilesState::default();
        let config = FileCache::default();
        let now = Instant::now();
        let target = |rel: &str| Target::InDir {
            root: dir.path(),
            relative: rel.to_string(),
        };
        let open = |t: &Target<'_>| super::super::open(&state, t, "index.html", Wait::Allowed);
        let fill_from = |t: &Target<'_>, opened: &Opened| {
            let read = read(&opened.fd, opened.meta.len, Wait::Allowed).unwrap();
            fill(
                &state,
                Key::of(t).unwrap(),
                opened,
                read,
                &config,
                now,
                &stats,
            )
        };
        // A directory named without its slash is served its route's index: not cached.
        let t = target("sub");
        let opened = open(&t).unwrap();
        assert!(opened.via_index, "sub is served its index");
        assert!(!wants(&state, &opened, &config, now));
        let t = target("sub/index.html");
        let opened = open(&t).unwrap();
        assert!(wants(&state, &opened, &config, now));
        assert!(fill_from(&t, &opened).is_some());

        // Just written: cached, but only until RACY has passed.
        let t = target("f.txt");
        let key = Key::of(&t).unwrap();
        let opened = open(&t).unwrap();
        let entry = fill_from(&t, &opened).unwrap();
        assert_eq!(entry.file.body, b"fresh");
        assert_eq!(entry.expires, Some(now + RACY));
        let hit = lookup(
            &state,
            &key,
            &config,
            now + Duration::from_millis(10),
            &stats,
        );
        assert!(matches!(hit, Lookup::Hit(h) if Rc::ptr_eq(&h, &entry)));
        let over = lookup(&state, &key, &config, now + RACY, &stats);
        assert!(matches!(over, Lookup::Miss));
        assert_eq!(stats.file_cache_hits.load(Ordering::Relaxed), 1);
        assert_eq!(stats.file_cache_misses.load(Ordering::Relaxed), 1);
        assert_eq!(
            stats.file_cache_files.load(Ordering::Relaxed),
            1,
            "only sub/index.html"
        );
    }

    /// An entry due for its check is handed out for it; the check keeps it while the path
    /// names the same file and drops it when the file is replaced.
    #[test]
    fn a_due_check_confirms_or_drops_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.txt"), "one").unwrap();
        let stats = WorkerStats::default();
        let state = super::super::FilesState::default();
        // Checks due after 100 ms: both below fall within the file's racy window.
        let config = FileCache {
            valid: Duration::from_millis(100),
            ..FileCache::default()
        };
        let t = Target::InDir {
            root: dir.path(),
            relative: "f.txt".to_string(),
        };
        let key = Key::of(&t).unwrap();
        let opened = super::super::open(&state, &t, "index.html", Wait::Allowed).unwrap();
        let read = read(&opened.fd, opened.meta.len, Wait::Allowed).unwrap();
        let now = Instant::now();
        assert!(fill(
            &state,
            Key::of(&t).unwrap(),
            &opened,
            read,
            &config,
            now,
            &stats
        )
        .is_some());
        let later = now + config.valid;
        let Lookup::Check(due) = lookup(&state, &key, &config, later, &stats) else {
            panic!("the check is due");
        };
        let on_worker = check_cached(&state, &key, &due);
        let now_there = Check::of(&state, &key, &due).run();
        if crate::net::offload::cached_opens() {
            assert_eq!(
                on_worker,
                Ok(now_there),
                "the worker's check and the thread's agree"
            );
        }
        assert!(now_there.is_some());
        let kept = confirm(&state, &key, due, now_there, later, &stats);
        assert!(kept.is_some());
        assert!(matches!(
            lookup(&state, &key, &config, later, &stats),
            Lookup::Hit(_)
        ));
        // Replaced by a rename: another inode at the path.
        std::fs::write(dir.path().join("g.txt"), "two").unwrap();
        std::fs::rename(dir.path().join("g.txt"), dir.path().join("f.txt")).unwrap();
        let much_later = later + config.valid;
        let Lookup::Check(due) = lookup(&state, &key, &config, much_later, &stats) else {
            panic!("the check is due again");
        };
        let now_there = Check::of(&state, &key, &due).run();
        if crate::net::offload::cached_opens() {
            assert_eq!(check_cached(&state, &key, &due), Ok(now_there));
        }
        assert!(confirm(&state, &key, due, now_there, much_later, &stats).is_none());
        assert!(matches!(
            lookup(&state, &key, &config, much_later, &stats),
            Lookup::Miss
        ));
    }

    /// Two opens and reads of one file that finish out of order: the one opened last stays
    /// cached.
    #[test]
    fn an_older_read_does_not_replace_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.txt"), "same").unwrap();
        let stats = WorkerStats::default();
        let state = super::super::FilesState::default();
        let config = FileCache::default();
        let t = Target::InDir {
            root: dir.path(),
            relative: "f.txt".to_string(),
        };
        let open = || super::super::open(&state, &t, "index.html", Wait::Allowed).unwrap();
        let (older, newer) = (open(), open());
        assert!(newer.at > older.at);
        let read = |o: &Opened| read(&o.fd, o.meta.len, Wait::Allowed).unwrap();
        let now = Instant::now();
        let key = || Key::of(&t).unwrap();
        let first = fill(&state, key(), &newer, read(&newer), &config, now, &stats).unwrap();
        let second = fill(&state, key(), &older, read(&older), &config, now, &stats).unwrap();
        let cached = state.cache.borrow().roots[dir.path()]["f.txt"].clone();
        assert!(Rc::ptr_eq(&cached, &first) && !Rc::ptr_eq(&cached, &second));
    }

    #[test]
    fn identity_changes_with_content_and_inode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let st = |p: &Path| {
            let c = CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            assert_eq!(unsafe { libc::stat(c.as_ptr(), &mut st) }, 0);
            Identity::of(&st)
        };
        std::fs::write(&path, "one").unwrap();
        let first = st(&path);
        assert_eq!(st(&path), first);
        // Same size, rewritten in place: the change time moves.
        std::thread::sleep(Duration::from_millis(5));
        std::fs::write(&path, "two").unwrap();
        let second = st(&path);
        assert_ne!(second, first);
        // Replaced by a rename: another inode.
        let other = dir.path().join("g");
        std::fs::write(&other, "two").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert_ne!(st(&path).ino, second.ino);
    }
}

//! A file's bytes for a response without the worker waiting for the disk: the sends of files
//! the file cache does not hold (too large, the cache off, an index, a full cache), by
//! `sendfile(2)` or `pread(2)`.
//!
//! Both read the page cache when the file's pages are there, and the disk when they are not,
//! and a read from the disk (or a network or FUSE mount) would stall every connection of the
//! worker. So each piece is checked first: [`sendfile_all`] asks the kernel which pages of the
//! next piece ([`PIECE`]) it holds ([`Probe::resident`]: `cachestat(2)`, or `mincore(2)`) and
//! sends on the worker only when it holds them all, read; [`pread_append`] reads with
//! `RWF_NOWAIT`, which answers from the page cache or not at all. A file on a network or FUSE
//! mount ([`Source::remote`]) goes to the threads piece by piece whatever the page cache holds. A piece that needs the disk is sent (or read) by a file I/O thread
//! ([`offload`]) on duplicates of the descriptors, so a response cut off meanwhile cannot
//! have its numbers reused under the thread. As with nginx's `aio threads` with `sendfile`,
//! a cold file costs hand-offs; a warm one, one `cachestat` per piece.

use std::cell::RefCell;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use monoio::net::TcpStream;

use super::{io, offload, sys};
use crate::error::{Error, ErrorKind};

/// The most one `sendfile` call sends, and the range checked in the page cache before it
/// (nginx's `sendfile_max_chunk` default).
pub const PIECE: u64 = 2 << 20;

/// A file body's source: the open file, and whether it is on a network or FUSE mount, where
/// even a read of cached pages may ask the server (NFS revalidates its attributes first): every
/// piece of such a file goes to the threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    pub fd: RawFd,
    pub remote: bool,
}

/// Sends `len` bytes of `file` from `offset` with `sendfile(2)`, adding to `sent` what the
/// socket took, also when it fails part-way. Pieces not in the page cache are sent from a file
/// I/O thread. An error after the first byte is [`ErrorKind::Aborted`]: no error response can
/// follow a body begun; the connection closes.
pub async fn sendfile_all(
    stream: &TcpStream,
    file: Source,
    offset: u64,
    len: u64,
    sent: &mut u64,
) -> Result<(), Error> {
    let end = offset.saturating_add(len);
    // Bytes below `warm` were found in the page cache: sent on the worker without asking again.
    let (mut at, mut warm) = (offset, offset);
    // The head went before (with `MSG_MORE`): any error now cuts the response off.
    let mut probe = Probe::default();
    while at < end {
        if at >= warm && !file.remote {
            let piece = (end - at).min(PIECE);
            if probe.resident(file.fd, at, piece as usize) {
                warm = at + piece;
            }
        }
        let n = if at < warm {
            sendfile(stream.as_raw_fd(), file.fd, at, (warm - at) as usize)
        } else {
            let piece = (end - at).min(PIECE) as usize;
            let socket = dup(stream.as_raw_fd()).map_err(Error::cut_off)?;
            let disk = dup(file.fd).map_err(Error::cut_off)?;
            let job = offload::run(move || {
                let n = sendfile(socket.as_raw_fd(), disk.as_raw_fd(), at, piece);
                if matches!(&n, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
                    // The socket is full: read the piece now, while the client makes room, so
                    // that the next try finds it in the page cache — read, not only asked for.
                    warm_up(disk.as_fd(), at, piece);
                }
                n
            });
            match job.await {
                Ok(n) => n,
                Err(e) => {
                    if e.detail == offload::TIMED_OUT {
                        // The thread may still write to the socket (its copy) when the disk
                        // answers: shut it now, so that nothing follows and the client sees
                        // the end at once.
                        // SAFETY: shutdown takes no pointers; the socket is open.
                        unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_RDWR) };
                    }
                    return Err(e.cut_off());
                }
            }
        };
        match n {
            Ok(0) => {
                // The file shrank under us: the response cannot be completed as announced.
                return Err(Error::client(
                    ErrorKind::ClientGone,
                    "file shrank while it was being sent",
                ));
            }
            Ok(n) => {
                at += n as u64;
                *sent += n as u64;
            }
            Err(e) => io::wait_writable(stream, e).await?,
        }
    }
    Ok(())
}

/// Reads up to `want` bytes of `file` at `offset`, appended to `buf`: from the page cache on
/// the worker when it holds them, else on a file I/O thread. Fewer bytes than asked is not the
/// end of the file (the rest needed the disk); 0 is. An error is as it came (a 503 when the
/// threads are full or late): a caller that has sent part of the body makes it
/// [`Error::cut_off`].
pub async fn pread_append(
    file: Source,
    buf: &mut Vec<u8>,
    want: usize,
    offset: u64,
) -> Result<usize, Error> {
    // SAFETY: the caller's file stays open for the call (the backend holds it until its
    // response is sent).
    let fd = unsafe { BorrowedFd::borrow_raw(file.fd) };
    if !file.remote {
        if let Some(read) = read_cached(fd, buf, want, offset) {
            return read;
        }
    }
    let disk = dup(file.fd)?;
    let mut owned = std::mem::take(buf);
    let (owned, read) = offload::run(move || {
        let read = sys::pread_append(disk.as_fd(), &mut owned, want, offset);
        (owned, read)
    })
    .await?;
    *buf = owned;
    read.map_err(read_error)
}

/// [`pread_append`] on the worker, when the page cache holds the bytes; `None` when they need
/// the disk.
fn read_cached(
    fd: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    want: usize,
    offset: u64,
) -> Option<Result<usize, Error>> {
    loop {
        return match sys::pread_nowait_append(fd, buf, want, offset) {
            Ok(n) => Some(Ok(n)),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => None,
            // A file system that cannot read this way (tmpfs, overlayfs): asked otherwise.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                let cached = Probe::default().resident(fd.as_raw_fd(), offset, want);
                cached.then(|| sys::pread_append(fd, buf, want, offset).map_err(read_error))
            }
            Err(e) => Some(Err(read_error(e))),
        };
    }
}

fn read_error(e: std::io::Error) -> Error {
    Error::internal(format!("reading the file: {e}"))
}

/// `sendfile(2)` of up to `len` bytes of `file` at `offset` to `socket`.
fn sendfile(socket: RawFd, file: RawFd, offset: u64, len: usize) -> std::io::Result<usize> {
    let mut off = offset as libc::off_t;
    // SAFETY: both descriptors are open for the call; `off` is a live off_t.
    let n = unsafe { libc::sendfile(socket, file, &mut off, len) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// On a file I/O thread: reads `len` bytes of `file` at `offset` (into the thread's scratch
/// buffer), waiting for the disk, so that they are in the page cache afterwards.
fn warm_up(file: BorrowedFd<'_>, offset: u64, len: usize) {
    const STEP: usize = 64 * 1024;
    thread_local! {
        static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(STEP));
    }
    SCRATCH.with_borrow_mut(|scratch| {
        let mut done = 0;
        while done < len {
            scratch.clear();
            let want = (len - done).min(STEP);
            match sys::pread_append(file, scratch, want, offset + done as u64) {
                Ok(n) if n > 0 => done += n,
                _ => return,
            }
        }
    });
}

/// A duplicate of `fd` for a file I/O thread.
fn dup(fd: RawFd) -> Result<OwnedFd, Error> {
    // SAFETY: the caller's descriptor is open for the call.
    unsafe { BorrowedFd::borrow_raw(fd) }
        .try_clone_to_owned()
        .map_err(|e| Error::internal(format!("duplicating a descriptor: {e}")))
}

/// Whether the kernel has `cachestat(2)` (Linux 6.5; a seccomp profile may refuse it too):
/// cleared at its first refusal.
static CACHESTAT: AtomicBool = AtomicBool::new(true);

/// The page-cache checks of one response's file.
#[derive(Default)]
pub struct Probe {
    /// `cachestat` counted none of the file's pages where `mincore` found them all: its pages
    /// are another file's (overlayfs). Asked with `mincore` alone from then on.
    blind: bool,
}

impl Probe {
    /// Whether all the pages of `len` bytes of `file` at `offset` are in the page cache, read
    /// (not still on their way from the disk): a `sendfile` of them waits for nothing.
    ///
    /// One `cachestat(2)` counts the pages present; a page still being read counts too, so a
    /// one-byte `RWF_NOWAIT` read of the last one (the one read last) confirms. When it counts
    /// none — a cold file, or a file whose pages are another file's (overlayfs, where it
    /// always counts none) — or is not there (before Linux 6.5), `mincore(2)` on a mapping of
    /// the range, which follows the mapping to the file that holds the pages and reports only
    /// pages read; its "all there" is confirmed by the first and last byte (`RWF_NOWAIT`, where
    /// the file system can), in case the kernel did not tell the truth after all. `mincore`
    /// tells only the owner of a file (or a holder of `CAP_FOWNER`) the truth; for anyone else,
    /// the first and last byte are tried with `RWF_NOWAIT` alone — the pages between are then
    /// most likely there too, as they are read in order, but not surely.
    pub fn resident(&mut self, file: RawFd, offset: u64, len: usize) -> bool {
        if len == 0 {
            return true;
        }
        let last = offset + len as u64 - 1;
        if !self.blind && CACHESTAT.load(Ordering::Relaxed) {
            match cachestat(file, offset, len as u64) {
                Ok(cached) if cached >= pages(offset, len as u64) => {
                    return nowait_byte(file, last) != Some(false)
                }
                Ok(0) => {}
                Ok(_) => return false,
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                    CACHESTAT.store(false, Ordering::Relaxed);
                }
                // EPERM: refused for this file (or by a seccomp profile), asked otherwise.
                Err(_) => {}
            }
        }
        if let Some(mapped) = mapped_resident(file, offset, len) {
            let confirmed = mapped
                && nowait_byte(file, offset) != Some(false)
                && nowait_byte(file, last) != Some(false);
            self.blind |= confirmed && CACHESTAT.load(Ordering::Relaxed);
            return confirmed;
        }
        nowait_byte(file, offset) == Some(true) && nowait_byte(file, last) == Some(true)
    }
}

/// Whether the byte at `offset` reads from the page cache (`RWF_NOWAIT`); `None`: the file
/// system cannot tell (`EOPNOTSUPP`: tmpfs, overlayfs).
fn nowait_byte(file: RawFd, offset: u64) -> Option<bool> {
    let mut byte = [0u8; 1];
    let iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: `iov` describes one writable byte.
    let n = unsafe { libc::preadv2(file, &iov, 1, offset as libc::off_t, libc::RWF_NOWAIT) };
    if n >= 0 {
        return Some(true);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EOPNOTSUPP) => None,
        _ => Some(false),
    }
}

/// `mincore(2)` of the range, mapped (read-only, never touched, so no page is read): whether
/// every page is in memory. `None` when the file cannot be mapped, or when the kernel would not
/// tell: to a process that neither owns the file nor may write it (nor holds `CAP_FOWNER`),
/// `mincore` says every page is there (a side channel closed in Linux 5.0); only the owner and
/// a holder of `CAP_FOWNER` are asked.
fn mapped_resident(file: RawFd, offset: u64, len: usize) -> Option<bool> {
    /// Enough for [`PIECE`] in 4 KiB pages, one more for a range that does not start on one.
    const MOST: usize = (PIECE / 4096) as usize + 1;
    let page = page_size();
    let start = offset - offset % page;
    let span = (offset + len as u64 - start) as usize;
    let pages = span.div_ceil(page as usize);
    if pages > MOST {
        return None;
    }
    // SAFETY: geteuid takes no pointers.
    let euid = unsafe { libc::geteuid() };
    // SAFETY: the caller's descriptor is open for the call.
    let owner = sys::fstat(unsafe { BorrowedFd::borrow_raw(file) })
        .ok()?
        .st_uid;
    if owner != euid && !sys::has_cap_fowner() {
        return None;
    }
    // SAFETY: a new read-only mapping of the file; no memory of ours is passed.
    let at = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            span,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file,
            start as libc::off_t,
        )
    };
    if at == libc::MAP_FAILED {
        return None;
    }
    let mut vec = [0u8; MOST];
    // SAFETY: `at` is the mapping of `span` bytes just made; `vec` has room for its pages.
    let rc = unsafe { libc::mincore(at, span, vec.as_mut_ptr()) };
    // SAFETY: the mapping made above, unmapped once.
    unsafe { libc::munmap(at, span) };
    (rc == 0).then(|| vec[..pages].iter().all(|v| v & 1 == 1))
}

/// How many pages `len` bytes at `offset` touch.
fn pages(offset: u64, len: u64) -> u64 {
    let page = page_size();
    (offset + len).div_ceil(page) - offset / page
}

fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    // SAFETY: sysconf takes no pointers.
    *PAGE
        .get_or_init(|| u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096))
}

/// `cachestat(2)`: how many pages of the range are in the page cache.
fn cachestat(file: RawFd, offset: u64, len: u64) -> std::io::Result<u64> {
    /// The syscall's number, the same on every architecture of the unified table.
    const SYS_CACHESTAT: libc::c_long = 451;
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    let range = Range { off: offset, len };
    let mut stat = Stat::default();
    // SAFETY: both structs are live and laid out as the kernel's; it writes only `stat`.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file as libc::c_uint,
            &range as *const Range,
            &mut stat as *mut Stat,
            0 as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stat.nr_cache)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn pages_touched() {
        let page = page_size();
        assert_eq!(pages(0, 1), 1);
        assert_eq!(pages(0, page), 1);
        assert_eq!(pages(0, page + 1), 2);
        assert_eq!(pages(page - 1, 2), 2);
        assert_eq!(pages(page, 3 * page), 3);
    }

    /// A file just written is in the page cache; after it is dropped from it (written back,
    /// then `POSIX_FADV_DONTNEED`), it is not, until it is read again.
    #[test]
    fn residency_follows_the_page_cache() {
        // Beside the sources: a disk, most likely (a temporary directory may be tmpfs).
        let mut f = tempfile::NamedTempFile::new_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        f.write_all(&vec![7u8; 1 << 20]).unwrap();
        f.as_file().sync_all().unwrap();
        let fd = f.as_file().as_raw_fd();
        // SAFETY: fadvise takes no pointers.
        unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) };
        let resident = |offset, len| Probe::default().resident(fd, offset, len);
        let dropped = !resident(0, 1 << 20) && mapped_resident(fd, 4097, 8192) == Some(false);
        let mut buf = Vec::new();
        sys::pread_append(f.as_file().as_fd(), &mut buf, 1 << 20, 0).unwrap();
        assert!(
            resident(0, 1 << 20),
            "a file just read is in the page cache"
        );
        // The test runs as the file's owner: mincore answers.
        assert_eq!(mapped_resident(fd, 0, 1 << 20), Some(true));
        assert_eq!(mapped_resident(fd, 4097, 8192), Some(true));
        assert!(resident(5, 0));
        // tmpfs (or an overlay over it) keeps pages whatever the advice: only a disk drops them.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: `fs` is a live statfs the kernel fills.
        unsafe { libc::fstatfs(fd, &mut fs) };
        if fs.f_type != libc::TMPFS_MAGIC && fs.f_type != libc::OVERLAYFS_SUPER_MAGIC {
            assert!(dropped, "dropped pages counted as cached");
        }
    }
}

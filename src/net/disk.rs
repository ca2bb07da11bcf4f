//! A file's bytes for a response without the worker waiting for the disk: the sends of files
//! the file cache does not hold (too large, the cache off, an index, a full cache), by
//! `sendfile(2)` or `pread(2)`.
//!
//! Both read the page cache when the file's pages are there, and the disk when they are not,
//! and a read from the disk (or a network or FUSE mount) would stall every connection of the
//! worker. So each piece is checked first: [`sendfile_all`] asks the kernel which pages of the
//! next piece ([`PIECE`]) it holds ([`resident`]: `cachestat(2)`, or `mincore(2)`) and sends on
//! the worker only when it holds them all; [`pread_append`] reads with `RWF_NOWAIT`, which
//! answers from the page cache or not at all. A piece that needs the disk is sent (or read) by a file I/O thread
//! ([`offload`]) on duplicates of the descriptors, so a response cut off meanwhile cannot
//! have its numbers reused under the thread. As with nginx's `aio threads` with `sendfile`,
//! a cold file costs hand-offs; a warm one, one `cachestat` per piece.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use monoio::net::TcpStream;

use super::{io, offload, sys};
use crate::error::{Error, ErrorKind};

/// The most one `sendfile` call sends, and the range checked in the page cache before it
/// (nginx's `sendfile_max_chunk` default).
pub const PIECE: u64 = 2 << 20;

/// Sends `len` bytes of `file` from `offset` with `sendfile(2)`, adding to `sent` what the
/// socket took, also when it fails part-way. Pieces not in the page cache are sent from a file
/// I/O thread.
pub async fn sendfile_all(
    stream: &TcpStream,
    file: RawFd,
    offset: u64,
    len: u64,
    sent: &mut u64,
) -> Result<(), Error> {
    let end = offset.saturating_add(len);
    let mut at = offset;
    while at < end {
        let piece = (end - at).min(PIECE) as usize;
        let n = if resident(file, at, piece) {
            sendfile(stream.as_raw_fd(), file, at, piece)
        } else {
            let (socket, disk) = (dup(stream.as_raw_fd())?, dup(file)?);
            offload::run(move || {
                let n = sendfile(socket.as_raw_fd(), disk.as_raw_fd(), at, piece);
                if matches!(&n, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
                    // The socket is full: have the disk read the piece while the client
                    // makes room, so that the next try finds it in the page cache.
                    // SAFETY: readahead takes no pointers.
                    unsafe { libc::readahead(disk.as_raw_fd(), at as libc::off_t, piece) };
                }
                n
            })
            .await?
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
/// end of the file (the rest needed the disk); 0 is.
pub async fn pread_append(
    file: RawFd,
    buf: &mut Vec<u8>,
    want: usize,
    offset: u64,
) -> Result<usize, Error> {
    // SAFETY: the caller's file stays open for the call (the backend holds it until its
    // response is sent).
    let fd = unsafe { BorrowedFd::borrow_raw(file) };
    loop {
        match sys::pread_nowait_append(fd, buf, want, offset) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => break,
            // A file system that cannot read this way (tmpfs, overlayfs): asked otherwise.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                if resident(file, offset, want) {
                    return sys::pread_append(fd, buf, want, offset).map_err(read_error);
                }
                break;
            }
            Err(e) => return Err(read_error(e)),
        }
    }
    let disk = dup(file)?;
    let mut owned = std::mem::take(buf);
    let (owned, read) = offload::run(move || {
        let read = sys::pread_append(disk.as_fd(), &mut owned, want, offset);
        (owned, read)
    })
    .await?;
    *buf = owned;
    read.map_err(read_error)
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

/// Whether all the pages of `len` bytes of `file` at `offset` are in the page cache: a
/// `sendfile` of them reads no disk. One `cachestat(2)`; when it counts none (a cold file, or a
/// file whose pages are another file's: overlayfs, where it always counts none) or is not
/// there, `mincore(2)` on a mapping of the range, which follows the mapping to the file that
/// holds the pages.
pub fn resident(file: RawFd, offset: u64, len: usize) -> bool {
    if len == 0 {
        return true;
    }
    let pages = pages(offset, len as u64);
    if CACHESTAT.load(Ordering::Relaxed) {
        match cachestat(file, offset, len as u64) {
            Ok(cached) if cached >= pages => return true,
            Ok(0) => {}
            Ok(_) => return false,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                CACHESTAT.store(false, Ordering::Relaxed);
            }
            Err(_) => {}
        }
    }
    mapped_resident(file, offset, len)
}

/// `mincore(2)` of the range, mapped (read-only, never touched, so no page is read): whether
/// every page is in memory. `false` when the file cannot be mapped.
fn mapped_resident(file: RawFd, offset: u64, len: usize) -> bool {
    /// Enough for [`PIECE`] in 4 KiB pages, one more for a range that does not start on one.
    const MOST: usize = (PIECE / 4096) as usize + 1;
    let page = page_size();
    let start = offset - offset % page;
    let span = (offset + len as u64 - start) as usize;
    let pages = span.div_ceil(page as usize);
    if pages > MOST {
        return false;
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
        return false;
    }
    let mut vec = [0u8; MOST];
    // SAFETY: `at` is the mapping of `span` bytes just made; `vec` has room for its pages.
    let rc = unsafe { libc::mincore(at, span, vec.as_mut_ptr()) };
    // SAFETY: the mapping made above, unmapped once.
    unsafe { libc::munmap(at, span) };
    rc == 0 && vec[..pages].iter().all(|v| v & 1 == 1)
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
        let dir = std::env::current_dir().unwrap().join("target");
        let mut f = tempfile::NamedTempFile::new_in(&dir).unwrap();
        f.write_all(&vec![7u8; 1 << 20]).unwrap();
        f.as_file().sync_all().unwrap();
        let fd = f.as_file().as_raw_fd();
        // SAFETY: fadvise takes no pointers.
        unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) };
        let dropped = !resident(fd, 0, 1 << 20);
        let mut buf = Vec::new();
        sys::pread_append(f.as_file().as_fd(), &mut buf, 1 << 20, 0).unwrap();
        assert!(
            resident(fd, 0, 1 << 20),
            "a file just read is in the page cache"
        );
        assert!(resident(fd, 5, 0));
        // tmpfs (or an overlay over it) keeps pages whatever the advice: only a disk drops them.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: `fs` is a live statfs the kernel fills.
        unsafe { libc::fstatfs(fd, &mut fs) };
        if fs.f_type != libc::TMPFS_MAGIC && fs.f_type != libc::OVERLAYFS_SUPER_MAGIC {
            assert!(dropped, "dropped pages counted as cached");
        }
    }
}

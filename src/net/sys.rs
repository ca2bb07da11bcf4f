//! The raw system calls of the data plane that neither `std` nor monoio offers, each behind a
//! safe function: descriptors, file metadata and `openat2`, reads into a vector's spare room,
//! epoll for parked connections, and socket options. Every `unsafe` block of the data plane is
//! here (besides the socket I/O of [`super::io`], [`super::splice`] and [`super::tls`], and
//! `tls/ktls`), each with its `// SAFETY:` argument; callers see `io::Result`s.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The descriptor of a monoio socket, borrowed for as long as the socket is (monoio's streams
/// implement `AsRawFd` but not `AsFd`).
pub fn socket_fd(stream: &monoio::net::TcpStream) -> BorrowedFd<'_> {
    // SAFETY: the stream owns its descriptor and keeps it open while it is borrowed.
    unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) }
}

/// `-1` from a call: the thread's `errno` as an error.
fn check(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Takes ownership of a descriptor a call just returned.
fn owned(fd: libc::c_long) -> io::Result<OwnedFd> {
    let fd = libc::c_int::try_from(check(fd)?).map_err(|_| io::Error::other("descriptor"))?;
    // SAFETY: the call returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A new descriptor (close-on-exec) for the same open file as `fd`.
pub fn dup_cloexec(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: fcntl on a borrowed, open descriptor; no memory is passed.
    owned(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) }.into())
}

/// The first byte waiting on a socket, without taking it: `None` at its end (or when nothing
/// is there yet).
pub fn peek_byte(fd: BorrowedFd<'_>) -> io::Result<Option<u8>> {
    let mut first = 0u8;
    // SAFETY: peeks at most one byte into a live local.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            (&mut first as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    Ok((check(n as libc::c_long)? > 0).then_some(first))
}

/// Shuts the read side of the socket `fd` (its task then sees the end of its input).
///
/// `fd` is a descriptor number, not a borrow: the worker's connection registry holds numbers
/// of sockets whose tasks own them, and guarantees they are open (see `Registry::sweep`).
/// `shutdown(2)` passes no memory, so the call itself is sound for any number.
pub fn shutdown_read(fd: RawFd) {
    // SAFETY: no memory is passed; see above for which descriptor this is.
    unsafe { libc::shutdown(fd, libc::SHUT_RD) };
}

/// Shuts the sending side of every connected TCP socket of the process (not listeners, whose
/// sockets a new process may share after an upgrade): the FIN goes after what is queued, and
/// the peers see the end at once, whatever holds up the process's exit after it (a thread in
/// an uninterruptible close keeps every descriptor open until it returns). For the last
/// moment before `_exit`; the count shut.
pub fn shutdown_tcp_connections() -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let mut shut = 0;
    for fd in dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<RawFd>().ok())
    {
        let stream = sockopt(fd, libc::SO_TYPE) == Some(libc::SOCK_STREAM);
        let inet = matches!(
            sockopt(fd, libc::SO_DOMAIN),
            Some(libc::AF_INET | libc::AF_INET6)
        );
        if stream && inet && sockopt(fd, libc::SO_ACCEPTCONN) == Some(0) {
            // SAFETY: no memory is passed; on a descriptor closed meanwhile it fails.
            if unsafe { libc::shutdown(fd, libc::SHUT_WR) } == 0 {
                shut += 1;
            }
        }
    }
    shut
}

/// An integer `SOL_SOCKET` option of `fd`; None when it is not a socket.
fn sockopt(fd: RawFd, option: libc::c_int) -> Option<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live locals of the sizes passed.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(value)
}

/// `fstat(2)`.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: an all-zero `stat` is a valid value; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open; st is a live, writable stat.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }.into())?;
    Ok(st)
}

/// `fstatat(2)` of `path` relative to `dir` (`None`: the working directory), following
/// symlinks.
pub fn stat_at(dir: Option<BorrowedFd<'_>>, path: &CStr) -> io::Result<libc::stat> {
    let dir = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: an all-zero `stat` is a valid value; fstatat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` writable; both outlive the call.
    check(unsafe { libc::fstatat(dir, path.as_ptr(), &mut st, 0) }.into())?;
    Ok(st)
}

/// `fstatat(2)` of `path` relative to `dir`, not following a final symlink.
pub fn lstat_at(dir: BorrowedFd<'_>, path: &CStr) -> io::Result<libc::stat> {
    // SAFETY: an all-zero `stat` is a valid value; fstatat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` writable; both outlive the call.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            path.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    check(rc.into())?;
    Ok(st)
}

/// The names in the directory `dir` (opened for reading), without `.` and `..`, at most
/// `max` of them; `true` with them when there were more.
pub fn dir_names(dir: OwnedFd, max: usize) -> io::Result<(Vec<Vec<u8>>, bool)> {
    use std::os::fd::IntoRawFd;
    let fd = dir.into_raw_fd();
    // SAFETY: `fd` is an open directory descriptor that the stream takes over (and closes).
    let stream = unsafe { libc::fdopendir(fd) };
    if stream.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so `fd` is still ours to close.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    let mut names = Vec::new();
    let mut more = false;
    loop {
        // SAFETY: `stream` is an open directory stream; the entry it returns stays valid until
        // the next readdir or closedir, and its name is NUL-terminated.
        let entry = unsafe { libc::readdir64(stream) };
        if entry.is_null() {
            break;
        }
        // SAFETY: as above.
        let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) }.to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        if names.len() == max {
            more = true;
            break;
        }
        names.push(name.to_vec());
    }
    // SAFETY: `stream` is open and closed once; it closes `fd`.
    unsafe { libc::closedir(stream) };
    Ok((names, more))
}

/// `openat(2)` of `path` relative to `dir` (`None`: the working directory) with `flags`.
pub fn open_at(
    dir: Option<BorrowedFd<'_>>,
    path: &CStr,
    flags: libc::c_int,
) -> io::Result<OwnedFd> {
    let dir = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: `path` is a NUL-terminated path that outlives the call.
    owned(unsafe { libc::openat(dir, path.as_ptr(), flags) }.into())
}

/// `openat2(2)` of `path` relative to `dir` (`None`: the working directory) with `flags` and
/// `resolve` (`RESOLVE_*`).
pub fn open_beneath(
    dir: Option<BorrowedFd<'_>>,
    path: &CStr,
    flags: libc::c_int,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let dir = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: open_how is plain data; all-zero is its documented "no options" value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.resolve = resolve;
    // SAFETY: `path` and `how` outlive the call; the size passed is how's size.
    owned(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    })
}

/// `readlink(2)` into `buf`: the length of the target (which does not fit when it is
/// `buf.len()`).
pub fn readlink(path: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `path` is NUL-terminated; readlink writes at most buf.len() bytes into buf.
    let n = unsafe { libc::readlink(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    Ok(check(n as libc::c_long)? as usize)
}

/// Whether this thread holds `CAP_FOWNER` in its effective set (`capget(2)`): what lets a
/// process act as the owner of any file (root normally has it; a container may drop it).
pub fn has_cap_fowner() -> bool {
    /// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words of each set.
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_FOWNER: u32 = 3;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: both are live and laid out as the kernel's; it writes `data` (two entries for
    // version 3) and may write `header.version`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut Header,
            data.as_mut_ptr(),
        )
    };
    rc == 0 && data[0].effective & (1 << CAP_FOWNER) != 0
}

/// Whether `fd`'s file is on a network or FUSE file system (`fstatfs(2)`), where an open or a
/// `stat` may wait for a server: NFS, SMB/CIFS, Ceph, 9P, AFS, Coda, Lustre, GlusterFS and any
/// FUSE file system (sshfs, s3fs, ntfs-3g…). Unknown (the call failed): treated as one.
pub fn remote_fs(fd: BorrowedFd<'_>) -> bool {
    const REMOTE: &[i64] = &[
        0x6573_5546, // FUSE (and fuseblk)
        0x6969,      // NFS
        0x517B,      // SMB
        0xFE53_4D42, // SMB2
        0xFF53_4D42, // CIFS
        0x00C3_6400, // Ceph
        0x0102_1997, // 9P
        0x5346_414F, // AFS
        0x6B41_4653, // kAFS
        0x7375_7245, // Coda
        0x0BD0_0BD0, // Lustre
        0x1366_1366, // OrangeFS
        0x0116_1970, // GFS2
        0x7461_636F, // OCFS2
    ];
    // SAFETY: an all-zero statfs is valid for fstatfs to fill.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fs` is a live statfs the kernel fills.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut fs) } != 0 {
        return true;
    }
    REMOTE.contains(&(fs.f_type as i64))
}

/// `pread(2)` of up to `want` bytes at `offset`, appended to `buf` (in its spare room):
/// the count read, 0 at the end of the file.
pub fn pread_append(
    fd: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    want: usize,
    offset: u64,
) -> io::Result<usize> {
    preadv2_append(fd, buf, want, offset, 0)
}

/// [`pread_append`] with `RWF_NOWAIT`: only what the page cache holds already, `EAGAIN` when
/// the first byte asked for would have to come from the disk (`EOPNOTSUPP` from a file system
/// that cannot tell).
pub fn pread_nowait_append(
    fd: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    want: usize,
    offset: u64,
) -> io::Result<usize> {
    preadv2_append(fd, buf, want, offset, libc::RWF_NOWAIT)
}

/// `preadv2(2)` of one buffer with `flags` (0: what `pread` does), into `buf`'s spare room.
fn preadv2_append(
    fd: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    want: usize,
    offset: u64,
    flags: libc::c_int,
) -> io::Result<usize> {
    buf.reserve(want);
    let filled = buf.len();
    let spare = &mut buf.spare_capacity_mut()[..want];
    let iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: want,
    };
    // SAFETY: `iov` describes writable memory of `want` bytes that the kernel fills; only what
    // it reports written is then counted as initialised.
    let n = unsafe { libc::preadv2(fd.as_raw_fd(), &iov, 1, offset as libc::off_t, flags) };
    let n = check(n as libc::c_long)? as usize;
    // SAFETY: preadv2 initialised the first `n` (≤ `want`) bytes of the spare capacity.
    unsafe { buf.set_len(filled + n) };
    Ok(n)
}

/// A new epoll set (close-on-exec).
pub fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes no pointers.
    owned(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }.into())
}

/// Adds `fd` to the epoll set for `events`, reported with `data`.
pub fn epoll_add(
    epoll: BorrowedFd<'_>,
    fd: BorrowedFd<'_>,
    events: u32,
    data: u64,
) -> io::Result<()> {
    let mut event = libc::epoll_event { events, u64: data };
    // SAFETY: both descriptors are open; `event` is a live local.
    check(
        unsafe {
            libc::epoll_ctl(
                epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &mut event,
            )
        }
        .into(),
    )?;
    Ok(())
}

/// Removes `fd` from the epoll set.
pub fn epoll_remove(epoll: BorrowedFd<'_>, fd: BorrowedFd<'_>) {
    // SAFETY: both descriptors are open; a null event is allowed for EPOLL_CTL_DEL.
    unsafe {
        libc::epoll_ctl(
            epoll.as_raw_fd(),
            libc::EPOLL_CTL_DEL,
            fd.as_raw_fd(),
            std::ptr::null_mut(),
        )
    };
}

/// The data of up to `N` ready events of the epoll set, without waiting.
pub fn epoll_ready<const N: usize>(epoll: BorrowedFd<'_>) -> Vec<u64> {
    // SAFETY: epoll_event is plain data; all zeroes is a valid value.
    let mut events: [libc::epoll_event; N] = unsafe { std::mem::zeroed() };
    let max = libc::c_int::try_from(N).unwrap_or(libc::c_int::MAX);
    // SAFETY: `events` has room for N events; timeout 0 never blocks.
    let n = unsafe { libc::epoll_wait(epoll.as_raw_fd(), events.as_mut_ptr(), max, 0) };
    let n = usize::try_from(n).unwrap_or(0).min(N);
    events[..n].iter().map(|e| e.u64).collect()
}

/// A monoio stream over a duplicate of `fd`, only to await its readability (monoio has no
/// public readiness wait for an arbitrary descriptor; the stream is never read or written).
pub fn watchable(fd: BorrowedFd<'_>) -> io::Result<monoio::net::UnixStream> {
    let dup = dup_cloexec(fd)?;
    monoio::net::UnixStream::from_std(std::os::unix::net::UnixStream::from(dup))
}

/// Attaches a classic BPF program to the `SO_REUSEPORT` group of the listening socket `fd`
/// (`SO_ATTACH_REUSEPORT_CBPF`). The kernel copies the program. `fd` is a descriptor number
/// (monoio's listener has no `AsFd`); the call passes only memory of ours, so it is sound for
/// any number, and on another descriptor it fails.
pub fn attach_reuseport_cbpf(fd: RawFd, filter: &mut [libc::sock_filter]) -> io::Result<()> {
    /// `SO_ATTACH_REUSEPORT_CBPF` (asm-generic/socket.h).
    const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
    let prog = libc::sock_fprog {
        len: libc::c_ushort::try_from(filter.len())
            .map_err(|_| io::Error::other("program too long"))?,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: `prog` points at `filter`, alive for the call; the size passed is prog's size.
    check(
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                SO_ATTACH_REUSEPORT_CBPF,
                (&prog as *const libc::sock_fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        }
        .into(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    const ALONE: &str = "ZCS_TEST_ALONE";

    /// Runs in a process of its own: it shuts every TCP connection of its process, other
    /// tests' too.
    #[test]
    fn shutdown_tcp_connections_ends_connections_and_spares_listeners() {
        let name =
            "net::sys::tests::shutdown_tcp_connections_ends_connections_and_spares_listeners";
        if std::env::var_os(ALONE).is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", name, "--test-threads=1"])
                .env(ALONE, "1")
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success() && said.contains("1 passed"), "{said}");
            return;
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        assert_eq!(shutdown_tcp_connections(), 2, "both ends, not the listener");
        let mut byte = [0u8; 1];
        assert_eq!(client.read(&mut byte).unwrap(), 0);
        assert_eq!(server.read(&mut byte).unwrap(), 0);
        let _next = TcpStream::connect(addr).unwrap();
        assert!(listener.accept().is_ok(), "the listener still accepts");
    }
}

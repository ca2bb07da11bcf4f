//! What the control loop needs from the system: the signal thread, systemd's notify socket,
//! and clocks.

use super::*;

pub(super) fn spawn_signal_thread(events: Sender<Event>) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGUSR1,
        signal_hook::consts::SIGUSR2,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    std::thread::Builder::new()
        .name("zcs-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if events.send(Event::Signal(sig)).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}

/// Tells systemd about the lifecycle (`READY=1`, `RELOADING=1`, `STOPPING=1`) when it runs us
/// as `Type=notify`; a no-op otherwise.
pub(super) fn notify_systemd(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => {
            log::warn!("sd_notify: {e}");
            return;
        }
    };
    let bytes = path.as_encoded_bytes();
    let result = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = result {
        log::warn!("sd_notify {state:?}: {e}");
    }
}

/// `BARRIER=1` (sd_notify_barrier): waits up to `timeout` until systemd has read every
/// notification sent before it — so that `MAINPID=` is in force before this process exits.
pub(super) fn notify_barrier(timeout: Duration) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the live array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        log::warn!("sd_notify BARRIER=1: {}", std::io::Error::last_os_error());
        return;
    }
    // SAFETY: both were just created and are owned here only.
    let (read, write) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => return log::warn!("sd_notify BARRIER=1: {e}"),
    };
    let bytes = path.as_encoded_bytes();
    let connected = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
            .and_then(|addr| sock.connect_addr(&addr))
    } else {
        sock.connect(&path)
    };
    use std::os::fd::AsRawFd;
    let sent = connected.and_then(|()| {
        crate::handover::send_with_fds(sock.as_raw_fd(), b"BARRIER=1", &[write.as_raw_fd()])
    });
    drop(write);
    if let Err(e) = sent {
        return log::warn!("sd_notify BARRIER=1: {e}");
    }
    // systemd closes its copy of the pipe once it has read everything before it: POLLHUP.
    let mut poll = libc::pollfd {
        fd: read.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: poll reads and writes the one live pollfd.
    if unsafe { libc::poll(&mut poll, 1, ms) } <= 0 {
        log::warn!("sd_notify BARRIER=1: systemd did not answer within {timeout:?}");
    }
}

pub(super) fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

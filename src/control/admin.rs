//! The admin socket: a Unix socket speaking the newline-delimited JSON protocol of
//! [`proxyctl::proto`].
//!
//! Small threads accept connections and read request lines; each request goes to the control
//! loop as an [`Event::Admin`] and the answers come back on a channel, so every decision is
//! taken on the one control thread. A connection handles one request at a time.
//!
//! No client can hold the socket up: each connection has [`CLIENT_TIMEOUT`] to send a request
//! line and to take each answer line, at most [`MAX_CONNECTIONS`] are served at once (past that
//! a client is answered "busy" and closed at once), and a connection waits at most
//! [`ANSWER_TIMEOUT`] for the control loop's answer.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proxyctl::proto::{self, Response};

use super::Event;

/// Admin connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send a request line (counted from the end of the previous
/// answer), and to take an answer line.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection waits for the control loop between answer lines (a drain answers
/// every second; a reload within [`super::BUILD_DEADLINE`]), below `proxyctl`'s 30 s, so
/// that the client is told why.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(25);
/// Longest request line accepted.
const MAX_LINE: usize = 64 * 1024;

/// Creates the admin socket at `path`: its directory if missing, mode 0660, a stale socket file
/// replaced. Refuses when a live daemon already answers there.
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|e| {
                format!(
                    "cannot create the admin socket's directory {}: {e}",
                    dir.display()
                )
            })?;
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(format!(
                "{} exists and is not a socket; remove it or set a different [admin] socket",
                path.display()
            ));
        }
        match UnixStream::connect(path) {
            Ok(_) => {
                return Err(format!(
                    "another zerocopy-server answers on the admin socket {}; stop it first, or \
                     set a different [admin] socket",
                    path.display()
                ))
            }
            // Nobody listens: a stale socket of a daemon that died.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(|e| {
                    format!(
                        "cannot replace the stale admin socket {}: {e}",
                        path.display()
                    )
                })?
            }
            Err(e) => {
                return Err(format!(
                    "the admin socket {} exists but cannot be checked ({e}); remove it if no \
                     daemon uses it",
                    path.display()
                ))
            }
        }
    }
    // Created with mode 0660 from the start (no window with the umask's mode).
    // SAFETY: umask has no preconditions; the previous mask is restored right after.
    let old = unsafe { libc::umask(0o117) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener =
        bound.map_err(|e| format!("cannot create the admin socket {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))?;
    Ok(listener)
}

/// Accepts admin connections on a thread of their own, until [`Served::stop`].
pub fn serve(listener: UnixListener, events: Sender<Event>) -> std::io::Result<Served> {
    listener.set_nonblocking(true)?;
    let fd = listener.as_raw_fd();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let thread = std::thread::Builder::new()
        .name("zcs-admin".into())
        .spawn(move || {
            let open = Arc::new(AtomicUsize::new(0));
            while wait_acceptable(fd, &stopped) {
                let Ok((mut stream, _)) = listener.accept() else {
                    continue;
                };
                // Accepted sockets do not inherit O_NONBLOCK; the reads use timeouts.
                let _ = stream.set_nonblocking(false);
                if open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                    // Answered without waiting: a client that does not read cannot stall the
                    // accept loop.
                    let _ = stream.set_nonblocking(true);
                    let _ = stream.write_all(
                        proto::encode_response(Response::Error {
                            error: format!(
                                "busy: {MAX_CONNECTIONS} admin connections are open; try again \
                                 in a few seconds"
                            ),
                        })
                        .as_bytes(),
                    );
                    continue;
                }
                open.fetch_add(1, Ordering::Relaxed);
                let events = events.clone();
                let open = open.clone();
                let _ = std::thread::Builder::new()
                    .name("zcs-admin-conn".into())
                    .spawn(move || {
                        connection(stream, events);
                        open.fetch_sub(1, Ordering::Relaxed);
                    });
            }
        })?;
    Ok(Served::new(fd, stop, thread))
}

/// A listener served by a thread of the control plane (the admin socket, the metrics
/// listener), which a binary upgrade hands to the new process and then stops serving here.
pub struct Served {
    /// The listener's descriptor, open until [`Served::stop`] returns.
    pub fd: RawFd,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    pub(crate) fn new(
        fd: RawFd,
        stop: Arc<AtomicBool>,
        thread: std::thread::JoinHandle<()>,
    ) -> Self {
        Self {
            fd,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops accepting (within [`ACCEPT_POLL`]) and closes this process's copy of the
    /// listener; connections already accepted are answered to the end.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How often an accept thread looks at its stop flag.
pub const ACCEPT_POLL: Duration = Duration::from_millis(100);

/// Waits until the listener `fd` has a connection to accept: `false` once `stop` is set.
pub(crate) fn wait_acceptable(fd: RawFd, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll reads and writes the one live pollfd.
        let n = unsafe { libc::poll(&mut poll, 1, ACCEPT_POLL.as_millis() as libc::c_int) };
        if n > 0 {
            return true;
        }
    }
}

fn connection(stream: UnixStream, events: Sender<Event>) {
    let mut stream = stream;
    let mut pending = Vec::new();
    loop {
        // One deadline for the whole line, however it trickles in.
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        let line = match read_line(&mut stream, &mut pending, deadline) {
            Line::Full(line) => line,
            Line::TooLong => {
                let error = format!("request line longer than {MAX_LINE} bytes");
                write_by(
                    &mut stream,
                    &encode_error(error),
                    Instant::now() + CLIENT_TIMEOUT,
                );
                return;
            }
            Line::Gone => return,
        };
        let request = match proto::decode_request(String::from_utf8_lossy(&line).trim_end()) {
            Ok(r) => r,
            Err(e) => {
                let reply = encode_error(e.to_string());
                if !write_by(&mut stream, &reply, Instant::now() + CLIENT_TIMEOUT) {
                    return;
                }
                continue;
            }
        };
        if let Some(error) = refused(&request, &stream) {
            if !write_by(
                &mut stream,
                &encode_error(error),
                Instant::now() + CLIENT_TIMEOUT,
            ) {
                return;
            }
            continue;
        }
        let (reply_tx, reply_rx) = mpsc::channel();
        // The control loop waits on this before it ends the process after a drain, so that
        // the final answer reaches the client.
        let (written_tx, written_rx) = mpsc::channel();
        if events
            .send(Event::Admin {
                request,
                reply: reply_tx,
                written: written_rx,
            })
            .is_err()
        {
            return;
        }
        // Answers until the final one (ok or error); `processing` lines come before it.
        loop {
            let response = match reply_rx.recv_timeout(ANSWER_TIMEOUT) {
                Ok(r) => r,
                Err(e) => {
                    let why = match e {
                        RecvTimeoutError::Timeout => format!(
                            "the daemon did not answer within {}s",
                            ANSWER_TIMEOUT.as_secs()
                        ),
                        RecvTimeoutError::Disconnected => {
                            "the daemon could not answer (see its log)".to_string()
                        }
                    };
                    write_by(
                        &mut stream,
                        &encode_error(why),
                        Instant::now() + CLIENT_TIMEOUT,
                    );
                    return;
                }
            };
            let last = !matches!(response, Response::Processing { .. });
            let line = proto::encode_response(response);
            let ok = write_by(
                &mut stream,
                line.as_bytes(),
                Instant::now() + CLIENT_TIMEOUT,
            );
            if last {
                let _ = written_tx.send(());
                break;
            }
            if !ok {
                return;
            }
        }
    }
}

/// Why a request is refused to this client, if it is: `upgrade --binary` runs a program of the
/// client's choosing as the daemon's user, so only root or that user may ask (everyone the
/// socket's mode lets in may upgrade to the daemon's own binary).
fn refused(request: &proto::Request, stream: &UnixStream) -> Option<String> {
    if !matches!(request, proto::Request::Upgrade { binary: Some(_) }) {
        return None;
    }
    // SAFETY: geteuid has no preconditions.
    let daemon = unsafe { libc::geteuid() };
    match peer_uid(stream) {
        Some(uid) if uid == 0 || uid == daemon => None,
        _ => Some(format!(
            "upgrade --binary runs that program as the daemon's user: only root or uid {daemon} \
             may ask; `proxyctl upgrade` without --binary starts the daemon's own binary"
        )),
    }
}

/// The uid of the process at the other end of `stream` (`SO_PEERCRED`).
fn peer_uid(stream: &UnixStream) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes a ucred into the live local.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

fn encode_error(error: String) -> Vec<u8> {
    proto::encode_response(Response::Error { error }).into_bytes()
}

/// A request line, or why there is none.
enum Line {
    Full(Vec<u8>),
    TooLong,
    /// Closed, failed, or not complete by its deadline.
    Gone,
}

/// Reads up to a newline by `deadline`; bytes after it stay in `pending` for the next line.
fn read_line(stream: &mut UnixStream, pending: &mut Vec<u8>, deadline: Instant) -> Line {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(at) = pending.iter().position(|&b| b == b'\n') {
            let rest = pending.split_off(at + 1);
            return Line::Full(std::mem::replace(pending, rest));
        }
        if pending.len() > MAX_LINE {
            return Line::TooLong;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return Line::Gone;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return Line::Gone,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
}

/// Writes all of `data` by `deadline` (a client that takes it a byte at a time does not get
/// longer); `false` when it could not.
pub(crate) fn write_by(stream: &mut impl SocketWrite, mut data: &[u8], deadline: Instant) -> bool {
    while !data.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_timeout(left).is_err() {
            return false;
        }
        match stream.write(data) {
            Ok(0) | Err(_) => return false,
            Ok(n) => data = &data[n..],
        }
    }
    true
}

/// A socket that can be written with a timeout (the admin socket, the metrics listener's).
pub(crate) trait SocketWrite: Write {
    fn set_timeout(&self, t: Duration) -> std::io::Result<()>;
}

impl SocketWrite for UnixStream {
    fn set_timeout(&self, t: Duration) -> std::io::Result<()> {
        self.set_write_timeout(Some(t))
    }
}

impl SocketWrite for std::net::TcpStream {
    fn set_timeout(&self, t: Duration) -> std::io::Result<()> {
        self.set_write_timeout(Some(t))
    }
}

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

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::Duration;

use proxyctl::proto::{self, Response};

use super::Event;

/// Admin connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send a request line (also between requests), and to take
/// an answer line.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection waits for the control loop between answer lines (a drain answers
/// every second; a reload within [`super::BUILD_DEADLINE`]).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
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

/// Accepts admin connections on a thread of their own, forever.
pub fn serve(listener: UnixListener, events: Sender<Event>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("zcs-admin".into())
        .spawn(move || {
            let open = Arc::new(AtomicUsize::new(0));
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
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
    Ok(())
}

fn connection(stream: UnixStream, events: Sender<Event>) {
    let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
    let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream).take(u64::MAX);
    let mut line = String::new();
    loop {
        line.clear();
        reader.set_limit(MAX_LINE as u64);
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if !line.ends_with('\n') {
            let _ = writer.write_all(
                proto::encode_response(Response::Error {
                    error: format!("request line longer than {MAX_LINE} bytes"),
                })
                .as_bytes(),
            );
            return;
        }
        let request = match proto::decode_request(line.trim_end()) {
            Ok(r) => r,
            Err(e) => {
                let reply = proto::encode_response(Response::Error {
                    error: e.to_string(),
                });
                if writer.write_all(reply.as_bytes()).is_err() {
                    return;
                }
                continue;
            }
        };
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
        while let Ok(response) = reply_rx.recv_timeout(ANSWER_TIMEOUT) {
            let last = !matches!(response, Response::Processing { .. });
            let ok = writer
                .write_all(proto::encode_response(response).as_bytes())
                .and_then(|_| writer.flush())
                .is_ok();
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

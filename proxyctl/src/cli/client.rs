//! Talking to the daemon: one request over its admin socket, its answers read line by line.
//!
//! The daemon answers a request with exactly one `ok` or `error` line, except for a drain,
//! which sends `processing` lines first. [`request`] hands every `processing` payload to a
//! callback and returns the final `ok` payload; everything else is a [`Failure`], which knows
//! its message and its exit code. A [`Payload`] keeps the JSON text exactly as the daemon sent
//! it, so that `--json` prints what was received (key order and unknown fields included).

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proxyctl::proto::{self, DecodeError, Request, Response};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;

/// How long to wait for each answer line of an ordinary request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Time granted on top of a drain's own timeout before giving up on the daemon.
pub const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// Exit code: the daemon did what was asked.
pub const EXIT_OK: u8 = 0;
/// Exit code: the daemon answered, and the answer is a failure (an `error` response, a refused
/// reload or config, no matching route, a drain cut short).
pub const EXIT_FAILED: u8 = 1;
/// Exit code: no usable conversation with the daemon (no socket, no permission, another
/// protocol version, a garbled or missing answer).
pub const EXIT_UNREACHABLE: u8 = 2;

/// Why a command could not be carried out.
#[derive(Debug)]
pub enum Failure {
    /// The socket file does not exist.
    NoSocket(PathBuf),
    /// The socket file exists but nobody listens on it.
    Refused(PathBuf),
    /// The socket's mode or directory keeps us out.
    PermissionDenied(PathBuf),
    /// Any other failure to connect.
    Connect(PathBuf, io::Error),
    /// Reading or writing the connection failed.
    Io(PathBuf, io::Error),
    /// No answer line arrived in time.
    Timeout(PathBuf, Duration),
    /// The daemon closed the connection before its final answer.
    Closed { drain: bool },
    /// The answer could not be decoded, or speaks another protocol version.
    Decode(DecodeError),
    /// The daemon answered with an `error` response.
    Daemon(String),
    /// A path given on the command line cannot be sent.
    BadPath(PathBuf, String),
}

impl Failure {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Daemon(_) | Self::Closed { drain: true } => EXIT_FAILED,
            _ => EXIT_UNREACHABLE,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoSocket(p) => write!(
                f,
                "is zerocopy-server running? {}: no such file",
                p.display()
            ),
            Self::Refused(p) => write!(
                f,
                "is zerocopy-server running? {}: connection refused (stale socket)",
                p.display()
            ),
            Self::PermissionDenied(p) => write!(
                f,
                "{}: permission denied (are you in the daemon's group?)",
                p.display()
            ),
            Self::Connect(p, e) => write!(f, "cannot connect to {}: {e}", p.display()),
            Self::Io(p, e) => write!(f, "{}: {e}", p.display()),
            Self::Timeout(p, t) => write!(
                f,
                "{}: no answer from the daemon within {}s",
                p.display(),
                t.as_secs()
            ),
            Self::Closed { drain: true } => {
                f.write_str("the daemon closed the connection before the drain finished")
            }
            Self::Closed { drain: false } => {
                f.write_str("the daemon closed the connection without answering")
            }
            Self::Decode(e) => write!(f, "{e}"),
            Self::Daemon(e) => f.write_str(e),
            Self::BadPath(p, why) => write!(f, "{}: {why}", p.display()),
        }
    }
}

impl std::error::Error for Failure {}

/// The `data` of an `ok` or `processing` answer, as the daemon wrote it.
#[derive(Debug)]
pub struct Payload(Box<RawValue>);

impl Payload {
    /// The JSON text exactly as received: one compact document if the daemon sent one.
    pub fn json(&self) -> &str {
        self.0.get()
    }

    /// Decodes the payload into the type the command expects.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Failure> {
        serde_json::from_str(self.0.get())
            .map_err(|e| Failure::Decode(DecodeError::Malformed(e.to_string())))
    }
}

/// Sends `request` to the daemon on `socket` and returns the payload of its final `ok` answer.
///
/// Every `processing` payload before it goes to `progress`; an error from `progress` ends the
/// conversation. `timeout` bounds the wait for each answer line, not the whole conversation.
pub fn request(
    socket: &Path,
    request: &Request,
    timeout: Duration,
    mut progress: impl FnMut(&Payload) -> Result<(), Failure>,
) -> Result<Payload, Failure> {
    let stream = UnixStream::connect(socket).map_err(|e| connect_error(socket, e))?;
    let io_error = |e| Failure::Io(socket.to_path_buf(), e);
    stream.set_read_timeout(Some(timeout)).map_err(io_error)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_error)?;
    (&stream)
        .write_all(proto::encode_request(request).as_bytes())
        .and_then(|()| (&stream).flush())
        .map_err(|e| read_error(socket, timeout, e))?;

    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| read_error(socket, timeout, e))?;
        if n == 0 {
            return Err(Failure::Closed {
                drain: matches!(request, Request::Drain { .. }),
            });
        }
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        // The protocol's own decoder checks the version and the shape; the payload's text is
        // then taken from the same line.
        match proto::decode_response(text).map_err(Failure::Decode)? {
            Response::Ok { .. } => return raw_data(text),
            Response::Error { error } => return Err(Failure::Daemon(error)),
            Response::Processing { .. } => progress(&raw_data(text)?)?,
        }
    }
}

/// Turns a failed connect into the message a person can act on.
pub fn connect_error(socket: &Path, error: io::Error) -> Failure {
    let socket = socket.to_path_buf();
    match error.kind() {
        io::ErrorKind::NotFound => Failure::NoSocket(socket),
        io::ErrorKind::ConnectionRefused => Failure::Refused(socket),
        io::ErrorKind::PermissionDenied => Failure::PermissionDenied(socket),
        _ => Failure::Connect(socket, error),
    }
}

/// The `data` member of a response line, untouched.
fn raw_data(line: &str) -> Result<Payload, Failure> {
    #[derive(Deserialize)]
    struct Data {
        data: Box<RawValue>,
    }
    serde_json::from_str::<Data>(line)
        .map(|d| Payload(d.data))
        .map_err(|e| Failure::Decode(DecodeError::Malformed(e.to_string())))
}

fn read_error(socket: &Path, timeout: Duration, error: io::Error) -> Failure {
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            Failure::Timeout(socket.to_path_buf(), timeout)
        }
        _ => Failure::Io(socket.to_path_buf(), error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::fake_daemon::FakeDaemon;
    use proxyctl::proto::{DrainProgress, Status};

    fn no_progress(_: &Payload) -> Result<(), Failure> {
        panic!("no processing line expected")
    }

    #[test]
    fn sends_one_request_line_and_returns_the_ok_payload() {
        let daemon = FakeDaemon::start(&[
            r#"{"version":1,"result":"ok","data":{"state":"running","pid":7,"uptime_secs":3,"generation":1,"config_path":"/etc/z.toml","workers":2,"io_driver":"io_uring","connections":0,"in_flight":0,"last_reload":null}}"#,
        ]);
        let data = request(
            daemon.socket(),
            &Request::Status,
            DEFAULT_TIMEOUT,
            no_progress,
        )
        .unwrap();
        let status: Status = data.decode().unwrap();
        assert_eq!(status.pid, 7);
        assert!(data.json().starts_with(r#"{"state":"running","pid":7,"#));
        assert_eq!(
            daemon.received(),
            "{\"version\":1,\"command\":\"status\"}\n"
        );
    }

    #[test]
    fn an_error_response_is_a_daemon_failure() {
        let daemon = FakeDaemon::start(&[
            r#"{"version":1,"result":"error","error":"the daemon is draining"}"#,
        ]);
        let err = request(
            daemon.socket(),
            &Request::Reload,
            DEFAULT_TIMEOUT,
            no_progress,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "the daemon is draining");
        assert_eq!(err.exit_code(), EXIT_FAILED);
    }

    #[test]
    fn another_protocol_version_is_a_clear_error() {
        let daemon = FakeDaemon::start(&[r#"{"version":2,"result":"ok","data":{"whatever":1}}"#]);
        let err = request(
            daemon.socket(),
            &Request::Status,
            DEFAULT_TIMEOUT,
            no_progress,
        )
        .unwrap_err();
        assert!(matches!(
            err,
            Failure::Decode(DecodeError::Version { theirs: 2 })
        ));
        let message = err.to_string();
        assert!(message.contains("version 2 is not supported"), "{message}");
        assert!(
            message.contains("use the proxyctl that ships with"),
            "{message}"
        );
        assert_eq!(err.exit_code(), EXIT_UNREACHABLE);
    }

    #[test]
    fn a_drain_reports_progress_then_the_final_answer() {
        let daemon = FakeDaemon::start(&[
            r#"{"version":1,"result":"processing","data":{"connections":3,"in_flight":1,"seconds_left":27}}"#,
            r#"{"version":1,"result":"processing","data":{"connections":1,"in_flight":0,"seconds_left":26}}"#,
            r#"{"version":1,"result":"ok","data":{"connections":0,"in_flight":0,"seconds_left":0}}"#,
        ]);
        let mut seen = Vec::new();
        let data = request(
            daemon.socket(),
            &Request::Drain {
                timeout_secs: Some(27),
            },
            DEFAULT_TIMEOUT,
            |d| {
                seen.push(d.decode::<DrainProgress>()?);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(
            seen.iter().map(|p| p.connections).collect::<Vec<_>>(),
            [3, 1]
        );
        assert_eq!(data.decode::<DrainProgress>().unwrap().connections, 0);
        assert_eq!(
            daemon.received(),
            "{\"version\":1,\"command\":\"drain\",\"timeout_secs\":27}\n"
        );
    }

    #[test]
    fn end_of_file_before_the_final_line_is_an_error() {
        let daemon = FakeDaemon::start(&[
            r#"{"version":1,"result":"processing","data":{"connections":3,"in_flight":1,"seconds_left":27}}"#,
        ]);
        let err = request(
            daemon.socket(),
            &Request::Drain { timeout_secs: None },
            DEFAULT_TIMEOUT,
            |_| Ok(()),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the daemon closed the connection before the drain finished"
        );
        assert_eq!(err.exit_code(), EXIT_FAILED);
    }

    #[test]
    fn a_garbled_answer_is_malformed() {
        let daemon = FakeDaemon::start(&["this is not json"]);
        let err = request(
            daemon.socket(),
            &Request::Routes,
            DEFAULT_TIMEOUT,
            no_progress,
        )
        .unwrap_err();
        assert!(matches!(err, Failure::Decode(DecodeError::Malformed(_))));
        assert_eq!(err.exit_code(), EXIT_UNREACHABLE);
    }

    #[test]
    fn a_silent_daemon_times_out() {
        let daemon = FakeDaemon::start_silent();
        let err = request(
            daemon.socket(),
            &Request::Status,
            Duration::from_millis(100),
            no_progress,
        )
        .unwrap_err();
        assert!(matches!(err, Failure::Timeout(..)), "{err:?}");
        drop(daemon);
    }

    #[test]
    fn a_missing_socket_asks_whether_the_daemon_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let err = request(&path, &Request::Status, DEFAULT_TIMEOUT, no_progress).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "is zerocopy-server running? {}: no such file",
                path.display()
            )
        );
        assert_eq!(err.exit_code(), EXIT_UNREACHABLE);
    }

    #[test]
    fn a_stale_socket_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let err = request(&path, &Request::Status, DEFAULT_TIMEOUT, no_progress).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "is zerocopy-server running? {}: connection refused (stale socket)",
                path.display()
            )
        );
        assert_eq!(err.exit_code(), EXIT_UNREACHABLE);
    }

    #[test]
    fn permission_denied_hints_at_the_group() {
        // Tests may run as root, which no socket mode keeps out: check the mapping itself.
        let path = Path::new("/run/zerocopy-server/admin.sock");
        let err = connect_error(path, io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!(
            err.to_string(),
            "/run/zerocopy-server/admin.sock: permission denied (are you in the daemon's group?)"
        );
        assert_eq!(err.exit_code(), EXIT_UNREACHABLE);
    }
}

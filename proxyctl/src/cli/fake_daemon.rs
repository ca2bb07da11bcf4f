//! A stand-in for zerocopy-server's admin socket, for tests: a Unix socket in a temporary
//! directory, served by a thread that reads one request line and answers with canned lines.
//! Compiled only for tests (`#[cfg(test)]` in `cli/mod.rs`): its `unwrap`s and `expect`s fail a
//! test's own set-up, never anything a user runs.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

/// A fake daemon serving exactly one connection.
pub struct FakeDaemon {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    received: Receiver<String>,
    /// Dropped with the fake: tells a silent daemon to hang up.
    _hang_up: Sender<()>,
}

impl FakeDaemon {
    /// Answers the first request with `lines` (each sent with its newline), then closes the
    /// connection, as the daemon does after its final answer to a drain.
    pub fn start(lines: &[&str]) -> Self {
        let lines: Vec<String> = lines.iter().map(|l| format!("{l}\n")).collect();
        Self::spawn(Some(lines))
    }

    /// Reads the first request and never answers it; hangs up when dropped.
    pub fn start_silent() -> Self {
        Self::spawn(None)
    }

    /// Where the fake listens.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The request line the fake received, with its newline.
    pub fn received(&self) -> String {
        self.received
            .recv_timeout(Duration::from_secs(5))
            .expect("the fake daemon received no request")
    }

    fn spawn(answers: Option<Vec<String>>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("admin.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let (received_tx, received) = mpsc::channel();
        let (hang_up, hang_up_rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let _ = received_tx.send(line);
            match answers {
                Some(answers) => {
                    for answer in answers {
                        // The client may have hung up already; that is its business.
                        let _ = (&stream).write_all(answer.as_bytes());
                    }
                }
                None => {
                    let _ = hang_up_rx.recv();
                }
            }
        });
        Self {
            _dir: dir,
            socket,
            received,
            _hang_up: hang_up,
        }
    }
}

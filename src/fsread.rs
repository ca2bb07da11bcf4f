//! Reading the files a configuration names — the config itself, certificates, keys, CA bundles,
//! the session ticket key, memory-mode files — so that no file can hang or flood the reader.
//!
//! Every such file is opened `O_NONBLOCK` (opening a FIFO for reading otherwise waits for a
//! writer, forever), checked with `fstat` to be a regular file (a FIFO, `/dev/zero` or a
//! socket is refused), and read with a size cap that is checked before the read and enforced
//! during it (a file that grows while it is read is refused too). The control thread, `--check`
//! and the snapshot build read through here; workers never do.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The cap for certificate chains, private keys and CA bundles.
pub const PEM_CAP: u64 = 1024 * 1024;
/// The cap for the config file.
pub const CONFIG_CAP: u64 = 16 * 1024 * 1024;

/// Opens `path` for reading without blocking on a FIFO (and without taking a terminal).
pub fn open(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

/// Reads the regular file at `path`, at most `cap` bytes. The error is the reason, for the
/// operator (the caller names the file and the key). A path that is not a regular file is not
/// even opened (opening some devices acts on them); what was opened is checked again.
pub fn read(path: &Path, cap: u64) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot be read: {e}"))?;
    not_regular(&meta).map_or(Ok(()), Err)?;
    let file = open(path).map_err(|e| format!("cannot be read: {e}"))?;
    read_open(file, cap)
}

/// Why `meta` is not a regular file's, if it is not.
fn not_regular(meta: &std::fs::Metadata) -> Option<String> {
    if meta.is_dir() {
        Some("is a directory, not a file".into())
    } else if !meta.is_file() {
        Some("is not a regular file (a FIFO, a socket or a device cannot be read)".into())
    } else {
        None
    }
}

/// [`read`] for a file that is open already.
pub fn read_open(file: File, cap: u64) -> Result<Vec<u8>, String> {
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot be read: {e}"))?;
    not_regular(&meta).map_or(Ok(()), Err)?;
    if meta.len() > cap {
        return Err(too_large(cap));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot be read: {e}"))?;
    if bytes.len() as u64 > cap {
        return Err(too_large(cap));
    }
    Ok(bytes)
}

fn too_large(cap: u64) -> String {
    if cap >= 1024 * 1024 && cap.is_multiple_of(1024 * 1024) {
        format!("is larger than {} MiB", cap >> 20)
    } else {
        format!("is larger than {cap} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_within_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        assert_eq!(read(&p, 5).unwrap(), b"hello");
        assert_eq!(read(&p, 4).unwrap_err(), "is larger than 4 bytes");
        assert!(read(dir.path(), 10).unwrap_err().contains("directory"));
        assert!(read(&dir.path().join("missing"), 10)
            .unwrap_err()
            .starts_with("cannot be read"));
    }

    #[test]
    fn fifos_and_devices_are_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Without O_NONBLOCK this open would wait for a writer forever.
        assert!(read(&fifo, 10).unwrap_err().contains("not a regular file"));
        assert!(read(Path::new("/dev/zero"), 10)
            .unwrap_err()
            .contains("not a regular file"));
    }
}

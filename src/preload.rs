//! Files held in memory — [`FileMeta`], [`MemFile`], [`MemoryFiles`] — and reading
//! memory-mode routes into memory when a snapshot is built — on the control thread,
//! never on a worker, so plain blocking `std::fs` is right here.
//!
//! A file route holds one file; a directory route holds every file below it, by the path a
//! request would name. Files whose real path lies outside the root are left out (and logged), a
//! symlink loop is walked once, and all memory-mode routes together stay within
//! [`crate::config::defaults::MEMORY_MODE_TOTAL_CAP`]: over it, the config is refused.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use crate::config::{Compress, FileBackend, FileKind, Levels};
use crate::http::encoding::Encoding;
/// What a response needs to know about a file, whichever way its bytes travel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMeta {
    pub len: u64,
    /// Modification time, whole seconds since the epoch.
    pub mtime: u64,
    pub content_type: &'static str,
    /// The coding of a precompressed variant (`x.css.br`), which is served as the original
    /// (`x.css`) with `Content-Encoding`.
    pub encoding: Option<Encoding>,
}

impl FileMeta {
    pub fn new(len: u64, mtime: u64, name: &Path) -> Self {
        Self {
            len,
            mtime,
            content_type: content_type(name),
            encoding: None,
        }
    }

    /// The metadata of `variant` (a precompressed file) served as the file `self` describes.
    pub fn variant(&self, variant: &FileMeta, encoding: Encoding) -> Self {
        Self {
            len: variant.len,
            mtime: variant.mtime,
            content_type: self.content_type,
            encoding: Some(encoding),
        }
    }

    /// A strong validator from the modification time and the length, as nginx forms it.
    pub fn etag(&self) -> String {
        let mut v = Vec::with_capacity(40);
        self.write_etag(&mut v);
        String::from_utf8(v).unwrap_or_default()
    }

    /// Writes the ETag (`"mtime-len"` in hex, and `-br` etc. for a precompressed variant)
    /// without allocating.
    pub fn write_etag(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let _ = match self.encoding {
            None => write!(out, "\"{:x}-{:x}\"", self.mtime, self.len),
            Some(e) => write!(out, "\"{:x}-{:x}-{}\"", self.mtime, self.len, e.token()),
        };
    }

    pub fn last_modified(&self) -> String {
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(self.mtime))
    }

    /// Writes `Last-Modified`'s value without allocating.
    pub fn write_last_modified(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let date = httpdate::HttpDate::from(UNIX_EPOCH + Duration::from_secs(self.mtime));
        let _ = write!(out, "{date}");
    }
}

/// A file held in memory.
#[derive(Debug)]
pub struct MemFile {
    pub meta: FileMeta,
    pub body: Vec<u8>,
    /// The `Last-Modified` and `ETag` header lines, formatted once.
    pub validators: Vec<u8>,
    /// Compressed copies made when the route was loaded (its `compress` codings), for the
    /// codings that made it smaller.
    pub compressed: Vec<(Encoding, MemFile)>,
}

impl MemFile {
    pub fn new(meta: FileMeta, body: Vec<u8>) -> Self {
        let mut h = Vec::with_capacity(80);
        h.extend_from_slice(b"Last-Modified: ");
        meta.write_last_modified(&mut h);
        h.extend_from_slice(b"\r\nETag: ");
        meta.write_etag(&mut h);
        h.extend_from_slice(b"\r\n");
        Self {
            meta,
            body,
            validators: h,
            compressed: Vec::new(),
        }
    }
}

/// The bytes of a memory-mode route.
#[derive(Debug)]
pub enum MemoryFiles {
    /// An exact-file route.
    Single(MemFile),
    /// A directory route: files by path relative to the root (`css/a.css`), and the set of
    /// directories (`""` for the root, `css`).
    Tree {
        files: HashMap<String, MemFile>,
        dirs: HashSet<String>,
    },
}

impl MemoryFiles {
    /// The precompressed variant of the file at `key` (`key.br`…), if the tree holds one.
    pub fn variant(&self, key: &str, e: Encoding) -> Option<&MemFile> {
        match self {
            Self::Single(_) => None,
            Self::Tree { files, .. } => files.get(format!("{key}{}", e.suffix()).as_str()),
        }
    }

    /// Total bytes held.
    pub fn size(&self) -> u64 {
        match self {
            Self::Single(f) => f.meta.len,
            Self::Tree { files, .. } => files.values().map(|f| f.meta.len).sum(),
        }
    }
}

/// The `Content-Type` for a file name, from `mime_guess`; `application/octet-stream` when
/// unknown.
pub fn content_type(name: &Path) -> &'static str {
    mime_guess::from_path(name)
        .first_raw()
        .unwrap_or("application/octet-stream")
}

/// Compression levels for memory-mode files, compressed once when they load: higher than
/// on the fly, within a reload's time.
const LOAD_LEVELS: Levels = Levels {
    gzip: 9,
    br: 9,
    zstd: 15,
};

impl MemFile {
    /// The copy compressed with `e` at load, if there is one.
    pub fn compressed(&self, e: Encoding) -> Option<&MemFile> {
        self.compressed
            .iter()
            .find(|(c, _)| *c == e)
            .map(|(_, f)| f)
    }

    /// Compresses the body with each coding of `compress` when its type and size qualify,
    /// keeping the copies that are smaller; counted against `budget`.
    fn compress(&mut self, compress: &Compress, budget: &mut u64) -> Result<(), String> {
        if self.meta.len < compress.min_size
            || !compress.type_matches(self.meta.content_type.as_bytes())
        {
            return Ok(());
        }
        for &e in &compress.encodings {
            let body = crate::site::compress_all(e, &LOAD_LEVELS, &self.body)
                .map_err(|err| format!("compressing with {}: {err}", e.token()))?;
            if body.len() as u64 >= self.meta.len {
                continue;
            }
            *budget = budget
                .checked_sub(body.len() as u64)
                .ok_or("memory-mode files and their compressed copies exceed the total cap")?;
            let meta = self.meta.variant(
                &FileMeta {
                    len: body.len() as u64,
                    ..self.meta.clone()
                },
                e,
            );
            self.compressed.push((e, MemFile::new(meta, body)));
        }
        Ok(())
    }
}

impl MemoryFiles {
    /// Reads a memory-mode route's file or tree, and compresses what `compress` asks for.
    /// `budget` is what is left of the total cap; it is reduced by what is read and made.
    /// Runs on the control thread.
    pub fn load(
        backend: &FileBackend,
        compress: Option<&Compress>,
        budget: &mut u64,
    ) -> Result<Self, String> {
        let mut loaded = Self::read(backend, budget)?;
        if let Some(c) = compress.filter(|c| !c.encodings.is_empty()) {
            match &mut loaded {
                Self::Single(f) => f.compress(c, budget)?,
                Self::Tree { files, .. } => {
                    for f in files.values_mut() {
                        f.compress(c, budget)?;
                    }
                }
            }
        }
        Ok(loaded)
    }

    fn read(backend: &FileBackend, budget: &mut u64) -> Result<Self, String> {
        match backend.kind {
            FileKind::File => {
                let f = read_mem_file(&backend.path, budget)?;
                Ok(Self::Single(f))
            }
            FileKind::Dir => {
                let root = std::fs::canonicalize(&backend.path)
                    .map_err(|e| format!("{}: {e}", backend.path.display()))?;
                let mut files = HashMap::new();
                let mut dirs = HashSet::new();
                dirs.insert(String::new());
                let mut seen = HashSet::new();
                walk(
                    &root,
                    &root,
                    String::new(),
                    &mut files,
                    &mut dirs,
                    &mut seen,
                    budget,
                )?;
                Ok(Self::Tree { files, dirs })
            }
        }
    }
}

fn read_mem_file(path: &Path, budget: &mut u64) -> Result<MemFile, String> {
    // Through fsread: a FIFO or a device swapped in after the config check cannot hang or
    // flood the control thread, and a file that grows while it is read stays within the cap.
    let file = crate::fsread::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let md = file
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let over_cap = || {
        format!(
            "memory-mode files exceed the total cap of {} MiB at {}; use mode = \"sendfile\" \
             for large files",
            crate::config::defaults::MEMORY_MODE_TOTAL_CAP / (1024 * 1024),
            path.display()
        )
    };
    if md.is_file() && md.len() > *budget {
        return Err(over_cap());
    }
    let body = crate::fsread::read_open(file, *budget).map_err(|e| {
        if e.starts_with("is larger") {
            over_cap()
        } else {
            format!("{} {e}", path.display())
        }
    })?;
    *budget = budget.saturating_sub(body.len() as u64);
    let mtime = md
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let meta = FileMeta::new(body.len() as u64, mtime, path);
    Ok(MemFile::new(meta, body))
}

/// Reads a directory tree for memory mode. `seen` holds the (device, inode) of the directories
/// on the current path from the root, so a symlink back to one of them (`current -> .`) is not
/// followed forever; a symlink to a sibling directory is read under both names.
fn walk(
    root: &Path,
    dir: &Path,
    rel: String,
    files: &mut HashMap<String, MemFile>,
    dirs: &mut HashSet<String>,
    seen: &mut HashSet<(u64, u64)>,
    budget: &mut u64,
) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let id = (md.dev(), md.ino());
    if !seen.insert(id) {
        log::warn!(
            "memory mode: {} was already read (a symlink loop); left out",
            dir.display()
        );
        dirs.remove(&rel);
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue; // not UTF-8: no request path can name it
        };
        let path: PathBuf = entry.path();
        let Ok(real) = std::fs::canonicalize(&path) else {
            continue; // dangling symlink
        };
        if !real.starts_with(root) {
            log::warn!(
                "memory mode: {} leads outside {}; left out",
                path.display(),
                root.display()
            );
            continue;
        }
        let key = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let md = std::fs::metadata(&real).map_err(|e| format!("{}: {e}", real.display()))?;
        if md.is_dir() {
            if dirs.insert(key.clone()) {
                walk(root, &real, key, files, dirs, seen, budget)?;
            }
        } else if md.is_file() {
            let mut f = read_mem_file(&real, budget)?;
            // The type follows the name the client asks for, as in sendfile mode.
            f.meta.content_type = content_type(&path);
            files.insert(key, f);
        }
    }
    seen.remove(&id);
    Ok(())
}

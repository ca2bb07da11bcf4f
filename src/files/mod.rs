//! The File backend: resolving a request under a route's root, validators and conditional
//! requests, single byte ranges, and sending the bytes — by `sendfile(2)` from disk or from
//! memory.
//!
//! **Containment.** Request paths arrive normalised (no `..`, no encoded `/`, `\` or NUL; see
//! [`crate::http::path`]). On disk, a file below a directory route is opened with `openat2(2)`
//! and `RESOLVE_BENEATH` relative to the root, so neither `..` nor a symlink can lead outside
//! the root: the kernel refuses it, and the client gets 403. Symlinks that stay inside the root
//! are followed. In memory mode the tree is walked when the config loads and files whose real
//! path lies outside the root are left out.
//!
//! **Memory mode** serves bytes that [`crate::preload`] read when the snapshot was built (on the
//! control thread, never on a worker).
//!
//! **Sendfile mode** serves small files from each worker's [`cache`] while they stay unchanged
//! on disk, and everything else by `sendfile(2)` from a descriptor opened per request.

mod autoindex;
mod cache;

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::config::{FileBackend, FileCache};
use crate::error::{Error, ErrorKind};
use crate::exchange::{Body, Downstream};
use crate::http::encoding::{ranked, Encoding};
use crate::http::request::RequestHead;
use crate::http::response::ResponseHead;
use crate::http::Method;
use crate::metrics::WorkerStats;
use crate::net::{offload, sys};
pub use crate::preload::{content_type, FileMeta, MemFile, MemoryFiles};
use crate::route::{Matched, Target};

/// What to send for a file request, decided from the request and the file's metadata alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// 200, 206 or 304.
    pub status: u16,
    /// The byte range of the file to send (`(0, len)` for the whole file).
    pub offset: u64,
    pub len: u64,
    /// Whether a body is sent at all (not for HEAD or 304).
    pub body: bool,
}

/// Applies conditional requests (`If-None-Match`, then `If-Modified-Since`) and a single
/// `Range` (with `If-Range`) to a GET or HEAD request. Multiple ranges are answered with the
/// whole file (RFC 9110 allows ignoring Range); a syntactically bad Range is ignored; an
/// unsatisfiable one is a 416.
pub fn plan(req: &RequestHead, meta: &FileMeta) -> Result<Plan, Error> {
    let head = req.method == Method::Head;
    // Only a request that compares validators needs the ETag as a string.
    let compares = req.header("if-none-match").is_some() || req.header("if-range").is_some();
    let etag = if compares { meta.etag() } else { String::new() };
    let full = Plan {
        status: 200,
        offset: 0,
        len: meta.len,
        body: !head,
    };
    let not_modified = Plan {
        status: 304,
        offset: 0,
        len: 0,
        body: false,
    };
    if let Some(inm) = req.header("if-none-match") {
        if etag_list_matches(inm, &etag) {
            return Ok(not_modified);
        }
    } else if let Some(ims) = req.header("if-modified-since").and_then(parse_date) {
        if meta.mtime <= ims {
            return Ok(not_modified);
        }
    }
    if head {
        return Ok(full);
    }
    let Some(range) = req.header("range") else {
        return Ok(full);
    };
    if let Some(if_range) = req.header("if-range") {
        let fresh = if if_range.starts_with(b"\"") {
            if_range == etag.as_bytes()
        } else {
            parse_date(if_range) == Some(meta.mtime)
        };
        if !fresh {
            return Ok(full);
        }
    }
    match parse_range(range, meta.len) {
        RangeSpec::Ignore => Ok(full),
        RangeSpec::Unsatisfiable => Err(Error::client(
            ErrorKind::RangeNotSatisfiable(meta.len),
            "range not satisfiable",
        )),
        RangeSpec::Bytes { offset, len } => Ok(Plan {
            status: 206,
            offset,
            len,
            body: true,
        }),
    }
}

/// Serves a matched File route: finds the file (on disk or in memory) — or its
/// precompressed variant, or the route's fallback — plans the response and sends it through
/// `ds`.
pub async fn serve(
    ds: &mut impl Downstream,
    req: &RequestHead,
    m: &Matched<'_>,
    backend: &FileBackend,
    file_cache: &FileCache,
    state: &FilesState,
    stats: &WorkerStats,
) -> Result<(), Error> {
    let target = m.target();
    if target == Target::NotFound {
        return Err(Error::not_found());
    }
    let site = &backend.site;
    let codings = if site.precompressed.is_empty() {
        [None; 3]
    } else {
        ranked(req.header("accept-encoding"), &site.precompressed)
    };
    let mut s = Serving {
        req,
        m,
        backend,
        codings,
        status: None,
        file_cache,
        state,
        stats,
    };
    let first = s.send(ds, &target).await;
    // A directory without its index file: named without a trailing slash (the index was
    // looked for below it), or with one (the index was the target).
    let not_found = first.as_ref().is_err_and(|e| e.kind == ErrorKind::NotFound);
    let no_index = first.as_ref().is_err_and(|e| e.detail == NO_INDEX);
    let wants_dir = not_found && (site.autoindex || (site.fallback.is_some() && !no_index));
    let names_a_dir = wants_dir && !no_index && s.names_a_dir().await;
    if site.autoindex && not_found && (no_index || names_a_dir) {
        return s.listing(ds).await;
    }
    let (Some(fallback), Target::InDir { root, .. }) = (&site.fallback, &target) else {
        return first;
    };
    match first {
        Err(e) if e.kind == ErrorKind::NotFound && e.detail != NO_INDEX && !names_a_dir => {
            let fallback = Target::InDir {
                root,
                relative: fallback.clone(),
            };
            s.status = (site.fallback_status != 200).then_some(site.fallback_status);
            s.send(ds, &fallback).await
        }
        r => r,
    }
}

/// One File request being served.
struct Serving<'a> {
    req: &'a RequestHead,
    m: &'a Matched<'a>,
    backend: &'a FileBackend,
    /// The precompressed variants the client takes, best first (none when the route has
    /// none).
    codings: [Option<Encoding>; 3],
    /// The fallback's status when it is not 200: sent as it is, without conditionals or
    /// ranges.
    status: Option<u16>,
    file_cache: &'a FileCache,
    state: &'a FilesState,
    stats: &'a WorkerStats,
}

impl Serving<'_> {
    async fn send(&self, ds: &mut impl Downstream, target: &Target<'_>) -> Result<(), Error> {
        let (req, index) = (self.req, &self.backend.index);
        if let Some(mem) = &self.m.entry.memory {
            let (key, f) = find_memory(mem, target, index)?;
            let variant = self
                .codings
                .iter()
                .flatten()
                .find_map(|&e| Some((e, mem.variant(&key, e)?)));
            if let Some((e, v)) = variant {
                let meta = f.meta.variant(&v.meta, e);
                return send_bytes(ds, req, &meta, None, &v.body, self.status).await;
            }
            // Copies compressed at load, as compression on the fly would make them (a range
            // is of the original bytes).
            let compress = &self.m.entry.route.site.compress.encodings;
            let http10 = req.version == crate::http::Version::Http10;
            if !f.compressed.is_empty() && req.header("range").is_none() && !http10 {
                let accept = req.header("accept-encoding");
                let copy = ranked(accept, compress)
                    .into_iter()
                    .flatten()
                    .find_map(|e| f.compressed(e));
                if let Some(c) = copy {
                    let (meta, v) = (&c.meta, &c.validators);
                    return send_bytes(ds, req, meta, Some(v), &c.body, self.status).await;
                }
            }
            return send_bytes(ds, req, &f.meta, Some(&f.validators), &f.body, self.status).await;
        }
        // A precompressed variant, tried by name first (through the file cache like any
        // file): the original is not opened when the variant serves.
        for &e in self.codings.iter().flatten() {
            let owned;
            let variant = match target {
                Target::InDir { root, relative } => Target::InDir {
                    root,
                    relative: format!("{relative}{}", e.suffix()),
                },
                Target::File(path) => {
                    let mut name = path.as_os_str().to_owned();
                    name.push(e.suffix());
                    owned = PathBuf::from(name);
                    Target::File(&owned)
                }
                Target::Upstream(_) | Target::NotFound => break,
            };
            let shown_as = match target {
                Target::InDir { relative, .. } => Path::new(relative.as_str()),
                Target::File(path) => path,
                Target::Upstream(_) | Target::NotFound => Path::new(""),
            };
            match self.send_disk(ds, &variant, Some((e, shown_as))).await {
                Err(err) if err.kind == ErrorKind::NotFound && err.detail != NO_INDEX => continue,
                r => return r,
            }
        }
        self.send_disk(ds, target, None).await
    }

    /// Sends a file from disk (or the worker's file cache); `variant`: it is the
    /// precompressed variant in this coding of the file named (for its type) as given.
    async fn send_disk(
        &self,
        ds: &mut impl Downstream,
        target: &Target<'_>,
        variant: Option<(Encoding, &Path)>,
    ) -> Result<(), Error> {
        let req = self.req;
        let as_variant = |meta: &FileMeta| match variant {
            Some((e, name)) => FileMeta {
                content_type: content_type(name),
                encoding: Some(e),
                ..meta.clone()
            },
            None => meta.clone(),
        };
        let now = Instant::now();
        let key = self
            .file_cache
            .enabled()
            .then(|| cache::Key::of(target))
            .flatten();
        // Whether the target's file system is known to be local: then an open or a `stat` from
        // the dentry cache reads no disk. A network or FUSE mount (or one not seen yet) may
        // make any call wait: everything about its files happens on the file I/O threads.
        let local = || {
            target
                .root()
                .is_some_and(|root| self.state.local(root, now))
        };
        if let Some(key) = &key {
            let entry = match cache::lookup(self.state, key, self.file_cache, now, self.stats) {
                cache::Lookup::Hit(entry) => Some(entry),
                cache::Lookup::Miss => None,
                cache::Lookup::Check(entry) => {
                    let on_worker = local()
                        .then(|| cache::check_cached(self.state, key, &entry))
                        .and_then(Result::ok);
                    let now_there = match on_worker {
                        Some(identity) => identity,
                        None => {
                            let check = cache::Check::of(self.state, key, &entry);
                            let before = cache::checking(&entry, now);
                            let checked = offload::run(move || check.run()).await;
                            if checked.is_err() {
                                cache::unchecked(&entry, before);
                            }
                            checked?
                        }
                    };
                    cache::confirm(self.state, key, entry, now_there, now, self.stats)
                }
            };
            if let Some(hit) = entry {
                let f = &hit.file;
                return match variant {
                    None => {
                        send_bytes(ds, req, &f.meta, Some(&f.validators), &f.body, self.status)
                            .await
                    }
                    Some(_) => {
                        let meta = as_variant(&f.meta);
                        send_bytes(ds, req, &meta, None, &f.body, self.status).await
                    }
                };
            }
        }
        // The open, and the read of a file for the cache, from the kernel's caches when they
        // can; what would wait for the disk goes to a file I/O thread (see [`offload`]).
        let index = &self.backend.index;
        let cacheable =
            |o: &Opened| key.is_some() && cache::wants(self.state, o, self.file_cache, now);
        let on_worker = match local() {
            true => open(self.state, target, index, Wait::Never),
            false => Err(Error::internal(WOULD_BLOCK)),
        };
        let (opened, read) = match on_worker {
            Ok(opened) => {
                let len = opened.meta.len;
                match cacheable(&opened).then(|| cache::read(&opened.fd, len, Wait::Never)) {
                    Some(Err(true)) => {
                        offload::run(move || {
                            let read = cache::read(&opened.fd, len, Wait::Allowed).ok();
                            (opened, read)
                        })
                        .await?
                    }
                    read => (opened, read.and_then(Result::ok)),
                }
            }
            Err(e) if would_block(&e) => {
                let cold = Cold::of(self.state, target).ok_or_else(Error::not_found)?;
                let (index, config) = (index.clone(), *self.file_cache);
                // Whether the cache could take the file (decided here: the cache is this
                // thread's); its size and kind are checked there.
                let admit = key.is_some() && cache::may_want(self.state, &config, now);
                let (opened, read, root_local) = offload::run(move || {
                    let (opened, root_local) = cold.open(&index)?;
                    let small = opened.meta.len <= config.max_file_size.min(config.size);
                    let read = (admit && small && !opened.via_index)
                        .then(|| cache::read(&opened.fd, opened.meta.len, Wait::Allowed).ok())
                        .flatten();
                    Ok::<_, Error>((opened, read, root_local))
                })
                .await??;
                if let Some(root) = target.root() {
                    self.state.learn(root, root_local, now);
                }
                (opened, read)
            }
            Err(e) => return Err(e),
        };
        // A variant is a file: a directory of that name is no variant.
        if variant.is_some() && opened.via_index {
            return Err(Error::not_found());
        }
        if let (Some(key), Some(read)) = (key, read) {
            let filled = cache::fill(
                self.state,
                key,
                &opened,
                read,
                self.file_cache,
                now,
                self.stats,
            );
            if let Some(fill) = filled {
                let f = &fill.file;
                let meta = as_variant(&f.meta);
                let validators = variant.is_none().then_some(&f.validators[..]);
                return send_bytes(ds, req, &meta, validators, &f.body, self.status).await;
            }
        }
        let meta = as_variant(&opened.meta);
        send_file(ds, req, &opened, &meta, self.status).await
    }

    /// The listing of the directory the request named (`autoindex`); a path without its
    /// trailing slash is redirected to it first, so that the listing's links resolve.
    async fn listing(&self, ds: &mut impl Downstream) -> Result<(), Error> {
        let req = self.req;
        let dir = self.m.relative.trim_end_matches('/');
        let hidden = self.backend.site.autoindex_hidden;
        if !hidden && dir.split('/').any(|segment| segment.starts_with('.')) {
            return Err(Error::not_found());
        }
        // The directory's path as routed (normalised), with its trailing slash.
        let shown = match self.m.entry.prefix.as_deref().unwrap_or("/") {
            "/" if dir.is_empty() => "/".to_string(),
            "/" => format!("/{dir}/"),
            prefix if dir.is_empty() => format!("{prefix}/"),
            prefix => format!("{prefix}/{dir}/"),
        };
        if !req.path.ends_with('/') {
            let location = crate::http::redirect::location(&shown, req.query.as_deref());
            let mut h = ResponseHead::new(301);
            h.header("Location", &location);
            return ds.respond(h, Body::Empty { length: Some(0) }).await;
        }
        let (entries, more) = match (&self.m.entry.memory, self.m.target()) {
            (Some(mem), _) => autoindex::read_memory(mem, dir, hidden),
            (None, Target::InDir { root, .. }) => {
                let root_path = root;
                let root = self.state.root_dir(root, Wait::Never).ok();
                let (dir, root_path) = (dir.to_string(), root_path.to_path_buf());
                // A listing stats every entry: on a file I/O thread, never on the worker.
                offload::run(move || {
                    autoindex::read_disk(&*root_or_open(root, &root_path)?, &dir, hidden)
                })
                .await??
            }
            (None, _) => return Err(Error::not_found()),
        };
        let (body, content_type) = if autoindex::wants_json(req.header("accept")) {
            (autoindex::json(&entries), "application/json")
        } else {
            let page = autoindex::html(&shown, &entries, more);
            (page, "text/html; charset=utf-8")
        };
        let mut h = ResponseHead::new(200);
        h.header("Content-Type", content_type)
            .header("Vary", "Accept");
        ds.respond(h, Body::Bytes(body.as_bytes())).await
    }

    /// Whether the request named a directory (`/app/`) that exists: a fallback is not for it.
    async fn names_a_dir(&self) -> bool {
        let rel = self.m.relative;
        if !(rel.is_empty() || rel.ends_with('/')) {
            return false;
        }
        let dir = rel.trim_end_matches('/');
        match (&self.m.entry.memory, &self.m.target()) {
            (Some(mem), _) => {
                matches!(&**mem, MemoryFiles::Tree { dirs, .. } if dirs.contains(dir))
            }
            (None, Target::InDir { root, .. }) => {
                let dir = if dir.is_empty() { "." } else { dir };
                let is_dir = |root: &OwnedFd, dir: &str, wait| {
                    open_contained(root, dir, wait)
                        .and_then(|fd| stat(&fd))
                        .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
                };
                // The open that found no index has just walked this path: on a local file
                // system it is in the dentry cache. Elsewhere (or if not), a thread looks.
                let known = self.state.root_dir(root, Wait::Never).ok();
                if self.state.local(root, Instant::now()) {
                    if let Some(fd) = &known {
                        match is_dir(fd, dir, Wait::Never) {
                            Err(e) if would_block(&e) => {}
                            found => return found.unwrap_or(false),
                        }
                    }
                }
                let (root, dir) = (root.to_path_buf(), dir.to_string());
                let found = offload::run(move || {
                    is_dir(&*root_or_open(known, &root)?, &dir, Wait::Allowed)
                })
                .await;
                found.is_ok_and(|r| r.unwrap_or(false))
            }
            (None, _) => false,
        }
    }
}

/// The plan for a response: `plan`'s, or with a fixed `status` (a fallback's that is not
/// 200) the whole file with that status.
fn plan_with(req: &RequestHead, meta: &FileMeta, status: Option<u16>) -> Result<Plan, Error> {
    match status {
        None => plan(req, meta),
        Some(status) => Ok(Plan {
            status,
            offset: 0,
            len: meta.len,
            body: req.method != Method::Head,
        }),
    }
}

/// Sends an open file by its descriptor.
async fn send_file(
    ds: &mut impl Downstream,
    req: &RequestHead,
    file: &Opened,
    meta: &FileMeta,
    status: Option<u16>,
) -> Result<(), Error> {
    let p = plan_with(req, meta, status)?;
    let head = response_head(&p, meta, None);
    let body = if p.body {
        Body::File {
            fd: file.fd.as_raw_fd(),
            offset: p.offset,
            len: p.len,
            remote: file.remote,
        }
    } else {
        no_body(&p)
    };
    ds.respond(head, body).await
}

/// What serving `m` would find, without sending anything: the file a request gets (its path,
/// its index followed), or the error it gets (404, 403…) — by the same lookups as
/// [`serve`]. For the admin API's `explain`, on the control thread (never a worker).
pub fn probe(m: &Matched<'_>, backend: &FileBackend) -> Result<PathBuf, Error> {
    let target = m.target();
    let shown = target.display().ok_or_else(Error::not_found)?;
    if let Some(mem) = &m.entry.memory {
        find_memory(mem, &target, &backend.index)?;
        return Ok(shown);
    }
    let opened = open(
        &FilesState::default(),
        &target,
        &backend.index,
        Wait::Allowed,
    )?;
    Ok(if opened.via_index {
        shown.join(&backend.index)
    } else {
        shown
    })
}

/// Sends a file held in memory (memory mode, or the cache); `validators` are its formatted
/// `Last-Modified` and `ETag` lines, when they are at hand.
async fn send_bytes(
    ds: &mut impl Downstream,
    req: &RequestHead,
    meta: &FileMeta,
    validators: Option<&[u8]>,
    bytes: &[u8],
    status: Option<u16>,
) -> Result<(), Error> {
    let p = plan_with(req, meta, status)?;
    let head = response_head(&p, meta, validators);
    let body = if p.body {
        Body::Bytes(
            bytes
                .get(p.offset as usize..(p.offset + p.len) as usize)
                .unwrap_or_default(),
        )
    } else {
        no_body(&p)
    };
    ds.respond(head, body).await
}

/// The body of a plan that sends none: a HEAD answer says the length a GET would get; a 304
/// says none.
fn no_body(p: &Plan) -> Body<'static> {
    Body::Empty {
        length: (p.status != 304).then_some(p.len),
    }
}

/// The head for a plan; `validators` are `meta`'s `Last-Modified` and `ETag` lines when they
/// were formatted already.
fn response_head(p: &Plan, meta: &FileMeta, validators: Option<&[u8]>) -> ResponseHead {
    let mut h = ResponseHead::new(p.status);
    match validators {
        Some(lines) => {
            h.validator_lines(lines);
        }
        None => {
            h.header_with("Last-Modified", |b| meta.write_last_modified(b))
                .header_with("ETag", |b| meta.write_etag(b));
        }
    }
    if let Some(e) = meta.encoding {
        h.header("Content-Encoding", e.token());
    }
    if p.status != 304 {
        h.header("Content-Type", meta.content_type)
            .header("Accept-Ranges", "bytes");
        if p.status == 206 {
            let last = p.offset + p.len - 1;
            h.header(
                "Content-Range",
                &format!("bytes {}-{last}/{}", p.offset, meta.len),
            );
        }
    }
    h
}

/// The detail of the 404 for a directory without its index file (no fallback for it).
const NO_INDEX: &str = "a directory without an index file";

/// The file for a resolved target, following a directory to its index, and its key.
fn find_memory<'a>(
    mem: &'a MemoryFiles,
    target: &Target<'_>,
    index: &str,
) -> Result<(String, &'a MemFile), Error> {
    match (mem, target) {
        (MemoryFiles::Single(f), Target::File(_)) => Ok((String::new(), f)),
        (MemoryFiles::Tree { files, dirs }, Target::InDir { relative, .. }) => {
            if let Some(f) = files.get(relative.as_str()) {
                return Ok((relative.clone(), f));
            }
            let dir = relative.trim_end_matches('/');
            if dirs.contains(dir) {
                let key = if dir.is_empty() {
                    index.to_string()
                } else {
                    format!("{dir}/{index}")
                };
                return match files.get(&key) {
                    Some(f) => Ok((key, f)),
                    None => Err(Error::client(ErrorKind::NotFound, NO_INDEX)),
                };
            }
            Err(Error::not_found())
        }
        _ => Err(Error::not_found()),
    }
}

/// A regular file opened for a request.
struct Opened {
    fd: OwnedFd,
    /// `fstat` of `fd`.
    st: libc::stat,
    meta: FileMeta,
    /// A directory was named (without its trailing slash) and its index opened instead.
    via_index: bool,
    /// On a network or FUSE mount (found on a file I/O thread; a worker opens only on the
    /// local file system of a root known to be on one).
    remote: bool,
    /// When the open began: of two opens of one file, the later one's bytes are the newer.
    at: Instant,
}

/// Whether a call may wait for the disk. On a worker it may not: a call that would is refused
/// with [`WOULD_BLOCK`], and the request takes it to the file I/O threads ([`offload`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    Never,
    Allowed,
}

/// The detail of the error when a call would have waited for the disk.
const WOULD_BLOCK: &str = "would wait for the disk";

fn would_block(e: &Error) -> bool {
    e.detail == WOULD_BLOCK
}

/// Opens the file of a target for sendfile mode, following a directory to its index.
fn open(state: &FilesState, target: &Target<'_>, index: &str, wait: Wait) -> Result<Opened, Error> {
    match target {
        Target::File(path) => open_file(path, wait),
        Target::InDir { root, relative } => {
            open_in(&*state.root_dir(root, wait)?, relative, index, wait)
        }
        Target::Upstream(_) | Target::NotFound => Err(Error::not_found()),
    }
}

/// A file route's file.
fn open_file(path: &Path, wait: Wait) -> Result<Opened, Error> {
    let at = Instant::now();
    let fd = open_at(None, path.as_os_str().as_bytes(), false, wait)?;
    let st = stat(&fd)?;
    let meta = regular_meta(&st, path)?;
    Ok(Opened {
        fd,
        st,
        meta,
        via_index: false,
        remote: false,
        at,
    })
}

/// `relative` below a directory route's root, or its index when it is a directory.
fn open_in(root_fd: &OwnedFd, relative: &str, index: &str, wait: Wait) -> Result<Opened, Error> {
    let at = Instant::now();
    let rel = if relative.is_empty() { "." } else { relative };
    let fd = open_contained(root_fd, rel, wait)?;
    let st = stat(&fd)?;
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        // A directory named without a trailing slash: serve its index directly.
        let with_index = format!("{}/{index}", rel.trim_end_matches('/'));
        let fd = open_contained(root_fd, &with_index, wait).map_err(|e| match e.kind {
            ErrorKind::NotFound => Error::client(ErrorKind::NotFound, NO_INDEX),
            _ => e,
        })?;
        let st = stat(&fd)?;
        let meta = regular_meta(&st, Path::new(&with_index))?;
        return Ok(Opened {
            fd,
            st,
            meta,
            via_index: true,
            remote: false,
            at,
        });
    }
    let meta = regular_meta(&st, Path::new(rel))?;
    Ok(Opened {
        fd,
        st,
        meta,
        via_index: false,
        remote: false,
        at,
    })
}

/// A target whose open would have waited for the disk, owned, for a file I/O thread.
enum Cold {
    File(PathBuf),
    InDir {
        root: PathBuf,
        /// The root's descriptor, when the worker had it.
        root_fd: Option<Arc<OwnedFd>>,
        relative: String,
    },
}

impl Cold {
    fn of(state: &FilesState, target: &Target<'_>) -> Option<Self> {
        match target {
            Target::File(path) => Some(Self::File(path.to_path_buf())),
            Target::InDir { root, relative } => Some(Self::InDir {
                root: root.to_path_buf(),
                root_fd: state.root_dir(root, Wait::Never).ok(),
                relative: relative.clone(),
            }),
            Target::Upstream(_) | Target::NotFound => None,
        }
    }

    /// [`open`], waiting for the disk as long as it takes (on a file I/O thread); and whether
    /// the root (a directory route's; an exact-file route's file) is on a local file system.
    fn open(self, index: &str) -> Result<(Opened, bool), Error> {
        let (mut opened, root_local) = match self {
            Self::File(path) => (open_file(&path, Wait::Allowed)?, None),
            Self::InDir {
                root,
                root_fd,
                relative,
            } => {
                let root = root_or_open(root_fd, &root)?;
                let local = !sys::remote_fs(root.as_fd());
                (
                    open_in(&root, &relative, index, Wait::Allowed)?,
                    Some(local),
                )
            }
        };
        opened.remote = sys::remote_fs(opened.fd.as_fd());
        let root_local = root_local.unwrap_or(!opened.remote);
        Ok((opened, root_local))
    }
}

fn regular_meta(st: &libc::stat, name: &Path) -> Result<FileMeta, Error> {
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(Error::not_found());
    }
    Ok(FileMeta::new(
        st.st_size.max(0) as u64,
        st.st_mtime.max(0) as u64,
        name,
    ))
}

/// How long a worker reuses a route root's directory descriptor before opening the path
/// again. Bounds how long a docroot replaced on disk (a `current` symlink switched to a new
/// release, say) keeps being served from the old directory.
const ROOT_FD_TTL: Duration = Duration::from_secs(1);

/// How long a worker trusts what it learnt of the file system a route's root is on (local, or
/// a network or FUSE mount): a mount made over a docroot is seen within this long.
const MOUNT_TTL: Duration = Duration::from_secs(60);

/// One worker's state of the File backend (see [`crate::server::WorkerCtx`]): its file cache,
/// its route roots opened with `O_PATH`, with when, and which roots are on a local file system.
#[derive(Default)]
pub struct FilesState {
    cache: RefCell<cache::Cache>,
    roots: RefCell<HashMap<PathBuf, (Arc<OwnedFd>, Instant)>>,
    local: RefCell<HashMap<PathBuf, (bool, Instant)>>,
}

impl FilesState {
    /// Whether `root` (a route's root or file) is known to be on a local file system, where an
    /// open from the dentry cache and a `stat` of a file in it read no disk. Not known yet (or
    /// not lately): the request's open goes to a file I/O thread, which finds out.
    fn local(&self, root: &Path, now: Instant) -> bool {
        self.local
            .borrow()
            .get(root)
            .is_some_and(|&(local, at)| local && now.saturating_duration_since(at) < MOUNT_TTL)
    }

    /// What a file I/O thread found of `root`'s file system.
    fn learn(&self, root: &Path, local: bool, now: Instant) {
        let mut map = self.local.borrow_mut();
        if let Some(known) = map.get_mut(root) {
            *known = (local, now);
            return;
        }
        // Roots of routes that no longer exist expire here instead of piling up.
        map.retain(|_, (_, at)| now.saturating_duration_since(*at) < MOUNT_TTL);
        map.insert(root.to_path_buf(), (local, now));
    }

    /// The directory descriptor of a route's root, from the short-lived cache.
    fn root_dir(&self, root: &Path, wait: Wait) -> Result<Arc<OwnedFd>, Error> {
        let now = Instant::now();
        let cached = self
            .roots
            .borrow()
            .get(root)
            .filter(|(_, at)| now.duration_since(*at) < ROOT_FD_TTL)
            .map(|(fd, _)| fd.clone());
        if let Some(fd) = cached {
            return Ok(fd);
        }
        let fd = Arc::new(open_at(None, root.as_os_str().as_bytes(), true, wait)?);
        let mut map = self.roots.borrow_mut();
        // Roots of routes that no longer exist expire here instead of piling up.
        map.retain(|_, (_, at)| now.duration_since(*at) < ROOT_FD_TTL);
        map.insert(root.to_path_buf(), (fd.clone(), now));
        Ok(fd)
    }

    /// Drops the cached files that no request used for a minute.
    pub fn sweep(&self, now: Instant, stats: &WorkerStats) {
        cache::sweep(&self.cache, now, stats);
    }
}

fn stat(fd: &OwnedFd) -> Result<libc::stat, Error> {
    sys::fstat(fd.as_fd()).map_err(open_error)
}

/// The root directory's descriptor the worker found in its table, or, on a file I/O thread,
/// the root opened now (it was not in the dentry cache).
fn root_or_open(known: Option<Arc<OwnedFd>>, root: &Path) -> Result<Arc<OwnedFd>, Error> {
    match known {
        Some(fd) => Ok(fd),
        None => open_at(None, root.as_os_str().as_bytes(), true, Wait::Allowed).map(Arc::new),
    }
}

fn open_at(
    dir: Option<BorrowedFd<'_>>,
    path: &[u8],
    directory: bool,
    wait: Wait,
) -> Result<OwnedFd, Error> {
    let c = CString::new(path).map_err(|_| Error::not_found())?;
    let flags = if directory {
        libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC
    } else {
        // O_NONBLOCK: a FIFO in the docroot must not hang the worker in open(2); it is
        // harmless for regular files, and anything else is refused after fstat.
        libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK
    };
    match wait {
        Wait::Allowed => sys::open_at(dir, &c, flags).map_err(open_error),
        // Below a root, not across a mount: the root's file system is the one known local.
        Wait::Never if dir.is_some() => open_cached(dir, &c, flags, libc::RESOLVE_NO_XDEV),
        Wait::Never => open_cached(dir, &c, flags, 0),
    }
}

/// `openat2` with `RESOLVE_CACHED` added to `resolve`: the path resolved from the dentry cache
/// alone, or [`WOULD_BLOCK`].
fn open_cached(
    dir: Option<BorrowedFd<'_>>,
    path: &CString,
    flags: libc::c_int,
    resolve: u64,
) -> Result<OwnedFd, Error> {
    if !offload::cached_opens() {
        return Err(Error::internal(WOULD_BLOCK));
    }
    match sys::open_beneath(dir, path, flags, resolve | libc::RESOLVE_CACHED) {
        Ok(fd) => Ok(fd),
        // The kernel takes the flag (asked once), so an `EINVAL` is this path's (a name the
        // file system cannot hold): the thread's open, without the flag, says what it is.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(Error::internal(WOULD_BLOCK)),
        // `EXDEV` without `RESOLVE_BENEATH`: a mount crossed (`RESOLVE_NO_XDEV`), for the
        // thread. With it, it may be the root left too: refused, and `open_contained` looks
        // again (an absolute symlink back inside the root, or a mount, which sends it on).
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) && resolve & libc::RESOLVE_BENEATH == 0 => {
            Err(Error::internal(WOULD_BLOCK))
        }
        Err(e) => Err(open_error(e)),
    }
}

/// `openat2(root, rel, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`: the kernel refuses any
/// resolution that leaves `root`, through `..` or a symlink.
fn open_beneath(root: &OwnedFd, rel: &str, wait: Wait) -> Result<OwnedFd, Error> {
    let c = CString::new(rel).map_err(|_| Error::not_found())?;
    let flags = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK;
    let resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    match wait {
        Wait::Allowed => {
            sys::open_beneath(Some(root.as_fd()), &c, flags, resolve).map_err(open_error)
        }
        Wait::Never => {
            let resolve = resolve | libc::RESOLVE_NO_XDEV;
            open_cached(Some(root.as_fd()), &c, flags, resolve)
        }
    }
}

/// Opens `rel` under `root` so that the file reached lies inside the root. The fast path is
/// `openat2` with `RESOLVE_BENEATH`; the kernel also refuses *absolute* symlinks there, even
/// ones that point back inside the root, so on that refusal the file is opened following
/// symlinks and its real path (from `/proc/self/fd`) is checked against the root's. The check
/// is on the descriptor actually opened, so a symlink swapped in between cannot slip through.
fn open_contained(root: &OwnedFd, rel: &str, wait: Wait) -> Result<OwnedFd, Error> {
    match open_beneath(root, rel, wait) {
        Err(e) if e.kind == ErrorKind::Forbidden || e.detail == NO_OPENAT2 => {
            let fd = open_at(Some(root.as_fd()), rel.as_bytes(), false, wait)?;
            let (Some(real), Some(root_real)) = (fd_path(&fd), fd_path(root)) else {
                return Err(e);
            };
            let inside = real
                .strip_prefix(root_real.as_slice())
                .is_some_and(|rest| rest.starts_with(b"/") || root_real.ends_with(b"/"));
            if inside {
                Ok(fd)
            } else {
                Err(e)
            }
        }
        r => r,
    }
}

/// The path a descriptor refers to, from `/proc/self/fd`.
fn fd_path(fd: &OwnedFd) -> Option<Vec<u8>> {
    let link = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    let n = sys::readlink(&link, &mut buf).ok()?;
    if n == 0 || n >= buf.len() {
        return None;
    }
    buf.truncate(n);
    Some(buf)
}

/// The detail of the error for a kernel (or seccomp profile) without `openat2`.
const NO_OPENAT2: &str = "openat2 is not available";

fn open_error(e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::ENOSYS) => Error::internal(NO_OPENAT2),
        Some(libc::EAGAIN) => Error::internal(WOULD_BLOCK),
        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ENAMETOOLONG) => Error::not_found(),
        Some(libc::EXDEV) | Some(libc::ELOOP) => Error::client(
            ErrorKind::Forbidden,
            "path resolves outside the route's root",
        ),
        Some(libc::EACCES) | Some(libc::EPERM) => {
            Error::client(ErrorKind::Forbidden, "permission denied")
        }
        _ => Error::internal(format!("open failed: {e}")),
    }
}

/// Whether an `If-None-Match` list matches `etag` (weak comparison, RFC 9110 §13.1.2).
fn etag_list_matches(list: &[u8], etag: &str) -> bool {
    let etag = etag.as_bytes();
    list.split(|&b| b == b',').any(|item| {
        let item = item.trim_ascii();
        item == b"*" || item.strip_prefix(b"W/").unwrap_or(item) == etag
    })
}

fn parse_date(v: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(v).ok()?;
    let t = httpdate::parse_http_date(s.trim()).ok()?;
    t.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

#[derive(Debug, PartialEq, Eq)]
enum RangeSpec {
    Ignore,
    Unsatisfiable,
    Bytes { offset: u64, len: u64 },
}

/// Parses a `Range` value for a representation of `len` bytes. Only one range is honoured.
fn parse_range(v: &[u8], len: u64) -> RangeSpec {
    let Ok(s) = std::str::from_utf8(v) else {
        return RangeSpec::Ignore;
    };
    let Some(spec) = s.trim().strip_prefix("bytes=") else {
        return RangeSpec::Ignore;
    };
    if spec.contains(',') {
        return RangeSpec::Ignore;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeSpec::Ignore;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if first.is_empty() {
        // Suffix range: the last N bytes.
        if !digits(last) {
            return RangeSpec::Ignore;
        }
        let Ok(n) = last.parse::<u64>() else {
            return RangeSpec::Ignore;
        };
        if n == 0 || len == 0 {
            return RangeSpec::Unsatisfiable;
        }
        let n = n.min(len);
        return RangeSpec::Bytes {
            offset: len - n,
            len: n,
        };
    }
    if !digits(first) || !(last.is_empty() || digits(last)) {
        return RangeSpec::Ignore;
    }
    let Ok(start) = first.parse::<u64>() else {
        return RangeSpec::Unsatisfiable;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match last.parse::<u64>() {
            Ok(e) if e >= start => e,
            Ok(_) => return RangeSpec::Ignore,
            Err(_) => u64::MAX,
        }
    };
    if start >= len {
        return RangeSpec::Unsatisfiable;
    }
    let end = end.min(len - 1);
    RangeSpec::Bytes {
        offset: start,
        len: end - start + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeSpec::*;
        assert_eq!(
            parse_range(b"bytes=0-99", 1000),
            Bytes {
                offset: 0,
                len: 100
            }
        );
        assert_eq!(
            parse_range(b"bytes=900-", 1000),
            Bytes {
                offset: 900,
                len: 100
            }
        );
        assert_eq!(
            parse_range(b"bytes=-100", 1000),
            Bytes {
                offset: 900,
                len: 100
            }
        );
        assert_eq!(
            parse_range(b"bytes=-5000", 1000),
            Bytes {
                offset: 0,
                len: 1000
            }
        );
        assert_eq!(
            parse_range(b"bytes=990-5000", 1000),
            Bytes {
                offset: 990,
                len: 10
            }
        );
        assert_eq!(parse_range(b"bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse_range(b"bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse_range(b"bytes=0-0", 0), Unsatisfiable);
        assert_eq!(
            parse_range(b"bytes=99999999999999999999-", 10),
            Unsatisfiable
        );
        assert_eq!(parse_range(b"bytes=0-1,5-6", 1000), Ignore);
        assert_eq!(parse_range(b"bytes=5-1", 1000), Ignore);
        assert_eq!(parse_range(b"items=0-1", 1000), Ignore);
        assert_eq!(parse_range(b"bytes=a-b", 1000), Ignore);
        assert_eq!(parse_range(b"bytes=-", 1000), Ignore);
        assert_eq!(parse_range(b"bytes=+1-2", 1000), Ignore);
    }

    #[test]
    fn etag_lists() {
        assert!(etag_list_matches(b"\"a-1\"", "\"a-1\""));
        assert!(etag_list_matches(b"\"x\", W/\"a-1\"", "\"a-1\""));
        assert!(etag_list_matches(b"*", "\"a-1\""));
        assert!(!etag_list_matches(b"\"a-2\"", "\"a-1\""));
    }

    #[test]
    fn content_types_come_from_the_extension() {
        assert_eq!(content_type(Path::new("a/index.html")), "text/html");
        assert_eq!(content_type(Path::new("x.css")), "text/css");
        assert_eq!(content_type(Path::new("x.png")), "image/png");
        assert_eq!(content_type(Path::new("noext")), "application/octet-stream");
    }
}

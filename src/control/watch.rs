//! Watching the config file — and the certificate and key files of `[tls]` — for changes.
//!
//! The *directory* is watched, not the file: editors replace files by rename, and Kubernetes
//! swaps a `..data` symlink, and either would orphan a watch on the file itself. Every event in
//! the directory that touches the config file's name or a `..`-prefixed name (Kubernetes'
//! `..data` swap) is passed on, except plain reads; other files there — a log file, an editor's
//! swap file — are ignored, so a log written beside the config cannot feed back into reloads.
//! The control loop debounces what passes and compares the file's bytes, so repeated events
//! cost nothing.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;

use notify::{EventKind, RecursiveMode, Watcher};

use super::Event;
use crate::config::Config;

/// Starts watching the directories of `files` (the config file first, then the certificate
/// and key files of `[tls]`). The watcher stops when the returned value drops.
pub fn watch(
    files: &[PathBuf],
    events: Sender<Event>,
) -> notify::Result<notify::RecommendedWatcher> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for file in files {
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    let names: Vec<OsString> = files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_os_string()))
        .collect();
    let relevant = move |ev: &notify::Event| {
        // An event without paths (an overflowed queue) may hide anything: pass it on.
        ev.paths.is_empty()
            || ev.paths.iter().any(|p| match p.file_name() {
                Some(n) => names.iter().any(|x| x == n) || n.as_encoded_bytes().starts_with(b".."),
                None => true,
            })
    };
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) if matches!(ev.kind, EventKind::Access(_)) || !relevant(&ev) => {}
            Ok(_) => {
                let _ = events.send(Event::FileChanged);
            }
            Err(e) => log::warn!("config watcher: {e}"),
        })?;
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

/// The config file and the `[tls]` files of `config`: what the watcher watches.
pub(super) fn watched_files(config_path: &Path, config: &Config) -> Vec<PathBuf> {
    let mut files = vec![config_path.to_path_buf()];
    if let Some(tls) = &config.tls {
        files.extend(tls.files());
    }
    files
}

pub(super) fn start_watcher(
    files: &[PathBuf],
    sender: &Sender<Event>,
) -> Option<notify::RecommendedWatcher> {
    match watch(files, sender.clone()) {
        Ok(w) => Some(w),
        Err(e) => {
            log::warn!(
                "cannot watch {} for changes ({e}); reload with SIGHUP or proxyctl reload",
                files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            None
        }
    }
}

//! Watching the config file for changes.
//!
//! The *directory* is watched, not the file: editors replace files by rename, and Kubernetes
//! swaps a `..data` symlink, and either would orphan a watch on the file itself. Every event in
//! the directory (except plain reads) is passed on; the control loop debounces them and compares
//! the file's bytes, so temporary files and repeated events cost nothing.

use std::path::Path;
use std::sync::mpsc::Sender;

use notify::{EventKind, RecursiveMode, Watcher};

use super::Event;

/// Starts watching the directory of `file`. The watcher stops when the returned value drops.
pub fn watch(file: &Path, events: Sender<Event>) -> notify::Result<notify::RecommendedWatcher> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) if matches!(ev.kind, EventKind::Access(_)) => {}
            Ok(_) => {
                let _ = events.send(Event::FileChanged);
            }
            Err(e) => log::warn!("config watcher: {e}"),
        })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

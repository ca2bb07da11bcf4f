//! Directory listings (`autoindex = true`): the entries of a directory without an index file,
//! as HTML (names escaped, links encoded, sizes, dates, directories first, then by name) or,
//! for a client that accepts `application/json`, as JSON in nginx's `autoindex_format json`
//! shape. Dotfiles are left out unless `autoindex_hidden`.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, UNIX_EPOCH};

use super::{open_contained, stat, MemoryFiles, Wait};
use crate::config::defaults::AUTOINDEX_MAX_ENTRIES;
use crate::error::Error;
use crate::net::sys;

/// One entry of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub dir: bool,
    pub size: u64,
    /// Seconds since the epoch.
    pub mtime: u64,
}

/// The entries of `rel` (a directory below `root`, opened for reading), symlinks followed
/// only where they stay inside the root; at most [`AUTOINDEX_MAX_ENTRIES`] (`true` with them
/// when there were more).
pub fn read_disk(root: &OwnedFd, rel: &str, hidden: bool) -> Result<(Vec<Entry>, bool), Error> {
    let dir_rel = if rel.is_empty() { "." } else { rel };
    let dir = open_contained(root, dir_rel, Wait::Allowed)?;
    let probe = sys::dup_cloexec(dir.as_fd()).map_err(|e| Error::internal(e.to_string()))?;
    let (names, more) = sys::dir_names(dir, AUTOINDEX_MAX_ENTRIES)
        .map_err(|e| Error::internal(format!("reading a directory: {e}")))?;
    let mut out = Vec::with_capacity(names.len());
    for raw in names {
        let Ok(name) = String::from_utf8(raw) else {
            continue; // no request path can name it
        };
        if !hidden && name.starts_with('.') {
            continue;
        }
        let Ok(c) = CString::new(name.as_str()) else {
            continue;
        };
        let Ok(mut st) = sys::lstat_at(probe.as_fd(), &c) else {
            continue;
        };
        if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            // A symlink counts only when it resolves inside the root.
            let inside = format!("{}/{name}", dir_rel.trim_end_matches('/'));
            match open_contained(root, &inside, Wait::Allowed).and_then(|fd| stat(&fd)) {
                Ok(target) => st = target,
                Err(_) => continue,
            }
        }
        let kind = st.st_mode & libc::S_IFMT;
        if kind != libc::S_IFDIR && kind != libc::S_IFREG {
            continue;
        }
        out.push(Entry {
            name,
            dir: kind == libc::S_IFDIR,
            size: st.st_size.max(0) as u64,
            mtime: st.st_mtime.max(0) as u64,
        });
    }
    sort(&mut out);
    Ok((out, more))
}

/// The entries of the directory `dir` (relative, no trailing slash) of a memory-mode tree,
/// and whether there were more than [`AUTOINDEX_MAX_ENTRIES`].
pub fn read_memory(mem: &MemoryFiles, dir: &str, hidden: bool) -> (Vec<Entry>, bool) {
    let MemoryFiles::Tree { files, dirs } = mem else {
        return (Vec::new(), false);
    };
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let child = |key: &str| -> Option<String> {
        let rest = key.strip_prefix(prefix.as_str())?;
        (!rest.is_empty() && !rest.contains('/')).then(|| rest.to_string())
    };
    let mut out: Vec<Entry> = dirs
        .iter()
        .filter_map(|d| child(d))
        .map(|name| Entry {
            name,
            dir: true,
            size: 0,
            mtime: 0,
        })
        .chain(files.iter().filter_map(|(k, f)| {
            child(k).map(|name| Entry {
                name,
                dir: false,
                size: f.meta.len,
                mtime: f.meta.mtime,
            })
        }))
        .filter(|e| hidden || !e.name.starts_with('.'))
        .take(AUTOINDEX_MAX_ENTRIES + 1)
        .collect();
    let more = out.len() > AUTOINDEX_MAX_ENTRIES;
    out.truncate(AUTOINDEX_MAX_ENTRIES);
    sort(&mut out);
    (out, more)
}

/// Directories first, then by name.
fn sort(entries: &mut [Entry]) {
    entries.sort_by(|a, b| b.dir.cmp(&a.dir).then_with(|| a.name.cmp(&b.name)));
}

/// The HTML page for `path` (the directory's path, as shown in the title); `more`: entries
/// were left out.
pub fn html(path: &str, entries: &[Entry], more: bool) -> String {
    let title = escape(path);
    let mut out = format!(
        "<!DOCTYPE html>\n<html>\n<head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\n\
         <body>\n<h1>Index of {title}</h1>\n<table>\n\
         <tr><th>Name</th><th>Last modified</th><th>Size</th></tr>\n\
         <tr><td><a href=\"../\">../</a></td><td></td><td>-</td></tr>\n"
    );
    for e in entries {
        let slash = if e.dir { "/" } else { "" };
        let href: String =
            percent_encoding::utf8_percent_encode(&e.name, HREF).collect::<String>() + slash;
        let size = if e.dir {
            "-".to_string()
        } else {
            e.size.to_string()
        };
        out.push_str(&format!(
            "<tr><td><a href=\"{}\">{}{slash}</a></td><td>{}</td><td>{size}</td></tr>\n",
            escape(&href),
            escape(&e.name),
            date(e.mtime),
        ));
    }
    out.push_str("</table>\n");
    if more {
        out.push_str(&format!(
            "<p>Only the first {AUTOINDEX_MAX_ENTRIES} entries the directory gave are listed.</p>\n"
        ));
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// The JSON listing: `[{"name":…,"type":"directory"|"file","mtime":…,"size":…}]`.
pub fn json(entries: &[Entry]) -> String {
    let items: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            let mut v = serde_json::json!({
                "name": e.name,
                "type": if e.dir { "directory" } else { "file" },
                "mtime": date(e.mtime),
            });
            if !e.dir {
                v["size"] = e.size.into();
            }
            v
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

/// Whether a request's `Accept` asks for JSON (with a q-value above 0).
pub fn wants_json(accept: Option<&[u8]>) -> bool {
    accept.is_some_and(|a| {
        a.split(|&b| b == b',').any(|item| {
            let mut parts = item.split(|&b| b == b';');
            let media = parts.next().unwrap_or_default().trim_ascii();
            let refused = parts.any(|p| {
                p.trim_ascii()
                    .strip_prefix(b"q=")
                    .is_some_and(|q| q.iter().all(|&b| b == b'0' || b == b'.'))
            });
            media.eq_ignore_ascii_case(b"application/json") && !refused
        })
    })
}

fn date(secs: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
}

/// What a link to an entry escapes: everything but unreserved characters.
const HREF: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// HTML text and attribute escaping.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, dir: bool) -> Entry {
        Entry {
            name: name.into(),
            dir,
            size: 12,
            mtime: 0,
        }
    }

    #[test]
    fn names_are_escaped_and_directories_come_first() {
        let mut entries = vec![
            entry("b.txt", false),
            entry("<script>x.html", false),
            entry("zdir", true),
            entry("a b&c", false),
        ];
        sort(&mut entries);
        assert_eq!(entries[0].name, "zdir");
        let page = html("/files/<x>/", &entries, true);
        assert!(page.contains("Only the first"));
        assert!(page.contains("<title>Index of /files/&lt;x&gt;/</title>"));
        assert!(page.contains("<a href=\"zdir/\">zdir/</a>"));
        assert!(page.contains("<a href=\"a%20b%26c\">a b&amp;c</a>"));
        assert!(page.contains("&lt;script&gt;x.html"));
        assert!(!page.contains("<script>"));
        let j: serde_json::Value = serde_json::from_str(&json(&entries)).unwrap();
        assert_eq!(j[0]["type"], "directory");
        assert_eq!(j[1]["size"], 12);
        assert!(wants_json(Some(b"text/html;q=0.9, application/json")));
        assert!(!wants_json(Some(b"text/html")));
        assert!(!wants_json(Some(b"application/json;q=0, text/html")));
    }
}

//! Typed values: choices, numbers, sizes, durations, names, paths, addresses, lists, method
//! sets and address sets — each checked where it is read, and every refusal recorded with its
//! line, column and key path.

use super::*;

impl Walker<'_> {
    /// One of `options`, matched exactly (or ignoring ASCII case when `any_case`).
    pub(super) fn choice<T: Copy>(
        &mut self,
        f: &Field,
        what: &str,
        options: &[(&str, T)],
        any_case: bool,
    ) -> Option<T> {
        let s = self.str(f)?;
        let same = |name: &&str| *name == s || (any_case && name.eq_ignore_ascii_case(s));
        if let Some((_, v)) = options.iter().find(|(name, _)| same(name)) {
            return Some(*v);
        }
        let names: Vec<String> = options.iter().map(|(n, _)| format!("{n:?}")).collect();
        let expected = match names.as_slice() {
            [a, b] => format!("{a} or {b}"),
            _ => format!("one of: {}", names.join(", ")),
        };
        let mut reason = format!("unknown {what} {s:?}; expected {expected}");
        if let Some((right, _)) = options.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)) {
            reason.push_str(&format!(" (case matters: write {right:?})"));
        }
        self.reject(f, reason);
        None
    }

    pub(super) fn index(&mut self, f: &Field) -> Option<String> {
        let s = self.str(f)?;
        if s.is_empty() || s.contains('/') || s == "." || s == ".." || s.contains('\0') {
            let reason =
                format!("invalid index {s:?}: it must be a plain file name, e.g. \"index.html\"");
            self.reject(f, reason);
            return None;
        }
        Some(s.to_string())
    }

    /// A File route's `path`, resolved; it must exist.
    pub(super) fn existing(&mut self, f: &Field) -> Option<(PathBuf, FileKind)> {
        let raw = self.str(f)?;
        let path = self.path(f)?;
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => Some((path, FileKind::Dir)),
            Ok(m) if m.is_file() => Some((path, FileKind::File)),
            Ok(_) => {
                let reason = format!(
                    "{path:?} is neither a regular file nor a directory{}",
                    self.resolved_from(raw)
                );
                self.reject(f, reason);
                None
            }
            Err(e) => {
                let what = if e.kind() == std::io::ErrorKind::NotFound {
                    "does not exist".to_string()
                } else {
                    format!("cannot be read: {e}")
                };
                let reason = format!("{path:?} {what}{}", self.resolved_from(raw));
                self.reject(f, reason);
                None
            }
        }
    }

    /// A required `[tls]` file: resolved, and readable now.
    pub(super) fn pem_file(&mut self, node: &Node, key: &str) -> Option<PathBuf> {
        let Some(f) = node.field(key) else {
            let hint = format!("[tls] needs it, e.g. {key} = \"/etc/ssl/site.pem\"");
            self.missing(node, key, &hint);
            return None;
        };
        self.readable_file(&f)
    }

    /// A file path: resolved, and readable now (a PEM file: a certificate, key or CA).
    pub(super) fn readable_file(&mut self, f: &Field) -> Option<PathBuf> {
        let raw = self.str(f)?;
        let path = self.path(f)?;
        // A FIFO or a device is refused by its metadata, before any open that could hang or
        // act on it; what remains is opened (non-blocking) to see that it can be read.
        let problem = match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => "is a directory; expected a regular file".to_string(),
            Ok(m) if !m.is_file() => "is not a regular file (a FIFO or a device?)".to_string(),
            Ok(_) => match crate::fsread::open(&path) {
                Ok(_) => return Some(path),
                Err(e) => format!("cannot be read: {e}"),
            },
            Err(e) => format!("cannot be read: {e}"),
        };
        let reason = format!("{path:?} {problem}{}", self.resolved_from(raw));
        self.reject(f, reason);
        None
    }

    /// ` (resolved from "x" against /dir)` when `raw` is relative; empty otherwise.
    pub(super) fn resolved_from(&self, raw: &str) -> String {
        if Path::new(raw).is_absolute() {
            String::new()
        } else {
            format!(" (resolved from {raw:?} against {})", self.dir.display())
        }
    }

    // ---- tables ----

    /// The table under `key` of `parent`, if present; an error if it is not a table.
    pub(super) fn section<'t, 'i>(
        &mut self,
        parent: &Node<'t, 'i>,
        key: &str,
    ) -> Option<Node<'t, 'i>> {
        self.node(&parent.field(key)?)
    }

    pub(super) fn node<'t, 'i>(&mut self, f: &Field<'t, 'i>) -> Option<Node<'t, 'i>> {
        match f.value.get_ref() {
            DeValue::Table(table) => Some(Node {
                table,
                path: f.path.clone(),
                at: f.at(),
            }),
            _ => {
                self.mismatch(f, "a table");
                None
            }
        }
    }

    /// Like [`Self::node`], with `hint` saying how routes are written.
    pub(super) fn route_table<'t, 'i>(
        &mut self,
        f: &Field<'t, 'i>,
        hint: &str,
    ) -> Option<Node<'t, 'i>> {
        if !matches!(f.value.get_ref(), DeValue::Table(_)) {
            let found = a(f.value.get_ref().type_str());
            self.reject(f, format!("expected a table, found {found}; {hint}"));
            return None;
        }
        self.node(f)
    }

    /// An error for each key of `node` that is in none of `allowed`.
    pub(super) fn check_keys(&mut self, node: &Node, allowed: &[&[&str]]) {
        for (key, _) in node.table.iter() {
            let name: &str = key.get_ref();
            if allowed.iter().any(|keys| keys.contains(&name)) {
                continue;
            }
            let expected = allowed.concat().join(", ");
            let reason = format!("unknown key {name:?}; expected one of: {expected}");
            self.push(key.span().start, &join(&node.path, name), reason);
        }
    }

    /// Converts the value under `key` into `slot`, if present and valid.
    pub(super) fn set<'t, 'i, T>(
        &mut self,
        node: &Node<'t, 'i>,
        key: &str,
        slot: &mut T,
        convert: impl FnOnce(&mut Self, &Field<'t, 'i>) -> Option<T>,
    ) {
        if let Some(v) = self.opt(node, key, convert) {
            *slot = v;
        }
    }

    /// Converts the value under `key`, if present.
    pub(super) fn opt<'t, 'i, T>(
        &mut self,
        node: &Node<'t, 'i>,
        key: &str,
        convert: impl FnOnce(&mut Self, &Field<'t, 'i>) -> Option<T>,
    ) -> Option<T> {
        let f = node.field(key)?;
        convert(self, &f)
    }

    pub(super) fn missing(&mut self, node: &Node, key: &str, hint: &str) {
        let reason = format!("required key is missing; {hint}");
        self.push(node.at, &join(&node.path, key), reason);
    }

    // ---- values ----

    pub(super) fn str<'t>(&mut self, f: &Field<'t, '_>) -> Option<&'t str> {
        match f.value.get_ref() {
            DeValue::String(s) => Some(s.as_ref()),
            _ => {
                self.mismatch(f, "a string");
                None
            }
        }
    }

    pub(super) fn bool(&mut self, f: &Field) -> Option<bool> {
        match f.value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.mismatch(f, "a boolean (true or false)");
                None
            }
        }
    }

    /// An integer in `min..=max`.
    pub(super) fn uint(&mut self, f: &Field, min: u64, max: u64) -> Option<u64> {
        let DeValue::Integer(i) = f.value.get_ref() else {
            self.mismatch(f, "an integer");
            return None;
        };
        let Ok(v) = i64::from_str_radix(i.as_str(), i.radix()) else {
            self.reject(
                f,
                format!("{i} is too large; the largest integer is {}", i64::MAX),
            );
            return None;
        };
        let reason = match u64::try_from(v) {
            Err(_) if min == 0 => "must not be negative".to_string(),
            Ok(v) if v >= min && v <= max => return Some(v),
            Ok(v) if v > max => format!("must be at most {max}"),
            _ => format!("must be at least {min}"),
        };
        self.reject(f, reason);
        None
    }

    /// A count (`usize`), 0 or more.
    pub(super) fn count(&mut self, f: &Field) -> Option<usize> {
        usize::try_from(self.uint(f, 0, usize::MAX as u64)?).ok()
    }

    /// A count (`usize`), 1 or more.
    pub(super) fn positive_count(&mut self, f: &Field) -> Option<usize> {
        usize::try_from(self.uint(f, 1, usize::MAX as u64)?).ok()
    }

    /// A size in bytes, 0 or more.
    pub(super) fn bytes(&mut self, f: &Field) -> Option<u64> {
        self.uint(f, 0, u64::MAX)
    }

    pub(super) fn header_size(&mut self, f: &Field) -> Option<usize> {
        usize::try_from(self.uint(f, MIN_HEADER_SIZE, MAX_HEADER_SIZE)?).ok()
    }

    /// A rate per minute, within `u32`.
    /// Requests per minute: 0 (unlimited) to the limiter's largest count.
    pub(super) fn per_min(&mut self, f: &Field) -> Option<u32> {
        u32::try_from(self.uint(f, 0, crate::limiter::MAX_COUNT)?).ok()
    }

    /// Whole seconds, 1 to [`MAX_SECS`] (a day: longer is a mistake, and deadlines computed
    /// from absurd values would overflow).
    pub(super) fn secs(&mut self, f: &Field) -> Option<Duration> {
        self.uint(f, 1, MAX_SECS).map(Duration::from_secs)
    }

    /// Whole milliseconds, 1 to a day.
    pub(super) fn millis(&mut self, f: &Field) -> Option<Duration> {
        self.uint(f, 1, MAX_SECS * 1000).map(Duration::from_millis)
    }

    /// A user or group name: a non-empty string.
    pub(super) fn name(&mut self, f: &Field) -> Option<String> {
        let s = self.str(f)?;
        if s.is_empty() {
            self.reject(
                f,
                "must not be empty; remove the key to keep the current user",
            );
            return None;
        }
        Some(s.to_string())
    }

    /// A user name that exists in the password database.
    pub(super) fn user(&mut self, f: &Field) -> Option<String> {
        let name = self.name(f)?;
        match crate::privileges::user(&name) {
            Ok(_) => Some(name),
            Err(reason) => {
                self.reject(f, reason);
                None
            }
        }
    }

    /// A group name that exists in the group database.
    pub(super) fn group(&mut self, f: &Field) -> Option<String> {
        let name = self.name(f)?;
        match crate::privileges::group(&name) {
            Ok(_) => Some(name),
            Err(reason) => {
                self.reject(f, reason);
                None
            }
        }
    }

    /// A path, resolved against the config's directory and made absolute.
    pub(super) fn path(&mut self, f: &Field) -> Option<PathBuf> {
        let raw = self.str(f)?;
        if raw.is_empty() {
            self.reject(f, "must not be empty");
            return None;
        }
        let joined = self.dir.join(raw);
        Some(std::path::absolute(&joined).unwrap_or(joined))
    }

    pub(super) fn socket_addr(&mut self, f: &Field) -> Option<SocketAddr> {
        let s = self.str(f)?;
        let addr = s.parse().ok();
        if addr.is_none() {
            let reason = format!(
                "{s:?} is not an IP address with a port, e.g. \"0.0.0.0:443\" or \"[::]:443\""
            );
            self.reject(f, reason);
        }
        addr
    }

    /// An array, each element checked by the caller's `item`.
    pub(super) fn array<'t, 'i>(&mut self, f: &Field<'t, 'i>) -> Option<Vec<Field<'t, 'i>>> {
        let DeValue::Array(items) = f.value.get_ref() else {
            self.mismatch(f, "an array of strings");
            return None;
        };
        Some(
            items
                .iter()
                .enumerate()
                .map(|(i, value)| Field {
                    value,
                    path: format!("{}[{i}]", f.path),
                })
                .collect(),
        )
    }

    /// `allowed_methods`: `Some` set of at least one method.
    pub(super) fn methods(&mut self, f: &Field) -> Option<Option<MethodSet>> {
        let items = self.array(f)?;
        if items.is_empty() {
            self.reject(f, "allows no method; remove the key to allow all");
            return None;
        }
        let mut set = MethodSet::default();
        let mut ok = true;
        for item in &items {
            let Some(s) = self.str(item) else {
                ok = false;
                continue;
            };
            match Method::parse(s) {
                Some(Method::Other(_))
                    if !matches!(
                        Method::parse(&s.to_ascii_uppercase()),
                        Some(Method::Other(_))
                    ) =>
                {
                    let upper = s.to_ascii_uppercase();
                    self.reject(
                        item,
                        format!("{s:?}: methods are case-sensitive; write {upper:?}"),
                    );
                    ok = false;
                }
                Some(m) => set.insert(m),
                None => {
                    let reason = format!("{s:?} is not a method name; expected e.g. \"GET\"");
                    self.reject(item, reason);
                    ok = false;
                }
            }
        }
        ok.then_some(Some(set))
    }

    /// `allowed_upgrades`: protocol tokens, lower-cased; `h2c` is refused.
    pub(super) fn upgrades(&mut self, f: &Field) -> Option<Vec<String>> {
        let items = self.array(f)?;
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in &items {
            let Some(s) = self.str(item) else {
                ok = false;
                continue;
            };
            let token = s.to_ascii_lowercase();
            let name = token.split('/').next().unwrap_or_default();
            if name == "h2c" {
                self.reject(
                    item,
                    "h2c is never forwarded: an h2c upgrade would hand the connection to the \
                     upstream past every later request's routing and policy (RFC 9113 removed \
                     it); remove it",
                );
                ok = false;
            } else if token.is_empty() || !token.bytes().all(|b| b == b'/' || is_tchar(b)) {
                self.reject(
                    item,
                    format!("{s:?} is not a protocol name, e.g. \"websocket\""),
                );
                ok = false;
            } else {
                out.push(token);
            }
        }
        ok.then_some(out)
    }

    pub(super) fn ip_set(&mut self, f: &Field) -> Option<IpSet> {
        let items = self.array(f)?;
        let mut nets = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in &items {
            match self.str(item).map(parse_net) {
                Some(Ok(net)) => nets.push(net),
                Some(Err(reason)) => {
                    self.reject(item, reason);
                    ok = false;
                }
                None => ok = false,
            }
        }
        ok.then(|| IpSet::new(nets))
    }

    // ---- errors ----

    pub(super) fn mismatch(&mut self, f: &Field, expected: &str) {
        let found = a(f.value.get_ref().type_str());
        self.reject(f, format!("expected {expected}, found {found}"));
    }

    /// An error at the start of `f`'s value.
    pub(super) fn reject(&mut self, f: &Field, reason: impl Into<String>) {
        self.push(f.at(), &f.path, reason);
    }

    pub(super) fn push(&mut self, at: usize, key_path: &str, reason: impl Into<String>) {
        let e = self.error(at, key_path.to_string(), reason.into());
        self.errors.push(e);
    }

    pub(super) fn error(&self, at: usize, key_path: String, reason: String) -> ConfigError {
        let (line, column) = line_column(self.text, at);
        ConfigError {
            file: self.file.clone(),
            line,
            column,
            key_path,
            reason,
        }
    }
}

/// 1-based line and column (in characters) of byte offset `at`.
pub(super) fn line_column(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    (line, before[line_start..].chars().count() + 1)
}
/// `parent.key`, quoting `key` unless it is a bare TOML key.
pub(super) fn join(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_string()
    } else {
        let mut quoted = String::with_capacity(key.len() + 2);
        quoted.push('"');
        for c in key.chars() {
            match c {
                '"' => quoted.push_str("\\\""),
                '\\' => quoted.push_str("\\\\"),
                c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", u32::from(c))),
                c => quoted.push(c),
            }
        }
        quoted.push('"');
        quoted
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}
/// A type name with its article: `an integer`, `a string`.
pub(super) fn a(type_name: &str) -> String {
    if type_name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        format!("an {type_name}")
    } else {
        format!("a {type_name}")
    }
}
/// The value named `name` in `options`.
pub(super) fn named<T: Copy>(options: &[(&str, T)], name: &str) -> Option<T> {
    options.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

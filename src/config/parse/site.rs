//! The keys a site needs on its routes: `headers` and `request_headers`, error pages,
//! compression, a File route's `fallback`, `precompressed` and `autoindex`, the `Redirect` and
//! `Respond` route types, and `[host_defaults."host"]`.

use std::sync::Arc;

use super::*;
use crate::config::{
    ErrorPage, ErrorPages, FileSite, HeaderRules, HostDefaults, Levels, RedirectBackend,
    RespondBackend, RouteSite, StatusKey,
};
use crate::http::encoding::Encoding;
use crate::http::redirect::UrlTemplate;

/// The keys of each route type's backend; a key of another type is an error that names it.
#[rustfmt::skip]
pub(super) const BACKEND_KEYS: &[(&str, &[&str])] = &[
    ("File", &["path", "mode", "index", "fallback", "fallback_status", "precompressed",
               "autoindex", "autoindex_hidden"]),
    ("Proxy", &["url", "upstream", "upstream_path", "preserve_host", "ca_file",
                "tls_server_name", "upstream_protocol", "request_headers", "intercept_errors"]),
    ("Redirect", &["url", "status"]),
    ("Respond", &["status", "body", "content_type"]),
];
/// The keys any route takes.
#[rustfmt::skip]
pub(super) const SITE_KEYS: &[&str] = &[
    "headers", "headers_on_errors", "error_pages", "compress", "compress_min_size",
    "compress_types", "compress_level",
];
const HOST_DEFAULTS_KEYS: &[&str] = &["headers", "headers_on_errors", "error_pages"];
const HEADER_RULE_KEYS: &[&str] = &["set", "add", "remove"];
const LEVEL_KEYS: &[&str] = &["gzip", "br", "zstd"];
const REDIRECT_STATUSES: &[u16] = &[301, 302, 303, 307, 308];

/// Fields no rule may touch: the framing and the connection are the protocol's.
pub(super) const UNTOUCHABLE: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
];

impl Walker<'_> {
    /// An error for each key of `node` that belongs to another route type than `kind`.
    pub(super) fn foreign_keys(&mut self, node: &Node, kind: &str) {
        let own: &[&str] = BACKEND_KEYS
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(&[], |(_, keys)| keys);
        for (key, _) in node.table.iter() {
            let name: &str = key.get_ref();
            if own.contains(&name) {
                continue;
            }
            let owners: Vec<&str> = BACKEND_KEYS
                .iter()
                .filter(|(_, keys)| keys.contains(&name))
                .map(|(k, _)| *k)
                .collect();
            let Some(first) = owners.first() else {
                continue;
            };
            let reason = format!(
                "`{name}` belongs to {} routes; remove it, or set type = \"{first}\"",
                owners.join(" and ")
            );
            self.push(key.span().start, &join(&node.path, name), reason);
        }
    }

    /// The site keys of a route.
    pub(super) fn route_site(&mut self, node: &Node, proxy: bool) -> Option<RouteSite> {
        let mut site = RouteSite::default();
        let mut ok = true;
        if let Some(f) = node.field("headers") {
            ok &= set_some(&mut site.headers, self.header_rules(&f, false));
        }
        if let (true, Some(f)) = (proxy, node.field("request_headers")) {
            ok &= set_some(&mut site.request_headers, self.header_rules(&f, true));
        }
        site.headers_on_errors = self.opt(node, "headers_on_errors", Self::bool);
        if let Some(f) = node.field("error_pages") {
            ok &= set_some(&mut site.error_pages, self.error_pages(&f));
        }
        if proxy {
            let intercept = &mut site.intercept_errors;
            self.set(node, "intercept_errors", intercept, Self::bool);
        }
        let c = &mut site.compress;
        if let Some(f) = node.field("compress") {
            ok &= set_some(&mut c.encodings, self.encodings(&f));
        }
        self.set(node, "compress_min_size", &mut c.min_size, Self::bytes);
        if let Some(f) = node.field("compress_types") {
            ok &= set_some(&mut c.types, self.media_types(&f));
        }
        if let Some(f) = node.field("compress_level") {
            ok &= set_some(&mut c.levels, self.levels(&f));
        }
        ok.then_some(site)
    }

    /// A File route's site keys; `dir`: the route serves a directory.
    pub(super) fn file_site(&mut self, node: &Node, dir: bool) -> Option<FileSite> {
        let mut site = FileSite {
            fallback_status: defaults::FALLBACK_STATUS,
            ..FileSite::default()
        };
        let mut ok = true;
        if let Some(f) = node.field("fallback") {
            if !dir {
                self.reject(
                    &f,
                    "`fallback` is for directory routes; this route serves one file",
                );
                ok = false;
            } else {
                site.fallback = self.relative_file(&f);
                ok &= site.fallback.is_some();
            }
        }
        if let Some(f) = node.field("fallback_status") {
            match self.uint(&f, 200, 599) {
                Some(s) if s == 200 || s >= 400 => site.fallback_status = s as u16,
                Some(s) => {
                    let reason = format!(
                        "{s}: the fallback file is sent with 200 or an error status (400-599), \
                         e.g. 404 for a not-found page"
                    );
                    self.reject(&f, reason);
                    ok = false;
                }
                None => ok = false,
            }
        }
        if let Some(f) = node.field("precompressed") {
            ok &= set_some(&mut site.precompressed, self.encodings(&f));
        }
        self.set(node, "autoindex", &mut site.autoindex, Self::bool);
        let hidden = &mut site.autoindex_hidden;
        self.set(node, "autoindex_hidden", hidden, Self::bool);
        ok.then_some(site)
    }

    /// `type = "Redirect"`.
    pub(super) fn redirect_backend(&mut self, node: &Node) -> Option<Backend> {
        let Some(f) = node.field("url") else {
            let hint =
                "a Redirect route says where, e.g. url = \"https://{host}/new/{rest}{query}\"";
            self.missing(node, "url", hint);
            return None;
        };
        let url = match UrlTemplate::parse(self.str(&f)?) {
            Ok(t) => t,
            Err(reason) => {
                self.reject(&f, reason);
                return None;
            }
        };
        let mut status = defaults::REDIRECT_STATUS;
        if let Some(f) = node.field("status") {
            let s = self.uint(&f, 0, 999)? as u16;
            if !REDIRECT_STATUSES.contains(&s) {
                self.reject(
                    &f,
                    format!("{s} is not a redirect; expected 301, 302, 303, 307 or 308"),
                );
                return None;
            }
            status = s;
        }
        Some(Backend::Redirect(RedirectBackend { url, status }))
    }

    /// `type = "Respond"`.
    pub(super) fn respond_backend(&mut self, node: &Node) -> Option<Backend> {
        let mut status = 200;
        if let Some(f) = node.field("status") {
            status = self.uint(&f, 200, 599)? as u16;
        }
        let body = match node.field("body") {
            None => String::new(),
            Some(f) => self.str(&f)?.to_string(),
        };
        if !body.is_empty() && matches!(status, 204 | 304) {
            if let Some(f) = node.field("body") {
                self.reject(
                    &f,
                    format!("a {status} response has no body; remove `body`"),
                );
            }
            return None;
        }
        let content_type = match node.field("content_type") {
            None => defaults::RESPOND_CONTENT_TYPE.to_string(),
            Some(f) => {
                let v = self.str(&f)?;
                if let Some(reason) = bad_value(v).or_else(|| {
                    (!v.contains('/')).then(|| "expected a media type, e.g. \"text/html\"".into())
                }) {
                    self.reject(&f, reason);
                    return None;
                }
                v.to_string()
            }
        };
        Some(Backend::Respond(RespondBackend {
            status,
            body,
            content_type,
        }))
    }

    /// `[host_defaults."host"]`.
    pub(super) fn host_defaults(&mut self, root: &Node) -> Vec<HostDefaults> {
        let mut out = Vec::new();
        let Some(node) = self.section(root, "host_defaults") else {
            return out;
        };
        let mut seen = HashMap::new();
        for e in node.entries() {
            let host = self.host(&e, &mut seen);
            let hint = "host defaults are written [host_defaults.\"example.com\"]";
            let Some(table) = self.route_table(&e.field, hint) else {
                continue;
            };
            self.check_keys(&table, &[HOST_DEFAULTS_KEYS]);
            let headers = match table.field("headers") {
                None => Some(HeaderRules::default()),
                Some(f) => self.header_rules(&f, false),
            };
            let error_pages = match table.field("error_pages") {
                None => Some(ErrorPages::default()),
                Some(f) => self.error_pages(&f),
            };
            let mut headers_on_errors = true;
            self.set(
                &table,
                "headers_on_errors",
                &mut headers_on_errors,
                Self::bool,
            );
            if let (Some(host), Some(headers), Some(error_pages)) = (host, headers, error_pages) {
                out.push(HostDefaults {
                    host,
                    headers,
                    headers_on_errors,
                    error_pages,
                    origin: self.origin(&e),
                });
            }
        }
        out
    }

    /// `headers` or `request_headers`.
    fn header_rules(&mut self, f: &Field, request: bool) -> Option<HeaderRules> {
        let hint =
            "e.g. headers = { set = { \"X-Frame-Options\" = \"DENY\" }, remove = [\"Server\"] }";
        let node = self.route_table(f, hint)?;
        self.check_keys(&node, &[HEADER_RULE_KEYS]);
        let mut rules = HeaderRules::default();
        let mut ok = true;
        let mut seen: HashMap<String, String> = HashMap::new();
        for (key, list) in [("set", 0), ("add", 1)] {
            let Some(t) = node.field(key) else { continue };
            let Some(t) = self.route_table(&t, hint) else {
                ok = false;
                continue;
            };
            for e in t.entries() {
                let name = self.header_name(e.key, e.key_at, &e.field.path, request, &mut seen);
                let values: Vec<Field> = match (list, e.field.value.get_ref()) {
                    (1, DeValue::Array(_)) => self.array(&e.field).unwrap_or_default(),
                    _ => vec![Field {
                        value: e.field.value,
                        path: e.field.path.clone(),
                    }],
                };
                for v in values {
                    let value = self.header_value(&v);
                    if let (Some(name), Some(value)) = (&name, value) {
                        let to = if list == 0 {
                            &mut rules.set
                        } else {
                            &mut rules.add
                        };
                        to.push((name.clone(), value));
                    } else {
                        ok = false;
                    }
                }
            }
        }
        if let Some(r) = node.field("remove") {
            for item in self.array(&r).unwrap_or_default() {
                let Some(s) = self.str(&item) else {
                    ok = false;
                    continue;
                };
                match self.header_name(s, item.at(), &item.path, request, &mut seen) {
                    Some(n) => rules.remove.push(n),
                    None => ok = false,
                }
            }
        }
        ok.then_some(rules)
    }

    /// A field name of a rule: a token, not framing or hop-by-hop, not named twice in one
    /// rule table.
    fn header_name(
        &mut self,
        name: &str,
        at: usize,
        path: &str,
        request: bool,
        seen: &mut HashMap<String, String>,
    ) -> Option<String> {
        let lower = name.to_ascii_lowercase();
        let problem = if name.is_empty() || !name.bytes().all(is_tchar) {
            Some(format!(
                "{name:?} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)"
            ))
        } else if UNTOUCHABLE.contains(&lower.as_str()) {
            Some(format!(
                "{name:?} cannot be set or removed: the daemon writes the framing and \
                 connection fields itself"
            ))
        } else if request && lower == "host" {
            Some("\"Host\" is set by the route's preserve_host; remove this rule".into())
        } else {
            seen.get(&lower).map(|first| {
                format!("{name:?} is named twice (as {first:?} too); one rule per header name")
            })
        };
        if let Some(reason) = problem {
            self.push(at, path, reason);
            return None;
        }
        seen.insert(lower, name.to_string());
        Some(name.to_string())
    }

    fn header_value(&mut self, f: &Field) -> Option<String> {
        let v = self.str(f)?;
        if let Some(reason) = bad_value(v) {
            self.reject(f, reason);
            return None;
        }
        Some(v.trim().to_string())
    }

    /// `error_pages = { "404" = "errors/404.html", "5xx" = "errors/50x.html" }`: each file is
    /// read now, within [`defaults::ERROR_PAGE_CAP`].
    fn error_pages(&mut self, f: &Field) -> Option<ErrorPages> {
        let hint =
            "e.g. error_pages = { \"404\" = \"errors/404.html\", \"5xx\" = \"errors/50x.html\" }";
        let node = self.route_table(f, hint)?;
        let mut pages = Vec::new();
        let mut ok = true;
        for e in node.entries() {
            let key = match e.key.as_bytes() {
                [c @ b'4'..=b'5', b'x', b'x'] => Some(StatusKey::Class(u16::from(c - b'0'))),
                [b'4'..=b'5', b'0'..=b'9', b'0'..=b'9'] => e.key.parse().ok().map(StatusKey::Code),
                _ => None,
            };
            let Some(key) = key else {
                let reason = format!(
                    "{:?} is not an error status: expected a code from 400 to 599 (\"404\") or \
                     a class (\"4xx\", \"5xx\")",
                    e.key
                );
                self.push(e.key_at, &e.field.path, reason);
                ok = false;
                continue;
            };
            let Some(path) = self.path(&e.field) else {
                ok = false;
                continue;
            };
            let raw = self.str(&e.field).unwrap_or_default();
            match crate::fsread::read(&path, defaults::ERROR_PAGE_CAP) {
                Ok(body) => pages.push(ErrorPage {
                    key,
                    content_type: mime_guess::from_path(&path)
                        .first_raw()
                        .unwrap_or("text/html"),
                    path,
                    body: Arc::from(body),
                }),
                Err(why) => {
                    let reason =
                        format!("the error page {path:?} {why}{}", self.resolved_from(raw));
                    self.reject(&e.field, reason);
                    ok = false;
                }
            }
        }
        ok.then_some(ErrorPages(pages))
    }

    /// `compress` or `precompressed`: coding names, each once.
    fn encodings(&mut self, f: &Field) -> Option<Vec<Encoding>> {
        let mut out = Vec::new();
        let mut ok = true;
        for item in self.array(f)? {
            match self.choice(&item, "encoding", &Encoding::ALL, false) {
                Some(e) if out.contains(&e) => {
                    self.reject(&item, format!("{:?} is listed twice", e.token()));
                    ok = false;
                }
                Some(e) => out.push(e),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// `compress_types`: `type/subtype` or `type/*`, lower-cased.
    fn media_types(&mut self, f: &Field) -> Option<Vec<String>> {
        let mut out = Vec::new();
        let mut ok = true;
        for item in self.array(f)? {
            let Some(s) = self.str(&item) else {
                ok = false;
                continue;
            };
            let valid = s.split_once('/').is_some_and(|(t, sub)| {
                !t.is_empty()
                    && !sub.is_empty()
                    && t.bytes().all(is_tchar)
                    && (sub == "*" || sub.bytes().all(is_tchar))
            });
            if valid {
                out.push(s.to_ascii_lowercase());
            } else {
                let reason = format!(
                    "{s:?} is not a media type; expected e.g. \"text/*\" or \"application/json\""
                );
                self.reject(&item, reason);
                ok = false;
            }
        }
        ok.then_some(out)
    }

    /// `compress_level = { gzip = 6, br = 4, zstd = 3 }`.
    fn levels(&mut self, f: &Field) -> Option<Levels> {
        let node = self.route_table(f, "e.g. compress_level = { gzip = 6, br = 4, zstd = 3 }")?;
        self.check_keys(&node, &[LEVEL_KEYS]);
        let mut levels = Levels::default();
        self.set(&node, "gzip", &mut levels.gzip, |w, f| {
            w.uint(f, 1, 9).map(|v| v as u32)
        });
        self.set(&node, "br", &mut levels.br, |w, f| {
            w.uint(f, 0, 11).map(|v| v as u32)
        });
        self.set(&node, "zstd", &mut levels.zstd, |w, f| {
            w.uint(f, 1, 19).map(|v| v as i32)
        });
        Some(levels)
    }

    /// A file below a route's root, named relative to it (`fallback`).
    fn relative_file(&mut self, f: &Field) -> Option<String> {
        let s = self.str(f)?;
        let bad = s.is_empty()
            || s.starts_with('/')
            || s.contains('\0')
            || s.contains('\\')
            || s.split('/')
                .any(|seg| seg.is_empty() || seg == "." || seg == "..");
        if bad {
            let reason = format!(
                "{s:?}: a fallback is a file below the route's root, named relative to it, \
                 e.g. \"index.html\""
            );
            self.reject(f, reason);
            return None;
        }
        Some(s.to_string())
    }
}

/// Stores `v` when there is one; whether there was.
fn set_some<T>(slot: &mut T, v: Option<T>) -> bool {
    match v {
        Some(v) => {
            *slot = v;
            true
        }
        None => false,
    }
}

/// Why `v` cannot be a header value, if it cannot: CR, LF, NUL and other control characters
/// (a tab is fine) would split or corrupt the head.
fn bad_value(v: &str) -> Option<String> {
    v.chars()
        .find(|&c| c.is_control() && c != '\t')
        .map(|c| format!("a header value must not contain {c:?}"))
}

//! What a site needs from its routes besides a backend: header rules, error pages and
//! compression on any route, the defaults a host gives its routes (`[host_defaults."host"]`),
//! and the two backends that answer without a file or an upstream (`Redirect`, `Respond`).

use std::path::PathBuf;
use std::sync::Arc;

use super::Origin;
use crate::http::encoding::Encoding;
use crate::http::redirect::UrlTemplate;

/// `headers` or `request_headers`: `set` replaces every field of a name, `add` appends one
/// more, `remove` deletes. Names are valid tokens, values hold no CR, LF or NUL, and no rule
/// touches framing or hop-by-hop fields (checked at load).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderRules {
    pub set: Vec<(String, String)>,
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

impl HeaderRules {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Whether a rule names `name` (case-insensitive).
    pub fn names(&self, name: &str) -> bool {
        let is = |n: &String| n.eq_ignore_ascii_case(name);
        self.set.iter().any(|(n, _)| is(n))
            || self.add.iter().any(|(n, _)| is(n))
            || self.remove.iter().any(is)
    }

    /// These rules over a host's: a name this route's rules mention takes only this route's
    /// rules for it; the host's rules for other names stay.
    pub fn over(&self, host: &HeaderRules) -> HeaderRules {
        let keep = |n: &str| !self.names(n);
        let mut out = host.clone();
        out.set.retain(|(n, _)| keep(n));
        out.add.retain(|(n, _)| keep(n));
        out.remove.retain(|n| keep(n));
        out.set.extend(self.set.iter().cloned());
        out.add.extend(self.add.iter().cloned());
        out.remove.extend(self.remove.iter().cloned());
        out
    }
}

/// Which responses an error page is for: `"404"`, or a class such as `"5xx"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusKey {
    Code(u16),
    /// The first digit: `5` for `5xx`.
    Class(u16),
}

impl StatusKey {
    pub fn matches(self, status: u16) -> bool {
        match self {
            Self::Code(c) => c == status,
            Self::Class(c) => status / 100 == c,
        }
    }
}

impl std::fmt::Display for StatusKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Code(c) => write!(f, "{c}"),
            Self::Class(c) => write!(f, "{c}xx"),
        }
    }
}

/// One error page, read when the config loads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorPage {
    pub key: StatusKey,
    pub path: PathBuf,
    pub body: Arc<[u8]>,
    /// From the file's extension.
    pub content_type: &'static str,
}

/// `error_pages`: an exact status wins over its class.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorPages(pub Vec<ErrorPage>);

impl ErrorPages {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The page for `status`, if any.
    pub fn for_status(&self, status: u16) -> Option<&ErrorPage> {
        let exact = self.0.iter().find(|p| p.key == StatusKey::Code(status));
        exact.or_else(|| self.0.iter().find(|p| p.key.matches(status)))
    }
}

/// `compress`, `compress_min_size`, `compress_types` and `compress_level`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compress {
    /// In the server's order of preference; empty = no compression (the default).
    pub encodings: Vec<Encoding>,
    /// Bodies known to be shorter are sent as they are. Default 1 KiB.
    pub min_size: u64,
    /// Media types compressed (`text/*` covers every `text/` type), lower-case.
    pub types: Vec<String>,
    pub levels: Levels,
}

impl Default for Compress {
    fn default() -> Self {
        Self {
            encodings: Vec::new(),
            min_size: super::defaults::COMPRESS_MIN_SIZE,
            types: super::defaults::COMPRESS_TYPES
                .iter()
                .map(|t| t.to_string())
                .collect(),
            levels: Levels::default(),
        }
    }
}

impl Compress {
    /// Whether responses of `content_type` (a `Content-Type` value) are compressed.
    pub fn type_matches(&self, content_type: &[u8]) -> bool {
        let essence = content_type
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        // A stream of events must reach the client as it is written.
        if essence.eq_ignore_ascii_case(b"text/event-stream") {
            return false;
        }
        self.types.iter().any(|t| match t.strip_suffix("/*") {
            Some(top) => {
                essence.len() > top.len() + 1
                    && essence[..top.len()].eq_ignore_ascii_case(top.as_bytes())
                    && essence[top.len()] == b'/'
            }
            None => essence.eq_ignore_ascii_case(t.as_bytes()),
        })
    }
}

/// `compress_level`: gzip 1–9 (default 6), br 0–11 (default 4), zstd 1–19 (default 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Levels {
    pub gzip: u32,
    pub br: u32,
    pub zstd: i32,
}

impl Default for Levels {
    fn default() -> Self {
        Self {
            gzip: 6,
            br: 4,
            zstd: 3,
        }
    }
}

/// The keys of a route that shape its responses, whatever its backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteSite {
    /// `headers`: on the route's responses.
    pub headers: HeaderRules,
    /// `request_headers`: on the requests a Proxy route sends.
    pub request_headers: HeaderRules,
    /// `headers_on_errors`: `headers` also on the responses the daemon makes itself (404,
    /// 502…). Unset: the host's, else true.
    pub headers_on_errors: Option<bool>,
    pub error_pages: ErrorPages,
    /// `intercept_errors`: a Proxy route's upstream error responses are replaced by the error
    /// page for their status. Default false.
    pub intercept_errors: bool,
    pub compress: Compress,
}

/// `[host_defaults."host"]`: `headers` and `error_pages` for every route of a host (a route's
/// own entry for a name or status wins), and for the host's requests no route takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostDefaults {
    /// Lower-case, no port.
    pub host: String,
    pub headers: HeaderRules,
    pub headers_on_errors: bool,
    pub error_pages: ErrorPages,
    pub origin: Origin,
}

/// `type = "Redirect"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedirectBackend {
    pub url: UrlTemplate,
    /// 301, 302, 303, 307 or 308; default 308.
    pub status: u16,
}

/// `type = "Respond"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RespondBackend {
    /// 100–599 except the 1xx codes; default 200.
    pub status: u16,
    /// Default empty.
    pub body: String,
    /// Default `text/plain; charset=utf-8` when there is a body.
    pub content_type: String,
}

/// A File route's keys for sites: `fallback`, `precompressed`, `autoindex`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileSite {
    /// `fallback`: a file below the route's root served for paths that do not exist.
    pub fallback: Option<String>,
    /// `fallback_status`: default 200.
    pub fallback_status: u16,
    /// `precompressed`: variants (`x.css.br`…) served when the client accepts them, in the
    /// server's order of preference.
    pub precompressed: Vec<Encoding>,
    /// `autoindex`: an HTML (or JSON) listing of a directory without an index file.
    pub autoindex: bool,
    /// `autoindex_hidden`: the listing shows dotfiles.
    pub autoindex_hidden: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(set: &[(&str, &str)], remove: &[&str]) -> HeaderRules {
        HeaderRules {
            set: set
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            add: Vec::new(),
            remove: remove.iter().map(|n| n.to_string()).collect(),
        }
    }

    #[test]
    fn a_route_rule_wins_over_its_hosts_for_that_name() {
        let host = rules(&[("X-Frame-Options", "DENY"), ("X-A", "host")], &["Server"]);
        let route = rules(&[("x-a", "route")], &["x-frame-options"]);
        let merged = route.over(&host);
        assert_eq!(
            merged.set,
            vec![("x-a".to_string(), "route".to_string())],
            "{merged:?}"
        );
        assert_eq!(merged.remove, vec!["Server", "x-frame-options"]);
    }

    #[test]
    fn pages_by_code_then_class() {
        let page = |key| ErrorPage {
            key,
            path: PathBuf::new(),
            body: Arc::from(&b""[..]),
            content_type: "text/html",
        };
        let pages = ErrorPages(vec![page(StatusKey::Class(5)), page(StatusKey::Code(503))]);
        assert_eq!(pages.for_status(503).unwrap().key, StatusKey::Code(503));
        assert_eq!(pages.for_status(502).unwrap().key, StatusKey::Class(5));
        assert!(pages.for_status(404).is_none());
    }

    #[test]
    fn compressible_types() {
        let c = Compress::default();
        assert!(c.type_matches(b"text/html; charset=utf-8"));
        assert!(c.type_matches(b"application/json"));
        assert!(c.type_matches(b"Image/SVG+XML"));
        assert!(!c.type_matches(b"image/png"));
        assert!(!c.type_matches(b"text/event-stream"));
        assert!(!c.type_matches(b"text"));
        assert!(!c.type_matches(b"textual/x"));
    }
}

//! What a route does to its responses besides its backend, at run time: header rules, error
//! pages, on-the-fly compression — compiled once per route when a snapshot is built
//! ([`Site`]), and applied to every response through [`Shaped`], a [`crate::exchange::Downstream`]
//! that wraps the protocol's (so HTTP/1 and HTTP/2 get the same).
//!
//! Order on a response: an intercepted upstream error becomes its error page; the route's
//! `headers` rules apply (`remove` and `set` drop the fields they name, then `set` and `add`
//! append theirs); then the body may be compressed. A response the daemon makes itself (a
//! 404, a 502…) gets its error page and, with `headers_on_errors`, the same rules, in
//! [`Site::error_head`].

mod compress;
mod shaped;

pub use compress::{compress_all, Encoder};
pub use shaped::Shaped;

use crate::config::{Compress, ErrorPage, ErrorPages, HeaderRules, HostDefaults, Route};
use crate::http::response::ResponseHead;

/// A route's (or a host's) response rules, compiled.
#[derive(Debug, Default)]
pub struct Site {
    /// Lower-case names whose fields are dropped (those of `set` and `remove`).
    drop: Vec<String>,
    /// Their bits in a head's name filter.
    drop_mask: u64,
    /// `Name: value\r\n` lines appended: `set`'s, then `add`'s.
    lines: Vec<u8>,
    pub headers_on_errors: bool,
    /// The route's own error pages, then its host's: a route's page for a status or class
    /// wins over any of the host's.
    pub error_pages: ErrorPages,
    host_pages: ErrorPages,
    pub intercept_errors: bool,
    /// `compress`, when it names a coding.
    pub compress: Option<Compress>,
    /// Responses vary by `Accept-Encoding` (the route compresses or serves precompressed
    /// files): they say so in `Vary`.
    pub varies: bool,
    /// `request_headers` of a Proxy route.
    pub request_headers: HeaderRules,
}

impl Site {
    /// A route's rules, over its host's defaults.
    pub fn build(route: &Route, host: Option<&HostDefaults>) -> Self {
        let s = &route.site;
        let (headers, host_pages, on_errors) = match host {
            Some(h) => (
                s.headers.over(&h.headers),
                h.error_pages.clone(),
                s.headers_on_errors.unwrap_or(h.headers_on_errors),
            ),
            None => (
                s.headers.clone(),
                ErrorPages::default(),
                s.headers_on_errors.unwrap_or(true),
            ),
        };
        let precompressed = match &route.backend {
            crate::config::Backend::File(f) => !f.site.precompressed.is_empty(),
            _ => false,
        };
        let compress = (!s.compress.encodings.is_empty()).then(|| s.compress.clone());
        let mut site = Self::with_headers(&headers);
        site.headers_on_errors = on_errors;
        site.error_pages = s.error_pages.clone();
        site.host_pages = host_pages;
        site.intercept_errors = s.intercept_errors;
        site.varies = precompressed || compress.is_some();
        site.compress = compress;
        site.request_headers = s.request_headers.clone();
        site
    }

    /// A host's defaults, for its requests that no route takes.
    pub fn for_host(h: &HostDefaults) -> Self {
        let mut site = Self::with_headers(&h.headers);
        site.headers_on_errors = h.headers_on_errors;
        site.error_pages = h.error_pages.clone();
        site
    }

    fn with_headers(rules: &HeaderRules) -> Self {
        let mut drop: Vec<String> = rules
            .set
            .iter()
            .map(|(n, _)| n)
            .chain(&rules.remove)
            .map(|n| n.to_ascii_lowercase())
            .collect();
        drop.dedup();
        let drop_mask = drop
            .iter()
            .fold(0, |m, n| m | crate::http::response::name_bit(n.as_bytes()));
        let mut lines = Vec::new();
        for (n, v) in rules.set.iter().chain(&rules.add) {
            lines.extend_from_slice(n.as_bytes());
            lines.extend_from_slice(b": ");
            lines.extend_from_slice(v.as_bytes());
            lines.extend_from_slice(b"\r\n");
        }
        Self {
            drop,
            drop_mask,
            lines,
            headers_on_errors: true,
            ..Self::default()
        }
    }

    /// The error page for `status`: the route's (exact, then class), else its host's.
    pub fn page(&self, status: u16) -> Option<&ErrorPage> {
        self.error_pages
            .for_status(status)
            .or_else(|| self.host_pages.for_status(status))
    }

    /// Whether responses pass through [`Shaped`] at all.
    pub fn shapes(&self) -> bool {
        self.rewrites()
            || self.varies
            || (self.intercept_errors
                && !(self.error_pages.is_empty() && self.host_pages.is_empty()))
    }

    fn rewrites(&self) -> bool {
        !self.drop.is_empty() || !self.lines.is_empty()
    }

    /// Applies the `headers` rules to a response head.
    pub fn apply_headers(&self, head: &mut ResponseHead) {
        if head.may_hold(self.drop_mask) {
            let drop = &self.drop;
            head.remove_fields(|name| drop.iter().any(|d| name.eq_ignore_ascii_case(d.as_bytes())));
        }
        if !self.lines.is_empty() {
            head.lines(&self.lines);
        }
    }

    /// The head of a response the daemon makes for `status`, and its error page if it has
    /// one: the page's `Content-Type` (else plain text), and with `headers_on_errors` the
    /// route's header rules. The caller adds the status's own fields (`Allow`…) first via
    /// `extra`.
    pub fn error_head(
        site: Option<&Self>,
        status: u16,
        extra: impl FnOnce(&mut ResponseHead),
    ) -> (ResponseHead, Option<&ErrorPage>) {
        let page = site.and_then(|s| s.page(status));
        let mut h = ResponseHead::new(status);
        h.header(
            "Content-Type",
            page.map_or("text/plain; charset=utf-8", |p| p.content_type),
        );
        extra(&mut h);
        if let Some(s) = site.filter(|s| s.headers_on_errors) {
            s.apply_headers(&mut h);
        }
        (h, page)
    }

    /// The header rules as `Name: value` lines after the `remove` ones, for `explain`.
    pub fn describe_headers(&self) -> Vec<String> {
        let mut out: Vec<String> = self.drop.iter().map(|n| format!("-{n}")).collect();
        out.extend(
            String::from_utf8_lossy(&self.lines)
                .split("\r\n")
                .filter(|l| !l.is_empty())
                .map(|l| format!("+{l}")),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_rewrite_a_head() {
        let rules = HeaderRules {
            set: vec![("Cache-Control".into(), "no-store".into())],
            add: vec![("Link".into(), "</a.css>; rel=preload".into())],
            remove: vec!["server".into()],
        };
        let site = Site::with_headers(&rules);
        assert!(site.shapes());
        let mut h = ResponseHead::relayed(
            200,
            "OK",
            b"Server: up\r\ncache-control: max-age=60\r\nLink: </b.js>\r\nX-Keep: 1\r\n",
            u64::MAX,
        );
        site.apply_headers(&mut h);
        let s = String::from_utf8(h.finish().into_vec()).unwrap();
        assert_eq!(
            s,
            "HTTP/1.1 200 OK\r\nLink: </b.js>\r\nX-Keep: 1\r\nCache-Control: no-store\r\n\
             Link: </a.css>; rel=preload\r\n\r\n"
        );
        assert_eq!(
            site.describe_headers(),
            vec![
                "-cache-control",
                "-server",
                "+Cache-Control: no-store",
                "+Link: </a.css>; rel=preload"
            ]
        );
        assert!(!Site::default().shapes());
    }
}

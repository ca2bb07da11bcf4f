//! Redirect targets, escaped so that each is always one valid URI: the `Location` of a
//! listener's `redirect_to_https` ([`https_location`]), and the `url` template of a
//! `type = "Redirect"` route ([`UrlTemplate`], with `{scheme}`, `{host}`, `{path}`, `{rest}`
//! and `{query}`).

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

/// Bytes a URI path or query may not hold as they are (RFC 3986: neither unreserved,
/// sub-delims, `:`, `@`, `/`, `?`, nor `%` of an escape already made): escaped on the way out.
const NOT_IN_URI: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}')
    .add(b'#');

/// `https://host[:port]path[?query]` for a request to `host` (the routing form: lower-case,
/// no port, IPv6 in brackets) with the raw `path` and `query`; the port is left out when it is
/// 443. `None` when `host` is not a plain name or address (it must not bring a user, a port or
/// a path of its own into the URI).
pub fn https_location(host: &str, port: u16, path: &str, query: Option<&str>) -> Option<String> {
    if !valid_host(host) {
        return None;
    }
    let mut out = String::with_capacity(16 + host.len() + path.len());
    out.push_str("https://");
    out.push_str(host);
    if port != 443 {
        out.push(':');
        out.push_str(&port.to_string());
    }
    out.extend(utf8_percent_encode(path, NOT_IN_URI));
    if let Some(q) = query {
        out.push('?');
        out.extend(utf8_percent_encode(q, NOT_IN_URI));
    }
    Some(out)
}

/// A DNS name or IPv4 address (letters, digits, `.`, `-`, `_`), or a bracketed IPv6 literal.
fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// What a decoded path may not hold as it is in a `Location`: [`NOT_IN_URI`], `%` (a decoded
/// path has no escapes of its own) and `?` (it would begin a query).
const NOT_IN_PATH: &AsciiSet = &NOT_IN_URI.add(b'%').add(b'?');

/// A `Location` for a decoded `path` and a raw `query`, each escaped where a URI needs it.
pub fn location(path: &str, query: Option<&str>) -> String {
    let mut out: String = utf8_percent_encode(path, NOT_IN_PATH).collect();
    if let Some(q) = query {
        out.push('?');
        out.extend(utf8_percent_encode(q, NOT_IN_URI));
    }
    out
}

/// A `type = "Redirect"` route's `url`: text with placeholders, parsed once at load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlTemplate {
    parts: Vec<Part>,
    /// As written, for the operator.
    written: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    /// `{scheme}`: `https` or `http`, as the request came.
    Scheme,
    /// `{host}`: the request's host (lower-case, no port).
    Host,
    /// `{path}`: the whole request path, decoded and escaped again.
    Path,
    /// `{rest}`: the path below the route's prefix, without a leading `/`.
    Rest,
    /// `{query}`: `?` and the query, or nothing.
    Query,
}

/// The request a redirect is rendered for.
#[derive(Clone, Copy, Debug)]
pub struct RedirectFrom<'a> {
    pub https: bool,
    /// Routing form: lower-case, no port; `""` when the request named none.
    pub host: &'a str,
    /// The normalised (decoded) path.
    pub path: &'a str,
    /// The normalised path below the route's prefix, no leading `/`.
    pub rest: &'a str,
    /// The raw query, without `?`.
    pub query: Option<&'a str>,
}

impl UrlTemplate {
    /// Parses a template. The error says what is wrong, for the operator.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("an empty url; e.g. \"https://{host}/new/{rest}{query}\"".into());
        }
        if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "a url must not contain {c:?}; percent-encode it (e.g. %20 for a space)"
            ));
        }
        let absolute = s.split_once("://").is_some_and(|(scheme, _)| {
            scheme == "{scheme}"
                || (!scheme.is_empty()
                    && scheme
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)))
        });
        if !absolute && !s.starts_with('/') {
            return Err(
                "a redirect url is absolute (\"https://{host}/new/\") or starts with \"/\"".into(),
            );
        }
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = s;
        while let Some(open) = rest.find(['{', '}']) {
            text.push_str(&rest[..open]);
            let after = &rest[open..];
            let Some(close) = after.find('}').filter(|_| after.starts_with('{')) else {
                return Err("a lone \"}\"; placeholders are written {host}".into());
            };
            let part = match &after[1..close] {
                "scheme" => Part::Scheme,
                "host" => Part::Host,
                "path" => Part::Path,
                "rest" => Part::Rest,
                "query" => Part::Query,
                other => {
                    return Err(format!(
                        "unknown placeholder {{{other}}}; expected {{scheme}}, {{host}}, \
                         {{path}}, {{rest}} or {{query}}"
                    ))
                }
            };
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(part);
            rest = &after[close + 1..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Self {
            parts,
            written: s.to_string(),
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.written
    }

    /// The `Location` for a request; `None` when the template needs the host and the request's
    /// is not a plain name or address.
    pub fn render(&self, from: &RedirectFrom<'_>) -> Option<String> {
        let mut out = String::with_capacity(self.written.len() + from.path.len() + 16);
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Scheme => out.push_str(if from.https { "https" } else { "http" }),
                Part::Host if valid_host(from.host) => out.push_str(from.host),
                Part::Host => return None,
                Part::Path => out.extend(utf8_percent_encode(from.path, NOT_IN_PATH)),
                Part::Rest => out.extend(utf8_percent_encode(from.rest, NOT_IN_PATH)),
                Part::Query => {
                    if let Some(q) = from.query {
                        out.push('?');
                        out.extend(utf8_percent_encode(q, NOT_IN_URI));
                    }
                }
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_port_is_left_out() {
        assert_eq!(
            https_location("example.com", 443, "/a/b", Some("x=1&y=%20")).as_deref(),
            Some("https://example.com/a/b?x=1&y=%20")
        );
        assert_eq!(
            https_location("example.com", 8443, "/", None).as_deref(),
            Some("https://example.com:8443/")
        );
        assert_eq!(
            https_location("[::1]", 8443, "/", Some("")).as_deref(),
            Some("https://[::1]:8443/?")
        );
    }

    #[test]
    fn what_a_uri_cannot_hold_is_escaped_and_escapes_stay() {
        assert_eq!(
            https_location("h", 443, "/a b/\"<x>\"/%41/é", Some("q={1}|#")).as_deref(),
            Some("https://h/a%20b/%22%3Cx%3E%22/%41/%C3%A9?q=%7B1%7D%7C%23")
        );
    }

    #[test]
    fn a_host_that_would_change_the_uri_is_refused() {
        for bad in ["evil.com@good", "a/b", "a:80", "", "[zz]", "a b", "a\r\nb"] {
            assert_eq!(https_location(bad, 443, "/", None), None, "{bad:?}");
        }
    }

    #[test]
    fn templates_render_with_escapes() {
        let t = UrlTemplate::parse("https://{host}/new/{rest}{query}").unwrap();
        let from = RedirectFrom {
            https: false,
            host: "example.com",
            path: "/old/a b/100%/x?y",
            rest: "a b/100%/x?y",
            query: Some("q=1&r=<2>"),
        };
        assert_eq!(
            t.render(&from).as_deref(),
            Some("https://example.com/new/a%20b/100%25/x%3Fy?q=1&r=%3C2%3E")
        );
        let no_query = RedirectFrom {
            query: None,
            ..from
        };
        assert_eq!(
            t.render(&no_query).as_deref(),
            Some("https://example.com/new/a%20b/100%25/x%3Fy")
        );
        let t = UrlTemplate::parse("{scheme}://{host}:8443{path}").unwrap();
        assert_eq!(
            t.render(&from).as_deref(),
            Some("http://example.com:8443/old/a%20b/100%25/x%3Fy")
        );
        let evil = RedirectFrom {
            host: "evil.com@good",
            ..from
        };
        assert_eq!(t.render(&evil), None);
        let relative = UrlTemplate::parse("/docs/{rest}").unwrap();
        assert_eq!(
            relative.render(&evil).as_deref(),
            Some("/docs/a%20b/100%25/x%3Fy")
        );
        let crlf = RedirectFrom {
            rest: "a\r\nSet-Cookie: x",
            ..from
        };
        assert_eq!(
            relative.render(&crlf).as_deref(),
            Some("/docs/a%0D%0ASet-Cookie:%20x")
        );
    }

    #[test]
    fn locations_are_escaped() {
        assert_eq!(location("/a b/%/", Some("x=<1>")), "/a%20b/%25/?x=%3C1%3E");
        assert_eq!(location("/sub/", None), "/sub/");
    }

    #[test]
    fn bad_templates_say_why() {
        for (bad, why) in [
            ("", "empty"),
            ("new/{rest}", "absolute"),
            ("https://{host}/{nope}", "unknown placeholder {nope}"),
            ("https://{host/x", "lone"),
            ("https://x/}", "lone"),
            ("https://x/a b", "percent-encode"),
            ("https://x/\r\n", "percent-encode"),
        ] {
            let e = UrlTemplate::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}

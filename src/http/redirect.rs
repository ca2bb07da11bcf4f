//! Redirect targets: the `Location` of a listener's `redirect_to_https`, built from the
//! request's own host, path and query, escaped so that it is always one valid URI.

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
}

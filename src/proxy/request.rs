//! The request head for the upstream: the method and the re-encoded path, `Host` (the routed
//! authority, or the upstream's own), the end-to-end fields without hop-by-hop ones, the
//! daemon's `X-Forwarded-*` and `Forwarded` statements, the body's framing and an allowed
//! `Upgrade` (see the module documentation of [`super`]).

use super::Exchange;
use crate::http::h1::response::{connection_tokens, is_hop_by_hop};
use crate::http::request::{BodyKind, RequestHead};
use crate::http::response::push_decimal;

/// The `Upgrade` value to forward when the client asks to switch protocols (`Connection:
/// upgrade`): the protocols it offers that the route's `allowed_upgrades` lists, in its order
/// (`h2c` never). `None` — a plain request — when it offers none of them.
pub(super) fn upgrade_token(req: &RequestHead, allowed: &[String]) -> Option<Vec<u8>> {
    req.header("upgrade")?;
    let asks = connection_tokens(
        req.headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_slice())),
    )
    .iter()
    .any(|t| t == "upgrade");
    if !asks {
        return None;
    }
    let mut out = Vec::new();
    let offered = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("upgrade"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|p| !p.is_empty());
    for protocol in offered {
        let name = protocol.split(|&b| b == b'/').next().unwrap_or_default();
        let allowed = !name.eq_ignore_ascii_case(b"h2c")
            && allowed.iter().any(|a| {
                // "websocket" allows any version of it; "name/version" that version only.
                let a = a.as_bytes();
                a.eq_ignore_ascii_case(protocol)
                    || (!a.contains(&b'/') && a.eq_ignore_ascii_case(name))
            });
        if allowed {
            if !out.is_empty() {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(protocol);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The request head for the upstream.
/// The request head for the upstream; `server` is the chosen server's `host:port`, the `Host`
/// when the route does not preserve the client's.
pub(super) fn request_head<D>(
    x: &Exchange<'_, D>,
    upgrade: Option<&[u8]>,
    server: &str,
) -> Vec<u8> {
    let req = x.req;
    let named = connection_tokens(
        req.headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_slice())),
    );
    let mut h = Vec::with_capacity(512);
    h.extend_from_slice(req.method.as_str().as_bytes());
    h.push(b' ');
    encode_path(x.path, &mut h);
    if let Some(q) = &req.query {
        h.push(b'?');
        h.extend_from_slice(q.as_bytes());
    }
    h.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    // The authority the request was routed and authorised by: an absolute-form target's wins
    // over the Host header (RFC 9112 §3.2.2), so the upstream cannot be told another host.
    let authority = req.authority.as_deref().unwrap_or_default().as_bytes();
    if x.backend.preserve_host && !authority.is_empty() {
        h.extend_from_slice(authority);
    } else {
        h.extend_from_slice(server.as_bytes());
    }
    h.extend_from_slice(b"\r\n");
    let underscores = x.security.allow_underscores_in_headers;
    let mut xff: Option<Vec<u8>> = None;
    let mut forwarded: Option<Vec<u8>> = None;
    for hd in &req.headers {
        let name = hd.name.as_str();
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if is_hop_by_hop(name)
            || named.iter().any(|t| is(t))
            || is("host")
            || is("expect")
            || is("x-forwarded-proto")
            || is("x-forwarded-host")
            // `X_Forwarded_For` is `HTTP_X_FORWARDED_FOR` to a CGI-style framework, as the
            // real one is (nginx's `underscores_in_headers off`).
            || (!underscores && name.contains('_'))
            // A malformed one could swallow the daemon's own element after it.
            || (is("forwarded") && !crate::security::well_formed_forwarded(&hd.value))
        {
            continue;
        }
        // The chains are passed on as one line each, with the daemon's hop appended.
        let chain = if is("x-forwarded-for") {
            Some(&mut xff)
        } else if is("forwarded") {
            Some(&mut forwarded)
        } else {
            None
        };
        if let Some(chain) = chain {
            let v = chain.get_or_insert_with(Vec::new);
            if !v.is_empty() {
                v.extend_from_slice(b", ");
            }
            v.extend_from_slice(hd.value.trim_ascii());
            continue;
        }
        h.extend_from_slice(name.as_bytes());
        h.extend_from_slice(b": ");
        h.extend_from_slice(&hd.value);
        h.extend_from_slice(b"\r\n");
    }
    let peer = crate::security::canonical(x.peer.ip());
    let proto: &[u8] = if x.tls { b"https" } else { b"http" };
    h.extend_from_slice(b"X-Forwarded-For: ");
    if let Some(v) = xff {
        h.extend_from_slice(&v);
        h.extend_from_slice(b", ");
    }
    {
        use std::io::Write;
        let _ = write!(h, "{peer}");
    }
    h.extend_from_slice(b"\r\nX-Forwarded-Proto: ");
    h.extend_from_slice(proto);
    h.extend_from_slice(b"\r\n");
    if !authority.is_empty() {
        h.extend_from_slice(b"X-Forwarded-Host: ");
        h.extend_from_slice(authority);
        h.extend_from_slice(b"\r\n");
    }
    // RFC 7239: `for` quoted and bracketed for IPv6; `host` quoted unless it is a token.
    h.extend_from_slice(b"Forwarded: ");
    if let Some(v) = forwarded {
        h.extend_from_slice(&v);
        h.extend_from_slice(b", ");
    }
    {
        use std::io::Write;
        let _ = match peer {
            std::net::IpAddr::V4(v4) => write!(h, "for={v4}"),
            std::net::IpAddr::V6(v6) => write!(h, "for=\"[{v6}]\""),
        };
    }
    h.extend_from_slice(b";proto=");
    h.extend_from_slice(proto);
    if !authority.is_empty() {
        h.extend_from_slice(b";host=");
        if authority.iter().all(|&b| crate::http::method::is_tchar(b)) {
            h.extend_from_slice(authority);
        } else {
            // A validated authority holds neither `"` nor `\`.
            h.push(b'"');
            h.extend_from_slice(authority);
            h.push(b'"');
        }
    }
    h.extend_from_slice(b"\r\n");
    match req.body {
        BodyKind::None => {}
        BodyKind::Length(n) => {
            h.extend_from_slice(b"Content-Length: ");
            push_decimal(&mut h, n);
            h.extend_from_slice(b"\r\n");
        }
        BodyKind::Chunked => h.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
    }
    if let Some(token) = upgrade {
        h.extend_from_slice(b"Connection: upgrade\r\nUpgrade: ");
        h.extend_from_slice(token);
        h.extend_from_slice(b"\r\n");
    }
    h.extend_from_slice(b"\r\n");
    h
}

/// Percent-encodes a decoded path for a request line: unreserved characters, sub-delims, `:`,
/// `@` and `/` stay; everything else (including `%`, `?`, `#`, spaces, non-ASCII) is encoded.
fn encode_path(path: &str, out: &mut Vec<u8>) {
    for &b in path.as_bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b);
        if keep {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_reencoded() {
        let enc = |p: &str| {
            let mut v = Vec::new();
            encode_path(p, &mut v);
            String::from_utf8(v).unwrap()
        };
        assert_eq!(enc("/app/v1/users"), "/app/v1/users");
        assert_eq!(enc("/a b"), "/a%20b");
        assert_eq!(enc("/a?b#c"), "/a%3Fb%23c");
        assert_eq!(enc("/%2e%2e"), "/%252e%252e");
        assert_eq!(enc("/é"), "/%C3%A9");
        assert_eq!(enc("/~user/a:b@c"), "/~user/a:b@c");
    }
}

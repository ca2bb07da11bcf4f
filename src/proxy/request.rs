//! The request head for the upstream: the method and the re-encoded path, `Host` (the routed
//! authority, or the upstream's own), the end-to-end fields without hop-by-hop ones, the
//! daemon's `X-Forwarded-*` and `Forwarded` statements, the body's framing and an allowed
//! `Upgrade` (see the module documentation of [`super`]).

use std::io::Write as _;

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

/// The request head for the upstream over HTTP/1.1; `server` is the chosen server's
/// `host:port`, the `Host` when the route does not preserve the client's.
pub(super) fn request_head<D>(
    x: &Exchange<'_, D>,
    upgrade: Option<&[u8]>,
    server: &str,
) -> Vec<u8> {
    let req = x.req;
    let mut h = Vec::with_capacity(512);
    h.extend_from_slice(req.method.as_str().as_bytes());
    h.push(b' ');
    encode_path(x.path, &mut h);
    if let Some(q) = &req.query {
        h.push(b'?');
        h.extend_from_slice(q.as_bytes());
    }
    h.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    h.extend_from_slice(&authority(x, server));
    h.extend_from_slice(b"\r\n");
    fields(x, |name, value| {
        h.extend_from_slice(name.as_bytes());
        h.extend_from_slice(b": ");
        for piece in value {
            h.extend_from_slice(piece);
        }
        h.extend_from_slice(b"\r\n");
    });
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

/// The authority the upstream is asked for (`Host`, or `:authority` over HTTP/2): the
/// client's, as routed, unless the route does not preserve it; then the server's.
pub(super) fn authority<'a, D>(
    x: &'a Exchange<'_, D>,
    server: &'a str,
) -> std::borrow::Cow<'a, [u8]> {
    let client = x.req.authority.as_deref().unwrap_or_default().as_bytes();
    if x.backend.preserve_host && !client.is_empty() {
        client.into()
    } else {
        server.as_bytes().into()
    }
}

/// The path and query the upstream is asked for, re-encoded.
pub(super) fn path_and_query<D>(x: &Exchange<'_, D>) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.path.len() + 16);
    encode_path(x.path, &mut out);
    if let Some(q) = &x.req.query {
        out.push(b'?');
        out.extend_from_slice(q.as_bytes());
    }
    out
}

/// Each end-to-end field the upstream gets, in order, as a name and the pieces of its value:
/// the client's fields without hop-by-hop ones (and those the daemon states itself), then
/// `X-Forwarded-For` (the client's chain and the peer), `X-Forwarded-Proto`,
/// `X-Forwarded-Host` and `Forwarded`. Neither `Host` nor the body's framing: the protocol
/// writing the request adds those.
pub(super) fn fields<D>(x: &Exchange<'_, D>, mut field: impl FnMut(&str, &[&[u8]])) {
    let rules = x.request_headers;
    if rules.is_empty() {
        return client_and_forwarding_fields(x, field);
    }
    // The route's `request_headers`: a name they set or remove is dropped wherever it comes
    // from (the client or the daemon's forwarding fields); then `set` and `add` follow.
    let dropped = |name: &str| {
        rules.set.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
            || rules.remove.iter().any(|n| n.eq_ignore_ascii_case(name))
    };
    client_and_forwarding_fields(x, |name, value| {
        if !dropped(name) {
            field(name, value);
        }
    });
    for (name, value) in rules.set.iter().chain(&rules.add) {
        field(name, &[value.as_bytes()]);
    }
}

/// [`fields`] before the route's `request_headers` rules.
fn client_and_forwarding_fields<D>(x: &Exchange<'_, D>, mut field: impl FnMut(&str, &[&[u8]])) {
    let req = x.req;
    let named = connection_tokens(
        req.headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_slice())),
    );
    let underscores = x.security.allow_underscores_in_headers;
    let mut xff: Option<Vec<u8>> = None;
    let mut forwarded: Option<Vec<u8>> = None;
    for hd in &req.headers {
        let name = hd.name.as_str();
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if is_hop_by_hop(name)
            || x.ids
                .is_some_and(|(ids, header)| ids.replaces(name, header))
            || named.iter().any(|t| is(t))
            || is("host")
            || is("expect")
            || is("x-forwarded-proto")
            || is("x-forwarded-host")
            || (!underscores && name.contains('_'))
            || (is("forwarded") && !crate::security::well_formed_forwarded(&hd.value))
        {
            continue;
        }
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
        field(name, &[&hd.value]);
    }
    if let Some((ids, header)) = x.ids {
        if let (Some(name), Some(id)) = (header, &ids.request_id) {
            let mut buf = [0; 32];
            field(name, &[id.bytes(&mut buf)]);
        }
        if let Some(tp) = ids.traceparent() {
            field("traceparent", &[&tp]);
        }
    }
    let peer = crate::security::canonical(x.peer.ip());
    let mut peer_buf = [0u8; 64];
    let peer_text = ip_text(peer, &mut peer_buf);
    let proto: &[u8] = if x.tls { b"https" } else { b"http" };
    let (chain, sep): (&[u8], &[u8]) = match &xff {
        Some(v) => (v, b", "),
        None => (b"", b""),
    };
    field("X-Forwarded-For", &[chain, sep, peer_text]);
    field("X-Forwarded-Proto", &[proto]);
    let authority = req.authority.as_deref().unwrap_or_default().as_bytes();
    if !authority.is_empty() {
        field("X-Forwarded-Host", &[authority]);
    }
    // `for=1.2.3.4`, or `for="[v6]"` (RFC 7239 §6).
    let (open, close): (&[u8], &[u8]) = match peer {
        std::net::IpAddr::V4(_) => (b"for=", b""),
        std::net::IpAddr::V6(_) => (b"for=\"[", b"]\""),
    };
    let (chain, sep): (&[u8], &[u8]) = match &forwarded {
        Some(v) => (v, b", "),
        None => (b"", b""),
    };
    if authority.is_empty() {
        field(
            "Forwarded",
            &[chain, sep, open, peer_text, close, b";proto=", proto],
        );
    } else {
        // A validated authority holds neither `"` nor `\`.
        let quote: &[u8] = if authority.iter().all(|&b| crate::http::method::is_tchar(b)) {
            b""
        } else {
            b"\""
        };
        field(
            "Forwarded",
            &[
                chain, sep, open, peer_text, close, b";proto=", proto, b";host=", quote, authority,
                quote,
            ],
        );
    }
}

/// `ip` as text in `buf`: an IPv4 address written digit by digit (no formatting machinery on
/// every proxied request), an IPv6 one by its `Display`.
fn ip_text(ip: std::net::IpAddr, buf: &mut [u8; 64]) -> &[u8] {
    let mut at = 0;
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[at] = b'.';
                    at += 1;
                }
                let mut digits = [0; 20];
                let digits = crate::http::response::decimal(u64::from(octet), &mut digits);
                buf[at..at + digits.len()].copy_from_slice(digits);
                at += digits.len();
            }
        }
        std::net::IpAddr::V6(v6) => {
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(cursor, "{v6}");
            at = cursor.position() as usize;
        }
    }
    &buf[..at]
}

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
    fn addresses_as_text() {
        let text = |ip: &str| {
            let mut buf = [0u8; 64];
            String::from_utf8(ip_text(ip.parse().unwrap(), &mut buf).to_vec()).unwrap()
        };
        for ip in [
            "0.0.0.0",
            "10.20.0.255",
            "255.255.255.255",
            "127.0.0.1",
            "::1",
            "2001:db8::a:1",
        ] {
            assert_eq!(text(ip), ip);
        }
        let long = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        assert_eq!(text(long), long, "the longest fits");
    }

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

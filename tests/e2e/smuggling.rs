//! Request smuggling and malformed framing through a Proxy route: for every case the upstream
//! (a real server on loopback) receives exactly the requests the daemon accepted, with exactly
//! the bodies it accepted — and never the request hidden in each attack (`/api/SMUGGLED`).
//! Refused framing gets its status and the connection closes, since where the next request
//! would start is in doubt.

use std::time::Duration;

use crate::common::{Driver, Server, Site};
use crate::upstream::Upstream;

/// One row: the bytes sent on one connection, the statuses answered in order, whether the
/// daemon then closes, and the (target, body) pairs the upstream must have received.
struct Case {
    name: &'static str,
    raw: Vec<u8>,
    statuses: Vec<u16>,
    closes: bool,
    forwarded: Vec<(&'static str, &'static [u8])>,
}

const HIDDEN: &str = "GET /api/SMUGGLED HTTP/1.1\r\nHost: h\r\n\r\n";

fn case(
    name: &'static str,
    raw: String,
    statuses: &[u16],
    closes: bool,
    forwarded: &[(&'static str, &'static [u8])],
) -> Case {
    Case {
        name,
        raw: raw.into_bytes(),
        statuses: statuses.to_vec(),
        closes,
        forwarded: forwarded.to_vec(),
    }
}

fn cases() -> Vec<Case> {
    let post = "POST /api/a HTTP/1.1\r\nHost: h\r\n";
    let after = "GET /api/after HTTP/1.1\r\nHost: h\r\n\r\n";
    let hidden_len = HIDDEN.len() + 5;
    vec![
        // The accepted shapes first: what they carry reaches the upstream, nothing more.
        case(
            "chunked body, then a pipelined request",
            format!("{post}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n{after}"),
            &[200, 200],
            false,
            &[("/app/a", b"hello"), ("/app/after", b"")],
        ),
        case(
            "a request inside a Content-Length body stays body",
            format!("{post}Content-Length: {}\r\n\r\n{HIDDEN}", HIDDEN.len()),
            &[200],
            false,
            &[("/app/a", HIDDEN.as_bytes())],
        ),
        case(
            "chunk extensions and trailers",
            format!(
                "{post}Transfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n{after}"
            ),
            &[200, 200],
            false,
            &[("/app/a", b"hello"), ("/app/after", b"")],
        ),
        // Refused: the upstream sees none of it.
        case(
            "Content-Length and Transfer-Encoding",
            format!(
                "{post}Content-Length: {hidden_len}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{HIDDEN}"
            ),
            &[400],
            true,
            &[],
        ),
        case(
            "Transfer-Encoding before Content-Length",
            format!(
                "{post}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n{HIDDEN}"
            ),
            &[400],
            true,
            &[],
        ),
        case(
            "two different Content-Lengths",
            format!("{post}Content-Length: 5\r\nContent-Length: {hidden_len}\r\n\r\nhello{HIDDEN}"),
            &[400],
            true,
            &[],
        ),
        case(
            "a list of Content-Lengths",
            format!("{post}Content-Length: 5, {hidden_len}\r\n\r\nhello{HIDDEN}"),
            &[400],
            true,
            &[],
        ),
        case(
            "Content-Length past 2^64",
            format!("{post}Content-Length: 18446744073709551621\r\n\r\nhello{HIDDEN}"),
            &[400],
            true,
            &[],
        ),
        case(
            "signed Content-Length",
            format!("{post}Content-Length: +5\r\n\r\nhello{HIDDEN}"),
            &[400],
            true,
            &[],
        ),
        case(
            "Transfer-Encoding not ending in chunked",
            format!("{post}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{HIDDEN}"),
            &[400],
            true,
            &[],
        ),
        case(
            "Transfer-Encoding with a space before the colon",
            format!("{post}Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\nhello{HIDDEN}"),
            &[400],
            true,
            &[],
        ),
        case(
            "obs-fold hiding Transfer-Encoding",
            format!("{post}Content-Length: 5\r\nX-A: a\r\n Transfer-Encoding: chunked\r\n\r\nhello{HIDDEN}"),
            &[400],
            true,
            &[],
        ),
        case(
            "bare LF between headers",
            format!("{post}X-A: a\nContent-Length: 5\r\n\r\nhello{HIDDEN}"),
            &[400],
            true,
            &[],
        ),
        case(
            "NUL in a header",
            format!("{post}X-A: a\0b\r\nContent-Length: 5\r\n\r\nhello{HIDDEN}"),
            &[400],
            true,
            &[],
        ),
        // Refused in the body: the head may already be on its way upstream, but no request
        // is ever completed there, and nothing after it is read.
        case(
            "chunk size that is not hex",
            format!("{post}Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n{HIDDEN}"),
            &[400],
            true,
            &[],
        ),
        case(
            "chunk size past 2^64",
            format!(
                "{post}Transfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n{HIDDEN}"
            ),
            &[400],
            true,
            &[],
        ),
        case(
            "chunk size with a sign",
            format!("{post}Transfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n{HIDDEN}"),
            &[400],
            true,
            &[],
        ),
        case(
            "bare LF after a chunk",
            format!("{post}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n{HIDDEN}"),
            &[400],
            true,
            &[],
        ),
        case(
            "chunk data longer than its size",
            format!("{post}Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n{HIDDEN}"),
            &[400],
            true,
            &[],
        ),
    ]
}

fn the_upstream_sees_exactly_what_was_accepted(d: Driver) {
    let site = Site::new();
    for c in cases() {
        let up = Upstream::start();
        let s = Server::start(
            d,
            &site,
            &format!(
                "[path_routes.\"h\"]\n\"/api/\" = {{ type = \"Proxy\", url = \"http://{}/app/\" }}\n",
                up.addr
            ),
        );
        let mut client = s.connect();
        client.send(&c.raw);
        let mut got = Vec::new();
        for _ in &c.statuses {
            got.push(client.response(false).status);
        }
        assert_eq!(got, c.statuses, "{}", c.name);
        let mut forwarded = c.forwarded.clone();
        if c.closes {
            assert!(client.is_closed(), "{}: the connection stayed open", c.name);
        } else {
            // A last request that closes: its answer comes only after anything the daemon
            // could have read from the bytes before it, so nothing can slip in later.
            client.send(b"GET /api/end HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
            assert_eq!(client.response(false).status, 200, "{}", c.name);
            assert!(client.is_closed(), "{}", c.name);
            forwarded.push(("/app/end", b""));
        }
        // A refused request's head may still be on its way upstream (it is never completed).
        std::thread::sleep(Duration::from_millis(50));
        let seen: Vec<(String, Vec<u8>)> = up
            .received()
            .iter()
            .map(|r| {
                let body = r["body"].as_str().unwrap_or_default().as_bytes().to_vec();
                (r["target"].as_str().unwrap_or_default().to_string(), body)
            })
            .collect();
        let want: Vec<(String, Vec<u8>)> = forwarded
            .iter()
            .map(|(t, b)| (t.to_string(), b.to_vec()))
            .collect();
        assert_eq!(seen, want, "{}", c.name);
        assert!(
            seen.iter().all(|(t, _)| !t.contains("SMUGGLED")),
            "{}: smuggled",
            c.name
        );
    }
}

crate::both_drivers!(the_upstream_sees_exactly_what_was_accepted);

//! The known HTTP/2 denial-of-service attacks, each written as raw frames by `peer.py`
//! against a daemon with the default `[http2]` settings: each costs the daemon bounded memory
//! (its resident set grows by less than [`RSS_BOUND_KIB`] over the attack), a client on
//! another connection is served throughout, and the attacks that abuse framing end the
//! attacker's connection with GOAWAY (or at least its close).

use serde_json::Value;

use super::{attack, curl_h2c, h2c, rss_kib, split};
use crate::common::{Driver, Server};
use crate::upstream::Upstream;

/// How much the daemon's resident memory may grow over one attack.
const RSS_BOUND_KIB: u64 = 32 * 1024;

/// GOAWAY codes (RFC 9113 §7).
const NO_ERROR: u64 = 0;
const PROTOCOL_ERROR: u64 = 1;
const ENHANCE_YOUR_CALM: u64 = 11;

/// A listener that never accepts, its one-slot backlog taken: a connect to it hangs (its SYN is
/// dropped) until the connecter gives up.
fn black_hole() -> (std::net::SocketAddr, std::net::TcpStream, i32) {
    // SAFETY: plain socket calls on a descriptor owned here.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as u16;
        addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        assert_eq!(
            libc::bind(fd, (&addr as *const libc::sockaddr_in).cast(), 16),
            0
        );
        assert_eq!(libc::listen(fd, 0), 0);
        let mut len: libc::socklen_t = 16;
        libc::getsockname(fd, (&mut addr as *mut libc::sockaddr_in).cast(), &mut len);
        let port = u16::from_be(addr.sin_port);
        let at = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let filler = std::net::TcpStream::connect(at).unwrap();
        (at, filler, fd)
    }
}

/// Past `max_requests_per_connection` without letting the graceful GOAWAY finish (its PING
/// unanswered, a slow stream held open): the extra streams are refused, then the connection is
/// cut off.
#[test]
fn the_request_cap_holds_when_goaway_is_ignored() {
    let up = Upstream::start();
    let (s, _site) = h2c(
        Driver::Uring,
        "max_requests_per_connection = 3",
        Some(up.addr),
        "",
    );
    let r = run(&s, "cap-bypass", "/");
    assert!(r["rst"].as_u64().unwrap() >= 100, "refused: {r}");
    assert!(
        r["opened"].as_u64().unwrap() < 350,
        "cut off before all 400: {r}"
    );
    ended(&r, &[ENHANCE_YOUR_CALM]);
}

/// Tiny DATA frames on streams whose handler is still connecting upstream: `h2`'s budget for
/// small frames ends the connection, and what came is held coalesced — not a slot per frame.
#[test]
fn tiny_data_frames_cost_their_bytes_not_their_count() {
    let (hole, _filler, fd) = black_hole();
    let (s, _site) = h2c(
        Driver::Uring,
        "",
        Some(hole),
        "[security]\nbackend_connect_timeout_secs = 20\n",
    );
    let r = run(&s, "tiny-data", "/app/x");
    ended(&r, &[ENHANCE_YOUR_CALM]);
    // SAFETY: the listener's own descriptor.
    unsafe { libc::close(fd) };
}

/// Runs `name` against `s` at `path`, checks the memory bound and that a victim is served.
fn run(s: &Server, name: &str, path: &str) -> Value {
    let before = rss_kib(s);
    let r = attack(s, name, path);
    let after = rss_kib(s);
    assert!(
        after.saturating_sub(before) < RSS_BOUND_KIB,
        "{name}: RSS {before} → {after} KiB"
    );
    let (head, body) = split(&curl_h2c(s, "/", &[]));
    assert!(head.starts_with("http/2 200"), "{name}: the victim: {head}");
    assert_eq!(body, b"hello over h2\n");
    r
}

/// Ended with GOAWAY `code` (or the connection closed under the attacker's feet: a GOAWAY
/// the kernel discarded with the attacker's unread bytes).
fn ended(r: &Value, codes: &[u64]) {
    let goaway = r["goaway"].as_u64();
    assert!(
        goaway.is_some_and(|g| codes.contains(&g)) || (goaway.is_none() && r["closed"] == true),
        "expected GOAWAY {codes:?}: {r}"
    );
}

#[test]
fn http2_attacks_cost_bounded_memory_and_spare_other_clients() {
    let up = Upstream::start();
    let (s, _site) = h2c(
        Driver::Uring,
        "max_requests_per_connection = 1000",
        Some(up.addr),
        "",
    );

    // Rapid reset (CVE-2023-44487): streams reset as soon as they are sent, to a slow
    // upstream: h2's pending-accept reset limit, then GOAWAY.
    let r = run(&s, "rapid-reset", "/app/slow/2000");
    ended(&r, &[ENHANCE_YOUR_CALM, NO_ERROR]);

    // CONTINUATION flood (CVE-2024-27316 class): a header block that never ends.
    let r = run(&s, "continuation-flood", "/");
    ended(&r, &[ENHANCE_YOUR_CALM, PROTOCOL_ERROR]);

    // HPACK bomb: 4 kB blocks that decode to 16 MB each: over 4× the header list limit.
    let r = run(&s, "hpack-bomb", "/");
    ended(&r, &[ENHANCE_YOUR_CALM]);

    // MadeYouReset (CVE-2025-8671 class): streams the server must reset itself.
    let r = run(&s, "made-you-reset", "/app/slow/2000");
    ended(&r, &[ENHANCE_YOUR_CALM]);

    // Stream id regression and exhaustion: protocol errors.
    let r = run(&s, "stream-id-regression", "/");
    ended(&r, &[PROTOCOL_ERROR]);
    let r = run(&s, "stream-id-exhaustion", "/");
    ended(&r, &[PROTOCOL_ERROR]);

    // Empty DATA frames as a body: h2's strike counter, then GOAWAY.
    let r = run(&s, "empty-data", "/app/echo");
    ended(&r, &[ENHANCE_YOUR_CALM, PROTOCOL_ERROR]);

    // Floods of PING and SETTINGS that never read the answers: slowed by backpressure (the
    // daemon stops reading while its answers wait), memory bounded.
    run(&s, "ping-flood", "/");
    run(&s, "settings-flood", "/");

    // Zero-window stall (slow read): 100 streams for a 1 MiB file, window shut: nothing
    // buffered beyond the windows.
    let r = run(&s, "zero-window", "/big.bin");
    assert_eq!(r["headers"], 100, "every stream answered its head: {r}");
    assert_eq!(r["data"], 0, "no DATA through a shut window: {r}");
}

//! `[http2]`: HTTP/2 towards clients (spec § 3).

use super::*;
use crate::config::Http2;

#[rustfmt::skip]
const HTTP2_KEYS: &[&str] = &[
    "enabled", "h2c", "max_concurrent_streams", "initial_stream_window",
    "initial_connection_window", "max_frame_size", "max_requests_per_connection",
    "idle_timeout_secs", "keepalive_interval_secs",
];

/// The largest flow-control window (RFC 9113 §6.9.1).
const MAX_WINDOW: u64 = (1 << 31) - 1;
/// The frame size bounds (RFC 9113 §6.5.2).
const MIN_FRAME: u64 = 16_384;
const MAX_FRAME: u64 = (1 << 24) - 1;
/// The most streams a client may open at once: beyond this, one connection's state alone
/// would be a memory problem.
const MAX_STREAMS: u64 = 10_000;

impl Walker<'_> {
    pub(super) fn http2(&mut self, root: &Node) -> Http2 {
        let mut h = Http2::default();
        let Some(n) = self.section(root, "http2") else {
            return h;
        };
        self.check_keys(&n, &[HTTP2_KEYS]);
        self.set(&n, "enabled", &mut h.enabled, Self::bool);
        self.set(&n, "h2c", &mut h.h2c, Self::bool);
        let u32_in = |w: &mut Self, f: &Field, min: u64, max: u64| {
            w.uint(f, min, max).and_then(|v| u32::try_from(v).ok())
        };
        self.set(
            &n,
            "max_concurrent_streams",
            &mut h.max_concurrent_streams,
            |w, f| u32_in(w, f, 1, MAX_STREAMS),
        );
        self.set(
            &n,
            "initial_stream_window",
            &mut h.initial_stream_window,
            |w, f| u32_in(w, f, 1024, MAX_WINDOW),
        );
        // HTTP/2 starts every connection window at 65,535 bytes; it can only be raised.
        let conn_window = &mut h.initial_connection_window;
        self.set(&n, "initial_connection_window", conn_window, |w, f| {
            u32_in(w, f, 65_535, MAX_WINDOW)
        });
        self.set(&n, "max_frame_size", &mut h.max_frame_size, |w, f| {
            u32_in(w, f, MIN_FRAME, MAX_FRAME)
        });
        let max_requests = &mut h.max_requests_per_connection;
        self.set(&n, "max_requests_per_connection", max_requests, |w, f| {
            w.uint(f, 1, u64::from(u32::MAX))
        });
        self.set(&n, "idle_timeout_secs", &mut h.idle_timeout, Self::secs);
        self.set(
            &n,
            "keepalive_interval_secs",
            &mut h.keepalive_interval,
            |w, f| w.uint(f, 0, MAX_SECS).map(Duration::from_secs),
        );
        h
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{errors_of, ok};

    const BASE: &str = "[server]\nlisten = \"127.0.0.1:8080\"\n";

    #[test]
    fn defaults_then_every_key() {
        let c = ok(BASE);
        assert!(c.http2.enabled && !c.http2.h2c);
        assert_eq!(c.http2.max_concurrent_streams, 128);
        assert_eq!(c.http2.initial_stream_window, 262_144);
        assert_eq!(c.http2.initial_connection_window, 1_048_576);
        assert_eq!(c.http2.max_frame_size, 16_384);
        assert_eq!(c.http2.max_requests_per_connection, 10_000);
        assert_eq!(c.http2.idle_timeout.as_secs(), 300);
        assert!(c.http2.keepalive_interval.is_zero());
        let c = ok(&format!(
            "{BASE}[http2]\nenabled = false\nh2c = true\nmax_concurrent_streams = 10\n\
             initial_stream_window = 65535\ninitial_connection_window = 2000000\n\
             max_frame_size = 32768\nmax_requests_per_connection = 50\nidle_timeout_secs = 5\n\
             keepalive_interval_secs = 2\n"
        ));
        let h = &c.http2;
        assert!(!h.enabled && h.h2c);
        assert_eq!(
            (
                h.max_concurrent_streams,
                h.initial_stream_window,
                h.initial_connection_window
            ),
            (10, 65_535, 2_000_000)
        );
        assert_eq!(
            (h.max_frame_size, h.max_requests_per_connection),
            (32_768, 50)
        );
        assert_eq!(
            (h.idle_timeout.as_secs(), h.keepalive_interval.as_secs()),
            (5, 2)
        );
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        let errors = errors_of(&format!(
            "{BASE}[http2]\nmax_concurrent_streams = 0\ninitial_connection_window = 1000\n\
             max_frame_size = 1000\ninitial_stream_window = 4294967295\nh2 = true\n"
        ));
        let paths: Vec<&str> = errors.iter().map(|e| e.key_path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "http2.max_concurrent_streams",
                "http2.initial_connection_window",
                "http2.max_frame_size",
                "http2.initial_stream_window",
                "http2.h2"
            ]
        );
        assert!(
            errors[4].reason.contains("unknown key \"h2\""),
            "{}",
            errors[4].reason
        );
    }
}

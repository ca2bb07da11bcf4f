//! `[server] request_id_header` and `[tracing]` (spec § 6 Operations).

use super::*;
use crate::config::{OtlpEndpoint, Tracing};

#[rustfmt::skip]
const TRACING_KEYS: &[&str] = &[
    "propagate", "sample_ratio", "otlp_endpoint", "service_name", "export_batch_size",
    "export_interval_ms", "export_queue_size",
];

/// Names a request id cannot travel in besides the framing and connection fields
/// ([`super::site::UNTOUCHABLE`]): those with a meaning of their own, the daemon's.
const NOT_FOR_IDS: &[&str] = &[
    "host",
    "traceparent",
    "tracestate",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "server",
    "date",
];

/// The most spans one export request carries, and the longest queue.
const MAX_BATCH: u64 = 65_536;
const MAX_QUEUE: u64 = 1 << 20;

impl Walker<'_> {
    /// `[server] request_id_header`: a field name, or `""` for no request ids.
    pub(super) fn request_id_header(&mut self, f: &Field) -> Option<Option<String>> {
        let name = self.str(f)?;
        if name.is_empty() {
            return Some(None);
        }
        let lower = name.to_ascii_lowercase();
        if !name.bytes().all(is_tchar) {
            self.reject(
                f,
                format!(
                    "{name:?} is not a valid header name (letters, digits and \
                     !#$%&'*+-.^_`|~); \"\" turns request ids off"
                ),
            );
            return None;
        }
        if super::site::UNTOUCHABLE.contains(&lower.as_str())
            || NOT_FOR_IDS.contains(&lower.as_str())
            || lower.starts_with(':')
        {
            self.reject(
                f,
                format!("{name:?} has a meaning of its own; request ids need a field of their own, such as \"X-Request-Id\""),
            );
            return None;
        }
        Some(Some(name.to_string()))
    }

    pub(super) fn tracing(&mut self, root: &Node) -> Tracing {
        let mut t = Tracing::default();
        let Some(n) = self.section(root, "tracing") else {
            return t;
        };
        self.check_keys(&n, &[TRACING_KEYS]);
        self.set(&n, "propagate", &mut t.propagate, Self::bool);
        self.set(&n, "sample_ratio", &mut t.sample_ratio, Self::ratio);
        t.otlp_endpoint = self.opt(&n, "otlp_endpoint", Self::otlp_endpoint);
        self.set(&n, "service_name", &mut t.service_name, |w, f| {
            let s = w.str(f)?;
            if s.is_empty() || s.len() > 256 || s.chars().any(char::is_control) {
                w.reject(f, "must be 1 to 256 characters, no control characters");
                return None;
            }
            Some(s.to_string())
        });
        self.set(&n, "export_batch_size", &mut t.export_batch_size, |w, f| {
            w.uint(f, 1, MAX_BATCH).map(|v| v as usize)
        });
        self.set(&n, "export_interval_ms", &mut t.export_interval, |w, f| {
            w.uint(f, 100, MAX_SECS * 1000).map(Duration::from_millis)
        });
        self.set(&n, "export_queue_size", &mut t.export_queue_size, |w, f| {
            w.uint(f, 1, MAX_QUEUE).map(|v| v as usize)
        });
        if t.export_batch_size > t.export_queue_size {
            if let Some(f) = n.field("export_batch_size") {
                self.reject(
                    &f,
                    format!(
                        "{} is more than export_queue_size ({}): a batch could never fill",
                        t.export_batch_size, t.export_queue_size
                    ),
                );
            }
        }
        if t.sample_ratio > 0.0 && !t.propagate {
            if let Some(f) = n.field("sample_ratio") {
                self.reject(
                    &f,
                    "spans are exported for the traces the daemon propagates: with propagate = \
                     false nothing would be sampled (set propagate = true, or sample_ratio = 0)",
                );
            }
        } else if t.sample_ratio > 0.0 && t.otlp_endpoint.is_none() {
            if let Some(f) = n.field("sample_ratio") {
                self.reject(
                    &f,
                    "sampled spans need somewhere to go: set otlp_endpoint too (or sample_ratio \
                     = 0 to only propagate trace context)",
                );
            }
        }
        t
    }

    /// A number in 0.0–1.0 (an integer 0 or 1 too).
    fn ratio(&mut self, f: &Field) -> Option<f64> {
        let v = match f.value.get_ref() {
            DeValue::Float(x) => x.as_str().parse::<f64>().ok(),
            DeValue::Integer(i) => i.as_str().parse::<f64>().ok(),
            _ => {
                self.mismatch(f, "a number from 0.0 to 1.0");
                return None;
            }
        };
        match v {
            Some(v) if (0.0..=1.0).contains(&v) => Some(v),
            _ => {
                self.reject(
                    f,
                    "must be a number from 0.0 (none) to 1.0 (every new trace)",
                );
                None
            }
        }
    }

    /// `http://host[:port][/path]`.
    fn otlp_endpoint(&mut self, f: &Field) -> Option<OtlpEndpoint> {
        let url = self.str(f)?;
        match parse_otlp_endpoint(url) {
            Ok(e) => Some(e),
            Err(reason) => {
                self.reject(f, reason);
                None
            }
        }
    }
}

/// An OTLP/HTTP endpoint URL, or why it is not one the exporter can use.
fn parse_otlp_endpoint(url: &str) -> Result<OtlpEndpoint, String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(if url.starts_with("https://") {
            "the built-in exporter speaks plain http only: point it at a local OpenTelemetry \
             Collector (such as http://127.0.0.1:4318/v1/traces) that forwards over TLS"
                .into()
        } else {
            format!("{url:?} is not an http:// URL (OTLP/HTTP, such as http://127.0.0.1:4318/v1/traces)")
        });
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, ""),
    };
    let bad = |why: &str| format!("{url:?}: {why} (such as http://127.0.0.1:4318/v1/traces)");
    if path.bytes().any(|b| !b.is_ascii_graphic()) || path.contains('#') {
        return Err(bad(
            "the path must be printable ASCII without spaces or a fragment",
        ));
    }
    if authority.contains('@') {
        return Err(bad("user information is not supported"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((h, after)) = v6.split_once(']') else {
            return Err(bad("an IPv6 address needs its closing ]"));
        };
        (h, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err(bad("an IPv6 address goes in brackets, http://[::1]:4318/"));
            }
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'))
    {
        return Err(bad("the host name is missing or not valid"));
    }
    let port = match port {
        None => 80,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(bad("the port must be 1 to 65535")),
        },
    };
    Ok(OtlpEndpoint {
        url: url.to_string(),
        host: host.to_string(),
        port,
        authority: authority.to_string(),
        path: if path.is_empty() || path == "/" {
            "/v1/traces".into()
        } else {
            path.to_string()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{errors_of, find, ok};
    use super::parse_otlp_endpoint;

    const BASE: &str = "[server]\nlisten = \"127.0.0.1:8080\"\n";

    #[test]
    fn defaults_then_every_key() {
        let c = ok(BASE);
        assert_eq!(c.server.request_id_header.as_deref(), Some("X-Request-Id"));
        assert!(c.tracing.propagate);
        assert_eq!(c.tracing.sample_ratio, 0.0);
        assert!(c.tracing.otlp_endpoint.is_none());
        assert_eq!(c.tracing.export_batch_size, 512);
        let c = ok(&format!(
            "{BASE}request_id_header = \"\"\n[tracing]\npropagate = true\nsample_ratio = 0.25\n\
             otlp_endpoint = \"http://[::1]:4318\"\nservice_name = \"edge\"\n\
             export_batch_size = 10\nexport_interval_ms = 200\nexport_queue_size = 100\n"
        ));
        assert_eq!(c.server.request_id_header, None);
        assert!(c.tracing.propagate);
        assert_eq!(c.tracing.sample_ratio, 0.25);
        let errors = errors_of(&format!(
            "{BASE}[tracing]\npropagate = false\nsample_ratio = 0.5\n\
             otlp_endpoint = \"http://127.0.0.1:4318\"\n"
        ));
        assert!(find(&errors, "tracing.sample_ratio")
            .reason
            .contains("propagate = false"));
        let e = c.tracing.otlp_endpoint.unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("::1", 4318, "/v1/traces")
        );
        assert_eq!(e.authority, "[::1]:4318");
        assert_eq!(c.tracing.service_name, "edge");
        assert_eq!(c.tracing.export_queue_size, 100);
    }

    #[test]
    fn refusals_name_the_key_and_the_fix() {
        let errors = errors_of(&format!(
            "{BASE}request_id_header = \"Content-Length\"\n[tracing]\nsample_ratio = 1.5\n\
             otlp_endpoint = \"https://collector:4318/v1/traces\"\nexport_batch_size = 0\n\
             bogus = 1\n"
        ));
        assert!(find(&errors, "server.request_id_header")
            .reason
            .contains("meaning of its own"));
        assert!(find(&errors, "tracing.sample_ratio").reason.contains("0.0"));
        assert!(find(&errors, "tracing.otlp_endpoint")
            .reason
            .contains("Collector"));
        assert!(find(&errors, "tracing.export_batch_size")
            .reason
            .contains("at least 1"));
        find(&errors, "tracing.bogus");
        let errors = errors_of(&format!(
            "{BASE}request_id_header = \"X Id\"\n[tracing]\nsample_ratio = 0.5\n"
        ));
        assert!(find(&errors, "server.request_id_header")
            .reason
            .contains("not a valid header name"));
        assert!(find(&errors, "tracing.sample_ratio")
            .reason
            .contains("otlp_endpoint"));
    }

    #[test]
    fn endpoints() {
        let e = parse_otlp_endpoint("http://otel.internal/v1/traces").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("otel.internal", 80));
        let e = parse_otlp_endpoint("http://127.0.0.1:4318/").unwrap();
        assert_eq!(e.path, "/v1/traces");
        for bad in [
            "127.0.0.1:4318",
            "http://:4318/v1/traces",
            "http://h:0/",
            "http://h:99999/",
            "http://u@h/",
            "http://h/a b",
            "http://[::1/",
            "http://::1:4318/v1/traces",
        ] {
            assert!(parse_otlp_endpoint(bad).is_err(), "{bad}");
        }
    }
}

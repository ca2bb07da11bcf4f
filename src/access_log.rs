//! Access log lines: one per request, in nginx's `combined` format with extra fields, or JSON.
//!
//! `combined` is nginx's format — `addr - - [time] "request" status bytes "referer" "agent"` —
//! followed by `key=value` fields that it lacks, so that tools reading `combined` still parse
//! the line:
//!
//! ```text
//! 127.0.0.1 - - [30/Nov/2026:05:44:03 +0000] "GET /api/x?y=1 HTTP/1.1" 200 153 "-" "curl/8.5" host="example.com" route="example.com/api" request_time=0.002 upstream=127.0.0.1:9000 upstream_time=0.001
//! ```
//!
//! `json` is one object per line with the same fields (`time` in RFC 3339, durations in
//! seconds, `null` where a field does not apply). In both, `bytes` counts what was written to
//! the client, head and body (nginx's `$bytes_sent`); `status` is 0 when no response was sent
//! (the client went away, or the request was cut off before its status line). A request too
//! malformed to parse is logged with `-` for its request line. Strings in `combined` escape
//! `"`, `\` and bytes outside printable ASCII as `\xHH`, as nginx does.

use std::fmt::Write;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::AccessLogFormat;
use crate::http::head::RequestHead;
use crate::http::Version;

/// What one access log line says.
#[derive(Debug)]
pub struct Entry<'a> {
    /// When the response ended.
    pub time: time::OffsetDateTime,
    pub client: SocketAddr,
    /// The parsed request, or `None` for a request that could not be parsed.
    pub request: Option<&'a RequestHead>,
    pub status: u16,
    pub bytes: u64,
    pub duration: Duration,
    /// `host/prefix` of the route, or `None` when no route matched.
    pub route: Option<String>,
    pub upstream: Option<SocketAddr>,
    pub upstream_time: Option<Duration>,
}

/// The line for `entry`, without a newline.
pub fn line(format: AccessLogFormat, entry: &Entry) -> String {
    let mut s = String::with_capacity(256);
    write(format, entry, &mut s);
    s
}

/// Appends the line for `entry` to `out`, without a newline.
pub fn write(format: AccessLogFormat, entry: &Entry, out: &mut String) {
    match format {
        AccessLogFormat::Combined => combined(entry, out),
        AccessLogFormat::Json => json(entry, out),
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn combined(e: &Entry, s: &mut String) {
    let t = e.time;
    let _ = write!(
        s,
        "{} - - [{:02}/{}/{}:{:02}:{:02}:{:02} +0000] \"",
        e.client.ip().to_canonical(),
        t.day(),
        MONTHS[usize::from(u8::from(t.month())) - 1],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    );
    match e.request {
        Some(r) => {
            escape(s, r.method.as_str().as_bytes());
            s.push(' ');
            escape(s, r.path.as_bytes());
            if let Some(q) = &r.query {
                s.push('?');
                escape(s, q.as_bytes());
            }
            s.push(' ');
            s.push_str(version(r.version));
        }
        None => s.push('-'),
    }
    let _ = write!(s, "\" {} {} \"", e.status, e.bytes);
    quoted_header(s, e.request, "referer");
    s.push_str("\" \"");
    quoted_header(s, e.request, "user-agent");
    s.push_str("\" host=\"");
    escape(
        s,
        e.request
            .and_then(|r| r.host.as_deref())
            .unwrap_or("-")
            .as_bytes(),
    );
    s.push_str("\" route=\"");
    escape(s, e.route.as_deref().unwrap_or("-").as_bytes());
    let _ = write!(
        s,
        "\" request_time={:.3} upstream=",
        e.duration.as_secs_f64()
    );
    match e.upstream {
        Some(a) => {
            let _ = write!(s, "{a}");
        }
        None => s.push('-'),
    }
    s.push_str(" upstream_time=");
    match e.upstream_time {
        Some(d) => {
            let _ = write!(s, "{:.3}", d.as_secs_f64());
        }
        None => s.push('-'),
    }
}

fn version(v: Version) -> &'static str {
    match v {
        Version::Http10 => "HTTP/1.0",
        Version::Http11 => "HTTP/1.1",
    }
}

fn quoted_header(s: &mut String, req: Option<&RequestHead>, name: &str) {
    match req.and_then(|r| r.header(name)) {
        Some(v) => escape(s, v),
        None => s.push('-'),
    }
}

/// nginx's escaping for quoted log fields.
fn escape(s: &mut String, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                let _ = write!(s, "\\x{b:02X}");
            }
            0x20..=0x7e => s.push(char::from(b)),
            _ => {
                let _ = write!(s, "\\x{b:02X}");
            }
        }
    }
}

/// A JSON string (quoted) of `bytes`, invalid UTF-8 replaced.
fn json_str(s: &mut String, bytes: &[u8]) {
    s.push('"');
    for c in String::from_utf8_lossy(bytes).chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(s, "\\u{:04x}", u32::from(c));
            }
            c => s.push(c),
        }
    }
    s.push('"');
}

/// `,"key":` then the string, or `null`.
fn json_field(s: &mut String, key: &str, value: Option<&[u8]>) {
    let _ = write!(s, ",\"{key}\":");
    match value {
        Some(v) => json_str(s, v),
        None => s.push_str("null"),
    }
}

fn json(e: &Entry, s: &mut String) {
    let t = e.time;
    let _ = write!(
        s,
        "{{\"time\":\"{}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z\",\"client\":\"{}\"",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond(),
        e.client.ip().to_canonical()
    );
    let r = e.request;
    json_field(
        s,
        "host",
        r.and_then(|r| r.host.as_deref()).map(str::as_bytes),
    );
    json_field(s, "method", r.map(|r| r.method.as_str().as_bytes()));
    match r {
        Some(r) => {
            s.push_str(",\"target\":");
            let target = match &r.query {
                Some(q) => format!("{}?{q}", r.path),
                None => r.path.clone(),
            };
            json_str(s, target.as_bytes());
            let _ = write!(s, ",\"protocol\":\"{}\"", version(r.version));
        }
        None => s.push_str(",\"target\":null,\"protocol\":null"),
    }
    let _ = write!(
        s,
        ",\"status\":{},\"bytes\":{},\"duration\":{}",
        e.status,
        e.bytes,
        e.duration.as_secs_f64()
    );
    json_field(s, "route", e.route.as_deref().map(str::as_bytes));
    match e.upstream {
        Some(a) => {
            let _ = write!(s, ",\"upstream\":\"{a}\"");
        }
        None => s.push_str(",\"upstream\":null"),
    }
    match e.upstream_time {
        Some(d) => {
            let _ = write!(s, ",\"upstream_time\":{}", d.as_secs_f64());
        }
        None => s.push_str(",\"upstream_time\":null"),
    }
    json_field(s, "referer", r.and_then(|r| r.header("referer")));
    json_field(s, "user_agent", r.and_then(|r| r.header("user-agent")));
    s.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(raw: &[u8]) -> RequestHead {
        crate::http::head::parse(raw, 8192).unwrap().unwrap().0
    }

    fn entry(req: Option<&RequestHead>) -> Entry<'_> {
        Entry {
            time: time::macros::datetime!(2026-11-30 05:44:03.123 UTC),
            client: "[::ffff:10.0.0.7]:5555".parse().unwrap(),
            request: req,
            status: 502,
            bytes: 153,
            duration: Duration::from_micros(2_345),
            route: Some("example.com/api".into()),
            upstream: Some("127.0.0.1:9000".parse().unwrap()),
            upstream_time: Some(Duration::from_millis(1)),
        }
    }

    #[test]
    fn combined_is_nginxs_line_and_then_the_extras() {
        let r =
            request(b"GET /api/x?y=1 HTTP/1.1\r\nHost: Example.com\r\nUser-Agent: t \"q\"\r\n\r\n");
        assert_eq!(
            line(AccessLogFormat::Combined, &entry(Some(&r))),
            "10.0.0.7 - - [30/Nov/2026:05:44:03 +0000] \"GET /api/x?y=1 HTTP/1.1\" 502 153 \"-\" \
             \"t \\x22q\\x22\" host=\"example.com\" route=\"example.com/api\" request_time=0.002 \
             upstream=127.0.0.1:9000 upstream_time=0.001"
        );
        let mut e = entry(None);
        e.route = None;
        e.upstream = None;
        e.upstream_time = None;
        e.status = 400;
        assert_eq!(
            line(AccessLogFormat::Combined, &e),
            "10.0.0.7 - - [30/Nov/2026:05:44:03 +0000] \"-\" 400 153 \"-\" \"-\" host=\"-\" \
             route=\"-\" request_time=0.002 upstream=- upstream_time=-"
        );
    }

    #[test]
    fn json_has_every_field() {
        let r = request(b"POST /a HTTP/1.0\r\nReferer: http://r/\r\n\r\n");
        let v: serde_json::Value =
            serde_json::from_str(&line(AccessLogFormat::Json, &entry(Some(&r)))).unwrap();
        assert_eq!(v["time"], "2026-11-30T05:44:03.123Z");
        assert_eq!(v["client"], "10.0.0.7");
        assert_eq!(v["host"], serde_json::Value::Null);
        assert_eq!(v["method"], "POST");
        assert_eq!(v["target"], "/a");
        assert_eq!(v["protocol"], "HTTP/1.0");
        assert_eq!(v["status"], 502);
        assert_eq!(v["bytes"], 153);
        assert_eq!(v["duration"], 0.002345);
        assert_eq!(v["route"], "example.com/api");
        assert_eq!(v["upstream"], "127.0.0.1:9000");
        assert_eq!(v["upstream_time"], 0.001);
        assert_eq!(v["referer"], "http://r/");
        assert_eq!(v["user_agent"], serde_json::Value::Null);
    }

    #[test]
    fn json_strings_are_escaped() {
        let r =
            request(b"GET /a\"b HTTP/1.1\r\nHost: h\r\nUser-Agent: q\"b\\s\xff\xc3\xa9\r\n\r\n");
        let line = line(AccessLogFormat::Json, &entry(Some(&r)));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["user_agent"], "q\"b\\s\u{fffd}é");
        assert_eq!(v["target"], "/a\"b");
        let mut s = String::new();
        json_str(&mut s, b"a\x01\x7f\n");
        assert_eq!(s, r#""a\u0001\u007f\u000a""#);
        assert_eq!(
            serde_json::from_str::<String>(&s).unwrap(),
            "a\u{1}\u{7f}\n"
        );
    }
}

//! Access log lines: one per request, in nginx's `combined` format with extra fields, or JSON.
//!
//! `combined` is nginx's format — `addr - - [time] "request" status bytes "referer" "agent"` —
//! followed by `key=value` fields that it lacks, so that tools reading `combined` still parse
//! the line:
//!
//! ```text
//! 127.0.0.1 - - [30/Nov/2026:05:44:03 +0000] "GET /api/x?y=1 HTTP/1.1" 200 153 "-" "curl/8.5" host="example.com" route="example.com/api" request_time=0.002 upstream=127.0.0.1:9000 upstream_time=0.001 request_id=4bf92f3577b34da6a3ce929d0e0e4736
//! ```
//!
//! `json` is one object per line with the same fields (`time` in RFC 3339, durations in
//! seconds, `null` where a field does not apply). In both, `bytes` counts the response *body*
//! bytes written to the client (nginx's `$body_bytes_sent`: 0 for a HEAD or a 304), and JSON's
//! `bytes_sent` everything, heads included (`$bytes_sent`); `status` is 0 when no response was sent
//! (the client went away, or the request was cut off before its status line). A request too
//! malformed to parse is logged with `-` for its request line. Strings in `combined` escape
//! `"`, `\` and bytes outside printable ASCII as `\xHH`, as nginx does.

use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::config::AccessLogFormat;
use crate::http::request::RequestHead;
use crate::http::Version;

/// What one access log line says.
#[derive(Debug)]
pub struct Entry<'a> {
    /// When the response ended.
    pub time: time::OffsetDateTime,
    /// The client address (behind trusted proxies, the one their chain names).
    pub client: IpAddr,
    /// The parsed request, or `None` for a request that could not be parsed.
    pub request: Option<&'a RequestHead>,
    pub status: u16,
    /// Body bytes sent (nginx's `$body_bytes_sent`): 0 for HEAD, 304 and the like.
    pub body_bytes: u64,
    /// Everything sent, heads included (nginx's `$bytes_sent`).
    pub bytes: u64,
    pub duration: Duration,
    /// `host/prefix` of the route, or `None` when no route matched.
    pub route: Option<String>,
    pub upstream: Option<SocketAddr>,
    pub upstream_time: Option<Duration>,
    /// The request's id; `None` when request ids are off.
    pub request_id: Option<crate::telemetry::RequestId>,
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
    push_ip(s, e.client);
    s.push_str(" - - [");
    push_2(s, t.day());
    s.push('/');
    s.push_str(MONTHS[usize::from(u8::from(t.month())) - 1]);
    s.push('/');
    push_int(s, i64::from(t.year()));
    s.push(':');
    push_2(s, t.hour());
    s.push(':');
    push_2(s, t.minute());
    s.push(':');
    push_2(s, t.second());
    s.push_str(" +0000] \"");
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
    s.push_str("\" ");
    push_int(s, i64::from(e.status));
    s.push(' ');
    push_u64(s, e.body_bytes);
    s.push_str(" \"");
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
    s.push_str("\" request_time=");
    push_secs(s, e.duration, 3);
    s.push_str(" upstream=");
    match e.upstream {
        Some(a) => push_addr(s, a),
        None => s.push('-'),
    }
    s.push_str(" upstream_time=");
    match e.upstream_time {
        Some(d) => push_secs(s, d, 3),
        None => s.push('-'),
    }
    s.push_str(" request_id=");
    match &e.request_id {
        // Visible ASCII without quotes or backslashes (see `RequestId::parse`).
        Some(id) => {
            let _ = write!(s, "{id}");
        }
        None => s.push('-'),
    }
}

/// Appends `n` in decimal.
fn push_u64(s: &mut String, n: u64) {
    for &d in crate::http::response::decimal(n, &mut [0; 20]) {
        s.push(char::from(d));
    }
}

fn push_int(s: &mut String, n: i64) {
    if n < 0 {
        s.push('-');
    }
    push_u64(s, n.unsigned_abs());
}

/// Two digits, zero-padded.
fn push_2(s: &mut String, n: u8) {
    s.push(char::from(b'0' + n / 10 % 10));
    s.push(char::from(b'0' + n % 10));
}

/// Seconds with `decimals` (3 or 6) digits after the point, truncated.
fn push_secs(s: &mut String, d: Duration, decimals: u32) {
    let scale = 10u64.pow(decimals);
    let units = d.as_nanos() / u128::from(1_000_000_000 / scale);
    let units = u64::try_from(units).unwrap_or(u64::MAX);
    push_u64(s, units / scale);
    s.push('.');
    let frac = units % scale;
    let mut div = scale / 10;
    while div > 0 {
        s.push(char::from(b'0' + (frac / div % 10) as u8));
        div /= 10;
    }
}

fn push_ip(s: &mut String, ip: IpAddr) {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                push_u64(s, u64::from(octet));
            }
        }
        v6 => {
            let _ = write!(s, "{v6}");
        }
    }
}

fn push_addr(s: &mut String, a: SocketAddr) {
    match a {
        SocketAddr::V4(v4) => push_ip(s, IpAddr::V4(*v4.ip())),
        SocketAddr::V6(v6) => {
            let _ = write!(s, "[{}]", v6.ip());
        }
    }
    s.push(':');
    push_u64(s, u64::from(a.port()));
}

fn version(v: Version) -> &'static str {
    v.as_str()
}

fn quoted_header(s: &mut String, req: Option<&RequestHead>, name: &str) {
    match req.and_then(|r| r.header(name)) {
        Some(v) => escape(s, v),
        None => s.push('-'),
    }
}

/// nginx's escaping for quoted log fields: printable ASCII as is (in runs), `"`, `\\` and
/// every other byte as `\\xHH`.
fn escape(s: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut rest = bytes;
    while !rest.is_empty() {
        let plain = rest
            .iter()
            .position(|&b| !(0x20..=0x7e).contains(&b) || b == b'"' || b == b'\\')
            .unwrap_or(rest.len());
        // Printable ASCII: valid UTF-8 by construction.
        s.push_str(std::str::from_utf8(&rest[..plain]).unwrap_or_default());
        if let Some(&b) = rest.get(plain) {
            s.push_str("\\x");
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
            rest = &rest[plain + 1..];
        } else {
            rest = &[];
        }
    }
}

/// A JSON string (quoted) of `bytes`, invalid UTF-8 replaced.
fn json_str(s: &mut String, bytes: &[u8]) {
    s.push('"');
    json_escape(s, bytes);
    s.push('"');
}

/// The inside of a JSON string: runs of plain characters copied whole, `"`, `\\` and control
/// characters escaped, invalid UTF-8 replaced.
fn json_escape(s: &mut String, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let mut plain = 0;
    for (i, b) in text.bytes().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0..=0x1f | 0x7f => "",
            _ => continue,
        };
        s.push_str(&text[plain..i]);
        if escaped.is_empty() {
            let _ = write!(s, "\\u{:04x}", b);
        } else {
            s.push_str(escaped);
        }
        plain = i + 1;
    }
    s.push_str(&text[plain..]);
}

/// `,"key":` then the string, or `null`.
fn json_field(s: &mut String, key: &str, value: Option<&[u8]>) {
    s.push_str(",\"");
    s.push_str(key);
    s.push_str("\":");
    match value {
        Some(v) => json_str(s, v),
        None => s.push_str("null"),
    }
}

fn json(e: &Entry, s: &mut String) {
    let t = e.time;
    s.push_str("{\"time\":\"");
    push_int(s, i64::from(t.year()));
    s.push('-');
    push_2(s, u8::from(t.month()));
    s.push('-');
    push_2(s, t.day());
    s.push('T');
    push_2(s, t.hour());
    s.push(':');
    push_2(s, t.minute());
    s.push(':');
    push_2(s, t.second());
    s.push('.');
    let ms = t.millisecond();
    s.push(char::from(b'0' + (ms / 100 % 10) as u8));
    push_2(s, (ms % 100) as u8);
    s.push_str("Z\",\"client\":\"");
    push_ip(s, e.client);
    s.push('"');
    let r = e.request;
    json_field(
        s,
        "host",
        r.and_then(|r| r.host.as_deref()).map(str::as_bytes),
    );
    json_field(s, "method", r.map(|r| r.method.as_str().as_bytes()));
    match r {
        Some(r) => {
            s.push_str(",\"target\":\"");
            json_escape(s, r.path.as_bytes());
            if let Some(q) = &r.query {
                s.push('?');
                json_escape(s, q.as_bytes());
            }
            s.push_str("\",\"protocol\":\"");
            s.push_str(version(r.version));
            s.push('"');
        }
        None => s.push_str(",\"target\":null,\"protocol\":null"),
    }
    s.push_str(",\"status\":");
    push_int(s, i64::from(e.status));
    s.push_str(",\"bytes\":");
    push_u64(s, e.body_bytes);
    s.push_str(",\"bytes_sent\":");
    push_u64(s, e.bytes);
    s.push_str(",\"duration\":");
    push_secs(s, e.duration, 6);
    json_field(s, "route", e.route.as_deref().map(str::as_bytes));
    match e.upstream {
        Some(a) => {
            s.push_str(",\"upstream\":\"");
            push_addr(s, a);
            s.push('"');
        }
        None => s.push_str(",\"upstream\":null"),
    }
    match e.upstream_time {
        Some(d) => {
            s.push_str(",\"upstream_time\":");
            push_secs(s, d, 6);
        }
        None => s.push_str(",\"upstream_time\":null"),
    }
    json_field(s, "referer", r.and_then(|r| r.header("referer")));
    json_field(s, "user_agent", r.and_then(|r| r.header("user-agent")));
    json_field(
        s,
        "request_id",
        e.request_id
            .as_ref()
            .map(|id| id.to_string().into_bytes())
            .as_deref(),
    );
    s.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(raw: &[u8]) -> RequestHead {
        crate::http::h1::request::parse(raw, 8192)
            .unwrap()
            .unwrap()
            .0
    }

    fn entry(req: Option<&RequestHead>) -> Entry<'_> {
        Entry {
            time: time::macros::datetime!(2026-11-30 05:44:03.123 UTC),
            client: "::ffff:10.0.0.7".parse().unwrap(),
            request: req,
            status: 502,
            body_bytes: 153,
            bytes: 270,
            duration: Duration::from_micros(2_345),
            route: Some("example.com/api".into()),
            upstream: Some("127.0.0.1:9000".parse().unwrap()),
            upstream_time: Some(Duration::from_millis(1)),
            request_id: Some(crate::telemetry::RequestId::from_bits(0xabc)),
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
             upstream=127.0.0.1:9000 upstream_time=0.001 \
             request_id=00000000000000000000000000000abc"
        );
        let mut e = entry(None);
        e.route = None;
        e.upstream = None;
        e.upstream_time = None;
        e.status = 400;
        e.request_id = None;
        assert_eq!(
            line(AccessLogFormat::Combined, &e),
            "10.0.0.7 - - [30/Nov/2026:05:44:03 +0000] \"-\" 400 153 \"-\" \"-\" host=\"-\" \
             route=\"-\" request_time=0.002 upstream=- upstream_time=- request_id=-"
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
        assert_eq!(v["bytes_sent"], 270);
        assert_eq!(v["duration"], 0.002345);
        assert_eq!(v["route"], "example.com/api");
        assert_eq!(v["upstream"], "127.0.0.1:9000");
        assert_eq!(v["upstream_time"], 0.001);
        assert_eq!(v["referer"], "http://r/");
        assert_eq!(v["user_agent"], serde_json::Value::Null);
        assert_eq!(v["request_id"], "00000000000000000000000000000abc");
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

    #[test]
    fn numbers_and_addresses_are_written_by_hand_correctly() {
        let mut s = String::new();
        push_u64(&mut s, 0);
        s.push(' ');
        push_u64(&mut s, u64::MAX);
        s.push(' ');
        push_int(&mut s, -42);
        s.push(' ');
        push_secs(&mut s, Duration::from_micros(2_345), 3);
        s.push(' ');
        push_secs(&mut s, Duration::from_micros(2_345), 6);
        s.push(' ');
        push_secs(&mut s, Duration::from_secs(61), 3);
        s.push(' ');
        push_addr(&mut s, "[2001:db8::1]:443".parse().unwrap());
        s.push(' ');
        push_addr(&mut s, "10.0.0.255:8080".parse().unwrap());
        assert_eq!(
            s,
            "0 18446744073709551615 -42 0.002 0.002345 61.000 [2001:db8::1]:443 10.0.0.255:8080"
        );
        let mut s = String::new();
        escape(&mut s, b"a\x01\xffb\\c \"");
        assert_eq!(s, r"a\x01\xFFb\x5Cc \x22");
    }
}

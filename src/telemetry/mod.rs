//! Request ids and W3C Trace Context: what identifies one request in the daemon's logs, at its
//! upstream and in a tracing backend — decided once per request ([`Ids::decide`]), before any
//! answer goes out.
//!
//! - **Request id** (`[server] request_id_header`, default `X-Request-Id`): a trusted peer's
//!   (`trusted_proxies`) is kept when it is a sane token; anyone else's is replaced. A new one
//!   is the trace id of a trace the request starts — one id for logs and traces — else 128
//!   random bits; 32 lower-case hex characters either way, from the worker's own generator
//!   (no syscall).
//! - **Trace context** (`[tracing] propagate`): a trusted peer's valid `traceparent` keeps its
//!   trace. When spans are exported and the trace is sampled, the upstream's parent becomes
//!   this request's span; otherwise both fields go on as they came (a proxy that reports no
//!   span must not claim to be a parent). An untrusted, missing or malformed one starts a new
//!   trace (sampled by `sample_ratio`), and `tracestate` is dropped with it.
//!
//! Spans of sampled requests go to [`export`], which sends them to an OTLP collector from a
//! thread of its own.

pub mod export;

use std::sync::Mutex;

use crate::config::Config;
use crate::http::request::RequestHead;
use crate::http::response::{name_bit, ResponseHead};
use crate::security::IpSet;

/// The longest request id kept from a trusted peer.
pub const MAX_ID_LEN: usize = 128;

/// What a snapshot holds of `[server] request_id_header` and `[tracing]`.
#[derive(Clone, Debug)]
pub struct Telemetry {
    /// The request id's field; `None` = no request ids.
    pub header: Option<IdName>,
    /// `[tracing] propagate`.
    pub propagate: bool,
    /// `[tracing] sample_ratio`.
    pub sample_ratio: f64,
    /// Spans are exported (`otlp_endpoint` is set).
    pub export: bool,
}

impl Telemetry {
    pub fn new(config: &Config) -> Self {
        Self {
            header: config.server.request_id_header.as_deref().map(IdName::new),
            propagate: config.tracing.propagate,
            sample_ratio: config.tracing.sample_ratio,
            export: config.tracing.otlp_endpoint.is_some(),
        }
    }

    /// Whether any of it is on.
    pub fn is_on(&self) -> bool {
        self.header.is_some() || self.propagate
    }
}

/// A request id: a generated one (128 bits, written as 32 hex characters) or a trusted peer's.
#[derive(Clone, PartialEq, Eq)]
pub enum RequestId {
    /// Made here: written in hex only where it goes out.
    Generated(u128),
    /// A trusted peer's, as it came (checked by [`RequestId::parse`]).
    Kept(Box<str>),
}

impl RequestId {
    /// The id of `bits`.
    pub fn from_bits(bits: u128) -> Self {
        Self::Generated(bits)
    }

    /// A new random one, from the worker's own generator.
    pub fn random() -> Self {
        Self::Generated(fastrand::u128(..))
    }

    /// A peer's id, if it is one to keep: 1 to [`MAX_ID_LEN`] visible ASCII characters, no
    /// quote or backslash (it goes into logs and heads as it is).
    pub fn parse(value: &[u8]) -> Option<Self> {
        let v = value.trim_ascii();
        if v.is_empty()
            || v.len() > MAX_ID_LEN
            || !v
                .iter()
                .all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            return None;
        }
        std::str::from_utf8(v).ok().map(|s| Self::Kept(s.into()))
    }

    /// The id's characters (visible ASCII), written into `buf` when it is a generated one.
    pub fn bytes<'a>(&'a self, buf: &'a mut [u8; 32]) -> &'a [u8] {
        match self {
            Self::Generated(bits) => {
                *buf = hex_u128(*bits);
                buf
            }
            Self::Kept(s) => s.as_bytes(),
        }
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buf = [0; 32];
        // Visible ASCII only.
        f.write_str(std::str::from_utf8(self.bytes(&mut buf)).unwrap_or_default())
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// The field a request id travels in, ready for a head: `Name: ` and the name's bit in a head's
/// set of names. Names are interned for the life of the process — a few bytes for each
/// distinct name ever configured — so that every request can carry one by copy, without a
/// reference count shared by the workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdName {
    /// `Name: `.
    line: &'static str,
    bit: u64,
}

impl IdName {
    /// The interned field `name` (a configured one: this takes a lock, never on the data path).
    pub fn new(name: &str) -> Self {
        static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
        let line = format!("{name}: ");
        let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
        let line = match names.iter().find(|l| **l == line) {
            Some(l) => *l,
            None => {
                let l: &'static str = Box::leak(line.into_boxed_str());
                names.push(l);
                l
            }
        };
        Self {
            line,
            bit: name_bit(name.as_bytes()),
        }
    }

    /// The field's name.
    pub fn as_str(&self) -> &'static str {
        &self.line[..self.line.len() - 2]
    }
}

/// A request id with the field it travels in, as a response head carries it.
#[derive(Clone, Debug)]
pub struct IdField {
    pub name: IdName,
    pub id: RequestId,
}

impl IdField {
    /// Puts the id in `head`, in place of any field of the name (an upstream's echo).
    pub fn apply(&self, head: &mut ResponseHead) {
        if head.may_hold(self.name.bit) {
            let name = self.name.as_str().as_bytes();
            head.remove_fields(|n| n.eq_ignore_ascii_case(name));
        }
        match &self.id {
            RequestId::Generated(bits) => {
                let mut value = [0; 34];
                value[..32].copy_from_slice(&hex_u128(*bits));
                value[32..].copy_from_slice(b"\r\n");
                head.line(self.name.bit, self.name.line.as_bytes(), &value);
            }
            RequestId::Kept(id) => {
                head.header_bytes(self.name.as_str(), id.as_bytes());
            }
        }
    }
}

/// A parsed, valid `traceparent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

/// The sampled bit of the trace flags.
pub const SAMPLED: u8 = 1;

impl TraceParent {
    /// Parses `version-traceid-parentid-flags` (W3C Trace Context §3.2): lower-case hex,
    /// neither id all zeros, version `ff` invalid; a later version may carry more after a
    /// `-`, which is ignored.
    pub fn parse(v: &[u8]) -> Option<Self> {
        let v = v.trim_ascii();
        if v.len() < 55 {
            return None;
        }
        let version = hex_byte(&v[0..2])?;
        if version == 0xff || (version == 0 && v.len() != 55) {
            return None;
        }
        if version > 0 && v.len() > 55 && v[55] != b'-' {
            return None;
        }
        if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
            return None;
        }
        let mut trace_id = [0; 16];
        let mut parent_id = [0; 8];
        for (i, b) in trace_id.iter_mut().enumerate() {
            *b = hex_byte(&v[3 + 2 * i..5 + 2 * i])?;
        }
        for (i, b) in parent_id.iter_mut().enumerate() {
            *b = hex_byte(&v[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&v[53..55])?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// `00-<trace>-<parent>-<flags>`.
    pub fn write(&self, out: &mut [u8; 55]) {
        out[..3].copy_from_slice(b"00-");
        out[3..35].copy_from_slice(&hex_u128(u128::from_be_bytes(self.trace_id)));
        out[35] = b'-';
        out[36..52].copy_from_slice(&hex_u64(u64::from_be_bytes(self.parent_id)));
        out[52] = b'-';
        hex_into(&[self.flags], &mut out[53..55]);
    }

    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }
}

/// How the request's trace context goes to its upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    /// `[tracing] propagate = false`: the client's fields go on like any other.
    Off,
    /// A trusted peer's trace, not exported here: its `traceparent` and `tracestate` go on
    /// unchanged.
    Unchanged,
    /// A trusted peer's trace with this request's span: a new `traceparent` (same trace, this
    /// span as parent), its `tracestate` kept.
    Child,
    /// A new trace: a new `traceparent`, and no `tracestate`.
    New,
}

/// One request's ids, decided before its answer.
#[derive(Clone, Debug)]
pub struct Ids {
    /// `None` when request ids are off.
    pub request_id: Option<RequestId>,
    pub propagation: Propagation,
    /// The `traceparent` the upstream gets (with [`Propagation::Child`] and
    /// [`Propagation::New`]): the trace, this request's span id, the flags.
    pub context: TraceParent,
    /// The span this request's came from (a trusted peer's parent id), for the exported span.
    pub parent: Option<[u8; 8]>,
    /// This request's span is exported.
    pub export: bool,
}

impl Ids {
    /// Decides `req`'s ids: `trusted` says whether its peer may state them.
    pub fn decide(req: &RequestHead, trusted: impl FnOnce() -> bool, t: &Telemetry) -> Self {
        // Asked only when the request carries one of the fields.
        let mut trust = None;
        let mut trusted = Some(trusted);
        let mut is_trusted = || *trust.get_or_insert_with(|| trusted.take().is_some_and(|f| f()));
        let mut ids = Ids::none();
        // One pass over the fields for both.
        let (mut traceparents, mut tp, mut stated) = (0, None, None);
        let id_name = t.header.map_or("", |n| n.as_str());
        for h in &req.headers {
            if t.propagate && h.name.eq_ignore_ascii_case("traceparent") {
                traceparents += 1;
                tp = Some(h.value.as_slice());
            } else if stated.is_none()
                && !id_name.is_empty()
                && h.name.eq_ignore_ascii_case(id_name)
            {
                stated = Some(h.value.as_slice());
            }
        }
        if t.propagate {
            // Two of them: invalid (W3C Trace Context §3.2).
            let kept = tp
                .filter(|_| traceparents == 1 && is_trusted())
                .and_then(TraceParent::parse);
            match kept {
                Some(tp) => {
                    ids.export = t.export && tp.sampled();
                    ids.context = tp;
                    // Only the flags version 00 defines go on (sampled, random).
                    ids.context.flags &= 0x03;
                    if ids.export {
                        ids.parent = Some(tp.parent_id);
                        ids.context.parent_id = span_id();
                        ids.propagation = Propagation::Child;
                    } else {
                        ids.propagation = Propagation::Unchanged;
                    }
                }
                None => {
                    let sampled = t.sample_ratio > 0.0
                        && (t.sample_ratio >= 1.0 || fastrand::f64() < t.sample_ratio);
                    // One draw: the span id is mixed from the trace's bits (unique per trace,
                    // and the root span is the only one this trace has here).
                    let bits = fastrand::u128(..).max(1);
                    ids.context = TraceParent {
                        trace_id: bits.to_be_bytes(),
                        parent_id: root_span_id(bits),
                        flags: if sampled { SAMPLED } else { 0 },
                    };
                    ids.export = t.export && sampled;
                    ids.propagation = Propagation::New;
                }
            }
        }
        if t.header.is_some() {
            let kept = stated.filter(|_| is_trusted()).and_then(RequestId::parse);
            // A new trace's id is the request's own; a kept trace spans many requests, each of
            // which gets an id of its own.
            ids.request_id = Some(kept.unwrap_or_else(|| match ids.propagation {
                Propagation::New => RequestId::Generated(u128::from_be_bytes(ids.context.trace_id)),
                _ => RequestId::random(),
            }));
        }
        ids
    }

    /// The ids of a request that could not be parsed: a new request id only.
    pub fn unparsed(t: &Telemetry) -> Self {
        Ids {
            request_id: t.header.as_ref().map(|_| RequestId::random()),
            ..Ids::none()
        }
    }

    /// No id, no trace: what is then filled in.
    fn none() -> Self {
        Ids {
            request_id: None,
            propagation: Propagation::Off,
            context: TraceParent {
                trace_id: [0; 16],
                parent_id: [0; 8],
                flags: 0,
            },
            parent: None,
            export: false,
        }
    }

    /// Whether the client's field `name` stays out of the upstream request (the daemon writes
    /// its own, or drops it).
    pub fn replaces(&self, name: &str, header: Option<&str>) -> bool {
        let replaced_trace = match self.propagation {
            Propagation::Off | Propagation::Unchanged => false,
            Propagation::Child => name.eq_ignore_ascii_case("traceparent"),
            Propagation::New => {
                name.eq_ignore_ascii_case("traceparent") || name.eq_ignore_ascii_case("tracestate")
            }
        };
        replaced_trace
            || (self.request_id.is_some() && header.is_some_and(|h| h.eq_ignore_ascii_case(name)))
    }

    /// The `traceparent` the daemon writes to the upstream, if it writes one.
    pub fn traceparent(&self) -> Option<[u8; 55]> {
        matches!(self.propagation, Propagation::Child | Propagation::New).then(|| {
            let mut out = [0; 55];
            self.context.write(&mut out);
            out
        })
    }
}

/// A new span id (never all zeros).
fn span_id() -> [u8; 8] {
    fastrand::u64(..).max(1).to_be_bytes()
}

/// The span id of a new trace's root, from its trace id's bits (never all zeros).
fn root_span_id(trace: u128) -> [u8; 8] {
    let mixed = ((trace >> 64) as u64 ^ trace as u64)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .rotate_left(29);
    mixed.max(1).to_be_bytes()
}

/// Whether `trusted` holds `peer`: the question [`Ids::decide`] asks.
pub fn trusts(trusted: &IpSet, peer: std::net::IpAddr) -> bool {
    trusted.contains(crate::security::canonical(peer))
}

/// Each byte's two lower-case hex digits.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 15]];
        i += 1;
    }
    t
};

/// `x` in 16 lower-case hex digits, most significant first, four bytes at a time in a
/// `u64`: each byte spread to a 16-bit lane, its nibbles to the lane's two bytes, and each
/// nibble made its digit with one add (letters get 39 more) — no table, no loop per digit.
pub fn hex_u64(x: u64) -> [u8; 16] {
    let mut out = [0; 16];
    out[..8].copy_from_slice(&hex_u32((x >> 32) as u32));
    out[8..].copy_from_slice(&hex_u32(x as u32));
    out
}

/// `x` in 8 lower-case hex digits (see [`hex_u64`]).
fn hex_u32(x: u32) -> [u8; 8] {
    const LO: u64 = 0x000f_000f_000f_000f;
    const ONES: u64 = 0x0101_0101_0101_0101;
    // The most significant byte first in memory: lane i holds byte i.
    let x = u64::from(x.swap_bytes());
    let x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
    let lanes = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
    // A lane's first byte (in memory) gets its high nibble, the second its low one.
    let nibbles = ((lanes >> 4) & LO) | ((lanes & LO) << 8);
    // 1 in each byte whose nibble is 10–15 (no carry crosses a byte: 15 + 6 < 256).
    let letters = ((nibbles + ONES * 6) >> 4) & ONES;
    (nibbles + ONES * u64::from(b'0') + letters * u64::from(b'a' - b'0' - 10)).to_le_bytes()
}

/// `x` in 32 lower-case hex digits.
pub fn hex_u128(x: u128) -> [u8; 32] {
    let mut out = [0; 32];
    out[..16].copy_from_slice(&hex_u64((x >> 64) as u64));
    out[16..].copy_from_slice(&hex_u64(x as u64));
    out
}

/// Lower-case hex of `bytes` into `out` (twice as long).
pub fn hex_into(bytes: &[u8], out: &mut [u8]) {
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(*b)]);
    }
}

/// One byte from two lower-case hex digits.
fn hex_byte(two: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some(digit(*two.first()?)? << 4 | digit(*two.get(1)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::Header;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn req(fields: &[(&str, &str)]) -> RequestHead {
        let mut r = crate::http::h1::request::parse(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 8192)
            .unwrap()
            .unwrap()
            .0;
        r.headers = fields
            .iter()
            .map(|(n, v)| Header {
                name: n.to_string(),
                value: v.as_bytes().to_vec(),
            })
            .collect();
        r
    }

    fn telemetry(export: bool, ratio: f64) -> Telemetry {
        Telemetry {
            header: Some(IdName::new("X-Request-Id")),
            propagate: true,
            sample_ratio: ratio,
            export,
        }
    }

    fn written(ids: &Ids) -> String {
        String::from_utf8(ids.traceparent().unwrap().to_vec()).unwrap()
    }

    #[test]
    fn traceparent_parsing_follows_the_spec() {
        let tp = TraceParent::parse(TP.as_bytes()).unwrap();
        assert!(tp.sampled());
        let mut out = [0; 55];
        tp.write(&mut out);
        assert_eq!(&out[..], TP.as_bytes());
        // A later version may add fields after a dash.
        let v1 = format!("01{}-abc", &TP[2..]);
        assert!(TraceParent::parse(v1.as_bytes()).is_some());
        for bad in [
            "",
            &TP[..54],
            &format!("{TP}-x"),
            &TP.to_uppercase(),
            &format!("ff{}", &TP[2..]),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            &format!("01{}x", &TP[2..]),
        ] {
            assert!(TraceParent::parse(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_trusted_trace_goes_on_unchanged_unless_exported() {
        let r = req(&[("traceparent", TP), ("tracestate", "a=1")]);
        let ids = Ids::decide(&r, || true, &telemetry(false, 0.0));
        assert_eq!(ids.propagation, Propagation::Unchanged);
        assert!(ids.traceparent().is_none() && !ids.replaces("traceparent", None));
        // A kept trace spans many requests: the request's id is its own.
        let id = ids.request_id.clone().unwrap().to_string();
        assert_ne!(id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(id.len(), 32);
        // Exported: same trace, this request's span as the parent, tracestate kept.
        let ids = Ids::decide(&r, || true, &telemetry(true, 0.0));
        assert_eq!(ids.propagation, Propagation::Child);
        let w = written(&ids);
        assert_eq!(&w[..36], &TP[..36]);
        assert_ne!(&w[36..52], &TP[36..52]);
        assert_eq!(
            ids.parent,
            Some(TraceParent::parse(TP.as_bytes()).unwrap().parent_id)
        );
        assert!(
            ids.export && ids.replaces("traceparent", None) && !ids.replaces("tracestate", None)
        );
        // An unsampled trusted trace is not exported, so not re-parented.
        let unsampled = req(&[("traceparent", &TP.replace("-01", "-00"))]);
        let ids = Ids::decide(&unsampled, || true, &telemetry(true, 1.0));
        assert_eq!(ids.propagation, Propagation::Unchanged);
        assert!(!ids.export);
    }

    #[test]
    fn untrusted_missing_or_malformed_start_a_new_trace() {
        for (fields, trusted) in [
            (vec![("traceparent", TP), ("tracestate", "a=1")], false),
            (vec![("tracestate", "a=1")], true),
            (
                vec![("traceparent", "garbage"), ("tracestate", "a=1")],
                true,
            ),
            (vec![("traceparent", TP), ("traceparent", TP)], true),
        ] {
            let r = req(&fields);
            let ids = Ids::decide(&r, || trusted, &telemetry(false, 0.0));
            assert_eq!(ids.propagation, Propagation::New);
            let w = written(&ids);
            assert!(TraceParent::parse(w.as_bytes()).is_some(), "{w}");
            assert!(w.ends_with("-00"), "unsampled at ratio 0: {w}");
            assert_ne!(&w[3..35], &TP[3..35]);
            assert!(ids.replaces("traceparent", None) && ids.replaces("tracestate", None));
            assert_eq!(ids.request_id.clone().unwrap().to_string(), &w[3..35]);
        }
        let ids = Ids::decide(&req(&[]), || true, &telemetry(true, 1.0));
        assert!(ids.export && written(&ids).ends_with("-01"));
    }

    #[test]
    fn request_ids_are_kept_only_from_trusted_peers_and_only_when_sane() {
        let t = telemetry(false, 0.0);
        let r = req(&[("x-request-id", "abc-123")]);
        let ids = Ids::decide(&r, || true, &t);
        assert_eq!(ids.request_id.clone().unwrap().to_string(), "abc-123");
        assert!(ids.replaces("X-Request-Id", Some("x-request-id")));
        let ids = Ids::decide(&r, || false, &t);
        assert_ne!(ids.request_id.clone().unwrap().to_string(), "abc-123");
        assert_eq!(ids.request_id.clone().unwrap().to_string().len(), 32);
        let long = "a".repeat(MAX_ID_LEN + 1);
        for bad in ["", "a b", "a\"b", "a\\b", "é", long.as_str()] {
            assert!(RequestId::parse(bad.as_bytes()).is_none(), "{bad}");
        }
        // Off: no id, nothing replaced, trust never asked.
        let off = Telemetry {
            header: None,
            propagate: false,
            sample_ratio: 0.0,
            export: false,
        };
        let ids = Ids::decide(&r, || panic!("asked"), &off);
        assert!(ids.request_id.is_none() && !ids.replaces("x-request-id", None));
        // Without trace context, a fresh id is random hex.
        let t = Telemetry {
            propagate: false,
            ..telemetry(false, 0.0)
        };
        let a = Ids::decide(&req(&[]), || true, &t)
            .request_id
            .unwrap()
            .to_string();
        let b = Ids::decide(&req(&[]), || true, &t)
            .request_id
            .unwrap()
            .to_string();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }

    #[test]
    fn an_id_field_replaces_an_echo_and_names_are_interned() {
        let name = IdName::new("X-Request-Id");
        assert_eq!(name.as_str(), "X-Request-Id");
        // Interned: one copy of the name however many configs name it.
        assert!(std::ptr::eq(name.line, IdName::new("X-Request-Id").line));
        assert_ne!(IdName::new("X-Trace"), name);
        let head = |id: RequestId| {
            let mut head = ResponseHead::new(200);
            head.header("x-request-id", "echo").header("Server", "up");
            IdField { name, id }.apply(&mut head);
            String::from_utf8(head.finish().to_vec()).unwrap()
        };
        let out = head(RequestId::from_bits(0xab << 120 | 0x0f));
        assert!(
            !out.contains("echo") && out.contains("Server: up\r\n"),
            "{out}"
        );
        assert!(
            out.contains("\r\nX-Request-Id: ab00000000000000000000000000000f\r\n"),
            "{out}"
        );
        let out = head(RequestId::parse(b"peer-7").unwrap());
        assert!(
            !out.contains("echo") && out.contains("\r\nX-Request-Id: peer-7\r\n"),
            "{out}"
        );
    }

    #[test]
    fn hex_digits() {
        assert_eq!(&hex_u64(0x0123_4567_89ab_cdef), b"0123456789abcdef");
        assert_eq!(&hex_u64(u64::MAX), b"ffffffffffffffff");
        for x in [
            0u128,
            1,
            0xfedc_ba98_7654_3210_0f1e_2d3c_4b5a_6978,
            u128::MAX,
        ] {
            let mut slow = [0; 32];
            hex_into(&x.to_be_bytes(), &mut slow);
            assert_eq!(hex_u128(x), slow, "{x:x}");
            assert_eq!(std::str::from_utf8(&slow).unwrap(), format!("{x:032x}"));
        }
    }

    #[test]
    fn trust_is_asked_only_when_a_field_is_there() {
        let t = telemetry(false, 0.0);
        let ids = Ids::decide(&req(&[]), || panic!("asked"), &t);
        assert_eq!(ids.propagation, Propagation::New);
    }
}

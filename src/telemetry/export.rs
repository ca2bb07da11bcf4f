//! Span export: sampled requests' spans, queued by the workers without waiting, sent to an
//! OTLP/HTTP collector (protobuf, `opentelemetry-proto`'s types) in batches by a thread of
//! its own.
//!
//! A worker's part is [`submit`]: a `try_send` on a bounded queue (`export_queue_size`),
//! never a wait; a full queue drops the span and counts it. The exporter thread wakes every
//! [`POLL`], and sends when `export_batch_size` spans wait or the oldest has waited
//! `export_interval_ms`. It never blocks on a worker, and a slow or dead collector only makes
//! it drop spans: each POST has a deadline ([`IO_TIMEOUT`]), a failed one loses its batch
//! (counted), and nothing is retried into a full queue.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message as _;

use super::RequestId;
use crate::config::Tracing;

/// How often the exporter looks at its queue.
const POLL: Duration = Duration::from_millis(100);
/// One POST's deadline: connect, send, and the collector's answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// One finished request, as its span says it.
#[derive(Debug)]
pub struct SpanData {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The trusted peer's span this one's parent is.
    pub parent: Option<[u8; 8]>,
    pub flags: u8,
    /// Nanoseconds since the Unix epoch.
    pub start: u64,
    pub end: u64,
    pub method: String,
    /// The route's prefix as written (`http.route`); `None` when no route matched.
    pub route: Option<String>,
    /// The route's `host/prefix`, as the access log names it.
    pub route_key: Option<String>,
    pub path: String,
    pub query: Option<String>,
    pub scheme: &'static str,
    pub host: Option<String>,
    pub protocol_version: &'static str,
    pub status: u16,
    pub client: IpAddr,
    pub peer: SocketAddr,
    pub user_agent: Option<String>,
    pub body_bytes: u64,
    pub upstream: Option<SocketAddr>,
    pub upstream_time: Option<Duration>,
    pub request_id: Option<RequestId>,
}

/// What the exporter has done, since start.
#[derive(Debug, Default)]
pub struct Counters {
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans dropped because the queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Spans lost with a batch the collector did not take (unreachable, slow, an error).
    pub dropped_export_failed: AtomicU64,
    /// POSTs that failed.
    pub failed_requests: AtomicU64,
}

/// The counters, for metrics (zero until the exporter starts).
pub fn counters() -> &'static Counters {
    static COUNTERS: OnceLock<Counters> = OnceLock::new();
    COUNTERS.get_or_init(Counters::default)
}

struct Exporter {
    queue: SyncSender<SpanData>,
    settings: Arc<Mutex<Tracing>>,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// Starts the exporter thread (once per process; its queue's size is fixed then), or hands
/// the running one `tracing`'s endpoint and batch settings. Called by the control thread when
/// a config with `otlp_endpoint` is put in force.
pub fn configure(tracing: &Tracing) -> std::io::Result<()> {
    if let Some(e) = EXPORTER.get() {
        if let Ok(mut s) = e.settings.lock() {
            if s.export_queue_size != tracing.export_queue_size {
                log::warn!(
                    "tracing.export_queue_size: {} stays in force until the daemon restarts",
                    s.export_queue_size
                );
            }
            let queue = s.export_queue_size;
            *s = tracing.clone();
            s.export_queue_size = queue;
        }
        return Ok(());
    }
    if tracing.otlp_endpoint.is_none() {
        return Ok(());
    }
    let (tx, rx) = sync_channel(tracing.export_queue_size);
    let settings = Arc::new(Mutex::new(tracing.clone()));
    let theirs = settings.clone();
    std::thread::Builder::new()
        .name("zcs-otlp".into())
        .spawn(move || run(rx, &theirs))?;
    let _ = EXPORTER.set(Exporter {
        queue: tx,
        settings,
    });
    Ok(())
}

/// Queues a finished request's span; never waits (a full queue drops it, counted).
pub fn submit(span: SpanData) {
    let Some(e) = EXPORTER.get() else {
        return;
    };
    match e.queue.try_send(span) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
            counters()
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The exporter thread: batches from the queue, one POST per batch. It runs at the idle
/// scheduling class: a worker sharing its core always goes first, and when the cores are
/// busy the exporter falls behind and the queue drops spans — never the requests.
fn run(rx: Receiver<SpanData>, settings: &Mutex<Tracing>) {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler on the calling thread (0) with a valid param; lowering the
    // class needs no privilege.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
        log::debug!(
            "tracing: the exporter runs at the normal priority: {}",
            std::io::Error::last_os_error()
        );
    }
    let mut batch: Vec<SpanData> = Vec::new();
    let mut oldest: Option<Instant> = None;
    let mut warn = Warnings::default();
    loop {
        std::thread::sleep(POLL);
        let Ok(now) = settings.lock().map(|s| s.clone()) else {
            return;
        };
        loop {
            match rx.try_recv() {
                Ok(span) => {
                    oldest.get_or_insert_with(Instant::now);
                    batch.push(span);
                    if batch.len() >= now.export_batch_size {
                        send(&now, std::mem::take(&mut batch), &mut warn);
                        oldest = None;
                    }
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
            }
        }
        if oldest.is_some_and(|t| t.elapsed() >= now.export_interval) {
            send(&now, std::mem::take(&mut batch), &mut warn);
            oldest = None;
        }
    }
}

/// The exporter's warnings: the first failure, then at most one a minute (with the count of
/// the others); and when export works again.
#[derive(Default)]
struct Warnings {
    last: Option<Instant>,
    quiet: u64,
}

/// How often a failing collector is reported.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Sends one batch, counting what became of it.
fn send(settings: &Tracing, batch: Vec<SpanData>, warn: &mut Warnings) {
    let n = batch.len() as u64;
    let c = counters();
    let Some(endpoint) = &settings.otlp_endpoint else {
        // Export was turned off by a reload: what was queued goes nowhere.
        c.dropped_export_failed.fetch_add(n, Ordering::Relaxed);
        return;
    };
    let body = encode(settings, batch);
    match post(endpoint, &body) {
        Ok(()) => {
            c.exported.fetch_add(n, Ordering::Relaxed);
            if warn.last.take().is_some() {
                log::info!("tracing: spans are exported to {} again", endpoint.url);
            }
        }
        Err(e) => {
            c.failed_requests.fetch_add(1, Ordering::Relaxed);
            c.dropped_export_failed.fetch_add(n, Ordering::Relaxed);
            if warn.last.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                let others = std::mem::take(&mut warn.quiet);
                let since = if others > 0 {
                    format!(" ({others} other failed export(s) since the last warning)")
                } else {
                    String::new()
                };
                log::warn!(
                    "tracing: {n} span(s) not exported to {}: {e}{since}",
                    endpoint.url
                );
                warn.last = Some(Instant::now());
            } else {
                warn.quiet += 1;
            }
        }
    }
}

/// POSTs an OTLP/HTTP protobuf body; `Ok` for a 2xx answer.
fn post(endpoint: &crate::config::OtlpEndpoint, body: &[u8]) -> Result<(), String> {
    let deadline = Instant::now() + IO_TIMEOUT;
    let addrs: Vec<SocketAddr> = (endpoint.host.as_str(), endpoint.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", endpoint.host))?
        .collect();
    let mut stream = None;
    let mut last = String::from("no address");
    for a in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&a, left) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("connecting to {a}: {e}"),
        }
    }
    let mut s = stream.ok_or(last)?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-protobuf\r\n\
         Content-Length: {}\r\nUser-Agent: {}\r\nConnection: close\r\n\r\n",
        endpoint.path,
        endpoint.authority,
        body.len(),
        crate::http::response::SERVER
    );
    write_by(&mut s, head.as_bytes(), deadline)?;
    write_by(&mut s, body, deadline)?;
    // The status line is all that matters; the rest is not waited for.
    let mut answer = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !answer.contains(&b'\n') && answer.len() < 4096 {
        s.set_read_timeout(Some(left_until(deadline)?))
            .map_err(|e| e.to_string())?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("waiting for the answer: {e}")),
        }
    }
    let line = answer
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or_default();
    let status = line.split(|&b| b == b' ').nth(1).unwrap_or_default();
    if status.first() == Some(&b'2') && status.len() == 3 {
        Ok(())
    } else {
        Err(format!(
            "the collector answered {:?}",
            String::from_utf8_lossy(line)
        ))
    }
}

/// Time left until `deadline` (one export's whole budget), or the error that it has passed.
fn left_until(deadline: Instant) -> Result<Duration, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left < Duration::from_millis(1) {
        return Err(format!("no answer within {} s", IO_TIMEOUT.as_secs()));
    }
    Ok(left)
}

/// Writes `bytes` by `deadline`, however slowly the collector reads.
fn write_by(s: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> Result<(), String> {
    while !bytes.is_empty() {
        s.set_write_timeout(Some(left_until(deadline)?))
            .map_err(|e| e.to_string())?;
        match s.write(&bytes[..bytes.len().min(64 * 1024)]) {
            Ok(0) => return Err("sending: the collector closed the connection".into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("sending: {e}")),
        }
    }
    Ok(())
}

/// The OTLP request for a batch: one resource (the service), one scope (the daemon).
pub fn encode(settings: &Tracing, batch: Vec<SpanData>) -> Vec<u8> {
    let resource = Resource {
        attributes: vec![
            kv("service.name", s(&settings.service_name)),
            kv("service.version", s(env!("CARGO_PKG_VERSION"))),
            kv("process.pid", int(i64::from(std::process::id()))),
        ],
        ..Default::default()
    };
    let spans = batch.into_iter().map(span).collect();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "zerocopy-server".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    request.encode_to_vec()
}

/// A server span, with the OpenTelemetry HTTP semantic conventions' attributes.
fn span(d: SpanData) -> Span {
    let mut a = vec![
        kv("http.request.method", s(&d.method)),
        kv("url.path", s(&d.path)),
        kv("url.scheme", s(d.scheme)),
        kv("http.response.status_code", int(i64::from(d.status))),
        kv("network.protocol.name", s("http")),
        kv("network.protocol.version", s(d.protocol_version)),
        kv("client.address", s(&d.client.to_string())),
        kv("network.peer.address", s(&d.peer.ip().to_string())),
        kv("network.peer.port", int(i64::from(d.peer.port()))),
        kv("http.response.body.size", int(d.body_bytes as i64)),
    ];
    if let Some(q) = &d.query {
        a.push(kv("url.query", s(q)));
    }
    if let Some(h) = &d.host {
        a.push(kv("server.address", s(h)));
    }
    if let Some(r) = &d.route {
        a.push(kv("http.route", s(r)));
    }
    if let Some(r) = &d.route_key {
        a.push(kv("zerocopy.route", s(r)));
    }
    if let Some(ua) = &d.user_agent {
        a.push(kv("user_agent.original", s(ua)));
    }
    if let Some(u) = d.upstream {
        a.push(kv("zerocopy.upstream.address", s(&u.to_string())));
    }
    if let Some(t) = d.upstream_time {
        a.push(kv("zerocopy.upstream.duration", double(t.as_secs_f64())));
    }
    if let Some(id) = &d.request_id {
        a.push(kv("zerocopy.request_id", s(&id.to_string())));
    }
    let name = match &d.route {
        Some(r) => format!("{} {r}", d.method),
        None => d.method.to_string(),
    };
    // Server spans: a 5xx is the server's error; a 4xx is the client's (unset).
    let status = (d.status >= 500 || d.status == 0).then(|| Status {
        code: status::StatusCode::Error as i32,
        message: String::new(),
    });
    // The span flags: the trace flags, and whether the parent is known to be remote.
    let remote = if d.parent.is_some() { 0x300 } else { 0x100 };
    Span {
        trace_id: d.trace_id.to_vec(),
        span_id: d.span_id.to_vec(),
        parent_span_id: d.parent.map(|p| p.to_vec()).unwrap_or_default(),
        flags: u32::from(d.flags) | remote,
        name,
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: d.start,
        end_time_unix_nano: d.end,
        attributes: a,
        status,
        ..Default::default()
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

fn int(v: i64) -> any_value::Value {
    any_value::Value::IntValue(v)
}

fn double(v: f64) -> any_value::Value {
    any_value::Value::DoubleValue(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> SpanData {
        SpanData {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent: Some([3; 8]),
            flags: 1,
            start: 10,
            end: 20,
            method: "GET".into(),
            route: Some("/api/".into()),
            route_key: Some("example.com/api".into()),
            path: "/api/x".into(),
            query: Some("a=1".into()),
            scheme: "http",
            host: Some("example.com".into()),
            protocol_version: "1.1",
            status: 502,
            client: "10.0.0.1".parse().unwrap(),
            peer: "127.0.0.1:5000".parse().unwrap(),
            user_agent: Some("curl".into()),
            body_bytes: 12,
            upstream: Some("127.0.0.1:9000".parse().unwrap()),
            upstream_time: Some(Duration::from_millis(3)),
            request_id: Some(RequestId::from_bits(7)),
        }
    }

    #[test]
    fn a_batch_decodes_back_with_the_conventions_attributes() {
        let bytes = encode(&Tracing::default(), vec![data()]);
        let back = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let rs = &back.resource_spans[0];
        let service = &rs.resource.as_ref().unwrap().attributes[0];
        assert_eq!(service.key, "service.name");
        let span = &rs.scope_spans[0].spans[0];
        assert_eq!(span.trace_id, vec![1; 16]);
        assert_eq!(span.parent_span_id, vec![3; 8]);
        assert_eq!(span.name, "GET /api/");
        assert_eq!(span.kind, span::SpanKind::Server as i32);
        assert_eq!(span.flags, 0x301);
        assert_eq!(
            span.status.as_ref().unwrap().code,
            status::StatusCode::Error as i32
        );
        let attr = |k: &str| {
            span.attributes
                .iter()
                .find(|a| a.key == k)
                .and_then(|a| a.value.clone())
                .and_then(|v| v.value)
        };
        assert_eq!(attr("http.response.status_code"), Some(int(502)));
        assert_eq!(attr("http.route"), Some(s("/api/")));
        assert_eq!(attr("zerocopy.upstream.address"), Some(s("127.0.0.1:9000")));
    }

    #[test]
    fn a_dead_collector_is_an_error_within_the_deadline() {
        // A port nothing listens on (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = crate::config::OtlpEndpoint {
            url: format!("http://127.0.0.1:{port}/v1/traces"),
            host: "127.0.0.1".into(),
            port,
            authority: format!("127.0.0.1:{port}"),
            path: "/v1/traces".into(),
        };
        let started = Instant::now();
        assert!(post(&e, b"x").is_err());
        assert!(started.elapsed() < IO_TIMEOUT + Duration::from_secs(1));
    }
}

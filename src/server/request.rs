//! One request on a connection, its phases in the order they run — [`Conn::request`] reads top
//! to bottom:
//!
//! 1. **head**: read and parsed within the header timeout and size limits ([`Conn::read_head`]);
//! 2. **admit**: counted in flight, the current snapshot loaded;
//! 3. **route**: the path normalised and matched to a route ([`answer`]);
//! 4. **policy**: the route's addresses, methods, rate limit and head limits;
//! 5. **backend**: a file ([`crate::files`]) or an upstream ([`crate::proxy`]), answering
//!    through the protocol's [`Downstream`] — or, on failure, the error's response
//!    ([`answer_error`], the one place a failure becomes a status);
//! 6. **log**: counted on its route and written to the access log ([`Conn::finish`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::connection::{Conn, Read};
use super::h1::H1Downstream;
use super::WorkerCtx;
use crate::access_log;
use crate::config::{Backend, RouteSecurity};
use crate::error::{Error, ErrorKind, Side};
use crate::exchange::{Body, BodyLimits, Downstream};
use crate::http::h1::request as head;
use crate::http::redirect::RedirectFrom;
use crate::http::request::{BodyKind, RequestHead};
use crate::http::response::{reason, ResponseHead};
use crate::http::{path, Method};
use crate::limiter::Verdict;
use crate::metrics::WorkerStats;
use crate::net::client::Meter;
use crate::proxy;
use crate::route::{Matched, Target};
use crate::shared::Shared;
use crate::site::{Shaped, Site};
use crate::snapshot::{HeadLimits, Snapshot};
use crate::telemetry::{self, IdField, Ids, RequestId, Telemetry};

impl Conn {
    /// Reads one request head (complete by `deadline`, by default `header_timeout` from now)
    /// and answers it; `false` when the connection is to close.
    pub(super) async fn request(&mut self, deadline: Option<Instant>) -> bool {
        // 1. The head. The request's clock starts at its first byte (or when a pipelined one
        // is next).
        let (limits, h2c) = {
            let snapshot = self.shared.snapshot.load();
            // HTTP/2 prior knowledge begins a connection, never follows a request.
            let h2c = deadline.is_some()
                && !self.client.is_tls()
                && snapshot.config.http2.h2c
                && self
                    .shared
                    .listener_in(self.listener, &snapshot)
                    .is_some_and(|l| l.http2);
            (snapshot.head_limits(), h2c)
        };
        let started = Instant::now();
        self.client.meter = Meter::default();
        let deadline = deadline.unwrap_or(started + limits.header_timeout);
        let Some((req, sizes)) = self.read_head(deadline, limits, started, h2c).await else {
            return false;
        };
        // 2. Admitted: in flight until its response is done, on the snapshot of this moment.
        let shared = self.shared.clone();
        let _in_flight = InFlight::new(&shared.workers[self.worker].in_flight);
        let snapshot = shared.snapshot.load_full();
        let mut trace = Trace::default();
        let worker = self.ctx.clone();
        let ctx = Ctx {
            peer: self.peer,
            worker: &worker,
            shared: &shared,
            tls: self.client.is_tls(),
            listener: self.listener,
        };
        let mut ds = H1Downstream::new(
            &mut self.client,
            &mut self.buf,
            &req,
            !shared.is_draining(),
            BodyLimits::default(),
        );
        // 3–5. Routed, checked and answered.
        let result = answer(&mut ds, &ctx, &req, &snapshot, sizes, &mut trace).await;
        // What the response promised: one that said keep-alive (its request came before a
        // drain began) waits for the next request, which a drain answers with `Connection:
        // close` — closing now could meet that request on its way.
        let keep_alive = ds.keeps_alive();
        // A response that went out while the client may still be sending its body (an
        // upstream that answered early) closes with a lingering close, so that the client
        // reads it instead of a reset.
        let (go_on, linger) = match result {
            Ok(()) => (keep_alive, !ds.body_done()),
            Err(e) => {
                let close = !keep_alive || e.must_close();
                if close {
                    ds.close();
                }
                let site = snapshot.site_for(trace.route, req.host.as_deref());
                let id = trace.request_id();
                match answer_error(&mut ds, e, Some(&req), ctx.peer, site, id).await {
                    Some(sent) => (!close, sent && close),
                    None => {
                        self.aborted = true;
                        (!close, false)
                    }
                }
            }
        };
        // 6. Counted and logged before any lingering close: that is not the request's time.
        self.finish(Some(&req), Some(&snapshot), &trace, started);
        drop(snapshot);
        if linger {
            self.linger().await;
        }
        go_on
    }

    /// Reads and parses a request head by `deadline`. A malformed or late one is answered (and
    /// logged) here; `None` then, and the connection closes.
    async fn read_head(
        &mut self,
        deadline: Instant,
        limits: HeadLimits,
        started: Instant,
        h2c: bool,
    ) -> Option<(RequestHead, HeadSizes)> {
        // Parse when a line may have ended (or the limits may be crossed), not on every byte a
        // slow client trickles in.
        let mut scanned = 0;
        let failure = loop {
            let fresh = self.buf.get(scanned..).unwrap_or_default();
            if fresh.contains(&b'\n') && h2c && self.buf.starts_with(H2_PREFACE_LINE) {
                // HTTP/2 with prior knowledge: the connection changes hands, with what it
                // sent so far (the `h2` crate checks the whole preface).
                self.h2c = true;
                return None;
            }
            if fresh.contains(&b'\n') || self.buf.len() > limits.max_header_size {
                match head::parse(&self.buf, limits.max_header_size) {
                    Ok(Some((req, consumed))) => {
                        let sizes = HeadSizes::measure(&self.buf[..consumed]);
                        self.buf.drain(..consumed);
                        return Some((req, sizes));
                    }
                    Ok(None) => {}
                    Err(e) => break Error::from(e),
                }
            }
            scanned = self.buf.len();
            // A read that times out takes its buffer with it: note first whether this request
            // has begun.
            let begun = !self.buf.is_empty();
            match self.read_more(deadline).await {
                Read::Data => {}
                Read::Eof => return None,
                Read::Timeout if begun => {
                    break Error::client(ErrorKind::ClientTimeout, "request head too slow")
                }
                Read::Timeout => return None,
            }
        };
        let mut ds = H1Downstream::without_request(&mut self.client, &mut self.buf);
        let mut trace = Trace::default();
        trace.unparsed(&mut ds, &self.shared.snapshot.load().telemetry);
        let id = trace.request_id();
        let linger = answer_error(&mut ds, failure, None, self.peer, None, id).await;
        self.finish(None, None, &trace, started);
        if linger == Some(true) {
            self.linger().await;
        }
        None
    }

    /// Counts a finished request on its route (or as unrouted) and writes its access log line.
    pub(super) fn finish(
        &self,
        req: Option<&RequestHead>,
        snapshot: Option<&Snapshot>,
        trace: &Trace,
        started: Instant,
    ) {
        let at = Finished {
            shared: &self.shared,
            worker: self.worker,
            peer: self.peer,
            meter: self.client.meter,
            tls: self.client.is_tls(),
        };
        at.record(req, snapshot, trace, started);
    }
}

/// Where a finished request is counted and logged: its connection, and what its response sent.
pub(super) struct Finished<'a> {
    pub(super) shared: &'a Shared,
    pub(super) worker: usize,
    pub(super) peer: SocketAddr,
    pub(super) meter: Meter,
    /// The client came over TLS.
    pub(super) tls: bool,
}

impl Finished<'_> {
    /// Counts a finished request on its route (or as unrouted) and writes its access log line.
    pub(super) fn record(
        &self,
        req: Option<&RequestHead>,
        snapshot: Option<&Snapshot>,
        trace: &Trace,
        started: Instant,
    ) {
        let elapsed = started.elapsed();
        let meter = self.meter;
        let entry = snapshot
            .zip(trace.route)
            .and_then(|(s, i)| s.router.entries().get(i));
        let metrics = entry.map_or(&self.shared.metrics.unrouted, |e| &*e.metrics);
        metrics.record(self.worker, meter.status, meter.sent, elapsed);
        WorkerStats::bump(&self.shared.workers[self.worker].requests);
        if let Some(format) = crate::logging::access_format() {
            let entry = access_log::Entry {
                time: time::OffsetDateTime::now_utc(),
                client: trace.client.unwrap_or(self.peer.ip()),
                request: req,
                status: meter.status,
                body_bytes: meter.body(),
                bytes: meter.sent,
                duration: elapsed,
                route: entry.map(|e| match &e.prefix {
                    Some(p) => format!("{}{p}", e.host),
                    None => e.host.clone(),
                }),
                upstream: trace.upstream.addr,
                upstream_time: trace.upstream.time,
                request_id: trace.request_id().cloned(),
            };
            crate::logging::access(|out| access_log::write(format, &entry, out));
        }
        if let Some(ids) = trace.ids.as_ref().filter(|i| i.export) {
            self.export(req, entry, trace, ids, elapsed);
        }
    }
}

impl Finished<'_> {
    /// Queues the span of a sampled request for the exporter (never waits).
    fn export(
        &self,
        req: Option<&RequestHead>,
        entry: Option<&crate::route::RouteEntry>,
        trace: &Trace,
        ids: &Ids,
        elapsed: std::time::Duration,
    ) {
        let end = telemetry::export::now_unix_nanos();
        let start = end.saturating_sub(elapsed.as_nanos() as u64);
        let meter = self.meter;
        telemetry::export::submit(telemetry::export::SpanData {
            trace_id: ids.context.trace_id,
            span_id: ids.context.parent_id,
            parent: ids.parent,
            flags: ids.context.flags,
            start,
            end,
            method: req.map_or_else(|| "_OTHER".into(), |r| r.method.as_str().to_string()),
            route: entry.map(|e| e.prefix.clone().unwrap_or_else(|| "/".into())),
            route_key: entry.map(|e| match &e.prefix {
                Some(p) => format!("{}{p}", e.host),
                None => e.host.clone(),
            }),
            path: req.map_or_else(String::new, |r| r.path.clone()),
            query: req.and_then(|r| r.query.clone()),
            scheme: if self.tls { "https" } else { "http" },
            host: req.and_then(|r| r.host.clone()),
            protocol_version: match req.map(|r| r.version) {
                Some(crate::http::Version::Http10) => "1.0",
                Some(crate::http::Version::Http2) => "2",
                _ => "1.1",
            },
            status: meter.status,
            client: trace.client.unwrap_or(self.peer.ip()),
            peer: self.peer,
            user_agent: req
                .and_then(|r| r.header("user-agent"))
                .map(|v| String::from_utf8_lossy(v).into_owned()),
            body_bytes: meter.body(),
            upstream: trace.upstream.addr,
            upstream_time: trace.upstream.time,
            request_id: trace.request_id().cloned(),
        });
    }
}

/// The first line of HTTP/2's connection preface (RFC 9113 §3.4): as HTTP/1 it would be a
/// request line, which is how h2c with prior knowledge is told apart.
const H2_PREFACE_LINE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// What a request's answer needs to know about its connection.
pub(super) struct Ctx<'a> {
    pub(super) peer: SocketAddr,
    pub(super) worker: &'a WorkerCtx,
    pub(super) shared: &'a Shared,
    /// The client came over TLS.
    pub(super) tls: bool,
    /// The listener it came through (an index into [`Shared::listeners`]).
    pub(super) listener: usize,
}

/// Routes one request, applies its route's policy and answers it from the route's backend.
pub(super) async fn answer<D: Downstream>(
    ds: &mut D,
    ctx: &Ctx<'_>,
    req: &RequestHead,
    snapshot: &Snapshot,
    sizes: HeadSizes,
    trace: &mut Trace,
) -> Result<(), Error> {
    // 3. The route (unless the listener redirects everything to HTTPS, below); first of all,
    // the request's ids, which its route's `trusted_proxies` may let it keep.
    let normalized = (req.path != "*").then(|| path::normalize(&req.path));
    let host = req.host.as_deref().unwrap_or("");
    let routed = match &normalized {
        Some(Ok(p)) => snapshot.router.lookup(host, p),
        _ => None,
    };
    identify(ds, ctx, req, snapshot, routed.as_ref(), trace);
    let path = match &normalized {
        None => {
            // `OPTIONS *`: a question about the server, not a resource.
            let mut h = ResponseHead::new(200);
            h.header("Allow", "GET, HEAD, OPTIONS");
            return ds.respond(h, Body::Bytes(&[])).await;
        }
        Some(Err(e)) => return Err(Error::client(ErrorKind::BadRequest, e.reason)),
        Some(Ok(p)) => p.as_str(),
    };
    if let Some(r) = ctx
        .shared
        .listener_in(ctx.listener, snapshot)
        .and_then(|l| l.redirect.as_ref())
        .filter(|r| !r.exempts(path))
    {
        return redirect_to_https(ds, req, r.https_port).await;
    }
    let m = routed
        .ok_or_else(|| Error::client(ErrorKind::NotFound, "no route for this host and path"))?;
    trace.route = Some(m.index);
    let security = &m.entry.route.security;
    ds.set_limits(BodyLimits {
        max_chunked: security.max_chunked_body_size,
        timeout: security.client_body_timeout,
    });
    // 4. Its policy. Behind trusted proxies, the client is the first untrusted hop of their
    // chain.
    let client = crate::security::client_address(ctx.peer.ip(), req, &security.trusted_proxies);
    trace.client = Some(client);
    policy(
        ctx,
        req,
        &m.entry.route.origin.key_path,
        security,
        client,
        sizes,
    )?;
    // 5. Its backend, through the route's response rules when it has any.
    let site = &m.entry.site;
    let b = BackendCall {
        ctx,
        req,
        snapshot,
        m: &m,
        path,
        client,
    };
    if site.shapes() {
        let mut shaped = Shaped::new(ds, site, req);
        backend(&mut shaped, b, trace).await
    } else {
        backend(ds, b, trace).await
    }
}

/// Decides the request's id and trace context ([`crate::telemetry::Ids::decide`]): a peer in
/// the route's `trusted_proxies` (without a route, `[security]`'s) may state them. The id goes
/// on every response head from here on.
fn identify<D: Downstream>(
    ds: &mut D,
    ctx: &Ctx<'_>,
    req: &RequestHead,
    snapshot: &Snapshot,
    routed: Option<&Matched<'_>>,
    trace: &mut Trace,
) {
    let t = &snapshot.telemetry;
    if !t.is_on() {
        return;
    }
    let trusted = match routed {
        Some(m) => &m.entry.route.security.trusted_proxies,
        None => &snapshot.config.security.route_defaults.trusted_proxies,
    };
    let ids = Ids::decide(req, || telemetry::trusts(trusted, ctx.peer.ip()), t);
    if let (Some(name), Some(id)) = (&t.header, &ids.request_id) {
        ds.set_request_id(IdField {
            name: *name,
            id: id.clone(),
        });
    }
    trace.ids = Some(ids);
}

/// What a matched request's backend is called with.
struct BackendCall<'a, 'c> {
    ctx: &'a Ctx<'c>,
    req: &'a RequestHead,
    snapshot: &'a Snapshot,
    m: &'a Matched<'a>,
    /// The normalised request path.
    path: &'a str,
    /// The client address policy applied to.
    client: IpAddr,
}

/// Answers a routed, admitted request from its route's backend.
async fn backend<D: Downstream>(
    ds: &mut D,
    b: BackendCall<'_, '_>,
    trace: &mut Trace,
) -> Result<(), Error> {
    let BackendCall {
        ctx,
        req,
        snapshot,
        m,
        path,
        client,
    } = b;
    let security = &m.entry.route.security;
    match &m.entry.route.backend {
        Backend::File(f) => {
            if !matches!(req.method, Method::Get | Method::Head) {
                return Err(Error::client(
                    ErrorKind::MethodNotAllowed("GET, HEAD".into()),
                    "a File route serves GET and HEAD",
                ));
            }
            // A client that waits for 100-continue gets the final answer instead, and the
            // connection closes (its body is never read): a File route has no use for it.
            if !req.expects_continue() {
                body_within_limit(req, security)?;
                ds.discard_body().await?;
            }
            let stats = &ctx.shared.workers[ctx.worker.id];
            let cache = &snapshot.config.performance.file_cache;
            crate::files::serve(ds, req, m, f, cache, &ctx.worker.files, stats).await
        }
        Backend::Proxy(p) => {
            let Some(group) = &m.entry.group else {
                return Err(Error::internal("a Proxy route without its upstream group"));
            };
            let Target::Upstream(upstream_path) = m.target() else {
                return Err(Error::internal("a Proxy route without an upstream path"));
            };
            body_within_limit(req, security)?;
            let exchange = proxy::Exchange {
                ds,
                tls: ctx.tls,
                peer: ctx.peer,
                client,
                req,
                backend: p,
                group,
                security,
                request_headers: &m.entry.site.request_headers,
                ids: trace
                    .ids
                    .as_ref()
                    .map(|ids| (ids, snapshot.telemetry.header.map(|n| n.as_str()))),
                path: &upstream_path,
                worker: ctx.worker.id,
                pool: &ctx.worker.upstreams,
                h2pool: &ctx.worker.h2upstreams,
                pipes: &ctx.worker.pipes,
            };
            proxy::forward(exchange, &mut trace.upstream).await
        }
        Backend::Redirect(r) => {
            let from = RedirectFrom {
                https: ctx.tls,
                host: req.host.as_deref().unwrap_or(""),
                path,
                rest: m.relative,
                query: req.query.as_deref(),
            };
            let Some(location) = r.url.render(&from) else {
                return Err(Error::client(
                    ErrorKind::BadRequest,
                    "the redirect needs the request's host name (Host header)",
                ));
            };
            finish_body(ds, req, security).await?;
            let mut h = ResponseHead::new(r.status);
            h.header("Location", &location);
            h.header("Content-Type", "text/plain; charset=utf-8");
            let body = format!("{} {}\n", r.status, reason(r.status));
            ds.respond(h, Body::Bytes(body.as_bytes())).await
        }
        Backend::Respond(r) => {
            finish_body(ds, req, security).await?;
            let mut h = ResponseHead::new(r.status);
            if !matches!(r.status, 204 | 304) {
                h.header("Content-Type", &r.content_type);
            }
            let body = if matches!(r.status, 204 | 304) {
                Body::Empty { length: None }
            } else {
                Body::Bytes(r.body.as_bytes())
            };
            ds.respond(h, body).await
        }
    }
}

/// Reads and drops a request body a route answers without (within the route's limits); a
/// client that waits for `100 Continue` is answered at once instead (its connection closes).
async fn finish_body<D: Downstream>(
    ds: &mut D,
    req: &RequestHead,
    security: &RouteSecurity,
) -> Result<(), Error> {
    if !req.expects_continue() {
        body_within_limit(req, security)?;
        ds.discard_body().await?;
    }
    Ok(())
}

/// A listener's `redirect_to_https`: `308` to the same host, path and query over HTTPS.
async fn redirect_to_https<D: Downstream>(
    ds: &mut D,
    req: &RequestHead,
    https_port: u16,
) -> Result<(), Error> {
    let host = req.host.as_deref().unwrap_or("");
    let Some(location) =
        crate::http::redirect::https_location(host, https_port, &req.path, req.query.as_deref())
    else {
        return Err(Error::client(
            ErrorKind::BadRequest,
            "redirect_to_https needs the request's host name (Host header)",
        ));
    };
    let mut h = ResponseHead::new(308);
    h.header("Location", &location);
    h.header("Content-Type", "text/plain; charset=utf-8");
    let body = b"308 Permanent Redirect\n";
    ds.respond(h, Body::Bytes(body)).await
}

/// The route's access policy, before anything of the body is read: addresses (deny first),
/// methods, the rate limit (counting the requests that policy lets through), then the head's
/// sizes against the route's own limits.
fn policy(
    ctx: &Ctx<'_>,
    req: &RequestHead,
    route: &str,
    security: &RouteSecurity,
    client: IpAddr,
    sizes: HeadSizes,
) -> Result<(), Error> {
    if !security.allows_ip(client) {
        return Err(Error::client(
            ErrorKind::Forbidden,
            "client address not allowed",
        ));
    }
    if let Some(methods) = &security.allowed_methods {
        if !methods.contains(&req.method) {
            return Err(Error::client(
                ErrorKind::MethodNotAllowed(methods.allow_header()),
                "method not allowed on this route",
            ));
        }
    }
    let limit = security.rate_limit_requests_per_min;
    if limit > 0 {
        let key = crate::security::limiter_key(client, security.rate_limit_ipv6_prefix);
        let verdict = ctx.shared.limiter.check(route, key, limit, Instant::now());
        if let Verdict::Deny { retry_after_secs } = verdict {
            return Err(Error::client(
                ErrorKind::TooManyRequests(retry_after_secs),
                "over the route's rate_limit_requests_per_min",
            ));
        }
    }
    if sizes.request_line > security.max_request_header_size {
        return Err(Error::client(
            ErrorKind::UriTooLong,
            "request line over the route's max_request_header_size",
        ));
    }
    if sizes.header_section > security.max_request_header_size {
        return Err(Error::client(
            ErrorKind::HeaderTooLarge,
            "header section over the route's max_request_header_size",
        ));
    }
    Ok(())
}

/// A body of declared length over the route's `max_request_body_size` is refused before any
/// of it is read.
fn body_within_limit(req: &RequestHead, security: &RouteSecurity) -> Result<(), Error> {
    match req.body {
        BodyKind::Length(n) if n > security.max_request_body_size => Err(Error::client(
            ErrorKind::BodyTooLarge,
            "request body too large",
        )),
        _ => Ok(()),
    }
}

/// Sends the response for an error, if anyone is left to receive it, and logs it: `None` when
/// nothing can be answered any more (the response began, or the client is gone); else whether
/// it was sent.
pub(super) async fn answer_error<D: Downstream>(
    ds: &mut D,
    e: Error,
    req: Option<&RequestHead>,
    peer: SocketAddr,
    site: Option<&Site>,
    id: Option<&RequestId>,
) -> Option<bool> {
    // The request's id ends each line about it, as the access log names it.
    let id = id.map_or(String::new(), |id| format!(" request_id={id}"));
    let Some(status) = e.status() else {
        // A response cut off by our side (a disk that stopped answering) is worth a warning; an
        // upstream's or a client's end is their business.
        match e.side {
            Side::Internal if e.kind == ErrorKind::Aborted => log::warn!("{peer}: {e}{id}"),
            _ => log::debug!("{peer}: {e}{id}"),
        }
        return None;
    };
    let what = req.map_or(String::new(), |r| format!("{} {}: ", r.method, r.path));
    match e.side {
        Side::Client => log::debug!("{peer}: {status}: {what}{e}{id}"),
        Side::Upstream | Side::Internal => log::warn!("{peer}: {status}: {what}{e}{id}"),
    }
    if req.is_some_and(is_grpc) {
        // Trailers-only: the status in the head, which ends the stream.
        let mut h = ResponseHead::new(200);
        h.header("Content-Type", "application/grpc");
        h.header_with("grpc-status", |b| {
            crate::http::response::push_decimal(b, u64::from(e.grpc_status()))
        });
        h.header_with("grpc-message", |b| {
            // The status, not the detail: that stays in the daemon's log (it may name
            // upstream addresses).
            let message = format!("{status} {}", reason(status));
            b.extend(
                percent_encoding::utf8_percent_encode(&message, GRPC_MESSAGE).flat_map(str::bytes),
            );
        });
        return Some(ds.respond(h, Body::Empty { length: None }).await.is_ok());
    }
    let text = format!("{status} {}\n", reason(status));
    let (h, page) = Site::error_head(site, status, |h| match &e.kind {
        ErrorKind::MethodNotAllowed(allow) => {
            h.header("Allow", allow);
        }
        ErrorKind::RangeNotSatisfiable(len) => {
            h.header("Content-Range", &format!("bytes */{len}"));
        }
        ErrorKind::TooManyRequests(secs) => {
            h.header("Retry-After", &secs.to_string());
        }
        _ => {}
    });
    let body = page.map_or(text.as_bytes(), |p| &p.body);
    Some(ds.respond(h, Body::Bytes(body)).await.is_ok())
}

/// Whether a request is a gRPC call (`content-type: application/grpc[+proto|…]`) over
/// HTTP/2, whose errors must be gRPC statuses for its client to understand them.
fn is_grpc(req: &RequestHead) -> bool {
    req.version == crate::http::Version::Http2
        && req.header("content-type").is_some_and(|v| {
            v.get(..16)
                .is_some_and(|p| p.eq_ignore_ascii_case(b"application/grpc"))
        })
}

/// What `grpc-message` percent-encodes (the gRPC spec: everything outside printable ASCII,
/// and `%`).
const GRPC_MESSAGE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');

/// Counts a request in flight from its parsed head to the end of its response.
pub(super) struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    pub(super) fn new(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The sizes of a parsed head, measured as the limits count them.
#[derive(Clone, Copy, Debug)]
pub(super) struct HeadSizes {
    /// The request line, without leading empty lines or its CRLF.
    pub(super) request_line: usize,
    /// The header fields and the blank line after them.
    pub(super) header_section: usize,
}

impl HeadSizes {
    fn measure(head: &[u8]) -> Self {
        let mut start = 0;
        while head.get(start..start + 2) == Some(b"\r\n") {
            start += 2;
        }
        let rest = head.get(start..).unwrap_or_default();
        let line = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or(rest.len());
        Self {
            request_line: line,
            header_section: rest.len().saturating_sub(line + 2),
        }
    }
}

/// What a request's handling learnt for its counters and access log line.
#[derive(Debug, Default)]
pub(super) struct Trace {
    /// The matched route's place in the snapshot's router.
    pub(super) route: Option<usize>,
    /// The client address the route's policy applied to (see
    /// [`crate::security::client_address`]); the TCP peer until a route is known.
    client: Option<IpAddr>,
    upstream: proxy::UpstreamTrace,
    /// The request's id and trace context, once decided.
    pub(super) ids: Option<Ids>,
}

impl Trace {
    pub(super) fn request_id(&self) -> Option<&RequestId> {
        self.ids.as_ref().and_then(|i| i.request_id.as_ref())
    }

    /// A request answered without [`answer`] (unparsable, misdirected): a new id, on its
    /// response.
    pub(super) fn unparsed<D: Downstream>(&mut self, ds: &mut D, t: &Telemetry) {
        if self.ids.is_some() {
            return;
        }
        let ids = Ids::unparsed(t);
        if let (Some(name), Some(id)) = (&t.header, &ids.request_id) {
            ds.set_request_id(IdField {
                name: *name,
                id: id.clone(),
            });
        }
        self.ids = Some(ids);
    }
}

//! The Proxy backend: forwarding a request to an HTTP upstream and its response back, both
//! bodies streamed with backpressure (never buffered whole), over pooled connections.
//!
//! Forwarding rules (RFC 9110 §7.6): hop-by-hop headers — `Connection` and every header it
//! names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`
//! unless upgrading, `HTTP2-Settings` — are not forwarded in either direction; each message is
//! re-framed for the next hop. `Host` is the authority the request was routed by — an
//! absolute-form target's, else the client's `Host` (route key `preserve_host = false` sends
//! the upstream's `host:port`); `X-Forwarded-For` and `Forwarded` are appended to with the
//! daemon's own statement (so their right-most element is always ours), `X-Forwarded-Proto`
//! and `X-Forwarded-Host` set. Request headers whose names hold `_` are dropped unless the
//! route has `allow_underscores_in_headers`. Only the `Upgrade` protocols in the route's
//! `allowed_upgrades` are forwarded (never `h2c`); a refused upgrade goes as a plain request.
//!
//! Interim responses: every complete head in the upstream's bytes is parsed in turn; `1xx`
//! heads other than `100` (the daemon answers `Expect` itself) and `101` go to HTTP/1.1
//! clients as they come (dropped for HTTP/1.0 ones), at most [`MAX_INTERIM`] per response.
//!
//! An upstream that answers while the request body is still being sent (a `413`, say) is
//! heard: sending stops, its response goes to the client with `Connection: close`, and the
//! client connection ends with a lingering close (the rest of the body is never read).
//!
//! Servers: each attempt goes to a server of the route's group chosen by the group's balancer
//! ([`crate::group::Group::select`]); what the attempt shows about the server is reported to
//! the group (passive outlier ejection). No usable server and `on_all_unhealthy = "fail"` → 503.
//!
//! Faults: refused → 502; connect or response-head timeout → 504; garbage → 502; an upstream
//! that fails mid-response closes the client connection (a response never looks complete).
//!
//! Retries, two kinds, never after a byte of the response went to the client:
//! - *Stale pooled connection* (free, not counted against the group): an idempotent request
//!   without a body that failed on a *reused* connection before any response byte is sent
//!   again once on a fresh connection to the same server.
//! - *Another server* (`[upstreams.NAME.retry]`): a failure of a kind in `retry.on` is tried
//!   again on a server not tried yet, up to `attempts` more times, within the group's retry
//!   budget and `total_timeout_secs` — only while no byte of the client's body was taken,
//!   and, once any byte of the request was sent, only for idempotent methods (or with
//!   `non_idempotent = true`).

mod failover;
mod h2;
pub mod h2pool;
pub mod pool;
mod request;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::config::{ProxyBackend, RouteSecurity, UpstreamProtocol};
use crate::error::{Error, ErrorKind, Side};
use crate::exchange::{Body, Downstream};
use crate::group::Group;
use crate::http::h1::body::{transcode, BodyReader, BodyWriter, Framing};
use crate::http::h1::response::{self as h1_response, Head as UpstreamHead};
use crate::http::request::{BodyKind, RequestHead};
use crate::http::response::ResponseHead;
use crate::http::Method;
use crate::metrics::UpstreamEvent;
use crate::net::io::RecvError;
use crate::net::upstream::{Stop, UpstreamConn};
use crate::net::{splice, tunnel};
use request::upgrade_token;

/// Largest upstream response head accepted.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// A body up to this size that has fully arrived with the head leaves in one send with it.
const SMALL_BODY: u64 = 16 * 1024;
/// Read size for bodies.
const CHUNK: usize = 64 * 1024;
/// Most interim (1xx) responses one response may carry; more is a 502.
const MAX_INTERIM: usize = 16;

/// One request to forward.
pub struct Exchange<'a, D> {
    /// The client's side: its request body, and where the response goes.
    pub ds: &'a mut D,
    /// Whether the client came over TLS (`X-Forwarded-Proto: https`).
    pub tls: bool,
    pub peer: SocketAddr,
    /// The client's address (behind trusted proxies, the first untrusted hop): the `hash`
    /// balancer's `client_ip`.
    pub client: IpAddr,
    pub req: &'a RequestHead,
    pub backend: &'a ProxyBackend,
    pub group: &'a Group,
    pub security: &'a RouteSecurity,
    /// The route's `request_headers` rules.
    pub request_headers: &'a crate::config::HeaderRules,
    /// The request's id and trace context, with the id's field name (`None`: ids are off).
    pub ids: Option<(&'a crate::telemetry::Ids, Option<&'a str>)>,
    /// The upstream path, decoded (from the router): re-encoded here.
    pub path: &'a str,
    /// The worker's index, for the upstream's counters.
    pub worker: usize,
    /// The worker's idle upstream connections.
    pub pool: &'a pool::Pool,
    /// The worker's HTTP/2 upstream connections.
    pub h2pool: &'a h2pool::H2Pool,
    /// The worker's pipes, for spliced bodies.
    pub pipes: &'a splice::Pipes,
}

/// The upstream side of an exchange, for the access log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpstreamTrace {
    /// The address of the (last) connection used.
    pub addr: Option<SocketAddr>,
    /// From the start of forwarding (taking a connection) to the end of the upstream's
    /// response, or the failure.
    pub time: Option<Duration>,
}

/// Forwards one request; `trace` gets the upstream address and time. Failures on the
/// upstream's side are counted on the upstream.
pub async fn forward<D: Downstream>(
    x: Exchange<'_, D>,
    trace: &mut UpstreamTrace,
) -> Result<(), Error> {
    let started = Instant::now();
    let (group, worker) = (x.group, x.worker);
    let result = match group.config.protocol {
        UpstreamProtocol::Http1 => forward_inner(x, trace).await,
        // Boxed: an HTTP/1.1 exchange's future does not carry HTTP/2's state.
        UpstreamProtocol::H2 => Box::pin(h2::forward(x, trace)).await,
    };
    trace.time = Some(started.elapsed());
    if let Err(e) = &result {
        if e.side == Side::Upstream {
            group.metrics.count(worker, UpstreamEvent::Failure);
        }
    }
    result
}

async fn forward_inner<D: Downstream>(
    mut x: Exchange<'_, D>,
    trace: &mut UpstreamTrace,
) -> Result<(), Error> {
    let upgrade = upgrade_token(x.req, &x.security.allowed_upgrades);
    let g = x.group;
    let members = g.members.load();
    let mut http1 = failover::Http1 { upgrade };
    let (member, _in_flight, answer) =
        failover::answer(&mut x, &members, trace, &mut http1).await?;
    let failover::Answer {
        conn: mut upstream,
        buf: resp_buf,
        resp,
        early,
        ..
    } = answer;
    if resp.status == 101 {
        // Only to a protocol that was offered (RFC 9110 §7.8): a 101 to anything else would
        // hand the connection to the upstream for a protocol the route does not allow.
        let offered = |chosen: &[u8]| {
            http1.upgrade.as_deref().is_some_and(|offered| {
                offered
                    .split(|&b| b == b',')
                    .any(|p| p.trim_ascii().eq_ignore_ascii_case(chosen.trim_ascii()))
            })
        };
        let chosen = resp.upgrade.as_deref().unwrap_or_default();
        if chosen.is_empty() || !chosen.split(|&b| b == b',').all(offered) {
            return Err(Error::upstream(
                ErrorKind::BadGateway,
                "the upstream switched to a protocol that was not offered",
            ));
        }
        return tunnel(&mut x, upstream, resp_buf, &resp).await;
    }
    // `early`: the body was not all sent (the upstream answered first): the client's stream
    // is in doubt, and so is the upstream connection.
    let framing = resp.framing(x.req.method == Method::Head);
    let head = ResponseHead::relayed(resp.status, &resp.reason, &resp.headers, resp.names);
    if let Err(e) = relay_body(&mut x, &mut upstream, resp_buf, &resp, framing, head).await {
        // The response has begun: nothing can be said to the client any more; the upstream
        // connection is dropped, and so is the client's.
        if e.kind != ErrorKind::Aborted && e.kind != ErrorKind::ClientGone {
            return Err(e);
        }
        log::debug!("{}: {e}", x.peer);
        x.ds.reset();
        return Ok(());
    }
    if resp.keep_alive && framing != Framing::Close && !early {
        x.pool.put(
            &failover::pool_key(g, member),
            &member.state,
            upstream,
            g.config
                .max_idle_per_server
                .unwrap_or(x.security.max_idle_connections_per_host),
            g.config
                .idle_timeout
                .unwrap_or(x.security.idle_connection_timeout),
        );
    }
    Ok(())
}

/// A failure while sending the request or waiting for the response head.
enum Failure {
    /// Nothing of a response arrived: safe to retry an idempotent request.
    BeforeResponse(Error),
    Other(Error),
}

/// How sending a request body ended.
enum Sent {
    All,
    /// The upstream's final answer (or its close) began before it took all of the body.
    Answered,
}

/// What an upstream said before its final response: interim heads and their bytes, and
/// whether a final answer that does not refuse the body came while it was being sent.
#[derive(Default)]
struct Interim {
    count: usize,
    bytes: usize,
    final_ahead: bool,
}

/// Sends the request (head and body) and reads the response head, relaying interim
/// responses on the way (see the module documentation; `interim` counts them). The flag is
/// `true` when the upstream answered before it took the whole body (the rest of it is
/// abandoned).
async fn exchange_head<D: Downstream>(
    x: &mut Exchange<'_, D>,
    conn: &mut UpstreamConn,
    head: &[u8],
    interim: &mut Interim,
    response_timeout: Duration,
) -> Result<(Vec<u8>, UpstreamHead, bool), Failure> {
    let has_body = !matches!(x.req.body, BodyKind::None | BodyKind::Length(0));
    conn.send(head, has_body).await.map_err(|_| {
        Failure::BeforeResponse(Error::upstream(
            ErrorKind::BadGateway,
            "the upstream closed before the request was sent",
        ))
    })?;
    let mut buf = Vec::with_capacity(8 * 1024);
    let early = has_body && matches!(send_body(x, conn, &mut buf, interim).await?, Sent::Answered);
    if early {
        x.ds.abandon_body();
    }
    let deadline = Instant::now() + response_timeout;
    if buf.is_empty() {
        // The answer takes the upstream a moment: wait for it, then read (a timeout shows
        // below).
        conn.wait_readable(response_timeout).await;
    }
    loop {
        // Every complete head already received, before reading more: an upstream may send a
        // 103 and its final response in one write.
        if let Some((resp, n)) = final_head(x, &mut buf, interim).await? {
            buf.drain(..n);
            return Ok((buf, resp, early));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        // Safe to retry only while nothing at all of a response came.
        let nothing_yet = buf.is_empty() && interim.count == 0;
        match conn.recv_into(&mut buf, 8 * 1024, left).await {
            Ok(0) => {
                let e = Error::upstream(
                    ErrorKind::BadGateway,
                    "the upstream closed without a response",
                );
                return Err(if nothing_yet {
                    Failure::BeforeResponse(e)
                } else {
                    Failure::Other(e)
                });
            }
            Ok(_) => {}
            Err(RecvError::Timeout) => {
                return Err(Failure::Other(Error::upstream(
                    ErrorKind::GatewayTimeout,
                    "the upstream did not answer in time",
                )))
            }
            Err(RecvError::Failed(k)) => {
                let e = Error::upstream(
                    ErrorKind::BadGateway,
                    format!("upstream read failed: {k:?}"),
                );
                return Err(if nothing_yet {
                    Failure::BeforeResponse(e)
                } else {
                    Failure::Other(e)
                });
            }
        }
    }
}

/// Relays (or drops) the complete interim heads at the front of `buf`, and returns the final
/// head with its length once it is complete there. `100 Continue` is dropped (the client got
/// the daemon's own, or asked for none); other 1xx go to an HTTP/1.1 client and not to an
/// HTTP/1.0 one; past [`MAX_INTERIM`] of them, or [`MAX_RESPONSE_HEAD`] bytes, it is a 502.
async fn final_head<D: Downstream>(
    x: &mut Exchange<'_, D>,
    buf: &mut Vec<u8>,
    interim: &mut Interim,
) -> Result<Option<(UpstreamHead, usize)>, Failure> {
    let bad = |reason: String| Failure::Other(Error::upstream(ErrorKind::BadGateway, reason));
    loop {
        let (resp, n) = match h1_response::parse(buf) {
            Ok(Some(parsed)) => parsed,
            Ok(None) if buf.len() + interim.bytes > MAX_RESPONSE_HEAD => {
                return Err(bad("the upstream's response head is too large".into()))
            }
            Ok(None) => return Ok(None),
            Err(reason) => return Err(bad(reason)),
        };
        if !resp.is_interim() {
            return Ok(Some((resp, n)));
        }
        interim.count += 1;
        interim.bytes += n;
        if interim.count > MAX_INTERIM {
            return Err(bad(format!(
                "the upstream sent more than {MAX_INTERIM} interim (1xx) responses"
            )));
        }
        let head = ResponseHead::relayed(resp.status, &resp.reason, &resp.headers, resp.names);
        x.ds.send_interim(head).await.map_err(Failure::Other)?;
        buf.drain(..n);
    }
}

/// Reads what the upstream sent while the body was going out (at most a response head's
/// worth: the rest of a response is relayed later): `true` when its final answer says the body
/// is not wanted — an error status (400 or above) or `Connection: close` (RFC 9112 §9.3) —
/// or the connection ended; the body is then not sent further. `false` for interim responses
/// (an unasked `100 Continue`), or a final answer that does not refuse the body (a 2xx): the
/// body goes on, and that answer is read once it is sent (`interim.final_ahead`).
async fn heard<D: Downstream>(
    x: &mut Exchange<'_, D>,
    conn: &mut UpstreamConn,
    buf: &mut Vec<u8>,
    interim: &mut Interim,
) -> Result<bool, Failure> {
    loop {
        if let Some((resp, _)) = final_head(x, buf, interim).await? {
            if resp.status >= 400 || !resp.keep_alive {
                return Ok(true);
            }
            interim.final_ahead = true;
            return Ok(false);
        }
        // (final_head refuses a buffer past MAX_RESPONSE_HEAD: this reads a bounded amount.)
        match conn.try_recv_into(buf, 8 * 1024) {
            Ok(Some(0)) | Err(_) => return Ok(true),
            Ok(Some(_)) => {}
            Ok(None) => return Ok(false),
        }
    }
}

/// Sends a piece of the body: `true` when the upstream's answer said to stop first.
async fn send_piece<D: Downstream>(
    x: &mut Exchange<'_, D>,
    conn: &mut UpstreamConn,
    mut data: &[u8],
    more: bool,
    resp: &mut Vec<u8>,
    interim: &mut Interim,
) -> Result<bool, Failure> {
    loop {
        let listen = !interim.final_ahead;
        let (taken, stop) = conn
            .send_or_hear(data, more, listen)
            .await
            .map_err(Failure::Other)?;
        data = data.get(taken..).unwrap_or_default();
        match stop {
            Stop::No => {}
            // What it said before it went, if anything, is read next.
            Stop::Closed => {
                heard(x, conn, resp, interim).await?;
                return Ok(true);
            }
            Stop::Readable => {
                if heard(x, conn, resp, interim).await? {
                    return Ok(true);
                }
            }
        }
        if data.is_empty() {
            return Ok(false);
        }
    }
}

/// Waits for more of the body from the client into `buf` — or for the upstream, whose
/// answer may say to stop (`true`) while the client is slow to send.
async fn more_body<D: Downstream>(
    x: &mut Exchange<'_, D>,
    conn: &mut UpstreamConn,
    resp: &mut Vec<u8>,
    interim: &mut Interim,
) -> Result<bool, Failure> {
    loop {
        if !interim.final_ahead && conn.answered() && heard(x, conn, resp, interim).await? {
            return Ok(true);
        }
        if interim.final_ahead {
            x.ds.more_body().await.map_err(Failure::Other)?;
            return Ok(false);
        }
        // Both futures only wait for readiness before they take bytes: the loser loses none.
        let client_first = monoio::select! {
            read = x.ds.more_body() => {
                read.map_err(Failure::Other)?;
                true
            }
            _ = conn.socket_readable() => false,
        };
        if client_first {
            return Ok(false);
        }
    }
}

/// Streams the request body from the client to the upstream, re-framed, within the route's
/// limits — until the upstream's final answer begins ([`Sent::Answered`]; what it sent is in
/// `resp`).
async fn send_body<D: Downstream>(
    x: &mut Exchange<'_, D>,
    conn: &mut UpstreamConn,
    resp: &mut Vec<u8>,
    interim: &mut Interim,
) -> Result<Sent, Failure> {
    x.ds.continue_body().await.map_err(Failure::Other)?;
    let framing = Framing::of_request(x.req.body);
    // A chunked body is re-chunked for the upstream: extensions dropped, trailers kept.
    let writer = BodyWriter::between(framing, framing, true);
    let mut out = Vec::new();
    loop {
        out.clear();
        let done =
            x.ds.take_body(&mut |d| writer.write_data(d, &mut out))
                .map_err(Failure::Other)?;
        if done {
            writer.write_end(x.ds.body_trailers(), &mut out);
        }
        if !out.is_empty() && send_piece(x, conn, &out, !done, resp, interim).await? {
            return Ok(Sent::Answered);
        }
        if done {
            return Ok(Sent::All);
        }
        if more_body(x, conn, resp, interim).await? {
            return Ok(Sent::Answered);
        }
    }
}

/// Relays the response: its head, then the body from `pending` and the upstream.
async fn relay_body<D: Downstream>(
    x: &mut Exchange<'_, D>,
    upstream: &mut UpstreamConn,
    mut pending: Vec<u8>,
    resp: &UpstreamHead,
    framing: Framing,
    head: ResponseHead,
) -> Result<(), Error> {
    let aborted = |what: &str| {
        Error::upstream(
            ErrorKind::Aborted,
            format!("the upstream {what} mid-response"),
        )
    };
    let read_timeout = x.security.backend_response_timeout;
    let body = match framing {
        // A HEAD answer describes the body a GET would get: the upstream's length.
        Framing::None => Body::Empty {
            length: resp.content_length.filter(|_| x.req.method == Method::Head),
        },
        // The whole (small) body is here already: it leaves with the head.
        Framing::Length(n) if (pending.len() as u64) >= n && n <= SMALL_BODY => {
            Body::Bytes(pending.get(..n as usize).unwrap_or_default())
        }
        // Nothing waits on the upstream held back: a streamed response (server-sent events,
        // say) passes each piece on as it comes.
        Framing::Length(n) => Body::Stream {
            length: Some(n),
            follows: n > 0,
        },
        // A chunked body's first bytes may be only part of a chunk-size line, which makes no
        // data to send: the head does not wait for them.
        Framing::Chunked => Body::Stream {
            length: None,
            follows: false,
        },
        Framing::Close => Body::Stream {
            length: None,
            follows: !pending.is_empty(),
        },
    };
    let streamed = matches!(body, Body::Stream { .. });
    x.ds.respond(head, body).await?;
    if !streamed {
        return Ok(());
    }
    let mut reader = BodyReader::new(framing);
    let mut data = Vec::new();
    loop {
        data.clear();
        let t = transcode(&mut reader, BodyWriter::Identity, &pending, &mut data)
            .map_err(|e| Error::upstream(ErrorKind::Aborted, e.reason))?;
        let piece = if t.raw {
            &pending[..t.consumed]
        } else {
            &data[..]
        };
        x.ds.send_data(piece).await?;
        pending.drain(..t.consumed);
        if t.done {
            return x.ds.end_body(reader.trailers()).await;
        }
        // A large rest between two plain sockets: through a pipe, not through here.
        let left = reader.left();
        if left >= splice::MIN_BODY && pending.is_empty() && splice::enabled() {
            if let (Some(up), Some((client, sent))) = (upstream.plain_tcp(), x.ds.plain_socket()) {
                // Without a pipe (descriptors short), the body is copied.
                if let Some(pipe) = x.pipes.take() {
                    return splice::relay(x.pipes, pipe, up, client, left, read_timeout, sent)
                        .await;
                }
            }
        }
        match upstream.recv_into(&mut pending, CHUNK, read_timeout).await {
            Ok(0) => {
                // The end of a close-delimited body; any other is cut short.
                if reader.end_of_stream().is_err() {
                    return Err(aborted("closed"));
                }
                return x.ds.end_body(&[]).await;
            }
            Ok(_) => {}
            Err(_) => return Err(aborted("failed")),
        }
    }
}

/// After a `101 Switching Protocols`: the 101 to the client, then a two-way byte tunnel
/// ([`tunnel::run`]).
async fn tunnel<D: Downstream>(
    x: &mut Exchange<'_, D>,
    mut upstream: UpstreamConn,
    pending: Vec<u8>,
    resp: &UpstreamHead,
) -> Result<(), Error> {
    let mut head = ResponseHead::relayed(resp.status, &resp.reason, &resp.headers, resp.names);
    if let Some(up) = &resp.upgrade {
        head.header_bytes("Upgrade", up);
    }
    let Some((client, from_client)) = x.ds.switch_protocols(head).await? else {
        return Err(Error::upstream(
            ErrorKind::BadGateway,
            "the client's protocol cannot switch",
        ));
    };
    if !pending.is_empty() {
        client.send(&pending, false).await?;
    }
    if !from_client.is_empty() {
        upstream.send(&from_client, false).await?;
    }
    tunnel::run(client, upstream).await;
    Ok(())
}

//! Forwarding to HTTP/2 upstreams (`protocol = "h2"`, or a route's `upstream_protocol`):
//! one stream per request on a pooled connection ([`super::h2pool`]), for clients of either
//! protocol.
//!
//! The request body and the response travel at the same time — a gRPC bidirectional call
//! needs both directions open — each under flow control: the client's body goes up as the
//! upstream's window opens, the response's DATA is released to the upstream's window only
//! once the client took it. Trailers pass both ways (`te: trailers` goes up when the client
//! sent it), so gRPC status codes reach the client. A `grpc-timeout` bounds the whole call.
//!
//! The retry rules are the group's ([`super::failover`]); a stream the upstream refused
//! (`REFUSED_STREAM`) or that a GOAWAY left unprocessed was never seen, and may go to
//! another server whatever the method.

use std::future::poll_fn;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};
use http::header::{HeaderName, HeaderValue};

use super::failover::{self, pool_key, Attempt, Attempted, Failed};
use super::h2pool::Lease;
use super::request::{authority, fields, path_and_query};
use super::{Exchange, UpstreamTrace};
use crate::config::FailureKind;
use crate::error::{Error, ErrorKind, Side};
use crate::exchange::{Body, Downstream};
use crate::group::Member;
use crate::http::h2 as codec;
use crate::http::request::BodyKind;
use crate::http::response::{reason, ResponseHead};
use crate::http::Method;
use crate::metrics::UpstreamEvent;

/// Forwards one request to an HTTP/2 group.
pub(super) async fn forward<D: Downstream>(
    mut x: Exchange<'_, D>,
    trace: &mut UpstreamTrace,
) -> Result<(), Error> {
    let members = x.group.members.load();
    let mut how = Http2 {
        deadline: grpc_timeout(&x).map(|t| Instant::now() + t),
        replay: None,
    };
    let (_member, _in_flight, flow) = failover::answer(&mut x, &members, trace, &mut how).await?;
    match relay(&mut x, flow, how.deadline).await {
        Ok(()) => Ok(()),
        // The response has begun: the client's stream is cut off, never complete.
        Err(e) if e.kind == ErrorKind::Aborted || e.kind == ErrorKind::ClientGone => {
            log::debug!("{}: {e}", x.peer);
            x.ds.reset();
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Attempts over HTTP/2, within a gRPC call's deadline.
struct Http2 {
    deadline: Option<Instant>,
    /// The body a refused stream had taken (all of it kept), and whether it was complete:
    /// the next attempt sends it first.
    replay: Option<(Vec<u8>, bool)>,
}

/// A stream with its response head: what the retry rules judge, then what is relayed.
struct Flow {
    _lease: Lease,
    status: u16,
    headers: http::HeaderMap,
    recv: RecvStream,
    up: Upload,
}

impl Attempted for Flow {
    fn status(&self) -> u16 {
        self.status
    }

    fn untouched(&self) -> bool {
        // (A status is retried only without a body: the replay copy is for streams the
        // server never saw.)
        !self.up.touched
    }
}

/// The request body on its way up.
struct Upload {
    /// The stream's sending half, until the body has ended.
    send: Option<SendStream<Bytes>>,
    /// Taken from the client, not yet sent.
    pending: Vec<u8>,
    /// The client's body has ended (all taken).
    client_done: bool,
    /// Bytes of the client's body were taken.
    touched: bool,
    /// Everything taken from the client so far, while it is at most [`REPLAY_MAX`]: a stream
    /// the upstream refused can then go to another server with its body.
    copy: Option<Vec<u8>>,
    /// The upstream stopped taking the body before all of it went.
    stopped: bool,
}

/// The most request body kept for a refused stream's retry.
const REPLAY_MAX: usize = 64 * 1024;

impl Upload {
    /// Whether the body taken so far can be sent again (none taken, or all of it kept).
    fn replayable(&self) -> bool {
        !self.touched || self.copy.is_some()
    }
}

impl Upload {
    /// One step of the body: sends what the upstream's window allows, or ends the body, or
    /// waits for more from the client. Every wait is cancel-safe (nothing is lost when the
    /// response side wins a race).
    async fn step<D: Downstream>(&mut self, ds: &mut D) -> Result<(), Error> {
        let Some(send) = self.send.as_mut() else {
            return std::future::pending().await;
        };
        // The upstream stopped taking the body (it answered early and reset its receiving
        // side, or the stream failed): the upload ends here, and the response side — its
        // answer, or the stream's reset reason — decides what happened.
        let stopped = |up: &mut Self, e: h2::Error| {
            log::debug!("the upstream took no more of the request body: {e}");
            up.send = None;
            up.stopped = true;
        };
        if !self.pending.is_empty() {
            send.reserve_capacity(self.pending.len());
            let granted = poll_fn(|cx| match send.poll_capacity(cx) {
                std::task::Poll::Ready(Some(Ok(0))) => {
                    cx.waker().wake_by_ref();
                    std::task::Poll::Pending
                }
                other => other,
            })
            .await;
            let n = match granted {
                Some(Ok(n)) => n.min(self.pending.len()),
                Some(Err(e)) => {
                    stopped(self, e);
                    return Ok(());
                }
                None => {
                    stopped(self, h2::Error::from(Reason::STREAM_CLOSED));
                    return Ok(());
                }
            };
            let piece = Bytes::copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            if let Err(e) = send.send_data(piece, false) {
                stopped(self, e);
            }
            return Ok(());
        }
        if self.client_done {
            let trailers = codec::trailer_map(ds.body_trailers());
            let ended = if trailers.is_empty() {
                send.send_data(Bytes::new(), true)
            } else {
                send.send_trailers(trailers)
            };
            self.send = None;
            if let Err(e) = ended {
                stopped(self, e);
            }
            return Ok(());
        }
        let (pending, copy) = (&mut self.pending, &mut self.copy);
        let done = ds.take_body(&mut |d| {
            pending.extend_from_slice(d);
            if let Some(c) = copy {
                if c.len() + d.len() <= REPLAY_MAX {
                    c.extend_from_slice(d);
                } else {
                    *copy = None;
                }
            }
        })?;
        self.touched |= !self.pending.is_empty();
        self.client_done = done;
        if self.pending.is_empty() && !done {
            ds.more_body().await?;
        }
        Ok(())
    }
}

impl<D: Downstream> Attempt<D> for Http2 {
    type Answer = Flow;

    async fn attempt(
        &mut self,
        x: &mut Exchange<'_, D>,
        member: &Member,
        trace: &mut UpstreamTrace,
        total_deadline: Option<Instant>,
    ) -> Result<Flow, Failed> {
        let deadline = earliest(total_deadline, self.deadline);
        let cap = |t: Duration| match deadline {
            Some(d) => t.min(d.saturating_duration_since(Instant::now())),
            None => t,
        };
        let g = x.group;
        let key = pool_key(g, member);
        trace.addr = Some(member.state.addr);
        let keep = g
            .config
            .idle_timeout
            .unwrap_or(x.security.idle_connection_timeout);
        let failed = |error: Error, kind: Option<FailureKind>, sent: bool| Failed {
            blame: kind.is_some(),
            error,
            kind,
            sent,
            touched: false,
        };
        // A pooled connection that ended before the stream opened is replaced once: nothing
        // was sent.
        let mut replaced = false;
        let (lease, send) = loop {
            let timeout = cap(x.security.backend_connect_timeout);
            let (lease, reused) = x
                .h2pool
                .lease(&key, member.tls.as_ref(), timeout, keep)
                .await
                .map_err(|e| {
                    let kind = (e.side == Side::Upstream).then_some(FailureKind::Connect);
                    failed(e, kind, false)
                })?;
            let event = if reused {
                UpstreamEvent::Reuse
            } else {
                UpstreamEvent::Connect
            };
            g.metrics.count(x.worker, event);
            match lease.ready().await {
                Ok(send) => break (lease, send),
                Err(e) => {
                    lease.conn.close();
                    if reused && !replaced {
                        replaced = true;
                        continue;
                    }
                    let e = Error::upstream(ErrorKind::BadGateway, format!("{}: {e}", key.addr));
                    return Err(failed(e, Some(FailureKind::Reset), false));
                }
            }
        };
        let request = request(x, member).map_err(|e| failed(e, None, false))?;
        let no_body = matches!(x.req.body, BodyKind::None | BodyKind::Length(0));
        let mut send = send;
        let (response, up) = match send.send_request(request, no_body) {
            Ok(pair) => pair,
            Err(e) => {
                lease.conn.close();
                let e = Error::upstream(ErrorKind::BadGateway, format!("{}: {e}", key.addr));
                return Err(failed(e, Some(FailureKind::Reset), false));
            }
        };
        let replay = self.replay.take();
        let mut upload = Upload {
            send: (!no_body).then_some(up),
            pending: replay.as_ref().map(|r| r.0.clone()).unwrap_or_default(),
            client_done: no_body || replay.as_ref().is_some_and(|r| r.1),
            touched: replay.as_ref().is_some_and(|r| !r.0.is_empty()),
            copy: Some(replay.map(|r| r.0).unwrap_or_default()),
            stopped: false,
        };
        if !no_body {
            if let Err(e) = x.ds.continue_body().await {
                return Err(failed(e, None, true));
            }
        }
        // The wait for the head counts from the last progress of the body on its way up (as
        // over HTTP/1.1, where it starts once the body is sent): a long upload, or a
        // client-streaming call, is not timed out while it moves.
        let wait = x.security.backend_response_timeout;
        let mut response = response;
        let mut until = Instant::now() + cap(wait);
        let outcome = loop {
            let left = until.saturating_duration_since(Instant::now());
            let event = monoio::select! {
                fed = upload.step(x.ds) => Err(fed),
                got = &mut response => Ok(Ok(got)),
                () = monoio::time::sleep(left) => Ok(Err(())),
            };
            match event {
                Err(Ok(())) => {
                    until = Instant::now() + cap(wait);
                    continue;
                }
                Err(Err(e)) => break Err(e),
                Ok(Ok(got)) => break Ok(Ok(got)),
                Ok(Err(())) => {
                    break Ok(Err(Error::upstream(
                        ErrorKind::GatewayTimeout,
                        "no response head in time",
                    )))
                }
            }
        };
        let touched = !upload.replayable();
        if !matches!(outcome, Ok(Ok(Ok(_)))) {
            // Should another server be tried, it gets the body taken so far.
            if let Some(copy) = upload.copy.take() {
                self.replay = Some((copy, upload.client_done));
            }
        }
        let response = match outcome {
            // The body's way up failed: the client's fault (its body), or the stream's.
            Err(e) => {
                let kind = (e.side == Side::Upstream).then_some(FailureKind::Reset);
                return Err(Failed {
                    blame: kind.is_some(),
                    kind,
                    error: e,
                    sent: true,
                    touched,
                });
            }
            Ok(Err(timeout)) => {
                return Err(Failed {
                    error: timeout,
                    kind: Some(FailureKind::Timeout),
                    blame: true,
                    sent: true,
                    touched,
                })
            }
            Ok(Ok(Err(e))) => {
                // Refused, or left unprocessed by a GOAWAY: never seen by the server.
                let unseen =
                    e.reason() == Some(Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote());
                if e.is_go_away() {
                    lease.conn.close();
                }
                let kind = if e.reason() == Some(Reason::REFUSED_STREAM) {
                    FailureKind::RefusedStream
                } else {
                    FailureKind::Reset
                };
                let e = Error::upstream(
                    ErrorKind::BadGateway,
                    format!("{}: the stream failed before a response: {e}", key.addr),
                );
                return Err(Failed {
                    error: e,
                    kind: Some(kind),
                    blame: !unseen,
                    sent: !unseen,
                    touched,
                });
            }
            Ok(Ok(Ok(response))) => response,
        };
        let (parts, recv) = response.into_parts();
        Ok(Flow {
            _lease: lease,
            status: parts.status.as_u16(),
            headers: parts.headers,
            recv,
            up: upload,
        })
    }
}

/// The request as HTTP/2 sends it: `:scheme` and `:authority` (the routed one, or the
/// server's), the re-encoded path, the end-to-end fields, `content-length` when known, and
/// `te: trailers` when the client asked for trailers.
fn request<D>(x: &Exchange<'_, D>, member: &Member) -> Result<http::Request<()>, Error> {
    let bad = |what: &str| Error::internal(format!("cannot express the request in HTTP/2: {what}"));
    let scheme: &[u8] = if x.group.config.tls {
        b"https://"
    } else {
        b"http://"
    };
    let mut uri = scheme.to_vec();
    uri.extend_from_slice(&authority(x, &member.authority));
    uri.extend_from_slice(&path_and_query(x));
    let mut req = http::Request::new(());
    *req.uri_mut() = http::Uri::from_maybe_shared(Bytes::from(uri)).map_err(|_| bad("the URI"))?;
    *req.method_mut() = http::Method::from_bytes(x.req.method.as_str().as_bytes())
        .map_err(|_| bad("the method"))?;
    *req.version_mut() = http::Version::HTTP_2;
    let headers = req.headers_mut();
    fields(x, |name, pieces| {
        let value: Vec<u8> = pieces.concat();
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_maybe_shared(Bytes::from(value)),
        ) {
            headers.append(n, v);
        }
    });
    if let BodyKind::Length(n) = x.req.body {
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    let wants_trailers = x.req.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("te")
            && h.value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
    });
    if wants_trailers {
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    }
    Ok(req)
}

/// Relays the response — its head, then DATA and trailers — while the rest of the request
/// body goes up.
async fn relay<D: Downstream>(
    x: &mut Exchange<'_, D>,
    flow: Flow,
    deadline: Option<Instant>,
) -> Result<(), Error> {
    let Flow {
        _lease,
        status,
        headers,
        mut recv,
        mut up,
    } = flow;
    let head_request = x.req.method == Method::Head;
    let length = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let mut lines = Vec::with_capacity(256);
    for (name, value) in &headers {
        if name == http::header::CONTENT_LENGTH {
            continue;
        }
        lines.extend_from_slice(name.as_str().as_bytes());
        lines.extend_from_slice(b": ");
        lines.extend_from_slice(value.as_bytes());
        lines.extend_from_slice(b"\r\n");
    }
    let head = ResponseHead::relayed(status, reason(status), &lines, u64::MAX);
    // A 204 or 304 has no body, whatever the framing says (HEADERS, then an empty DATA
    // that ends the stream).
    let ended = recv.is_end_stream() || status == 204 || status == 304;
    let body = if ended || head_request {
        Body::Empty {
            length: length.filter(|_| head_request),
        }
    } else {
        Body::Stream {
            length,
            follows: false,
        }
    };
    x.ds.respond(head, body).await?;
    if !ended && !head_request {
        let wait = x.security.backend_response_timeout;
        loop {
            let left = deadline.map_or(wait, |d| {
                wait.min(d.saturating_duration_since(Instant::now()))
            });
            let data = async {
                match monoio::time::timeout(left, poll_fn(|cx| recv.poll_data(cx))).await {
                    Ok(d) => Ok(d),
                    Err(_) => Err(()),
                }
            };
            let event = monoio::select! {
                fed = up.step(x.ds) => Err(fed),
                got = data => Ok(got),
            };
            match event {
                // The body went on (or the client failed while sending it: its stream ends).
                Err(Ok(())) => continue,
                Err(Err(e)) => return Err(e),
                Ok(Err(())) => {
                    return Err(Error::upstream(
                        ErrorKind::Aborted,
                        "the upstream paused too long mid-response",
                    ))
                }
                Ok(Ok(Some(Ok(piece)))) => {
                    x.ds.send_data(&piece).await?;
                    // Taken by the client: the upstream may send as much again.
                    let _ = recv.flow_control().release_capacity(piece.len());
                }
                Ok(Ok(Some(Err(e)))) => {
                    return Err(Error::upstream(
                        ErrorKind::Aborted,
                        format!("the upstream's stream failed mid-response: {e}"),
                    ))
                }
                Ok(Ok(None)) => break,
            }
        }
        let trailers = match monoio::time::timeout(wait, poll_fn(|cx| recv.poll_trailers(cx))).await
        {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                return Err(Error::upstream(
                    ErrorKind::Aborted,
                    format!("the upstream's trailers failed: {e}"),
                ))
            }
            Err(_) => {
                return Err(Error::upstream(
                    ErrorKind::Aborted,
                    "the upstream's trailers did not come",
                ))
            }
        };
        let lines = trailers
            .as_ref()
            .map(codec::trailer_lines)
            .unwrap_or_default();
        x.ds.end_body(&lines).await?;
    }
    if up.send.is_some() || up.stopped {
        // The response is complete before the request body (or the upstream stopped taking
        // it): the rest is not sent.
        x.ds.abandon_body();
    }
    Ok(())
}

/// The earlier of two optional deadlines.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A gRPC call's `grpc-timeout` (digits and a unit: `H`, `M`, `S`, `m`, `u`, `n`).
fn grpc_timeout<D>(x: &Exchange<'_, D>) -> Option<Duration> {
    parse_grpc_timeout(x.req.header("grpc-timeout")?)
}

fn parse_grpc_timeout(v: &[u8]) -> Option<Duration> {
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(
            parse_grpc_timeout(b"100m"),
            Some(Duration::from_millis(100))
        );
        assert_eq!(parse_grpc_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout(b"5n"), Some(Duration::from_nanos(5)));
        assert_eq!(parse_grpc_timeout(b"123456789S"), None, "over 8 digits");
        assert_eq!(parse_grpc_timeout(b"S"), None);
        assert_eq!(parse_grpc_timeout(b"10x"), None);
        assert_eq!(parse_grpc_timeout(b"-1S"), None);
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        assert_eq!(earliest(None, Some(now)), Some(now));
        assert_eq!(earliest(Some(later), Some(now)), Some(now));
        assert_eq!(earliest(None, None), None);
    }
}

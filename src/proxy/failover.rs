//! Which server takes an attempt, and what happens when it fails: the group's balancer
//! chooses ([`Group::select`]), the attempt runs on a pooled or fresh connection ([`attempt`]),
//! the outcome is reported to the group (passive ejection), and a failure of a kind the group
//! retries goes to a server not tried yet — within the rules of the module documentation of
//! [`super`] and the group's retry budget.

use std::time::Instant;

use super::pool::PoolKey;
use super::request::request_head;
use super::{exchange_head, Exchange, Failure, Interim, UpstreamTrace};
use crate::config::FailureKind;
use crate::error::{Error, ErrorKind, Side};
use crate::exchange::Downstream;
use crate::group::{now_ms, Group, HashInput, InFlight, Member, Members, NoServer, Tried};
use crate::http::h1::response::Head as UpstreamHead;
use crate::http::request::BodyKind;
use crate::http::Method;
use crate::metrics::UpstreamEvent;
use crate::net::upstream::UpstreamConn;

/// Sends the request to a server of the group until one gives a response head to relay (or
/// the rules say stop): that server, its in-flight count, and the answer.
pub(super) async fn answer<'m, D: Downstream, T: Attempt<D>>(
    x: &mut Exchange<'_, D>,
    members: &'m Members,
    trace: &mut UpstreamTrace,
    how: &mut T,
) -> Result<(&'m Member, InFlight<'m>, T::Answer), Error> {
    let g = x.group;
    let now = now_ms();
    g.state.request(x.worker, now);
    let idempotent = matches!(
        x.req.method,
        Method::Get | Method::Head | Method::Options | Method::Trace | Method::Put | Method::Delete
    );
    let retry = &g.config.retry;
    let total_deadline = retry.total_timeout.map(|t| Instant::now() + t);
    let req = x.req;
    let headers = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    };
    let input = HashInput {
        client: x.client,
        header: &headers,
    };
    let mut tried = Tried::default();
    let mut retries = 0;
    let mut in_flight;
    // The server of the next attempt, when a retry has chosen it already.
    let mut next = None;
    loop {
        let index = match next.take() {
            Some(i) => i,
            None => match first_choice(g, members, x.worker, &input, &tried, now) {
                Ok(i) => i,
                Err(_) => {
                    return Err(Error::upstream(
                        ErrorKind::ServiceUnavailable,
                        format!(
                            "no usable server in upstream group {:?} (on_all_unhealthy = \
                             \"fail\", or every server drained or disabled)",
                            g.config.name
                        ),
                    ))
                }
            },
        };
        let member = &members.list[index];
        tried.add(index);
        in_flight = member.state.begin();
        let result = how.attempt(x, member, trace, total_deadline).await;
        let (failed, answer) = match result {
            Ok(a) => {
                let status = a.status();
                let kind =
                    matches!(status, 500 | 502 | 503 | 504).then_some(FailureKind::Status(status));
                g.report(members, member, kind, now_ms());
                match kind {
                    // A status worth another server: only while nothing went to the client.
                    Some(k) if retry.on(k) && a.untouched() => {
                        let e = Error::upstream(
                            ErrorKind::BadGateway,
                            format!("the upstream answered {status}"),
                        );
                        (
                            Failed {
                                error: e,
                                kind,
                                blame: true,
                                sent: true,
                                touched: false,
                            },
                            Some(a),
                        )
                    }
                    _ => return Ok((member, in_flight, a)),
                }
            }
            Err(f) => {
                if f.blame && f.kind.is_some() {
                    g.report(members, member, f.kind, now_ms());
                }
                (f, None)
            }
        };
        let Some(kind) = failed.kind else {
            return Err(failed.error);
        };
        let allowed = retries < retry.attempts
            && retry.on(kind)
            && !failed.touched
            && (!failed.sent || idempotent || retry.non_idempotent)
            && total_deadline.is_none_or(|d| Instant::now() < d);
        // Another server to try (chosen before the budget is spent on it)?
        let another = allowed
            .then(|| {
                g.select(members, x.worker, &input, &tried, now_ms(), true)
                    .ok()
            })
            .flatten()
            .filter(|_| {
                g.state
                    .take_retry(now_ms(), retry.budget_percent, retry.min_retries_per_sec)
            });
        let Some(i) = another else {
            // A status that is not retried after all goes to the client as it is.
            if let Some(a) = answer {
                return Ok((member, in_flight, a));
            }
            return Err(failed.error);
        };
        next = Some(i);
        retries += 1;
        g.state.retried(kind);
        log::debug!(
            "upstream group {:?}: {} failed ({}); trying another server",
            g.config.name,
            member.state.addr,
            kind.name()
        );
    }
}

/// The first choice of a server; a server whose state changed under the first look may
/// leave nothing to try: one more look then.
fn first_choice(
    g: &Group,
    members: &Members,
    worker: usize,
    input: &HashInput<'_>,
    tried: &Tried,
    now: u64,
) -> Result<usize, NoServer> {
    match g.select(members, worker, input, tried, now, false) {
        Err(NoServer::AllTried) => g.select(members, worker, input, tried, now, false),
        r => r,
    }
}

/// The pool's key for connections to `member`.
pub(super) fn pool_key(g: &Group, member: &Member) -> PoolKey {
    PoolKey {
        addr: member.state.addr,
        tls_name: member.tls_name.clone(),
        ca_file: g.ca_file.clone(),
    }
}

/// How one attempt on a server is made (over HTTP/1.1, or HTTP/2), and what it gives.
pub(super) trait Attempt<D: Downstream> {
    type Answer: Attempted;

    /// One attempt on `member`, within `total_deadline` (the group's `total_timeout_secs`).
    async fn attempt(
        &mut self,
        x: &mut Exchange<'_, D>,
        member: &Member,
        trace: &mut UpstreamTrace,
        total_deadline: Option<Instant>,
    ) -> Result<Self::Answer, Failed>;
}

/// What the retry rules need to know of an answer.
pub(super) trait Attempted {
    fn status(&self) -> u16;
    /// Nothing of it went to the client, and nothing of the client's body was taken: another
    /// server may still be tried.
    fn untouched(&self) -> bool;
}

/// Attempts over HTTP/1.1, with the `Upgrade` to offer.
pub(super) struct Http1 {
    pub(super) upgrade: Option<Vec<u8>>,
}

impl<D: Downstream> Attempt<D> for Http1 {
    type Answer = Answer;

    async fn attempt(
        &mut self,
        x: &mut Exchange<'_, D>,
        member: &Member,
        trace: &mut UpstreamTrace,
        total_deadline: Option<Instant>,
    ) -> Result<Answer, Failed> {
        let head = request_head(x, self.upgrade.as_deref(), &member.authority);
        attempt(x, member, &head, trace, total_deadline).await
    }
}

impl Attempted for Answer {
    fn status(&self) -> u16 {
        self.resp.status
    }

    fn untouched(&self) -> bool {
        !self.interim && !self.early && !self.touched
    }
}

/// A response head from one attempt.
pub(super) struct Answer {
    pub(super) conn: UpstreamConn,
    pub(super) buf: Vec<u8>,
    pub(super) resp: UpstreamHead,
    /// The upstream answered before it took the whole body.
    pub(super) early: bool,
    /// Interim responses went to the client.
    pub(super) interim: bool,
    /// Bytes of the client's body were taken.
    pub(super) touched: bool,
}

/// A failed attempt.
pub(super) struct Failed {
    pub(super) error: Error,
    /// What it says about the server; `None` when it was not the server's doing (the client
    /// went away, or a local fault).
    pub(super) kind: Option<FailureKind>,
    /// Whether it counts against the server (passive ejection).
    pub(super) blame: bool,
    /// Bytes of the request may have reached the server.
    pub(super) sent: bool,
    /// Bytes of the client's body were taken, or a response went to the client.
    pub(super) touched: bool,
}

/// One attempt on `member`: a pooled connection or a new one, the request, the response head.
/// A pooled connection that turns out stale before any response byte is replaced by a fresh
/// one once (free: not a retry of the group's), for an idempotent request without a body.
async fn attempt<D: Downstream>(
    x: &mut Exchange<'_, D>,
    member: &Member,
    head: &[u8],
    trace: &mut UpstreamTrace,
    total_deadline: Option<Instant>,
) -> Result<Answer, Failed> {
    // `total_timeout_secs` bounds the connect and the wait for the response head (never the
    // client's side: its body upload, or interim heads on their way to it).
    let cap = |t: std::time::Duration| match total_deadline {
        Some(d) => t.min(d.saturating_duration_since(Instant::now())),
        None => t,
    };
    let g = x.group;
    let has_body = !matches!(x.req.body, BodyKind::None | BodyKind::Length(0));
    let replayable = !has_body
        && matches!(
            x.req.method,
            Method::Get
                | Method::Head
                | Method::Options
                | Method::Trace
                | Method::Put
                | Method::Delete
        );
    let key = pool_key(g, member);
    let mut pooled = x.pool.take(&key);
    loop {
        let reused = pooled.is_some();
        let mut conn = match pooled.take() {
            Some(c) => c,
            None => {
                let addrs = [member.state.addr];
                let timeout = cap(x.security.backend_connect_timeout);
                match UpstreamConn::connect(&addrs, member.tls.as_ref(), timeout).await {
                    Ok(c) => c,
                    Err(error) => {
                        let kind = (error.side == Side::Upstream).then_some(FailureKind::Connect);
                        return Err(Failed {
                            error,
                            kind,
                            blame: true,
                            sent: false,
                            touched: false,
                        });
                    }
                }
            }
        };
        g.metrics.count(
            x.worker,
            if reused {
                UpstreamEvent::Reuse
            } else {
                UpstreamEvent::Connect
            },
        );
        trace.addr = Some(conn.addr);
        let mut interim = Interim::default();
        let response_timeout = cap(x.security.backend_response_timeout);
        let failure = match exchange_head(x, &mut conn, head, &mut interim, response_timeout).await
        {
            Ok((buf, resp, early)) => {
                return Ok(Answer {
                    conn,
                    buf,
                    resp,
                    early,
                    interim: interim.count > 0,
                    touched: has_body,
                })
            }
            Err(f) => f,
        };
        let (error, before_response) = match failure {
            Failure::BeforeResponse(e) => (e, true),
            Failure::Other(e) => (e, false),
        };
        if before_response && reused && replayable {
            g.metrics.count(x.worker, UpstreamEvent::Retry);
            log::debug!(
                "upstream {}: retrying on a fresh connection: {error}",
                member.state.addr
            );
            continue;
        }
        let kind = match (error.side, &error.kind) {
            (Side::Upstream, ErrorKind::GatewayTimeout) => Some(FailureKind::Timeout),
            (Side::Upstream, _) if before_response => Some(FailureKind::Reset),
            (Side::Upstream, _) => Some(FailureKind::Garbage),
            _ => None,
        };
        return Err(Failed {
            error,
            kind,
            // A pooled connection the server had closed is not the server's failure.
            blame: !(before_response && reused),
            sent: true,
            touched: has_body || interim.count > 0,
        });
    }
}

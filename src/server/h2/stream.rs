//! One HTTP/2 stream: its request mapped to the exchange, answered by the same phases as an
//! HTTP/1 request ([`super::super::request::answer`]), through [`H2Downstream`].
//!
//! Flow control both ways is the backpressure: request DATA is released to the client's
//! window only as the backend takes it, and response bytes are handed to `h2` only as the
//! client's window grants capacity, so a stream never holds more than its window in either
//! direction. A client's `RST_STREAM` cancels the handler at once (its upstream request
//! with it): the handler runs raced against the stream's reset.

use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};

use crate::http::request::BodyKind;
use monoio::net::TcpStream;

use super::Connection;
use crate::error::{Error, ErrorKind};
use crate::exchange::{Body, BodyLimits, Downstream};
use crate::http::h2 as codec;
use crate::http::response::ResponseHead;
use crate::metrics::WorkerStats;
use crate::net::client::{ClientStream, Meter};
use crate::net::disk::Source;
use crate::server::request::{answer, answer_error, Ctx, Finished, HeadSizes, InFlight, Trace};

/// The most response bytes handed to `h2` at once (and read from a file per piece).
const PIECE: usize = 64 * 1024;
/// How long a response waits for the client to open its window before it is given up (a
/// client that stopped reading).
const SEND_STALL: Duration = Duration::from_secs(60);

/// Serves one stream to its end (or its reset). The connection counted its handler in
/// flight; this ends the count.
pub(super) async fn run(
    request: http::Request<RecvStream>,
    respond: SendResponse<Bytes>,
    conn: Rc<Connection>,
) {
    let started = Instant::now();
    let shared = conn.shared.clone();
    let stats = &shared.workers[conn.worker];
    stats.h2_streams_open.fetch_add(1, Ordering::Relaxed);
    let (parts, rx) = request.into_parts();
    let end_stream = rx.is_end_stream();
    let tx = Rc::new(RefCell::new(Tx::Head(respond)));
    let rx = Rc::new(RefCell::new(Rx::new(rx)));
    let mut ds = H2Downstream::new(tx.clone(), rx.clone(), parts.method == http::Method::HEAD);
    let parsed = codec::request_head(&parts, end_stream);
    drop(parts);
    let snapshot = shared.snapshot.load_full();
    let mut trace = Trace::default();
    let mut req = None;
    {
        let handler = async {
            let (head, sizes) = match parsed {
                Ok(parsed) => parsed,
                Err(e) => {
                    trace.unparsed(&mut ds, &snapshot.telemetry);
                    let id = trace.request_id();
                    let _ = answer_error(&mut ds, Error::from(e), None, conn.peer, None, id).await;
                    return;
                }
            };
            ds.unknown_length = head.body == BodyKind::Chunked;
            ds.expects_continue = head
                .header("expect")
                .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"100-continue"));
            let head = &*req.insert(head);
            let _in_flight = InFlight::new(&stats.in_flight);
            let ctx = Ctx {
                peer: conn.peer,
                worker: &conn.ctx,
                shared: &shared,
                tls: conn.tls,
                listener: conn.listener,
            };
            let sizes = HeadSizes {
                request_line: sizes.request_line,
                header_section: sizes.header_section,
            };
            let misdirected = conn
                .names
                .as_ref()
                .zip(head.host.as_deref())
                .is_some_and(|(names, host)| !names.cover(host));
            let result = if misdirected {
                Err(Error::client(
                    ErrorKind::Misdirected,
                    "this connection's certificate does not cover the requested name",
                ))
            } else {
                answer(&mut ds, &ctx, head, &snapshot, sizes, &mut trace).await
            };
            if let Err(e) = result {
                let site = snapshot.site_for(trace.route, head.host.as_deref());
                trace.unparsed(&mut ds, &snapshot.telemetry);
                let id = trace.request_id();
                if answer_error(&mut ds, e, Some(head), conn.peer, site, id)
                    .await
                    .is_none()
                {
                    ds.cut = true;
                }
            }
        };
        let reset = poll_fn(|cx| tx.borrow_mut().poll_reset(cx));
        // The request body's frames are taken as they come (and held, coalesced, until the
        // backend wants them), whether the handler reads now or not: `h2` keeps each frame
        // received and not taken, so a client's tiny frames would cost far more than their
        // bytes. The window still bounds what is held.
        let pump = poll_fn(|cx| {
            let _ = rx.borrow_mut().poll_fill(cx);
            Poll::<()>::Pending
        });
        let reset = monoio::select! {
            () = handler => None,
            reason = reset => Some(reason),
            () = pump => None,
        };
        if let Some(reason) = reset {
            WorkerStats::bump(&stats.h2_resets_received);
            log::debug!("{}: the client reset its stream: {reason:?}", conn.peer);
            ds.gone = true;
        }
    }
    // A response that did not end properly must not look complete.
    let mut tx = tx.borrow_mut();
    if !matches!(*tx, Tx::Done) && !ds.gone {
        WorkerStats::bump(&stats.h2_resets_sent);
        tx.send_reset(if ds.cut {
            Reason::INTERNAL_ERROR
        } else {
            Reason::CANCEL
        });
    }
    *tx = Tx::Done;
    drop(tx);
    let finished = Finished {
        shared: &shared,
        worker: conn.worker,
        peer: conn.peer,
        meter: ds.meter,
        tls: conn.tls,
    };
    finished.record(req.as_ref(), Some(&snapshot), &trace, started);
    stats.h2_streams_open.fetch_sub(1, Ordering::Relaxed);
    conn.in_flight.set(conn.in_flight.get().saturating_sub(1));
}

/// The sending half of a stream, shared by the handler and the watch for the client's reset.
/// Never borrowed across an await.
enum Tx {
    /// No response head yet.
    Head(SendResponse<Bytes>),
    /// The head went; the body is under way.
    Body(SendStream<Bytes>),
    /// The stream has ended (or was reset).
    Done,
}

impl Tx {
    fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<Result<Reason, h2::Error>> {
        match self {
            Self::Head(r) => r.poll_reset(cx),
            Self::Body(s) => s.poll_reset(cx),
            Self::Done => Poll::Pending,
        }
    }

    fn send_reset(&mut self, reason: Reason) {
        match self {
            Self::Head(r) => r.send_reset(reason),
            Self::Body(s) => s.send_reset(reason),
            Self::Done => {}
        }
    }
}

/// A stream's request body as it arrives: DATA coalesced into one buffer (bounded by the
/// stream's window, which opens only as the backend takes bytes), then the trailers.
pub(super) struct Rx {
    stream: RecvStream,
    buf: BytesMut,
    /// The body has ended (`trailers` then holds them, if the client sent any).
    ended: bool,
    trailers: Option<Vec<u8>>,
    /// The stream failed (a reset, a connection error): for the next take.
    failed: Option<Error>,
}

impl Rx {
    fn new(stream: RecvStream) -> Self {
        Self {
            ended: stream.is_end_stream(),
            stream,
            buf: BytesMut::new(),
            trailers: None,
            failed: None,
        }
    }

    /// Takes every frame that has arrived: ready when there is something for the backend
    /// (bytes, the end, a failure); pending (woken by the next frame) otherwise.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut progress = !self.buf.is_empty() || self.failed.is_some();
        while !self.ended && self.failed.is_none() {
            match self.stream.poll_data(cx) {
                Poll::Ready(Some(Ok(piece))) => {
                    progress |= !piece.is_empty();
                    self.buf.extend_from_slice(&piece);
                }
                Poll::Ready(Some(Err(e))) => {
                    self.failed = Some(Error::client(
                        ErrorKind::ClientGone,
                        format!("the request body failed: {e}"),
                    ));
                }
                Poll::Ready(None) => match self.stream.poll_trailers(cx) {
                    Poll::Ready(Ok(map)) => {
                        self.trailers = map.as_ref().map(codec::trailer_lines);
                        self.ended = true;
                    }
                    Poll::Ready(Err(e)) => {
                        self.failed = Some(Error::client(
                            ErrorKind::ClientGone,
                            format!("the request trailers failed: {e}"),
                        ));
                    }
                    Poll::Pending => break,
                },
                Poll::Pending => break,
            }
        }
        if progress || self.ended || self.failed.is_some() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// One stream's exchange.
pub struct H2Downstream {
    tx: Rc<RefCell<Tx>>,
    rx: Rc<RefCell<Rx>>,
    /// The request's trailers, once its body has ended.
    trailers: Vec<u8>,
    /// Request body bytes taken so far.
    taken: u64,
    /// The body's length was not declared: `max_chunked_body_size` applies (a declared one was
    /// checked against `max_request_body_size`, and `h2` holds the DATA to it).
    unknown_length: bool,
    limits: BodyLimits,
    head_request: bool,
    expects_continue: bool,
    meter: Meter,
    /// The response was cut off by a failure: reset with `INTERNAL_ERROR`.
    cut: bool,
    /// The client reset the stream.
    gone: bool,
    /// Body bytes still to come of a response whose length was declared.
    remaining: Option<u64>,
    /// The last piece of such a body, held for `end_body` to send with the stream's end (or
    /// before its trailers): one DATA frame fewer than an empty one carrying END_STREAM.
    /// (From an HTTP/2 upstream that stalls after its last byte, the client gets that piece
    /// only with the stream's end, or not before the reset.)
    held: Option<Bytes>,
    /// The request's id, for the response head.
    id: Option<crate::telemetry::IdField>,
}

/// How [`H2Downstream::send_all`] ends.
#[derive(Clone, Copy, PartialEq)]
enum Last {
    /// The stream goes on.
    Open,
    /// The last piece ends the stream.
    End,
    /// The last piece is held for `end_body`.
    Hold,
}

impl H2Downstream {
    fn new(tx: Rc<RefCell<Tx>>, rx: Rc<RefCell<Rx>>, head_request: bool) -> Self {
        Self {
            tx,
            rx,
            trailers: Vec::new(),
            taken: 0,
            unknown_length: false,
            limits: BodyLimits::default(),
            head_request,
            expects_continue: false,
            meter: Meter::default(),
            cut: false,
            gone: false,
            remaining: None,
            held: None,
            id: None,
        }
    }

    /// Waits until the client's window lets `want` (at most [`PIECE`]) bytes go: how many may.
    async fn capacity(&mut self, want: usize) -> Result<usize, Error> {
        let want = want.clamp(1, PIECE);
        {
            let mut tx = self.tx.borrow_mut();
            let Tx::Body(s) = &mut *tx else {
                return Err(gone("the stream has ended"));
            };
            let now = s.capacity();
            if now > 0 {
                return Ok(now.min(want));
            }
            s.reserve_capacity(want);
        }
        let granted = poll_fn(|cx| match &mut *self.tx.borrow_mut() {
            Tx::Body(s) => match s.poll_capacity(cx) {
                Poll::Ready(Some(Ok(0))) => {
                    // Assigned and taken back: wait again.
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                other => other,
            },
            _ => Poll::Ready(None),
        });
        match monoio::time::timeout(SEND_STALL, granted).await {
            Ok(Some(Ok(n))) => Ok(n.min(want)),
            Ok(Some(Err(e))) => Err(gone(format!("the stream failed: {e}"))),
            Ok(None) => Err(gone("the stream has ended")),
            Err(_) => Err(Error::client(
                ErrorKind::ClientGone,
                "the client kept its window shut",
            )),
        }
    }

    /// Sends `piece` (within the capacity just granted); `end` ends the stream with it.
    fn push(&mut self, piece: Bytes, end: bool) -> Result<(), Error> {
        let n = piece.len() as u64;
        let mut tx = self.tx.borrow_mut();
        let Tx::Body(s) = &mut *tx else {
            return Err(gone("the stream has ended"));
        };
        s.send_data(piece, end)
            .map_err(|e| gone(format!("sending DATA: {e}")))?;
        self.meter.sent += n;
        if end {
            *tx = Tx::Done;
        }
        Ok(())
    }

    /// Sends all of `data`, as the window allows; `last` says what becomes of its last piece.
    async fn send_all(&mut self, mut data: &[u8], last: Last) -> Result<(), Error> {
        while !data.is_empty() {
            let n = self.capacity(data.len()).await?.min(data.len());
            let (piece, rest) = data.split_at(n);
            let piece = codec::bytes(piece);
            match last {
                Last::Hold if rest.is_empty() => self.held = Some(piece),
                _ => self.push(piece, last == Last::End && rest.is_empty())?,
            }
            data = rest;
        }
        Ok(())
    }

    /// Sends `len` bytes of the file `fd` from `offset`, read piece by piece as the window
    /// allows (sendfile cannot write HTTP/2 frames), and ends the stream.
    async fn send_file(&mut self, file: Source, offset: u64, len: u64) -> Result<(), Error> {
        let (mut at, end) = (offset, offset.saturating_add(len));
        while at < end {
            let want = usize::try_from(end - at).unwrap_or(usize::MAX);
            let n = self.capacity(want).await?;
            let mut buf = Vec::new();
            // The head went before: an error cuts the stream off.
            let read = crate::net::disk::pread_append(file, &mut buf, n, at).await;
            let got = read.map_err(Error::cut_off)?;
            if got == 0 {
                return Err(Error::internal("the file shrank while it was being sent").cut_off());
            }
            at += got as u64;
            let buf = Bytes::from(buf);
            self.push(buf, at >= end)?;
        }
        Ok(())
    }
}

fn gone(detail: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::client(ErrorKind::ClientGone, detail)
}

impl Downstream for H2Downstream {
    fn set_limits(&mut self, limits: BodyLimits) {
        self.limits = limits;
    }

    fn set_request_id(&mut self, id: crate::telemetry::IdField) {
        self.id = Some(id);
    }

    fn take_body(&mut self, each: &mut dyn FnMut(&[u8])) -> Result<bool, Error> {
        let mut rx = self.rx.borrow_mut();
        if !rx.buf.is_empty() {
            let piece = rx.buf.split();
            each(&piece);
            self.taken += piece.len() as u64;
            // The client may send as much again: the backend has taken these.
            let _ = rx.stream.flow_control().release_capacity(piece.len());
            if self.unknown_length && self.taken > self.limits.max_chunked {
                return Err(Error::client(
                    ErrorKind::BodyTooLarge,
                    "request body too large",
                ));
            }
        }
        if let Some(e) = rx.failed.take() {
            return Err(e);
        }
        if rx.ended {
            if let Some(trailers) = rx.trailers.take() {
                self.trailers = trailers;
            }
        }
        Ok(rx.ended && rx.buf.is_empty())
    }

    async fn continue_body(&mut self) -> Result<(), Error> {
        if std::mem::take(&mut self.expects_continue) {
            if let Tx::Head(r) = &mut *self.tx.borrow_mut() {
                let mut interim = http::Response::new(());
                *interim.status_mut() = http::StatusCode::CONTINUE;
                let _ = r.send_informational(interim);
            }
        }
        Ok(())
    }

    async fn more_body(&mut self) -> Result<(), Error> {
        let timeout = self.limits.timeout;
        let more = poll_fn(|cx| self.rx.borrow_mut().poll_fill(cx));
        match monoio::time::timeout(timeout, more).await {
            Ok(()) => Ok(()),
            Err(_) => Err(Error::client(
                ErrorKind::ClientTimeout,
                "request body too slow",
            )),
        }
    }

    fn body_trailers(&self) -> &[u8] {
        &self.trailers
    }

    fn abandon_body(&mut self) {
        // Nothing to do: the stream's receiving half is dropped with the exchange, and the
        // connection goes on (HTTP/2 framing is never in doubt).
    }

    async fn send_interim(&mut self, head: ResponseHead) -> Result<(), Error> {
        if head.status() == 100 {
            return Ok(());
        }
        let (resp, _) = codec::response(&head, None);
        if let Tx::Head(r) = &mut *self.tx.borrow_mut() {
            let _ = r.send_informational(resp);
        }
        Ok(())
    }

    async fn respond(&mut self, mut head: ResponseHead, body: Body<'_>) -> Result<(), Error> {
        if let Some(id) = &self.id {
            id.apply(&mut head);
        }
        let status = head.status();
        let length = match body {
            Body::Empty { length } => length,
            Body::Bytes(b) => Some(b.len() as u64),
            Body::File { len, .. } => Some(len),
            Body::Stream { length, .. } => length,
        };
        let empty = self.head_request || matches!(body, Body::Empty { .. }) || length == Some(0);
        let (resp, dropped) =
            codec::response(&head, length.filter(|_| status != 304 && status != 204));
        if dropped > 0 {
            log::debug!("{dropped} response field(s) HTTP/2 cannot carry were dropped");
        }
        let head_len = head.fields_len() + 13;
        self.meter.note_head(status, head_len as u64);
        self.meter.sent += head_len as u64;
        {
            let mut tx = self.tx.borrow_mut();
            let Tx::Head(r) = std::mem::replace(&mut *tx, Tx::Done) else {
                return Err(Error::internal("a second response head on one stream"));
            };
            let mut r = r;
            match r.send_response(resp, empty) {
                Ok(stream) if !empty => *tx = Tx::Body(stream),
                Ok(_) => {}
                Err(e) => return Err(gone(format!("sending the response head: {e}"))),
            }
        }
        if empty {
            return Ok(());
        }
        self.remaining = match body {
            Body::Stream { length, .. } => length,
            _ => None,
        };
        match body {
            Body::Bytes(b) => self.send_all(b, Last::End).await,
            Body::File {
                fd,
                offset,
                len,
                remote,
            } => self.send_file(Source { fd, remote }, offset, len).await,
            Body::Empty { .. } | Body::Stream { .. } => Ok(()),
        }
    }

    async fn send_data(&mut self, data: &[u8]) -> Result<(), Error> {
        if self.head_request || data.is_empty() {
            return Ok(());
        }
        if let Some(piece) = self.held.take() {
            // More than the declared length (the relay fails it): in order, at least.
            self.push(piece, false)?;
        }
        let len = data.len() as u64;
        let last = if self.remaining == Some(len) {
            Last::Hold
        } else {
            Last::Open
        };
        self.remaining = self.remaining.map(|r| r.saturating_sub(len));
        self.send_all(data, last).await
    }

    async fn end_body(&mut self, trailers: &[u8]) -> Result<(), Error> {
        let map = codec::trailer_map(trailers);
        if let Some(piece) = self.held.take() {
            self.push(piece, map.is_empty())?;
            if map.is_empty() {
                return Ok(());
            }
        }
        let mut tx = self.tx.borrow_mut();
        let Tx::Body(s) = &mut *tx else {
            // A HEAD answer (or an empty body) ended with its head.
            return Ok(());
        };
        let sent = if map.is_empty() {
            s.send_data(Bytes::new(), true)
        } else {
            s.send_trailers(map)
        };
        sent.map_err(|e| gone(format!("ending the response: {e}")))?;
        *tx = Tx::Done;
        Ok(())
    }

    fn reset(&mut self) {
        self.cut = true;
    }

    fn plain_socket(&mut self) -> Option<(&TcpStream, &mut u64)> {
        None
    }

    async fn switch_protocols(
        &mut self,
        _head: ResponseHead,
    ) -> Result<Option<(&mut ClientStream, Vec<u8>)>, Error> {
        // HTTP/2 has no 101 (and `h2` refuses `upgrade` fields, so none is offered upstream).
        Ok(None)
    }
}

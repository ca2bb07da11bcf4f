//! [`Shaped`]: a route's response rules between a backend and the client's protocol.

use monoio::net::TcpStream;

use super::{Encoder, Site};
use crate::error::{Error, ErrorKind, Side};
use crate::exchange::{Body, BodyLimits, Downstream};
use crate::http::encoding::{negotiate, Choice, Encoding};
use crate::http::request::RequestHead;
use crate::http::response::ResponseHead;
use crate::http::Version;
use crate::net::client::ClientStream;

/// Bytes of a file read per step when it is compressed on the way out.
const FILE_STEP: u64 = 64 * 1024;
/// Upstream fields an intercepted error keeps: what the client needs to act on the status.
const KEPT_ON_INTERCEPT: &[&str] = &["retry-after", "www-authenticate", "allow"];

/// The protocol's [`Downstream`] with a route's [`Site`] applied to what goes out.
pub struct Shaped<'a, D> {
    inner: &'a mut D,
    site: &'a Site,
    req: &'a RequestHead,
    state: State,
}

enum State {
    /// The body goes out as the backend sends it.
    Pass,
    /// The body is compressed on its way.
    Compress(Box<Encoder>),
    /// An error page went out instead: the backend's body is dropped.
    Swallow,
}

impl<'a, D: Downstream> Shaped<'a, D> {
    pub fn new(inner: &'a mut D, site: &'a Site, req: &'a RequestHead) -> Self {
        Self {
            inner,
            site,
            req,
            state: State::Pass,
        }
    }

    /// The coding to compress this response with, if it is to be compressed.
    fn coding(&self, head: &ResponseHead, body: &Body<'_>) -> Option<Encoding> {
        let c = self.site.compress.as_ref()?;
        let status = head.status();
        if self.req.version == Version::Http10
            || !(200..300).contains(&status)
            || matches!(status, 204 | 206)
            || head.field("content-encoding").is_some()
            || head.field("cache-control").is_some_and(no_transform)
            || !head
                .field("content-type")
                .is_some_and(|t| c.type_matches(t))
        {
            return None;
        }
        let length = match *body {
            Body::Empty { length } => length,
            Body::Bytes(b) => Some(b.len() as u64),
            Body::File { len, .. } => Some(len),
            Body::Stream { length, .. } => length,
        };
        if length.is_some_and(|n| n < c.min_size) {
            return None;
        }
        self.negotiated()
    }

    /// The coding the client takes of those the route compresses with (HTTP/1.0: none).
    fn negotiated(&self) -> Option<Encoding> {
        let c = self.site.compress.as_ref()?;
        if self.req.version == Version::Http10 {
            return None;
        }
        match negotiate(self.req.header("accept-encoding"), &c.encodings) {
            Choice::Coded(e) => Some(e),
            Choice::Identity | Choice::None => None,
        }
    }

    /// Sends an error page instead of an upstream's error response, if the route intercepts
    /// errors and has a page for its status.
    async fn intercept(&mut self, head: &ResponseHead) -> Option<Result<(), Error>> {
        if !self.site.intercept_errors || head.status() < 400 {
            return None;
        }
        let page = self.site.page(head.status())?;
        let mut h = ResponseHead::new(head.status());
        for name in KEPT_ON_INTERCEPT {
            if let Some(v) = head.field(name) {
                h.header_bytes(name, v);
            }
        }
        h.header("Content-Type", page.content_type);
        self.site.apply_headers(&mut h);
        self.state = State::Swallow;
        Some(self.inner.respond(h, Body::Bytes(&page.body)).await)
    }

    /// Sends a file's range compressed, read piece by piece.
    async fn compress_file(
        &mut self,
        mut e: Encoder,
        file: crate::net::disk::Source,
        offset: u64,
        len: u64,
    ) -> Result<(), Error> {
        let mut buf = Vec::with_capacity(FILE_STEP as usize);
        let mut done = 0;
        while done < len {
            buf.clear();
            let want = (len - done).min(FILE_STEP) as usize;
            // `fd` is the open file of `Body::File`, which the backend keeps open until
            // `respond` returns.
            let read = crate::net::disk::pread_append(file, &mut buf, want, offset + done).await;
            let n = match read {
                Ok(n) if n > 0 => n,
                Ok(_) => return Err(self.cut("the file shrank while it was compressed".into())),
                Err(err) => return Err(self.cut(err.detail.to_string())),
            };
            done += n as u64;
            if let Err(err) = e.write(&buf, false) {
                return Err(self.cut(format!("compression failed: {err}")));
            }
            let out = std::mem::take(e.output());
            if !out.is_empty() {
                self.inner.send_data(&out).await?;
            }
        }
        let rest = match e.finish() {
            Ok(rest) => rest,
            Err(err) => return Err(self.cut(format!("compression failed: {err}"))),
        };
        self.inner.send_data(&rest).await?;
        self.inner.end_body(&[]).await
    }

    /// The body cannot go on after its head: the client sees it cut off.
    fn cut(&mut self, why: String) -> Error {
        self.inner.reset();
        aborted(why)
    }
}

impl<D: Downstream> Downstream for Shaped<'_, D> {
    fn set_limits(&mut self, limits: BodyLimits) {
        self.inner.set_limits(limits);
    }

    fn set_request_id(&mut self, id: crate::telemetry::IdField) {
        self.inner.set_request_id(id);
    }

    fn take_body(&mut self, each: &mut dyn FnMut(&[u8])) -> Result<bool, Error> {
        self.inner.take_body(each)
    }

    async fn continue_body(&mut self) -> Result<(), Error> {
        self.inner.continue_body().await
    }

    async fn more_body(&mut self) -> Result<(), Error> {
        self.inner.more_body().await
    }

    fn body_trailers(&self) -> &[u8] {
        self.inner.body_trailers()
    }

    fn abandon_body(&mut self) {
        self.inner.abandon_body();
    }

    async fn send_interim(&mut self, head: ResponseHead) -> Result<(), Error> {
        self.inner.send_interim(head).await
    }

    async fn respond(&mut self, mut head: ResponseHead, body: Body<'_>) -> Result<(), Error> {
        if let Some(sent) = self.intercept(&head).await {
            return sent;
        }
        self.site.apply_headers(&mut head);
        let varies = self.site.varies
            && !head
                .field("vary")
                .is_some_and(|v| contains_token(v, b"accept-encoding"));
        if varies {
            head.header("Vary", "Accept-Encoding");
        }
        if head.status() == 304 && self.negotiated().is_some() {
            // The 200 this revalidates was compressed, with a weak validator: so is this.
            weaken_etag(&mut head);
        }
        let Some(coding) = self.coding(&head, &body) else {
            return self.inner.respond(head, body).await;
        };
        let levels = self
            .site
            .compress
            .as_ref()
            .map(|c| c.levels)
            .unwrap_or_default();
        // The representation changes: a strong validator of the original cannot stand for
        // it, and ranges of it are not served.
        let weak = head
            .field("etag")
            .filter(|e| e.starts_with(b"\""))
            .map(|e| [&b"W/"[..], e].concat());
        head.remove_fields(|n| {
            n.eq_ignore_ascii_case(b"accept-ranges")
                || (weak.is_some() && n.eq_ignore_ascii_case(b"etag"))
        });
        if let Some(w) = &weak {
            head.header_bytes("ETag", w);
        }
        head.header("Content-Encoding", coding.token());
        let encoder = || Encoder::new(coding, &levels).map_err(compress_error);
        match body {
            Body::Empty { .. } => self.inner.respond(head, Body::Empty { length: None }).await,
            Body::Bytes(b) => {
                let out = super::compress_all(coding, &levels, b).map_err(compress_error)?;
                self.inner.respond(head, Body::Bytes(&out)).await
            }
            Body::File {
                fd,
                offset,
                len,
                remote,
            } => {
                let stream = Body::Stream {
                    length: None,
                    follows: true,
                };
                let e = encoder()?;
                self.inner.respond(head, stream).await?;
                let file = crate::net::disk::Source { fd, remote };
                self.compress_file(e, file, offset, len).await
            }
            Body::Stream { follows, .. } => {
                self.state = State::Compress(Box::new(encoder()?));
                let stream = Body::Stream {
                    length: None,
                    follows,
                };
                self.inner.respond(head, stream).await
            }
        }
    }

    async fn send_data(&mut self, data: &[u8]) -> Result<(), Error> {
        match &mut self.state {
            State::Pass => self.inner.send_data(data).await,
            State::Swallow => Ok(()),
            State::Compress(e) => {
                if data.is_empty() {
                    return Ok(());
                }
                // Flushed per piece: a streamed response reaches the client as it comes.
                if let Err(err) = e.write(data, true) {
                    self.inner.reset();
                    return Err(aborted(format!("compression failed: {err}")));
                }
                let out = std::mem::take(e.output());
                self.inner.send_data(&out).await
            }
        }
    }

    async fn end_body(&mut self, trailers: &[u8]) -> Result<(), Error> {
        match std::mem::replace(&mut self.state, State::Pass) {
            State::Pass => self.inner.end_body(trailers).await,
            State::Swallow => Ok(()),
            State::Compress(e) => {
                let rest = match e.finish() {
                    Ok(rest) => rest,
                    Err(err) => {
                        self.inner.reset();
                        return Err(aborted(format!("compression failed: {err}")));
                    }
                };
                self.inner.send_data(&rest).await?;
                self.inner.end_body(trailers).await
            }
        }
    }

    fn reset(&mut self) {
        self.inner.reset();
    }

    fn plain_socket(&mut self) -> Option<(&TcpStream, &mut u64)> {
        match self.state {
            State::Pass => self.inner.plain_socket(),
            State::Compress(_) | State::Swallow => None,
        }
    }

    async fn switch_protocols(
        &mut self,
        head: ResponseHead,
    ) -> Result<Option<(&mut ClientStream, Vec<u8>)>, Error> {
        self.inner.switch_protocols(head).await
    }
}

/// A compressor that fails before the head went out: a 500.
fn compress_error(e: std::io::Error) -> Error {
    Error::internal(format!("compression failed: {e}"))
}

/// A failure once the head has gone out: the response cannot be answered any more, only cut
/// off (no status: nothing else is written to the client).
fn aborted(what: String) -> Error {
    Error::new(ErrorKind::Aborted, Side::Internal, what)
}

/// Makes a strong `ETag` weak (`W/"…"`).
fn weaken_etag(head: &mut ResponseHead) {
    let Some(weak) = head
        .field("etag")
        .filter(|e| e.starts_with(b"\""))
        .map(|e| [&b"W/"[..], e].concat())
    else {
        return;
    };
    head.remove_fields(|n| n.eq_ignore_ascii_case(b"etag"));
    head.header_bytes("ETag", &weak);
}

/// Whether `Cache-Control` says `no-transform`.
fn no_transform(v: &[u8]) -> bool {
    contains_token(v, b"no-transform")
}

/// Whether a comma-separated list holds `token` (case-insensitive).
fn contains_token(list: &[u8], token: &[u8]) -> bool {
    list.split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

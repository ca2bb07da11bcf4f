//! The HTTP/1 side of an exchange: [`H1Downstream`] implements [`Downstream`] over a client
//! connection. Every HTTP/1 rule about the client lives here, once:
//!
//! - **Framing** of each response: `Content-Length` when the length is known, else chunked
//!   for an HTTP/1.1 client and close-delimited for an HTTP/1.0 one; no body after a HEAD.
//! - **`Connection`**: `close` whenever the connection will not carry another request (the
//!   client or the daemon said so, the request body was not read whole, the body is
//!   close-delimited); `keep-alive` to an HTTP/1.0 client that keeps it; `upgrade` with a `101`.
//! - **Interim responses**: `100 Continue` when a client that waits for it is about to be
//!   read from (never otherwise, RFC 9110 §10.1.1); other `1xx` to HTTP/1.1 clients only.
//! - **The request body**, read with the codec's one [`BodyReader`] within the route's limits.

use monoio::net::TcpStream;

use crate::error::{Error, ErrorKind};
pub use crate::exchange::BodyLimits;
use crate::exchange::{Body, Downstream};
use crate::http::h1::body::{BodyReader, BodyWriter, Framing};
use crate::http::request::RequestHead;
use crate::http::response::{HeadBuf, ResponseHead};
use crate::http::{Method, Version};
use crate::net::client::ClientStream;
use crate::net::io::RecvError;
use crate::telemetry::IdField;

/// Read size for request bodies.
const CHUNK: usize = 64 * 1024;
/// A body up to this size leaves in one send with its head.
const ONE_SEND: usize = 16 * 1024;
/// What a client that waits for it is told before its body is read.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// One request's exchange on an HTTP/1 connection.
pub struct H1Downstream<'a> {
    client: &'a mut ClientStream,
    /// The connection's bytes read and not consumed: the body, then pipelined requests.
    buf: &'a mut Vec<u8>,
    version: Version,
    head_request: bool,
    /// The client and the daemon let the connection go on after this response.
    keep_alive: bool,
    reader: BodyReader,
    limits: BodyLimits,
    /// No `100 Continue` is (still) due.
    continued: bool,
    /// The rest of the body will not be read.
    abandoned: bool,
    /// The connection ends after this response (its head said so, or it was cut off).
    closing: bool,
    /// How the body of a streamed response goes out.
    stream: BodyWriter,
    /// Scratch for chunk framing.
    framed: Vec<u8>,
    /// The request's id, for the response head.
    id: Option<IdField>,
}

impl<'a> H1Downstream<'a> {
    /// The exchange of `req`, whose head has been consumed from `buf`. `keep_alive`: the
    /// daemon lets the connection go on (it is not draining).
    pub fn new(
        client: &'a mut ClientStream,
        buf: &'a mut Vec<u8>,
        req: &RequestHead,
        keep_alive: bool,
        limits: BodyLimits,
    ) -> Self {
        // A client that sent body bytes already is not waiting.
        let continued = !req.expects_continue() || !buf.is_empty();
        Self {
            client,
            buf,
            version: req.version,
            head_request: req.method == Method::Head,
            keep_alive: keep_alive && req.keep_alive,
            reader: BodyReader::new(Framing::of_request(req.body)),
            limits,
            continued,
            abandoned: false,
            closing: false,
            stream: BodyWriter::Identity,
            framed: Vec::new(),
            id: None,
        }
    }

    /// An answer on a connection whose request could not be read: it closes after.
    pub fn without_request(client: &'a mut ClientStream, buf: &'a mut Vec<u8>) -> Self {
        Self {
            client,
            buf,
            version: Version::Http11,
            head_request: false,
            keep_alive: false,
            reader: BodyReader::new(Framing::None),
            limits: BodyLimits::default(),
            continued: true,
            abandoned: false,
            closing: true,
            stream: BodyWriter::Identity,
            framed: Vec::new(),
            id: None,
        }
    }

    /// Whether the request body has been read whole (or there was none), and not given up.
    pub fn body_done(&self) -> bool {
        self.reader.is_done() && !self.abandoned
    }

    /// Whether the connection can carry another request after this response.
    pub fn keeps_alive(&self) -> bool {
        self.keep_alive && !self.closing && self.body_done()
    }

    /// The connection ends after this response, whatever else says.
    pub fn close(&mut self) {
        self.closing = true;
    }

    /// The head as bytes: the framing lines for `body` and `Connection`, then the blank line.
    fn finish_head(&mut self, mut head: ResponseHead, body: &Body<'_>) -> HeadBuf {
        if let Some(id) = &self.id {
            id.apply(&mut head);
        }
        let http10 = self.version == Version::Http10;
        let length = match *body {
            Body::Empty { length } => length,
            Body::Bytes(b) => Some(b.len() as u64),
            Body::File { len, .. } => Some(len),
            Body::Stream { length, .. } => length,
        };
        match (length, body) {
            (Some(n), _) => {
                head.content_length(n);
            }
            (None, Body::Stream { .. }) if http10 => {
                // Close-delimited: the connection's end is the body's.
                self.closing = true;
            }
            (None, Body::Stream { .. }) => {
                head.header("Transfer-Encoding", "chunked");
            }
            (None, _) => {}
        }
        self.stream = match (length, body) {
            (None, Body::Stream { .. }) if !http10 => BodyWriter::Chunked,
            _ => BodyWriter::Identity,
        };
        if !self.keeps_alive() {
            self.closing = true;
            head.header("Connection", "close");
        } else if http10 {
            head.header("Connection", "keep-alive");
        }
        head.finish()
    }

    /// Sends a head (and bytes after it), noting its status and size for the log.
    async fn send_head(
        &mut self,
        status: u16,
        head: &[u8],
        head_len: usize,
        more: bool,
    ) -> Result<(), Error> {
        self.client.meter.note_head(status, head_len as u64);
        self.client.send(head, more).await
    }
}

impl Downstream for H1Downstream<'_> {
    fn set_limits(&mut self, limits: BodyLimits) {
        self.limits = limits;
    }

    fn set_request_id(&mut self, id: IdField) {
        self.id = Some(id);
    }

    fn take_body(&mut self, each: &mut dyn FnMut(&[u8])) -> Result<bool, Error> {
        if self.reader.is_done() {
            return Ok(true);
        }
        let used = self
            .reader
            .read(self.buf, each)
            .map_err(|e| Error::client(ErrorKind::BadRequest, e.reason))?;
        self.buf.drain(..used);
        if self.reader.framing() == Framing::Chunked
            && self.reader.body_bytes() > self.limits.max_chunked
        {
            return Err(Error::client(
                ErrorKind::BodyTooLarge,
                "chunked body too large",
            ));
        }
        Ok(self.reader.is_done())
    }

    async fn continue_body(&mut self) -> Result<(), Error> {
        if !std::mem::replace(&mut self.continued, true) {
            self.client.meter.note_head(100, CONTINUE.len() as u64);
            self.client.send(CONTINUE, false).await?;
        }
        Ok(())
    }

    async fn more_body(&mut self) -> Result<(), Error> {
        // Only a readiness wait, then a read: nothing is written here (a `100 Continue` goes
        // out in `continue_body`, before), so a caller may race this against other waits.
        match self
            .client
            .recv_into(self.buf, CHUNK, self.limits.timeout)
            .await
        {
            Ok(0) => Err(Error::client(
                ErrorKind::ClientGone,
                "client closed mid-body",
            )),
            Ok(_) => Ok(()),
            Err(RecvError::Timeout) => Err(Error::client(
                ErrorKind::ClientTimeout,
                "request body too slow",
            )),
            Err(RecvError::Failed(k)) => Err(Error::client(
                ErrorKind::ClientGone,
                format!("client read failed: {k:?}"),
            )),
        }
    }

    fn body_trailers(&self) -> &[u8] {
        self.reader.trailers()
    }

    fn abandon_body(&mut self) {
        // Even when the body was read whole: the upstream refused it, and the connection ends
        // with a lingering close, as the module documentation of the proxy says.
        self.abandoned = true;
    }

    async fn send_interim(&mut self, head: ResponseHead) -> Result<(), Error> {
        // The daemon answers `Expect` itself; an HTTP/1.0 client gets no 1xx (RFC 9110 §15.2).
        if head.status() == 100 || self.version == Version::Http10 {
            return Ok(());
        }
        let status = head.status();
        let out = head.finish();
        self.send_head(status, &out, out.len(), false).await
    }

    async fn respond(&mut self, head: ResponseHead, body: Body<'_>) -> Result<(), Error> {
        let status = head.status();
        let mut out = self.finish_head(head, &body);
        let head_len = out.len();
        match body {
            Body::Bytes(b) if !self.head_request && !b.is_empty() => {
                if b.len() <= ONE_SEND {
                    out.extend_from_slice(b);
                    return self.send_head(status, &out, head_len, false).await;
                }
                self.send_head(status, &out, head_len, true).await?;
                self.client.send(b, false).await
            }
            Body::File {
                fd,
                offset,
                len,
                remote,
            } if !self.head_request && len > 0 => {
                self.client.meter.note_head(status, head_len as u64);
                let file = crate::net::disk::Source { fd, remote };
                self.client
                    .send_head_and_file(&mut out, file, offset, len)
                    .await
            }
            Body::Stream { length, .. } if length != Some(0) && !self.head_request => {
                // Held back (`MSG_MORE`) only when body bytes follow at once.
                let follows = matches!(body, Body::Stream { follows: true, .. });
                self.send_head(status, &out, head_len, follows).await
            }
            _ => self.send_head(status, &out, head_len, false).await,
        }
    }

    async fn send_data(&mut self, data: &[u8]) -> Result<(), Error> {
        if data.is_empty() || self.head_request {
            return Ok(());
        }
        if self.stream == BodyWriter::Chunked {
            let mut framed = std::mem::take(&mut self.framed);
            framed.clear();
            self.stream.write_data(data, &mut framed);
            let sent = self.client.send(&framed, false).await;
            self.framed = framed;
            return sent;
        }
        self.client.send(data, false).await
    }

    async fn end_body(&mut self, trailers: &[u8]) -> Result<(), Error> {
        if self.stream != BodyWriter::Chunked || self.head_request {
            return Ok(());
        }
        let mut end = Vec::with_capacity(5 + trailers.len());
        self.stream.write_end(trailers, &mut end);
        self.client.send(&end, false).await
    }

    fn reset(&mut self) {
        self.closing = true;
    }

    fn plain_socket(&mut self) -> Option<(&TcpStream, &mut u64)> {
        self.client.plain_parts()
    }

    async fn switch_protocols(
        &mut self,
        mut head: ResponseHead,
    ) -> Result<Option<(&mut ClientStream, Vec<u8>)>, Error> {
        self.closing = true;
        head.header("Connection", "upgrade");
        let out = head.finish();
        self.send_head(101, &out, out.len(), false).await?;
        let rest = std::mem::take(&mut *self.buf);
        Ok(Some((&mut *self.client, rest)))
    }
}

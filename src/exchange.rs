//! One exchange as a backend sees it, whatever protocol the client speaks: the request body to
//! read and the response to send, through [`Downstream`]. The backends ([`crate::files`],
//! [`crate::proxy`]) answer through it and never write protocol bytes to the client
//! themselves: framing, `Connection`, keep-alive and which interim responses a client may get
//! are the protocol's ([`crate::server::h1`] for HTTP/1; an in-memory one in the tests).

use std::os::fd::RawFd;
use std::time::Duration;

use monoio::net::TcpStream;

use crate::error::Error;
use crate::http::response::ResponseHead;
use crate::net::client::ClientStream;
use crate::telemetry::IdField;

/// The route's limits on a request body.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    /// Most bytes of a body of unknown length (chunked, or an HTTP/2 stream without
    /// `content-length`; a declared length is checked against its own limit before the
    /// exchange begins).
    pub max_chunked: u64,
    /// Longest wait for the next piece.
    pub timeout: Duration,
}

impl Default for BodyLimits {
    fn default() -> Self {
        Self {
            max_chunked: u64::MAX,
            timeout: Duration::from_secs(60),
        }
    }
}

/// The body that follows a response head.
#[derive(Clone, Copy, Debug)]
pub enum Body<'a> {
    /// None. `length` is the body a GET would get, for the answer to a HEAD (`None`: a `304`,
    /// a `204`, or a length not known).
    Empty { length: Option<u64> },
    /// All of it, in memory.
    Bytes(&'a [u8]),
    /// `len` bytes of the open file `fd` from `offset`; `remote`: the file is on a network or
    /// FUSE mount (see [`crate::net::disk::Source`]).
    File {
        fd: RawFd,
        offset: u64,
        len: u64,
        remote: bool,
    },
    /// Streamed after the head with [`Downstream::send_data`] and ended with
    /// [`Downstream::end_body`]; `length` when it is known. `follows`: body bytes are at hand,
    /// so the head may wait a moment to leave with them.
    Stream { length: Option<u64>, follows: bool },
}

/// The client's side of one request: its body coming in, its response going out.
///
/// Reading is cancel-safe (every wait is a readiness wait, and bytes read are kept), so a
/// backend may race [`Downstream::more_body`] against its upstream.
#[allow(async_fn_in_trait)]
pub trait Downstream {
    /// The route is known: its body limits apply.
    fn set_limits(&mut self, limits: BodyLimits);

    /// The request's id: every final response head carries it (replacing an upstream's).
    fn set_request_id(&mut self, id: IdField);

    /// Reads the rest of the request body and drops it (a File route has no use for one).
    async fn discard_body(&mut self) -> Result<(), Error> {
        self.continue_body().await?;
        while !self.take_body(&mut |_| {})? {
            self.more_body().await?;
        }
        Ok(())
    }

    /// Takes the request body that has arrived: each piece of data goes to `each`, in order.
    /// `true` once the whole body has been taken. A body over the route's limits, or
    /// malformed, is an error for the client.
    fn take_body(&mut self, each: &mut dyn FnMut(&[u8])) -> Result<bool, Error>;

    /// The backend is about to read the request body: a client that waits for leave to send
    /// it is told to go on (`100 Continue`, where the protocol has one), once.
    async fn continue_body(&mut self) -> Result<(), Error>;

    /// Waits until more of the request body has arrived (within the route's body timeout).
    /// Writes nothing: call [`Downstream::continue_body`] first.
    async fn more_body(&mut self) -> Result<(), Error>;

    /// The trailer fields of a complete request body (`Name: value\r\n` lines; often empty).
    fn body_trailers(&self) -> &[u8];

    /// The request body is given up (an upstream answered before it took all of it): the
    /// client's connection does not carry another request.
    fn abandon_body(&mut self);

    /// Sends an interim (`1xx`) response, where the client may get one.
    async fn send_interim(&mut self, head: ResponseHead) -> Result<(), Error>;

    /// Sends the final response head and, unless it is a [`Body::Stream`], its body.
    async fn respond(&mut self, head: ResponseHead, body: Body<'_>) -> Result<(), Error>;

    /// Sends the next piece of a [`Body::Stream`].
    async fn send_data(&mut self, data: &[u8]) -> Result<(), Error>;

    /// Ends a [`Body::Stream`], with the trailer fields of a chunked source (`Name: value\r\n`
    /// lines; may be empty).
    async fn end_body(&mut self, trailers: &[u8]) -> Result<(), Error>;

    /// The response cannot be completed (its source failed or vanished): the client must see
    /// it cut off, not complete.
    fn reset(&mut self);

    /// For a [`Body::Stream`] of known length to a client on a plain socket: that socket and
    /// the count of bytes sent to it, so the body can be spliced there without a copy.
    fn plain_socket(&mut self) -> Option<(&TcpStream, &mut u64)>;

    /// Sends a `101 Switching Protocols` head and hands over the client's connection, with the
    /// bytes it sent beyond the request, for a tunnel; `None` where the protocol has no such
    /// switch.
    async fn switch_protocols(
        &mut self,
        head: ResponseHead,
    ) -> Result<Option<(&mut ClientStream, Vec<u8>)>, Error>;
}

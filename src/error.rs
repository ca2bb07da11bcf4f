//! The data plane's one error type, and the one place where an error becomes a response.
//!
//! Every failure while serving a request is an [`Error`]: what went wrong ([`ErrorKind`]), whose
//! fault it was ([`Side`]) and whether a retry on another connection is safe. [`Error::status`]
//! is the only mapping from errors to status codes; [`Error::must_close`] says whether the
//! connection can go on. Pingora's error model is the inspiration.

use std::borrow::Cow;
use std::fmt;

use crate::http::request::HeadError;

/// Whose fault an error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client sent something wrong, or went away.
    Client,
    /// The upstream failed (proxy routes).
    Upstream,
    /// We failed: a bug or a local resource problem.
    Internal,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed (400); the connection closes, framing is in doubt.
    BadRequest,
    /// The request line is longer than `max_request_header_size` (414).
    UriTooLong,
    /// The header section is larger than `max_request_header_size` (431).
    HeaderTooLarge,
    /// The body is larger than the route allows (413).
    BodyTooLarge,
    /// An HTTP version other than 1.0 and 1.1 (505).
    VersionNotSupported,
    /// A transfer coding we do not implement (501).
    NotImplemented,
    /// No route, or no file (404).
    NotFound,
    /// An HTTP/2 request for a name the connection's certificate does not cover (421): the
    /// client is to open a connection of its own for it.
    Misdirected,
    /// Refused by policy, or a path that leaves the route's root (403).
    Forbidden,
    /// The method is not served here (405); carries the `Allow` value.
    MethodNotAllowed(String),
    /// Over the route's `rate_limit_requests_per_min` (429); carries the `Retry-After` seconds.
    TooManyRequests(u64),
    /// The range cannot be satisfied (416); carries the representation's length.
    RangeNotSatisfiable(u64),
    /// The client was too slow sending its head or body (408).
    ClientTimeout,
    /// The client closed or reset the connection, or stopped reading: nobody to answer.
    ClientGone,
    /// Our fault (500).
    Internal,
    /// The upstream refused the connection, failed, or answered something that is not HTTP
    /// (502).
    BadGateway,
    /// The upstream did not connect or answer in time (504).
    GatewayTimeout,
    /// No server of the upstream group can take the request (503).
    ServiceUnavailable,
    /// A response was already under way when the upstream failed: the client connection is
    /// closed so that the response cannot look complete.
    Aborted,
}

/// A data-plane error.
#[derive(Clone, Debug)]
pub struct Error {
    pub kind: ErrorKind,
    pub side: Side,
    /// Whether the request may be retried on a fresh upstream connection.
    pub retry: bool,
    /// A short explanation for the log and the response body.
    pub detail: Cow<'static, str>,
}

impl Error {
    pub fn new(kind: ErrorKind, side: Side, detail: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            side,
            retry: false,
            detail: detail.into(),
        }
    }

    pub fn client(kind: ErrorKind, detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(kind, Side::Client, detail)
    }

    pub fn internal(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Internal, Side::Internal, detail)
    }

    pub fn upstream(kind: ErrorKind, detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(kind, Side::Upstream, detail)
    }

    pub fn not_found() -> Self {
        Self::client(ErrorKind::NotFound, "not found")
    }

    /// This error once its response has begun: no status can follow, the connection (or
    /// stream) is cut ([`ErrorKind::Aborted`]). A client that went away stays that.
    pub fn cut_off(self) -> Self {
        match self.kind {
            ErrorKind::ClientGone | ErrorKind::Aborted => self,
            _ => Self::new(ErrorKind::Aborted, self.side, self.detail),
        }
    }

    /// The gRPC status code for this error, for a gRPC call (whose errors travel as
    /// `grpc-status`, in an HTTP 200): 14 UNAVAILABLE when no upstream could take it, 4
    /// DEADLINE_EXCEEDED for timeouts, 8 RESOURCE_EXHAUSTED for rate limits and size limits,
    /// 12 UNIMPLEMENTED for no route, 7 PERMISSION_DENIED for policy, 3 INVALID_ARGUMENT
    /// for a malformed request, 13 INTERNAL for the rest.
    pub fn grpc_status(&self) -> u8 {
        match self.kind {
            ErrorKind::BadGateway | ErrorKind::ServiceUnavailable | ErrorKind::Misdirected => 14,
            ErrorKind::GatewayTimeout | ErrorKind::ClientTimeout => 4,
            ErrorKind::TooManyRequests(_)
            | ErrorKind::BodyTooLarge
            | ErrorKind::HeaderTooLarge
            | ErrorKind::UriTooLong => 8,
            ErrorKind::NotFound | ErrorKind::MethodNotAllowed(_) => 12,
            ErrorKind::Forbidden => 7,
            ErrorKind::BadRequest | ErrorKind::RangeNotSatisfiable(_) => 3,
            ErrorKind::VersionNotSupported | ErrorKind::NotImplemented => 12,
            ErrorKind::Internal | ErrorKind::ClientGone | ErrorKind::Aborted => 13,
        }
    }

    /// The status sent for this error; `None` when nobody is left to answer.
    pub fn status(&self) -> Option<u16> {
        Some(match self.kind {
            ErrorKind::BadRequest => 400,
            ErrorKind::Forbidden => 403,
            ErrorKind::Misdirected => 421,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed(_) => 405,
            ErrorKind::ClientTimeout => 408,
            ErrorKind::BodyTooLarge => 413,
            ErrorKind::UriTooLong => 414,
            ErrorKind::RangeNotSatisfiable(_) => 416,
            ErrorKind::TooManyRequests(_) => 429,
            ErrorKind::HeaderTooLarge => 431,
            ErrorKind::Internal => 500,
            ErrorKind::NotImplemented => 501,
            ErrorKind::BadGateway => 502,
            ErrorKind::GatewayTimeout => 504,
            ErrorKind::ServiceUnavailable => 503,
            ErrorKind::Aborted => return None,
            ErrorKind::VersionNotSupported => 505,
            ErrorKind::ClientGone => return None,
        })
    }

    /// Whether the connection must close after the error response: whenever the framing of
    /// the stream is in doubt or the client misbehaved at the protocol level.
    pub fn must_close(&self) -> bool {
        !matches!(
            self.kind,
            ErrorKind::NotFound
                | ErrorKind::Forbidden
                | ErrorKind::MethodNotAllowed(_)
                | ErrorKind::RangeNotSatisfiable(_)
                | ErrorKind::TooManyRequests(_)
        )
    }
}

impl From<HeadError> for Error {
    fn from(e: HeadError) -> Self {
        let kind = match e.status {
            414 => ErrorKind::UriTooLong,
            431 => ErrorKind::HeaderTooLarge,
            501 => ErrorKind::NotImplemented,
            505 => ErrorKind::VersionNotSupported,
            _ => ErrorKind::BadRequest,
        };
        Self::client(kind, e.reason)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = match self.side {
            Side::Client => "client",
            Side::Upstream => "upstream",
            Side::Internal => "internal",
        };
        write!(f, "{side} error: {:?}: {}", self.kind, self.detail)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_close() {
        let e = Error::client(ErrorKind::MethodNotAllowed("GET, HEAD".into()), "x");
        assert_eq!(e.status(), Some(405));
        assert!(!e.must_close());
        let e = Error::client(ErrorKind::BadRequest, "x");
        assert_eq!(e.status(), Some(400));
        assert!(e.must_close());
        assert_eq!(Error::client(ErrorKind::ClientGone, "x").status(), None);
        assert_eq!(Error::internal("x").side, Side::Internal);
    }

    #[test]
    fn head_errors_map_to_kinds() {
        for (status, kind) in [
            (400, ErrorKind::BadRequest),
            (414, ErrorKind::UriTooLong),
            (431, ErrorKind::HeaderTooLarge),
            (501, ErrorKind::NotImplemented),
            (505, ErrorKind::VersionNotSupported),
        ] {
            let e = Error::from(HeadError {
                status,
                reason: "r",
            });
            assert_eq!(e.kind, kind);
            assert_eq!(e.status(), Some(status));
        }
    }
}

//! The TLS handshake of a connection on a TLS listener, and where its records then run
//! (rustls in userspace, or the kernel).

use std::net::SocketAddr;
#[cfg(feature = "ktls")]
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use monoio::net::TcpStream;

use crate::metrics::WorkerStats;
use crate::net::client::ClientStream;
use crate::shared::Shared;
use crate::tls::RecordLayer;

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Completes the TLS handshake of a connection on a TLS listener, by `deadline`. A client that
/// speaks plain HTTP to the port gets a plain-text 400 saying so, and the connection closes.
///
/// Where the records then run follows the start-up [`RecordLayer`]: with kernel TLS the keys
/// move into the socket after the handshake, falling back to rustls or closing the connection
/// when the kernel cannot take this one, as `ktls_fallback_enabled` says.
pub(super) async fn accept_tls(
    stream: TcpStream,
    peer: SocketAddr,
    config: Arc<rustls::ServerConfig>,
    deadline: Instant,
    shared: &Shared,
    worker: usize,
) -> Option<Handshake> {
    let stats = &shared.workers[worker];
    if let RecordLayer::Refuse(_) = shared.record_layer {
        // Kernel TLS is unavailable and the operator asked for no userspace fallback (the
        // start-up log said so).
        log::debug!("{peer}: TLS connection refused: kernel TLS is unavailable");
        WorkerStats::bump(&stats.ktls_refused);
        return None;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    if !matches!(
        monoio::time::timeout(left, stream.readable(false)).await,
        Ok(Ok(()))
    ) {
        return None;
    }
    let Ok(Some(first)) = crate::net::sys::peek_byte(crate::net::sys::socket_fd(&stream)) else {
        return None;
    };
    if first != TLS_HANDSHAKE_RECORD {
        log::debug!("{peer}: plain HTTP (or not TLS) on the TLS port; answering 400 and closing");
        if first.is_ascii_uppercase() {
            let body = "400 Bad Request: this port speaks HTTPS\n";
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let mut client = ClientStream::plain(stream);
            if client.send(answer.as_bytes(), false).await.is_ok() {
                super::connection::linger(&mut client, &mut Vec::new()).await;
            }
        }
        return None;
    }
    let session = match crate::net::server_tls::ServerTls::new(config) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("{peer}: cannot start a TLS session: {e}");
            return None;
        }
    };
    let mut session = Box::new(session);
    let done = match shared.record_layer {
        #[cfg(feature = "ktls")]
        RecordLayer::Kernel { .. } => {
            crate::net::tls::handshake_whole_records(&stream, &mut *session, deadline).await
        }
        _ => crate::net::tls::handshake(&stream, &mut *session, deadline).await,
    };
    if let Err(e) = done {
        log::debug!("{peer}: {e}");
        return None;
    }
    WorkerStats::bump(&stats.tls_handshakes);
    let h2 = session.alpn_protocol() == Some(b"h2");
    let sni = session.server_name().map(str::to_owned);
    let client = match &shared.record_layer {
        #[cfg(feature = "ktls")]
        RecordLayer::Kernel { support, fallback } => {
            use crate::tls::ktls::{offload, Offload};
            match offload(stream.as_raw_fd(), session, support) {
                Offload::Kernel { early } => {
                    WorkerStats::bump(&stats.ktls);
                    Some(ClientStream::kernel_tls(stream, early))
                }
                Offload::Userspace(session, why) if *fallback => {
                    log::debug!("{peer}: TLS stays in userspace: {why}");
                    WorkerStats::bump(&stats.ktls_fallback);
                    Some(ClientStream::tls(stream, session))
                }
                Offload::Userspace(_, why) | Offload::Failed(why) => {
                    log::debug!("{peer}: TLS connection closed: kernel TLS failed: {why}");
                    WorkerStats::bump(&stats.ktls_refused);
                    None
                }
            }
        }
        RecordLayer::Fallback(_) => {
            WorkerStats::bump(&stats.ktls_fallback);
            Some(ClientStream::tls(stream, session))
        }
        _ => Some(ClientStream::tls(stream, session)),
    };
    client.map(|client| Handshake { client, h2, sni })
}

/// A connection past its TLS handshake.
pub(super) struct Handshake {
    pub(super) client: ClientStream,
    /// The client chose HTTP/2 by ALPN.
    pub(super) h2: bool,
    /// The name the client asked for (SNI), lower-case.
    pub(super) sni: Option<String>,
}

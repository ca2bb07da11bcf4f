//! TLS through rustls on the workers' own non-blocking sockets.
//!
//! [`io`] drives any rustls connection (client or server side) over a monoio `TcpStream` with
//! raw non-blocking `send`/`recv` and readiness waits, the same way the plain data path does, so
//! a TLS connection is a plain socket plus a rustls state machine owned by its task. [`client`]
//! builds the verifying client configurations for `https://` upstreams, [`server`] the
//! listener's. [`RecordLayer`] says, once at start-up, whether the listener's records run in
//! userspace or (`--features ktls`, [`ktls`]) in the kernel.

pub mod client;
#[cfg(feature = "ktls")]
pub mod ktls;
pub mod server;
pub mod sessions;

use crate::config::Tls;

/// Where a TLS listener's records are encrypted: decided once at start-up from `[tls]
/// ktls_enabled` and `ktls_fallback_enabled` and, in a `ktls` build, the kernel's answer to
/// [`ktls::probe`]. A reload cannot change it (those keys need a restart).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordLayer {
    /// rustls in userspace: kTLS was not asked for.
    Userspace,
    /// kTLS was asked for in a build without it (the config check warns).
    NotBuilt,
    /// The kernel runs the records of every connection whose cipher it accepts; the others
    /// continue in userspace when `fallback` is on and are closed when it is off.
    #[cfg(feature = "ktls")]
    Kernel {
        support: ktls::Support,
        fallback: bool,
    },
    /// kTLS was asked for but is unavailable (the reason); fallback on: userspace.
    Fallback(String),
    /// kTLS was asked for but is unavailable (the reason) and fallback is off: TLS connections
    /// are refused.
    Refuse(String),
}

impl RecordLayer {
    /// Decides for `[tls]` (probing the kernel when kTLS is asked for in a `ktls` build).
    pub fn decide(tls: Option<&Tls>) -> Self {
        match tls {
            Some(t) if t.ktls_enabled => Self::probe(t.ktls_fallback_enabled),
            _ => Self::Userspace,
        }
    }

    #[cfg(feature = "ktls")]
    fn probe(fallback: bool) -> Self {
        // Tests stand in for a kernel without TLS on machines that have it.
        let probed = match std::env::var("ZEROCOPY_KTLS_PROBE").as_deref() {
            Ok("unavailable") => Err("ZEROCOPY_KTLS_PROBE=unavailable".to_string()),
            _ => ktls::probe(),
        };
        match probed {
            Ok(support) => Self::Kernel { support, fallback },
            Err(reason) if fallback => Self::Fallback(reason),
            Err(reason) => Self::Refuse(reason),
        }
    }

    #[cfg(not(feature = "ktls"))]
    fn probe(_fallback: bool) -> Self {
        Self::NotBuilt
    }

    /// One line for `proxyctl status` and the start-up log.
    pub fn describe(&self) -> String {
        match self {
            Self::Userspace => "userspace (rustls)".into(),
            Self::NotBuilt => "userspace (rustls; kTLS is not in this build)".into(),
            #[cfg(feature = "ktls")]
            Self::Kernel { support, fallback } => format!(
                "kernel (kTLS: {}; other ciphers {})",
                support.describe(),
                if *fallback {
                    "fall back to userspace"
                } else {
                    "are refused"
                }
            ),
            Self::Fallback(why) => format!("userspace (rustls; kTLS unavailable: {why})"),
            Self::Refuse(why) => format!(
                "refusing TLS connections (kTLS unavailable: {why}; ktls_fallback_enabled = \
                 false)"
            ),
        }
    }

    /// Logs the decision once, at start-up: a warning when connections will be refused.
    pub fn log(&self) {
        match self {
            Self::Userspace => {}
            Self::Refuse(why) => log::warn!(
                "tls: kernel TLS is unavailable ({why}) and tls.ktls_fallback_enabled = false: \
                 every TLS connection will be refused; load the kernel's tls module or set \
                 ktls_fallback_enabled = true"
            ),
            other => log::info!("tls: records run in {}", other.describe()),
        }
    }
}

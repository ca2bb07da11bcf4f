//! `[[listeners]]` (spec § 4): where the daemon accepts connections and what each address
//! speaks. `[server] listen` is the one-listener shorthand and becomes one [`Listener`].

use std::net::SocketAddr;

use super::Origin;
use crate::security::IpSet;

/// One listening address and its protocol settings.
///
/// The address (with `ipv6_only`) is bound once per worker at start-up: changing the set of
/// addresses needs a restart or a binary upgrade. The other settings are read from the serving
/// snapshot for each connection, so a reload changes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// `address`: required, `"ip:port"`.
    pub address: SocketAddr,
    /// `tls`: TLS with the certificates of `[tls]`; default false (the shorthand: true when
    /// `[tls]` is present).
    pub tls: bool,
    /// `http2`: HTTP/2 on this listener (ALPN `h2` with TLS, prior knowledge without when
    /// `[http2] h2c`); default `[http2] enabled`.
    pub http2: bool,
    /// `ipv6_only`: an IPv6 address takes IPv6 clients only (`IPV6_V6ONLY`); default false
    /// (`[::]` takes IPv4 clients too).
    pub ipv6_only: bool,
    /// `redirect_to_https` and its keys: every request answered `308` to HTTPS.
    pub redirect: Option<RedirectToHttps>,
    /// `proxy_protocol` and `proxy_protocol_from`.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Where the entry is, e.g. `listeners[1]` or `server.listen`.
    pub origin: Origin,
}

impl Listener {
    /// The listener `[server] listen` stands for.
    pub fn shorthand(address: SocketAddr, tls: bool, http2: bool, origin: Origin) -> Self {
        Self {
            address,
            tls,
            http2,
            ipv6_only: false,
            redirect: None,
            proxy_protocol: None,
            origin,
        }
    }

    /// What is bound at start-up and cannot change without a restart.
    pub fn binding(&self) -> (SocketAddr, bool) {
        (self.address, self.ipv6_only)
    }
}

/// `redirect_to_https = true`: answer every request with `308 https://host[:port]/path?query`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedirectToHttps {
    /// `https_port`: the port in the `Location`, left out when 443. Default: the port of the
    /// first TLS listener, else 443.
    pub https_port: u16,
    /// `redirect_exempt`: path prefixes served normally (routed) instead, e.g.
    /// `/.well-known/acme-challenge/`. Default none.
    pub exempt: Vec<String>,
}

impl RedirectToHttps {
    /// Whether a request for `path` (the request target's path, before normalisation) is
    /// served instead of redirected.
    pub fn exempts(&self, path: &str) -> bool {
        self.exempt.iter().any(|p| path.starts_with(p.as_str()))
    }
}

/// `proxy_protocol`: which PROXY protocol headers the listener requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyProtocol {
    pub versions: ProxyVersions,
    /// `proxy_protocol_from`: the peers that may send the header; a connection from any other
    /// address is closed unserved. Required.
    pub from: IpSet,
}

/// The header versions a listener takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyVersions {
    /// `"v1"`: the text header.
    V1,
    /// `"v2"`: the binary header.
    V2,
    /// `"any"`: either.
    Any,
}

impl ProxyVersions {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
            Self::Any => "any",
        }
    }
}

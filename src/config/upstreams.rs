//! `[upstreams.NAME]`: named groups of upstream servers, with their balancing, health checks,
//! outlier ejection and retry rules (the keys of the spec's § 2, defaults in
//! [`super::defaults`]). A route's `url` becomes a one-server group of its own
//! ([`UpstreamGroup::from_url`]).

use std::path::PathBuf;
use std::time::Duration;

use super::{defaults, Origin, Scheme, UpstreamUrl};

/// One group of interchangeable servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamGroup {
    /// The group's name (`api` for `[upstreams.api]`; `http://host:port` for a route's `url`).
    pub name: String,
    pub origin: Origin,
    /// Primaries first in file order, then backups; never without a primary.
    pub servers: Vec<ServerSpec>,
    pub balance: Balance,
    /// `tls`: speak TLS to the servers, verified like `https://` routes.
    pub tls: bool,
    pub tls_server_name: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// `protocol`: HTTP/1.1, or HTTP/2 (ALPN `h2` over TLS, prior knowledge without).
    pub protocol: UpstreamProtocol,
    /// `dns_refresh_secs`; zero = at load and reload only.
    pub dns_refresh: Duration,
    /// `initial_state = "unhealthy"`: servers new to the group wait for their checks.
    pub initial_unhealthy: bool,
    pub on_all_unhealthy: AllUnhealthy,
    pub panic_threshold_percent: u8,
    /// `slow_start_secs`; zero = none.
    pub slow_start: Duration,
    /// `max_idle_connections_per_server`, per worker; `None` (a route's `url`) = the route's
    /// `max_idle_connections_per_host`.
    pub max_idle_per_server: Option<usize>,
    /// `idle_connection_timeout_secs`; `None` (a route's `url`) = the route's.
    pub idle_timeout: Option<Duration>,
    pub health_check: Option<HealthCheck>,
    pub outlier: Outlier,
    pub retry: Retry,
    /// Made from a route's `url`, not written as a group.
    pub implicit: bool,
}

/// One `servers` entry as written: an IP address or a name, and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSpec {
    /// Host name (lower-case) or IP literal without brackets.
    pub host: String,
    pub port: u16,
    /// 1..=1000.
    pub weight: u32,
    pub backup: bool,
}

impl ServerSpec {
    /// `host:port`, bracketing an IPv6 literal: the default `Host` of checks and of
    /// `preserve_host = false`.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Whether the host is a name to resolve (not an IP literal).
    pub fn is_name(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_err()
    }
}

/// What a group's servers speak.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    /// HTTP/2: a few multiplexed connections per server and worker; what gRPC needs.
    H2,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Balance {
    /// Smooth weighted round robin (nginx's).
    RoundRobin,
    /// The less loaded of two servers picked at random by weight (in-flight requests shared by
    /// all workers).
    LeastRequest,
    /// At random, by weight.
    Random,
    /// Consistent (ring) hashing on the key: a server leaving moves only its own keys.
    Hash(HashKey),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    /// A request header (lower-case name).
    Header(String),
    /// A cookie's value.
    Cookie(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllUnhealthy {
    /// Fail open: balance over every enabled primary, ignoring health (counted, logged).
    TryAll,
    /// Answer 503.
    Fail,
}

/// `[upstreams.NAME.health_check]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub kind: CheckKind,
    pub interval: Duration,
    pub unhealthy_interval: Duration,
    pub timeout: Duration,
    pub jitter_percent: u8,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// `port`: default the server's.
    pub port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// Connects (and completes TLS when the group has it).
    Tcp,
    Http {
        path: String,
        /// `GET` or `HEAD`.
        head: bool,
        /// `Host`; default the server's `host:port`.
        host: Option<String>,
        expect: Vec<StatusMatch>,
    },
}

/// An `expect_status` entry: a code (`204`) or a class (`2xx`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusMatch {
    Code(u16),
    Class(u16),
}

impl StatusMatch {
    pub fn matches(self, status: u16) -> bool {
        match self {
            Self::Code(c) => c == status,
            Self::Class(c) => status / 100 == c,
        }
    }
}

/// A kind of failed exchange, as `outlier.count` and `retry.on` name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The connection (or its TLS handshake) failed or timed out.
    Connect,
    /// Sent, then closed or reset before any byte of a response.
    Reset,
    /// An HTTP/2 stream refused (the HTTP/2 issue's; never seen over HTTP/1).
    RefusedStream,
    /// No response head within `backend_response_timeout_secs`.
    Timeout,
    /// A response that is not HTTP.
    Garbage,
    /// The server answered with this status.
    Status(u16),
}

impl FailureKind {
    /// The name metrics and logs use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Reset => "reset",
            Self::RefusedStream => "refused-stream",
            Self::Timeout => "timeout",
            Self::Garbage => "garbage",
            Self::Status(500) => "500",
            Self::Status(502) => "502",
            Self::Status(503) => "503",
            Self::Status(504) => "504",
            Self::Status(_) => "status",
        }
    }
}

/// `[upstreams.NAME.outlier]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outlier {
    /// 0 = passive ejection off.
    pub consecutive_failures: u32,
    /// `connect` (also resets and garbage before a response: the daemon answers them 502),
    /// `timeout`, statuses 500/502/503/504.
    pub count_connect: bool,
    pub count_timeout: bool,
    pub count_status: Vec<u16>,
    pub ejection: Duration,
    pub max_ejection: Duration,
    pub max_ejection_percent: u8,
}

impl Outlier {
    /// Whether `kind` counts toward an ejection.
    pub fn counts(&self, kind: FailureKind) -> bool {
        match kind {
            FailureKind::Connect
            | FailureKind::Reset
            | FailureKind::RefusedStream
            | FailureKind::Garbage => self.count_connect,
            FailureKind::Timeout => self.count_timeout,
            FailureKind::Status(s) => self.count_status.contains(&s),
        }
    }
}

impl Default for Outlier {
    fn default() -> Self {
        Self {
            consecutive_failures: defaults::OUTLIER_CONSECUTIVE_FAILURES,
            count_connect: true,
            count_timeout: true,
            count_status: vec![502, 503, 504],
            ejection: defaults::OUTLIER_EJECTION,
            max_ejection: defaults::OUTLIER_MAX_EJECTION,
            max_ejection_percent: defaults::OUTLIER_MAX_EJECTION_PERCENT,
        }
    }
}

/// `[upstreams.NAME.retry]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Further attempts, each on a server not tried yet; 0 = off.
    pub attempts: u32,
    pub on_connect: bool,
    pub on_refused_stream: bool,
    pub on_reset: bool,
    pub on_timeout: bool,
    pub on_status: Vec<u16>,
    pub non_idempotent: bool,
    pub budget_percent: u32,
    pub min_retries_per_sec: u32,
    /// `total_timeout_secs`; `None` = no bound beyond the per-try timeouts.
    pub total_timeout: Option<Duration>,
}

impl Retry {
    /// Whether `kind` is retried (on another server).
    pub fn on(&self, kind: FailureKind) -> bool {
        match kind {
            FailureKind::Connect => self.on_connect,
            FailureKind::RefusedStream => self.on_refused_stream,
            FailureKind::Reset => self.on_reset,
            FailureKind::Timeout => self.on_timeout,
            FailureKind::Garbage => false,
            FailureKind::Status(s) => self.on_status.contains(&s),
        }
    }
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: defaults::RETRY_ATTEMPTS,
            on_connect: true,
            on_refused_stream: true,
            on_reset: true,
            on_timeout: false,
            on_status: Vec::new(),
            non_idempotent: false,
            budget_percent: defaults::RETRY_BUDGET_PERCENT,
            min_retries_per_sec: defaults::RETRY_MIN_PER_SEC,
            total_timeout: None,
        }
    }
}

impl UpstreamGroup {
    /// The implicit group of a route's `url`: its one server, passive checks only, the
    /// route's TLS settings and idle-connection limits.
    pub fn from_url(
        url: &UpstreamUrl,
        tls_server_name: Option<String>,
        ca_file: Option<PathBuf>,
        origin: Origin,
    ) -> Self {
        let tls = url.scheme == Scheme::Https;
        Self {
            name: url.group_name(),
            origin,
            servers: vec![ServerSpec {
                host: url.host.clone(),
                port: url.port,
                weight: 1,
                backup: false,
            }],
            balance: Balance::RoundRobin,
            tls,
            tls_server_name: tls_server_name.filter(|_| tls),
            ca_file: ca_file.filter(|_| tls),
            protocol: UpstreamProtocol::Http1,
            dns_refresh: defaults::DNS_REFRESH,
            initial_unhealthy: false,
            on_all_unhealthy: AllUnhealthy::TryAll,
            panic_threshold_percent: 0,
            slow_start: Duration::ZERO,
            max_idle_per_server: None,
            idle_timeout: None,
            health_check: None,
            outlier: Outlier::default(),
            retry: Retry::default(),
            implicit: true,
        }
    }

    /// Primaries, then backups.
    pub fn primaries(&self) -> impl Iterator<Item = &ServerSpec> {
        self.servers.iter().filter(|s| !s.backup)
    }
}

impl UpstreamUrl {
    /// `scheme://host:port`: the name of a `url` route's implicit group (and its stats row).
    pub fn group_name(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://{}:{}", self.host, self.port)
    }
}

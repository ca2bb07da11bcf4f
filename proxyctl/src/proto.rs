//! The admin protocol: newline-delimited JSON over the daemon's Unix socket.
//!
//! Defined once, here, and used by both the daemon and `proxyctl`, so that the two cannot drift
//! apart. This module depends on nothing of the daemon.
//!
//! A client writes one [`Request`] per line, wrapped with the protocol version:
//!
//! ```json
//! {"version":1,"command":"explain","host":"example.com","path":"/api/x"}
//! ```
//!
//! and reads [`Response`] lines back: one `ok` or `error` line, or — for long work such as a
//! drain — any number of `processing` lines before the final one:
//!
//! ```json
//! {"version":1,"result":"processing","data":{"connections":3,"in_flight":1,"seconds_left":27}}
//! {"version":1,"result":"ok","data":{"connections":0,"in_flight":0,"seconds_left":0}}
//! ```
//!
//! Both sides check `version` first: a mismatch is answered with a clear error instead of a
//! misparse. Adding optional fields is compatible; anything else increments
//! [`PROTOCOL_VERSION`].

use serde::{Deserialize, Serialize};

/// Version of the admin protocol.
pub const PROTOCOL_VERSION: u32 = 1;

/// Default path of the admin socket, also the default of `[admin] socket` in the daemon's config.
pub const DEFAULT_SOCKET: &str = "/run/zerocopy-server/admin.sock";

/// A command to the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// What the daemon is doing: answered with [`Status`].
    Status,
    /// Validate the config file and swap it in now: answered with [`ReloadReport`].
    Reload,
    /// Graceful stop: [`DrainProgress`] lines until no connection is left, then the final one.
    Drain {
        /// Overrides `[server] shutdown_timeout_secs` for this drain.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_secs: Option<u64>,
    },
    /// The active routing table: answered with a list of [`RouteInfo`].
    Routes,
    /// Which route a request would hit and what the daemon would answer: [`Explain`].
    Explain {
        /// The `Host` header (a port is ignored).
        host: String,
        /// The request target: a path (with a query), or an absolute URL whose authority then
        /// wins over `host`, as for a real request.
        path: String,
        /// The method (default `GET`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        method: Option<String>,
        /// The client address, for `allowed_ips` / `denied_ips` (default: not checked).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
        /// The request's `Accept-Encoding`: which coding it would get (default: none sent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        accept_encoding: Option<String>,
    },
    /// Validate a file (default: the daemon's config path) without applying it, and show what
    /// a reload would change: answered with [`CheckReport`].
    Check {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<String>,
        /// The file's contents, read by the client with the client's own permissions. The
        /// daemon reads no file but its own config for a check, so a user of the admin socket
        /// cannot make it read files that user could not read.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
    },
    /// Counters and latency since start, summed over the workers: answered with [`Stats`].
    Stats,
    /// The upstream groups and the state of each server: answered with a list of
    /// [`GroupInfo`] (one group's, when `group` names one).
    Upstreams {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
    },
    /// Drains, disables or enables a server of a group without a reload (kept across reloads
    /// while the server exists): answered with the [`ServerInfo`] of each server it matched.
    SetServer {
        group: String,
        /// A resolved address (`10.0.0.5:9000`) or a server as written (`api.internal:9000`:
        /// each of its addresses).
        address: String,
        state: ServerAdmin,
    },
    /// Replaces the daemon's binary without refusing a connection: starts `binary` (default:
    /// the daemon's own path), hands it the listening sockets, and drains once it is ready.
    /// `processing` lines of [`UpgradeProgress`], then the [`UpgradeReport`]; an error (and
    /// the old process serving on) when the new one fails.
    Upgrade {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        binary: Option<String>,
    },
}

/// What an operator can make of a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerAdmin {
    /// Takes requests again.
    Enable,
    /// No new requests; those in flight finish; idle pooled connections close.
    Drain,
    /// As drain, and its active checks pause.
    Disable,
}

/// One upstream group: answer to [`Request::Upstreams`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub name: String,
    /// Made from a route's `url` rather than written as `[upstreams.NAME]`.
    pub implicit: bool,
    /// `round_robin`, `least_request`, `random` or `hash`.
    pub balance: String,
    /// `try_all` or `fail`.
    pub on_all_unhealthy: String,
    /// Whether the group has active health checks.
    pub health_checks: bool,
    /// No server is usable and requests go to every enabled primary regardless of health.
    pub failing_open: bool,
    /// Requests sent while failing open, since start.
    pub failed_open: u64,
    /// Requests answered 503 because no server was usable, since start.
    pub no_server: u64,
    /// Attempts on another server, by reason.
    pub retries: std::collections::BTreeMap<String, u64>,
    /// Retries refused because the retry budget was spent.
    pub retry_budget_exhausted: u64,
    pub servers: Vec<ServerInfo>,
}

/// One server of a group (one resolved address).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// The resolved address, `10.0.0.5:9000`.
    pub address: String,
    /// The server as written in the config (`api.internal:9000`).
    pub server: String,
    pub weight: u32,
    pub backup: bool,
    /// `healthy`, `unhealthy`, `ejected`, `draining` or `disabled`.
    pub state: String,
    /// Whether a request may go to it now.
    pub usable: bool,
    /// While ejected: until when (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ejected_until_unix_ms: Option<u64>,
    pub ejections: u64,
    pub in_flight: u64,
    pub requests: u64,
    /// Failed attempts, all kinds together.
    pub failures: u64,
    /// Failed attempts by kind (`connect`, `reset`, `timeout`, `garbage`, `500`, `502`, …).
    pub failures_by_kind: std::collections::BTreeMap<String, u64>,
    /// The last active check: when, and its error if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_unix_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_error: Option<String>,
    /// Active checks run, and their time together (microseconds).
    pub checks: u64,
    pub check_micros_total: u64,
    /// Health transitions by the active checks.
    pub became_healthy: u64,
    pub became_unhealthy: u64,
    /// The last change of state: when, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_unix_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition: Option<String>,
}

/// What `explain` says about a Proxy route's group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainUpstream {
    pub group: String,
    /// The servers (resolved addresses) a request may go to now.
    pub usable: Vec<String>,
    /// All its servers.
    pub servers: Vec<String>,
    /// The group fails open now (no server usable).
    pub failing_open: bool,
}

/// A request line: the version and the command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLine {
    pub version: u32,
    #[serde(flatten)]
    pub request: Request,
}

/// A response line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResponseLine {
    pub version: u32,
    #[serde(flatten)]
    pub response: Response,
}

/// The three kinds of answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// The command succeeded; `data` is the command's payload.
    Ok { data: serde_json::Value },
    /// The command failed; `error` says why and, where it can, what to do.
    Error { error: String },
    /// Long work in progress; more lines follow.
    Processing { data: serde_json::Value },
}

/// The daemon's lifecycle: starting → running → reloading → running → draining → stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    Starting,
    Running,
    Reloading,
    /// A binary upgrade is under way; the process serves on meanwhile.
    Upgrading,
    Draining,
    Stopped,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Reloading => "reloading",
            Self::Upgrading => "upgrading",
            Self::Draining => "draining",
            Self::Stopped => "stopped",
        }
    }
}

/// Answer to [`Request::Status`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub state: Lifecycle,
    pub pid: u32,
    pub uptime_secs: u64,
    /// 1 at start-up, +1 per successful reload.
    pub generation: u64,
    pub config_path: String,
    pub workers: usize,
    /// `io_uring` or `epoll`.
    pub io_driver: String,
    /// Open client connections.
    pub connections: u64,
    /// Connections closed at accept since start because `max_concurrent_connections` were open.
    #[serde(default)]
    pub connections_over_cap: u64,
    /// Open connections that are idle and parked: plain keep-alive connections that have
    /// waited for a request for over 100–200 ms hold no task, only a table entry.
    #[serde(default)]
    pub idle_parked: u64,
    /// Requests being answered right now.
    pub in_flight: u64,
    /// Of the open connections, those speaking HTTP/2, and their streams with a handler now.
    #[serde(default)]
    pub http2_connections: u64,
    #[serde(default)]
    pub http2_streams_open: u64,
    /// The last reload attempt, if any.
    pub last_reload: Option<ReloadReport>,
    /// The TLS listener's figures; absent when the daemon serves plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsStatus>,
    /// The daemon's version.
    #[serde(default)]
    pub version: String,
    /// When this process started, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub started_at_unix_ms: u64,
    /// Every listener, in config order.
    #[serde(default)]
    pub listeners: Vec<ListenerStatus>,
    /// The last binary upgrade: the one that started this process, or the last one it tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_upgrade: Option<UpgradeReport>,
}

/// One listener in [`Status`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerStatus {
    pub address: String,
    pub tls: bool,
    pub http2: bool,
    /// `off`, `v1`, `v2` or `any`.
    pub proxy_protocol: String,
    /// The HTTPS port it redirects to, when it has `redirect_to_https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_to_https: Option<u16>,
    /// Where its sockets came from: `bound`, `inherited` (a binary upgrade) or `systemd`.
    pub sockets: String,
    /// Open connections that came through it.
    pub connections: u64,
    /// Connections accepted since start.
    pub accepted: u64,
    /// Connections closed unserved for their PROXY header (from outside
    /// `proxy_protocol_from`, none, malformed, or not in time).
    pub proxy_refused: u64,
}

/// A binary upgrade's outcome: the answer to [`Request::Upgrade`], and `last_upgrade` in
/// [`Status`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeReport {
    /// The new process serves and the old one drains.
    pub ok: bool,
    pub at_unix_ms: u64,
    /// The process that handed over its sockets.
    pub old_pid: u32,
    /// The process started from the new binary (it may be gone after a failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_pid: Option<u32>,
    /// The binary started.
    pub binary: String,
    /// The new binary's version, once it reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_version: Option<String>,
    /// Why the upgrade failed; the old process serves on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a binary upgrade is doing: the `processing` lines of [`Request::Upgrade`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeProgress {
    pub new_pid: u32,
    /// `starting` (loading its config) or `ready`.
    pub phase: String,
    pub seconds_left: u64,
}

/// TLS on the listener: handshakes and where the record layer runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsStatus {
    /// Where encryption runs: `userspace` (kTLS not asked for), `kernel` (kTLS available),
    /// `userspace (kTLS unavailable: …)` (fallback on), `refusing (kTLS unavailable: …)`
    /// (fallback off), or `userspace (kTLS not in this build)`.
    pub record_layer: String,
    /// Completed handshakes since start.
    pub handshakes: u64,
    /// Connections whose keys moved into the kernel (kTLS), since start.
    pub ktls: u64,
    /// Connections that asked for kTLS but continued in userspace (fallback on), since start.
    pub ktls_fallback: u64,
    /// Connections closed because kTLS could not be enabled (fallback off, or the kernel
    /// refused the keys after they left rustls), since start.
    pub ktls_refused: u64,
}

/// What a reload did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// Whether the new config is serving (or nothing needed to change).
    pub ok: bool,
    /// `file` (a watched change), `signal` (SIGHUP) or `admin` (`proxyctl reload`).
    pub trigger: String,
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// The generation serving after this attempt.
    pub generation: u64,
    /// Why the file was refused: every error, `file:line:column: key.path: reason`, one per line.
    pub error: Option<String>,
    /// True when the file's bytes had not changed and nothing was swapped.
    pub unchanged: bool,
    /// Keys that differ from the running config but only take effect after a restart.
    pub restart_required: Vec<String>,
    /// Routes added, removed and changed by this reload.
    pub changes: RouteChanges,
}

/// Routes that differ between two configs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteChanges {
    pub added: Vec<RouteKey>,
    pub removed: Vec<RouteKey>,
    pub changed: Vec<RouteKey>,
}

/// A route's identity: its host and, for a path route, its prefix.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RouteKey {
    pub host: String,
    /// `None` for a host route.
    pub prefix: Option<String>,
}

impl std::fmt::Display for RouteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.prefix {
            Some(p) => write!(f, "{}{}", self.host, p),
            None => write!(f, "{} (host route)", self.host),
        }
    }
}

/// One row of [`Request::Routes`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteInfo {
    pub host: String,
    /// As written in the config (`"/a/"` stays `"/a/"`); `None` for a host route.
    pub prefix: Option<String>,
    /// `File`, `Proxy`, `Redirect` or `Respond`.
    pub backend: String,
    /// The file or directory path, the upstream URL, a redirect's status and url, or a fixed
    /// response's status.
    pub target: String,
    /// File routes: `sendfile` or `memory`.
    pub mode: Option<String>,
    /// File routes: the index file name.
    pub index: Option<String>,
    pub policy: Policy,
}

/// The security policy in force on a route, every default filled in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// `None` = every method.
    pub allowed_methods: Option<Vec<String>>,
    pub allowed_ips: Vec<String>,
    pub denied_ips: Vec<String>,
    /// 0 = unlimited.
    pub rate_limit_requests_per_min: u32,
    pub max_request_body_size: u64,
    pub max_chunked_body_size: u64,
    pub max_request_header_size: usize,
    pub client_header_timeout_secs: u64,
    pub client_body_timeout_secs: u64,
    pub backend_connect_timeout_secs: u64,
    /// Time to the upstream's response head (absent from older daemons).
    #[serde(default)]
    pub backend_response_timeout_secs: u64,
    pub max_idle_connections_per_host: usize,
    pub idle_connection_timeout_secs: u64,
    /// Peers whose forwarding chain is believed (absent from older daemons).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub allow_underscores_in_headers: bool,
    /// `Upgrade` protocols forwarded.
    #[serde(default)]
    pub allowed_upgrades: Vec<String>,
    /// IPv6 clients are rate-limited per network of this prefix length.
    #[serde(default)]
    pub rate_limit_ipv6_prefix: u8,
}

/// Answer to [`Request::Explain`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explain {
    pub matched: bool,
    /// The host as matched: lower-case, port stripped.
    pub host: String,
    /// The path as matched: normalised.
    pub path: String,
    /// The matched route's prefix, as written in the config; `None` for a host route or no
    /// match.
    pub prefix: Option<String>,
    /// `File` or `Proxy`.
    pub backend: Option<String>,
    /// The file path, or the upstream URL after prefix stripping.
    pub resolved: Option<String>,
    pub policy: Option<Policy>,
    /// Why nothing matched, or why the request is refused (`/robots.txt/extra`).
    pub reason: Option<String>,
    /// The status the daemon itself answers: 200 for a file it serves, 4xx when it refuses
    /// the request (no route, no file, a refused method or address); absent when the request
    /// is forwarded to an upstream (absent from older daemons too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// A Proxy route's upstream group and its servers usable now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<ExplainUpstream>,
    /// The route's response header rules: `-name` for a field removed (or replaced),
    /// `+Name: value` for one added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// How the route encodes its responses (compression, precompressed variants).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// A File route's fallback file and its status, for paths that do not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

impl Explain {
    /// Whether the request would be served: forwarded, or answered with a 2xx.
    pub fn served(&self) -> bool {
        self.matched && self.status.is_none_or(|s| (200..300).contains(&s))
    }
}

/// Answer to [`Request::Check`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    pub ok: bool,
    pub file: String,
    /// Every error, `file:line:column: key.path: reason`.
    pub errors: Vec<String>,
    pub changes: RouteChanges,
    pub restart_required: Vec<String>,
}

/// Upper bounds of the request latency histogram's buckets, in microseconds; a last bucket
/// without bound follows. Fixed, so that two [`Stats`] can be subtracted bucket by bucket.
pub const LATENCY_BOUNDS_US: [u64; 17] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000,
];

/// Answer to [`Request::Stats`]: what the daemon did since it started, summed over the workers
/// when read. Every counter only grows (a route's counters start with the route and are kept
/// across reloads while the route exists), so two answers subtract into rates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Milliseconds since start when the figures were read: the clock for rates.
    pub uptime_ms: u64,
    pub connections: ConnectionStats,
    /// Requests by route, in routing-table order; requests that matched no route (a 404, or a
    /// head too malformed to route) are the row with an empty `host`.
    pub routes: Vec<RouteStats>,
    /// Proxy upstreams' connections, one row per group (a `url` route's is named
    /// `scheme://host:port`).
    pub upstreams: Vec<UpstreamStats>,
    /// Upstream groups and their servers' state (absent from older daemons).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupInfo>,
    /// Per worker: its connections and requests.
    pub workers: Vec<WorkerStats>,
    pub reloads: ReloadStats,
    /// The TLS listener's figures; absent when the daemon serves plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsStatus>,
    /// Log lines dropped because the logger's channel was full (`[logging] channel_size`):
    /// process log and access log.
    pub log_lines_dropped: u64,
    /// The workers' file caches together.
    #[serde(default)]
    pub file_cache: FileCacheStats,
    /// HTTP/2 client connections and streams.
    #[serde(default)]
    pub http2: Http2Stats,
    /// Span export (`[tracing] otlp_endpoint`).
    #[serde(default)]
    pub tracing: TracingStats,
}

/// Span export, since start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracingStats {
    /// Spans the collector accepted.
    pub spans_exported: u64,
    /// Spans dropped because the export queue was full (`export_queue_size`).
    pub spans_dropped_queue_full: u64,
    /// Spans lost with a batch the collector did not take.
    pub spans_dropped_export_failed: u64,
    /// Export requests that failed.
    pub export_failures: u64,
}

/// HTTP/2 towards clients, all workers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Http2Stats {
    /// Connections open now, and since start.
    pub connections_open: u64,
    pub connections_total: u64,
    /// Streams (requests) since start, and those with a handler now.
    pub streams_total: u64,
    pub streams_open: u64,
    /// Streams refused (`REFUSED_STREAM`): `max_concurrent_streams` handlers were in flight.
    pub streams_refused: u64,
    /// Streams the client reset while their handler ran, and streams the daemon reset (a
    /// response cut off).
    pub resets_received: u64,
    pub resets_sent: u64,
    /// GOAWAYs sent: graceful (drain, idle, `max_requests_per_connection`) and for a
    /// client's protocol error or abuse.
    pub goaway_graceful: u64,
    pub goaway_error: u64,
}

/// The file caches of `sendfile`-mode routes (`[performance] file_cache_*`), all workers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCacheStats {
    /// Files held now.
    pub files: u64,
    /// Bytes of file content held now.
    pub bytes: u64,
    /// Requests answered from a cache since start.
    pub hits: u64,
    /// Requests whose file was opened on disk while the cache was on (first use, changed on
    /// disk, too large, or evicted).
    pub misses: u64,
    /// File opens, reads, sends and cache checks that would have waited for the disk (or any
    /// on a network or FUSE mount), done on a file I/O thread instead (`[performance]
    /// file_io_threads`), since the process started.
    #[serde(default)]
    pub offloaded: u64,
}

/// Client connections.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionStats {
    /// Open now.
    pub open: u64,
    /// Accepted since start.
    pub total: u64,
    /// Closed at accept because `max_concurrent_connections` were open.
    pub over_cap: u64,
    /// Open and parked: idle, holding no task (a subset of `open`).
    #[serde(default)]
    pub parked: u64,
}

/// One route's requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteStats {
    /// Empty for the row of requests that matched no route.
    pub host: String,
    /// `None` for a host route.
    pub prefix: Option<String>,
    /// `File` or `Proxy`; empty for the unrouted row.
    pub backend: String,
    /// Requests answered (with any status, or cut off).
    pub requests: u64,
    /// Responses by status class.
    pub responses: StatusClasses,
    /// Bytes written to clients: heads and bodies.
    pub bytes_sent: u64,
    /// Time from a request's first byte to the end of its response.
    pub latency: Histogram,
}

impl RouteStats {
    /// `host/prefix`, `host` for a host route, `(no route)` for the unrouted row.
    pub fn name(&self) -> String {
        match (&self.prefix, self.host.is_empty()) {
            (_, true) => "(no route)".into(),
            (Some(p), false) => format!("{}{p}", self.host),
            (None, false) => self.host.clone(),
        }
    }
}

/// Responses by status class. A response cut off before its status line counts as none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusClasses {
    #[serde(rename = "1xx")]
    pub informational: u64,
    #[serde(rename = "2xx")]
    pub success: u64,
    #[serde(rename = "3xx")]
    pub redirection: u64,
    #[serde(rename = "4xx")]
    pub client_error: u64,
    #[serde(rename = "5xx")]
    pub server_error: u64,
}

impl StatusClasses {
    /// The five classes with their names, `1xx` first.
    pub fn classes(&self) -> [(&'static str, u64); 5] {
        [
            ("1xx", self.informational),
            ("2xx", self.success),
            ("3xx", self.redirection),
            ("4xx", self.client_error),
            ("5xx", self.server_error),
        ]
    }
}

/// A latency histogram over [`LATENCY_BOUNDS_US`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    /// Observations per bucket (not cumulative): one per bound, then the unbounded bucket.
    pub counts: Vec<u64>,
    /// Sum of all observations, in microseconds.
    pub sum_us: u64,
}

impl Histogram {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// What happened between `earlier` and `self` (bucket by bucket).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        Histogram {
            counts: self
                .counts
                .iter()
                .enumerate()
                .map(|(i, c)| c.saturating_sub(earlier.counts.get(i).copied().unwrap_or(0)))
                .collect(),
            sum_us: self.sum_us.saturating_sub(earlier.sum_us),
        }
    }

    /// The `q` quantile (0 < q ≤ 1) in microseconds, interpolated linearly inside its bucket
    /// as Prometheus's `histogram_quantile` does; the unbounded bucket answers with the last
    /// bound. `None` without observations.
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            if c > 0 && (below + c) as f64 >= rank {
                let Some(&upper) = LATENCY_BOUNDS_US.get(i) else {
                    return LATENCY_BOUNDS_US.last().map(|&b| b as f64);
                };
                let lower = if i == 0 { 0 } else { LATENCY_BOUNDS_US[i - 1] };
                let into = ((rank - below as f64) / c as f64).clamp(0.0, 1.0);
                return Some(lower as f64 + (upper - lower) as f64 * into);
            }
            below += c;
        }
        LATENCY_BOUNDS_US.last().map(|&b| b as f64)
    }
}

/// One upstream's connections.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamStats {
    /// `http://host:port` or `https://host:port`.
    pub upstream: String,
    /// New connections opened.
    pub connects: u64,
    /// Requests sent over a pooled connection.
    pub reuses: u64,
    /// Requests retried on a fresh connection after a pooled one failed.
    pub retries: u64,
    /// Exchanges that failed on the upstream's side: refused or timed-out connects, garbled
    /// or missing responses, bodies cut off.
    pub failures: u64,
}

impl UpstreamStats {
    /// Requests sent (over a new or a pooled connection).
    pub fn requests(&self) -> u64 {
        self.connects.saturating_add(self.reuses)
    }

    /// Connections opened per 1,000 requests sent since `earlier` (or the start): near 0 when
    /// the pool keeps up with the load, near 1,000 when nearly every request needs a new
    /// connection; `None` without requests.
    pub fn opened_per_1000(&self, earlier: Option<&UpstreamStats>) -> Option<f64> {
        let (connects, requests) = match earlier {
            Some(e) => (
                self.connects.saturating_sub(e.connects),
                self.requests().saturating_sub(e.requests()),
            ),
            None => (self.connects, self.requests()),
        };
        (requests > 0).then(|| connects as f64 * 1000.0 / requests as f64)
    }
}

/// One worker's load.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStats {
    pub worker: usize,
    /// Open client connections.
    pub connections: u64,
    /// Connections accepted since start.
    pub connections_total: u64,
    /// Requests answered since start.
    pub requests: u64,
}

/// Reload attempts since start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadStats {
    /// A new config is serving (unchanged files are not counted).
    pub succeeded: u64,
    /// A config was refused; the old one kept serving.
    pub failed: u64,
}

/// Progress of [`Request::Drain`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainProgress {
    pub connections: u64,
    pub in_flight: u64,
    pub seconds_left: u64,
}

/// Encodes a request as one line (with its newline).
pub fn encode_request(request: &Request) -> String {
    let line = RequestLine {
        version: PROTOCOL_VERSION,
        request: request.clone(),
    };
    // Serialising these plain types cannot fail.
    let mut s = serde_json::to_string(&line).unwrap_or_default();
    s.push('\n');
    s
}

/// Encodes a response as one line (with its newline).
pub fn encode_response(response: Response) -> String {
    let line = ResponseLine {
        version: PROTOCOL_VERSION,
        response,
    };
    let mut s = serde_json::to_string(&line).unwrap_or_default();
    s.push('\n');
    s
}

/// An `ok` response carrying `data`.
pub fn ok<T: Serialize>(data: &T) -> Response {
    match serde_json::to_value(data) {
        Ok(data) => Response::Ok { data },
        Err(e) => Response::Error {
            error: format!("cannot encode the answer: {e}"),
        },
    }
}

/// A `processing` response carrying `data`.
pub fn processing<T: Serialize>(data: &T) -> Response {
    match serde_json::to_value(data) {
        Ok(data) => Response::Processing { data },
        Err(e) => Response::Error {
            error: format!("cannot encode the answer: {e}"),
        },
    }
}

/// Why a line could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The peer speaks another protocol version.
    Version { theirs: u32 },
    /// Not JSON, or not a known message.
    Malformed(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Version { theirs } => write!(
                f,
                "admin protocol version {theirs} is not supported (this side speaks version \
                 {PROTOCOL_VERSION}); use the proxyctl that ships with the running zerocopy-server"
            ),
            Self::Malformed(e) => write!(f, "malformed admin message: {e}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes a request line, checking the version before anything else.
pub fn decode_request(line: &str) -> Result<Request, DecodeError> {
    check_version(line)?;
    serde_json::from_str::<RequestLine>(line)
        .map(|l| l.request)
        .map_err(|e| DecodeError::Malformed(e.to_string()))
}

/// Decodes a response line, checking the version before anything else.
pub fn decode_response(line: &str) -> Result<Response, DecodeError> {
    check_version(line)?;
    serde_json::from_str::<ResponseLine>(line)
        .map(|l| l.response)
        .map_err(|e| DecodeError::Malformed(e.to_string()))
}

fn check_version(line: &str) -> Result<(), DecodeError> {
    #[derive(Deserialize)]
    struct Versioned {
        version: Option<u32>,
    }
    let v: Versioned =
        serde_json::from_str(line).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    match v.version {
        Some(PROTOCOL_VERSION) => Ok(()),
        Some(theirs) => Err(DecodeError::Version { theirs }),
        None => Err(DecodeError::Malformed("no \"version\" field".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_with_their_version() {
        for r in [
            Request::Status,
            Request::Reload,
            Request::Drain {
                timeout_secs: Some(5),
            },
            Request::Drain { timeout_secs: None },
            Request::Routes,
            Request::Explain {
                host: "example.com".into(),
                path: "/api/x".into(),
                method: None,
                client: None,
                accept_encoding: None,
            },
            Request::Explain {
                host: "example.com".into(),
                path: "http://other.example/x".into(),
                method: Some("POST".into()),
                client: Some("192.0.2.1".into()),
                accept_encoding: Some("gzip, br".into()),
            },
            Request::Check {
                file: None,
                text: None,
            },
            Request::Stats,
        ] {
            let line = encode_request(&r);
            assert!(line.ends_with('\n'));
            assert!(line.starts_with("{\"version\":1,"), "{line}");
            assert_eq!(decode_request(line.trim_end()).unwrap(), r);
        }
        assert_eq!(
            encode_request(&Request::Explain {
                host: "h".into(),
                path: "/p".into(),
                method: None,
                client: None,
                accept_encoding: None,
            }),
            "{\"version\":1,\"command\":\"explain\",\"host\":\"h\",\"path\":\"/p\"}\n"
        );
    }

    #[test]
    fn responses_round_trip() {
        let p = DrainProgress {
            connections: 3,
            in_flight: 1,
            seconds_left: 27,
        };
        let line = encode_response(processing(&p));
        assert_eq!(
            line,
            "{\"version\":1,\"result\":\"processing\",\"data\":{\"connections\":3,\"in_flight\":1,\"seconds_left\":27}}\n"
        );
        match decode_response(line.trim_end()).unwrap() {
            Response::Processing { data } => {
                assert_eq!(serde_json::from_value::<DrainProgress>(data).unwrap(), p)
            }
            other => panic!("{other:?}"),
        }
        let e = encode_response(Response::Error { error: "no".into() });
        assert_eq!(
            decode_response(e.trim_end()).unwrap(),
            Response::Error { error: "no".into() }
        );
    }

    #[test]
    fn another_version_is_a_clear_error() {
        let err = decode_request("{\"version\":2,\"command\":\"status\"}").unwrap_err();
        assert_eq!(err, DecodeError::Version { theirs: 2 });
        assert!(err.to_string().contains("version 2 is not supported"));
        let err = decode_response("{\"version\":0,\"result\":\"ok\",\"data\":null}").unwrap_err();
        assert_eq!(err, DecodeError::Version { theirs: 0 });
        assert!(matches!(
            decode_request("{\"command\":\"status\"}"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode_request("not json"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode_request("{\"version\":1,\"command\":\"fly\"}"),
            Err(DecodeError::Malformed(_))
        ));
    }

    fn histogram(counts: &[(usize, u64)]) -> Histogram {
        let mut h = Histogram {
            counts: vec![0; LATENCY_BOUNDS_US.len() + 1],
            sum_us: 0,
        };
        for &(i, c) in counts {
            h.counts[i] = c;
        }
        h
    }

    #[test]
    fn quantiles_interpolate_inside_their_bucket() {
        assert_eq!(histogram(&[]).quantile_us(0.5), None);
        // 100 observations in (1 ms, 2.5 ms]: the median is half-way.
        let h = histogram(&[(4, 100)]);
        assert_eq!(h.quantile_us(0.5), Some(1_750.0));
        assert_eq!(h.quantile_us(1.0), Some(2_500.0));
        // 99 fast, 1 slow: p50 among the fast, p99 at the top of the fast bucket, p100 slow.
        let h = histogram(&[(0, 99), (9, 1)]);
        assert_eq!(h.quantile_us(0.5), Some(100.0 * 50.0 / 99.0));
        assert_eq!(h.quantile_us(0.99), Some(100.0));
        assert_eq!(h.quantile_us(1.0), Some(100_000.0));
        // The unbounded bucket answers with the last bound.
        let h = histogram(&[(LATENCY_BOUNDS_US.len(), 3)]);
        assert_eq!(h.quantile_us(0.5), Some(30_000_000.0));
    }

    #[test]
    fn histograms_subtract_into_an_interval() {
        let mut later = histogram(&[(0, 10), (4, 5)]);
        later.sum_us = 1_000;
        let mut earlier = histogram(&[(0, 4)]);
        earlier.sum_us = 200;
        let d = later.since(&earlier);
        assert_eq!(d.count(), 11);
        assert_eq!(d.counts[0], 6);
        assert_eq!(d.counts[4], 5);
        assert_eq!(d.sum_us, 800);
    }

    #[test]
    fn stats_name_their_routes_and_classes() {
        let mut r = RouteStats {
            host: "example.com".into(),
            prefix: Some("/api".into()),
            ..RouteStats::default()
        };
        assert_eq!(r.name(), "example.com/api");
        r.prefix = None;
        assert_eq!(r.name(), "example.com");
        r.host.clear();
        assert_eq!(r.name(), "(no route)");
        let json = serde_json::to_string(&StatusClasses {
            success: 2,
            ..StatusClasses::default()
        })
        .unwrap();
        assert_eq!(json, r#"{"1xx":0,"2xx":2,"3xx":0,"4xx":0,"5xx":0}"#);
    }
}

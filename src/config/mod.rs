//! The configuration: the operator's TOML file, parsed into types where invalid states cannot
//! be represented.
//!
//! [`load`] reads a file and returns a [`Config`] or **every** error found in it, each with the
//! file, line, column, key path and reason ([`ConfigError`]). Parsing walks the spanned TOML tree
//! of the `toml` crate itself (rather than serde) so that one run reports all errors and each
//! error knows exactly where it is. Defaults live in [`defaults`], one named constant each.
//!
//! The file's shape is the spec's (`../shared/spec/seed-readme.md`), plus the documented
//! extensions `[admin] socket`, `[server] shutdown_timeout_secs`, and per-route `security` keys
//! accepted in `[security]` as defaults for every route (a route's own key wins).

pub mod defaults;
mod listeners;
mod parse;
mod site;
mod upstreams;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::http::MethodSet;
use crate::security::IpSet;

pub use listeners::*;
pub use parse::{load, parse};
pub use site::*;
pub use upstreams::*;

/// A whole, checked configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file this was read from (absolute); relative paths in it resolved against its
    /// directory.
    pub source: PathBuf,
    pub server: Server,
    /// `[[listeners]]`, or the one `[server] listen` stands for; at least one, addresses
    /// distinct.
    pub listeners: Vec<Listener>,
    pub logging: Logging,
    pub security: GlobalSecurity,
    pub performance: Performance,
    /// `[tls]`; `None` serves plain HTTP.
    pub tls: Option<Tls>,
    pub admin: Admin,
    /// `[http2]`.
    pub http2: Http2,
    /// `[tracing]`: trace context and span export.
    pub tracing: Tracing,
    /// `[host_routes."host"]`: a whole host to one backend. Checked before path routes.
    pub host_routes: Vec<HostRoute>,
    /// `[path_routes."host"."/prefix"]`, longest prefix wins within a host.
    pub path_routes: Vec<PathRoute>,
    /// `[host_defaults."host"]`: headers and error pages for every route of a host.
    pub host_defaults: Vec<HostDefaults>,
    /// `[upstreams.NAME]` by name, then the implicit groups of `url` routes (one per
    /// `scheme://host:port` and TLS settings).
    pub upstreams: Vec<UpstreamGroup>,
}

impl Config {
    /// Things that are valid but probably not what the operator meant, or not in effect in
    /// this build. `--check` prints them and still says `ok`; the daemon logs them at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        for p in &self.path_routes {
            if self.host_routes.iter().any(|h| h.host == p.host) {
                w.push(format!(
                    "{}: never used: host_routes.{:?} takes every request for {:?} (host routes \
                     win over path routes)",
                    p.route.origin.key_path, p.host, p.host
                ));
            }
        }
        w.extend(self.unreadable_after_drop());
        if !cfg!(feature = "ktls") && self.tls.as_ref().is_some_and(|t| t.ktls_enabled) {
            w.push(
                "tls.ktls_enabled: this build has no kernel TLS (build with `cargo build \
                 --release --features ktls`); TLS runs in userspace (rustls)"
                    .into(),
            );
        }
        w
    }
}

impl Config {
    /// Files a reload reads again that the user the daemon drops privileges to could not
    /// read: after the drop, a reload would fail on them (certificates and keys are read at
    /// every reload, so that renewals are picked up).
    fn unreadable_after_drop(&self) -> Vec<String> {
        let s = &self.security;
        let Some((uid, gid)) = crate::privileges::dropped_ids(
            s.drop_privileges_user.as_deref(),
            s.drop_privileges_group.as_deref(),
        ) else {
            return Vec::new();
        };
        let who = match &s.drop_privileges_user {
            Some(u) => format!("user {u:?} (uid {uid}, gid {gid})"),
            None => format!("gid {gid}"),
        };
        let mut files: Vec<(String, &Path)> = vec![("config file".into(), &self.source)];
        if let Some(t) = &self.tls {
            files.push((format!("{}.cert_path", t.origin.key_path), &t.cert_path));
            files.push((format!("{}.key_path", t.origin.key_path), &t.key_path));
            for c in &t.certificates {
                files.push((format!("{}.cert_path", c.origin.key_path), &c.cert_path));
                files.push((format!("{}.key_path", c.origin.key_path), &c.key_path));
            }
            if let Some(k) = &t.session_ticket_key_file {
                let key = format!("{}.session_ticket_key_file", t.origin.key_path);
                files.push((key, k));
            }
        }
        let routes = self.host_routes.iter().map(|h| &h.route);
        for r in routes
            .clone()
            .chain(self.path_routes.iter().map(|p| &p.route))
        {
            for page in &r.site.error_pages.0 {
                let key = format!("{}.error_pages.{}", r.origin.key_path, page.key);
                files.push((key, &page.path));
            }
        }
        for d in &self.host_defaults {
            for page in &d.error_pages.0 {
                let key = format!("{}.error_pages.{}", d.origin.key_path, page.key);
                files.push((key, &page.path));
            }
        }
        for r in routes.chain(self.path_routes.iter().map(|p| &p.route)) {
            match &r.backend {
                Backend::Proxy(p) => {
                    if let Some(ca) = &p.ca_file {
                        files.push((format!("{}.ca_file", r.origin.key_path), ca));
                    }
                }
                Backend::File(f) if f.mode == Mode::Memory => {
                    files.push((format!("{}.path", r.origin.key_path), &f.path));
                }
                Backend::File(_) | Backend::Redirect(_) | Backend::Respond(_) => {}
            }
        }
        for g in self.upstreams.iter().filter(|g| !g.implicit) {
            if let Some(ca) = &g.ca_file {
                files.push((format!("{}.ca_file", g.origin.key_path), ca));
            }
        }
        files
            .into_iter()
            .filter(|(_, path)| !crate::privileges::readable_by(path, uid, gid))
            .map(|(key, path)| {
                format!(
                    "{key}: {} is not readable by {who}, which the daemon runs as after dropping \
                     privileges: reloads will fail to read it; give that user or group read \
                     access (e.g. chgrp GROUP FILE && chmod g+r FILE, and g+x on its directories)",
                    path.display()
                )
            })
            .collect()
    }
}

/// `[server]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    /// `threads`: worker count; default 0 = one per CPU core.
    pub threads: usize,
    /// `shutdown_timeout_secs`: default 30.
    pub shutdown_timeout: Duration,
    /// `upgrade_timeout_secs`: how long a new binary has to report ready during a binary
    /// upgrade before it is killed and the running one serves on; default 30.
    pub upgrade_timeout: Duration,
    /// `request_id_header`: the field request ids travel in (kept from trusted peers, else
    /// generated), default `X-Request-Id`; `None` (written `""`) = no request ids.
    pub request_id_header: Option<String>,
}

/// `[logging]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logging {
    /// `level`: default `info`.
    pub level: LogLevel,
    /// `channel_size`: default 100000.
    pub channel_size: usize,
    /// `flush_interval_ms`: default 1000.
    pub flush_interval: Duration,
    /// `max_log_size`: bytes, default 104857600; 0 = no rotation.
    pub max_log_size: u64,
    /// `file_path`: default none = stderr.
    pub file_path: Option<PathBuf>,
    /// `access_log` (an extension): one line per request to this file; default none = no
    /// access log.
    pub access_log: Option<PathBuf>,
    /// `access_log_format` (an extension): default `combined`.
    pub access_log_format: AccessLogFormat,
}

/// The access log's line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// nginx's `combined`, then `key=value` fields for what it lacks (host, times, route,
    /// upstream).
    Combined,
    /// One JSON object per line.
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Off,
}

impl LogLevel {
    pub fn filter(self) -> log::LevelFilter {
        match self {
            Self::Trace => log::LevelFilter::Trace,
            Self::Debug => log::LevelFilter::Debug,
            Self::Info => log::LevelFilter::Info,
            Self::Warn => log::LevelFilter::Warn,
            Self::Error => log::LevelFilter::Error,
            Self::Off => log::LevelFilter::Off,
        }
    }
}

/// `[security]`: process-wide settings, and the defaults of every route's `security` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalSecurity {
    /// `drop_privileges_user`: default none.
    pub drop_privileges_user: Option<String>,
    /// `drop_privileges_group`: default none.
    pub drop_privileges_group: Option<String>,
    /// `max_concurrent_connections`: default 0 = unlimited.
    pub max_concurrent_connections: usize,
    /// Per-route keys written in `[security]`, over the spec's defaults. Also the limits that act
    /// before a route is known (header size and header timeout while reading a head).
    pub route_defaults: RouteSecurity,
}

/// A route's `security` table, with every default filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSecurity {
    /// `max_request_body_size`: bytes, default 10 MiB.
    pub max_request_body_size: u64,
    /// `max_chunked_body_size`: bytes, default 10 MiB.
    pub max_chunked_body_size: u64,
    /// `max_request_header_size`: bytes, default 8 KiB. The request line and the header
    /// section are each held to it (414 and 431).
    pub max_request_header_size: usize,
    /// `client_header_timeout_secs`: default 30.
    pub client_header_timeout: Duration,
    /// `client_body_timeout_secs`: default 30.
    pub client_body_timeout: Duration,
    /// `backend_connect_timeout_secs`: default 10.
    pub backend_connect_timeout: Duration,
    /// `backend_response_timeout_secs` (extension): time from sending the request to the
    /// upstream's response head; default 60.
    pub backend_response_timeout: Duration,
    /// `allowed_methods`: default none = all methods.
    pub allowed_methods: Option<MethodSet>,
    /// `rate_limit_requests_per_min`: default 0 = unlimited.
    pub rate_limit_requests_per_min: u32,
    /// `allowed_ips`: default empty = all addresses.
    pub allowed_ips: IpSet,
    /// `denied_ips`: default empty; wins over `allowed_ips`.
    pub denied_ips: IpSet,
    /// `max_idle_connections_per_host`: default 8.
    pub max_idle_connections_per_host: usize,
    /// `idle_connection_timeout_secs`: default 30.
    pub idle_connection_timeout: Duration,
    /// `trusted_proxies` (extension): peers whose `X-Forwarded-For` / `Forwarded` the daemon
    /// believes; the client address is the right-most address of the chain that is not in
    /// it. Default empty: the client is the TCP peer.
    pub trusted_proxies: IpSet,
    /// `allow_underscores_in_headers` (extension): forward request headers whose names hold
    /// `_`. Default false.
    pub allow_underscores_in_headers: bool,
    /// `allowed_upgrades` (extension): `Upgrade` protocols forwarded to upstreams,
    /// lower-case; never `h2c`. Default `["websocket"]`.
    pub allowed_upgrades: Vec<String>,
    /// `rate_limit_ipv6_prefix` (extension): IPv6 clients are counted by the rate limiter per
    /// network of this prefix length, 32 to 128. Default 64.
    pub rate_limit_ipv6_prefix: u8,
}

impl RouteSecurity {
    /// The spec's evaluation order: in `denied_ips` → refused; `allowed_ips` empty → allowed;
    /// in `allowed_ips` → allowed; otherwise refused. IPv4-mapped IPv6 clients match IPv4
    /// rules.
    pub fn allows_ip(&self, ip: std::net::IpAddr) -> bool {
        if self.denied_ips.contains(ip) {
            return false;
        }
        self.allowed_ips.is_empty() || self.allowed_ips.contains(ip)
    }
}

impl Default for RouteSecurity {
    fn default() -> Self {
        use defaults::*;
        Self {
            max_request_body_size: MAX_REQUEST_BODY_SIZE,
            max_chunked_body_size: MAX_CHUNKED_BODY_SIZE,
            max_request_header_size: MAX_REQUEST_HEADER_SIZE,
            client_header_timeout: CLIENT_HEADER_TIMEOUT,
            client_body_timeout: CLIENT_BODY_TIMEOUT,
            backend_connect_timeout: BACKEND_CONNECT_TIMEOUT,
            backend_response_timeout: BACKEND_RESPONSE_TIMEOUT,
            allowed_methods: None,
            rate_limit_requests_per_min: RATE_LIMIT_REQUESTS_PER_MIN,
            allowed_ips: IpSet::default(),
            denied_ips: IpSet::default(),
            max_idle_connections_per_host: MAX_IDLE_CONNECTIONS_PER_HOST,
            idle_connection_timeout: IDLE_CONNECTION_TIMEOUT,
            trusted_proxies: IpSet::default(),
            allow_underscores_in_headers: ALLOW_UNDERSCORES_IN_HEADERS,
            allowed_upgrades: ALLOWED_UPGRADES.iter().map(|s| s.to_string()).collect(),
            rate_limit_ipv6_prefix: RATE_LIMIT_IPV6_PREFIX,
        }
    }
}

/// `[performance]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Performance {
    /// `reuseport_balancing`: default `kernel`.
    pub reuseport_balancing: ReuseportBalancing,
    /// `huge_pages_enabled`: default false.
    pub huge_pages_enabled: bool,
    /// `file_io_threads` (extension): threads for file opens and reads that would wait for the
    /// disk; default 8.
    pub file_io_threads: usize,
    /// `file_io_timeout_ms` (extension): how long a request waits for a file I/O thread's answer
    /// (its turn included) before it gets 503; default 30 s.
    pub file_io_timeout: Duration,
    /// `file_cache_*`: small files of `sendfile`-mode routes held in each worker's memory.
    pub file_cache: FileCache,
}

/// `[performance] file_cache_max_file_size`, `file_cache_size` and `file_cache_valid_ms`: the
/// per-worker cache of small files that `sendfile`-mode routes serve (see [`crate::file_cache`]).
/// Read from the snapshot per request, so a reload changes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileCache {
    /// `file_cache_max_file_size`: files up to this many bytes are cached; 0 turns the cache
    /// off. Default 64 KiB.
    pub max_file_size: u64,
    /// `file_cache_size`: bytes of file content each worker may hold. Default 16 MiB.
    pub size: u64,
    /// `file_cache_valid_ms`: how long a cached file is served before the file on disk is
    /// checked again (one `stat`); 0 checks on every request. Default 1000 ms.
    pub valid: Duration,
}

impl Default for FileCache {
    fn default() -> Self {
        Self {
            max_file_size: defaults::FILE_CACHE_MAX_FILE_SIZE,
            size: defaults::FILE_CACHE_SIZE,
            valid: defaults::FILE_CACHE_VALID,
        }
    }
}

impl FileCache {
    /// Whether any file can be cached.
    pub fn enabled(&self) -> bool {
        self.max_file_size > 0 && self.size > 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReuseportBalancing {
    /// The kernel's hash of the 4-tuple.
    Kernel,
    /// A classic BPF program that keeps one client address on one worker.
    Cbpf,
}

/// `[tls]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    /// `cert_path`: required; a readable PEM file: the certificate chain, leaf first. With
    /// `key_path`, the default certificate (for clients without SNI or with a name no entry of
    /// `certificates` serves).
    pub cert_path: PathBuf,
    /// `key_path`: required; a readable PEM file: the private key (PKCS#8, SEC1 EC or RSA).
    pub key_path: PathBuf,
    /// `[[tls.certificates]]` (extension): more certificates, chosen by SNI. Default: none.
    pub certificates: Vec<TlsCertificate>,
    /// Where `[tls]` is in the file, for errors found when the certificates load.
    pub origin: Origin,
    /// `ktls_enabled`: default false.
    pub ktls_enabled: bool,
    /// `ktls_fallback_enabled`: default true.
    pub ktls_fallback_enabled: bool,
    /// `session_tickets` (extension): stateless session tickets; default true.
    pub session_tickets: bool,
    /// `session_ticket_key_file` (extension): 80 bytes of ticket key shared with other
    /// instances; default none (the daemon makes its own key and rotates it).
    pub session_ticket_key_file: Option<PathBuf>,
    /// `session_cache_size` (extension): sessions in the stateful cache; default 4096.
    pub session_cache_size: usize,
}

impl Tls {
    /// Every file `[tls]` reads — certificates and keys in config order, then the session
    /// ticket key file.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut out = vec![self.cert_path.clone(), self.key_path.clone()];
        for c in &self.certificates {
            out.push(c.cert_path.clone());
            out.push(c.key_path.clone());
        }
        out.extend(self.session_ticket_key_file.clone());
        out
    }
}

/// One `[[tls.certificates]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsCertificate {
    /// `cert_path`: required; a readable PEM certificate chain.
    pub cert_path: PathBuf,
    /// `key_path`: required; a readable PEM private key.
    pub key_path: PathBuf,
    /// `server_names`: the SNI names it serves, exact (`"example.com"`) or one wildcard label
    /// (`"*.example.com"`), lower-case. Default: empty — every name the certificate itself is
    /// valid for.
    pub server_names: Vec<String>,
    /// Where the entry is, e.g. `tls.certificates[1]`.
    pub origin: Origin,
}

/// `[http2]`: HTTP/2 towards clients. Its header list limit is `[security]
/// max_request_header_size`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Http2 {
    /// `enabled`: offer `h2` by ALPN on TLS listeners (before `http/1.1`).
    pub enabled: bool,
    /// `h2c`: accept HTTP/2 prior knowledge on plain listeners.
    pub h2c: bool,
    /// `max_concurrent_streams`: streams a client may have open (and handlers in flight).
    pub max_concurrent_streams: u32,
    /// `initial_stream_window`: bytes a client may send on one stream before the daemon
    /// takes them.
    pub initial_stream_window: u32,
    /// `initial_connection_window`: bytes over all of a connection's streams.
    pub initial_connection_window: u32,
    /// `max_frame_size`: the largest frame the daemon receives.
    pub max_frame_size: u32,
    /// `max_requests_per_connection`: then GOAWAY.
    pub max_requests_per_connection: u64,
    /// `idle_timeout_secs`: a connection without an open stream this long gets GOAWAY.
    pub idle_timeout: Duration,
    /// `keepalive_interval_secs`: a PING after this long idle; zero = never.
    pub keepalive_interval: Duration,
}

impl Default for Http2 {
    fn default() -> Self {
        Self {
            enabled: defaults::HTTP2_ENABLED,
            h2c: defaults::HTTP2_H2C,
            max_concurrent_streams: defaults::HTTP2_MAX_CONCURRENT_STREAMS,
            initial_stream_window: defaults::HTTP2_INITIAL_STREAM_WINDOW,
            initial_connection_window: defaults::HTTP2_INITIAL_CONNECTION_WINDOW,
            max_frame_size: defaults::HTTP2_MAX_FRAME_SIZE,
            max_requests_per_connection: defaults::HTTP2_MAX_REQUESTS_PER_CONNECTION,
            idle_timeout: defaults::HTTP2_IDLE_TIMEOUT,
            keepalive_interval: defaults::HTTP2_KEEPALIVE_INTERVAL,
        }
    }
}

/// `[tracing]`: W3C trace context towards upstreams and the export of spans.
#[derive(Clone, Debug, PartialEq)]
pub struct Tracing {
    /// `propagate`: `traceparent`/`tracestate` go to upstreams (kept from trusted peers, else
    /// a new trace); off, the daemon leaves both fields alone.
    pub propagate: bool,
    /// `sample_ratio`: the share of new traces sampled (0.0–1.0).
    pub sample_ratio: f64,
    /// `otlp_endpoint`: where sampled requests' spans go (OTLP/HTTP, protobuf); `None` = no
    /// export.
    pub otlp_endpoint: Option<OtlpEndpoint>,
    /// `service_name`: the spans' `service.name`.
    pub service_name: String,
    /// `export_batch_size`: spans per OTLP request at most.
    pub export_batch_size: usize,
    /// `export_interval_ms`: the longest a span waits before its batch leaves.
    pub export_interval: Duration,
    /// `export_queue_size`: spans waiting for export; more are dropped and counted.
    pub export_queue_size: usize,
}

impl Default for Tracing {
    fn default() -> Self {
        Self {
            propagate: defaults::TRACING_PROPAGATE,
            sample_ratio: defaults::TRACING_SAMPLE_RATIO,
            otlp_endpoint: None,
            service_name: defaults::TRACING_SERVICE_NAME.into(),
            export_batch_size: defaults::TRACING_EXPORT_BATCH_SIZE,
            export_interval: defaults::TRACING_EXPORT_INTERVAL,
            export_queue_size: defaults::TRACING_EXPORT_QUEUE_SIZE,
        }
    }
}

/// An OTLP/HTTP traces endpoint: `http://host[:port]/path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpEndpoint {
    /// As written.
    pub url: String,
    /// The host name or address, without brackets.
    pub host: String,
    pub port: u16,
    /// The `Host` field: the authority as written.
    pub authority: String,
    /// The request target, `/v1/traces` when the URL has no path.
    pub path: String,
}

/// `[admin]` (an extension of the spec).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admin {
    /// `socket`: default `/run/zerocopy-server/admin.sock`.
    pub socket: PathBuf,
    /// `metrics_listen`: where Prometheus scrapes `/metrics` (plain HTTP, served by the
    /// control thread); default none = no metrics listener.
    pub metrics_listen: Option<SocketAddr>,
}

/// `[host_routes."host"]`.
#[derive(Clone, Debug)]
pub struct HostRoute {
    /// Lower-case host name, no port.
    pub host: String,
    pub route: Route,
}

/// `[path_routes."host"."/prefix"]`.
#[derive(Clone, Debug)]
pub struct PathRoute {
    /// Lower-case host name, no port.
    pub host: String,
    /// The prefix, starting with `/`, without its trailing slash (`"/static/"` is stored as
    /// `"/static"`; `"/"` stays `"/"`): a trailing slash does not change the match.
    pub prefix: String,
    /// The prefix as written in the file (`"/static/"`), for what the operator is shown.
    pub written: String,
    pub route: Route,
}

/// One route: where requests go and the policy on the way.
#[derive(Clone, Debug)]
pub struct Route {
    pub backend: Backend,
    /// Headers, error pages and compression, as written on the route (a host's defaults
    /// are merged in when the snapshot is built).
    pub site: RouteSite,
    /// The route's `security` table over `[security]` over the spec's defaults.
    pub security: RouteSecurity,
    /// Where the route is written, for errors found after parsing (memory-mode loading).
    pub origin: Origin,
}

/// A place in the config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// For example `path_routes."example.com"."/api/"`.
    pub key_path: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `type = "File"` (the default).
    File(FileBackend),
    /// `type = "Proxy"`.
    Proxy(ProxyBackend),
    /// `type = "Redirect"`: every request answered with a redirect.
    Redirect(RedirectBackend),
    /// `type = "Respond"`: every request answered with a fixed response.
    Respond(RespondBackend),
}

impl Backend {
    /// The `type` as the config writes it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::File(_) => "File",
            Self::Proxy(_) => "Proxy",
            Self::Redirect(_) => "Redirect",
            Self::Respond(_) => "Respond",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileBackend {
    /// `path`: required; absolute after resolution against the config's directory; it existed
    /// when the config was checked.
    pub path: PathBuf,
    /// What `path` was when the config was checked.
    pub kind: FileKind,
    /// `mode`: default `sendfile`.
    pub mode: Mode,
    /// `index`: default `index.html`; a single file name (no `/`).
    pub index: String,
    /// `fallback`, `precompressed`, `autoindex`.
    pub site: FileSite,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// Served only when the request path equals the route exactly.
    File,
    /// An alias: the prefix is stripped and the rest joined to the directory.
    Dir,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Zero-copy `sendfile(2)` from the file on each request.
    Sendfile,
    /// The bytes are read when the config loads and served from memory.
    Memory,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyBackend {
    /// `url`, or `upstream`: where requests go.
    pub target: ProxyTarget,
    /// The path requests are joined to: `url`'s path, or `upstream_path` (default `/`).
    pub base_path: String,
    /// `preserve_host` (extension): default true = send the client's `Host`; false sends the
    /// server's `host:port`.
    pub preserve_host: bool,
    /// `ca_file` (extension, `url` routes): a PEM CA bundle trusted for an `https` upstream
    /// instead of the webpki roots; default none.
    pub ca_file: Option<PathBuf>,
    /// `tls_server_name` (extension, `url` routes): the SNI and verification name of an
    /// `https` upstream when it differs from the URL's host; default none.
    pub tls_server_name: Option<String>,
    /// `upstream_protocol` (`url` routes): `"h2"` speaks HTTP/2 to the upstream; a group's
    /// is its `protocol`.
    pub protocol: UpstreamProtocol,
}

/// Where a Proxy route sends its requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyTarget {
    /// `url`: one server, its implicit group named [`UpstreamUrl::group_name`].
    Url(UpstreamUrl),
    /// `upstream = "NAME"`: a group of `[upstreams]`.
    Group(String),
}

impl ProxyBackend {
    /// The name of the group requests go to.
    pub fn group_name(&self) -> String {
        match &self.target {
            ProxyTarget::Url(u) => u.group_name(),
            ProxyTarget::Group(name) => name.clone(),
        }
    }
}

/// A parsed upstream URL: `http` or `https`, a host, a port (the scheme's default when absent)
/// and a base path (`/` when absent). Query strings and fragments are refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub scheme: Scheme,
    /// Host name or IP literal, without brackets.
    pub host: String,
    pub port: u16,
    /// Starts with `/`.
    pub path: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            write!(f, "{scheme}://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

/// One problem in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the error has no place (the file could not be read).
    pub line: usize,
    /// 1-based.
    pub column: usize,
    /// For example `path_routes."example.com"."/api/".security.allowed_ips[1]`; empty for
    /// a TOML syntax error or an unreadable file.
    pub key_path: String,
    /// What is wrong and, where it helps, how to fix it.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    /// `FILE:LINE:COLUMN: KEY_PATH: REASON`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key_path.is_empty() {
            write!(f, ": {}", self.key_path)?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Every problem found in a config file, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    /// One error with no place in the file.
    pub fn file(file: &Path, reason: impl Into<String>) -> Self {
        Self(vec![ConfigError {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            key_path: String::new(),
            reason: reason.into(),
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::parse_net;

    fn set(rules: &[&str]) -> IpSet {
        IpSet::new(rules.iter().map(|r| parse_net(r).unwrap()).collect())
    }

    #[test]
    fn ip_rules_deny_first_then_allow_list() {
        let ip = |s: &str| s.parse().unwrap();
        let open = RouteSecurity::default();
        assert!(open.allows_ip(ip("203.0.113.9")));
        let s = RouteSecurity {
            allowed_ips: set(&["10.0.0.0/8", "2001:db8::/32"]),
            denied_ips: set(&["10.9.0.0/16"]),
            ..RouteSecurity::default()
        };
        assert!(s.allows_ip(ip("10.1.2.3")));
        assert!(!s.allows_ip(ip("10.9.1.1")), "deny wins over allow");
        assert!(!s.allows_ip(ip("192.168.1.1")), "not on the allow list");
        assert!(s.allows_ip(ip("2001:db8::1")));
        assert!(
            s.allows_ip(ip("::ffff:10.1.2.3")),
            "mapped IPv4 matches IPv4 rules"
        );
        assert!(!s.allows_ip(ip("::ffff:10.9.0.1")));
        let deny_only = RouteSecurity {
            denied_ips: set(&["127.0.0.1"]),
            ..RouteSecurity::default()
        };
        assert!(!deny_only.allows_ip(ip("127.0.0.1")));
        assert!(deny_only.allows_ip(ip("127.0.0.2")));
    }
}

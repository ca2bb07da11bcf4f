//! Every default of the config, as a named constant, with the spec's value.
//!
//! The README's config reference and the field docs in [`super`] quote these; change them
//! together.

use std::time::Duration;

/// `[server] threads`: 0 means one worker per CPU core.
pub const THREADS: usize = 0;
/// `[server] shutdown_timeout_secs`: how long a drain waits for connections before exiting.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// `[server] upgrade_timeout_secs`: how long a new binary has to become ready in an upgrade.
pub const UPGRADE_TIMEOUT: Duration = Duration::from_secs(30);
/// `[server] request_id_header`: the field a request's id travels in ("" = no ids).
pub const REQUEST_ID_HEADER: &str = "X-Request-Id";
/// `[[listeners]] https_port` when no listener has TLS.
pub const HTTPS_PORT: u16 = 443;

/// `[logging] level`.
pub const LOG_LEVEL: &str = "info";
/// `[logging] channel_size`: lines buffered between the workers and the log writer.
pub const LOG_CHANNEL_SIZE: usize = 100_000;
/// `[logging] flush_interval_ms`.
pub const LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(1000);
/// `[logging] max_log_size`: bytes before the log file rotates; 0 = never.
pub const MAX_LOG_SIZE: u64 = 104_857_600;

/// `[security] max_concurrent_connections`: 0 = unlimited.
pub const MAX_CONCURRENT_CONNECTIONS: usize = 0;

/// `security.max_request_body_size`: 10 MiB.
pub const MAX_REQUEST_BODY_SIZE: u64 = 10 * 1024 * 1024;
/// `security.max_chunked_body_size`: 10 MiB.
pub const MAX_CHUNKED_BODY_SIZE: u64 = 10 * 1024 * 1024;
/// `security.max_request_header_size`: 8 KiB.
pub const MAX_REQUEST_HEADER_SIZE: usize = 8 * 1024;
/// `security.client_header_timeout_secs`.
pub const CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// `security.client_body_timeout_secs`.
pub const CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// `security.backend_connect_timeout_secs`.
pub const BACKEND_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// `security.backend_response_timeout_secs` (extension): to the upstream's response head.
pub const BACKEND_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// `security.rate_limit_requests_per_min`: 0 = unlimited.
pub const RATE_LIMIT_REQUESTS_PER_MIN: u32 = 0;
/// `security.max_idle_connections_per_host`.
pub const MAX_IDLE_CONNECTIONS_PER_HOST: usize = 8;
/// `security.idle_connection_timeout_secs`.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// `security.allow_underscores_in_headers` (extension): request headers whose names hold `_`
/// are dropped on the way to an upstream (nginx's `underscores_in_headers off`).
pub const ALLOW_UNDERSCORES_IN_HEADERS: bool = false;
/// `security.allowed_upgrades` (extension): the `Upgrade` protocols forwarded to upstreams.
pub const ALLOWED_UPGRADES: &[&str] = &["websocket"];
/// `security.rate_limit_ipv6_prefix` (extension): IPv6 clients are counted per /64.
pub const RATE_LIMIT_IPV6_PREFIX: u8 = 64;

/// `[http2] enabled`: h2 offered by ALPN on TLS listeners.
pub const HTTP2_ENABLED: bool = true;
/// `[http2] h2c`: HTTP/2 prior knowledge on plain listeners.
pub const HTTP2_H2C: bool = false;
/// `[http2] max_concurrent_streams`.
pub const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 128;
/// `[http2] initial_stream_window`: bytes.
pub const HTTP2_INITIAL_STREAM_WINDOW: u32 = 262_144;
/// `[http2] initial_connection_window`: bytes.
pub const HTTP2_INITIAL_CONNECTION_WINDOW: u32 = 1_048_576;
/// `[http2] max_frame_size`: bytes.
pub const HTTP2_MAX_FRAME_SIZE: u32 = 16_384;
/// `[http2] max_requests_per_connection`: then GOAWAY.
pub const HTTP2_MAX_REQUESTS_PER_CONNECTION: u64 = 10_000;
/// `[http2] idle_timeout_secs`: no stream open this long: GOAWAY, close.
pub const HTTP2_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// `[http2] keepalive_interval_secs`: PING when idle; 0 = off.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::ZERO;

/// Route `mode`.
pub const FILE_MODE: &str = "sendfile";
/// Route `index`.
pub const INDEX: &str = "index.html";

/// `[tls] ktls_enabled`.
pub const KTLS_ENABLED: bool = false;
/// `[tls] ktls_fallback_enabled`.
pub const KTLS_FALLBACK_ENABLED: bool = true;
/// `[tls] session_tickets` (extension): stateless session tickets for resumption.
pub const SESSION_TICKETS: bool = true;
/// `[tls] session_cache_size` (extension): sessions held by the stateful cache.
pub const SESSION_CACHE_SIZE: usize = 4096;
/// How often the daemon's own session ticket key is replaced (without a
/// `session_ticket_key_file`); the previous key still opens tickets for as long again.
pub const SESSION_TICKET_ROTATION: Duration = Duration::from_secs(12 * 3600);

/// `[performance] file_io_threads`, and its most.
pub const FILE_IO_THREADS: usize = 8;
pub const FILE_IO_THREADS_MAX: u64 = 512;
/// `[performance] file_io_timeout_ms`: a disk (or mount) that has not answered in this long is
/// treated as failed for the request waiting on it (503).
pub const FILE_IO_TIMEOUT: Duration = Duration::from_secs(30);
/// `[performance] huge_pages_enabled`.
pub const HUGE_PAGES_ENABLED: bool = false;

/// `[performance] file_cache_max_file_size`.
pub const FILE_CACHE_MAX_FILE_SIZE: u64 = 64 * 1024;
/// `[performance] file_cache_size` (per worker).
pub const FILE_CACHE_SIZE: u64 = 16 * 1024 * 1024;
/// `[performance] file_cache_valid_ms`.
pub const FILE_CACHE_VALID: Duration = Duration::from_millis(1000);
/// The largest `file_cache_max_file_size`: past it, `sendfile` costs less than the copy, and
/// the first read of a file (on the worker, like `sendfile`'s) should stay short.
pub const FILE_CACHE_MAX_FILE_SIZE_LIMIT: u64 = 1024 * 1024;

/// `[admin] socket`.
pub const ADMIN_SOCKET: &str = proxyctl::proto::DEFAULT_SOCKET;

/// Total bytes that `mode = "memory"` routes may hold, summed over every such route. A config
/// over the cap is refused: memory mode is for small, hot files.
pub const MEMORY_MODE_TOTAL_CAP: u64 = 256 * 1024 * 1024;

/// Keep-alive idle timeout of client connections (the original's compile-time constant).
pub const KEEPALIVE_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// `[upstreams.NAME] dns_refresh_secs`: re-resolve server names this often.
pub const DNS_REFRESH: Duration = Duration::from_secs(30);
/// `[upstreams.NAME] max_idle_connections_per_server`, per worker.
pub const MAX_IDLE_PER_SERVER: usize = 8;
/// `[upstreams.NAME] idle_connection_timeout_secs`.
pub const GROUP_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// `health_check.interval_ms`, and `unhealthy_interval_ms` (HAProxy's `inter`).
pub const CHECK_INTERVAL: Duration = Duration::from_millis(2000);
/// `health_check.timeout_ms`.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(1000);
/// `health_check.jitter_percent`.
pub const CHECK_JITTER_PERCENT: u8 = 10;
/// `health_check.healthy_threshold` (HAProxy's `rise`).
pub const CHECK_HEALTHY_THRESHOLD: u32 = 2;
/// `health_check.unhealthy_threshold` (HAProxy's `fall`).
pub const CHECK_UNHEALTHY_THRESHOLD: u32 = 3;
/// `health_check.path`.
pub const CHECK_PATH: &str = "/healthz";
/// `outlier.consecutive_failures` (Envoy's `consecutive_5xx`).
pub const OUTLIER_CONSECUTIVE_FAILURES: u32 = 5;
/// `outlier.ejection_secs`, multiplied by the number of times ejected.
pub const OUTLIER_EJECTION: Duration = Duration::from_secs(30);
/// `outlier.max_ejection_secs`.
pub const OUTLIER_MAX_EJECTION: Duration = Duration::from_secs(300);
/// `outlier.max_ejection_percent`.
pub const OUTLIER_MAX_EJECTION_PERCENT: u8 = 50;
/// `retry.attempts`.
pub const RETRY_ATTEMPTS: u32 = 1;
/// `retry.budget_percent`.
pub const RETRY_BUDGET_PERCENT: u32 = 20;
/// `retry.min_retries_per_sec`.
pub const RETRY_MIN_PER_SEC: u32 = 10;

/// `compress_min_size`: bodies known to be shorter are not compressed.
pub const COMPRESS_MIN_SIZE: u64 = 1024;
/// `compress_types`: what nginx users list in `gzip_types`, and wasm.
pub const COMPRESS_TYPES: &[&str] = &[
    "text/*",
    "application/json",
    "application/javascript",
    "image/svg+xml",
    "application/xml",
    "application/wasm",
];
/// The largest error page file (`error_pages`): pages are held in memory by the snapshot.
pub const ERROR_PAGE_CAP: u64 = 1024 * 1024;
/// `fallback_status`.
pub const FALLBACK_STATUS: u16 = 200;
/// A Redirect route's `status`.
pub const REDIRECT_STATUS: u16 = 308;
/// A Respond route's `content_type` when it has a body.
pub const RESPOND_CONTENT_TYPE: &str = "text/plain; charset=utf-8";
/// The most entries a directory listing (`autoindex`) shows.
pub const AUTOINDEX_MAX_ENTRIES: usize = 10_000;

/// `[tracing] propagate`: `traceparent`/`tracestate` passed to upstreams (a new trace when
/// absent, untrusted or malformed).
pub const TRACING_PROPAGATE: bool = true;
/// `[tracing] sample_ratio`: the share of new traces sampled for export (0 = never).
pub const TRACING_SAMPLE_RATIO: f64 = 0.0;
/// `[tracing] service_name`: the spans' `service.name`.
pub const TRACING_SERVICE_NAME: &str = "zerocopy-server";
/// `[tracing] export_batch_size`: spans per OTLP request at most.
pub const TRACING_EXPORT_BATCH_SIZE: usize = 512;
/// `[tracing] export_interval_ms`: the longest a finished span waits for its batch.
pub const TRACING_EXPORT_INTERVAL: Duration = Duration::from_millis(5000);
/// `[tracing] export_queue_size`: spans waiting for export; more are dropped and counted.
pub const TRACING_EXPORT_QUEUE_SIZE: usize = 8192;

//! Walks the spanned TOML tree into [`super::Config`].
//!
//! The text is parsed with [`DeTable::parse_recoverable`], which keeps going after a syntax
//! error and gives every key and value its byte span. A `Walker` then visits each section
//! by hand, checks every key against the schema and converts every value, recording each
//! problem as a [`ConfigError`] instead of stopping: an operator sees all the mistakes of a file
//! in one run, each with its line, column, key path (`path_routes."example.com"."/api/".url`)
//! and a reason that says how to fix it.
//!
//! Rules that are not obvious from the types:
//!
//! - A relative path (`path`, `file_path`, `cert_path`, `key_path`, `socket`) is resolved
//!   against the directory of the config file, and the result is made absolute.
//! - `[security]` accepts every per-route security key too; they become the defaults of every
//!   route, and a route's own `security` table overrides them key by key.
//! - Host keys are lower-cased; path prefixes are stored without their trailing slash, so two
//!   spellings of one route (`"/a"` and `"/a/"`, or `"A.com"` and `"a.com"`) are an error.
//! - Where the tree after a syntax error holds a half-parsed value, only the syntax error is
//!   reported for that line.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::{
    defaults, AccessLogFormat, Admin, Backend, Config, ConfigError, ConfigErrors, FileBackend,
    FileCache, FileKind, GlobalSecurity, HostRoute, LogLevel, Logging, Mode, Origin, PathRoute,
    Performance, ProxyBackend, ProxyTarget, ReuseportBalancing, Route, RouteSecurity, Scheme,
    Server, Tls, TlsCertificate, UpstreamUrl,
};
use crate::http::method::is_tchar;
use crate::http::{Method, MethodSet};
use crate::security::{parse_net, IpSet};

mod http2;
mod listeners;
mod operations;
mod routes;
mod site;
mod upstreams;
mod values;

use routes::*;
use values::*;

/// Reads and parses the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let bytes = crate::fsread::read(path, crate::fsread::CONFIG_CAP)
        .map_err(|e| ConfigErrors::file(path, format!("the config file {e}")))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| ConfigErrors::file(path, format!("the config file is not UTF-8: {e}")))?;
    parse(&text, path)
}

/// Parses `text` as the config file `path`: relative paths in it are resolved against the
/// directory of `path`, and files it names are checked on disk. Returns every error found,
/// sorted by line and column.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    let source = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = source
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let (root, syntax) = DeTable::parse_recoverable(text);
    let mut walker = Walker {
        text,
        file: path.to_path_buf(),
        dir,
        errors: Vec::new(),
    };
    let root = Node {
        table: root.get_ref(),
        path: String::new(),
        at: 0,
    };
    let config = walker.config(&root, source);

    let mut syntax_errors = Vec::new();
    for e in &syntax {
        let at = e.span().map_or(0, |s| s.start);
        syntax_errors.push(walker.error(at, String::new(), e.message().to_string()));
    }
    // A half-parsed value would only repeat its syntax error in other words.
    walker
        .errors
        .retain(|e| !syntax_errors.iter().any(|s| s.line == e.line));
    walker.errors.extend(syntax_errors);

    if walker.errors.is_empty() {
        Ok(config)
    } else {
        walker.errors.sort_by_key(|e| (e.line, e.column));
        Err(ConfigErrors(walker.errors))
    }
}

#[rustfmt::skip]
const TOP_KEYS: &[&str] =
    &["server", "listeners", "logging", "security", "performance", "tls", "admin", "http2", "tracing", "upstreams",
      "host_routes", "path_routes", "host_defaults"];
/// The longest duration any `*_secs` key accepts: one day.
const MAX_SECS: u64 = 86_400;

const SERVER_KEYS: &[&str] = &[
    "listen",
    "threads",
    "shutdown_timeout_secs",
    "upgrade_timeout_secs",
    "request_id_header",
];
#[rustfmt::skip]
const LOGGING_KEYS: &[&str] = &[
    "level", "channel_size", "flush_interval_ms", "max_log_size", "file_path", "access_log",
    "access_log_format",
];
#[rustfmt::skip]
const GLOBAL_SECURITY_KEYS: &[&str] =
    &["drop_privileges_user", "drop_privileges_group", "max_concurrent_connections"];
#[rustfmt::skip]
const ROUTE_SECURITY_KEYS: &[&str] = &[
    "max_request_body_size", "max_chunked_body_size", "max_request_header_size",
    "client_header_timeout_secs", "client_body_timeout_secs", "backend_connect_timeout_secs",
    "allowed_methods", "rate_limit_requests_per_min", "allowed_ips", "denied_ips",
    "max_idle_connections_per_host", "idle_connection_timeout_secs",
    "backend_response_timeout_secs", "trusted_proxies", "allow_underscores_in_headers",
    "allowed_upgrades", "rate_limit_ipv6_prefix",
];
const PERFORMANCE_KEYS: &[&str] = &[
    "reuseport_balancing",
    "huge_pages_enabled",
    "file_io_threads",
    "file_io_timeout_ms",
    "file_cache_max_file_size",
    "file_cache_size",
    "file_cache_valid_ms",
];
#[rustfmt::skip]
const TLS_KEYS: &[&str] = &[
    "cert_path", "key_path", "ktls_enabled", "ktls_fallback_enabled", "certificates",
    "session_tickets", "session_ticket_key_file", "session_cache_size",
];
const TLS_CERTIFICATE_KEYS: &[&str] = &["cert_path", "key_path", "server_names"];
const ADMIN_KEYS: &[&str] = &["socket", "metrics_listen"];
#[rustfmt::skip]
const ROUTE_KEYS: &[&str] = &[
    "type", "path", "mode", "index", "url", "upstream", "upstream_path", "preserve_host",
    "ca_file", "tls_server_name", "upstream_protocol", "security", "request_headers",
    "intercept_errors", "fallback", "fallback_status", "precompressed", "autoindex",
    "autoindex_hidden", "status", "body", "content_type",
];

#[rustfmt::skip]
const ROUTE_TYPES: &[(&str, RouteType)] = &[
    ("File", RouteType::File), ("Proxy", RouteType::Proxy),
    ("Redirect", RouteType::Redirect), ("Respond", RouteType::Respond),
];
const MODES: &[(&str, Mode)] = &[("sendfile", Mode::Sendfile), ("memory", Mode::Memory)];
#[rustfmt::skip]
const LEVELS: &[(&str, LogLevel)] = &[
    ("trace", LogLevel::Trace), ("debug", LogLevel::Debug), ("info", LogLevel::Info),
    ("warn", LogLevel::Warn), ("error", LogLevel::Error), ("off", LogLevel::Off),
];
#[rustfmt::skip]
const ACCESS_LOG_FORMATS: &[(&str, AccessLogFormat)] =
    &[("combined", AccessLogFormat::Combined), ("json", AccessLogFormat::Json)];
#[rustfmt::skip]
const BALANCINGS: &[(&str, ReuseportBalancing)] =
    &[("kernel", ReuseportBalancing::Kernel), ("cbpf", ReuseportBalancing::Cbpf)];

/// Bounds of `max_request_header_size`.
const MIN_HEADER_SIZE: u64 = 1024;
const MAX_HEADER_SIZE: u64 = 1024 * 1024;

/// A TOML table being read, with its key path and where its value starts.
struct Node<'t, 'i> {
    table: &'t DeTable<'i>,
    path: String,
    at: usize,
}

/// A value under a key, with the key path that names it.
struct Field<'t, 'i> {
    value: &'t Spanned<DeValue<'i>>,
    path: String,
}

/// One key of a table whose keys are data (hosts, prefixes).
struct Entry<'t, 'i> {
    key: &'t str,
    key_at: usize,
    field: Field<'t, 'i>,
}

impl<'t, 'i> Node<'t, 'i> {
    fn field(&self, key: &str) -> Option<Field<'t, 'i>> {
        self.table.get(key).map(|value| Field {
            value,
            path: join(&self.path, key),
        })
    }

    /// Every entry, in file order.
    fn entries(&self) -> Vec<Entry<'t, 'i>> {
        let mut out: Vec<Entry<'t, 'i>> = self
            .table
            .iter()
            .map(|(k, value)| Entry {
                key: k.get_ref().as_ref(),
                key_at: k.span().start,
                field: Field {
                    value,
                    path: join(&self.path, k.get_ref()),
                },
            })
            .collect();
        out.sort_by_key(|e| e.key_at);
        out
    }
}

impl Field<'_, '_> {
    fn at(&self) -> usize {
        self.value.span().start
    }
}

/// The type a route table's `type` names.
#[derive(Clone, Copy)]
enum RouteType {
    File,
    Proxy,
    Redirect,
    Respond,
}

/// Walks the tree, collecting every error.
struct Walker<'a> {
    text: &'a str,
    /// The config file as given, for error messages.
    file: PathBuf,
    /// The absolute directory relative paths are resolved against.
    dir: PathBuf,
    errors: Vec<ConfigError>,
}

impl Walker<'_> {
    // ---- sections ----

    fn config(&mut self, root: &Node, source: PathBuf) -> Config {
        self.check_keys(root, &[TOP_KEYS]);
        let (server, shorthand) = self.server(root);
        let logging = self.logging(root);
        let security = self.security(root);
        let performance = self.performance(root);
        let tls = self.tls(root);
        let admin = self.admin(root);
        let http2 = self.http2(root);
        let tracing = self.tracing(root);
        let server_at = root.field("server").map(|f| f.at());
        let listeners = self.listeners(root, shorthand, server_at, tls.is_some(), http2.enabled);
        let upstreams = self.upstreams(root);
        let host_routes = self.host_routes(root, &security.route_defaults);
        let path_routes = self.path_routes(root, &security.route_defaults);
        let host_defaults = self.host_defaults(root);
        let mut config = Config {
            source,
            server,
            listeners,
            logging,
            security,
            performance,
            tls,
            admin,
            http2,
            tracing,
            host_routes,
            path_routes,
            host_defaults,
            upstreams,
        };
        self.route_groups(&mut config);
        config
    }

    /// `[server]`, and its `listen` shorthand if present (a missing `[server]` or `listen` is
    /// reported by [`Self::listeners`], since `[[listeners]]` can stand instead).
    fn server(&mut self, root: &Node) -> (Server, Option<listeners::Shorthand>) {
        let mut server = Server {
            threads: defaults::THREADS,
            shutdown_timeout: defaults::SHUTDOWN_TIMEOUT,
            upgrade_timeout: defaults::UPGRADE_TIMEOUT,
            request_id_header: Some(defaults::REQUEST_ID_HEADER.into()),
        };
        let Some(n) = self.section(root, "server") else {
            return (server, None);
        };
        self.check_keys(&n, &[SERVER_KEYS]);
        let shorthand = n.field("listen").map(|f| listeners::Shorthand {
            address: self.socket_addr(&f),
            at: f.at(),
        });
        self.set(&n, "threads", &mut server.threads, Self::count);
        self.set(
            &n,
            "shutdown_timeout_secs",
            &mut server.shutdown_timeout,
            Self::secs,
        );
        self.set(
            &n,
            "upgrade_timeout_secs",
            &mut server.upgrade_timeout,
            Self::secs,
        );
        if let Some(f) = n.field("request_id_header") {
            if let Some(name) = self.request_id_header(&f) {
                server.request_id_header = name;
            }
        }
        (server, shorthand)
    }

    fn logging(&mut self, root: &Node) -> Logging {
        let mut logging = Logging {
            level: named(LEVELS, defaults::LOG_LEVEL).unwrap_or(LogLevel::Info),
            channel_size: defaults::LOG_CHANNEL_SIZE,
            flush_interval: defaults::LOG_FLUSH_INTERVAL,
            max_log_size: defaults::MAX_LOG_SIZE,
            file_path: None,
            access_log: None,
            access_log_format: AccessLogFormat::Combined,
        };
        let Some(n) = self.section(root, "logging") else {
            return logging;
        };
        self.check_keys(&n, &[LOGGING_KEYS]);
        self.set(&n, "level", &mut logging.level, |w, f| {
            w.choice(f, "level", LEVELS, true)
        });
        self.set(
            &n,
            "channel_size",
            &mut logging.channel_size,
            Self::positive_count,
        );
        self.set(
            &n,
            "flush_interval_ms",
            &mut logging.flush_interval,
            Self::millis,
        );
        self.set(&n, "max_log_size", &mut logging.max_log_size, Self::bytes);
        logging.file_path = self.opt(&n, "file_path", Self::path);
        logging.access_log = self.opt(&n, "access_log", Self::path);
        self.set(
            &n,
            "access_log_format",
            &mut logging.access_log_format,
            |w, f| w.choice(f, "access_log_format", ACCESS_LOG_FORMATS, false),
        );
        logging
    }

    fn security(&mut self, root: &Node) -> GlobalSecurity {
        let mut security = GlobalSecurity {
            drop_privileges_user: None,
            drop_privileges_group: None,
            max_concurrent_connections: defaults::MAX_CONCURRENT_CONNECTIONS,
            route_defaults: RouteSecurity::default(),
        };
        let Some(n) = self.section(root, "security") else {
            return security;
        };
        self.check_keys(&n, &[GLOBAL_SECURITY_KEYS, ROUTE_SECURITY_KEYS]);
        security.drop_privileges_user = self.opt(&n, "drop_privileges_user", Self::user);
        security.drop_privileges_group = self.opt(&n, "drop_privileges_group", Self::group);
        let max = &mut security.max_concurrent_connections;
        self.set(&n, "max_concurrent_connections", max, Self::count);
        security.route_defaults = self.route_security(&n, &RouteSecurity::default());
        security
    }

    /// The per-route security keys of `n` over `base`. Unknown keys are the caller's.
    #[rustfmt::skip]
    fn route_security(&mut self, n: &Node, base: &RouteSecurity) -> RouteSecurity {
        let mut s = base.clone();
        self.set(n, "max_request_body_size", &mut s.max_request_body_size, Self::bytes);
        self.set(n, "max_chunked_body_size", &mut s.max_chunked_body_size, Self::bytes);
        self.set(n, "max_request_header_size", &mut s.max_request_header_size, Self::header_size);
        self.set(n, "client_header_timeout_secs", &mut s.client_header_timeout, Self::secs);
        self.set(n, "client_body_timeout_secs", &mut s.client_body_timeout, Self::secs);
        self.set(n, "backend_connect_timeout_secs", &mut s.backend_connect_timeout, Self::secs);
        self.set(n, "backend_response_timeout_secs", &mut s.backend_response_timeout, Self::secs);
        self.set(n, "allowed_methods", &mut s.allowed_methods, Self::methods);
        let rate = &mut s.rate_limit_requests_per_min;
        self.set(n, "rate_limit_requests_per_min", rate, Self::per_min);
        self.set(n, "allowed_ips", &mut s.allowed_ips, Self::ip_set);
        self.set(n, "denied_ips", &mut s.denied_ips, Self::ip_set);
        let idle = &mut s.max_idle_connections_per_host;
        self.set(n, "max_idle_connections_per_host", idle, Self::count);
        self.set(n, "idle_connection_timeout_secs", &mut s.idle_connection_timeout, Self::secs);
        self.set(n, "trusted_proxies", &mut s.trusted_proxies, Self::ip_set);
        let underscores = &mut s.allow_underscores_in_headers;
        self.set(n, "allow_underscores_in_headers", underscores, Self::bool);
        self.set(n, "allowed_upgrades", &mut s.allowed_upgrades, Self::upgrades);
        self.set(n, "rate_limit_ipv6_prefix", &mut s.rate_limit_ipv6_prefix, |w, f| {
            w.uint(f, 32, 128).and_then(|v| u8::try_from(v).ok())
        });
        s
    }

    fn performance(&mut self, root: &Node) -> Performance {
        let mut performance = Performance {
            reuseport_balancing: ReuseportBalancing::Kernel,
            huge_pages_enabled: defaults::HUGE_PAGES_ENABLED,
            file_io_threads: defaults::FILE_IO_THREADS,
            file_io_timeout: defaults::FILE_IO_TIMEOUT,
            file_cache: FileCache::default(),
        };
        if let Some(n) = self.section(root, "performance") {
            self.check_keys(&n, &[PERFORMANCE_KEYS]);
            let balancing = &mut performance.reuseport_balancing;
            self.set(&n, "reuseport_balancing", balancing, |w, f| {
                w.choice(f, "balancing", BALANCINGS, false)
            });
            let huge_pages = &mut performance.huge_pages_enabled;
            self.set(&n, "huge_pages_enabled", huge_pages, Self::bool);
            let io_threads = &mut performance.file_io_threads;
            self.set(&n, "file_io_threads", io_threads, |w, f| {
                w.uint(f, 1, defaults::FILE_IO_THREADS_MAX)
                    .and_then(|v| usize::try_from(v).ok())
            });
            let io_timeout = &mut performance.file_io_timeout;
            self.set(&n, "file_io_timeout_ms", io_timeout, |w, f| {
                w.uint(f, 1, MAX_SECS * 1000).map(Duration::from_millis)
            });
            let cache = &mut performance.file_cache;
            self.set(
                &n,
                "file_cache_max_file_size",
                &mut cache.max_file_size,
                |w, f| w.uint(f, 0, defaults::FILE_CACHE_MAX_FILE_SIZE_LIMIT),
            );
            self.set(&n, "file_cache_size", &mut cache.size, Self::bytes);
            self.set(&n, "file_cache_valid_ms", &mut cache.valid, |w, f| {
                w.uint(f, 0, MAX_SECS * 1000).map(Duration::from_millis)
            });
        }
        performance
    }

    fn tls(&mut self, root: &Node) -> Option<Tls> {
        let n = self.section(root, "tls")?;
        self.check_keys(&n, &[TLS_KEYS]);
        let cert_path = self.pem_file(&n, "cert_path");
        let key_path = self.pem_file(&n, "key_path");
        let (line, column) = line_column(self.text, n.at);
        let mut tls = Tls {
            cert_path: PathBuf::new(),
            key_path: PathBuf::new(),
            certificates: Vec::new(),
            origin: Origin {
                key_path: n.path.clone(),
                line,
                column,
            },
            ktls_enabled: defaults::KTLS_ENABLED,
            ktls_fallback_enabled: defaults::KTLS_FALLBACK_ENABLED,
            session_tickets: defaults::SESSION_TICKETS,
            session_ticket_key_file: None,
            session_cache_size: defaults::SESSION_CACHE_SIZE,
        };
        if let Some(f) = n.field("certificates") {
            tls.certificates = self.tls_certificates(&f);
        }
        self.set(&n, "ktls_enabled", &mut tls.ktls_enabled, Self::bool);
        if let Some(f) = n.field("ktls_fallback_enabled") {
            if let Some(fallback) = self.bool(&f) {
                tls.ktls_fallback_enabled = fallback;
                if !fallback && !cfg!(feature = "ktls") {
                    // The spec: false makes kernel TLS mandatory. A build without it cannot
                    // keep that promise, so it must not start and serve in userspace.
                    self.reject(
                        &f,
                        "false makes kernel TLS mandatory, and this build has no kernel TLS; \
                         build with `cargo build --release --features ktls`, or remove the key \
                         (TLS then runs in userspace)",
                    );
                }
            }
        }
        self.set(&n, "session_tickets", &mut tls.session_tickets, Self::bool);
        tls.session_ticket_key_file = self.opt(&n, "session_ticket_key_file", Self::readable_file);
        self.set(
            &n,
            "session_cache_size",
            &mut tls.session_cache_size,
            Self::count,
        );
        tls.cert_path = cert_path?;
        tls.key_path = key_path?;
        Some(tls)
    }

    /// `[[tls.certificates]]`: an array of tables.
    fn tls_certificates(&mut self, f: &Field) -> Vec<TlsCertificate> {
        let DeValue::Array(items) = f.value.get_ref() else {
            let hint = "write each entry as [[tls.certificates]] with cert_path and key_path";
            let found = a(f.value.get_ref().type_str());
            self.reject(
                f,
                format!("expected an array of tables, found {found}; {hint}"),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, value) in items.iter().enumerate() {
            let item = Field {
                value,
                path: format!("{}[{i}]", f.path),
            };
            let Some(n) = self.node(&item) else { continue };
            self.check_keys(&n, &[TLS_CERTIFICATE_KEYS]);
            let cert_path = self.pem_file(&n, "cert_path");
            let key_path = self.pem_file(&n, "key_path");
            let mut server_names = Some(Vec::new());
            if let Some(names) = n.field("server_names") {
                server_names = self.array(&names).and_then(|items| {
                    let names: Vec<Option<String>> =
                        items.iter().map(|i| self.sni_name(i)).collect();
                    names.into_iter().collect()
                });
            }
            let (line, column) = line_column(self.text, item.at());
            if let (Some(cert_path), Some(key_path), Some(server_names)) =
                (cert_path, key_path, server_names)
            {
                out.push(TlsCertificate {
                    cert_path,
                    key_path,
                    server_names,
                    origin: Origin {
                        key_path: item.path.clone(),
                        line,
                        column,
                    },
                });
            }
        }
        out
    }

    /// A name a certificate serves: a DNS name, or `*.` and a DNS name.
    fn sni_name(&mut self, f: &Field) -> Option<String> {
        let s = self.str(f)?;
        let name = s.strip_prefix("*.").unwrap_or(s);
        let ok = is_dns_name(name);
        if !ok {
            self.reject(
                f,
                format!("{s:?} is not a DNS name (or \"*.\" and a DNS name) for SNI"),
            );
            return None;
        }
        Some(s.to_ascii_lowercase())
    }

    fn admin(&mut self, root: &Node) -> Admin {
        let mut admin = Admin {
            socket: PathBuf::from(defaults::ADMIN_SOCKET),
            metrics_listen: None,
        };
        if let Some(n) = self.section(root, "admin") {
            self.check_keys(&n, &[ADMIN_KEYS]);
            self.set(&n, "socket", &mut admin.socket, Self::path);
            admin.metrics_listen = self.opt(&n, "metrics_listen", Self::socket_addr);
        }
        admin
    }

    // ---- routes ----
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    /// A temp dir holding `config.toml` with `text`; returns the dir and the parse result.
    pub(super) fn parse_in(text: &str) -> (tempfile::TempDir, Result<Config, ConfigErrors>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        fs::write(&path, text).unwrap();
        let result = load(&path);
        (dir, result)
    }

    pub(super) fn errors_of(text: &str) -> Vec<ConfigError> {
        match parse_in(text).1 {
            Ok(_) => panic!("expected errors for:\n{text}"),
            Err(e) => e.0,
        }
    }

    pub(super) fn ok(text: &str) -> Config {
        match parse_in(text).1 {
            Ok(c) => c,
            Err(e) => panic!("unexpected errors:\n{e}"),
        }
    }

    pub(super) const SERVER: &str = "[server]\nlisten = \"127.0.0.1:8080\"\n";

    /// The one error for `key_path`.
    pub(super) fn find<'e>(errors: &'e [ConfigError], key_path: &str) -> &'e ConfigError {
        errors
            .iter()
            .find(|e| e.key_path == key_path)
            .unwrap_or_else(|| panic!("no error for {key_path} in {errors:#?}"))
    }

    fn proxy(route: &Route) -> &UpstreamUrl {
        match &route.backend {
            Backend::Proxy(ProxyBackend {
                target: ProxyTarget::Url(u),
                ..
            }) => u,
            b => panic!("not a url proxy: {b:?}"),
        }
    }

    fn file(route: &Route) -> &FileBackend {
        match &route.backend {
            Backend::File(f) => f,
            b => panic!("not a file route: {b:?}"),
        }
    }

    fn path_route<'c>(c: &'c Config, host: &str, prefix: &str) -> &'c PathRoute {
        c.path_routes
            .iter()
            .find(|r| r.host == host && r.prefix == prefix)
            .unwrap_or_else(|| panic!("no route {host} {prefix}"))
    }

    #[test]
    fn spec_example_parses() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("www/example")).unwrap();
        fs::create_dir_all(d.join("www/assets")).unwrap();
        fs::write(d.join("www/robots.txt"), "User-agent: *\n").unwrap();
        fs::write(d.join("www/index.html"), "<h1>hi</h1>").unwrap();
        fs::write(d.join("cert.pem"), "cert").unwrap();
        fs::write(d.join("key.pem"), "key").unwrap();
        let www = d.join("www");
        let www = www.display();
        let text = format!(
            r#"[server]
listen = "0.0.0.0:443"
threads = 4
[logging]
level = "info"
channel_size = 100000
flush_interval_ms = 1000
max_log_size = 104857600
[security]
[performance]
reuseport_balancing = "cbpf"
huge_pages_enabled = true
[tls]
cert_path = "{d}/cert.pem"
key_path = "key.pem"
ktls_enabled = true
ktls_fallback_enabled = true
[host_routes."example.com"]
type = "File"
path = "{www}/example"
mode = "sendfile"
[host_routes."api.example.com"]
type = "Proxy"
url = "http://localhost:8080"
[path_routes."example.com"."/robots.txt"]
type = "File"
path = "{www}/robots.txt"
[path_routes."example.com"."/static/"]
type = "File"
path = "{www}/assets/"
mode = "memory"
index = "home.htm"
[path_routes."example.com"."/api/"]
type = "Proxy"
url = "http://localhost:8080/app/"
[path_routes."example.com"."/api/".security]
allowed_methods = ["GET", "POST"]
allowed_ips = ["10.0.0.0/8", "192.168.0.0/16"]
[path_routes."example.com"."/backend"]
type = "Proxy"
url = "http://localhost:3000"
[path_routes."example.com"."/"]
type = "File"
path = "{www}/index.html"
[path_routes."inline.example.com"]
"/v1/" = {{ type = "Proxy", url = "HTTPS://[::1]:8443/base" }}
"/files" = {{ path = "{www}/assets" }}
"#,
            d = d.display()
        );
        let config_path = d.join("config.toml");
        fs::write(&config_path, &text).unwrap();
        let c = load(&config_path).unwrap_or_else(|e| panic!("{e}"));

        assert_eq!(c.source, config_path);
        assert_eq!(c.listeners[0].address, "0.0.0.0:443".parse().unwrap());
        assert_eq!(c.server.threads, 4);
        assert_eq!(c.server.shutdown_timeout, defaults::SHUTDOWN_TIMEOUT);
        assert_eq!(c.logging.level, LogLevel::Info);
        assert_eq!(c.logging.channel_size, 100_000);
        assert_eq!(c.logging.flush_interval, Duration::from_millis(1000));
        assert_eq!(c.logging.max_log_size, 104_857_600);
        assert_eq!(c.logging.file_path, None);
        assert_eq!(c.security.route_defaults, RouteSecurity::default());
        assert_eq!(c.performance.reuseport_balancing, ReuseportBalancing::Cbpf);
        assert!(c.performance.huge_pages_enabled);
        let tls = c.tls.as_ref().unwrap();
        assert_eq!(tls.cert_path, d.join("cert.pem"));
        assert_eq!(tls.key_path, d.join("key.pem"));
        assert!(tls.ktls_enabled && tls.ktls_fallback_enabled);
        assert_eq!(c.admin.socket, PathBuf::from(defaults::ADMIN_SOCKET));

        // Host routes, in file order.
        let hosts: Vec<&str> = c.host_routes.iter().map(|r| r.host.as_str()).collect();
        assert_eq!(hosts, ["example.com", "api.example.com"]);
        let example = file(&c.host_routes[0].route);
        assert_eq!(example.path, d.join("www/example"));
        assert_eq!(example.kind, FileKind::Dir);
        assert_eq!(example.mode, Mode::Sendfile);
        assert_eq!(example.index, "index.html");
        let origin = &c.host_routes[0].route.origin;
        assert_eq!(origin.key_path, "host_routes.\"example.com\"");
        assert_eq!((origin.line, origin.column), (18, 14));
        let api = proxy(&c.host_routes[1].route);
        assert_eq!(
            (api.scheme, api.host.as_str(), api.port),
            (Scheme::Http, "localhost", 8080)
        );
        assert_eq!(api.path, "/");

        assert_eq!(c.path_routes.len(), 7);
        let robots = file(&path_route(&c, "example.com", "/robots.txt").route);
        assert_eq!(robots.kind, FileKind::File);
        assert_eq!(robots.mode, Mode::Sendfile);
        let assets = file(&path_route(&c, "example.com", "/static").route);
        assert_eq!(assets.kind, FileKind::Dir);
        assert_eq!(assets.path, d.join("www/assets/"));
        assert_eq!(assets.mode, Mode::Memory);
        assert_eq!(assets.index, "home.htm");
        let root = file(&path_route(&c, "example.com", "/").route);
        assert_eq!(
            (root.kind, root.path.clone()),
            (FileKind::File, d.join("www/index.html"))
        );

        let api_route = &path_route(&c, "example.com", "/api").route;
        let url = proxy(api_route);
        assert_eq!(
            (url.host.as_str(), url.port, url.path.as_str()),
            ("localhost", 8080, "/app/")
        );
        let methods = api_route.security.allowed_methods.as_ref().unwrap();
        assert!(methods.contains(&Method::Get) && methods.contains(&Method::Post));
        assert!(!methods.contains(&Method::Put));
        assert!(api_route
            .security
            .allowed_ips
            .contains("10.1.2.3".parse().unwrap()));
        assert!(api_route
            .security
            .allowed_ips
            .contains("192.168.7.7".parse().unwrap()));
        assert!(!api_route
            .security
            .allowed_ips
            .contains("11.0.0.1".parse().unwrap()));
        assert_eq!(
            api_route.origin.key_path,
            "path_routes.\"example.com\".\"/api/\""
        );
        assert_eq!((api_route.origin.line, api_route.origin.column), (33, 28));

        let backend = proxy(&path_route(&c, "example.com", "/backend").route);
        assert_eq!((backend.port, backend.path.as_str()), (3000, "/"));

        // The inline form.
        let v1 = &path_route(&c, "inline.example.com", "/v1").route;
        let url = proxy(v1);
        assert_eq!(
            (url.scheme, url.host.as_str(), url.port),
            (Scheme::Https, "::1", 8443)
        );
        assert_eq!(url.path, "/base");
        assert_eq!(
            v1.origin.key_path,
            "path_routes.\"inline.example.com\".\"/v1/\""
        );
        assert_eq!((v1.origin.line, v1.origin.column), (46, 1));
        assert_eq!(v1.security, RouteSecurity::default());
        let files = file(&path_route(&c, "inline.example.com", "/files").route);
        assert_eq!((files.kind, files.mode), (FileKind::Dir, Mode::Sendfile));
    }

    #[test]
    fn security_defaults_apply_and_routes_override_them() {
        let dir = tempfile::tempdir().unwrap();
        let www = dir.path().display();
        let c = ok(&format!(
            r#"{SERVER}
[security]
max_concurrent_connections = 500
drop_privileges_user = "nobody"
max_request_body_size = 100
client_body_timeout_secs = 5
allowed_methods = ["GET", "HEAD"]
denied_ips = ["10.0.0.1"]
[path_routes.h."/a"]
path = "{www}"
[path_routes.h."/b"]
path = "{www}"
security = {{ max_request_body_size = 200, rate_limit_requests_per_min = 60 }}
"#
        ));
        assert_eq!(c.security.max_concurrent_connections, 500);
        assert_eq!(c.security.drop_privileges_user.as_deref(), Some("nobody"));
        assert_eq!(c.security.drop_privileges_group, None);
        let defaults = &c.security.route_defaults;
        assert_eq!(defaults.max_request_body_size, 100);
        assert_eq!(defaults.client_body_timeout, Duration::from_secs(5));
        assert_eq!(
            defaults.max_chunked_body_size,
            defaults::MAX_CHUNKED_BODY_SIZE
        );

        let a = &path_route(&c, "h", "/a").route.security;
        assert_eq!(a, defaults);
        let b = &path_route(&c, "h", "/b").route.security;
        assert_eq!(b.max_request_body_size, 200);
        assert_eq!(b.rate_limit_requests_per_min, 60);
        assert_eq!(b.client_body_timeout, Duration::from_secs(5));
        assert!(b.denied_ips.contains("10.0.0.1".parse().unwrap()));
        assert!(b.allowed_methods.as_ref().unwrap().contains(&Method::Head));
    }

    #[test]
    fn defaults_when_sections_are_absent() {
        let c = ok(SERVER);
        assert_eq!(c.server.threads, defaults::THREADS);
        assert_eq!(c.logging.level, LogLevel::Info);
        assert_eq!(c.logging.channel_size, defaults::LOG_CHANNEL_SIZE);
        assert_eq!(c.security.max_concurrent_connections, 0);
        assert_eq!(
            c.performance.reuseport_balancing,
            ReuseportBalancing::Kernel
        );
        assert!(!c.performance.huge_pages_enabled);
        assert_eq!(c.performance.file_io_threads, 8);
        assert_eq!(c.performance.file_io_timeout, Duration::from_secs(30));
        assert_eq!(c.performance.file_cache, FileCache::default());
        assert!(c.performance.file_cache.enabled());
        assert!(c.tls.is_none());
        assert!(c.host_routes.is_empty() && c.path_routes.is_empty());
    }

    #[test]
    fn file_cache_keys() {
        let c = ok(&format!(
            "{SERVER}\n[performance]\nfile_cache_max_file_size = 4096\nfile_cache_size = 1048576\n\
             file_cache_valid_ms = 0\nfile_io_threads = 32\nfile_io_timeout_ms = 250\n"
        ));
        assert_eq!(c.performance.file_io_threads, 32);
        assert_eq!(c.performance.file_io_timeout, Duration::from_millis(250));
        let cache = c.performance.file_cache;
        assert_eq!((cache.max_file_size, cache.size), (4096, 1 << 20));
        assert_eq!(cache.valid, Duration::ZERO);
        assert!(cache.enabled());
        let off = ok(&format!(
            "{SERVER}\n[performance]\nfile_cache_max_file_size = 0\n"
        ));
        assert!(!off.performance.file_cache.enabled());
    }

    #[test]
    fn unknown_keys_everywhere() {
        let dir = tempfile::tempdir().unwrap();
        let www = dir.path().display();
        let errors = errors_of(&format!(
            r#"[server]
listne = "127.0.0.1:80"
[sever]
[host_routes."a.com"]
path = "{www}"
pth = "x"
[security]
max_body = 1
[path_routes."a.com"."/x".security]
allowed_method = ["GET"]
"#
        ));
        let e = find(&errors, "server.listne");
        assert_eq!(
            e.reason,
            "unknown key \"listne\"; expected one of: listen, threads, shutdown_timeout_secs, \
             upgrade_timeout_secs, request_id_header"
        );
        assert_eq!((e.line, e.column), (2, 1));
        assert!(find(&errors, "sever")
            .reason
            .starts_with("unknown key \"sever\"; expected one of: server, listeners, logging"));
        let e = find(&errors, "host_routes.\"a.com\".pth");
        assert_eq!(
            e.reason,
            "unknown key \"pth\"; expected one of: type, path, mode, index, url, upstream, \
             upstream_path, preserve_host, ca_file, tls_server_name, upstream_protocol, security, \
             request_headers, intercept_errors, fallback, fallback_status, precompressed, \
             autoindex, autoindex_hidden, status, body, content_type, headers, headers_on_errors, \
             error_pages, compress, compress_min_size, compress_types, compress_level"
        );
        assert_eq!((e.line, e.column), (6, 1));
        assert!(find(&errors, "security.max_body")
            .reason
            .contains("drop_privileges_user"));
        let e = find(
            &errors,
            "path_routes.\"a.com\".\"/x\".security.allowed_method",
        );
        assert!(e.reason.contains("allowed_methods"));
        assert!(!e.reason.contains("drop_privileges_user"));
        // Also: listen is missing.
        find(&errors, "server.listen");
    }

    #[test]
    fn bad_cidr_has_exact_place_and_reason() {
        let text = r#"[server]
listen = "127.0.0.1:80"
[path_routes."example.com"."/api/"]
type = "Proxy"
url = "http://localhost:8080/app/"
[path_routes."example.com"."/api/".security]
allowed_ips = ["10.0.0.0/8", "10.0.0.0/33"]
"#;
        let errors = errors_of(text);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        let e = &errors[0];
        assert_eq!(
            e.key_path,
            "path_routes.\"example.com\".\"/api/\".security.allowed_ips[1]"
        );
        assert_eq!(
            e.reason,
            "\"10.0.0.0/33\": prefix length 33 is longer than 32"
        );
        assert_eq!((e.line, e.column), (7, 30));
        assert!(e.file.ends_with("config.toml"));
        assert_eq!(
            e.to_string(),
            format!(
                "{}:7:30: path_routes.\"example.com\".\"/api/\".security.allowed_ips[1]: \
                 \"10.0.0.0/33\": prefix length 33 is longer than 32",
                e.file.display()
            )
        );
    }

    #[test]
    fn many_errors_at_once_sorted() {
        let errors = errors_of(
            r#"[server]
listen = "nowhere"
threads = -1
shutdown_timeout_secs = 0
[logging]
level = "verbose"
channel_size = 1.5
max_log_size = "big"
[performance]
reuseport_balancing = "round-robin"
huge_pages_enabled = "yes"
file_io_threads = 0
file_cache_max_file_size = 20000000
file_cache_valid_ms = -1
[security]
max_request_header_size = 100
allowed_methods = []
rate_limit_requests_per_min = 5000000000
"#,
        );
        let places: Vec<(usize, usize)> = errors.iter().map(|e| (e.line, e.column)).collect();
        let mut sorted = places.clone();
        sorted.sort();
        assert_eq!(places, sorted);
        assert_eq!(errors.len(), 14, "{errors:#?}");
        let reason = |k: &str| find(&errors, k).reason.clone();
        assert!(reason("server.listen").starts_with("\"nowhere\" is not an IP address with a port"));
        assert_eq!(reason("server.threads"), "must not be negative");
        assert_eq!(reason("server.shutdown_timeout_secs"), "must be at least 1");
        assert_eq!(
            reason("logging.level"),
            "unknown level \"verbose\"; expected one of: \"trace\", \"debug\", \"info\", \"warn\", \"error\", \"off\""
        );
        assert_eq!(
            reason("logging.channel_size"),
            "expected an integer, found a float"
        );
        assert_eq!(
            reason("logging.max_log_size"),
            "expected an integer, found a string"
        );
        assert_eq!(
            reason("performance.reuseport_balancing"),
            "unknown balancing \"round-robin\"; expected \"kernel\" or \"cbpf\""
        );
        assert!(reason("performance.huge_pages_enabled").ends_with("found a string"));
        assert_eq!(reason("performance.file_io_threads"), "must be at least 1");
        assert_eq!(
            reason("performance.file_cache_max_file_size"),
            "must be at most 1048576"
        );
        assert_eq!(
            reason("performance.file_cache_valid_ms"),
            "must not be negative"
        );
        assert_eq!(
            reason("security.max_request_header_size"),
            "must be at least 1024"
        );
        assert_eq!(
            reason("security.allowed_methods"),
            "allows no method; remove the key to allow all"
        );
        assert_eq!(
            reason("security.rate_limit_requests_per_min"),
            "must be at most 4194303"
        );
        let e = find(&errors, "server.threads");
        assert_eq!((e.line, e.column), (3, 11));
    }

    #[test]
    fn syntax_error_has_a_place() {
        let errors = errors_of("[server]\nlisten = \"127.0.0.1:80\"\nthreads = = 4\n");
        assert!(
            errors.iter().all(|e| e.line == 3 && e.key_path.is_empty()),
            "{errors:#?}"
        );
        assert_eq!(errors[0].column, 11);
        assert!(errors[0].reason.contains('='), "{errors:#?}");
        let errors = errors_of("[server\nlisten = \"127.0.0.1:80\"\n");
        assert!(
            errors.iter().any(|e| e.line == 1 && e.key_path.is_empty()),
            "{errors:#?}"
        );
        let errors = errors_of("[server]\nlisten = \"127.0.0.1:80\"\n[server]\n");
        assert_eq!((errors[0].line, errors[0].column), (3, 2), "{errors:#?}");
    }

    #[test]
    fn file_route_paths() {
        let (dir, result) = parse_in(&format!(
            "{SERVER}[host_routes.\"a.com\"]\npath = \"missing/site\"\n"
        ));
        let errors = result.unwrap_err().0;
        let e = find(&errors, "host_routes.\"a.com\".path");
        let dir = std::path::absolute(dir.path()).unwrap();
        assert_eq!(
            e.reason,
            format!(
                "{:?} does not exist (resolved from \"missing/site\" against {})",
                dir.join("missing/site"),
                dir.display()
            )
        );
        assert_eq!((e.line, e.column), (4, 8));

        let errors = errors_of(&format!(
            "{SERVER}[host_routes.\"a.com\"]\ntype = \"File\"\n"
        ));
        let e = find(&errors, "host_routes.\"a.com\".path");
        assert!(e.reason.starts_with("required key is missing"), "{e:?}");
        assert_eq!((e.line, e.column), (3, 1));

        let errors = errors_of(&format!(
            "{SERVER}[host_routes.\"a.com\"]\npath = \"/\"\nurl = \"http://x\"\nmode = \"mmap\"\nindex = \"a/b\"\n"
        ));
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(find(&errors, "host_routes.\"a.com\".url")
            .reason
            .starts_with("`url` belongs to Proxy and Redirect routes"));
        assert_eq!(
            find(&errors, "host_routes.\"a.com\".mode").reason,
            "unknown mode \"mmap\"; expected \"sendfile\" or \"memory\""
        );
        assert!(find(&errors, "host_routes.\"a.com\".index")
            .reason
            .contains("plain file name"));
    }

    #[test]
    fn relative_paths_resolve_against_the_config_dir() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("www")).unwrap();
        let path = dir.path().join("config.toml");
        let text = format!(
            "{SERVER}[logging]\nfile_path = \"logs/zcs.log\"\n[admin]\nsocket = \"./admin.sock\"\n\
             [host_routes.\"a.com\"]\npath = \"www\"\n"
        );
        fs::write(&path, &text).unwrap();
        let c = load(&path).unwrap();
        let abs = std::path::absolute(dir.path()).unwrap();
        assert_eq!(file(&c.host_routes[0].route).path, abs.join("www"));
        assert_eq!(file(&c.host_routes[0].route).kind, FileKind::Dir);
        assert_eq!(c.logging.file_path, Some(abs.join("logs/zcs.log")));
        assert_eq!(c.admin.socket, abs.join("admin.sock"));
    }

    #[test]
    fn proxy_route_errors() {
        let text = format!(
            r#"{SERVER}[path_routes.h]
"/ftp" = {{ type = "Proxy", url = "ftp://example.com/" }}
"/nohost" = {{ type = "Proxy", url = "http:///x" }}
"/query" = {{ type = "Proxy", url = "http://a:80/x?y=1" }}
"/user" = {{ type = "Proxy", url = "http://me@a/" }}
"/port" = {{ type = "Proxy", url = "http://a:0/" }}
"/path" = {{ type = "Proxy", url = "http://a/", path = "/srv" }}
"/nourl" = {{ type = "Proxy" }}
"/case" = {{ type = "proxy" }}
"#
        );
        let errors = errors_of(&text);
        let reason = |k: &str| find(&errors, &format!("path_routes.h.{k}")).reason.clone();
        assert_eq!(
            reason("\"/ftp\".url"),
            "\"ftp://example.com/\": unsupported scheme \"ftp\"; expected \"http\" or \"https\""
        );
        assert!(reason("\"/nohost\".url").contains("no host"));
        assert_eq!(
            reason("\"/query\".url"),
            "\"http://a:80/x?y=1\": an upstream url takes no query or fragment"
        );
        assert!(reason("\"/user\".url").contains("user"));
        assert!(reason("\"/port\".url").contains("1 to 65535"));
        assert!(reason("\"/path\".path").starts_with("`path` belongs to File routes"));
        assert!(reason("\"/nourl\".url").starts_with("required key is missing"));
        assert_eq!(
            reason("\"/case\".type"),
            "unknown type \"proxy\"; expected one of: \"File\", \"Proxy\", \"Redirect\", \"Respond\" \
             (case matters: write \"Proxy\")"
        );
        let e = find(&errors, "path_routes.h.\"/ftp\".url");
        assert_eq!((e.line, e.column), (4, 34));
    }

    #[test]
    fn prefixes_are_checked_and_normalised() {
        let dir = tempfile::tempdir().unwrap();
        let www = dir.path().display();
        let errors = errors_of(&format!(
            r#"{SERVER}[path_routes.h."/a"]
path = "{www}"
[path_routes.h."/a/"]
path = "{www}"
[path_routes.h."noslash"]
path = "{www}"
[path_routes.h."/x/../y"]
path = "{www}"
[path_routes.h."/q?x"]
path = "{www}"
"#
        ));
        assert_eq!(errors.len(), 4, "{errors:#?}");
        let e = find(&errors, "path_routes.h.\"/a/\"");
        assert_eq!(
            e.reason,
            "duplicates \"/a\": a trailing slash does not change a route"
        );
        assert_eq!((e.line, e.column), (5, 16));
        assert!(find(&errors, "path_routes.h.noslash")
            .reason
            .contains("starts with \"/\""));
        assert!(find(&errors, "path_routes.h.\"/x/../y\"")
            .reason
            .contains("segment"));
        assert!(find(&errors, "path_routes.h.\"/q?x\"")
            .reason
            .contains("'?'"));

        let c = ok(&format!(
            "{SERVER}[path_routes.h]\n\"/\" = {{ path = \"{www}\" }}\n"
        ));
        assert_eq!(c.path_routes[0].prefix, "/");
    }

    #[test]
    fn missing_server_or_listen() {
        let errors = errors_of("[logging]\nlevel = \"info\"\n");
        assert_eq!(errors.len(), 1);
        assert_eq!((errors[0].line, errors[0].column), (1, 1));
        assert_eq!(errors[0].key_path, "server");

        let errors = errors_of("# comment\n[server]\nthreads = 2\n");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].key_path, "server.listen");
        assert_eq!((errors[0].line, errors[0].column), (2, 1));
        assert!(errors[0].reason.starts_with("required key is missing"));
    }

    #[test]
    fn host_keys_are_lower_cased_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let www = dir.path().display();
        let c = ok(&format!(
            "{SERVER}[host_routes.\"Example.COM\"]\npath = \"{www}\"\n[path_routes.\"API.Example.com\".\"/\"]\npath = \"{www}\"\n"
        ));
        assert_eq!(c.host_routes[0].host, "example.com");
        assert_eq!(
            c.host_routes[0].route.origin.key_path,
            "host_routes.\"Example.COM\""
        );
        assert_eq!(c.path_routes[0].host, "api.example.com");

        let errors = errors_of(&format!(
            r#"{SERVER}[host_routes."a.com"]
path = "{www}"
[host_routes."A.com"]
path = "{www}"
[host_routes."a.com:8080"]
path = "{www}"
[host_routes.""]
path = "{www}"
"#
        ));
        assert_eq!(errors.len(), 3, "{errors:#?}");
        let e = find(&errors, "host_routes.\"A.com\"");
        assert!(e.reason.starts_with("duplicates \"a.com\""), "{e:?}");
        assert_eq!((e.line, e.column), (5, 14));
        assert!(find(&errors, "host_routes.\"a.com:8080\"")
            .reason
            .ends_with("host keys are names without a port, e.g. \"example.com\""));
        find(&errors, "host_routes.\"\"");
    }

    #[test]
    fn tls_files_must_be_readable() {
        let errors = errors_of(&format!("{SERVER}[tls]\ncert_path = \"nope.pem\"\n"));
        assert_eq!(errors.len(), 2, "{errors:#?}");
        let e = find(&errors, "tls.cert_path");
        assert!(
            e.reason.contains("nope.pem\" cannot be read: No such file"),
            "{e:?}"
        );
        assert!(
            e.reason.contains("(resolved from \"nope.pem\" against"),
            "{e:?}"
        );
        assert!(find(&errors, "tls.key_path")
            .reason
            .starts_with("required key is missing"));
    }

    #[test]
    fn tls_certificates_entries_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("a.pem");
        std::fs::write(&pem, "x").unwrap();
        let p = pem.display();
        let errors = errors_of(&format!(
            "{SERVER}[tls]\ncert_path = \"{p}\"\nkey_path = \"{p}\"\n\n\
             [[tls.certificates]]\ncert_path = \"{p}\"\nkey_path = \"{p}\"\n\
             server_names = [\"ok.test\", \"*.wild.test\", \"bad name\", \"a.*.test\"]\n\n\
             [[tls.certificates]]\ncert_path = \"{p}\"\nsni = 1\n"
        ));
        assert_eq!(errors.len(), 4, "{errors:#?}");
        assert!(find(&errors, "tls.certificates[0].server_names[2]")
            .reason
            .contains("\"bad name\" is not a DNS name"));
        find(&errors, "tls.certificates[0].server_names[3]");
        assert!(find(&errors, "tls.certificates[1].key_path")
            .reason
            .starts_with("required key is missing"));
        assert!(find(&errors, "tls.certificates[1].sni")
            .reason
            .starts_with("unknown key"));
        // A good entry parses, names lower-cased, its place recorded.
        let cfg = parse(
            &format!(
                "{SERVER}[tls]\ncert_path = \"{p}\"\nkey_path = \"{p}\"\n\n\
                 [[tls.certificates]]\ncert_path = \"{p}\"\nkey_path = \"{p}\"\n\
                 server_names = [\"A.Test\", \"*.Wild.test\"]\n"
            ),
            Path::new("/etc/z.toml"),
        )
        .unwrap();
        let tls = cfg.tls.unwrap();
        assert_eq!(tls.certificates.len(), 1);
        assert_eq!(tls.certificates[0].server_names, ["a.test", "*.wild.test"]);
        assert_eq!(tls.certificates[0].origin.key_path, "tls.certificates[0]");
        assert_eq!(tls.files().len(), 4);
    }

    #[test]
    fn wrong_types_for_tables_and_arrays() {
        let errors = errors_of(&format!(
            "logging = 3\n{SERVER}[security]\nallowed_ips = \"10.0.0.0/8\"\nallowed_methods = [\"GET\", 1, \"get\", \"G T\"]\n"
        ));
        assert_eq!(
            find(&errors, "logging").reason,
            "expected a table, found an integer"
        );
        assert_eq!(
            find(&errors, "security.allowed_ips").reason,
            "expected an array of strings, found a string"
        );
        assert_eq!(
            find(&errors, "security.allowed_methods[1]").reason,
            "expected a string, found an integer"
        );
        assert!(find(&errors, "security.allowed_methods[2]")
            .reason
            .contains("write \"GET\""));
        assert!(find(&errors, "security.allowed_methods[3]")
            .reason
            .contains("not a method"));
    }

    #[test]
    fn shipped_quickstart_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/quickstart.toml");
        let c = load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.listeners[0].address, "127.0.0.1:8080".parse().unwrap());
        let hosts: Vec<&str> = c.host_routes.iter().map(|r| r.host.as_str()).collect();
        assert_eq!(hosts, ["127.0.0.1", "localhost"]);
        for r in &c.host_routes {
            assert_eq!(file(&r.route).kind, FileKind::Dir);
            assert!(file(&r.route).path.ends_with("config/www"));
        }
    }

    #[test]
    fn upstream_urls() {
        let u = upstream_url("http://localhost:8080/app/").unwrap();
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port, u.path.as_str()),
            (Scheme::Http, "localhost", 8080, "/app/")
        );
        let u = upstream_url("https://Example.com").unwrap();
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port, u.path.as_str()),
            (Scheme::Https, "example.com", 443, "/")
        );
        let u = upstream_url("http://[::1]/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 80));
        assert_eq!(u.to_string(), "http://[::1]:80/x");
        for bad in [
            "localhost:8080",
            "ftp://a/",
            "http://",
            "http://:80/",
            "http://a:/",
            "http://a:65536/",
            "http://a/#f",
            "http://u:p@a/",
            "http://::1/",
            "http://[::1/",
            "http://[zz]/",
            "http://a b/",
        ] {
            assert!(upstream_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_paths_and_positions() {
        assert_eq!(join("", "server"), "server");
        assert_eq!(join("a", "b-c_9"), "a.b-c_9");
        assert_eq!(join("a", "x.y"), "a.\"x.y\"");
        assert_eq!(join("a", ""), "a.\"\"");
        assert_eq!(join("a", "q\"\\"), "a.\"q\\\"\\\\\"");
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("é = 1\nx", 2), (1, 2));
        assert_eq!(line_column("é = 1\nx", 3), (1, 3));
        assert_eq!(line_column("ab", 99), (1, 3));
    }
}

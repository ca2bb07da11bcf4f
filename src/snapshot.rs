//! The immutable [`Snapshot`]: everything a worker reads per request, built once from a
//! [`Config`] off the data path and published through `arc-swap`.
//!
//! Workers call `load` on the [`ArcSwap`] once per request and keep the `Arc` only for that
//! request, so a keep-alive connection sees a new snapshot at its next request. Building reads
//! memory-mode files; any failure is a [`ConfigErrors`] that names the route, so a snapshot that
//! exists is always complete.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use proxyctl::proto::{RouteKey, RouteStats, UpstreamStats};

use crate::config::{Backend, Config, ConfigError, ConfigErrors, Mode, Route, Scheme};
use crate::metrics::Registry;
use crate::net::upstream::UpstreamTls;
use crate::preload::MemoryFiles;
use crate::proxy::pool::{PoolKey, Upstream};
use crate::route::{RouteEntry, Router};
use crate::tls::sessions::Sessions;

/// One published generation of the configuration.
#[derive(Debug)]
pub struct Snapshot {
    /// 1 for the configuration loaded at start-up, +1 for each successful reload.
    pub generation: u64,
    pub config: Arc<Config>,
    pub router: Router,
    /// The TLS server configuration (certificates by SNI) when `[tls]` is set: new handshakes
    /// use the snapshot current when the connection is accepted.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The content of `[tls] session_ticket_key_file`, read when the snapshot was built; put in
    /// force when it is published ([`Snapshot::publish_sessions`]).
    pub ticket_key: Option<Box<[u8; crate::tls::sessions::KEY_FILE_LEN]>>,
    /// The TLS session cache `tls` uses, kept for later builds once this is published.
    session_cache: Option<Arc<rustls::server::ServerSessionMemoryCache>>,
}

/// The snapshot cell shared by the control thread and every worker.
pub type SnapshotCell = ArcSwap<Snapshot>;

impl Snapshot {
    /// Builds a snapshot: the router, and the bytes of memory-mode routes (within the total cap).
    /// Counters come from `metrics`, so that a route keeps its own across reloads.
    pub fn build(
        config: Config,
        generation: u64,
        metrics: &Registry,
        sessions: &Sessions,
    ) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        let mut budget = crate::config::defaults::MEMORY_MODE_TOTAL_CAP;
        let mut entries = Vec::new();
        let routes = config
            .host_routes
            .iter()
            .map(|h| (&h.host, None, None, &h.route))
            .chain(config.path_routes.iter().map(|p| {
                (
                    &p.host,
                    Some(p.prefix.clone()),
                    Some(p.written.clone()),
                    &p.route,
                )
            }));
        for (host, prefix, written, route) in routes {
            let memory = match load_memory(route, &mut budget) {
                Ok(m) => m,
                Err(reason) => {
                    errors.push(ConfigError {
                        file: config.source.clone(),
                        line: route.origin.line,
                        column: route.origin.column,
                        key_path: format!("{}.path", route.origin.key_path),
                        reason,
                    });
                    None
                }
            };
            let upstream = match resolve_upstream(route, metrics) {
                Ok(u) => u,
                Err((key, reason)) => {
                    errors.push(ConfigError {
                        file: config.source.clone(),
                        line: route.origin.line,
                        column: route.origin.column,
                        key_path: format!("{}.{key}", route.origin.key_path),
                        reason,
                    });
                    None
                }
            };
            let key = RouteKey {
                host: host.clone(),
                prefix: prefix.clone(),
            };
            entries.push(RouteEntry {
                metrics: metrics.route(&key),
                host: host.clone(),
                prefix,
                written,
                route: route.clone(),
                memory,
                upstream,
            });
        }
        let mut session_cache = None;
        let tls = match &config.tls {
            None => None,
            Some(t) => match crate::tls::server::config(t, sessions) {
                Ok((c, cache)) => {
                    session_cache = cache;
                    Some(c)
                }
                Err(e) => {
                    errors.extend(e.into_iter().map(|(at, reason)| ConfigError {
                        file: config.source.clone(),
                        line: at.line,
                        column: at.column,
                        key_path: at.key_path,
                        reason,
                    }));
                    None
                }
            },
        };
        let mut ticket_key = None;
        if let Some((t, path)) = config
            .tls
            .as_ref()
            .and_then(|t| Some((t, t.session_ticket_key_file.as_ref()?)))
        {
            match crate::tls::sessions::read_key_file(path) {
                Ok(k) => ticket_key = Some(k),
                Err(reason) => errors.push(ConfigError {
                    file: config.source.clone(),
                    line: t.origin.line,
                    column: t.origin.column,
                    key_path: format!("{}.session_ticket_key_file", t.origin.key_path),
                    reason,
                }),
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let router =
            Router::new(entries).map_err(|reason| ConfigErrors::file(&config.source, reason))?;
        Ok(Self {
            generation,
            config: Arc::new(config),
            router,
            tls,
            ticket_key,
            session_cache,
        })
    }

    /// Puts this snapshot's session settings in force — its ticket key, its session cache
    /// for later builds — when it is published (at start and at each reload, on the control
    /// thread).
    pub fn publish_sessions(&self, sessions: &Sessions) {
        if let Some(t) = &self.config.tls {
            sessions.use_key(t.session_tickets, self.ticket_key.as_deref());
            if let Some(cache) = &self.session_cache {
                sessions.use_cache(t.session_cache_size, cache.clone());
            }
        }
    }

    /// Forgets the counters in `registry` of routes and upstreams this snapshot does not have
    /// (a removed route, or one built for a config that was refused).
    pub fn retain_metrics(&self, registry: &Registry) {
        let entries = self.router.entries();
        registry.retain(
            |key| {
                entries
                    .iter()
                    .any(|e| e.host == key.host && e.prefix == key.prefix)
            },
            |name| {
                entries
                    .iter()
                    .any(|e| e.upstream.as_ref().is_some_and(|u| u.name == name))
            },
        );
    }

    /// Sums the route and upstream rows of this snapshot from `registry` (in routing-table
    /// order, then the unrouted row). The rest of [`proxyctl::proto::Stats`] is the caller's.
    pub fn collect_stats(&self, registry: &Registry) -> (Vec<RouteStats>, Vec<UpstreamStats>) {
        let mut routes = Vec::new();
        let mut upstreams: Vec<UpstreamStats> = Vec::new();
        for e in self.router.entries() {
            let mut row = e.metrics.sum();
            row.host = e.host.clone();
            row.prefix = e.prefix.clone();
            row.backend = match &e.route.backend {
                Backend::File(_) => "File".into(),
                Backend::Proxy(_) => "Proxy".into(),
            };
            routes.push(row);
            if let Some(u) = &e.upstream {
                if !upstreams.iter().any(|r| r.upstream == u.name) {
                    upstreams.push(u.metrics.sum(&u.name));
                }
            }
        }
        routes.push(registry.unrouted.sum());
        (routes, upstreams)
    }

    /// The limits that act while a request head is read, before its route is known: the
    /// `[security]` defaults.
    pub fn head_limits(&self) -> HeadLimits {
        let d = &self.config.security.route_defaults;
        HeadLimits {
            max_header_size: d.max_request_header_size,
            header_timeout: d.client_header_timeout,
        }
    }
}

/// Limits for reading a request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadLimits {
    pub max_header_size: usize,
    pub header_timeout: Duration,
}

fn load_memory(route: &Route, budget: &mut u64) -> Result<Option<Arc<MemoryFiles>>, String> {
    match &route.backend {
        Backend::File(f) if f.mode == Mode::Memory => {
            Ok(Some(Arc::new(MemoryFiles::load(f, budget)?)))
        }
        _ => Ok(None),
    }
}

/// Resolves a Proxy route's upstream host (DNS happens here, on the control thread, never on a
/// worker; a reload resolves again) and, for `https://`, builds its TLS client configuration
/// (reading `ca_file`). `Err` is the route key at fault and why.
fn resolve_upstream(
    route: &Route,
    metrics: &Registry,
) -> Result<Option<Upstream>, (&'static str, String)> {
    let Backend::Proxy(p) = &route.backend else {
        return Ok(None);
    };
    let u = &p.url;
    let addrs: Vec<std::net::SocketAddr> =
        std::net::ToSocketAddrs::to_socket_addrs(&(u.host.as_str(), u.port))
            .map_err(|e| ("url", format!("cannot resolve {:?}: {e}", u.host)))?
            .collect();
    if addrs.is_empty() {
        return Err(("url", format!("{:?} resolves to no address", u.host)));
    }
    let https = u.scheme == Scheme::Https;
    let tls_name = https.then(|| p.tls_server_name.clone().unwrap_or_else(|| u.host.clone()));
    let tls = match &tls_name {
        None => None,
        Some(name) => Some(UpstreamTls {
            config: crate::tls::client::config(p.ca_file.as_deref()).map_err(|e| ("ca_file", e))?,
            name: crate::tls::client::server_name(name).map_err(|e| ("tls_server_name", e))?,
        }),
    };
    let name = format!(
        "{}://{}:{}",
        if https { "https" } else { "http" },
        u.host,
        u.port
    );
    Ok(Some(Upstream {
        metrics: metrics.upstream(&name),
        name,
        key: PoolKey {
            https,
            host: u.host.clone(),
            port: u.port,
            tls_name,
            ca_file: p.ca_file.clone().filter(|_| https),
        },
        addrs,
        tls,
    }))
}

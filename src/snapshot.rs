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

use crate::config::{
    Backend, Config, ConfigError, ConfigErrors, Mode, ProxyTarget, Route, UpstreamGroup,
    UpstreamProtocol,
};
use crate::group::{Fleet, Group};
use crate::metrics::Registry;
use crate::preload::MemoryFiles;
use crate::route::{RouteEntry, Router};
use crate::site::Site;
use crate::tls::sessions::Sessions;

/// One published generation of the configuration.
#[derive(Debug)]
pub struct Snapshot {
    /// 1 for the configuration loaded at start-up, +1 for each successful reload.
    pub generation: u64,
    pub config: Arc<Config>,
    pub router: Router,
    /// Every upstream group (named ones, then `url` routes' own), servers resolved.
    pub groups: Vec<Arc<Group>>,
    /// The TLS server configuration (certificates by SNI) when `[tls]` is set: new handshakes
    /// use the snapshot current when the connection is accepted.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// `tls` offering only `http/1.1` by ALPN, for TLS listeners with `http2 = false`.
    pub tls_h1: Option<Arc<rustls::ServerConfig>>,
    /// How `tls` chooses a certificate by SNI: which certificate a connection got, for
    /// HTTP/2's connection coalescing (a `421` for a name it does not cover).
    pub certificates: Option<Arc<crate::tls::server::SniResolver>>,
    /// The content of `[tls] session_ticket_key_file`, read when the snapshot was built; put in
    /// force when it is published ([`Snapshot::publish_sessions`]).
    pub ticket_key: Option<Box<[u8; crate::tls::sessions::KEY_FILE_LEN]>>,
    /// The TLS session cache `tls` uses, kept for later builds once this is published.
    session_cache: Option<Arc<rustls::server::ServerSessionMemoryCache>>,
    /// `[host_defaults]` by host, for a host's requests that no route takes.
    host_sites: std::collections::HashMap<String, Site>,
    /// Request ids and trace context (`[server] request_id_header`, `[tracing]`).
    pub telemetry: crate::telemetry::Telemetry,
}

/// The snapshot cell shared by the control thread and every worker.
pub type SnapshotCell = ArcSwap<Snapshot>;

impl Snapshot {
    /// Builds a snapshot: the upstream groups (names resolved), the router, and the bytes of
    /// memory-mode routes (within the total cap). Counters come from `metrics` and server
    /// states from `fleet`, so that a route and a server keep their own across reloads.
    pub fn build(
        config: Config,
        generation: u64,
        metrics: &Registry,
        fleet: &Fleet,
        sessions: &Sessions,
    ) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        let mut groups = Vec::new();
        for g in &config.upstreams {
            match build_group(g, metrics, fleet, generation <= 1) {
                Ok(built) => groups.push(Arc::new(built)),
                Err((key, reason)) => errors.push(ConfigError {
                    file: config.source.clone(),
                    line: g.origin.line,
                    column: g.origin.column,
                    key_path: format!("{}.{key}", g.origin.key_path),
                    reason,
                }),
            }
        }
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
            let group = match &route.backend {
                Backend::Proxy(p) => groups
                    .iter()
                    .find(|g| match &p.target {
                        ProxyTarget::Group(name) => !g.config.implicit && &g.config.name == name,
                        ProxyTarget::Url(u) => {
                            g.config.implicit
                                && g.config.name == u.group_name()
                                && g.config.tls_server_name
                                    == p.tls_server_name.clone().filter(|_| g.config.tls)
                                && g.config.ca_file == p.ca_file.clone().filter(|_| g.config.tls)
                                && g.config.protocol == p.protocol
                        }
                    })
                    .cloned(),
                Backend::File(_) | Backend::Redirect(_) | Backend::Respond(_) => None,
            };
            let host_site = config.host_defaults.iter().find(|d| &d.host == host);
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
                group,
                site: Site::build(route, host_site),
            });
        }
        let mut session_cache = None;
        let mut certificates = None;
        let tls = match &config.tls {
            None => None,
            Some(t) => match crate::tls::server::config(t, true, sessions) {
                Ok((c, cache, resolver)) => {
                    session_cache = cache;
                    certificates = Some(resolver);
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
        let tls_h1 = tls.as_ref().map(|c: &Arc<rustls::ServerConfig>| {
            let mut h1 = rustls::ServerConfig::clone(c);
            h1.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(h1)
        });
        let host_sites = config
            .host_defaults
            .iter()
            .map(|d| (d.host.clone(), Site::for_host(d)))
            .collect();
        let telemetry = crate::telemetry::Telemetry::new(&config);
        Ok(Self {
            generation,
            telemetry,
            config: Arc::new(config),
            router,
            groups,
            tls,
            tls_h1,
            certificates,
            ticket_key,
            session_cache,
            host_sites,
        })
    }

    /// The response rules for a daemon-made answer: its route's (`route`: an index into the
    /// router's entries), else its host's defaults.
    pub fn site_for(&self, route: Option<usize>, host: Option<&str>) -> Option<&Site> {
        match route.and_then(|i| self.router.entries().get(i)) {
            Some(e) => Some(&e.site),
            None => self.host_sites.get(host?),
        }
    }

    /// The settings of the listener bound to `address`, as this snapshot has them (`None`
    /// after a reload removed it; it is bound until a restart or upgrade).
    pub fn listener(&self, address: std::net::SocketAddr) -> Option<&crate::config::Listener> {
        self.config.listeners.iter().find(|l| l.address == address)
    }

    /// The TLS configuration for a TLS listener: with `h2` in ALPN when `http2`.
    pub fn tls_for(&self, http2: bool) -> Option<&Arc<rustls::ServerConfig>> {
        if http2 {
            self.tls.as_ref()
        } else {
            self.tls_h1.as_ref()
        }
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
            |name| self.groups.iter().any(|g| g.config.name == name),
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
            row.backend = e.route.backend.type_name().into();
            routes.push(row);
            if let Some(g) = &e.group {
                if !upstreams.iter().any(|r| r.upstream == g.config.name) {
                    upstreams.push(g.metrics.sum(&g.config.name));
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
            let compress = Some(&route.site.compress);
            Ok(Some(Arc::new(MemoryFiles::load(f, compress, budget)?)))
        }
        _ => Ok(None),
    }
}

/// Builds a group: its servers resolved (DNS happens here, on the control plane's build
/// thread, never on a worker), their states from `fleet`, and its TLS client configuration
/// (reading `ca_file`). `Err` is the key at fault and why.
fn build_group(
    g: &UpstreamGroup,
    metrics: &Registry,
    fleet: &Fleet,
    at_start: bool,
) -> Result<Group, (&'static str, String)> {
    // An implicit group's faults are its route's `url`, `ca_file`, `tls_server_name`.
    let key = |group_key: &'static str, url_key: &'static str| {
        if g.implicit {
            url_key
        } else {
            group_key
        }
    };
    let tls = match g.tls {
        false => None,
        true => Some(
            crate::tls::client::config(g.ca_file.as_deref(), g.protocol == UpstreamProtocol::H2)
                .map_err(|e| ("ca_file", e))?,
        ),
    };
    let members = crate::group::dns::members(g, tls.as_ref(), fleet, at_start)
        .map_err(|e| (key("servers", "url"), e))?;
    Ok(Group::new(
        g.clone(),
        members,
        fleet.group(&g.name, metrics.workers()),
        tls,
        metrics.upstream(&g.name),
        metrics.workers(),
    ))
}

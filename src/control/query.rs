//! The admin API's answers about the running daemon — `status`, `stats`, `routes`, `explain`
//! and `check` — computed on the control thread from the serving snapshot (a `check` builds on a
//! helper thread).

use super::*;

impl Control {
    pub(super) fn status(&self) -> Status {
        let snapshot = self.shared.snapshot.load();
        Status {
            state: self.state,
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs(),
            generation: snapshot.generation,
            config_path: self.config_path.display().to_string(),
            workers: self.workers.len(),
            io_driver: self.workers.driver.clone(),
            connections: self.shared.connections(),
            connections_over_cap: self.shared.sum(|w| &w.over_cap),
            idle_parked: self.shared.sum(|w| &w.parked),
            in_flight: self.shared.in_flight(),
            http2_connections: self.shared.sum(|w| &w.h2_connections),
            http2_streams_open: self.shared.sum(|w| &w.h2_streams_open),
            last_reload: self.last_reload.clone(),
            tls: snapshot.tls.as_ref().map(|_| TlsStatus {
                record_layer: self.shared.record_layer.describe(),
                handshakes: self.shared.sum(|w| &w.tls_handshakes),
                ktls: self.shared.sum(|w| &w.ktls),
                ktls_fallback: self.shared.sum(|w| &w.ktls_fallback),
                ktls_refused: self.shared.sum(|w| &w.ktls_refused),
            }),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at_unix_ms: self.started_at_ms,
            listeners: self.listeners(&snapshot),
            last_upgrade: self.last_upgrade.clone(),
        }
    }

    /// Each listener bound at start-up, with its settings as the serving snapshot has them.
    fn listeners(&self, snapshot: &crate::snapshot::Snapshot) -> Vec<ListenerStatus> {
        self.shared
            .listeners
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| {
                let l = self.shared.listener_in(i, snapshot)?;
                let sockets = self
                    .workers
                    .sockets
                    .iter()
                    .find(|s| s.address == slot.config.address)
                    .map_or("bound", |s| s.source.as_str());
                Some(ListenerStatus {
                    address: l.address.to_string(),
                    tls: l.tls,
                    http2: l.http2,
                    proxy_protocol: l
                        .proxy_protocol
                        .as_ref()
                        .map_or("off", |p| p.versions.as_str())
                        .to_string(),
                    redirect_to_https: l.redirect.as_ref().map(|r| r.https_port),
                    sockets: sockets.to_string(),
                    connections: slot.connections.load(Ordering::Relaxed),
                    accepted: slot.accepted.load(Ordering::Relaxed),
                    proxy_refused: slot.proxy_refused.load(Ordering::Relaxed),
                })
            })
            .collect()
    }

    /// Every counter, summed over the workers now.
    pub(super) fn stats(&self) -> Stats {
        let snapshot = self.shared.snapshot.load();
        let (routes, upstreams) = snapshot.collect_stats(&self.shared.metrics);
        let workers = self
            .shared
            .workers
            .iter()
            .enumerate()
            .map(|(worker, w)| proxyctl::proto::WorkerStats {
                worker,
                connections: w.connections.load(Ordering::Relaxed),
                connections_total: w.accepted.load(Ordering::Relaxed),
                requests: w.requests.load(Ordering::Relaxed),
            })
            .collect();
        Stats {
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            connections: ConnectionStats {
                open: self.shared.connections(),
                total: self.shared.sum(|w| &w.accepted),
                over_cap: self.shared.sum(|w| &w.over_cap),
                parked: self.shared.sum(|w| &w.parked),
            },
            routes,
            upstreams,
            groups: super::upstreams::distinct(&snapshot.groups)
                .map(super::upstreams::info)
                .collect(),
            workers,
            reloads: self.reloads.clone(),
            tls: self.status().tls,
            log_lines_dropped: crate::logging::lines_dropped(),
            file_cache: FileCacheStats {
                files: self.shared.sum(|w| &w.file_cache_files),
                bytes: self.shared.sum(|w| &w.file_cache_bytes),
                hits: self.shared.sum(|w| &w.file_cache_hits),
                misses: self.shared.sum(|w| &w.file_cache_misses),
                offloaded: crate::net::offload::offloaded(),
            },
            http2: Http2Stats {
                connections_open: self.shared.sum(|w| &w.h2_connections),
                connections_total: self.shared.sum(|w| &w.h2_accepted),
                streams_total: self.shared.sum(|w| &w.h2_streams),
                streams_open: self.shared.sum(|w| &w.h2_streams_open),
                streams_refused: self.shared.sum(|w| &w.h2_refused),
                resets_received: self.shared.sum(|w| &w.h2_resets_received),
                resets_sent: self.shared.sum(|w| &w.h2_resets_sent),
                goaway_graceful: self.shared.sum(|w| &w.h2_goaway_graceful),
                goaway_error: self.shared.sum(|w| &w.h2_goaway_error),
            },
            tracing: {
                let c = crate::telemetry::export::counters();
                let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
                proxyctl::proto::TracingStats {
                    spans_exported: n(&c.exported),
                    spans_dropped_queue_full: n(&c.dropped_queue_full),
                    spans_dropped_export_failed: n(&c.dropped_export_failed),
                    export_failures: n(&c.failed_requests),
                }
            },
        }
    }

    pub(super) fn routes(&self) -> Vec<RouteInfo> {
        let snapshot = self.shared.snapshot.load();
        snapshot
            .router
            .entries()
            .iter()
            .map(|e| {
                let (backend, target, mode, index) = match &e.route.backend {
                    Backend::File(f) => (
                        "File",
                        f.path.display().to_string(),
                        Some(match f.mode {
                            crate::config::Mode::Sendfile => "sendfile".to_string(),
                            crate::config::Mode::Memory => "memory".to_string(),
                        }),
                        Some(f.index.clone()),
                    ),
                    Backend::Proxy(p) => ("Proxy", proxy_target(p), None, None),
                    Backend::Redirect(r) => (
                        "Redirect",
                        format!("{} {}", r.status, r.url.as_str()),
                        None,
                        None,
                    ),
                    Backend::Respond(r) => ("Respond", format!("{}", r.status), None, None),
                };
                RouteInfo {
                    host: e.host.clone(),
                    prefix: e.written.clone(),
                    backend: backend.into(),
                    target,
                    mode,
                    index,
                    policy: policy(&e.route.security),
                }
            })
            .collect()
    }

    /// What the daemon would answer to `method target` with `Host: host` from `client`, by the
    /// data path's own rules: the head parser's host and target handling, path normalisation,
    /// the router, the route's policy and the file lookup ([`crate::files::probe`]).
    pub(super) fn explain(&self, host: &str, target: &str, request: ExplainRequest<'_>) -> Explain {
        let ExplainRequest {
            method,
            client,
            accept_encoding,
        } = request;
        let mut answer = Explain {
            matched: false,
            host: host.to_string(),
            path: target.to_string(),
            prefix: None,
            backend: None,
            resolved: None,
            policy: None,
            reason: None,
            status: None,
            upstream: None,
            headers: Vec::new(),
            encoding: None,
            fallback: None,
        };
        let refuse = |answer: &mut Explain, e: crate::error::Error| {
            answer.status = e.status();
            answer.reason = Some(e.detail.to_string());
        };
        let (host, raw_path, query) = match crate::http::h1::request::route_of(host, target) {
            Ok(r) => r,
            Err(e) => {
                refuse(&mut answer, e.into());
                return answer;
            }
        };
        answer.host = host.clone();
        answer.path = raw_path.clone();
        let path = match crate::http::path::normalize(&raw_path) {
            Ok(p) => p,
            Err(e) => {
                answer.status = Some(400);
                answer.reason = Some(format!("the path is refused: {}", e.reason));
                return answer;
            }
        };
        answer.path = path.clone();
        let snapshot = self.shared.snapshot.load();
        let Some(m) = snapshot.router.lookup(&host, &path) else {
            answer.status = Some(404);
            answer.reason = Some(if snapshot.router.has_host(&host) {
                format!("no route of {host:?} matches {path:?}")
            } else {
                format!("no route for host {host:?}")
            });
            return answer;
        };
        answer.matched = true;
        answer.prefix = m.entry.written.clone();
        let security = &m.entry.route.security;
        answer.policy = Some(policy(security));
        answer.backend = Some(m.entry.route.backend.type_name().into());
        answer.headers = m.entry.site.describe_headers();
        // Policy first, in the data path's order: addresses, then methods.
        if let Some(client) = client {
            match client.parse::<std::net::IpAddr>() {
                Ok(ip) if !security.allows_ip(ip) => {
                    answer.status = Some(403);
                    answer.reason = Some(format!("client address {ip} not allowed"));
                    return answer;
                }
                Ok(_) => {}
                Err(_) => {
                    answer.reason = Some(format!("{client:?} is not an IP address; not checked"));
                }
            }
        }
        let method = match crate::http::Method::parse(method.unwrap_or("GET")) {
            Some(m) => m,
            None => {
                answer.status = Some(400);
                answer.reason = Some("malformed method".into());
                return answer;
            }
        };
        if let Some(methods) = &security.allowed_methods {
            if !methods.contains(&method) {
                answer.status = Some(405);
                answer.reason = Some(format!(
                    "{method} is not among the route's allowed_methods ({})",
                    methods.allow_header()
                ));
                return answer;
            }
        }
        match (&m.entry.route.backend, m.target()) {
            (Backend::File(_), _) if !matches!(method, Method::Get | Method::Head) => {
                answer.status = Some(405);
                answer.reason = Some("a File route serves GET and HEAD".into());
            }
            (Backend::File(_), Target::NotFound) => {
                answer.status = Some(404);
                answer.reason = Some(format!(
                    "the route serves one file at exactly {:?}; anything below it is 404",
                    m.entry.prefix.as_deref().unwrap_or("/")
                ));
            }
            (Backend::File(f), target) => match crate::files::probe(&m, f) {
                Ok(file) => {
                    answer.status = Some(200);
                    answer.resolved = Some(file.display().to_string());
                }
                Err(e) => {
                    answer.resolved = target.display().map(|p| p.display().to_string());
                    refuse(&mut answer, e);
                }
            },
            (Backend::Proxy(p), Target::Upstream(path)) => {
                let query = query.map(|q| format!("?{q}")).unwrap_or_default();
                answer.resolved = Some(match &p.target {
                    ProxyTarget::Url(u) => {
                        let scheme = match u.scheme {
                            Scheme::Http => "http",
                            Scheme::Https => "https",
                        };
                        let host = if u.host.contains(':') {
                            format!("[{}]", u.host)
                        } else {
                            u.host.clone()
                        };
                        format!("{scheme}://{host}:{}{path}{query}", u.port)
                    }
                    ProxyTarget::Group(name) => format!("upstream {name:?}: {path}{query}"),
                });
                answer.upstream = m.entry.group.as_deref().map(super::upstreams::explain);
            }
            (Backend::Proxy(_), _) => {}
            (Backend::Redirect(r), _) => {
                let from = crate::http::redirect::RedirectFrom {
                    https: false,
                    host: &host,
                    path: &path,
                    rest: m.relative,
                    query: query.as_deref(),
                };
                answer.status = Some(r.status);
                answer.resolved = r.url.render(&from);
                if answer.resolved.is_none() {
                    answer.status = Some(400);
                    answer.reason = Some("the redirect needs a valid host name".into());
                }
            }
            (Backend::Respond(r), _) => {
                answer.status = Some(r.status);
                answer.resolved = Some(format!("{} bytes of {}", r.body.len(), r.content_type));
            }
        }
        let names = |list: &[crate::http::encoding::Encoding]| {
            list.iter()
                .map(|e| e.token())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut encoding = Vec::new();
        let accept = accept_encoding.map(str::as_bytes);
        let ranked = |list| crate::http::encoding::ranked(accept, list);
        if let Backend::File(f) = &m.entry.route.backend {
            if !f.site.precompressed.is_empty() {
                let list = names(&f.site.precompressed);
                encoding.push(format!("precompressed variants: {list}"));
                if accept.is_some() {
                    let takes: Vec<_> = ranked(&f.site.precompressed)
                        .into_iter()
                        .flatten()
                        .collect();
                    encoding.push(match takes.as_slice() {
                        [] => "this request: none of them".to_string(),
                        list => format!(
                            "this request: the first of {} whose file exists",
                            names(list)
                        ),
                    });
                }
            }
        }
        if let Some(c) = &m.entry.site.compress {
            encoding.push(format!("compressed on the fly: {}", names(&c.encodings)));
            if accept.is_some() {
                encoding.push(match ranked(&c.encodings)[0] {
                    Some(e) => format!(
                        "this request: {} (a 2xx of a listed type, {} bytes or more)",
                        e.token(),
                        c.min_size
                    ),
                    None => "this request: not compressed".to_string(),
                });
            }
        }
        if !encoding.is_empty() {
            answer.encoding = Some(encoding.join("; "));
        }
        if let Backend::File(f) = &m.entry.route.backend {
            if let Some(fallback) = &f.site.fallback {
                answer.fallback = Some(format!("{fallback} ({})", f.site.fallback_status));
            }
        }
        answer
    }

    /// Checks `text` as the file `file`, or the daemon's own config file, on a helper thread
    /// that answers `reply` itself. The daemon reads no other file for a check: the client
    /// sends the text, read with its own permissions.
    pub(super) fn check(
        &self,
        file: Option<PathBuf>,
        text: Option<Vec<u8>>,
        reply: Sender<Response>,
    ) {
        let path = file.unwrap_or_else(|| self.config_path.clone());
        let mut report = CheckReport {
            ok: false,
            file: path.display().to_string(),
            errors: Vec::new(),
            changes: RouteChanges::default(),
            restart_required: Vec::new(),
        };
        let read = match text {
            Some(t) => Ok(t),
            None if path == self.config_path => build::read_config(&path),
            None => Err(
                "send the file's text to check it (proxyctl does); the daemon reads \
                         only its own config file"
                    .to_string(),
            ),
        };
        let bytes = match read {
            Ok(b) => b,
            Err(e) => {
                report.errors.push(format!("{}: {e}", path.display()));
                let _ = reply.send(proto::ok(&report));
                return;
            }
        };
        let Some(slot) = BuildSlot::take(&self.builds) else {
            let _ = reply.send(Response::Error {
                error: format!(
                    "busy: {MAX_BUILDS} config builds are running; try again in a few seconds"
                ),
            });
            return;
        };
        let current = self.shared.snapshot.load_full();
        let spawned = std::thread::Builder::new()
            .name("zcs-check".into())
            .spawn(move || {
                // A check builds with counters and sessions of its own: it must not touch the
                // running ones.
                let scratch = crate::metrics::Registry::new(1);
                let sessions = crate::tls::sessions::Sessions::new();
                let fleet = crate::group::Fleet::default();
                match build::prepare(&path, &bytes, &current, &scratch, &fleet, &sessions) {
                    Ok(prepared) => {
                        report.ok = true;
                        report.changes = prepared.changes;
                        report.restart_required = prepared.restart_required;
                    }
                    Err(errors) => {
                        report.errors = errors.0.iter().map(ToString::to_string).collect()
                    }
                }
                drop(slot);
                let _ = reply.send(proto::ok(&report));
            });
        if let Err(e) = spawned {
            log::warn!("cannot start a check thread: {e}");
        }
    }
}

/// The policy in force, as the admin protocol shows it.
pub fn policy(s: &RouteSecurity) -> Policy {
    let nets = |set: &crate::security::IpSet| set.nets().iter().map(ToString::to_string).collect();
    Policy {
        allowed_methods: s.allowed_methods.as_ref().map(|m| {
            m.allow_header()
                .split(", ")
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect()
        }),
        allowed_ips: nets(&s.allowed_ips),
        denied_ips: nets(&s.denied_ips),
        rate_limit_requests_per_min: s.rate_limit_requests_per_min,
        max_request_body_size: s.max_request_body_size,
        max_chunked_body_size: s.max_chunked_body_size,
        max_request_header_size: s.max_request_header_size,
        client_header_timeout_secs: s.client_header_timeout.as_secs(),
        client_body_timeout_secs: s.client_body_timeout.as_secs(),
        backend_connect_timeout_secs: s.backend_connect_timeout.as_secs(),
        backend_response_timeout_secs: s.backend_response_timeout.as_secs(),
        max_idle_connections_per_host: s.max_idle_connections_per_host,
        idle_connection_timeout_secs: s.idle_connection_timeout.as_secs(),
        trusted_proxies: nets(&s.trusted_proxies),
        allow_underscores_in_headers: s.allow_underscores_in_headers,
        allowed_upgrades: s.allowed_upgrades.clone(),
        rate_limit_ipv6_prefix: s.rate_limit_ipv6_prefix,
    }
}

/// A Proxy route's target as `routes` shows it: its url, or its group and base path.
fn proxy_target(p: &crate::config::ProxyBackend) -> String {
    match &p.target {
        ProxyTarget::Url(u) => u.to_string(),
        ProxyTarget::Group(name) => format!("upstream {name:?} {}", p.base_path),
    }
}

/// What an `explain` asks about the request besides its host and target.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ExplainRequest<'a> {
    /// Default `GET`.
    pub(super) method: Option<&'a str>,
    /// Checked against the route's addresses when given.
    pub(super) client: Option<&'a str>,
    /// Which coding the request would get, when given.
    pub(super) accept_encoding: Option<&'a str>,
}

//! The Prometheus text format (version 0.0.4) of [`Stats`], through `prometheus-client`.
//!
//! Rendered on the control thread for each scrape of `[admin] metrics_listen`, from the same
//! sums `proxyctl stats` shows; the small server in [`crate::control::scrape`] only moves bytes.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use proxyctl::proto::{GroupInfo, ServerInfo, Stats, LATENCY_BOUNDS_US};

/// The `Content-Type` of what [`render`] returns.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Renders every figure of `stats` as Prometheus text.
pub fn render(stats: &Stats) -> String {
    let mut registry = Registry::with_prefix("zerocopy");
    registry.register_collector(Box::new(StatsCollector(stats.clone())));
    let mut out = String::new();
    match prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
        Ok(()) => out,
        Err(_) => String::new(),
    }
}

#[derive(Debug)]
struct StatsCollector(Stats);

type Labels = Vec<(&'static str, String)>;

impl StatsCollector {
    /// HTTP/2 towards clients.
    fn http2(e: &mut DescriptorEncoder, h: &proxyctl::proto::Http2Stats) -> std::fmt::Result {
        let none = Labels::new;
        let by = |key: &'static str, rows: [(&str, u64); 2]| -> Vec<(Labels, u64)> {
            rows.iter()
                .map(|(v, n)| (vec![(key, v.to_string())], *n))
                .collect()
        };
        Self::gauge(
            e,
            "http2_connections_open",
            "HTTP/2 client connections open now.",
            &[(none(), h.connections_open)],
        )?;
        Self::counter(
            e,
            "http2_connections",
            "HTTP/2 client connections since start.",
            &[(none(), h.connections_total)],
        )?;
        Self::gauge(
            e,
            "http2_streams_open",
            "HTTP/2 streams with a handler now.",
            &[(none(), h.streams_open)],
        )?;
        Self::counter(
            e,
            "http2_streams",
            "HTTP/2 streams (requests) since start.",
            &[(none(), h.streams_total)],
        )?;
        Self::counter(
            e,
            "http2_streams_refused",
            "HTTP/2 streams refused because max_concurrent_streams handlers were in flight.",
            &[(none(), h.streams_refused)],
        )?;
        Self::counter(
            e,
            "http2_resets",
            "HTTP/2 streams reset while their handler ran, by who reset them.",
            &by(
                "by",
                [("client", h.resets_received), ("daemon", h.resets_sent)],
            ),
        )?;
        Self::counter(
            e,
            "http2_goaway",
            "GOAWAY frames sent: graceful (drain, idle, request cap) or for a client's error.",
            &by(
                "kind",
                [("graceful", h.goaway_graceful), ("error", h.goaway_error)],
            ),
        )
    }

    /// One family of counters or gauges (`kind`), a sample per row.
    fn family(
        e: &mut DescriptorEncoder,
        kind: MetricType,
        name: &str,
        help: &str,
        rows: &[(Labels, u64)],
    ) -> std::fmt::Result {
        let mut m = e.encode_descriptor(name, help, None, kind)?;
        for (labels, v) in rows {
            let sample = m.encode_family(labels)?;
            match kind {
                MetricType::Gauge => ConstGauge::new(*v).encode(sample)?,
                _ => ConstCounter::new(*v).encode(sample)?,
            }
        }
        Ok(())
    }

    fn counter(
        e: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        rows: &[(Labels, u64)],
    ) -> std::fmt::Result {
        Self::family(e, MetricType::Counter, name, help, rows)
    }

    fn gauge(
        e: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        rows: &[(Labels, u64)],
    ) -> std::fmt::Result {
        Self::family(e, MetricType::Gauge, name, help, rows)
    }
}

impl StatsCollector {
    /// The upstream groups' series: per server and per group.
    fn groups(e: &mut DescriptorEncoder, groups: &[GroupInfo]) -> std::fmt::Result {
        let servers: Vec<(&GroupInfo, &ServerInfo)> = groups
            .iter()
            .flat_map(|g| g.servers.iter().map(move |s| (g, s)))
            .collect();
        let label = |g: &GroupInfo, s: &ServerInfo| -> Labels {
            vec![("group", g.name.clone()), ("server", s.address.clone())]
        };
        let per_server = |value: fn(&ServerInfo) -> u64| -> Vec<(Labels, u64)> {
            servers
                .iter()
                .map(|(g, s)| (label(g, s), value(s)))
                .collect()
        };
        const STATES: [&str; 5] = ["healthy", "unhealthy", "ejected", "draining", "disabled"];
        let state: Vec<(Labels, u64)> = servers
            .iter()
            .flat_map(|(g, s)| {
                STATES.iter().map(move |st| {
                    let mut l = label(g, s);
                    l.push(("state", st.to_string()));
                    (l, u64::from(s.state == *st))
                })
            })
            .collect();
        Self::gauge(
            e,
            "upstream_server_state",
            "1 for the state each upstream server is in now.",
            &state,
        )?;
        Self::gauge(
            e,
            "upstream_server_usable",
            "1 when a request may go to the server now.",
            &per_server(|s| u64::from(s.usable)),
        )?;
        Self::gauge(
            e,
            "upstream_server_in_flight",
            "Requests in flight on the server now (all workers).",
            &per_server(|s| s.in_flight),
        )?;
        Self::counter(
            e,
            "upstream_server_requests",
            "Attempts sent to the server.",
            &per_server(|s| s.requests),
        )?;
        let failures: Vec<(Labels, u64)> = servers
            .iter()
            .flat_map(|(g, s)| {
                s.failures_by_kind.iter().map(move |(kind, n)| {
                    let mut l = label(g, s);
                    l.push(("kind", kind.clone()));
                    (l, *n)
                })
            })
            .collect();
        Self::counter(
            e,
            "upstream_server_failures",
            "Failed attempts on the server, by kind.",
            &failures,
        )?;
        Self::counter(
            e,
            "upstream_server_ejections",
            "Passive (outlier) ejections of the server.",
            &per_server(|s| s.ejections),
        )?;
        let transitions: Vec<(Labels, u64)> = servers
            .iter()
            .flat_map(|(g, s)| {
                [
                    ("healthy", s.became_healthy),
                    ("unhealthy", s.became_unhealthy),
                ]
                .into_iter()
                .map(move |(to, n)| {
                    let mut l = label(g, s);
                    l.push(("to", to.to_string()));
                    (l, n)
                })
            })
            .collect();
        Self::counter(
            e,
            "upstream_server_health_transitions",
            "Changes of the active checks' verdict, by the state changed to.",
            &transitions,
        )?;
        Self::counter(
            e,
            "upstream_server_checks",
            "Active health checks run.",
            &per_server(|s| s.checks),
        )?;
        let mut m = e.encode_descriptor(
            "upstream_server_check_duration_seconds",
            "Time spent in active health checks, all together.",
            None,
            MetricType::Counter,
        )?;
        for (g, s) in &servers {
            let labels = label(g, s);
            let sample = m.encode_family(&labels)?;
            ConstCounter::new(s.check_micros_total as f64 / 1e6).encode(sample)?;
        }
        let group = |g: &GroupInfo| -> Labels { vec![("group", g.name.clone())] };
        let retries: Vec<(Labels, u64)> = groups
            .iter()
            .flat_map(|g| {
                g.retries.iter().map(move |(reason, n)| {
                    let mut l = group(g);
                    l.push(("reason", reason.clone()));
                    (l, *n)
                })
            })
            .collect();
        Self::counter(
            e,
            "upstream_retries_on_another_server",
            "Requests tried again on another server of the group, by reason.",
            &retries,
        )?;
        let per_group = |value: fn(&GroupInfo) -> u64| -> Vec<(Labels, u64)> {
            groups.iter().map(|g| (group(g), value(g))).collect()
        };
        Self::counter(
            e,
            "upstream_retry_budget_exhausted",
            "Retries refused because the group's retry budget was spent.",
            &per_group(|g| g.retry_budget_exhausted),
        )?;
        Self::gauge(
            e,
            "upstream_group_failing_open",
            "1 while no server of the group is usable and requests go to all regardless of health.",
            &per_group(|g| u64::from(g.failing_open)),
        )?;
        Self::counter(
            e,
            "upstream_group_failed_open_requests",
            "Requests sent while the group failed open.",
            &per_group(|g| g.failed_open),
        )?;
        Self::counter(
            e,
            "upstream_group_no_server",
            "Requests answered 503 because no server of the group could take them.",
            &per_group(|g| g.no_server),
        )
    }
}

impl Collector for StatsCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.0;
        let none = Labels::new;
        Self::gauge(
            &mut e,
            "uptime_seconds",
            "Seconds since the daemon started.",
            &[(none(), s.uptime_ms / 1000)],
        )?;
        Self::gauge(
            &mut e,
            "connections_open",
            "Client connections open now.",
            &[(none(), s.connections.open)],
        )?;
        Self::gauge(
            &mut e,
            "connections_parked",
            "Open client connections that are idle and parked (no task).",
            &[(none(), s.connections.parked)],
        )?;
        Self::counter(
            &mut e,
            "connections",
            "Client connections accepted.",
            &[(none(), s.connections.total)],
        )?;
        Self::counter(
            &mut e,
            "connections_over_cap",
            "Connections closed at accept because max_concurrent_connections were open.",
            &[(none(), s.connections.over_cap)],
        )?;
        let cache = &s.file_cache;
        Self::gauge(
            &mut e,
            "file_cache_files",
            "Files held in the workers' file caches.",
            &[(none(), cache.files)],
        )?;
        Self::gauge(
            &mut e,
            "file_cache_bytes",
            "Bytes of file content held in the workers' file caches.",
            &[(none(), cache.bytes)],
        )?;
        Self::counter(
            &mut e,
            "file_cache_hits",
            "Requests of sendfile-mode routes answered from a file cache.",
            &[(none(), cache.hits)],
        )?;
        Self::counter(
            &mut e,
            "file_cache_misses",
            "Requests of sendfile-mode routes whose file was opened on disk while the cache was on.",
            &[(none(), cache.misses)],
        )?;
        Self::counter(
            &mut e,
            "file_io_offloaded",
            "File opens, reads, sends and cache checks that would have waited for the disk, done on a file I/O thread.",
            &[(none(), cache.offloaded)],
        )?;
        Self::http2(&mut e, &s.http2)?;
        let t = &s.tracing;
        Self::counter(
            &mut e,
            "tracing_spans_exported",
            "Spans the OTLP collector accepted.",
            &[(none(), t.spans_exported)],
        )?;
        Self::counter(
            &mut e,
            "tracing_spans_dropped",
            "Spans not exported: the queue was full (export_queue_size), or the collector did not take their batch.",
            &[
                (vec![("reason", "queue_full".to_string())], t.spans_dropped_queue_full),
                (vec![("reason", "export_failed".to_string())], t.spans_dropped_export_failed),
            ],
        )?;
        Self::counter(
            &mut e,
            "tracing_export_failures",
            "OTLP export requests that failed (unreachable, slow, or an error status).",
            &[(none(), t.export_failures)],
        )?;
        let route = |r: &proxyctl::proto::RouteStats| -> Labels {
            vec![("route", r.name()), ("backend", r.backend.clone())]
        };
        let requests: Vec<_> = s.routes.iter().map(|r| (route(r), r.requests)).collect();
        Self::counter(
            &mut e,
            "requests",
            "Requests answered (with any status, or cut off), by route.",
            &requests,
        )?;
        let mut responses = Vec::new();
        for r in &s.routes {
            for (class, n) in r.responses.classes() {
                let mut labels = route(r);
                labels.push(("class", class.into()));
                responses.push((labels, n));
            }
        }
        Self::counter(
            &mut e,
            "responses",
            "Responses by route and status class.",
            &responses,
        )?;
        let bytes: Vec<_> = s.routes.iter().map(|r| (route(r), r.bytes_sent)).collect();
        Self::counter(
            &mut e,
            "sent_bytes",
            "Bytes written to clients (heads and bodies), by route.",
            &bytes,
        )?;
        {
            let mut m = e.encode_descriptor(
                "request_duration_seconds",
                "Time from a request's first byte to the end of its response, by route.",
                None,
                MetricType::Histogram,
            )?;
            for r in &s.routes {
                let labels = route(r);
                let buckets: Vec<(f64, u64)> = r
                    .latency
                    .counts
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| {
                        let bound = LATENCY_BOUNDS_US
                            .get(i)
                            .map_or(f64::INFINITY, |&us| us as f64 / 1e6);
                        (bound, c)
                    })
                    .collect();
                m.encode_family(&labels)?.encode_histogram::<Labels>(
                    r.latency.sum_us as f64 / 1e6,
                    r.latency.count(),
                    &buckets,
                    None,
                )?;
            }
        }
        let upstream = |u: &proxyctl::proto::UpstreamStats| -> Labels {
            vec![("upstream", u.upstream.clone())]
        };
        for (name, help, value) in [
            (
                "upstream_connects",
                "New upstream connections opened.",
                (|u| u.connects) as fn(&proxyctl::proto::UpstreamStats) -> u64,
            ),
            (
                "upstream_reuses",
                "Requests sent over a pooled upstream connection.",
                |u| u.reuses,
            ),
            (
                "upstream_requests",
                "Requests sent to the upstream, over new or pooled connections \
                 (1000 * rate(upstream_connects) / rate(upstream_requests): connections opened \
                 per 1,000 requests).",
                |u| u.requests(),
            ),
            (
                "upstream_retries",
                "Requests retried on a fresh connection after a pooled one failed.",
                |u| u.retries,
            ),
            (
                "upstream_failures",
                "Upstream exchanges that failed on the upstream's side.",
                |u| u.failures,
            ),
        ] {
            let rows: Vec<_> = s
                .upstreams
                .iter()
                .map(|u| (upstream(u), value(u)))
                .collect();
            Self::counter(&mut e, name, help, &rows)?;
        }
        Self::groups(&mut e, &s.groups)?;
        Self::counter(
            &mut e,
            "reloads",
            "Config reloads by result.",
            &[
                (vec![("result", "succeeded".into())], s.reloads.succeeded),
                (vec![("result", "failed".into())], s.reloads.failed),
            ],
        )?;
        if let Some(tls) = &s.tls {
            Self::counter(
                &mut e,
                "tls_handshakes",
                "Completed TLS handshakes.",
                &[(none(), tls.handshakes)],
            )?;
            Self::counter(
                &mut e,
                "ktls_connections",
                "TLS connections by where their records ran: kernel (kTLS), fallback \
                 (userspace after kTLS was not possible), refused.",
                &[
                    (vec![("outcome", "kernel".into())], tls.ktls),
                    (vec![("outcome", "fallback".into())], tls.ktls_fallback),
                    (vec![("outcome", "refused".into())], tls.ktls_refused),
                ],
            )?;
        }
        Self::counter(
            &mut e,
            "log_lines_dropped",
            "Log lines dropped because the logger's channel was full.",
            &[(none(), s.log_lines_dropped)],
        )?;
        let worker = |w: &proxyctl::proto::WorkerStats| vec![("worker", w.worker.to_string())];
        let open: Vec<_> = s
            .workers
            .iter()
            .map(|w| (worker(w), w.connections))
            .collect();
        Self::gauge(
            &mut e,
            "worker_connections_open",
            "Client connections open now, by worker.",
            &open,
        )?;
        let reqs: Vec<_> = s.workers.iter().map(|w| (worker(w), w.requests)).collect();
        Self::counter(
            &mut e,
            "worker_requests",
            "Requests answered, by worker.",
            &reqs,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxyctl::proto::{Histogram, RouteStats, StatusClasses};

    #[test]
    fn stats_render_as_counters_gauges_and_a_histogram() {
        let mut counts = vec![0; LATENCY_BOUNDS_US.len() + 1];
        counts[0] = 2;
        counts[4] = 1;
        let stats = Stats {
            uptime_ms: 5_500,
            routes: vec![RouteStats {
                host: "example.com".into(),
                prefix: Some("/api".into()),
                backend: "Proxy".into(),
                requests: 3,
                responses: StatusClasses {
                    success: 2,
                    server_error: 1,
                    ..StatusClasses::default()
                },
                bytes_sent: 700,
                latency: Histogram {
                    counts,
                    sum_us: 2_100,
                },
            }],
            ..Stats::default()
        };
        let text = render(&stats);
        for line in [
            "# TYPE zerocopy_requests_total counter",
            "zerocopy_requests_total{route=\"example.com/api\",backend=\"Proxy\"} 3",
            "zerocopy_responses_total{route=\"example.com/api\",backend=\"Proxy\",class=\"5xx\"} 1",
            "zerocopy_uptime_seconds 5",
            "# TYPE zerocopy_request_duration_seconds histogram",
            "zerocopy_request_duration_seconds_bucket{route=\"example.com/api\",backend=\"Proxy\",le=\"0.0001\"} 2",
            "zerocopy_request_duration_seconds_bucket{route=\"example.com/api\",backend=\"Proxy\",le=\"0.0025\"} 3",
            "zerocopy_request_duration_seconds_bucket{route=\"example.com/api\",backend=\"Proxy\",le=\"+Inf\"} 3",
            "zerocopy_request_duration_seconds_count{route=\"example.com/api\",backend=\"Proxy\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\nnot in:\n{text}");
        }
    }
}

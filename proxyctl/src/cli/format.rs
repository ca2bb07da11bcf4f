//! Human-readable rendering of the daemon's answers.
//!
//! Pure functions from a decoded payload to the text `proxyctl` prints; every returned string
//! ends with a newline. `--json` output does not pass through here.

use proxyctl::proto::{
    CheckReport, DrainProgress, Explain, Histogram, ListenerStatus, Policy, ReloadReport,
    RouteChanges, RouteInfo, RouteStats, Stats, Status, UpgradeProgress, UpgradeReport,
};

/// The daemon's default `security.max_request_body_size`; the route summary omits it.
pub const DEFAULT_MAX_REQUEST_BODY_SIZE: u64 = 10 * 1024 * 1024;
/// The daemon's default `security.max_chunked_body_size`; the route summary omits it.
pub const DEFAULT_MAX_CHUNKED_BODY_SIZE: u64 = 10 * 1024 * 1024;
/// The daemon's default `security.max_request_header_size`; the route summary omits it.
pub const DEFAULT_MAX_REQUEST_HEADER_SIZE: usize = 8 * 1024;

/// `proxyctl status`: a two-column table.
pub fn status(s: &Status) -> String {
    let mut rows = vec![
        ("state", s.state.as_str().to_string()),
        ("pid", s.pid.to_string()),
        ("uptime", duration(s.uptime_secs)),
        ("generation", s.generation.to_string()),
        ("config", s.config_path.clone()),
        ("workers", format!("{} ({})", s.workers, s.io_driver)),
        ("connections", connections(s)),
        ("in flight", s.in_flight.to_string()),
        ("last reload", last_reload(s.last_reload.as_ref())),
    ];
    if s.http2_connections > 0 {
        rows.insert(
            7,
            (
                "http/2",
                format!(
                    "{} connections, {} streams open",
                    s.http2_connections, s.http2_streams_open
                ),
            ),
        );
    }
    if !s.version.is_empty() {
        rows.insert(2, ("version", s.version.clone()));
        rows.insert(4, ("started", utc_time(s.started_at_unix_ms)));
    }
    for (i, l) in s.listeners.iter().enumerate() {
        rows.push((if i == 0 { "listeners" } else { "" }, listener(l)));
    }
    if let Some(u) = &s.last_upgrade {
        rows.push(("last upgrade", last_upgrade(u)));
    }
    if let Some(tls) = &s.tls {
        rows.push(("tls", tls.record_layer.clone()));
        rows.push(("handshakes", tls.handshakes.to_string()));
        rows.push((
            "ktls",
            format!(
                "{} on kernel TLS, {} fell back to userspace, {} refused",
                tls.ktls, tls.ktls_fallback, tls.ktls_refused
            ),
        ));
    }
    two_columns(&rows)
}

fn listener(l: &ListenerStatus) -> String {
    let mut out = format!("{} {}", l.address, if l.tls { "https" } else { "http" });
    if l.http2 {
        out += "+h2";
    }
    if let Some(port) = l.redirect_to_https {
        out += &format!(", redirects to https port {port}");
    }
    if l.proxy_protocol != "off" {
        out += &format!(
            ", PROXY protocol {} ({} refused)",
            l.proxy_protocol, l.proxy_refused
        );
    }
    out += &format!(
        ", {} open, {} accepted, sockets {}",
        l.connections, l.accepted, l.sockets
    );
    out
}

fn last_upgrade(u: &UpgradeReport) -> String {
    let new = u.new_pid.map_or("?".to_string(), |p| p.to_string());
    match &u.error {
        None => format!(
            "ok at {}: pid {} -> pid {new} ({})",
            utc_time(u.at_unix_ms),
            u.old_pid,
            u.binary
        ),
        Some(e) => format!(
            "FAILED at {}: {} (pid {new}): {e}; pid {} served on",
            utc_time(u.at_unix_ms),
            u.binary,
            u.old_pid
        ),
    }
}

/// `proxyctl upgrade` while the new process starts.
pub fn upgrade_progress(p: &UpgradeProgress) -> String {
    if p.new_pid == 0 {
        return format!(
            "upgrade: starting the new binary ({}s left)\n",
            p.seconds_left
        );
    }
    format!(
        "upgrade: new pid {} {} ({}s left)\n",
        p.new_pid, p.phase, p.seconds_left
    )
}

/// `proxyctl upgrade` when the new process serves.
pub fn upgrade(u: &UpgradeReport) -> String {
    format!(
        "upgraded: pid {} serves ({}{}); pid {} drains\n",
        u.new_pid.map_or("?".to_string(), |p| p.to_string()),
        u.binary,
        u.new_version
            .as_ref()
            .map_or(String::new(), |v| format!(", version {v}")),
        u.old_pid
    )
}

fn connections(s: &Status) -> String {
    let mut out = s.connections.to_string();
    if s.idle_parked > 0 {
        out += &format!(" ({} idle and parked)", s.idle_parked);
    }
    if s.connections_over_cap > 0 {
        out += &format!(
            " ({} closed at accept over max_concurrent_connections)",
            s.connections_over_cap
        );
    }
    out
}

/// `proxyctl reload` when the reload succeeded (or had nothing to do).
pub fn reload(r: &ReloadReport) -> String {
    let mut out = if r.unchanged {
        format!("unchanged: generation {}\n", r.generation)
    } else {
        format!(
            "reloaded: generation {}\n{}",
            r.generation,
            changes(&r.changes)
        )
    };
    out.push_str(&restart_required(&r.restart_required));
    out
}

/// `proxyctl reload` when the daemon refused the new config: for stderr.
pub fn reload_failure(r: &ReloadReport) -> String {
    let mut out = String::from("reload failed:\n");
    match r.error.as_deref().map(str::trim).filter(|e| !e.is_empty()) {
        Some(error) => {
            for line in error.lines() {
                out.push_str(&format!("  {line}\n"));
            }
        }
        None => out.push_str("  (the daemon gave no reason)\n"),
    }
    out.push_str(&format!("still serving generation {}\n", r.generation));
    out
}

/// One progress line of `proxyctl drain`.
pub fn drain_progress(p: &DrainProgress) -> String {
    format!(
        "draining: {} connections, {} in flight, {}s left\n",
        p.connections, p.in_flight, p.seconds_left
    )
}

/// The last line of `proxyctl drain`.
pub fn drain_finished(_: &DrainProgress) -> String {
    "stopped\n".to_string()
}

/// `proxyctl routes`: one aligned row per route.
pub fn routes(routes: &[RouteInfo]) -> String {
    if routes.is_empty() {
        return "no routes\n".to_string();
    }
    let rows: Vec<Vec<String>> = routes
        .iter()
        .map(|r| {
            vec![
                r.host.clone(),
                r.prefix.clone().unwrap_or_else(|| "*".to_string()),
                r.backend.clone(),
                r.target.clone(),
                policy_summary(&r.policy),
            ]
        })
        .collect();
    table(&["HOST", "PREFIX", "BACKEND", "TARGET", "POLICY"], &rows)
}

/// A route's policy on one line: only what differs from the defaults, `-` when nothing does.
pub fn policy_summary(p: &Policy) -> String {
    let mut parts = Vec::new();
    if let Some(methods) = &p.allowed_methods {
        parts.push(format!("methods={}", list_or(methods, ",", "none")));
    }
    if !p.allowed_ips.is_empty() {
        parts.push(format!("ips={}", p.allowed_ips.join(",")));
    }
    if !p.denied_ips.is_empty() {
        parts.push(format!("deny={}", p.denied_ips.join(",")));
    }
    if p.rate_limit_requests_per_min > 0 {
        parts.push(format!("rate={}/min", p.rate_limit_requests_per_min));
    }
    if p.max_request_body_size != DEFAULT_MAX_REQUEST_BODY_SIZE {
        parts.push(format!("body={}", p.max_request_body_size));
    }
    if p.max_chunked_body_size != DEFAULT_MAX_CHUNKED_BODY_SIZE {
        parts.push(format!("chunked={}", p.max_chunked_body_size));
    }
    if p.max_request_header_size != DEFAULT_MAX_REQUEST_HEADER_SIZE {
        parts.push(format!("header={}", p.max_request_header_size));
    }
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join(" ")
    }
}

/// A route's whole policy, one setting per indented line.
pub fn policy_lines(p: &Policy) -> String {
    let methods = match &p.allowed_methods {
        Some(m) => list_or(m, ", ", "none"),
        None => "any".to_string(),
    };
    let rate = match p.rate_limit_requests_per_min {
        0 => "unlimited".to_string(),
        n => format!("{n} requests/min"),
    };
    let rows = [
        ("methods", methods),
        ("allowed ips", list_or(&p.allowed_ips, ", ", "any")),
        ("denied ips", list_or(&p.denied_ips, ", ", "none")),
        ("rate limit", rate),
        ("max body", format!("{} bytes", p.max_request_body_size)),
        (
            "max chunked body",
            format!("{} bytes", p.max_chunked_body_size),
        ),
        ("max header", format!("{} bytes", p.max_request_header_size)),
        (
            "header timeout",
            format!("{}s", p.client_header_timeout_secs),
        ),
        ("body timeout", format!("{}s", p.client_body_timeout_secs)),
        (
            "connect timeout",
            format!("{}s", p.backend_connect_timeout_secs),
        ),
        (
            "response timeout",
            format!("{}s", p.backend_response_timeout_secs),
        ),
        (
            "idle backend pool",
            format!(
                "{} per host, closed after {}s",
                p.max_idle_connections_per_host, p.idle_connection_timeout_secs
            ),
        ),
        ("trusted proxies", list_or(&p.trusted_proxies, ", ", "none")),
        ("upgrades", list_or(&p.allowed_upgrades, ", ", "none")),
    ];
    indent(&two_columns(&rows), "  ")
}

/// `proxyctl explain HOST PATH`.
pub fn explain(e: &Explain) -> String {
    if !e.matched {
        let reason = e
            .reason
            .clone()
            .unwrap_or_else(|| format!("nothing matches {} {}", e.host, e.path));
        return match e.status {
            Some(status) => format!("{status}: {reason}\n"),
            None => format!("no route: {reason}\n"),
        };
    }
    let mut out = format!(
        "{} {} -> {} route {}: {}\n",
        e.host,
        e.path,
        e.backend.as_deref().unwrap_or("?"),
        e.prefix.as_deref().unwrap_or("*"),
        e.resolved.as_deref().unwrap_or("-"),
    );
    match (e.status, &e.reason) {
        (Some(status), Some(reason)) => out.push_str(&format!("answer: {status}: {reason}\n")),
        (Some(status), None) => out.push_str(&format!("answer: {status}\n")),
        (None, Some(reason)) => out.push_str(&format!("note: {reason}\n")),
        (None, None) => {}
    }
    if let Some(u) = &e.upstream {
        out.push_str(&super::upstreams::explain(u));
    }
    for h in &e.headers {
        out.push_str(&format!("header: {h}\n"));
    }
    if let Some(enc) = &e.encoding {
        out.push_str(&format!("encoding: {enc}\n"));
    }
    if let Some(f) = &e.fallback {
        out.push_str(&format!("fallback: {f}\n"));
    }
    if let Some(policy) = &e.policy {
        out.push_str("policy:\n");
        out.push_str(&policy_lines(policy));
    }
    out
}

/// `proxyctl check [FILE]`.
pub fn check(r: &CheckReport) -> String {
    if !r.ok {
        if r.errors.is_empty() {
            return format!("{}: refused, and the daemon gave no reason\n", r.file);
        }
        return r.errors.iter().map(|e| format!("{e}\n")).collect();
    }
    format!(
        "ok: {}\n{}{}",
        r.file,
        changes(&r.changes),
        restart_required(&r.restart_required)
    )
}

/// Route changes, one `+` (added), `-` (removed) or `~` (changed) line each; `no route changes`
/// when there are none.
pub fn changes(c: &RouteChanges) -> String {
    if c.added.is_empty() && c.removed.is_empty() && c.changed.is_empty() {
        return "no route changes\n".to_string();
    }
    let mut out = String::new();
    for (sign, keys) in [('+', &c.added), ('-', &c.removed), ('~', &c.changed)] {
        for key in keys {
            out.push_str(&format!("{sign} {key}\n"));
        }
    }
    out
}

/// `proxyctl stats`: totals since start, and per route the request rate, p50, p99 and server
/// errors (5xx) per second — over the interval since `earlier` when given (`--watch`), else
/// since start.
pub fn stats(now: &Stats, earlier: Option<&Stats>) -> String {
    let window_ms = match earlier {
        Some(e) => now.uptime_ms.saturating_sub(e.uptime_ms),
        None => now.uptime_ms,
    };
    let secs = (window_ms as f64 / 1000.0).max(0.001);
    let c = &now.connections;
    let mut out = format!(
        "uptime {} · connections: {} open ({} parked), {} accepted, {} over cap · reloads: {} ok, \
         {} failed · log lines dropped: {}\n",
        duration(now.uptime_ms / 1000),
        c.open,
        c.parked,
        c.total,
        c.over_cap,
        now.reloads.succeeded,
        now.reloads.failed,
        now.log_lines_dropped
    );
    let fc = &now.file_cache;
    if fc.files + fc.hits + fc.misses > 0 {
        out.push_str(&format!(
            "file cache: {} files, {} held, {} hits, {} misses\n",
            fc.files,
            bytes(fc.bytes),
            fc.hits,
            fc.misses
        ));
    }
    let h2 = &now.http2;
    if h2.connections_total > 0 {
        out.push_str(&format!(
            "http/2: {} connections open ({} since start), {} streams ({} open, {} refused); \
             resets {} received, {} sent; GOAWAY {} graceful, {} for errors\n",
            h2.connections_open,
            h2.connections_total,
            h2.streams_total,
            h2.streams_open,
            h2.streams_refused,
            h2.resets_received,
            h2.resets_sent,
            h2.goaway_graceful,
            h2.goaway_error
        ));
    }
    if let Some(tls) = &now.tls {
        out.push_str(&format!(
            "tls: {} handshakes; {} on kernel TLS, {} fell back, {} refused\n",
            tls.handshakes, tls.ktls, tls.ktls_fallback, tls.ktls_refused
        ));
    }
    out.push_str(&match earlier {
        Some(_) => format!("REQ/S, P50, P99 and ERR/S (5xx) over the last {secs:.1}s\n"),
        None => "REQ/S, P50, P99 and ERR/S (5xx) since start\n".to_string(),
    });
    out.push('\n');
    let empty = RouteStats::default();
    let rows: Vec<Vec<String>> = now
        .routes
        .iter()
        // The unrouted row only when something went there.
        .filter(|r| !r.host.is_empty() || r.requests > 0)
        .map(|r| {
            let before = earlier
                .and_then(|e| {
                    e.routes
                        .iter()
                        .find(|b| b.host == r.host && b.prefix == r.prefix)
                })
                .unwrap_or(&empty);
            let window: Histogram = match earlier {
                Some(_) => r.latency.since(&before.latency),
                None => r.latency.clone(),
            };
            let requests = r.requests.saturating_sub(before.requests);
            let errors = r
                .responses
                .server_error
                .saturating_sub(before.responses.server_error);
            let classes = r.responses.classes();
            vec![
                r.name(),
                r.backend.clone(),
                r.requests.to_string(),
                rate(requests, secs),
                latency(window.quantile_us(0.5)),
                latency(window.quantile_us(0.99)),
                rate(errors, secs),
                classes[1].1.to_string(),
                classes[2].1.to_string(),
                classes[3].1.to_string(),
                classes[4].1.to_string(),
                bytes(r.bytes_sent),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "ROUTE", "BACKEND", "REQUESTS", "REQ/S", "P50", "P99", "ERR/S", "2XX", "3XX", "4XX",
            "5XX", "SENT",
        ],
        &rows,
    ));
    if !now.upstreams.is_empty() {
        let rows: Vec<Vec<String>> = now
            .upstreams
            .iter()
            .map(|u| {
                let g = now.groups.iter().find(|g| g.name == u.upstream);
                let usable = g.map_or("-".to_string(), |g| {
                    let n = g.servers.iter().filter(|s| s.usable).count();
                    format!("{n}/{}", g.servers.len())
                });
                let elsewhere = g.map_or(0, |g| g.retries.values().sum::<u64>());
                let open = g.map_or(0, |g| g.failed_open);
                let before =
                    earlier.and_then(|e| e.upstreams.iter().find(|b| b.upstream == u.upstream));
                let opened = u
                    .opened_per_1000(before)
                    .map_or("-".to_string(), |n| format!("{n:.1}"));
                vec![
                    u.upstream.clone(),
                    usable,
                    u.connects.to_string(),
                    u.reuses.to_string(),
                    opened,
                    u.retries.to_string(),
                    elsewhere.to_string(),
                    open.to_string(),
                    u.failures.to_string(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &[
                "UPSTREAM",
                "USABLE",
                "CONNECTS",
                "REUSES",
                "OPENED/1K",
                "RETRIES",
                "ELSEWHERE",
                "FAILED-OPEN",
                "FAILURES",
            ],
            &rows,
        ));
    }
    let rows: Vec<Vec<String>> = now
        .workers
        .iter()
        .map(|w| {
            vec![
                w.worker.to_string(),
                w.connections.to_string(),
                w.connections_total.to_string(),
                w.requests.to_string(),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(&["WORKER", "OPEN", "ACCEPTED", "REQUESTS"], &rows));
    out
}

fn rate(n: u64, secs: f64) -> String {
    let r = n as f64 / secs;
    if r >= 100.0 || r == 0.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

/// Microseconds as `250µs`, `1.8ms`, `12ms` or `1.20s`; `-` without observations.
fn latency(us: Option<f64>) -> String {
    match us {
        None => "-".to_string(),
        Some(us) if us < 1_000.0 => format!("{us:.0}µs"),
        Some(us) if us < 10_000.0 => format!("{:.1}ms", us / 1_000.0),
        Some(us) if us < 1_000_000.0 => format!("{:.0}ms", us / 1_000.0),
        Some(us) => format!("{:.2}s", us / 1_000_000.0),
    }
}

/// Bytes with a binary unit: `512B`, `1.5KiB`, `20.0MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1}{unit}")
}

/// Seconds as `1h 2m 3s`, from the largest unit that is not zero.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    if d > 0 {
        format!("{d}d {h}h {m}m {s}s")
    } else if h > 0 {
        format!("{h}h {m}m {s}s")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// Milliseconds since the Unix epoch as an RFC 3339 UTC time, to the second.
pub fn utc_time(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (year, month, day) = civil_date(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn last_reload(r: Option<&ReloadReport>) -> String {
    let Some(r) = r else {
        return "none".to_string();
    };
    let when = format!("at {} ({})", utc_time(r.at_unix_ms), r.trigger);
    let mut out = if r.ok {
        let mut line = format!("ok {when}, generation {}", r.generation);
        if r.unchanged {
            line.push_str(", unchanged");
        }
        line
    } else {
        let error = r.error.as_deref().unwrap_or("").trim();
        let mut lines = error.lines();
        let mut text = format!("FAILED {when}");
        if let Some(first) = lines.next() {
            text.push_str(&format!(": {first}"));
        }
        for line in lines {
            text.push_str(&format!("\n  {line}"));
        }
        text
    };
    if !r.restart_required.is_empty() {
        out.push_str(&format!(
            "\nrestart required: {}",
            r.restart_required.join(", ")
        ));
    }
    out
}

fn restart_required(keys: &[String]) -> String {
    if keys.is_empty() {
        String::new()
    } else {
        format!("restart required: {}\n", keys.join(", "))
    }
}

fn list_or(items: &[String], separator: &str, empty: &str) -> String {
    if items.is_empty() {
        empty.to_string()
    } else {
        items.join(separator)
    }
}

/// Label and value columns; a value's further lines continue under the value column.
fn two_columns(rows: &[(&str, String)]) -> String {
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0)
        + 2;
    let mut out = String::new();
    for (key, value) in rows {
        let mut lines = value.lines();
        let first = lines.next().unwrap_or("");
        out.push_str(format!("{key:<width$}{first}").trim_end());
        out.push('\n');
        for line in lines {
            out.push_str(&format!("{:width$}{line}\n", ""));
        }
    }
    out
}

/// A header and rows, columns two spaces apart, the last one not padded.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(&format!("{cell:<width$}"));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines().map(|l| format!("{prefix}{l}\n")).collect()
}

/// Days since 1970-01-01 as (year, month, day), after Howard Hinnant's `civil_from_days`.
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxyctl::proto::{Lifecycle, RouteKey, UpstreamStats};

    fn default_policy() -> Policy {
        Policy {
            allowed_methods: None,
            allowed_ips: vec![],
            denied_ips: vec![],
            rate_limit_requests_per_min: 0,
            max_request_body_size: DEFAULT_MAX_REQUEST_BODY_SIZE,
            max_chunked_body_size: DEFAULT_MAX_CHUNKED_BODY_SIZE,
            max_request_header_size: DEFAULT_MAX_REQUEST_HEADER_SIZE,
            client_header_timeout_secs: 30,
            client_body_timeout_secs: 30,
            backend_connect_timeout_secs: 10,
            backend_response_timeout_secs: 60,
            max_idle_connections_per_host: 8,
            idle_connection_timeout_secs: 30,
            trusted_proxies: vec![],
            allow_underscores_in_headers: false,
            allowed_upgrades: vec!["websocket".into()],
            rate_limit_ipv6_prefix: 64,
        }
    }

    fn key(host: &str, prefix: Option<&str>) -> RouteKey {
        RouteKey {
            host: host.into(),
            prefix: prefix.map(Into::into),
        }
    }

    fn report(ok: bool) -> ReloadReport {
        ReloadReport {
            ok,
            trigger: "file".into(),
            at_unix_ms: 1_714_564_800_123,
            generation: 4,
            error: None,
            unchanged: false,
            restart_required: vec![],
            changes: RouteChanges::default(),
        }
    }

    fn status_with(last_reload: Option<ReloadReport>) -> Status {
        Status {
            state: Lifecycle::Running,
            pid: 4242,
            uptime_secs: 3723,
            generation: 4,
            config_path: "/etc/zerocopy-server/config.toml".into(),
            workers: 2,
            io_driver: "io_uring".into(),
            connections: 12,
            connections_over_cap: 0,
            idle_parked: 0,
            http2_connections: 0,
            http2_streams_open: 0,
            in_flight: 3,
            last_reload,
            tls: None,
            version: String::new(),
            started_at_unix_ms: 0,
            listeners: Vec::new(),
            last_upgrade: None,
        }
    }

    #[test]
    fn status_shows_listeners_version_and_the_last_upgrade() {
        let mut s = status_with(None);
        s.version = "1.2.3".into();
        s.started_at_unix_ms = 1_714_564_800_000;
        s.listeners = vec![
            ListenerStatus {
                address: "0.0.0.0:80".into(),
                tls: false,
                http2: true,
                proxy_protocol: "off".into(),
                redirect_to_https: Some(443),
                sockets: "inherited".into(),
                connections: 3,
                accepted: 10,
                proxy_refused: 0,
            },
            ListenerStatus {
                address: "[::]:443".into(),
                tls: true,
                http2: false,
                proxy_protocol: "v2".into(),
                redirect_to_https: None,
                sockets: "systemd".into(),
                connections: 1,
                accepted: 2,
                proxy_refused: 4,
            },
        ];
        s.last_upgrade = Some(UpgradeReport {
            ok: false,
            at_unix_ms: 1_714_564_800_000,
            old_pid: 10,
            new_pid: Some(11),
            binary: "/usr/bin/zerocopy-server".into(),
            new_version: None,
            error: Some("the new process exited".into()),
        });
        let out = status(&s);
        assert!(out.contains("version       1.2.3\n"), "{out}");
        assert!(
            out.contains("started       2024-05-01T12:00:00Z\n"),
            "{out}"
        );
        assert!(
            out.contains("listeners     0.0.0.0:80 http+h2, redirects to https port 443, 3 open, 10 accepted, sockets inherited\n"),
            "{out}"
        );
        assert!(
            out.contains("              [::]:443 https, PROXY protocol v2 (4 refused), 1 open, 2 accepted, sockets systemd\n"),
            "{out}"
        );
        assert!(
            out.contains("last upgrade  FAILED at 2024-05-01T12:00:00Z: /usr/bin/zerocopy-server (pid 11): the new process exited; pid 10 served on"),
            "{out}"
        );
        let up = upgrade(&UpgradeReport {
            ok: true,
            new_pid: Some(11),
            old_pid: 10,
            binary: "/b".into(),
            new_version: Some("2".into()),
            ..Default::default()
        });
        assert_eq!(
            up,
            "upgraded: pid 11 serves (/b, version 2); pid 10 drains\n"
        );
    }

    #[test]
    fn status_shows_connections_closed_over_the_cap() {
        let mut s = status_with(None);
        s.connections_over_cap = 5;
        let out = status(&s);
        assert!(
            out.contains("connections  12 (5 closed at accept over max_concurrent_connections)\n"),
            "{out}"
        );
    }

    #[test]
    fn status_shows_parked_connections() {
        let mut s = status_with(None);
        s.idle_parked = 10;
        let out = status(&s);
        assert!(
            out.contains("connections  12 (10 idle and parked)\n"),
            "{out}"
        );
        s.connections_over_cap = 1;
        let out = status(&s);
        assert!(
            out.contains(
                "connections  12 (10 idle and parked) (1 closed at accept over \
                 max_concurrent_connections)\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn status_shows_tls_and_ktls_counts() {
        let mut s = status_with(None);
        s.tls = Some(proxyctl::proto::TlsStatus {
            record_layer: "userspace (kTLS unavailable: no tls module)".into(),
            handshakes: 9,
            ktls: 0,
            ktls_fallback: 7,
            ktls_refused: 2,
        });
        let out = status(&s);
        assert!(
            out.contains("tls          userspace (kTLS unavailable: no tls module)\n"),
            "{out}"
        );
        assert!(out.contains("handshakes   9\n"), "{out}");
        assert!(
            out.contains("ktls         0 on kernel TLS, 7 fell back to userspace, 2 refused\n"),
            "{out}"
        );
    }

    #[test]
    fn status_without_a_reload() {
        assert_eq!(
            status(&status_with(None)),
            "\
state        running
pid          4242
uptime       1h 2m 3s
generation   4
config       /etc/zerocopy-server/config.toml
workers      2 (io_uring)
connections  12
in flight    3
last reload  none
"
        );
    }

    #[test]
    fn status_after_a_good_reload() {
        let mut r = report(true);
        r.restart_required = vec!["listen".into(), "threads".into()];
        let text = status(&status_with(Some(r)));
        assert!(
            text.ends_with(
                "last reload  ok at 2024-05-01T12:00:00Z (file), generation 4\n\
                 \x20            restart required: listen, threads\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn status_after_a_failed_reload_shows_every_error() {
        let mut r = report(false);
        r.trigger = "admin".into();
        r.error = Some(
            "/etc/z.toml:3:1: routes.a.target: missing\n/etc/z.toml:9:5: security.x: unknown key"
                .into(),
        );
        let text = status(&status_with(Some(r)));
        assert!(
            text.ends_with(
                "last reload  FAILED at 2024-05-01T12:00:00Z (admin): /etc/z.toml:3:1: routes.a.target: missing\n\
                 \x20              /etc/z.toml:9:5: security.x: unknown key\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn reload_lists_changes_and_restart_keys() {
        let mut r = report(true);
        r.generation = 5;
        r.changes = RouteChanges {
            added: vec![key("example.com", Some("/api"))],
            removed: vec![key("old.example.com", None)],
            changed: vec![key("example.com", Some("/static"))],
        };
        r.restart_required = vec!["listen".into()];
        assert_eq!(
            reload(&r),
            "reloaded: generation 5\n\
             + example.com/api\n\
             - old.example.com (host route)\n\
             ~ example.com/static\n\
             restart required: listen\n"
        );
        r.unchanged = true;
        r.restart_required.clear();
        assert_eq!(reload(&r), "unchanged: generation 5\n");
    }

    #[test]
    fn reload_failure_lists_the_errors() {
        let mut r = report(false);
        r.error = Some("a.toml:1:1: x: bad\na.toml:2:1: y: worse\n".into());
        assert_eq!(
            reload_failure(&r),
            "reload failed:\n  a.toml:1:1: x: bad\n  a.toml:2:1: y: worse\nstill serving generation 4\n"
        );
    }

    #[test]
    fn drain_lines() {
        let p = DrainProgress {
            connections: 3,
            in_flight: 1,
            seconds_left: 27,
        };
        assert_eq!(
            drain_progress(&p),
            "draining: 3 connections, 1 in flight, 27s left\n"
        );
        assert_eq!(drain_finished(&p), "stopped\n");
    }

    #[test]
    fn routes_table_is_aligned() {
        let mut strict = default_policy();
        strict.allowed_methods = Some(vec!["GET".into(), "POST".into()]);
        strict.allowed_ips = vec!["10.0.0.0/8".into()];
        strict.rate_limit_requests_per_min = 100;
        let rows = vec![
            RouteInfo {
                host: "example.com".into(),
                prefix: None,
                backend: "File".into(),
                target: "/srv/www".into(),
                mode: Some("sendfile".into()),
                index: Some("index.html".into()),
                policy: default_policy(),
            },
            RouteInfo {
                host: "example.com".into(),
                prefix: Some("/api".into()),
                backend: "Proxy".into(),
                target: "http://127.0.0.1:9000".into(),
                mode: None,
                index: None,
                policy: strict,
            },
        ];
        assert_eq!(
            routes(&rows),
            "\
HOST         PREFIX  BACKEND  TARGET                 POLICY
example.com  *       File     /srv/www               -
example.com  /api    Proxy    http://127.0.0.1:9000  methods=GET,POST ips=10.0.0.0/8 rate=100/min
"
        );
        assert_eq!(routes(&[]), "no routes\n");
    }

    #[test]
    fn policy_summary_shows_only_what_differs() {
        let mut p = default_policy();
        assert_eq!(policy_summary(&p), "-");
        // Timeouts and pool sizes stay out of the summary.
        p.client_body_timeout_secs = 5;
        assert_eq!(policy_summary(&p), "-");
        p.allowed_methods = Some(vec!["GET".into(), "POST".into()]);
        p.allowed_ips = vec!["10.0.0.0/8".into()];
        p.denied_ips = vec!["1.2.3.4".into(), "5.6.7.0/24".into()];
        p.rate_limit_requests_per_min = 100;
        assert_eq!(
            policy_summary(&p),
            "methods=GET,POST ips=10.0.0.0/8 deny=1.2.3.4,5.6.7.0/24 rate=100/min"
        );
        p.max_request_body_size = 1024;
        p.max_chunked_body_size = 2048;
        p.max_request_header_size = 16_384;
        assert!(
            policy_summary(&p).ends_with(" body=1024 chunked=2048 header=16384"),
            "{}",
            policy_summary(&p)
        );
        p.allowed_methods = Some(vec![]);
        assert!(policy_summary(&p).starts_with("methods=none "));
    }

    #[test]
    fn explain_a_match() {
        let mut policy = default_policy();
        policy.allowed_methods = Some(vec!["GET".into()]);
        let e = Explain {
            matched: true,
            host: "example.com".into(),
            path: "/api/x".into(),
            prefix: Some("/api".into()),
            backend: Some("Proxy".into()),
            resolved: Some("http://127.0.0.1:9000/x".into()),
            policy: Some(policy),
            reason: None,
            status: None,
            upstream: None,
            headers: vec!["-server".into(), "+X-Frame-Options: DENY".into()],
            encoding: None,
            fallback: None,
        };
        assert_eq!(
            explain(&e),
            "\
example.com /api/x -> Proxy route /api: http://127.0.0.1:9000/x
header: -server
header: +X-Frame-Options: DENY
policy:
  methods            GET
  allowed ips        any
  denied ips         none
  rate limit         unlimited
  max body           10485760 bytes
  max chunked body   10485760 bytes
  max header         8192 bytes
  header timeout     30s
  body timeout       30s
  connect timeout    10s
  response timeout   60s
  idle backend pool  8 per host, closed after 30s
  trusted proxies    none
  upgrades           websocket
"
        );
    }

    #[test]
    fn explain_a_host_route_with_a_note() {
        let e = Explain {
            matched: true,
            host: "example.com".into(),
            path: "/robots.txt/extra".into(),
            prefix: None,
            backend: Some("File".into()),
            resolved: None,
            policy: None,
            reason: Some("a file route target is a file; nothing lies below it".into()),
            status: Some(404),
            upstream: None,
            headers: Vec::new(),
            encoding: None,
            fallback: None,
        };
        assert_eq!(
            explain(&e),
            "example.com /robots.txt/extra -> File route *: -\n\
             answer: 404: a file route target is a file; nothing lies below it\n"
        );
        assert!(!e.served());
    }

    #[test]
    fn explain_no_match() {
        let mut e = Explain {
            matched: false,
            host: "nowhere.example".into(),
            path: "/".into(),
            prefix: None,
            backend: None,
            resolved: None,
            policy: None,
            reason: Some("no route for host nowhere.example".into()),
            status: None,
            upstream: None,
            headers: Vec::new(),
            encoding: None,
            fallback: None,
        };
        assert_eq!(explain(&e), "no route: no route for host nowhere.example\n");
        e.status = Some(404);
        assert_eq!(explain(&e), "404: no route for host nowhere.example\n");
        e.status = None;
        e.reason = None;
        assert_eq!(explain(&e), "no route: nothing matches nowhere.example /\n");
    }

    #[test]
    fn check_ok_with_changes() {
        let r = CheckReport {
            ok: true,
            file: "/etc/z.toml".into(),
            errors: vec![],
            changes: RouteChanges {
                added: vec![key("a.example", Some("/x"))],
                removed: vec![],
                changed: vec![key("b.example", None)],
            },
            restart_required: vec!["threads".into()],
        };
        assert_eq!(
            check(&r),
            "ok: /etc/z.toml\n+ a.example/x\n~ b.example (host route)\nrestart required: threads\n"
        );
        let quiet = CheckReport {
            changes: RouteChanges::default(),
            restart_required: vec![],
            ..r
        };
        assert_eq!(check(&quiet), "ok: /etc/z.toml\nno route changes\n");
    }

    #[test]
    fn check_with_errors() {
        let r = CheckReport {
            ok: false,
            file: "/etc/z.toml".into(),
            errors: vec![
                "/etc/z.toml:3:1: routes.a.target: missing".into(),
                "/etc/z.toml:9:5: security.x: unknown key".into(),
            ],
            changes: RouteChanges::default(),
            restart_required: vec![],
        };
        assert_eq!(
            check(&r),
            "/etc/z.toml:3:1: routes.a.target: missing\n/etc/z.toml:9:5: security.x: unknown key\n"
        );
    }

    #[test]
    fn durations_and_times() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(65), "1m 5s");
        assert_eq!(duration(3600), "1h 0m 0s");
        assert_eq!(duration(3723), "1h 2m 3s");
        assert_eq!(duration(90_061), "1d 1h 1m 1s");
        assert_eq!(utc_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc_time(1_714_564_800_999), "2024-05-01T12:00:00Z");
        assert_eq!(utc_time(1_735_689_599_000), "2024-12-31T23:59:59Z");
    }

    fn route_row(requests: u64, fast: u64, slow: u64, errors: u64) -> RouteStats {
        let mut counts = vec![0; proxyctl::proto::LATENCY_BOUNDS_US.len() + 1];
        counts[3] = fast; // (500 µs, 1 ms]
        counts[9] = slow; // (50 ms, 100 ms]
        RouteStats {
            host: "example.com".into(),
            prefix: Some("/api".into()),
            backend: "Proxy".into(),
            requests,
            responses: proxyctl::proto::StatusClasses {
                success: requests - errors,
                server_error: errors,
                ..Default::default()
            },
            bytes_sent: 3 * 1024 * 1024 / 2,
            latency: Histogram { counts, sum_us: 0 },
        }
    }

    #[test]
    fn stats_since_start_and_over_an_interval() {
        let earlier = Stats {
            uptime_ms: 10_000,
            routes: vec![route_row(100, 100, 0, 0), RouteStats::default()],
            ..Stats::default()
        };
        let text = stats(&earlier, None);
        assert!(
            text.starts_with("uptime 10s · connections: 0 open"),
            "{text}"
        );
        assert!(text.contains("since start"), "{text}");
        // 100 requests in 10 s; all in (0.5, 1] ms; no unrouted row without requests.
        let row = text
            .lines()
            .find(|l| l.starts_with("example.com/api"))
            .unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "example.com/api",
                "Proxy",
                "100",
                "10.0",
                "750µs",
                "995µs",
                "0",
                "100",
                "0",
                "0",
                "0",
                "1.5MiB"
            ]
        );
        assert!(!text.contains("(no route)"), "{text}");

        // One second later: 50 more requests, all slow, 5 of them 5xx.
        let now = Stats {
            uptime_ms: 11_000,
            routes: vec![route_row(150, 100, 50, 5)],
            ..Stats::default()
        };
        let text = stats(&now, Some(&earlier));
        assert!(text.contains("over the last 1.0s"), "{text}");
        let row = text
            .lines()
            .find(|l| l.starts_with("example.com/api"))
            .unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(&cells[2..7], ["150", "50.0", "75ms", "100ms", "5.0"]);
    }

    #[test]
    fn stats_show_upstream_connections_opened_per_1000_requests() {
        let up = |connects, reuses| UpstreamStats {
            upstream: "http://10.0.0.1:80".into(),
            connects,
            reuses,
            ..UpstreamStats::default()
        };
        let cells = |text: &str| -> Vec<String> {
            let row = text
                .lines()
                .find(|l| l.starts_with("http://10.0.0.1:80"))
                .unwrap_or_else(|| panic!("{text}"));
            row.split_whitespace().map(str::to_string).collect()
        };
        let earlier = Stats {
            uptime_ms: 10_000,
            upstreams: vec![up(50, 950)],
            ..Stats::default()
        };
        let text = stats(&earlier, None);
        assert!(text.contains("OPENED/1K"), "{text}");
        // Since the start: 50 opened for 1,000 requests.
        assert_eq!(cells(&text)[2..5], ["50", "950", "50.0"]);
        // Over the interval: 1 opened for 2,000 requests.
        let now = Stats {
            uptime_ms: 11_000,
            upstreams: vec![up(51, 2949)],
            ..Stats::default()
        };
        assert_eq!(cells(&stats(&now, Some(&earlier)))[4], "0.5");
        // No requests in the interval: no figure.
        assert_eq!(cells(&stats(&earlier, Some(&earlier)))[4], "-");
    }

    #[test]
    fn sizes_and_latencies_read_well() {
        assert_eq!(bytes(0), "0B");
        assert_eq!(bytes(1023), "1023B");
        assert_eq!(bytes(1536), "1.5KiB");
        assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5.0GiB");
        assert_eq!(latency(None), "-");
        assert_eq!(latency(Some(250.0)), "250µs");
        assert_eq!(latency(Some(1_800.0)), "1.8ms");
        assert_eq!(latency(Some(12_000.0)), "12ms");
        assert_eq!(latency(Some(1_200_000.0)), "1.20s");
    }
}

//! `[upstreams.NAME]`: the groups, their servers, health checks, outlier ejection and retries
//! (spec § 2), and the implicit one-server groups of `url` routes.

use super::*;
use crate::config::{
    AllUnhealthy, Balance, CheckKind, HashKey, HealthCheck, Outlier, ProxyTarget, Retry,
    ServerSpec, StatusMatch, UpstreamGroup, UpstreamProtocol,
};

#[rustfmt::skip]
const GROUP_KEYS: &[&str] = &[
    "servers", "balance", "hash_key", "tls", "tls_server_name", "ca_file", "protocol",
    "dns_refresh_secs", "initial_state", "on_all_unhealthy", "panic_threshold_percent",
    "slow_start_secs", "max_idle_connections_per_server", "idle_connection_timeout_secs",
    "health_check", "outlier", "retry",
];
const SERVER_KEYS: &[&str] = &["address", "weight", "backup"];
#[rustfmt::skip]
const CHECK_KEYS: &[&str] = &[
    "kind", "path", "method", "host", "expect_status", "interval_ms", "unhealthy_interval_ms",
    "timeout_ms", "jitter_percent", "healthy_threshold", "unhealthy_threshold", "port",
];
#[rustfmt::skip]
const OUTLIER_KEYS: &[&str] = &[
    "consecutive_failures", "count", "ejection_secs", "max_ejection_secs", "max_ejection_percent",
];
#[rustfmt::skip]
const RETRY_KEYS: &[&str] = &[
    "attempts", "on", "non_idempotent", "budget_percent", "min_retries_per_sec",
    "total_timeout_secs",
];

#[derive(Clone, Copy)]
enum BalanceName {
    RoundRobin,
    LeastRequest,
    Random,
    Hash,
}

#[rustfmt::skip]
const BALANCES: &[(&str, BalanceName)] = &[
    ("round_robin", BalanceName::RoundRobin), ("least_request", BalanceName::LeastRequest),
    ("random", BalanceName::Random), ("hash", BalanceName::Hash),
];
const STATES: &[(&str, bool)] = &[("healthy", false), ("unhealthy", true)];
#[rustfmt::skip]
const ALL_UNHEALTHY: &[(&str, AllUnhealthy)] =
    &[("try_all", AllUnhealthy::TryAll), ("fail", AllUnhealthy::Fail)];
const CHECK_KINDS: &[(&str, bool)] = &[("http", true), ("tcp", false)];
const CHECK_METHODS: &[(&str, bool)] = &[("GET", false), ("HEAD", true)];
/// Weights of servers.
const MAX_WEIGHT: u64 = 1000;

impl Walker<'_> {
    /// `[upstreams]`, by name.
    pub(super) fn upstreams(&mut self, root: &Node) -> Vec<UpstreamGroup> {
        let mut out = Vec::new();
        let Some(node) = self.section(root, "upstreams") else {
            return out;
        };
        for e in node.entries() {
            let name_ok = !e.key.is_empty()
                && e.key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !name_ok {
                let reason = format!(
                    "invalid group name {:?}: use letters, digits, '-', '_' and '.'",
                    e.key
                );
                self.push(e.key_at, &e.field.path, reason);
                continue;
            }
            let hint = "a group is written [upstreams.NAME] with servers = [{ address = \"10.0.0.5:9000\" }]";
            let Some(table) = self.route_table(&e.field, hint) else {
                continue;
            };
            if let Some(g) = self.upstream_group(&table, e.key, self.origin(&e)) {
                out.push(g);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn upstream_group(&mut self, n: &Node, name: &str, origin: Origin) -> Option<UpstreamGroup> {
        self.check_keys(n, &[GROUP_KEYS]);
        let mut ok = true;
        let servers = match n.field("servers") {
            None => {
                let hint =
                    "list the group's servers, e.g. servers = [{ address = \"10.0.0.5:9000\" }]";
                self.missing(n, "servers", hint);
                None
            }
            Some(f) => self.servers(&f),
        };
        let mut g = UpstreamGroup {
            name: name.to_string(),
            origin,
            servers: Vec::new(),
            balance: Balance::RoundRobin,
            tls: false,
            tls_server_name: None,
            ca_file: None,
            protocol: UpstreamProtocol::Http1,
            dns_refresh: defaults::DNS_REFRESH,
            initial_unhealthy: false,
            on_all_unhealthy: AllUnhealthy::TryAll,
            panic_threshold_percent: 0,
            slow_start: Duration::ZERO,
            max_idle_per_server: Some(defaults::MAX_IDLE_PER_SERVER),
            idle_timeout: Some(defaults::GROUP_IDLE_TIMEOUT),
            health_check: None,
            outlier: Outlier::default(),
            retry: Retry::default(),
            implicit: false,
        };
        let balance = match n.field("balance") {
            None => Some(BalanceName::RoundRobin),
            Some(f) => self.choice(&f, "balance", BALANCES, false),
        };
        let hash_key = self.opt(n, "hash_key", |w, f| {
            w.hash_key(f).map(|k| (k, f.path.clone(), f.at()))
        });
        match (balance, hash_key) {
            (Some(BalanceName::Hash), key) => {
                g.balance = Balance::Hash(key.map_or(HashKey::ClientIp, |(k, _, _)| k));
            }
            (Some(other), Some((_, path, at))) => {
                self.push(at, &path, "hash_key only applies with balance = \"hash\"; remove it or set balance = \"hash\"");
                g.balance = balance_of(other);
            }
            (Some(other), None) => g.balance = balance_of(other),
            (None, _) => ok = false,
        }
        self.set(n, "tls", &mut g.tls, |w, f| w.bool(f));
        g.tls_server_name = self.opt(n, "tls_server_name", |w, f| w.server_name(f));
        g.ca_file = self.opt(n, "ca_file", |w, f| w.readable_file(f));
        if !g.tls {
            for key in ["tls_server_name", "ca_file"] {
                if let Some(f) = n.field(key) {
                    self.reject(&f, format!("`{key}` needs tls = true in the group"));
                }
            }
        }
        self.set(n, "protocol", &mut g.protocol, Self::upstream_protocol);
        self.set(n, "dns_refresh_secs", &mut g.dns_refresh, |w, f| {
            w.uint(f, 0, MAX_SECS).map(Duration::from_secs)
        });
        let initial = n.field("initial_state");
        if let Some(f) = &initial {
            if let Some(v) = self.choice(f, "initial_state", STATES, false) {
                g.initial_unhealthy = v;
            }
        }
        self.set(n, "on_all_unhealthy", &mut g.on_all_unhealthy, |w, f| {
            w.choice(f, "on_all_unhealthy", ALL_UNHEALTHY, false)
        });
        self.set(
            n,
            "panic_threshold_percent",
            &mut g.panic_threshold_percent,
            |w, f| w.uint(f, 0, 100).map(|v| v as u8),
        );
        self.set(n, "slow_start_secs", &mut g.slow_start, |w, f| {
            w.uint(f, 0, MAX_SECS).map(Duration::from_secs)
        });
        if let Some(v) = self.opt(n, "max_idle_connections_per_server", |w, f| w.count(f)) {
            g.max_idle_per_server = Some(v);
        }
        if let Some(v) = self.opt(n, "idle_connection_timeout_secs", |w, f| {
            w.uint(f, 0, MAX_SECS).map(Duration::from_secs)
        }) {
            g.idle_timeout = Some(v);
        }
        if let Some(c) = self.section(n, "health_check") {
            g.health_check = self.health_check(&c);
            ok &= g.health_check.is_some();
        }
        if g.initial_unhealthy && g.health_check.is_none() && n.field("health_check").is_none() {
            if let Some(f) = &initial {
                self.reject(f, "initial_state = \"unhealthy\" needs a [health_check] to bring servers up; add one or use \"healthy\"");
            }
        }
        if let Some(o) = self.section(n, "outlier") {
            self.outlier(&o, &mut g.outlier);
        }
        if let Some(r) = self.section(n, "retry") {
            self.retry(&r, &mut g.retry);
        }
        g.servers = servers?;
        if !g.servers.iter().any(|s| !s.backup) {
            let reason = "the group has no primary server (every server is a backup); make at least one backup = false";
            let at = n.field("servers").map_or(n.at, |f| f.at());
            self.push(at, &join(&n.path, "servers"), reason);
            return None;
        }
        ok.then_some(g)
    }

    fn servers(&mut self, f: &Field) -> Option<Vec<ServerSpec>> {
        let DeValue::Array(items) = f.value.get_ref() else {
            self.mismatch(
                f,
                "an array of tables, e.g. [{ address = \"10.0.0.5:9000\" }]",
            );
            return None;
        };
        let mut out: Vec<ServerSpec> = Vec::new();
        let mut ok = true;
        for (i, value) in items.iter().enumerate() {
            let item = Field {
                value,
                path: format!("{}[{i}]", f.path),
            };
            let Some(n) = self.node(&item) else {
                ok = false;
                continue;
            };
            self.check_keys(&n, &[SERVER_KEYS]);
            let Some(a) = n.field("address") else {
                self.missing(
                    &n,
                    "address",
                    "e.g. address = \"10.0.0.5:9000\" or \"api.internal:9000\"",
                );
                ok = false;
                continue;
            };
            let Some(s) = self.str(&a) else {
                ok = false;
                continue;
            };
            let (host, port) = match server_address(s) {
                Ok(hp) => hp,
                Err(reason) => {
                    self.reject(&a, format!("{s:?}: {reason}"));
                    ok = false;
                    continue;
                }
            };
            let weight = match n.field("weight") {
                None => 1,
                Some(w) => match self.uint(&w, 1, MAX_WEIGHT) {
                    Some(v) => v as u32,
                    None => {
                        ok = false;
                        continue;
                    }
                },
            };
            let backup = self.opt(&n, "backup", |w, f| w.bool(f)).unwrap_or(false);
            if out.iter().any(|o| o.host == host && o.port == port) {
                self.reject(&a, format!("{s:?} is listed twice in this group"));
                ok = false;
                continue;
            }
            out.push(ServerSpec {
                host,
                port,
                weight,
                backup,
            });
        }
        // Primaries first, then backups, each in file order.
        out.sort_by_key(|s| s.backup);
        ok.then_some(out)
    }

    fn hash_key(&mut self, f: &Field) -> Option<HashKey> {
        let s = self.str(f)?;
        let key = if s == "client_ip" {
            Some(HashKey::ClientIp)
        } else if let Some(h) = s.strip_prefix("header:") {
            (!h.is_empty() && h.bytes().all(crate::http::method::is_tchar))
                .then(|| HashKey::Header(h.to_ascii_lowercase()))
        } else if let Some(c) = s.strip_prefix("cookie:") {
            (!c.is_empty() && c.bytes().all(crate::http::method::is_tchar))
                .then(|| HashKey::Cookie(c.to_string()))
        } else {
            None
        };
        if key.is_none() {
            let reason = format!(
                "unknown hash_key {s:?}; expected \"client_ip\", \"header:NAME\" or \"cookie:NAME\""
            );
            self.reject(f, reason);
        }
        key
    }

    fn health_check(&mut self, n: &Node) -> Option<HealthCheck> {
        self.check_keys(n, &[CHECK_KEYS]);
        let http = match n.field("kind") {
            None => Some(true),
            Some(f) => self.choice(&f, "kind", CHECK_KINDS, false),
        }?;
        let mut c = HealthCheck {
            kind: CheckKind::Tcp,
            interval: defaults::CHECK_INTERVAL,
            unhealthy_interval: defaults::CHECK_INTERVAL,
            timeout: defaults::CHECK_TIMEOUT,
            jitter_percent: defaults::CHECK_JITTER_PERCENT,
            healthy_threshold: defaults::CHECK_HEALTHY_THRESHOLD,
            unhealthy_threshold: defaults::CHECK_UNHEALTHY_THRESHOLD,
            port: None,
        };
        if http {
            let path = match n.field("path") {
                None => defaults::CHECK_PATH.to_string(),
                Some(f) => {
                    let s = self.str(&f)?;
                    if !s.starts_with('/') || s.bytes().any(|b| b <= b' ' || b == 0x7f) {
                        self.reject(&f, format!("{s:?}: a check path starts with '/' and holds no spaces or control characters (percent-encode them)"));
                        return None;
                    }
                    s.to_string()
                }
            };
            let head = match n.field("method") {
                None => false,
                Some(f) => self.choice(&f, "method", CHECK_METHODS, false)?,
            };
            let host = match n.field("host") {
                None => None,
                Some(f) => {
                    let s = self.str(&f)?;
                    if s.is_empty() || s.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'/') {
                        self.reject(&f, format!("{s:?} is not a host name"));
                        return None;
                    }
                    Some(s.to_string())
                }
            };
            let expect = match n.field("expect_status") {
                None => vec![StatusMatch::Class(2), StatusMatch::Class(3)],
                Some(f) => self.expect_status(&f)?,
            };
            c.kind = CheckKind::Http {
                path,
                head,
                host,
                expect,
            };
        } else {
            for key in ["path", "method", "host", "expect_status"] {
                if let Some(f) = n.field(key) {
                    self.reject(
                        &f,
                        format!(
                            "`{key}` applies to kind = \"http\" checks; a tcp check only connects"
                        ),
                    );
                }
            }
        }
        self.set(n, "interval_ms", &mut c.interval, |w, f| w.millis(f));
        c.unhealthy_interval = c.interval;
        self.set(
            n,
            "unhealthy_interval_ms",
            &mut c.unhealthy_interval,
            |w, f| w.millis(f),
        );
        self.set(n, "timeout_ms", &mut c.timeout, |w, f| w.millis(f));
        self.set(n, "jitter_percent", &mut c.jitter_percent, |w, f| {
            w.uint(f, 0, 100).map(|v| v as u8)
        });
        self.set(n, "healthy_threshold", &mut c.healthy_threshold, |w, f| {
            w.uint(f, 1, 1000).map(|v| v as u32)
        });
        self.set(
            n,
            "unhealthy_threshold",
            &mut c.unhealthy_threshold,
            |w, f| w.uint(f, 1, 1000).map(|v| v as u32),
        );
        c.port = self.opt(n, "port", |w, f| w.uint(f, 1, 65535).map(|v| v as u16));
        Some(c)
    }

    fn expect_status(&mut self, f: &Field) -> Option<Vec<StatusMatch>> {
        let mut out = Vec::new();
        for item in self.array(f)? {
            let s = self.str(&item)?;
            let m = match s.as_bytes() {
                [c @ b'1'..=b'5', b'x', b'x'] => Some(StatusMatch::Class(u16::from(c - b'0'))),
                _ => s
                    .parse::<u16>()
                    .ok()
                    .filter(|c| (100..=599).contains(c))
                    .map(StatusMatch::Code),
            };
            match m {
                Some(m) => out.push(m),
                None => {
                    self.reject(
                        &item,
                        format!("{s:?} is not a status code (\"204\") or class (\"2xx\")"),
                    );
                    return None;
                }
            }
        }
        if out.is_empty() {
            self.reject(f, "must name at least one status or class, e.g. [\"2xx\"]");
            return None;
        }
        Some(out)
    }

    fn outlier(&mut self, n: &Node, o: &mut Outlier) {
        self.check_keys(n, &[OUTLIER_KEYS]);
        self.set(
            n,
            "consecutive_failures",
            &mut o.consecutive_failures,
            |w, f| w.uint(f, 0, 1000).map(|v| v as u32),
        );
        if let Some(f) = n.field("count") {
            if let Some(items) = self.array(&f) {
                let (mut connect, mut timeout, mut status) = (false, false, Vec::new());
                for item in items {
                    match self.str(&item) {
                        Some("connect") => connect = true,
                        Some("timeout") => timeout = true,
                        Some(s @ ("500" | "502" | "503" | "504")) => {
                            status.push(s.parse().unwrap_or(502))
                        }
                        Some(s) => self.reject(&item, format!("{s:?} is not a failure kind; expected \"connect\", \"timeout\", \"500\", \"502\", \"503\" or \"504\"")),
                        None => {}
                    }
                }
                (o.count_connect, o.count_timeout, o.count_status) = (connect, timeout, status);
            }
        }
        self.set(n, "ejection_secs", &mut o.ejection, |w, f| w.secs(f));
        self.set(n, "max_ejection_secs", &mut o.max_ejection, |w, f| {
            w.secs(f)
        });
        self.set(
            n,
            "max_ejection_percent",
            &mut o.max_ejection_percent,
            |w, f| w.uint(f, 0, 100).map(|v| v as u8),
        );
        if o.max_ejection < o.ejection {
            match (n.field("max_ejection_secs"), n.field("ejection_secs")) {
                (Some(f), _) => self.reject(&f, "must be at least ejection_secs"),
                (None, Some(f)) => self.reject(
                    &f,
                    format!(
                        "is above max_ejection_secs ({} by default); raise max_ejection_secs too",
                        o.max_ejection.as_secs()
                    ),
                ),
                (None, None) => {}
            }
        }
    }

    fn retry(&mut self, n: &Node, r: &mut Retry) {
        self.check_keys(n, &[RETRY_KEYS]);
        self.set(n, "attempts", &mut r.attempts, |w, f| {
            w.uint(f, 0, 10).map(|v| v as u32)
        });
        if let Some(f) = n.field("on") {
            if let Some(items) = self.array(&f) {
                let mut on = Retry {
                    on_connect: false,
                    on_refused_stream: false,
                    on_reset: false,
                    on_timeout: false,
                    on_status: Vec::new(),
                    ..r.clone()
                };
                for item in items {
                    match self.str(&item) {
                        Some("connect-failure") => on.on_connect = true,
                        Some("refused-stream") => on.on_refused_stream = true,
                        Some("reset-before-response") => on.on_reset = true,
                        Some("timeout") => on.on_timeout = true,
                        Some(s @ ("502" | "503" | "504")) => {
                            on.on_status.push(s.parse().unwrap_or(502))
                        }
                        Some(s) => self.reject(&item, format!("{s:?} is not a retry condition; expected \"connect-failure\", \"refused-stream\", \"reset-before-response\", \"timeout\", \"502\", \"503\" or \"504\"")),
                        None => {}
                    }
                }
                *r = on;
            }
        }
        self.set(n, "non_idempotent", &mut r.non_idempotent, |w, f| w.bool(f));
        self.set(n, "budget_percent", &mut r.budget_percent, |w, f| {
            w.uint(f, 0, 100).map(|v| v as u32)
        });
        self.set(
            n,
            "min_retries_per_sec",
            &mut r.min_retries_per_sec,
            |w, f| w.uint(f, 0, 100_000).map(|v| v as u32),
        );
        if let Some(t) = self.opt(n, "total_timeout_secs", |w, f| w.uint(f, 0, MAX_SECS)) {
            r.total_timeout = (t > 0).then(|| Duration::from_secs(t));
        }
    }

    /// `protocol` / `upstream_protocol`: `"http1"` or `"h2"`.
    pub(super) fn upstream_protocol(&mut self, f: &Field) -> Option<UpstreamProtocol> {
        match self.str(f)? {
            "http1" => Some(UpstreamProtocol::Http1),
            "h2" => Some(UpstreamProtocol::H2),
            other => {
                let reason = format!("unknown protocol {other:?}; expected \"http1\" or \"h2\"");
                self.reject(f, reason);
                None
            }
        }
    }

    /// The implicit groups of `url` routes, one per `scheme://host:port` and TLS settings,
    /// after the named ones; and an error for every `upstream` that names no group.
    pub(super) fn route_groups(&mut self, config: &mut Config) {
        let routes = config.host_routes.iter().map(|h| &h.route);
        let routes = routes.chain(config.path_routes.iter().map(|p| &p.route));
        let mut implicit: Vec<UpstreamGroup> = Vec::new();
        for r in routes {
            let Backend::Proxy(p) = &r.backend else {
                continue;
            };
            match &p.target {
                ProxyTarget::Url(url) => {
                    let mut g = UpstreamGroup::from_url(
                        url,
                        p.tls_server_name.clone(),
                        p.ca_file.clone(),
                        r.origin.clone(),
                    );
                    g.protocol = p.protocol;
                    let same = |o: &UpstreamGroup| {
                        o.name == g.name
                            && o.tls_server_name == g.tls_server_name
                            && o.ca_file == g.ca_file
                            && o.protocol == g.protocol
                    };
                    if !implicit.iter().any(same) {
                        implicit.push(g);
                    }
                }
                ProxyTarget::Group(name) => {
                    if !config.upstreams.iter().any(|g| &g.name == name) {
                        let known: Vec<&str> =
                            config.upstreams.iter().map(|g| g.name.as_str()).collect();
                        let reason = if known.is_empty() {
                            format!("unknown group {name:?}: define it as [upstreams.{name}]")
                        } else {
                            format!(
                                "unknown group {name:?}; defined groups: {}",
                                known.join(", ")
                            )
                        };
                        let o = &r.origin;
                        self.errors.push(ConfigError {
                            file: self.file.clone(),
                            line: o.line,
                            column: o.column,
                            key_path: format!("{}.upstream", o.key_path),
                            reason,
                        });
                    }
                }
            }
        }
        config.upstreams.extend(implicit);
    }
}

fn balance_of(b: BalanceName) -> Balance {
    match b {
        BalanceName::RoundRobin => Balance::RoundRobin,
        BalanceName::LeastRequest => Balance::LeastRequest,
        BalanceName::Random => Balance::Random,
        BalanceName::Hash => Balance::Hash(HashKey::ClientIp),
    }
}

/// A `servers` address: `10.0.0.5:9000`, `[::1]:9000` or `name:9000`; the port is required.
pub(super) fn server_address(s: &str) -> Result<(String, u16), String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        if a.port() == 0 {
            return Err("port 0 is not a server's port".into());
        }
        return Ok((a.ip().to_string(), a.port()));
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err("expected host:port, e.g. \"10.0.0.5:9000\" or \"api.internal:9000\"".into());
    };
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("{port:?} is not a port (1-65535)")),
    };
    if host.contains(':') || host.starts_with('[') {
        return Err("write an IPv6 address in brackets, e.g. \"[2001:db8::5]:9000\"".into());
    }
    if !is_dns_name(host) {
        return Err(format!("{host:?} is not a DNS name or IP address"));
    }
    Ok((host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{errors_of, find, ok, SERVER};
    use super::*;

    const SPEC: &str = r#"
[upstreams.api]
servers = [
  { address = "10.0.0.5:9000" },
  { address = "10.0.9.5:9000", backup = true },
  { address = "10.0.0.6:9000", weight = 2 },
  { address = "api-blue.internal:9000" },
]
balance = "hash"
hash_key = "cookie:sid"
dns_refresh_secs = 0
initial_state = "unhealthy"
on_all_unhealthy = "fail"
panic_threshold_percent = 30
slow_start_secs = 20
max_idle_connections_per_server = 4
idle_connection_timeout_secs = 10

[upstreams.api.health_check]
kind = "http"
path = "/ready"
method = "HEAD"
host = "api.internal"
expect_status = ["204", "3xx"]
interval_ms = 500
unhealthy_interval_ms = 5000
timeout_ms = 300
jitter_percent = 0
healthy_threshold = 1
unhealthy_threshold = 2
port = 9100

[upstreams.api.outlier]
consecutive_failures = 3
count = ["connect", "500", "503"]
ejection_secs = 10
max_ejection_secs = 60
max_ejection_percent = 100

[upstreams.api.retry]
attempts = 2
on = ["connect-failure", "503"]
non_idempotent = true
budget_percent = 50
min_retries_per_sec = 1
total_timeout_secs = 5

[path_routes."example.com"."/api/"]
type = "Proxy"
upstream = "api"
upstream_path = "/app/"

[path_routes."example.com"."/old/"]
type = "Proxy"
url = "https://legacy.internal:8443/x/"
"#;

    #[test]
    fn every_group_key_parses() {
        let c = ok(&format!("{SERVER}{SPEC}"));
        let g = &c.upstreams[0];
        assert_eq!(g.name, "api");
        assert!(!g.implicit);
        let hosts: Vec<(&str, u32, bool)> = g
            .servers
            .iter()
            .map(|s| (s.host.as_str(), s.weight, s.backup))
            .collect();
        assert_eq!(
            hosts,
            [
                ("10.0.0.5", 1, false),
                ("10.0.0.6", 2, false),
                ("api-blue.internal", 1, false),
                ("10.0.9.5", 1, true)
            ]
        );
        assert_eq!(g.balance, Balance::Hash(HashKey::Cookie("sid".into())));
        assert_eq!(g.dns_refresh, Duration::ZERO);
        assert!(g.initial_unhealthy);
        assert_eq!(g.on_all_unhealthy, AllUnhealthy::Fail);
        assert_eq!(g.panic_threshold_percent, 30);
        assert_eq!(g.slow_start, Duration::from_secs(20));
        assert_eq!(g.max_idle_per_server, Some(4));
        assert_eq!(g.idle_timeout, Some(Duration::from_secs(10)));
        let h = g.health_check.as_ref().unwrap();
        assert_eq!(
            h.kind,
            CheckKind::Http {
                path: "/ready".into(),
                head: true,
                host: Some("api.internal".into()),
                expect: vec![StatusMatch::Code(204), StatusMatch::Class(3)],
            }
        );
        assert_eq!(
            (h.interval, h.unhealthy_interval, h.timeout),
            (
                Duration::from_millis(500),
                Duration::from_millis(5000),
                Duration::from_millis(300)
            )
        );
        assert_eq!(
            (h.healthy_threshold, h.unhealthy_threshold, h.port),
            (1, 2, Some(9100))
        );
        let o = &g.outlier;
        assert_eq!(o.consecutive_failures, 3);
        assert!(o.count_connect && !o.count_timeout);
        assert_eq!(o.count_status, [500, 503]);
        assert_eq!((o.ejection.as_secs(), o.max_ejection.as_secs()), (10, 60));
        let r = &g.retry;
        assert_eq!(r.attempts, 2);
        assert!(r.on_connect && !r.on_reset && !r.on_refused_stream && r.on_status == [503]);
        assert!(r.non_idempotent);
        assert_eq!(r.total_timeout, Some(Duration::from_secs(5)));
        // The url route's own group comes after the named ones.
        let implicit = &c.upstreams[1];
        assert!(implicit.implicit);
        assert_eq!(implicit.name, "https://legacy.internal:8443");
        assert!(implicit.tls);
        let Backend::Proxy(p) = &c.path_routes[0].route.backend else {
            panic!()
        };
        assert_eq!(p.target, ProxyTarget::Group("api".into()));
        assert_eq!(p.base_path, "/app/");
    }

    #[test]
    fn group_defaults() {
        let c = ok(&format!(
            "{SERVER}[upstreams.a]\nservers = [{{ address = \"127.0.0.1:1\" }}]\n"
        ));
        let g = &c.upstreams[0];
        assert_eq!(g.balance, Balance::RoundRobin);
        assert_eq!(g.dns_refresh, Duration::from_secs(30));
        assert_eq!(g.on_all_unhealthy, AllUnhealthy::TryAll);
        assert_eq!(g.max_idle_per_server, Some(8));
        assert!(g.health_check.is_none());
        assert_eq!(g.outlier, Outlier::default());
        assert_eq!(g.outlier.count_status, [502, 503, 504]);
        assert_eq!(g.retry, Retry::default());
        assert!(g.retry.on_connect && g.retry.on_reset && !g.retry.on_timeout);
    }

    #[test]
    fn group_errors_name_their_key() {
        let text = format!(
            r#"{SERVER}
[upstreams.a]
servers = [{{ address = "127.0.0.1:1", weight = 0 }}, {{ address = "nope:port" }}]
balance = "round_robin"
hash_key = "client_ip"
protocol = "h3"
flavour = 1
[upstreams.a.outlier]
count = ["connect", "418"]
ejection_secs = 600
[upstreams.a.retry]
on = ["always"]

[upstreams.b]
servers = [{{ address = "127.0.0.1:2", backup = true }}]
initial_state = "unhealthy"

[upstreams."bad name"]
servers = []

[path_routes."x.com"."/a/"]
type = "Proxy"
upstream = "missing"

[path_routes."x.com"."/b/"]
type = "Proxy"
upstream = "a"
url = "http://127.0.0.1:1"
"#
        );
        let errors = errors_of(&text);
        let reason = |key: &str| find(&errors, key).reason.clone();
        assert_eq!(
            reason("upstreams.a.servers[0].weight"),
            "must be at least 1"
        );
        assert!(reason("upstreams.a.servers[1].address").contains("is not a port"));
        assert!(reason("upstreams.a.hash_key").contains("only applies with balance = \"hash\""));
        assert!(reason("upstreams.a.protocol").contains("unknown protocol \"h3\""));
        assert!(reason("upstreams.a.flavour").starts_with("unknown key"));
        assert!(reason("upstreams.a.outlier.count[1]").contains("not a failure kind"));
        assert!(reason("upstreams.a.outlier.ejection_secs").contains("raise max_ejection_secs"));
        assert!(reason("upstreams.a.retry.on[0]").contains("not a retry condition"));
        assert!(reason("upstreams.b.servers").contains("no primary server"));
        assert!(reason("upstreams.b.initial_state").contains("needs a [health_check]"));
        assert!(reason("upstreams.\"bad name\"").contains("invalid group name"));
        assert!(
            reason("path_routes.\"x.com\".\"/a/\".upstream").contains("unknown group \"missing\"")
        );
        assert!(reason("path_routes.\"x.com\".\"/b/\".upstream").contains("not both"));
        let text = format!(
            "{SERVER}[upstreams.a]\nservers = [{{ address = \"127.0.0.1:1\", weight = 1001 }}]\n"
        );
        assert_eq!(
            find(&errors_of(&text), "upstreams.a.servers[0].weight").reason,
            "must be at most 1000"
        );
    }

    #[test]
    fn protocols_of_groups_and_url_routes() {
        let c = ok(&format!(
            r#"{SERVER}
[upstreams.grpc]
servers = [{{ address = "127.0.0.1:50051" }}]
protocol = "h2"

[path_routes."x.com"."/a/"]
type = "Proxy"
upstream = "grpc"

[path_routes."x.com"."/b/"]
type = "Proxy"
url = "http://127.0.0.1:9000"
upstream_protocol = "h2"

[path_routes."x.com"."/c/"]
type = "Proxy"
url = "http://127.0.0.1:9000"
"#
        ));
        let protocols: Vec<(&str, UpstreamProtocol)> = c
            .upstreams
            .iter()
            .map(|g| (g.name.as_str(), g.protocol))
            .collect();
        assert_eq!(
            protocols,
            [
                ("grpc", UpstreamProtocol::H2),
                ("http://127.0.0.1:9000", UpstreamProtocol::H2),
                ("http://127.0.0.1:9000", UpstreamProtocol::Http1),
            ],
            "one implicit group per protocol"
        );
        let errors = errors_of(&format!(
            r#"{SERVER}
[upstreams.g]
servers = [{{ address = "127.0.0.1:1" }}]

[path_routes."x.com"."/a/"]
type = "Proxy"
upstream = "g"
upstream_protocol = "h2"

[path_routes."x.com"."/b/"]
type = "Proxy"
url = "http://127.0.0.1:9000"
upstream_protocol = "spdy"
"#
        ));
        let reason = |key: &str| find(&errors, key).reason.clone();
        assert!(reason("path_routes.\"x.com\".\"/a/\".upstream_protocol")
            .contains("a group's is its `protocol`"));
        assert!(reason("path_routes.\"x.com\".\"/b/\".upstream_protocol")
            .contains("unknown protocol \"spdy\""));
    }

    #[test]
    fn server_addresses() {
        assert_eq!(
            server_address("10.0.0.5:9000"),
            Ok(("10.0.0.5".into(), 9000))
        );
        assert_eq!(server_address("[::1]:80"), Ok(("::1".into(), 80)));
        assert_eq!(
            server_address("API.internal:80"),
            Ok(("api.internal".into(), 80))
        );
        assert!(server_address("10.0.0.5").is_err());
        assert!(server_address("::1:80").is_err());
        assert!(server_address("a b:80").is_err());
        assert!(server_address("h:0").is_err());
    }
}

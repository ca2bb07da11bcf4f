//! A reload as a transaction: read → parse → build → compare → swap, or keep the old snapshot.
//!
//! Nothing here runs on a worker. A file whose bytes did not change is not reloaded (unless the
//! operator forced it with `SIGHUP` or `proxyctl reload`, which re-read memory-mode files and,
//! later, certificates). Any error leaves the running snapshot in place and is reported with
//! every `file:line:column: key.path: reason`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use proxyctl::proto::{RouteChanges, RouteKey};

use crate::config::{self, Config, ConfigErrors, Route};
use crate::metrics::Registry;
use crate::snapshot::Snapshot;
use crate::tls::sessions::Sessions;

/// A built, not yet published, reload.
pub struct Prepared {
    pub snapshot: Snapshot,
    pub changes: RouteChanges,
    pub restart_required: Vec<String>,
    /// The new config's warnings (which may stat files and look users up: done here, off the
    /// control thread).
    pub warnings: Vec<String>,
    /// The new config's inputs ([`inputs`]), read before the build: a file that changes
    /// during the build then differs from them, and its event reloads again.
    pub inputs: Vec<u8>,
}

/// Parses and builds `bytes` as the config at `path` with the next generation, and compares it
/// with `current`. Runs on a helper thread of the control plane (never a worker): it may
/// resolve names and read files.
pub fn prepare(
    path: &Path,
    bytes: &[u8],
    current: &Snapshot,
    metrics: &Registry,
    fleet: &crate::group::Fleet,
    sessions: &Sessions,
) -> Result<Prepared, ConfigErrors> {
    // Tests stand in for a build that takes long (a DNS lookup that hangs) with this.
    if let Some(ms) = std::env::var("ZEROCOPY_TEST_BUILD_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ConfigErrors::file(path, format!("the config file is not UTF-8: {e}")))?;
    let cfg = config::parse(text, path)?;
    if cfg.tls.is_some() != current.config.tls.is_some() {
        // The listener speaks TLS or plain HTTP from start-up: switching would change the
        // protocol under every client of the port.
        let what = if cfg.tls.is_some() { "adds" } else { "removes" };
        return Err(ConfigErrors::file(
            path,
            format!(
                "[tls]: this file {what} [tls], which switches the listener between HTTP and \
                 HTTPS; a reload cannot do that — restart the daemon"
            ),
        ));
    }
    let changes = route_changes(&current.config, &cfg);
    let restart_required = restart_required(&current.config, &cfg);
    let inputs = inputs(bytes.to_vec(), &cfg);
    let warnings = cfg.warnings();
    let snapshot = Snapshot::build(cfg, current.generation + 1, metrics, fleet, sessions)?;
    Ok(Prepared {
        snapshot,
        changes,
        restart_required,
        warnings,
        inputs,
    })
}

/// Routes added, removed and changed (backend or policy) from `old` to `new`, each named by
/// its prefix as written (the new file's spelling, or the old one's for a removed route).
/// Routes are the same route when their normalised prefixes are (`"/a"` and `"/a/"`).
pub fn route_changes(old: &Config, new: &Config) -> RouteChanges {
    let (old, new) = (routes(old), routes(new));
    let mut changes = RouteChanges::default();
    for (key, (shown, route)) in &new {
        match old.get(key) {
            None => changes.added.push(shown.clone()),
            Some((_, o)) if o.backend != route.backend || o.security != route.security => {
                changes.changed.push(shown.clone())
            }
            Some(_) => {}
        }
    }
    changes.removed = old
        .iter()
        .filter(|(k, _)| !new.contains_key(k))
        .map(|(_, (shown, _))| shown.clone())
        .collect();
    changes
}

/// Routes by their normalised key, with the key as written.
fn routes(c: &Config) -> BTreeMap<RouteKey, (RouteKey, &Route)> {
    let host = c.host_routes.iter().map(|h| {
        let key = RouteKey {
            host: h.host.clone(),
            prefix: None,
        };
        (key.clone(), (key, &h.route))
    });
    let path = c.path_routes.iter().map(|p| {
        let key = RouteKey {
            host: p.host.clone(),
            prefix: Some(p.prefix.clone()),
        };
        let shown = RouteKey {
            host: p.host.clone(),
            prefix: Some(p.written.clone()),
        };
        (key, (shown, &p.route))
    });
    host.chain(path).collect()
}

/// Keys that differ but that a running daemon cannot change: they need a restart.
pub fn restart_required(old: &Config, new: &Config) -> Vec<String> {
    let mut keys = Vec::new();
    let mut check = |name: &str, differs: bool| {
        if differs {
            keys.push(name.to_string());
        }
    };
    let bindings = |c: &Config| {
        let mut b: Vec<_> = c.listeners.iter().map(|l| l.binding()).collect();
        b.sort_unstable();
        b
    };
    let shorthand = |c: &Config| {
        c.listeners
            .iter()
            .any(|l| l.origin.key_path == "server.listen")
    };
    let name = if shorthand(old) && shorthand(new) {
        "server.listen"
    } else {
        "listeners (addresses: `proxyctl upgrade` applies them without a restart; ipv6_only)"
    };
    check(name, bindings(old) != bindings(new));
    check("server.threads", old.server.threads != new.server.threads);
    // The level changes live; the rest of [logging] is fixed at start-up.
    let fixed = |l: &config::Logging| config::Logging {
        level: config::LogLevel::Off,
        ..l.clone()
    };
    check("logging", fixed(&old.logging) != fixed(&new.logging));
    check(
        "admin.metrics_listen",
        old.admin.metrics_listen != new.admin.metrics_listen,
    );
    check(
        "performance.reuseport_balancing",
        old.performance.reuseport_balancing != new.performance.reuseport_balancing,
    );
    check(
        "performance.huge_pages_enabled",
        old.performance.huge_pages_enabled != new.performance.huge_pages_enabled,
    );
    check(
        "performance.file_io_threads",
        old.performance.file_io_threads != new.performance.file_io_threads,
    );
    check(
        "performance.file_io_timeout_ms",
        old.performance.file_io_timeout != new.performance.file_io_timeout,
    );
    check(
        "security.drop_privileges_user",
        old.security.drop_privileges_user != new.security.drop_privileges_user,
    );
    check(
        "security.drop_privileges_group",
        old.security.drop_privileges_group != new.security.drop_privileges_group,
    );
    check("admin.socket", old.admin.socket != new.admin.socket);
    let ktls = |c: &Config| {
        c.tls
            .as_ref()
            .map(|t| (t.ktls_enabled, t.ktls_fallback_enabled))
    };
    check(
        "tls.ktls_enabled / tls.ktls_fallback_enabled",
        ktls(old) != ktls(new),
    );
    keys
}

/// Reads a config file without hanging the control loop (see [`crate::fsread`]).
pub fn read_config(path: &Path) -> Result<Vec<u8>, String> {
    crate::fsread::read(path, crate::fsread::CONFIG_CAP).map_err(|e| format!("the config file {e}"))
}

/// A snapshot's inputs for change detection: the config's bytes, then each of `config`'s
/// `[tls]` files (an unreadable file contributes its error, so that its return is a change).
/// Read through [`crate::fsread`]: non-blocking, capped.
pub fn inputs(mut config_bytes: Vec<u8>, config: &Config) -> Vec<u8> {
    if let Some(tls) = &config.tls {
        for file in tls.files() {
            config_bytes.extend_from_slice(b"\0--");
            config_bytes.extend_from_slice(file.as_os_str().as_encoded_bytes());
            config_bytes.push(0);
            match crate::fsread::read(&file, crate::fsread::PEM_CAP) {
                Ok(b) => config_bytes.extend_from_slice(&b),
                Err(e) => config_bytes.extend_from_slice(e.as_bytes()),
            }
        }
    }
    config_bytes
}

/// Publishes a prepared snapshot (its session state first). Returns the new generation.
pub fn commit(
    cell: &crate::snapshot::SnapshotCell,
    sessions: &Sessions,
    snapshot: Snapshot,
) -> u64 {
    let generation = snapshot.generation;
    snapshot.publish_sessions(sessions);
    if let Err(e) = crate::telemetry::export::configure(&snapshot.config.tracing) {
        log::error!("tracing: cannot start the span exporter: {e}; spans are dropped");
    }
    cell.store(Arc::new(snapshot));
    generation
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path, body: &str) -> Config {
        let path = dir.join("c.toml");
        let text = format!("[server]\nlisten = \"127.0.0.1:1\"\n{body}");
        config::parse(&text, &path).unwrap()
    }

    #[test]
    fn route_changes_by_key_backend_and_policy() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::create_dir(dir.path().join("b")).unwrap();
        let old = cfg(
            dir.path(),
            "[path_routes.h]\n\"/keep\" = { path = \"a\" }\n\"/gone\" = { path = \"a\" }\n\"/moved\" = { path = \"a\" }\n\"/policy\" = { path = \"a\" }\n",
        );
        let new = cfg(
            dir.path(),
            "threads = 2\n[path_routes.h]\n\"/keep/\" = { path = \"a\" }\n\"/moved\" = { path = \"b\" }\n\"/policy\" = { path = \"a\", security = { rate_limit_requests_per_min = 5 } }\n\"/new/\" = { path = \"b\" }\n[host_routes.x]\npath = \"a\"\n",
        );
        let key = |h: &str, p: Option<&str>| RouteKey {
            host: h.into(),
            prefix: p.map(Into::into),
        };
        let c = route_changes(&old, &new);
        // Shown as written; "/keep" and "/keep/" are one route.
        assert_eq!(c.added, [key("h", Some("/new/")), key("x", None)]);
        assert_eq!(c.removed, [key("h", Some("/gone"))]);
        assert_eq!(
            c.changed,
            [key("h", Some("/moved")), key("h", Some("/policy"))]
        );
        assert_eq!(restart_required(&old, &new), ["server.threads"]);
        assert!(restart_required(&old, &old).is_empty());
    }
}

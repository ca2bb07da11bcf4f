//! The admin API's upstream answers: `upstreams` (every group and server as the workers see
//! them now) and `set_server` (drain, disable, enable), read from and written to the servers'
//! shared state — the same atomics the workers use, so the answer is current and a change acts
//! on the next request.

use std::collections::BTreeMap;

use proxyctl::proto::{ExplainUpstream, GroupInfo, ServerAdmin, ServerInfo};

use super::Control;
use crate::config::Balance;
use crate::group::state::{wall_ms, FAILURE_KINDS, RETRY_REASONS};
use crate::group::{now_ms, Admin, Group, Member};

impl Control {
    /// Every group of the serving snapshot, or the one named `group`.
    pub(super) fn upstreams(&self, group: Option<&str>) -> Result<Vec<GroupInfo>, String> {
        let snapshot = self.shared.snapshot.load();
        let list: Vec<GroupInfo> = distinct(&snapshot.groups)
            .filter(|g| group.is_none_or(|name| g.config.name == name))
            .map(info)
            .collect();
        if let (Some(name), true) = (group, list.is_empty()) {
            return Err(unknown_group(name, &snapshot.groups));
        }
        Ok(list)
    }

    /// Sets the operator's state of the servers of `group` that `address` names.
    pub(super) fn set_server(
        &self,
        group: &str,
        address: &str,
        state: ServerAdmin,
    ) -> Result<Vec<ServerInfo>, String> {
        let snapshot = self.shared.snapshot.load();
        let groups: Vec<_> = snapshot
            .groups
            .iter()
            .filter(|g| g.config.name == group)
            .collect();
        if groups.is_empty() {
            return Err(unknown_group(group, &snapshot.groups));
        }
        let admin = match state {
            ServerAdmin::Enable => Admin::Enabled,
            ServerAdmin::Drain => Admin::Draining,
            ServerAdmin::Disable => Admin::Disabled,
        };
        let mut out = Vec::new();
        for g in groups {
            let members = g.members.load();
            for m in members.list.iter() {
                if m.state.addr.to_string() != address && &*m.written != address {
                    continue;
                }
                if m.state.admin() != admin {
                    let what = format!("{state:?} by the operator").to_lowercase();
                    log::info!("upstream {:?} {}: {what}", g.config.name, m.state.addr);
                    m.state.note(what);
                }
                m.state.set_admin(admin);
                if out
                    .iter()
                    .all(|s: &ServerInfo| s.address != m.state.addr.to_string())
                {
                    out.push(server_info(m));
                }
            }
        }
        if out.is_empty() {
            let all: Vec<String> = groups_servers(&snapshot.groups, group);
            return Err(format!(
                "group {group:?} has no server {address:?}; its servers: {}",
                all.join(", ")
            ));
        }
        Ok(out)
    }
}

/// The groups, each name once: two `url` routes to one `scheme://host:port` with different
/// TLS settings are two groups of one name, whose servers share their state.
pub(super) fn distinct(groups: &[std::sync::Arc<Group>]) -> impl Iterator<Item = &Group> {
    groups
        .iter()
        .enumerate()
        .filter(|(i, g)| !groups[..*i].iter().any(|o| o.config.name == g.config.name))
        .map(|(_, g)| &**g)
}

/// What `explain` shows about a group.
pub(super) fn explain(g: &Group) -> ExplainUpstream {
    let now = now_ms();
    let members = g.members.load();
    ExplainUpstream {
        group: g.config.name.clone(),
        usable: members
            .list
            .iter()
            .filter(|m| m.state.usable(now))
            .map(|m| m.state.addr.to_string())
            .collect(),
        servers: members
            .list
            .iter()
            .map(|m| m.state.addr.to_string())
            .collect(),
        failing_open: g.state.failing_open(),
    }
}

fn unknown_group(name: &str, groups: &[std::sync::Arc<Group>]) -> String {
    let mut names: Vec<&str> = groups.iter().map(|g| g.config.name.as_str()).collect();
    names.dedup();
    format!("no upstream group {name:?}; groups: {}", names.join(", "))
}

fn groups_servers(groups: &[std::sync::Arc<Group>], name: &str) -> Vec<String> {
    groups
        .iter()
        .filter(|g| g.config.name == name)
        .flat_map(|g| {
            let members = g.members.load();
            members
                .list
                .iter()
                .map(|m| format!("{} ({})", m.state.addr, m.written))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A group as the admin API shows it.
pub(crate) fn info(g: &Group) -> GroupInfo {
    use std::sync::atomic::Ordering::Relaxed;
    let c = &g.config;
    let members = g.members.load();
    GroupInfo {
        name: c.name.clone(),
        implicit: c.implicit,
        balance: match c.balance {
            Balance::RoundRobin => "round_robin",
            Balance::LeastRequest => "least_request",
            Balance::Random => "random",
            Balance::Hash(_) => "hash",
        }
        .into(),
        on_all_unhealthy: match c.on_all_unhealthy {
            crate::config::AllUnhealthy::TryAll => "try_all",
            crate::config::AllUnhealthy::Fail => "fail",
        }
        .into(),
        health_checks: c.health_check.is_some(),
        failing_open: g.state.failing_open(),
        failed_open: g.state.failed_open.load(Relaxed),
        no_server: g.state.no_server.load(Relaxed),
        retries: RETRY_REASONS
            .iter()
            .zip(&g.state.retries)
            .map(|(r, n)| (r.to_string(), n.load(Relaxed)))
            .collect(),
        retry_budget_exhausted: g.state.budget_exhausted.load(Relaxed),
        servers: members.list.iter().map(server_info).collect(),
    }
}

/// One member as the admin API shows it.
pub(crate) fn server_info(m: &Member) -> ServerInfo {
    use std::sync::atomic::Ordering::Relaxed;
    let s = &m.state;
    let now = now_ms();
    let ejected = s.ejected_until(now);
    let state = match (s.admin(), ejected) {
        (Admin::Disabled, _) => "disabled",
        (Admin::Draining, _) => "draining",
        (Admin::Enabled, Some(_)) => "ejected",
        (Admin::Enabled, None) if !s.healthy() => "unhealthy",
        (Admin::Enabled, None) => "healthy",
    };
    let failures = s.failures();
    let by_kind: BTreeMap<String, u64> = FAILURE_KINDS
        .iter()
        .zip(failures)
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.to_string(), n))
        .collect();
    let check = s.last_check.load_full();
    let transition = s.last_transition.load_full();
    ServerInfo {
        address: s.addr.to_string(),
        server: m.written.to_string(),
        weight: m.weight,
        backup: m.backup,
        state: state.into(),
        usable: s.usable(now),
        ejected_until_unix_ms: ejected.map(|until| wall_ms() + (until - now)),
        ejections: s.ejections_total.load(Relaxed),
        in_flight: u64::from(s.in_flight()),
        requests: s.requests.load(Relaxed),
        failures: failures.iter().sum(),
        failures_by_kind: by_kind,
        last_check_unix_ms: check.as_ref().map(|c| c.0),
        last_check_error: check.as_ref().and_then(|c| c.1.clone()),
        checks: s.checks.load(Relaxed),
        check_micros_total: s.check_micros.load(Relaxed),
        became_healthy: s.to_healthy.load(Relaxed),
        became_unhealthy: s.to_unhealthy.load(Relaxed),
        last_transition_unix_ms: transition.as_ref().map(|t| t.at),
        last_transition: transition.as_ref().map(|t| t.what.clone()),
    }
}

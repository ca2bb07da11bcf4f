//! `proxyctl upstreams` and `proxyctl upstream`: the groups and their servers, for people.

use proxyctl::proto::{ExplainUpstream, GroupInfo, ServerInfo};

use super::format::{table, utc_time};

/// `proxyctl upstreams [GROUP]`: per group a line, then a table of its servers.
pub fn groups(groups: &[GroupInfo]) -> String {
    if groups.is_empty() {
        return "no upstream groups\n".into();
    }
    let mut out = String::new();
    for (i, g) in groups.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let retries: u64 = g.retries.values().sum();
        out.push_str(&format!(
            "{}{}: {}, on_all_unhealthy {}, {}; retries {retries} (budget exhausted {}), \
             failed open {}, no server {}{}\n",
            g.name,
            if g.implicit { " (url)" } else { "" },
            g.balance,
            g.on_all_unhealthy,
            if g.health_checks {
                "active checks"
            } else {
                "passive checks only"
            },
            g.retry_budget_exhausted,
            g.failed_open,
            g.no_server,
            if g.failing_open {
                " — FAILING OPEN: no server is usable"
            } else {
                ""
            },
        ));
        out.push_str(&servers(&g.servers));
    }
    out
}

/// A table of servers.
pub fn servers(servers: &[ServerInfo]) -> String {
    let rows: Vec<Vec<String>> = servers
        .iter()
        .map(|s| {
            let mut state = s.state.clone();
            if let Some(until) = s.ejected_until_unix_ms {
                state.push_str(&format!(" until {}", utc_time(until)));
            }
            if s.backup {
                state.push_str(" (backup)");
            }
            let check = match (&s.last_check_unix_ms, &s.last_check_error) {
                (None, _) => "-".to_string(),
                (Some(at), None) => format!("ok {}", utc_time(*at)),
                (Some(at), Some(e)) => format!("{e} {}", utc_time(*at)),
            };
            let last = match (&s.last_transition_unix_ms, &s.last_transition) {
                (Some(at), Some(why)) => format!("{} {why}", utc_time(*at)),
                _ => "-".to_string(),
            };
            vec![
                s.address.clone(),
                s.server.clone(),
                s.weight.to_string(),
                state,
                s.in_flight.to_string(),
                s.requests.to_string(),
                s.failures.to_string(),
                check,
                last,
            ]
        })
        .collect();
    let header = [
        "ADDRESS",
        "SERVER",
        "WEIGHT",
        "STATE",
        "IN-FLIGHT",
        "REQUESTS",
        "FAILURES",
        "LAST CHECK",
        "LAST CHANGE",
    ];
    table(&header, &rows)
}

/// The `upstream:` lines of `proxyctl explain`.
pub fn explain(u: &ExplainUpstream) -> String {
    let usable = if u.usable.is_empty() {
        "none".to_string()
    } else {
        u.usable.join(", ")
    };
    format!(
        "upstream group {:?}: usable now {usable} (of {}){}\n",
        u.group,
        u.servers.len(),
        if u.failing_open { "; failing open" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_and_its_servers() {
        let g = GroupInfo {
            name: "api".into(),
            balance: "round_robin".into(),
            on_all_unhealthy: "try_all".into(),
            health_checks: true,
            servers: vec![
                ServerInfo {
                    address: "10.0.0.5:9000".into(),
                    server: "10.0.0.5:9000".into(),
                    weight: 1,
                    state: "healthy".into(),
                    requests: 12,
                    ..ServerInfo::default()
                },
                ServerInfo {
                    address: "10.0.0.6:9000".into(),
                    server: "api-b.internal:9000".into(),
                    weight: 2,
                    state: "ejected".into(),
                    ejected_until_unix_ms: Some(0),
                    failures: 5,
                    last_check_unix_ms: Some(0),
                    last_check_error: Some("status 503".into()),
                    ..ServerInfo::default()
                },
            ],
            ..GroupInfo::default()
        };
        let text = groups(&[g]);
        assert!(text.starts_with("api: round_robin, on_all_unhealthy try_all, active checks"));
        assert!(text.contains(
            "10.0.0.6:9000  api-b.internal:9000  2       ejected until 1970-01-01T00:00:00Z"
        ));
        assert!(text.contains("status 503 1970-01-01T00:00:00Z"));
        assert_eq!(groups(&[]), "no upstream groups\n");
    }
}

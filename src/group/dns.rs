//! Server names to members, always off the workers: when a snapshot is built (on the control
//! plane's build thread) and every `dns_refresh_secs` on the `zcs-dns` thread. New addresses
//! join (healthy, or waiting for their checks with `initial_state = "unhealthy"`, ramping up
//! with `slow_start_secs`); vanished ones leave — requests in flight on them finish, their idle
//! pooled connections close; a failed lookup keeps the last good answer.
//!
//! Names are looked up with the system resolver (`getaddrinfo`: `/etc/hosts`, then DNS). When
//! the environment variable [`HOSTS_ENV`] names a file in `/etc/hosts` format, names listed
//! there resolve from it alone (every line of a name adds an address) — how the tests, and an
//! operator trying a change, inject names; the file is read again at each lookup.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Fleet, Group, Member, Members};
use crate::config::UpstreamGroup;
use crate::net::upstream::UpstreamTls;

/// The environment variable naming a hosts file consulted before the system resolver.
pub const HOSTS_ENV: &str = "ZEROCOPY_HOSTS_FILE";
/// How often the DNS thread looks at what is due.
const TICK: Duration = Duration::from_millis(500);

/// The addresses of `host:port`, sorted: an IP literal is itself.
pub fn lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let mut addrs = match from_hosts_file(host, port) {
        Some(a) => a,
        None => (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
            .collect(),
    };
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(format!("{host:?} resolves to no address"));
    }
    Ok(addrs)
}

fn from_hosts_file(host: &str, port: u16) -> Option<Vec<SocketAddr>> {
    let path = std::env::var_os(HOSTS_ENV)?;
    let text = crate::fsread::read(std::path::Path::new(&path), 1 << 20).ok()?;
    let text = String::from_utf8_lossy(&text);
    let mut out = Vec::new();
    let mut named = false;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        let Some(ip) = words.next() else { continue };
        if words.any(|w| w.eq_ignore_ascii_case(host)) {
            named = true;
            if let Ok(ip) = ip.parse::<IpAddr>() {
                out.push(SocketAddr::new(ip, port));
            }
        }
    }
    named.then_some(out)
}

/// The members of `config` now: each server's addresses (looked up; a failed lookup keeps the
/// last good answer, and is an error only when there is none), each with its state from
/// `fleet`. `at_start`: the daemon's first load (nothing ramps up).
pub fn members(
    config: &UpstreamGroup,
    tls: Option<&Arc<rustls::ClientConfig>>,
    fleet: &Fleet,
    at_start: bool,
) -> Result<Members, String> {
    let mut list = Vec::new();
    for s in &config.servers {
        // Each server is verified as its own host unless the group names one for all.
        let tls = match tls {
            None => None,
            Some(c) => {
                let name = config.tls_server_name.as_deref().unwrap_or(&s.host);
                Some(UpstreamTls {
                    config: c.clone(),
                    name: crate::tls::client::server_name(name)?,
                })
            }
        };
        let addrs = match lookup(&s.host, s.port) {
            Ok(a) => {
                fleet.set_last_good(&config.name, &s.host, s.port, &a);
                a
            }
            Err(e) => match fleet.last_good(&config.name, &s.host, s.port) {
                Some(a) => {
                    log::warn!(
                        "upstream group {:?}: {e}; keeping its last addresses",
                        config.name
                    );
                    a
                }
                None => return Err(e),
            },
        };
        let (authority, written): (Arc<str>, Arc<str>) =
            (s.authority().into(), s.authority().into());
        for addr in addrs {
            if list.iter().any(|m: &Member| m.state.addr == addr) {
                continue; // two names of one address: one member
            }
            list.push(Member {
                state: fleet.server(&config.name, addr, config.initial_unhealthy, at_start),
                weight: s.weight,
                backup: s.backup,
                authority: authority.clone(),
                written: written.clone(),
                tls_name: tls.as_ref().map(|t| Arc::from(t.name.to_str().as_ref())),
                tls: tls.clone(),
            });
        }
    }
    Ok(Members::new(list))
}

/// Starts the `zcs-dns` thread: every half second it takes the serving groups from `groups`,
/// re-resolves those due, swaps in changed memberships, and forgets the state of servers
/// nothing uses any more.
pub fn spawn(
    groups: impl Fn() -> Vec<Arc<Group>> + Send + 'static,
    fleet: Arc<Fleet>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("zcs-dns".into())
        .spawn(move || {
            let mut last: HashMap<String, Instant> = HashMap::new();
            loop {
                std::thread::sleep(TICK);
                for g in groups() {
                    let c = &g.config;
                    if c.dns_refresh.is_zero() || !c.servers.iter().any(|s| s.is_name()) {
                        continue;
                    }
                    let at = last.entry(c.name.clone()).or_insert_with(Instant::now);
                    if at.elapsed() < c.dns_refresh {
                        continue;
                    }
                    *at = Instant::now();
                    refresh(&g, &fleet);
                }
                fleet.prune();
            }
        })?;
    Ok(())
}

/// Re-resolves `g`'s servers; swaps in the new membership when the addresses changed.
fn refresh(g: &Group, fleet: &Fleet) {
    let fresh = match members(&g.config, g.tls.as_ref(), fleet, false) {
        Ok(m) => m,
        Err(e) => {
            log::warn!(
                "upstream group {:?}: {e}; keeping its servers",
                g.config.name
            );
            return;
        }
    };
    let old = g.members.load();
    let addrs = |m: &Members| {
        let mut a: Vec<SocketAddr> = m.list.iter().map(|x| x.state.addr).collect();
        a.sort();
        a
    };
    if addrs(&old) == addrs(&fresh) {
        return;
    }
    for m in &old.list {
        if !fresh.list.iter().any(|n| n.state.addr == m.state.addr) {
            log::info!(
                "upstream group {:?}: {} ({}) left DNS; draining it",
                g.config.name,
                m.state.addr,
                m.written
            );
            m.state.set_removed(true);
        }
    }
    for m in &fresh.list {
        if !old.list.iter().any(|o| o.state.addr == m.state.addr) {
            log::info!(
                "upstream group {:?}: {} ({}) joined from DNS{}",
                g.config.name,
                m.state.addr,
                m.written,
                if m.state.healthy() {
                    ""
                } else {
                    "; waiting for its checks"
                }
            );
            m.state.note("joined from DNS".into());
        }
    }
    g.members.store(Arc::new(fresh));
}

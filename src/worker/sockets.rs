//! The listening sockets: one per listener and worker, in one `SO_REUSEPORT` group per
//! address, made before the workers start — bound here, or adopted from the process this one
//! replaces (a binary upgrade passes its sockets, so not a connection in their queues is lost)
//! or from systemd (socket activation).

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::config::{Listener, ReuseportBalancing};

/// Backlog of every socket the daemon binds itself.
const BACKLOG: i32 = 4096;

/// Where a listener's sockets came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Bound by this process.
    Bound,
    /// Passed by the process this one replaced.
    Upgrade,
    /// Passed by systemd (`LISTEN_FDS`): one socket, shared by the workers.
    Systemd,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bound => "bound",
            Self::Upgrade => "inherited",
            Self::Systemd => "systemd",
        }
    }
}

/// One listener's sockets: one per worker, in worker order.
#[derive(Debug)]
pub struct Group {
    pub address: SocketAddr,
    pub sockets: Vec<OwnedFd>,
    pub source: Source,
    /// `TCP_NODELAY` is set on the sockets (connections inherit it).
    pub nodelay: bool,
}

/// Sockets handed to this process, by the address they listen on.
#[derive(Debug, Default)]
pub struct Inherited {
    pub groups: Vec<Group>,
    /// What was wrong with what was passed, found before the log was up: logged by
    /// [`prepare`].
    pub warnings: Vec<String>,
}

impl Inherited {
    fn take(&mut self, address: SocketAddr) -> Option<Group> {
        let at = self.groups.iter().position(|g| g.address == address)?;
        Some(self.groups.swap_remove(at))
    }
}

/// Makes `workers` sockets for each listener, taking inherited ones where they match its
/// address. Inherited sockets no listener takes are closed (the process that passed them
/// keeps its own copies).
pub fn prepare(
    listeners: &[Listener],
    workers: usize,
    inherited: &mut Inherited,
    balancing: ReuseportBalancing,
) -> Result<Vec<Group>, String> {
    for w in inherited.warnings.drain(..) {
        log::warn!("{w}");
    }
    let mut out = Vec::with_capacity(listeners.len());
    for l in listeners {
        let group = match inherited.take(l.address) {
            Some(g) => adopt(g, l, workers)?,
            None => bind(l, workers)?,
        };
        if group.source == Source::Bound && balancing == ReuseportBalancing::Cbpf {
            cbpf(&group, workers);
        }
        let mut group = group;
        for s in &group.sockets {
            // Accepted connections inherit it; where the listener refuses, each connection
            // sets it (the registry's `nodelay_inherited`).
            if let Err(e) = crate::net::io::set_listener_nodelay(s.as_raw_fd()) {
                log::debug!("{}: TCP_NODELAY on the listener: {e}", l.address);
                group.nodelay = false;
            }
        }
        out.push(group);
    }
    for g in inherited.groups.drain(..) {
        log::warn!(
            "a listening socket for {} was passed in ({}), and no listener has that address; \
             closed",
            g.address,
            g.source.as_str()
        );
    }
    Ok(out)
}

/// An inherited group, as one socket per worker.
fn adopt(mut g: Group, l: &Listener, workers: usize) -> Result<Group, String> {
    if let Some(first) = g.sockets.first() {
        let socket = socket2::SockRef::from(first);
        let v6_only = l
            .address
            .is_ipv6()
            .then(|| socket.only_v6().unwrap_or(false));
        if v6_only.is_some_and(|on| on != l.ipv6_only) {
            return Err(format!(
                "{}.ipv6_only: the socket passed in for {} has ipv6_only = {}; a socket keeps \
                 it, so changing it needs a restart",
                l.origin.key_path, l.address, !l.ipv6_only
            ));
        }
    }
    match g.source {
        Source::Systemd => {
            let Some(first) = g.sockets.first() else {
                return Err(format!("systemd passed no socket for {}", g.address));
            };
            let mut all = Vec::with_capacity(workers);
            for _ in 0..workers {
                let dup = first
                    .try_clone()
                    .map_err(|e| format!("cannot duplicate the socket of {}: {e}", g.address))?;
                all.push(dup);
            }
            set_nonblocking_all(&all, g.address)?;
            g.sockets = all;
            Ok(g)
        }
        Source::Upgrade | Source::Bound if g.sockets.len() == workers => Ok(g),
        Source::Upgrade | Source::Bound => Err(format!(
            "the running daemon has {} workers, this config asks for {workers}: a binary upgrade \
             keeps the listening sockets (one per worker), so [server] threads cannot change in \
             one; restart the daemon to change it",
            g.sockets.len()
        )),
    }
}

fn set_nonblocking_all(sockets: &[OwnedFd], address: SocketAddr) -> Result<(), String> {
    for s in sockets {
        crate::net::io::set_nonblocking(s.as_raw_fd())
            .map_err(|e| format!("{address}: cannot make the socket non-blocking: {e}"))?;
    }
    Ok(())
}

/// Binds `workers` sockets to the listener's address in one `SO_REUSEPORT` group.
fn bind(l: &Listener, workers: usize) -> Result<Group, String> {
    let fail = |e: std::io::Error| format!("cannot listen on {}: {e}", l.address);
    let mut sockets = Vec::with_capacity(workers);
    for _ in 0..workers {
        let domain = socket2::Domain::for_address(l.address);
        let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))
            .map_err(fail)?;
        s.set_nonblocking(true).map_err(fail)?;
        s.set_reuse_port(true).map_err(fail)?;
        s.set_reuse_address(true).map_err(fail)?;
        if l.address.is_ipv6() {
            s.set_only_v6(l.ipv6_only).map_err(fail)?;
        }
        s.bind(&l.address.into()).map_err(fail)?;
        s.listen(BACKLOG).map_err(fail)?;
        sockets.push(OwnedFd::from(s));
    }
    Ok(Group {
        address: l.address,
        sockets,
        source: Source::Bound,
        nodelay: true,
    })
}

/// `reuseport_balancing = "cbpf"`: the program on the group (attached through each socket,
/// as the kernel keeps one per group).
fn cbpf(group: &Group, workers: usize) {
    let workers = u32::try_from(workers).unwrap_or(u32::MAX);
    for s in &group.sockets {
        if let Err(e) = super::balance::attach(s.as_raw_fd(), workers) {
            log::warn!(
                "reuseport_balancing = \"cbpf\": cannot attach the program on {} ({e}); the \
                 kernel's hash balances connections instead",
                group.address
            );
            return;
        }
    }
    log::info!(
        "reuseport_balancing = \"cbpf\": connections go to workers by client address ({})",
        group.address
    );
}

/// The sockets systemd passed (socket activation: `LISTEN_PID` is this process,
/// `LISTEN_FDS` descriptors from 3), by the address each listens on; the variables are
/// removed so that no child takes them for its own. Call before any thread starts.
pub fn from_systemd() -> Inherited {
    let mut inherited = Inherited::default();
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok())
        .unwrap_or(0);
    if !ours || count <= 0 {
        return inherited;
    }
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    const FIRST: i32 = 3;
    for fd in FIRST..FIRST.saturating_add(count) {
        // SAFETY: fcntl on a number: marks it close-on-exec if it is open, else fails.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            inherited.warnings.push(format!(
                "socket activation: LISTEN_FDS names descriptor {fd}, which is not open"
            ));
            continue;
        }
        // SAFETY: systemd passed descriptors FIRST.. (open, checked above) for this process
        // to own.
        let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let socket = socket2::Socket::from(owned);
        let listening = socket.is_listener().unwrap_or(false)
            && socket.r#type().is_ok_and(|t| t == socket2::Type::STREAM);
        let address = socket.local_addr().ok().and_then(|a| a.as_socket());
        let Some(address) = address.filter(|_| listening) else {
            inherited.warnings.push(format!(
                "socket activation: descriptor {fd} is not a listening TCP socket; closed"
            ));
            continue;
        };
        if inherited.groups.iter().any(|g| g.address == address) {
            inherited.warnings.push(format!(
                "socket activation: a second socket for {address}; closed"
            ));
            continue;
        }
        inherited.groups.push(Group {
            address,
            sockets: vec![OwnedFd::from(socket)],
            source: Source::Systemd,
            nodelay: true,
        });
    }
    inherited
}

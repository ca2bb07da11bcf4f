//! Active health checks, once per daemon: the `zcs-health` thread runs a small monoio runtime
//! of its own (never a worker's) with one task per (group, server) that has checks, and
//! publishes verdicts through the servers' atomics.
//!
//! A check is an HTTP request (`GET`/`HEAD` of `path`, `Host` the server's `host:port`
//! unless `host` is set; a status in `expect_status` passes) or a TCP connect, over TLS when
//! the group speaks TLS, all within `timeout_ms`. A healthy server turns unhealthy at its
//! `unhealthy_threshold`-th failing check in a row, an unhealthy one healthy at its
//! `healthy_threshold`-th passing one. Checks repeat every `interval_ms` (`unhealthy_interval_ms`
//! while down) ± `jitter_percent`, the first after a random part of one interval so that
//! servers are not checked in step. A disabled server is not checked.
//!
//! The thread also notes ejections that ended (logged once), and sets the servers of groups
//! without checks healthy (a reload that removed a group's checks must not leave its servers
//! down).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{now_ms, Admin, Group, Member};
use crate::config::{CheckKind, HealthCheck, UpstreamProtocol};
use crate::net::h2io::{client_handshake, ClientSettings, UPSTREAM_MAX_HEADER_LIST};
use crate::net::upstream::UpstreamConn;

/// How often the thread looks for new, changed and gone servers.
const TICK: Duration = Duration::from_millis(100);
/// Largest check response head read.
const MAX_HEAD: usize = 16 * 1024;

/// Starts the `zcs-health` thread over the serving groups `groups` returns.
pub fn spawn(groups: impl Fn() -> Vec<Arc<Group>> + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("zcs-health".into())
        .spawn(move || {
            let runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build();
            match runtime {
                Ok(mut rt) => rt.block_on(run(groups)),
                Err(e) => log::error!("health checks cannot run: {e}"),
            }
        })?;
    Ok(())
}

/// A running check task: its flag to stop, and the group and member it checks (replaced in
/// place when a reload or a DNS refresh brings the same server with the same check settings,
/// so that a reload does not restart the checks' rhythm).
struct Task {
    alive: Rc<Cell<bool>>,
    target: Rc<RefCell<(Arc<Group>, Member)>>,
}

/// Whether `a` and `b` check a server the same way.
fn same_check(a: &Group, b: &Group) -> bool {
    a.config.health_check == b.config.health_check
        && a.config.tls == b.config.tls
        && a.config.tls_server_name == b.config.tls_server_name
        && a.config.ca_file == b.config.ca_file
}

async fn run(groups: impl Fn() -> Vec<Arc<Group>>) {
    let mut tasks: HashMap<(String, SocketAddr), Task> = HashMap::new();
    loop {
        let now = now_ms();
        let mut seen = HashSet::new();
        for g in groups() {
            let members = g.members.load();
            for m in &members.list {
                if m.state.ejection_ended(now) {
                    let what = "back from ejection".to_string();
                    log::info!("upstream {:?} {}: {what}", g.config.name, m.state.addr);
                    m.state.note(what);
                }
                let Some(check) = &g.config.health_check else {
                    if m.state.set_healthy(true) {
                        m.state
                            .note("healthy: the group has no active checks".into());
                    }
                    continue;
                };
                let key = (g.config.name.clone(), m.state.addr);
                seen.insert(key.clone());
                if let Some(t) = tasks.get(&key) {
                    let mut target = t.target.borrow_mut();
                    if Arc::ptr_eq(&target.0, &g) {
                        continue;
                    }
                    if same_check(&target.0, &g) {
                        *target = (g.clone(), m.clone());
                        continue;
                    }
                }
                if let Some(old) = tasks.remove(&key) {
                    old.alive.set(false);
                }
                let alive = Rc::new(Cell::new(true));
                let target = Rc::new(RefCell::new((g.clone(), m.clone())));
                monoio::spawn(check_loop(target.clone(), check.clone(), alive.clone()));
                tasks.insert(key, Task { alive, target });
            }
        }
        tasks.retain(|key, t| {
            let keep = seen.contains(key);
            if !keep {
                t.alive.set(false);
            }
            keep
        });
        monoio::time::sleep(TICK).await;
    }
}

/// Sleeps `d`, or less once `alive` goes false (looked at every [`TICK`]).
async fn nap(d: Duration, alive: &Cell<bool>) {
    let until = Instant::now() + d;
    while alive.get() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        monoio::time::sleep(left.min(TICK)).await;
    }
}

/// Checks one server until `alive` goes false.
async fn check_loop(
    target: Rc<RefCell<(Arc<Group>, Member)>>,
    check: HealthCheck,
    alive: Rc<Cell<bool>>,
) {
    nap(check.interval.mul_f64(fastrand::f64()), &alive).await;
    while alive.get() {
        let (g, m) = target.borrow().clone();
        let s = &m.state;
        if s.admin() != Admin::Disabled {
            let started = Instant::now();
            let result = probe(&g, &m, &check).await;
            let took = started.elapsed();
            if !alive.get() {
                return;
            }
            s.checks.fetch_add(1, Relaxed);
            s.check_micros.fetch_add(took.as_micros() as u64, Relaxed);
            s.last_check.store(Some(Arc::new((
                super::state::wall_ms(),
                result.clone().err(),
            ))));
            verdict(&g, &m, &check, result);
        }
        let base = if s.healthy() {
            check.interval
        } else {
            check.unhealthy_interval
        };
        drop(g);
        let jitter = f64::from(check.jitter_percent) / 100.0;
        let factor = 1.0 + jitter * (fastrand::f64() * 2.0 - 1.0);
        nap(base.mul_f64(factor.max(0.0)), &alive).await;
    }
}

/// Applies one check's result: thresholds, transitions, their log and counters.
fn verdict(g: &Group, m: &Member, check: &HealthCheck, result: Result<(), String>) {
    let s = &m.state;
    match result {
        Ok(()) => {
            s.fails.store(0, Relaxed);
            let n = s.passes.fetch_add(1, Relaxed) + 1;
            if !s.healthy() && n >= check.healthy_threshold && s.set_healthy(true) {
                s.to_healthy.fetch_add(1, Relaxed);
                let what = format!("healthy after {n} passing checks");
                log::info!("upstream {:?} {}: {what}", g.config.name, s.addr);
                s.note(what);
            }
        }
        Err(e) => {
            s.passes.store(0, Relaxed);
            let n = s.fails.fetch_add(1, Relaxed) + 1;
            if s.healthy() && n >= check.unhealthy_threshold && s.set_healthy(false) {
                s.to_unhealthy.fetch_add(1, Relaxed);
                let what = format!("unhealthy after {n} failing checks (last: {e})");
                log::warn!("upstream {:?} {}: {what}", g.config.name, s.addr);
                s.note(what);
            }
        }
    }
}

/// One check of `m`, within the check's timeout.
async fn probe(g: &Group, m: &Member, check: &HealthCheck) -> Result<(), String> {
    let addr = match check.port {
        Some(p) => SocketAddr::new(m.state.addr.ip(), p),
        None => m.state.addr,
    };
    let deadline = Instant::now() + check.timeout;
    let attempt = async {
        let mut conn = UpstreamConn::connect(&[addr], m.tls.as_ref(), check.timeout)
            .await
            .map_err(|e| e.detail.to_string())?;
        if g.config.protocol == UpstreamProtocol::H2 {
            return probe_h2(g, m, conn, &check.kind, deadline).await;
        }
        let CheckKind::Http {
            path,
            head,
            host,
            expect,
        } = &check.kind
        else {
            return Ok(());
        };
        let method = if *head { "HEAD" } else { "GET" };
        let host = host.as_deref().unwrap_or(&m.authority);
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: zerocopy-server health check\r\nConnection: close\r\n\r\n"
        );
        conn.send(request.as_bytes(), false)
            .await
            .map_err(|e| e.detail.to_string())?;
        let mut buf = Vec::with_capacity(1024);
        loop {
            // Every complete head in what came, interim (1xx) ones skipped, before reading more.
            loop {
                match crate::http::h1::response::parse(&buf) {
                    Ok(Some((resp, n))) if resp.is_interim() => {
                        buf.drain(..n);
                    }
                    Ok(Some((resp, _))) => {
                        return if expect.iter().any(|e| e.matches(resp.status)) {
                            Ok(())
                        } else {
                            Err(format!("status {}", resp.status))
                        };
                    }
                    Ok(None) if buf.len() > MAX_HEAD => {
                        return Err("response head too large".into())
                    }
                    Ok(None) => break,
                    Err(reason) => return Err(format!("not HTTP: {reason}")),
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match conn.recv_into(&mut buf, 4096, left).await {
                Ok(0) => return Err("closed without a response".into()),
                Ok(_) => {}
                Err(_) => return Err("no response in time".into()),
            }
        }
    };
    match monoio::time::timeout(check.timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {} ms", check.timeout.as_millis())),
    }
}

/// A check over HTTP/2 (`protocol = "h2"`): the connection's preface and settings exchange
/// (all a `tcp` check asks of an HTTP/2 server), then for an HTTP check one stream and its
/// response head's status.
async fn probe_h2(
    g: &Group,
    m: &Member,
    conn: UpstreamConn,
    kind: &CheckKind,
    deadline: Instant,
) -> Result<(), String> {
    let settings = ClientSettings {
        stream_window: 65_535,
        connection_window: 65_535,
        max_header_list: UPSTREAM_MAX_HEADER_LIST,
    };
    let (send, connection) = client_handshake(conn, &settings, deadline)
        .await
        .map_err(|e| e.detail.to_string())?;
    let CheckKind::Http {
        path,
        head,
        host,
        expect,
    } = kind
    else {
        return Ok(());
    };
    let scheme = if g.config.tls { "https" } else { "http" };
    let host = host.as_deref().unwrap_or(&m.authority);
    let mut req = http::Request::new(());
    *req.uri_mut() = format!("{scheme}://{host}{path}")
        .parse()
        .map_err(|e| format!("the check's request: {e}"))?;
    *req.method_mut() = if *head {
        http::Method::HEAD
    } else {
        http::Method::GET
    };
    req.headers_mut().insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static("zerocopy-server health check"),
    );
    let exchange = async {
        let mut send = send.ready().await.map_err(|e| e.to_string())?;
        let (response, _) = send.send_request(req, true).map_err(|e| e.to_string())?;
        response.await.map_err(|e| e.to_string())
    };
    // The connection is driven while the stream waits for its answer.
    let connection = std::pin::pin!(connection);
    let status = monoio::select! {
        r = exchange => r?.status().as_u16(),
        ended = connection => {
            return Err(match ended {
                Ok(()) => "closed without a response".into(),
                Err(e) => format!("connection failed: {e}"),
            })
        }
    };
    if expect.iter().any(|e| e.matches(status)) {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}

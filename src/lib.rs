//! zerocopy-server: a reverse proxy and static file server for Linux, on io_uring.
//!
//! # Architecture tour
//!
//! Two planes and one narrow channel between them: the control thread publishes an immutable
//! [`snapshot::Snapshot`] through `arc-swap`; workers load it once per request and never block
//! on it.
//!
//! ## The rooms
//!
//! | room | holds | uses |
//! |---|---|---|
//! | [`worker`] | the worker threads: runtimes, listeners, accept loops, the drain | `server` |
//! | [`server`] | one connection's lifecycle, one request's phases, the HTTP/1 and HTTP/2 sides of an exchange ([`server::h1`], [`server::h2`]), the worker's state ([`server::WorkerCtx`]) and idle registry | backends, `exchange`, `http`, `net` |
//! | [`exchange`] | [`exchange::Downstream`]: what a backend sees of the client, whatever the protocol | `http`, `net` |
//! | [`files`], [`proxy`] | the backends (and the answers without one: `Redirect`, `Respond`, in `server/request.rs`) | `exchange`, `http`, `net`, `group` |
//! | [`site`] | a route's response rules: header rules, error pages, compression ([`site::Shaped`], a `Downstream` around the protocol's) | `exchange`, `http`, `config`, `net` |
//! | [`group`] | upstream groups at run time: members, balancing, server state shared by all workers, passive ejection, the health-check and DNS threads | `config`, `http`, `net` |
//! | [`http`] | protocol-neutral heads, methods, paths, the HTTP/1 codec ([`http::h1`]) and HTTP/2 messages as heads ([`http::h2`]) | — |
//! | [`net`] | the transport: client and upstream streams, I/O, rustls driving, splice, tunnel, raw syscalls ([`net::sys`]), the stream HTTP/2 runs on ([`net::h2io`]) | `tls` |
//! | [`route`], [`snapshot`], [`preload`] | the routing table and what a snapshot holds | backends' types |
//! | [`control`] | the control loop: reload, drain, binary upgrade, admin answers, signals, watcher | `snapshot`, `worker`, `handover` |
//! | [`handover`] | a binary upgrade's channel between two processes: messages, sockets passed with `SCM_RIGHTS` | `worker` (its socket groups) |
//! | [`config`] | the configuration's types and its parser, every error with file, line, key path | — |
//! | [`telemetry`] | request ids, W3C trace context, span export to an OTLP collector | `config`, `http`, `security` |
//! | [`cli`] | the daemon's command line (its man page and completions are generated from it) | `worker` |
//! | [`shared`], [`metrics`], [`limiter`], [`security`], [`tls`], [`logging`], [`access_log`] | what both planes share, counters, policy, certificates, logs | |
//!
//! No room imports one that imports it back.
//!
//! ## One request's path
//!
//! 1. [`worker`] (`worker_main`) accepts a connection and spawns
//!    [`server::connection::serve`]; a TLS listener's handshake is `server/tls.rs`. A client
//!    that chose HTTP/2 (ALPN `h2`, or h2c's preface) goes to [`server::h2`] instead, whose
//!    streams each run steps 3–7 with an `H2Downstream` (`server/h2/stream.rs`).
//! 2. The connection's [`server::connection`] state machine waits idle (or parks:
//!    `server/park.rs`) until bytes arrive, then runs one request (`server/request.rs`,
//!    `Conn::request`):
//! 3. the head is parsed by [`http::h1::request::parse`]; the request is counted in flight and
//!    gets the current snapshot;
//! 4. it is routed by [`route::Router::lookup`] on the path [`http::path::normalize`]d;
//! 5. the route's policy applies (addresses via [`security::client_address`], methods, the
//!    [`limiter`], head sizes);
//! 6. the backend answers through an [`server::h1::H1Downstream`] — wrapped in
//!    [`site::Shaped`] when the route has header rules, error pages to intercept or
//!    compression — [`files::serve`] (a file
//!    from the cache, memory or `sendfile`) or [`proxy::forward`] (a server of the route's
//!    group chosen by [`group::Group::select`], retried on another one by the group's rules,
//!    an upstream connection from the worker's pool, bodies through [`http::h1::body`]; or a
//!    stream on a multiplexed connection for an HTTP/2 group, `proxy/h2.rs`), or a Redirect or
//!    Respond route's fixed answer; a failure becomes a status in `answer_error`
//!    ([`error::Error::status`]), with the route's error page ([`site::Site::error_head`]);
//! 7. the request is counted on its route ([`metrics`]) and logged ([`access_log`]).
//!
//! ## One reload's path
//!
//! 1. A file event ([`control::watch`]), `SIGHUP` ([`control`]'s signal thread) or `proxyctl
//!    reload` ([`control::admin`]) becomes an [`control::Event`] on the control loop
//!    (`control/mod.rs`).
//! 2. `control/reload.rs` reads the inputs (capped, non-blocking: [`fsread`]) and starts a
//!    build on a helper thread: [`control::build::prepare`] parses ([`config`]), builds the
//!    snapshot ([`snapshot::Snapshot::build`]: routes, upstream groups resolved with their
//!    servers' state carried over from the [`group::Fleet`], memory files read, certificates)
//!    and compares it with the running one.
//! 3. Back on the loop ([`control::Event::Built`]), `control/reload.rs` publishes it
//!    ([`control::build::commit`]) or keeps the running one, and reports to the waiting
//!    clients, the log and systemd. Workers see the new snapshot at their next request.
//!
//! ## One binary upgrade's path
//!
//! 1. `proxyctl upgrade` or `SIGUSR2` reaches the loop; `control/upgrade.rs` starts the new
//!    binary on a helper thread with one end of a [`handover::Channel`].
//! 2. The new process (`main.rs`, `--upgrade-fd`) loads its config, says hello, receives every
//!    listening socket ([`worker::sockets`]: the same sockets, one per worker and listener),
//!    the admin socket and the metrics listener, starts its workers and says ready.
//! 3. Back on the old loop ([`control::Event::Upgraded`]): it stops its admin and metrics
//!    threads, tells systemd the new main pid, and drains; the workers cancel their accepts and
//!    close their copies of the sockets. Any failure before "ready" kills the new process, and
//!    the old one, which never stopped accepting, reports it.
//!
//! Beside the two planes, two threads serve the upstream groups, off the workers and the
//! control loop: `zcs-health` runs every active check ([`group::health`]) and `zcs-dns`
//! re-resolves server names ([`group::dns`]); both publish through the servers' atomics and
//! the groups' member lists.
//!
//! `../shared/DESIGN.md` of the project draws the whole picture.

pub mod access_log;
pub mod cli;
pub mod config;
pub mod control;
pub mod error;
pub mod exchange;
pub mod files;
pub mod fsread;
pub mod group;
pub mod handover;
pub mod http;
pub mod limiter;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod net;
pub mod preload;
pub mod privileges;
pub mod proxy;
pub mod route;
pub mod security;
pub mod server;
pub mod shared;
pub mod site;
pub mod snapshot;
pub mod telemetry;
pub mod tls;
pub mod worker;

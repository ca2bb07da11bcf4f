//! `proxyctl`: the admin CLI of zerocopy-server.
//!
//! Sends one command over the daemon's admin socket (newline-delimited JSON, see
//! [`proxyctl::proto`]) and prints the answer, for people or, with `--json`, for programs.
//!
//! Exit codes: 0 when the daemon did what was asked; 1 when it answered with a failure (an
//! `error` response, a refused reload or config, no matching route, a drain cut short); 2 when
//! there was no usable conversation (no socket, no permission, another protocol version, a
//! garbled answer) or the command line is wrong.

mod cli;

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use cli::client::{self, Failure, Payload, DEFAULT_TIMEOUT, DRAIN_GRACE, EXIT_FAILED, EXIT_OK};
use cli::format;
use proxyctl::args::{Action, Args, Command};
use proxyctl::proto::{
    self, CheckReport, DrainProgress, Explain, ReloadReport, Request, RouteInfo, Stats,
    UpgradeProgress, UpgradeReport,
};

/// How often `proxyctl stats --watch` refreshes.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let args = Args::parse();
    let stdout = io::stdout();
    let stderr = io::stderr();
    ExitCode::from(execute(&args, &mut stdout.lock(), &mut stderr.lock()))
}

/// Runs the command of `args`, printing to `out` and `err`; returns the exit code.
fn execute(args: &Args, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    match run(args, out, err) {
        Ok(code) => code,
        Err(failure) => {
            emit(err, &format!("proxyctl: {failure}\n"));
            failure.exit_code()
        }
    }
}

fn run(args: &Args, out: &mut dyn Write, err: &mut dyn Write) -> Result<u8, Failure> {
    let socket = args.socket.as_path();
    let ask = |request: &Request| client::request(socket, request, DEFAULT_TIMEOUT, no_progress);
    match &args.command {
        Command::Status => {
            let data = ask(&Request::Status)?;
            let status: proto::Status = data.decode()?;
            show(out, args.json, &data, || format::status(&status));
            Ok(EXIT_OK)
        }
        Command::Reload => {
            let data = ask(&Request::Reload)?;
            let report: ReloadReport = data.decode()?;
            if args.json {
                emit(out, &json_text(&data));
            } else if report.ok {
                emit(out, &format::reload(&report));
            } else {
                emit(err, &format::reload_failure(&report));
            }
            Ok(if report.ok { EXIT_OK } else { EXIT_FAILED })
        }
        Command::Upgrade { binary } => {
            // The daemon runs elsewhere: a relative path is the caller's.
            let binary = binary
                .as_ref()
                .map(|b| std::path::absolute(b).unwrap_or_else(|_| b.clone()));
            let request = Request::Upgrade {
                binary: binary.map(|b| b.display().to_string()),
            };
            let json = args.json;
            let mut shown = None;
            let data = client::request(socket, &request, DEFAULT_TIMEOUT, |data: &Payload| {
                let progress: UpgradeProgress = data.decode()?;
                if json {
                    emit(out, &json_text(data));
                } else if shown.as_ref() != Some(&(progress.new_pid, progress.phase.clone())) {
                    emit(out, &format::upgrade_progress(&progress));
                    shown = Some((progress.new_pid, progress.phase.clone()));
                }
                Ok(())
            })?;
            let report: UpgradeReport = data.decode()?;
            show(out, json, &data, || format::upgrade(&report));
            Ok(EXIT_OK)
        }
        Command::Drain { timeout } => {
            let request = Request::Drain {
                timeout_secs: *timeout,
            };
            // Progress arrives about once a second; the grace covers a daemon busy closing up.
            let wait = Duration::from_secs(timeout.unwrap_or(0)) + DRAIN_GRACE;
            let json = args.json;
            let data = client::request(socket, &request, wait, |data: &Payload| {
                let progress: DrainProgress = data.decode()?;
                if json {
                    emit(out, &json_text(data));
                } else {
                    emit(out, &format::drain_progress(&progress));
                }
                Ok(())
            })?;
            let last: DrainProgress = data.decode()?;
            if json {
                emit(out, &json_text(&data));
            } else {
                emit(out, &format::drain_finished(&last));
            }
            Ok(EXIT_OK)
        }
        Command::Routes => {
            let data = ask(&Request::Routes)?;
            let routes: Vec<RouteInfo> = data.decode()?;
            show(out, args.json, &data, || format::routes(&routes));
            Ok(EXIT_OK)
        }
        Command::Explain {
            host,
            path,
            method,
            from,
            accept_encoding,
        } => {
            let data = ask(&Request::Explain {
                host: host.clone(),
                path: path.clone(),
                // The default goes unsaid: older daemons know only GET.
                method: (method != "GET").then(|| method.clone()),
                client: from.clone(),
                accept_encoding: accept_encoding.clone(),
            })?;
            let explain: Explain = data.decode()?;
            show(out, args.json, &data, || format::explain(&explain));
            Ok(if explain.served() {
                EXIT_OK
            } else {
                EXIT_FAILED
            })
        }
        Command::Stats { watch, count } => {
            let data = ask(&Request::Stats)?;
            let mut earlier: Stats = data.decode()?;
            if !*watch {
                show(out, args.json, &data, || format::stats(&earlier, None));
                return Ok(EXIT_OK);
            }
            // A terminal is redrawn in place; a pipe gets one table after another.
            let clear = !args.json && io::stdout().is_terminal();
            let mut shown = 0;
            while count.is_none_or(|n| shown < n) {
                std::thread::sleep(WATCH_INTERVAL);
                let data = ask(&Request::Stats)?;
                let now: Stats = data.decode()?;
                if args.json {
                    emit(out, &json_text(&data));
                } else {
                    let table = format::stats(&now, Some(&earlier));
                    emit(
                        out,
                        &if clear {
                            format!("\x1b[H\x1b[2J{table}")
                        } else if shown > 0 {
                            format!("\n{table}")
                        } else {
                            table
                        },
                    );
                }
                earlier = now;
                shown += 1;
            }
            Ok(EXIT_OK)
        }
        Command::Upstreams { group } => {
            let data = ask(&Request::Upstreams {
                group: group.clone(),
            })?;
            let groups: Vec<proto::GroupInfo> = data.decode()?;
            show(out, args.json, &data, || cli::upstreams::groups(&groups));
            Ok(EXIT_OK)
        }
        Command::Upstream {
            group,
            address,
            action,
        } => {
            let state = match action {
                Action::Drain => proto::ServerAdmin::Drain,
                Action::Disable => proto::ServerAdmin::Disable,
                Action::Enable => proto::ServerAdmin::Enable,
            };
            let data = ask(&Request::SetServer {
                group: group.clone(),
                address: address.clone(),
                state,
            })?;
            let servers: Vec<proto::ServerInfo> = data.decode()?;
            show(out, args.json, &data, || cli::upstreams::servers(&servers));
            Ok(EXIT_OK)
        }
        Command::Check { file } => {
            let file = file.as_deref().map(absolute_utf8).transpose()?;
            // The file is read here, with this user's permissions, and sent as text.
            let text =
                match &file {
                    Some(f) => Some(std::fs::read_to_string(f).map_err(|e| {
                        Failure::BadPath(std::path::PathBuf::from(f), e.to_string())
                    })?),
                    None => None,
                };
            let data = ask(&Request::Check { file, text })?;
            let report: CheckReport = data.decode()?;
            show(out, args.json, &data, || format::check(&report));
            Ok(if report.ok { EXIT_OK } else { EXIT_FAILED })
        }
    }
}

/// Prints the payload as received (one JSON document), or `text()` for people.
fn show(out: &mut dyn Write, json_wanted: bool, data: &Payload, text: impl FnOnce() -> String) {
    let rendered = if json_wanted { json_text(data) } else { text() };
    emit(out, &rendered);
}

/// The payload's JSON text exactly as the daemon sent it, on one line.
fn json_text(data: &Payload) -> String {
    format!("{}\n", data.json())
}

/// The daemon resolves paths from its own working directory, so send it an absolute one.
fn absolute_utf8(file: &std::path::Path) -> Result<String, Failure> {
    let absolute = std::path::absolute(file)
        .map_err(|e| Failure::BadPath(file.to_path_buf(), e.to_string()))?;
    absolute
        .to_str()
        .map(str::to_string)
        .ok_or_else(|| Failure::BadPath(absolute.clone(), "not valid UTF-8".to_string()))
}

/// Only a drain expects `processing` lines; any other command ignores them.
fn no_progress(_: &Payload) -> Result<(), Failure> {
    Ok(())
}

/// Writes `text`; a closed stdout or stderr (`proxyctl status | head -1`) is not an error
/// worth a different exit code, so write errors are dropped.
fn emit(w: &mut dyn Write, text: &str) {
    let _ = w.write_all(text.as_bytes()).and_then(|()| w.flush());
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use cli::fake_daemon::FakeDaemon;
    use serde_json::Value;

    /// Parses `argv` with `--socket` pointing at `daemon`, runs it; returns code, stdout, stderr.
    fn run_against(daemon: &FakeDaemon, argv: &[&str]) -> (u8, String, String) {
        let socket = daemon.socket().to_str().unwrap();
        let mut full = vec!["proxyctl", "--socket", socket];
        full.extend_from_slice(argv);
        let args = Args::try_parse_from(full).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = execute(&args, &mut out, &mut err);
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    const STATUS: &str = r#"{"version":1,"result":"ok","data":{"state":"running","pid":4242,"uptime_secs":3723,"generation":4,"config_path":"/etc/z.toml","workers":2,"io_driver":"io_uring","connections":12,"in_flight":3,"last_reload":{"ok":false,"trigger":"file","at_unix_ms":1714564800000,"generation":4,"error":"/etc/z.toml:3:1: routes.a.target: missing","unchanged":false,"restart_required":[],"changes":{"added":[],"removed":[],"changed":[]}}}}"#;

    #[test]
    fn the_command_line_is_consistent() {
        Args::command().debug_assert();
        let socket = Args::command()
            .get_arguments()
            .find(|a| a.get_id() == "socket")
            .and_then(|a| a.get_env().map(|e| e.to_os_string()))
            .unwrap();
        assert_eq!(socket, "PROXYCTL_SOCKET");
        let args = Args::try_parse_from(["proxyctl", "routes", "--json"]).unwrap();
        assert!(args.json);
        let args = Args::try_parse_from(["proxyctl", "drain", "--timeout", "5"]).unwrap();
        assert!(matches!(args.command, Command::Drain { timeout: Some(5) }));
    }

    #[test]
    fn status_for_people_and_programs() {
        let daemon = FakeDaemon::start(&[STATUS]);
        let (code, out, err) = run_against(&daemon, &["status"]);
        assert_eq!((code, err.as_str()), (0, ""));
        assert!(out.contains("workers      2 (io_uring)\n"), "{out}");
        assert!(
            out.contains("last reload  FAILED at 2024-05-01T12:00:00Z (file): /etc/z.toml:3:1:"),
            "{out}"
        );

        let daemon = FakeDaemon::start(&[STATUS]);
        let (code, out, _) = run_against(&daemon, &["status", "--json"]);
        assert_eq!(code, 0);
        let printed: Value = serde_json::from_str(&out).unwrap();
        let sent: Value = serde_json::from_str(STATUS).unwrap();
        assert_eq!(printed, sent["data"]);
        // Byte for byte, key order included.
        assert!(
            out.starts_with(r#"{"state":"running","pid":4242,"#),
            "{out}"
        );
        assert_eq!(out.lines().count(), 1);
    }

    #[test]
    fn drain_streams_progress_until_stopped() {
        let lines = [
            r#"{"version":1,"result":"processing","data":{"connections":3,"in_flight":1,"seconds_left":10}}"#,
            r#"{"version":1,"result":"processing","data":{"connections":1,"in_flight":0,"seconds_left":9}}"#,
            r#"{"version":1,"result":"ok","data":{"connections":0,"in_flight":0,"seconds_left":0}}"#,
        ];
        let daemon = FakeDaemon::start(&lines);
        let (code, out, err) = run_against(&daemon, &["drain", "--timeout", "10"]);
        assert_eq!((code, err.as_str()), (0, ""));
        assert_eq!(
            out,
            "draining: 3 connections, 1 in flight, 10s left\n\
             draining: 1 connections, 0 in flight, 9s left\n\
             stopped\n"
        );
        assert_eq!(
            daemon.received(),
            "{\"version\":1,\"command\":\"drain\",\"timeout_secs\":10}\n"
        );

        let daemon = FakeDaemon::start(&lines);
        let (code, out, _) = run_against(&daemon, &["--json", "drain"]);
        assert_eq!(code, 0);
        assert_eq!(
            out,
            "{\"connections\":3,\"in_flight\":1,\"seconds_left\":10}\n\
             {\"connections\":1,\"in_flight\":0,\"seconds_left\":9}\n\
             {\"connections\":0,\"in_flight\":0,\"seconds_left\":0}\n"
        );
        assert_eq!(daemon.received(), "{\"version\":1,\"command\":\"drain\"}\n");
    }

    #[test]
    fn drain_cut_short_fails() {
        let daemon = FakeDaemon::start(&[
            r#"{"version":1,"result":"processing","data":{"connections":3,"in_flight":1,"seconds_left":10}}"#,
        ]);
        let (code, out, err) = run_against(&daemon, &["drain"]);
        assert_eq!(code, 1);
        assert_eq!(out, "draining: 3 connections, 1 in flight, 10s left\n");
        assert_eq!(
            err,
            "proxyctl: the daemon closed the connection before the drain finished\n"
        );
    }

    #[test]
    fn a_refused_reload_exits_1_with_the_errors_on_stderr() {
        let line = r#"{"version":1,"result":"ok","data":{"ok":false,"trigger":"admin","at_unix_ms":0,"generation":3,"error":"a.toml:1:1: x: bad\na.toml:2:1: y: worse","unchanged":false,"restart_required":[],"changes":{"added":[],"removed":[],"changed":[]}}}"#;
        let daemon = FakeDaemon::start(&[line]);
        let (code, out, err) = run_against(&daemon, &["reload"]);
        assert_eq!((code, out.as_str()), (1, ""));
        assert_eq!(
            err,
            "reload failed:\n  a.toml:1:1: x: bad\n  a.toml:2:1: y: worse\nstill serving generation 3\n"
        );

        let daemon = FakeDaemon::start(&[line]);
        let (code, out, err) = run_against(&daemon, &["reload", "--json"]);
        assert_eq!((code, err.as_str()), (1, ""));
        let printed: ReloadReport = serde_json::from_str(&out).unwrap();
        assert!(!printed.ok);
    }

    #[test]
    fn a_good_reload_exits_0() {
        let daemon = FakeDaemon::start(&[
            r#"{"version":1,"result":"ok","data":{"ok":true,"trigger":"admin","at_unix_ms":0,"generation":5,"error":null,"unchanged":false,"restart_required":["listen"],"changes":{"added":[{"host":"a.example","prefix":"/x"}],"removed":[],"changed":[]}}}"#,
        ]);
        let (code, out, err) = run_against(&daemon, &["reload"]);
        assert_eq!((code, err.as_str()), (0, ""));
        assert_eq!(
            out,
            "reloaded: generation 5\n+ a.example/x\nrestart required: listen\n"
        );
    }

    #[test]
    fn explain_without_a_match_exits_1() {
        let daemon = FakeDaemon::start(&[
            r#"{"version":1,"result":"ok","data":{"matched":false,"host":"x.example","path":"/","prefix":null,"backend":null,"resolved":null,"policy":null,"reason":"no route for host x.example"}}"#,
        ]);
        let (code, out, _) = run_against(&daemon, &["explain", "X.example:8080", "/"]);
        assert_eq!(code, 1);
        assert_eq!(out, "no route: no route for host x.example\n");
        assert_eq!(
            daemon.received(),
            "{\"version\":1,\"command\":\"explain\",\"host\":\"X.example:8080\",\"path\":\"/\"}\n"
        );
    }

    #[test]
    fn check_sends_an_absolute_path() {
        let daemon = FakeDaemon::start(&[
            r#"{"version":1,"result":"ok","data":{"ok":true,"file":"/x/new.toml","errors":[],"changes":{"added":[],"removed":[],"changed":[]},"restart_required":[]}}"#,
        ]);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("new.toml");
        std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:1\"\n").unwrap();
        let (code, out, _) = run_against(&daemon, &["check", file.to_str().unwrap()]);
        assert_eq!(code, 0);
        assert_eq!(out, "ok: /x/new.toml\nno route changes\n");
        let received: Value = serde_json::from_str(&daemon.received()).unwrap();
        assert_eq!(received["command"], "check");
        assert_eq!(received["file"], file.to_str().unwrap());
        // The text travels with the request: the daemon reads no file for a check.
        assert_eq!(received["text"], "[server]\nlisten = \"127.0.0.1:1\"\n");
        // A file this user cannot read is an error here, before the daemon is asked.
        let (code, _, err) = run_against(&daemon, &["check", "/nonexistent/x.toml"]);
        assert_eq!(code, 2);
        assert!(err.contains("/nonexistent/x.toml"), "{err}");
    }

    #[test]
    fn an_error_response_exits_1() {
        let daemon = FakeDaemon::start(&[
            r#"{"version":1,"result":"error","error":"a drain is in progress"}"#,
        ]);
        let (code, out, err) = run_against(&daemon, &["routes"]);
        assert_eq!((code, out.as_str()), (1, ""));
        assert_eq!(err, "proxyctl: a drain is in progress\n");
    }

    #[test]
    fn another_protocol_version_exits_2_with_advice() {
        let daemon = FakeDaemon::start(&[r#"{"version":2,"result":"ok","data":[]}"#]);
        let (code, out, err) = run_against(&daemon, &["routes"]);
        assert_eq!((code, out.as_str()), (2, ""));
        assert_eq!(
            err,
            format!("proxyctl: {}\n", proto::DecodeError::Version { theirs: 2 })
        );
        assert!(err.contains("use the proxyctl that ships with the running zerocopy-server"));
    }

    #[test]
    fn a_payload_of_the_wrong_shape_exits_2() {
        let daemon = FakeDaemon::start(&[r#"{"version":1,"result":"ok","data":{"not":"routes"}}"#]);
        let (code, _, err) = run_against(&daemon, &["routes", "--json"]);
        assert_eq!(code, 2);
        assert!(
            err.starts_with("proxyctl: malformed admin message:"),
            "{err}"
        );
    }
}

//! Drain, disable and enable through `proxyctl` under load; `upstreams`, `explain`, metrics.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use super::*;

/// Client threads sending GETs until stopped; counts successes and failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                std::thread::spawn(move || {
                    let mut conn = Conn::new(addr);
                    while !stop.load(SeqCst) {
                        match conn.get("/") {
                            Ok((200, _)) => {
                                ok.fetch_add(1, SeqCst);
                            }
                            Ok((s, b)) => failed.lock().unwrap().push(format!("{s} {b}")),
                            Err(e) => failed.lock().unwrap().push(e),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            threads,
        }
    }

    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        let failed = self.failed.lock().unwrap().clone();
        (self.ok.load(SeqCst), failed)
    }
}

#[test]
fn drain_disable_and_enable_under_load_lose_nothing() {
    let (a, b) = (Node::start("a"), Node::start("b"));
    a.set_delay(Duration::from_millis(2));
    let server = daemon(&[&a, &b], "");
    let load = Load::start(server.addr, 8);
    assert!(wait_for(Duration::from_secs(3), || a.traffic() > 50
        && b.traffic() > 50));
    let a_addr = a.addr.to_string();

    let out = server.proxyctl(&["upstream", "g", &a_addr, "drain"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("draining"));
    // Its in-flight requests finish, then nothing more reaches it; its idle pooled
    // connections close within seconds.
    assert!(wait_for(Duration::from_secs(3), || {
        servers(&server)
            .iter()
            .any(|s| s["address"] == a_addr && s["in_flight"] == 0)
    }));
    assert!(
        wait_for(Duration::from_secs(4), || a.open_connections() == 0),
        "pooled connections to a drained server close"
    );
    let settled = a.traffic();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(a.traffic(), settled, "a drained server gets no new request");

    assert!(server
        .proxyctl(&["upstream", "g", &a_addr, "enable"])
        .status
        .success());
    assert!(wait_for(Duration::from_secs(3), || a.traffic() > settled + 20));

    assert!(server
        .proxyctl(&["upstream", "g", &a_addr, "disable"])
        .status
        .success());
    assert_eq!(state_of(&server, a.addr), "disabled");
    std::thread::sleep(Duration::from_millis(200));
    let settled = a.traffic();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(a.traffic(), settled);
    assert!(server
        .proxyctl(&["upstream", "g", &a_addr, "enable"])
        .status
        .success());
    let (ok, failed) = load.finish();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 500, "{ok} requests");

    // Kept across a reload; unknown servers and groups are explained.
    server.proxyctl(&["upstream", "g", &a_addr, "drain"]);
    let mut config = std::fs::read_to_string(&server.config_path).unwrap();
    config.push_str("\n# touched\n");
    std::fs::write(&server.config_path, config).unwrap();
    assert_eq!(server.wait_generation(2), 2);
    assert_eq!(state_of(&server, a.addr), "draining");
    // Every server drained: nothing can take a request (503), whatever the policy.
    server.proxyctl(&["upstream", "g", &b.addr.to_string(), "drain"]);
    assert_eq!(Conn::new(server.addr).get("/").unwrap().0, 503);
    let out = server.proxyctl(&["upstream", "g", "10.9.9.9:1", "enable"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no server \"10.9.9.9:1\""));
    let out = server.proxyctl(&["upstream", "nope", &a_addr, "enable"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no upstream group \"nope\""));
}

#[test]
fn upstreams_explain_stats_and_metrics_show_the_group() {
    let (a, b) = (Node::start("a"), Node::start("b"));
    let metrics = free_addr();
    let config = format!(
        "{}\n[path_routes.\"g.test\".\"/legacy/\"]\ntype = \"Proxy\"\nurl = \"http://{}/\"\n",
        groups_config(
            &format!(
                "{{ address = \"{}\" }}, {{ address = \"{}\" }}",
                a.addr, b.addr
            ),
            ""
        ),
        a.addr
    );
    let server = start_with_metrics(&config, metrics);
    tally(&server, 4, "");
    server.proxyctl(&["upstream", "g", &b.addr.to_string(), "drain"]);

    let text = String::from_utf8_lossy(&server.proxyctl(&["upstreams"]).stdout).into_owned();
    assert!(
        text.contains("g: round_robin, on_all_unhealthy try_all, passive checks only"),
        "{text}"
    );
    assert!(
        text.contains(&format!("http://{}:{} (url)", a.addr.ip(), a.addr.port())),
        "{text}"
    );
    assert!(text.contains("draining"), "{text}");
    let json = server.proxyctl_json(&["upstreams"]);
    assert_eq!(json.as_array().unwrap().len(), 2);
    assert_eq!(json[0]["servers"][0]["requests"], 2);

    let explain = server.proxyctl_json(&["explain", "g.test", "/x"]);
    assert_eq!(explain["upstream"]["group"], "g");
    assert_eq!(
        explain["upstream"]["usable"],
        serde_json::json!([a.addr.to_string()])
    );
    let text =
        String::from_utf8_lossy(&server.proxyctl(&["explain", "g.test", "/x"]).stdout).into_owned();
    assert!(
        text.contains(&format!(
            "upstream group \"g\": usable now {} (of 2)",
            a.addr
        )),
        "{text}"
    );

    let stats = server.proxyctl_json(&["stats"]);
    assert_eq!(stats["groups"][0]["name"], "g");
    let text = String::from_utf8_lossy(&server.proxyctl(&["stats"]).stdout).into_owned();
    assert!(text.contains("USABLE"), "{text}");

    let mut c = std::net::TcpStream::connect(metrics).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    c.read_to_string(&mut body).unwrap();
    for series in [
        format!(
            "zerocopy_upstream_server_state{{group=\"g\",server=\"{}\",state=\"draining\"}} 1",
            b.addr
        ),
        format!(
            "zerocopy_upstream_server_requests_total{{group=\"g\",server=\"{}\"}} 2",
            a.addr
        ),
        format!(
            "zerocopy_upstream_server_in_flight{{group=\"g\",server=\"{}\"}} 0",
            a.addr
        ),
        "zerocopy_upstream_retry_budget_exhausted_total{group=\"g\"} 0".to_string(),
        "zerocopy_upstream_group_failing_open{group=\"g\"} 0".to_string(),
    ] {
        assert!(body.contains(&series), "{series} missing from:\n{body}");
    }
}

fn start_with_metrics(config: &str, metrics: SocketAddr) -> Server {
    let addr = free_addr();
    let toml = format!(
        "[server]\nlisten = \"{addr}\"\nthreads = 2\n\n\
         [admin]\nsocket = \"{{dir}}/admin.sock\"\nmetrics_listen = \"{metrics}\"\n\n{config}"
    );
    Server::start_with_env(Driver::Uring, addr, &toml, &[])
}

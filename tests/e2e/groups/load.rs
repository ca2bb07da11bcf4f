//! Failover under load: 50 keep-alive connections through a 3-server group while one server
//! is killed and later restarted.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

#[test]
fn failover_under_load() {
    let (a, c) = (Node::start("a"), Node::start("c"));
    let b = Node::start("b");
    let b_addr = b.addr;
    let server = daemon(
        &[&a, &b, &c],
        "[upstreams.g.health_check]\ninterval_ms = 200\ntimeout_ms = 200\nhealthy_threshold = 2\n\
         unhealthy_threshold = 2\n[upstreams.g.outlier]\nejection_secs = 2",
    );
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures: Arc<Mutex<Vec<(Duration, String)>>> = Arc::default();
    let clients: Vec<_> = (0..50)
        .map(|_| {
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            let addr = server.addr;
            std::thread::spawn(move || {
                let mut conn = Conn::new(addr);
                while !stop.load(SeqCst) {
                    match conn.get("/") {
                        Ok((200, _)) => {
                            ok.fetch_add(1, SeqCst);
                        }
                        Ok((s, body)) => failures
                            .lock()
                            .unwrap()
                            .push((start.elapsed(), format!("{s} {body}"))),
                        Err(e) => failures.lock().unwrap().push((start.elapsed(), e)),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let in_flight_at_kill = servers(&server)
        .iter()
        .find(|s| s["address"] == b_addr.to_string())
        .and_then(|s| s["in_flight"].as_u64())
        .unwrap_or(0);
    let ok_before = ok.load(SeqCst);
    let killed_at = start.elapsed();
    drop(b);
    let out = wait_for(Duration::from_secs(3), || {
        state_of(&server, b_addr) != "healthy"
    });
    let out_at = start.elapsed();
    assert!(out, "the killed server leaves");
    std::thread::sleep(Duration::from_millis(1500));
    let restarted_at = start.elapsed();
    let b = Node::start_at("b", b_addr);
    let back = wait_for(Duration::from_secs(6), || b.traffic() > 100);
    let back_at = start.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, SeqCst);
    for t in clients {
        t.join().unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    let total = ok.load(SeqCst) + failures.len();
    eprintln!(
        "failover timeline: {ok_before} requests before the kill at {killed_at:?} \
         ({in_flight_at_kill} in flight on b); b out of rotation at {out_at:?} ({}); \
         restarted at {restarted_at:?}, taking traffic again at {back_at:?}; {total} requests, \
         {} failed: {failures:?}",
        state_of(&server, b_addr),
        failures.len()
    );
    assert!(back, "the restarted server takes traffic again");
    // Only requests in flight on b when it died may fail (they are retried when nothing of a
    // response came, so usually none does), and none after it left the rotation.
    assert!(failures.len() <= 17, "{} failed", failures.len());
    assert!(
        failures.iter().all(|(at, _)| *at <= out_at),
        "failures after the ejection: {failures:?}"
    );
    assert!(total > 2000, "{total} requests");
}

//! Kernel TLS settings end to end. The kernel of the machines that run CI has no TLS at all
//! (`TCP_ULP "tls"` fails with ENOENT), so what runs here is what an operator there sees: in a
//! `--features ktls` build, `ktls_fallback_enabled = true` serves HTTPS in userspace and counts
//! the fallbacks, `false` refuses TLS connections and warns at start-up; in a default build,
//! `ktls_enabled = true` is a config warning naming the build flag. On a kernel with the `tls`
//! module the fallback test checks that connections run on kTLS instead. The offload itself is
//! verified in a VM (`tests/ktls-vm/`).

#[cfg(not(feature = "ktls"))]
use crate::common::check;
use crate::common::Driver;
use crate::tls::{get, start, tls_connect, Trust};
use crate::upstream::Wire;
#[cfg(feature = "ktls")]
use crate::{tls::start_env, upstream::pattern};

/// Whether this kernel has TLS (then the real probe finds it).
#[cfg(feature = "ktls")]
fn kernel_has_tls() -> bool {
    use std::path::Path;
    Path::new("/sys/module/tls").exists()
}

/// A default build: `ktls_enabled = true` warns at `--check` and at start-up, naming the build
/// flag, and HTTPS runs in userspace.
#[cfg(not(feature = "ktls"))]
fn ktls_enabled_in_a_build_without_it_warns(d: Driver) {
    let h = start(d, "ktls_enabled = true", "");
    let out = check(&h.s.config_path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: tls.ktls_enabled") && err.contains("--features ktls"),
        "{err}"
    );
    let log = h.s.wait_log("--features ktls");
    assert!(log.contains("tls.ktls_enabled"), "{log}");
    let tls = tls_connect(h.s.addr, "site.test", Trust::Ca(&h.pki), None).unwrap();
    assert_eq!(get(&mut Wire::new(tls), "/index.html").status, 200);
    let st = h.s.proxyctl_json(&["status"]);
    let layer = st["tls"]["record_layer"].as_str().unwrap_or_default();
    assert!(layer.contains("kTLS is not in this build"), "{st}");
    assert_eq!(st["tls"]["handshakes"], 1, "{st}");
    assert_eq!(st["tls"]["ktls_fallback"], 0, "{st}");
    let text = String::from_utf8_lossy(&h.s.proxyctl(&["status"]).stdout).to_string();
    assert!(text.contains("kTLS is not in this build"), "{text}");
}

/// Fallback on: every connection is served — in userspace, counted as a fallback, when the
/// kernel has no TLS (the start-up log says why); through the kernel when it has.
#[cfg(feature = "ktls")]
fn ktls_with_fallback_serves_every_connection(d: Driver) {
    let h = start(d, "ktls_enabled = true\nktls_fallback_enabled = true", "");
    for v in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let tls = tls_connect(h.s.addr, "site.test", Trust::Ca(&h.pki), Some(v)).unwrap();
        let mut w = Wire::new(tls);
        let r = get(&mut w, "/index.html");
        assert_eq!(r.body, b"hello over tls\n");
        let r = get(&mut w, "/big.bin");
        assert!(r.body == pattern(3 * 1024 * 1024 + 5), "big file differs");
    }
    let st = h.s.proxyctl_json(&["status"]);
    let tls = &st["tls"];
    assert_eq!(tls["handshakes"], 2, "{st}");
    // Looked at after the daemon's probe, which may have loaded the module.
    assert_eq!(tls["ktls_refused"], 0, "{st}");
    let layer = tls["record_layer"].as_str().unwrap_or_default();
    if kernel_has_tls() {
        assert_eq!(tls["ktls"], 2, "{st}");
        assert!(layer.starts_with("kernel (kTLS"), "{st}");
    } else {
        assert_eq!(tls["ktls"], 0, "{st}");
        assert_eq!(tls["ktls_fallback"], 2, "{st}");
        assert!(
            layer.contains("kTLS unavailable: the kernel has no TLS"),
            "{st}"
        );
        let log = h.s.wait_log("tls: records run in userspace");
        assert!(log.contains("modprobe tls"), "{log}");
        let text = String::from_utf8_lossy(&h.s.proxyctl(&["status"]).stdout).to_string();
        assert!(
            text.contains("0 on kernel TLS, 2 fell back to userspace, 0 refused"),
            "{text}"
        );
    }
}

/// Fallback off and no kernel TLS: the start-up log warns, TLS connections are closed
/// unanswered and counted as refused, plain HTTP on the port gets nothing either.
#[cfg(feature = "ktls")]
fn ktls_without_fallback_refuses_connections(d: Driver) {
    // Stand in for a kernel without TLS whatever this one has (the probe's test override;
    // the fallback test above sees the real probe's answer).
    let h = start_env(
        d,
        "ktls_enabled = true\nktls_fallback_enabled = false",
        "",
        &[("ZEROCOPY_KTLS_PROBE", "unavailable")],
    );
    let log = h.s.wait_log("every TLS connection will be refused");
    assert!(log.contains("ktls_fallback_enabled = false"), "{log}");
    // The harness's readiness check connected once already: wait until that one is counted.
    let refused = || h.s.proxyctl_json(&["status"])["tls"]["ktls_refused"].as_u64();
    let t = std::time::Instant::now();
    while refused() != Some(1) && t.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let before = refused().unwrap();
    for _ in 0..2 {
        let refused = tls_connect(h.s.addr, "site.test", Trust::Ca(&h.pki), None);
        assert!(refused.is_err(), "a TLS connection was served");
    }
    let st = h.s.proxyctl_json(&["status"]);
    assert_eq!(st["tls"]["ktls_refused"], before + 2, "{st}");
    assert_eq!(st["tls"]["handshakes"], 0, "{st}");
    let layer = st["tls"]["record_layer"].as_str().unwrap_or_default();
    assert!(layer.starts_with("refusing TLS connections"), "{st}");
}

#[cfg(not(feature = "ktls"))]
crate::both_drivers!(ktls_enabled_in_a_build_without_it_warns);

#[cfg(feature = "ktls")]
crate::both_drivers!(
    ktls_with_fallback_serves_every_connection,
    ktls_without_fallback_refuses_connections,
);

//! `--check` and start-up refusal: the shipped configs pass, a bad config is refused with file,
//! line, column, key path and reason — every error at once.

use std::path::Path;

use crate::common::{check, Site, BIN};

fn repo(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn quickstart_config_passes() {
    let out = check(&repo("config/quickstart.toml"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

/// `config/example.toml` is the spec's example verbatim; with its paths created (under a
/// temporary root) it passes.
#[test]
fn example_config_passes_once_its_paths_exist() {
    let site = Site::new();
    let root = site.path().display().to_string();
    for d in [
        "var/www/example",
        "var/www/assets",
        "var/www/docs",
        "var/www/user",
    ] {
        site.mkdir(d);
    }
    site.file("var/www/robots.txt", "");
    site.file("var/www/index.html", "");
    // The example's [tls] names a certificate and key: a real pair, from a test CA.
    let leaf = crate::pki::Pki::new().leaf(&["example.com"]);
    site.file("path/to/cert.pem", &leaf.cert_pem);
    site.file("path/to/key.pem", &leaf.key_pem);
    let text = std::fs::read_to_string(repo("config/example.toml"))
        .unwrap()
        .replace("\"/var/www", &format!("\"{root}/var/www"))
        .replace("\"/path/to", &format!("\"{root}/path/to"));
    let cfg = site.file("example.toml", text);
    let out = check(&cfg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    // Without its paths it is refused, naming each.
    let out = check(&repo("config/example.toml"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("host_routes.\"example.com\".path"), "{err}");
    assert!(err.contains("/var/www/example"), "{err}");
}

#[test]
fn bad_config_lists_every_error_with_place_key_and_reason() {
    let site = Site::new();
    site.mkdir("www");
    let cfg = site.file(
        "bad.toml",
        r#"[server]
listen = "127.0.0.1:8080"
threds = 2

[path_routes."example.com"."/api/"]
type = "Proxy"
url = "http://localhost:8080/app/"

[path_routes."example.com"."/api/".security]
allowed_ips = ["10.0.0.0/8", "10.0.0.0/33"]

[path_routes."example.com"."/"]
path = "www"
mode = "mmap"
"#,
    );
    let out = check(&cfg);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    let file = cfg.display().to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].starts_with(&format!("{file}:3:1: server.threds: unknown key")),
        "{err}"
    );
    assert_eq!(
        lines[1],
        format!(
            "{file}:10:30: path_routes.\"example.com\".\"/api/\".security.allowed_ips[1]: \
             \"10.0.0.0/33\": prefix length 33 is longer than 32"
        ),
        "{err}"
    );
    assert!(
        lines[2].starts_with(&format!(
            "{file}:14:8: path_routes.\"example.com\".\"/\".mode:"
        )),
        "{err}"
    );
    assert!(lines[2].contains("mmap"), "{err}");
}

#[test]
fn syntax_error_has_a_place() {
    let site = Site::new();
    let cfg = site.file(
        "syntax.toml",
        "[server]\nlisten = \"127.0.0.1:1\"\nthreads = = 2\n",
    );
    let out = check(&cfg);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with(&format!("{}:3:", cfg.display())), "{err}");
}

#[test]
fn daemon_refuses_to_start_with_a_bad_config() {
    let site = Site::new();
    let cfg = site.file("bad.toml", "[server]\nlisten = \"not an address\"\n");
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.listen"), "{err}");
    assert!(err.contains("refusing to start"), "{err}");
}

#[test]
fn missing_config_file_is_a_clear_error() {
    let out = check(Path::new("/nonexistent/zerocopy.toml"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/zerocopy.toml"), "{err}");
    assert!(err.contains("No such file"), "{err}");
}

/// Memory-mode routes are capped in total; over the cap the config is refused before anything
/// is read (the file here is sparse).
#[test]
fn memory_mode_total_cap_is_enforced() {
    let site = Site::new();
    let big = site.file("big.bin", "");
    std::fs::File::options()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(300 * 1024 * 1024)
        .unwrap();
    let cfg = site.file(
        "mem.toml",
        format!(
            "[server]\nlisten = \"127.0.0.1:1\"\n\n[path_routes.\"h\".\"/big\"]\npath = \"{}\"\nmode = \"memory\"\n",
            big.display()
        ),
    );
    let out = check(&cfg);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("path_routes.h.\"/big\".path"), "{err}");
    assert!(err.contains("total cap of 256 MiB"), "{err}");
}

#[test]
fn warnings_do_not_fail_the_check() {
    let site = Site::new();
    site.mkdir("a");
    site.mkdir("b");
    let cfg = site.file(
        "shadow.toml",
        "[server]\nlisten = \"127.0.0.1:1\"\n\n[host_routes.\"h\"]\npath = \"a\"\n\n[path_routes.\"h\".\"/x\"]\npath = \"b\"\n",
    );
    let out = check(&cfg);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: path_routes.h.\"/x\": never used"),
        "{err}"
    );
}

#[test]
fn unknown_user_is_a_located_config_error() {
    let site = Site::new();
    let cfg = site.file(
        "user.toml",
        "[server]\nlisten = \"127.0.0.1:1\"\n\n[security]\ndrop_privileges_user = \"no-such-user-zcs\"\n",
    );
    let out = check(&cfg);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:5:24: security.drop_privileges_user: unknown user",
            cfg.display()
        )),
        "{err}"
    );
}

/// `ktls_fallback_enabled = false` makes kernel TLS mandatory: a build without kTLS cannot keep
/// that promise and refuses the config (at `--check` and at start), naming the feature; a kTLS
/// build takes it.
#[test]
fn ktls_fallback_off_needs_a_ktls_build() {
    let site = Site::new();
    let leaf = crate::pki::Pki::new().leaf(&["site.test"]);
    site.file("c.pem", &leaf.cert_pem);
    site.file("c.key", &leaf.key_pem);
    let cfg = site.file(
        "ktls.toml",
        format!(
            "[server]\nlisten = \"{}\"\n\n[tls]\ncert_path = \"c.pem\"\nkey_path = \"c.key\"\n\
             ktls_enabled = true\nktls_fallback_enabled = false\n",
            crate::common::free_addr()
        ),
    );
    let out = check(&cfg);
    let err = String::from_utf8_lossy(&out.stderr);
    if cfg!(feature = "ktls") {
        assert!(out.status.success(), "{err}");
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(":8:25: tls.ktls_fallback_enabled: false makes kernel TLS mandatory")
            && err.contains("--features ktls"),
        "{err}"
    );
    // And the daemon does not start on it.
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("kernel TLS mandatory"));
}

/// The field-fix keys are checked with their place: `h2c` in `allowed_upgrades`, an IPv6
/// rate-limit prefix out of range, a bad `trusted_proxies` network, a ticket key file that is
/// not 80 bytes.
#[test]
fn forwarding_and_session_keys_are_checked() {
    let site = Site::new();
    let leaf = crate::pki::Pki::new().leaf(&["site.test"]);
    site.file("c.pem", &leaf.cert_pem);
    site.file("c.key", &leaf.key_pem);
    site.file("short.key", [1u8; 48]);
    let cfg = site.file(
        "keys.toml",
        "[server]\nlisten = \"127.0.0.1:1\"\n\n[security]\nallowed_upgrades = [\"websocket\", \"h2c\"]\n\
         rate_limit_ipv6_prefix = 16\ntrusted_proxies = [\"10.0.0.0/40\"]\n\n[tls]\n\
         cert_path = \"c.pem\"\nkey_path = \"c.key\"\nsession_ticket_key_file = \"short.key\"\n",
    );
    let out = check(&cfg);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        ":5:34: security.allowed_upgrades[1]: h2c is never forwarded",
        ":6:26: security.rate_limit_ipv6_prefix: must be at least 32",
        ":7:20: security.trusted_proxies[0]: \"10.0.0.0/40\": prefix length 40 is longer than 32",
    ] {
        assert!(err.contains(want), "{want}\n{err}");
    }
    // The ticket key's size is checked when the certificates load, once the rest is valid.
    let cfg = site.file(
        "ticket.toml",
        "[server]\nlisten = \"127.0.0.1:1\"\n\n[tls]\ncert_path = \"c.pem\"\nkey_path = \"c.key\"\n\
         session_ticket_key_file = \"short.key\"\nsession_cache_size = 0\n",
    );
    let out = check(&cfg);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tls.session_ticket_key_file: ")
            && err.contains("holds 48 bytes; a session ticket key file holds exactly 80"),
        "{err}"
    );
    site.file("good.key", [7u8; 80]);
    let ok = site.file(
        "ok.toml",
        "[server]\nlisten = \"127.0.0.1:1\"\n\n[security]\nallowed_upgrades = [\"WebSocket\"]\n\
         trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\nallow_underscores_in_headers = true\n\
         rate_limit_ipv6_prefix = 56\n\n[tls]\ncert_path = \"c.pem\"\nkey_path = \"c.key\"\n\
         session_ticket_key_file = \"good.key\"\nsession_tickets = true\nsession_cache_size = 100\n",
    );
    let out = check(&ok);
    assert!(out.status.success(), "{out:?}");
}

/// Certificates and keys are read again at every reload, after privileges were dropped:
/// `--check` warns when the user the daemon drops to could not read them.
#[test]
fn files_the_dropped_user_cannot_read_are_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let site = Site::new();
    let leaf = crate::pki::Pki::new().leaf(&["site.test"]);
    let cert = site.file("c.pem", &leaf.cert_pem);
    let key = site.file("c.key", &leaf.key_pem);
    std::fs::set_permissions(site.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&cert, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = site.file(
        "drop.toml",
        "[server]\nlisten = \"127.0.0.1:1\"\n\n[security]\ndrop_privileges_user = \"nobody\"\n\n\
         [tls]\ncert_path = \"c.pem\"\nkey_path = \"c.key\"\n",
    );
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = check(&cfg);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "warning: tls.key_path: {} is not readable by user \"nobody\"",
            key.display()
        )) && err.contains("reloads will fail"),
        "{err}"
    );
    assert!(
        !err.contains("tls.cert_path"),
        "the certificate is readable: {err}"
    );
    // Readable by the group it drops to: no warning.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = check(&cfg);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("not readable"),
        "{out:?}"
    );
}

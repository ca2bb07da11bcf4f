//! Client configurations for `https://` upstreams.
//!
//! An upstream's certificate is verified against the webpki roots (Mozilla's list, built in) by
//! default, or against the CAs of the route's `ca_file` instead. The name checked — and sent as
//! SNI — is the URL's host, or the route's `tls_server_name`. ALPN offers `http/1.1`, or `h2`
//! for an HTTP/2 group.
//! Configurations are built on the control thread when a snapshot is built (reading `ca_file`
//! there, never on a worker); the default one is built once and shared, so its TLS session
//! cache — resumption for upstream handshakes — survives reloads.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

/// The configuration for an upstream: verifying against `ca_file`'s CAs when given, else the
/// webpki roots; ALPN `h2` for an HTTP/2 group (`h2`), else `http/1.1`. `Err` is the reason,
/// for a config error on the route's `ca_file`.
pub fn config(ca_file: Option<&Path>, h2: bool) -> Result<Arc<ClientConfig>, String> {
    match ca_file {
        None => {
            static DEFAULT: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
            static DEFAULT_H2: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
            let webpki =
                || RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            match h2 {
                false => DEFAULT.get_or_init(|| build(webpki(), false)).clone(),
                true => DEFAULT_H2.get_or_init(|| build(webpki(), true)).clone(),
            }
        }
        Some(path) => build(roots_from(path)?, h2),
    }
}

/// The name to verify and send as SNI: a DNS name or an IP address.
pub fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_string())
        .map_err(|e| format!("{name:?} is not a DNS name or IP address for TLS: {e}"))
}

fn build(roots: RootCertStore, h2: bool) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![if h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    Ok(Arc::new(config))
}

fn roots_from(path: &Path) -> Result<RootCertStore, String> {
    let bytes = crate::fsread::read(path, crate::fsread::PEM_CAP)
        .map_err(|e| format!("{} {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| format!("{}: bad PEM: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (expected one or more \"-----BEGIN CERTIFICATE-----\" \
             blocks)",
            path.display()
        ));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_configs_are_shared_and_offer_one_protocol() {
        let a = config(None, false).unwrap();
        let b = config(None, false).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let h2 = config(None, true).unwrap();
        assert!(Arc::ptr_eq(&h2, &config(None, true).unwrap()));
        assert_eq!(h2.alpn_protocols, vec![b"h2".to_vec()]);
    }

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        assert!(config(Some(&missing), false)
            .unwrap_err()
            .contains("missing.pem"));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem\n").unwrap();
        let e = config(Some(&empty), false).unwrap_err();
        assert!(e.contains("holds no PEM certificate"), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = config(Some(&junk), false).unwrap_err();
        assert!(e.contains("junk.pem"), "{e}");
    }

    #[test]
    fn server_names_take_dns_names_and_addresses() {
        assert!(matches!(
            server_name("example.com"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(matches!(
            server_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(server_name("::1"), Ok(ServerName::IpAddress(_))));
        assert!(server_name("bad name").is_err());
    }
}

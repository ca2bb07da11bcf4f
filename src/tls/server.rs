//! Server configurations for TLS termination, built from `[tls]` when a snapshot is built.
//!
//! Certificates and keys are read on the control thread (never on a worker) and checked: a
//! chain with no certificate, a file with no private key, and a key that does not belong to its
//! certificate are refused with the file named, so a reload with a bad pair keeps the old
//! certificates serving. TLS 1.2 and 1.3, ALPN `h2` (unless `[http2] enabled = false`) and
//! `http/1.1`; session tickets and the session
//! cache from [`super::sessions`], kept across reloads.
//!
//! The certificate for a handshake is chosen by SNI ([`SniResolver`]): the `server_names` of a
//! `[[tls.certificates]]` entry (exact, then `*.` wildcard), then entries without
//! `server_names` whose certificate is valid for the name, then the default certificate
//! (`cert_path`/`key_path`) — also for clients that send no SNI.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use super::sessions::Sessions;
use crate::config::{Origin, Tls};

/// A load failure: where in the config (`tls.cert_path`, `tls.certificates[1].key_path`) and why.
pub type LoadError = (Origin, String);

/// A server configuration, the session cache it uses (to be kept for the next builds once
/// it is published: [`Sessions::use_cache`]), and its certificate chooser (which HTTP/2's
/// connection coalescing asks which certificate a connection got).
pub type Built = (
    Arc<ServerConfig>,
    Option<Arc<ServerSessionMemoryCache>>,
    Arc<SniResolver>,
);

/// Builds the server configuration for `tls`, or every reason it cannot be built. Resumption
/// state comes from `sessions`, which outlives every configuration (see [`super::sessions`]).
/// With `http2`, ALPN offers `h2` before `http/1.1`.
pub fn config(tls: &Tls, http2: bool, sessions: &Sessions) -> Result<Built, Vec<LoadError>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut errors = Vec::new();
    let default = load(&provider, &tls.origin, &tls.cert_path, &tls.key_path)
        .map_err(|e| errors.push(e))
        .ok();
    let mut resolver = SniResolver {
        exact: HashMap::new(),
        wildcard: HashMap::new(),
        by_certificate: Vec::new(),
        default: None,
    };
    for entry in &tls.certificates {
        let Ok(key) = load(&provider, &entry.origin, &entry.cert_path, &entry.key_path)
            .map_err(|e| errors.push(e))
        else {
            continue;
        };
        if entry.server_names.is_empty() {
            resolver.by_certificate.push(key);
            continue;
        }
        for name in &entry.server_names {
            // The first entry that names a name serves it.
            match name.strip_prefix("*.") {
                Some(parent) => resolver.wildcard.entry(parent.to_string()),
                None => resolver.exact.entry(name.clone()),
            }
            .or_insert_with(|| key.clone());
        }
    }
    let (Some(default), true) = (default, errors.is_empty()) else {
        return Err(errors);
    };
    resolver.default = Some(default);
    let resolver = Arc::new(resolver);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| vec![(tls.origin.clone(), format!("TLS configuration: {e}"))])?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    // One ticketer for every configuration: whether it makes tickets, and with which keys, is
    // set when the snapshot is published (`Sessions::use_key`).
    config.ticketer = sessions.ticketer();
    let cache = (tls.session_cache_size > 0).then(|| sessions.cache(tls.session_cache_size));
    config.session_storage = match &cache {
        None => Arc::new(rustls::server::NoServerSessionStorage {}),
        Some(c) => c.clone(),
    };
    // Kernel TLS takes the session's keys out of rustls after the handshake. Set in every
    // kTLS build, not from `ktls_enabled`: that key takes effect at start-up only, and a reload
    // that changes it must not leave the running kernel-TLS listener unable to extract keys.
    config.enable_secret_extraction = cfg!(feature = "ktls");
    Ok((Arc::new(config), cache, resolver))
}

/// Chooses a certificate by SNI (see the module documentation).
#[derive(Debug)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` entries, keyed by `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// Entries without `server_names`, in file order.
    by_certificate: Vec<Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    /// The certificate for `sni` (lower-case), or the default.
    pub fn choose(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = sni else {
            return self.default.clone();
        };
        if let Some(k) = self.exact.get(name) {
            return Some(k.clone());
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(k) = self.wildcard.get(parent) {
                return Some(k.clone());
            }
        }
        if !self.by_certificate.is_empty() {
            if let Ok(server_name) = ServerName::try_from(name) {
                for k in &self.by_certificate {
                    if valid_for(k, &server_name) {
                        return Some(k.clone());
                    }
                }
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name().map(str::to_ascii_lowercase);
        let key = self.choose(sni.as_deref());
        note_sni(sni);
        key
    }
}

thread_local! {
    /// The name of the ClientHello this thread's resolver saw last, until taken.
    static LAST_SNI: std::cell::RefCell<Option<Option<String>>> =
        const { std::cell::RefCell::new(None) };
}

/// Notes the name (SNI, lower-case; `None` when the client sent none) of the ClientHello being
/// processed, for [`take_sni`].
pub(crate) fn note_sni(name: Option<String>) {
    LAST_SNI.with(|last| *last.borrow_mut() = Some(name));
}

/// The name (SNI, lower-case, or `None` for none) the resolver was asked for by the ClientHello
/// rustls processed last on this thread, once (`None` when there was no ClientHello since). rustls calls the resolver synchronously while it processes the
/// ClientHello (every one, resumptions included), so a session that takes this right after
/// handing rustls its bytes gets its own client's name
/// ([`crate::net::server_tls::ServerTls::server_name`]; rustls's unbuffered server connection
/// does not keep it).
pub fn take_sni() -> Option<Option<String>> {
    LAST_SNI.with(|last| last.borrow_mut().take())
}

/// Whether `key`'s leaf certificate is valid for `host` (a DNS name, or an IP address; IPv6 in
/// brackets or not).
pub fn covers(key: &CertifiedKey, host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host).is_ok_and(|name| valid_for(key, &name))
}

/// Whether `key`'s leaf certificate is valid for `name`.
fn valid_for(key: &CertifiedKey, name: &ServerName<'_>) -> bool {
    let Some(leaf) = key.cert.first() else {
        return false;
    };
    webpki::EndEntityCert::try_from(leaf)
        .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(name).is_ok())
}

/// Loads one certificate chain and its key, and checks that they belong together.
fn load(
    provider: &CryptoProvider,
    at: &Origin,
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<CertifiedKey>, LoadError> {
    let err = |key: &str, reason: String| {
        (
            Origin {
                key_path: format!("{}.{key}", at.key_path),
                ..at.clone()
            },
            reason,
        )
    };
    let cert_bytes = crate::fsread::read(cert_path, crate::fsread::PEM_CAP)
        .map_err(|e| err("cert_path", format!("{} {e}", cert_path.display())))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            err(
                "cert_path",
                format!("{}: bad PEM: {e}", cert_path.display()),
            )
        })?;
    if chain.is_empty() {
        return Err(err(
            "cert_path",
            format!(
                "{} holds no PEM certificate (expected \"-----BEGIN CERTIFICATE-----\" blocks, \
                 the server's certificate first)",
                cert_path.display()
            ),
        ));
    }
    let key_bytes = crate::fsread::read(key_path, crate::fsread::PEM_CAP)
        .map_err(|e| err("key_path", format!("{} {e}", key_path.display())))?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
        err(
            "key_path",
            format!(
                "{} holds no usable private key (PKCS#8, SEC1 EC or RSA PEM): {e}",
                key_path.display()
            ),
        )
    })?;
    let signer = provider.key_provider.load_private_key(key).map_err(|e| {
        err(
            "key_path",
            format!("{}: unsupported private key: {e}", key_path.display()),
        )
    })?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|e| {
        err(
            "key_path",
            format!(
                "{} does not belong to the certificate in {} ({e}); check that the pair comes \
                 from the same issuance",
                key_path.display(),
                cert_path.display()
            ),
        )
    })?;
    Ok(Arc::new(certified))
}

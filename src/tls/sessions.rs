//! TLS session resumption that outlives reloads and scales: stateless session tickets under
//! keys the control thread rotates, and the stateful session cache.
//!
//! One [`Sessions`] lives as long as the daemon. Every server configuration built from `[tls]`
//! (at start-up and at each reload) takes the same [`Ticketer`] and, while
//! `session_cache_size` stays the same, the same cache — so a reload forgets no session, and
//! every worker resumes every other worker's sessions.
//!
//! **Ticket keys.** A ticket is `key name (16) ‖ nonce (12) ‖ AES-256-GCM(session state)`, the
//! key name as associated data. Without `session_ticket_key_file` the daemon makes a random
//! key at start and replaces it every [`defaults::SESSION_TICKET_ROTATION`] (12 h); the
//! previous key still opens tickets, so a ticket lives 12 to 24 hours. With the file (80 bytes,
//! nginx's `ssl_session_ticket_key` format: `openssl rand 80 > ticket.key`), the key name is
//! its first 16 bytes and the AES key is derived from the other 64 with HKDF-SHA256, so several
//! instances sharing the file resume each other's sessions; replacing the file rotates the key
//! at the next reload, the previous one still accepted. Workers read the keys through an
//! `ArcSwap` (no lock on the handshake path); only the control thread changes them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use rustls::server::{ProducesTickets, ServerSessionMemoryCache};

use crate::config::defaults;

/// Bytes of a `session_ticket_key_file`.
pub const KEY_FILE_LEN: usize = 80;
/// Bytes of a key name.
const NAME_LEN: usize = 16;
/// Bytes of an AES-256-GCM tag.
const TAG_LEN: usize = 16;

/// Where the current ticket key came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// Made by the daemon; rotated on schedule.
    Random,
    /// `session_ticket_key_file`; rotated by replacing the file.
    File,
}

/// One ticket key.
struct TicketKey {
    name: [u8; NAME_LEN],
    aead: LessSafeKey,
    origin: Origin,
    /// For a file key, the file's bytes (to tell a changed file from the same one).
    material: Option<Box<[u8; KEY_FILE_LEN]>>,
}

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketKey")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl TicketKey {
    fn random() -> Option<Self> {
        let mut bytes = [0u8; NAME_LEN + 32];
        aws_lc_rs::rand::fill(&mut bytes).ok()?;
        let (name, key) = bytes.split_at(NAME_LEN);
        Some(Self {
            name: name.try_into().ok()?,
            aead: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).ok()?),
            origin: Origin::Random,
            material: None,
        })
    }

    fn from_file(material: &[u8; KEY_FILE_LEN]) -> Option<Self> {
        let (name, secret) = material.split_at(NAME_LEN);
        let salt = aws_lc_rs::hkdf::Salt::new(aws_lc_rs::hkdf::HKDF_SHA256, b"zerocopy-server");
        let mut key = [0u8; 32];
        salt.extract(secret)
            .expand(&[b"session ticket key"], &AES_256_GCM)
            .ok()?
            .fill(&mut key)
            .ok()?;
        Some(Self {
            name: name.try_into().ok()?,
            aead: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).ok()?),
            origin: Origin::File,
            material: Some(Box::new(*material)),
        })
    }
}

/// The keys in use: tickets are made with `current`; `previous` still opens them.
#[derive(Debug)]
struct Keys {
    current: Arc<TicketKey>,
    previous: Option<Arc<TicketKey>>,
    /// When `current` began.
    since: Instant,
}

/// The ticketer every TLS server configuration of the daemon shares.
#[derive(Debug)]
pub struct Ticketer {
    keys: ArcSwap<Option<Keys>>,
}

impl ProducesTickets for Ticketer {
    fn enabled(&self) -> bool {
        self.keys.load().is_some()
    }

    // (Keys are read through a guard: no lock, no reference count on the handshake path.)

    fn lifetime(&self) -> u32 {
        defaults::SESSION_TICKET_ROTATION.as_secs() as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let keys = self.keys.load();
        let keys: &Option<Keys> = &keys;
        let key = &keys.as_ref()?.current;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(NAME_LEN + NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(&key.name);
        out.extend_from_slice(&nonce);
        let mut sealed = plain.to_vec();
        key.aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&key.name),
                &mut sealed,
            )
            .ok()?;
        out.extend_from_slice(&sealed);
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        if cipher.len() < NAME_LEN + NONCE_LEN + TAG_LEN {
            return None;
        }
        let (name, rest) = cipher.split_at(NAME_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let keys = self.keys.load();
        let keys: &Option<Keys> = &keys;
        let keys = keys.as_ref()?;
        let key = [Some(&keys.current), keys.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|k| k.name == name)?;
        let mut plain = sealed.to_vec();
        let n = key
            .aead
            .open_in_place(
                Nonce::try_assume_unique_for_key(nonce).ok()?,
                Aad::from(name),
                &mut plain,
            )
            .ok()?
            .len();
        plain.truncate(n);
        Some(plain)
    }
}

/// The daemon's resumption state (see the module documentation).
#[derive(Debug)]
pub struct Sessions {
    ticketer: Arc<Ticketer>,
    /// The stateful cache and its size. Only the control plane takes this lock (when a
    /// snapshot is built), never a worker.
    cache: Mutex<Option<(usize, Arc<ServerSessionMemoryCache>)>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new()
    }
}

impl Sessions {
    /// Tickets off until [`Sessions::use_key`] says otherwise; no cache yet.
    pub fn new() -> Self {
        Self {
            ticketer: Arc::new(Ticketer {
                keys: ArcSwap::from_pointee(None),
            }),
            cache: Mutex::new(None),
        }
    }

    /// The ticketer for a server configuration.
    pub fn ticketer(&self) -> Arc<dyn ProducesTickets> {
        self.ticketer.clone()
    }

    /// The stateful session cache of `size` sessions for a configuration being built: the
    /// running one when its size is the same (so a reload keeps its sessions), else a new one,
    /// which becomes the running one only when its configuration is published
    /// ([`Sessions::use_cache`]).
    pub fn cache(&self, size: usize) -> Arc<ServerSessionMemoryCache> {
        let slot = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            Some((n, cache)) if *n == size => cache.clone(),
            _ => ServerSessionMemoryCache::new(size),
        }
    }

    /// Keeps the cache of a published configuration for the next builds.
    pub fn use_cache(&self, size: usize, cache: Arc<ServerSessionMemoryCache>) {
        *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = Some((size, cache));
    }

    /// Puts the keys of a published `[tls]` in force: `file` is the content of its
    /// `session_ticket_key_file` (`None` without one: a key of the daemon's own), `enabled`
    /// its `session_tickets`. A changed key becomes the current one and the old one stays
    /// accepted; the same key changes nothing. Called by the control thread only.
    pub fn use_key(&self, enabled: bool, file: Option<&[u8; KEY_FILE_LEN]>) {
        if !enabled {
            self.ticketer.keys.store(Arc::new(None));
            return;
        }
        let old = self.ticketer.keys.load();
        let old: &Option<Keys> = &old;
        let current = old.as_ref().map(|k| &k.current);
        let unchanged = match (current, file) {
            (Some(k), Some(bytes)) => k.material.as_deref() == Some(bytes),
            (Some(k), None) => k.origin == Origin::Random,
            (None, _) => false,
        };
        if unchanged {
            return;
        }
        let next = match file {
            Some(bytes) => TicketKey::from_file(bytes),
            None => TicketKey::random(),
        };
        let Some(next) = next else {
            log::warn!("tls: cannot make a session ticket key; tickets stay as they were");
            return;
        };
        self.install(next, Instant::now());
    }

    /// Replaces a key of the daemon's own once it is `rotation` old (the control thread calls
    /// this every tick); a file key is left alone. Whether it rotated.
    pub fn rotate_if_due(&self, now: Instant, rotation: Duration) -> bool {
        let keys = self.ticketer.keys.load();
        let keys: &Option<Keys> = &keys;
        let due = keys.as_ref().is_some_and(|k| {
            k.current.origin == Origin::Random && now.saturating_duration_since(k.since) >= rotation
        });
        if !due {
            return false;
        }
        match TicketKey::random() {
            Some(next) => {
                self.install(next, now);
                true
            }
            None => false,
        }
    }

    fn install(&self, next: TicketKey, now: Instant) {
        let old = self.ticketer.keys.load_full();
        let previous = old.as_ref().as_ref().map(|k| k.current.clone());
        self.ticketer.keys.store(Arc::new(Some(Keys {
            current: Arc::new(next),
            previous,
            since: now,
        })));
    }
}

/// Reads a `session_ticket_key_file`: exactly [`KEY_FILE_LEN`] bytes. The error is the reason.
pub fn read_key_file(path: &std::path::Path) -> Result<Box<[u8; KEY_FILE_LEN]>, String> {
    let bytes = crate::fsread::read(path, 4096).map_err(|e| format!("{} {e}", path.display()))?;
    let len = bytes.len();
    bytes.into_boxed_slice().try_into().map_err(|_| {
        format!(
            "{} holds {len} bytes; a session ticket key file holds exactly {KEY_FILE_LEN} \
             (make one with `openssl rand 80 > ticket.key`)",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(t: &Ticketer, plain: &[u8]) -> Option<Vec<u8>> {
        t.decrypt(&t.encrypt(plain)?)
    }

    #[test]
    fn tickets_open_with_the_current_and_the_previous_key_only() {
        let s = Sessions::new();
        assert!(!s.ticketer.enabled());
        assert_eq!(s.ticketer.encrypt(b"x"), None);
        s.use_key(true, None);
        assert!(s.ticketer.enabled());
        let first = s.ticketer.encrypt(b"session one").unwrap();
        assert_eq!(roundtrip(&s.ticketer, b"abc").unwrap(), b"abc");
        // The same settings again: the same key.
        s.use_key(true, None);
        assert_eq!(s.ticketer.decrypt(&first).unwrap(), b"session one");
        let t0 = Instant::now();
        assert!(!s.rotate_if_due(t0, Duration::from_secs(3600)));
        assert!(s.rotate_if_due(t0 + Duration::from_secs(3600), Duration::from_secs(3600)));
        // The previous key still opens the old ticket; new tickets use the new key.
        assert_eq!(s.ticketer.decrypt(&first).unwrap(), b"session one");
        let second = s.ticketer.encrypt(b"two").unwrap();
        assert_ne!(first[..NAME_LEN], second[..NAME_LEN]);
        assert!(s.rotate_if_due(t0 + Duration::from_secs(7200), Duration::from_secs(3600)));
        assert_eq!(s.ticketer.decrypt(&first), None, "two rotations later");
        assert_eq!(s.ticketer.decrypt(&second).unwrap(), b"two");
    }

    #[test]
    fn tampered_or_short_tickets_are_refused() {
        let s = Sessions::new();
        s.use_key(true, None);
        let t = s.ticketer.encrypt(b"state").unwrap();
        for i in 0..t.len() {
            let mut bad = t.clone();
            bad[i] ^= 1;
            assert_eq!(s.ticketer.decrypt(&bad), None, "byte {i}");
        }
        for n in 0..t.len() {
            assert_eq!(s.ticketer.decrypt(&t[..n]), None);
        }
    }

    #[test]
    fn a_key_file_is_shared_and_rotated_by_replacing_it() {
        let (a, b) = (Sessions::new(), Sessions::new());
        let file = [7u8; KEY_FILE_LEN];
        a.use_key(true, Some(&file));
        b.use_key(true, Some(&file));
        let ticket = a.ticketer.encrypt(b"shared").unwrap();
        assert_eq!(ticket[..NAME_LEN], file[..NAME_LEN]);
        assert_eq!(b.ticketer.decrypt(&ticket).unwrap(), b"shared");
        // A file key is not rotated on schedule.
        assert!(!a.rotate_if_due(
            Instant::now() + Duration::from_secs(1 << 20),
            Duration::ZERO
        ));
        let mut next = file;
        next[0] = 8;
        next[40] = 9;
        b.use_key(true, Some(&next));
        assert_eq!(b.ticketer.decrypt(&ticket).unwrap(), b"shared");
        assert_eq!(
            b.ticketer.encrypt(b"x").unwrap()[..NAME_LEN],
            next[..NAME_LEN]
        );
        b.use_key(false, None);
        assert!(!b.ticketer.enabled());
        assert_eq!(b.ticketer.decrypt(&ticket), None);
    }

    #[test]
    fn the_published_cache_is_kept_while_its_size_is() {
        let s = Sessions::new();
        let a = s.cache(10);
        assert!(!Arc::ptr_eq(&a, &s.cache(10)), "not kept until published");
        s.use_cache(10, a.clone());
        assert!(Arc::ptr_eq(&a, &s.cache(10)));
        assert!(!Arc::ptr_eq(&a, &s.cache(11)));
        assert!(
            Arc::ptr_eq(&a, &s.cache(10)),
            "an unpublished size changes nothing"
        );
    }

    #[test]
    fn key_files_hold_exactly_80_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, [1u8; 80]).unwrap();
        assert_eq!(*read_key_file(&p).unwrap(), [1u8; 80]);
        std::fs::write(&p, [1u8; 48]).unwrap();
        assert!(read_key_file(&p).unwrap_err().contains("holds 48 bytes"));
    }
}

//! `[[listeners]]` and the `[server] listen` shorthand (spec § 4).

use super::*;
use crate::config::{Listener, ProxyProtocol, ProxyVersions, RedirectToHttps};

#[rustfmt::skip]
const LISTENER_KEYS: &[&str] = &[
    "address", "tls", "http2", "ipv6_only", "redirect_to_https", "https_port", "redirect_exempt",
    "proxy_protocol", "proxy_protocol_from",
];
#[rustfmt::skip]
const PROXY_PROTOCOLS: &[(&str, Option<ProxyVersions>)] = &[
    ("off", None), ("v1", Some(ProxyVersions::V1)), ("v2", Some(ProxyVersions::V2)),
    ("any", Some(ProxyVersions::Any)),
];

/// `[server] listen` as read: the address and where it is.
pub(super) struct Shorthand {
    pub(super) address: Option<SocketAddr>,
    pub(super) at: usize,
}

/// A `[[listeners]]` entry's redirect keys before the default port is known.
struct PendingRedirect {
    https_port: Option<u16>,
    exempt: Vec<String>,
}

impl Walker<'_> {
    /// The listeners: `[[listeners]]`, or the one `listen` stands for (TLS when `[tls]` is
    /// present). `server_at` is where `[server]` is, for the error when there is neither.
    pub(super) fn listeners(
        &mut self,
        root: &Node,
        shorthand: Option<Shorthand>,
        server_at: Option<usize>,
        tls: bool,
        http2: bool,
    ) -> Vec<Listener> {
        let Some(f) = root.field("listeners") else {
            return match shorthand {
                Some(Shorthand {
                    address: Some(address),
                    at,
                }) => {
                    let (line, column) = line_column(self.text, at);
                    let origin = Origin {
                        key_path: "server.listen".into(),
                        line,
                        column,
                    };
                    vec![Listener::shorthand(address, tls, http2, origin)]
                }
                // Reported where it was read.
                Some(_) => Vec::new(),
                None => {
                    let hint = "add e.g. listen = \"0.0.0.0:80\" to [server], or [[listeners]] \
                                tables with an address each";
                    match server_at {
                        Some(at) => {
                            let reason = format!("required key is missing; {hint}");
                            self.push(at, "server.listen", reason);
                        }
                        None => {
                            let reason = format!("the [server] table is missing; {hint}");
                            self.push(0, "server", reason);
                        }
                    }
                    Vec::new()
                }
            };
        };
        if let Some(s) = &shorthand {
            self.push(
                s.at,
                "server.listen",
                "[server] listen and [[listeners]] cannot both be set; move this address into \
                 a [[listeners]] table",
            );
        }
        let DeValue::Array(items) = f.value.get_ref() else {
            let found = a(f.value.get_ref().type_str());
            self.reject(
                &f,
                format!(
                    "expected an array of tables, found {found}; write each listener as \
                     [[listeners]] with an address"
                ),
            );
            return Vec::new();
        };
        if items.is_empty() {
            self.reject(&f, "no listener; add at least one [[listeners]] table");
        }
        let mut parsed = Vec::new();
        for (i, value) in items.iter().enumerate() {
            let item = Field {
                value,
                path: format!("{}[{i}]", f.path),
            };
            if let Some((l, r)) = self.listener(&item, tls, http2) {
                parsed.push((l, r, item.at()));
            }
        }
        // The redirect's port defaults to the first TLS listener's.
        let first_tls = parsed
            .iter()
            .find(|(l, ..)| l.tls)
            .map(|(l, ..)| l.address.port());
        let mut out = Vec::with_capacity(parsed.len());
        let mut ats = Vec::with_capacity(parsed.len());
        for (mut l, redirect, at) in parsed {
            l.redirect = redirect.map(|r| RedirectToHttps {
                https_port: r.https_port.or(first_tls).unwrap_or(defaults::HTTPS_PORT),
                exempt: r.exempt,
            });
            out.push(l);
            ats.push(at);
        }
        self.check_bindings(&out, &ats);
        out
    }

    fn listener(
        &mut self,
        item: &Field,
        tls_configured: bool,
        http2: bool,
    ) -> Option<(Listener, Option<PendingRedirect>)> {
        let n = self.node(item)?;
        self.check_keys(&n, &[LISTENER_KEYS]);
        let address = match n.field("address") {
            None => {
                self.missing(&n, "address", "add e.g. address = \"0.0.0.0:443\"");
                None
            }
            Some(f) => self.socket_addr(&f),
        };
        let (line, column) = line_column(self.text, item.at());
        let mut l = Listener::shorthand(
            address.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
            false,
            http2,
            Origin {
                key_path: item.path.clone(),
                line,
                column,
            },
        );
        if let Some(f) = n.field("tls") {
            if let Some(tls) = self.bool(&f) {
                if tls && !tls_configured {
                    self.reject(
                        &f,
                        "tls = true needs certificates: add a [tls] table with cert_path and \
                         key_path",
                    );
                }
                l.tls = tls;
            }
        }
        self.set(&n, "http2", &mut l.http2, Self::bool);
        if let Some(f) = n.field("ipv6_only") {
            if let Some(v6) = self.bool(&f) {
                if v6 && address.is_some_and(|a| a.is_ipv4()) {
                    self.reject(&f, "ipv6_only is for IPv6 addresses; remove it");
                }
                l.ipv6_only = v6;
            }
        }
        let redirect = self.redirect(&n, l.tls);
        l.proxy_protocol = self.proxy_protocol(&n);
        Some((l, redirect)).filter(|_| address.is_some())
    }

    fn redirect(&mut self, n: &Node, tls: bool) -> Option<PendingRedirect> {
        let on = match n.field("redirect_to_https") {
            Some(f) => match self.bool(&f) {
                Some(true) if tls => {
                    self.reject(
                        &f,
                        "a TLS listener cannot redirect to HTTPS (it would redirect to itself); \
                         set it on the plain listener",
                    );
                    false
                }
                v => v.unwrap_or(false),
            },
            None => false,
        };
        let https_port = self.opt(n, "https_port", |w, f| {
            w.uint(f, 1, u64::from(u16::MAX))
                .and_then(|p| u16::try_from(p).ok())
        });
        let exempt = self.opt(n, "redirect_exempt", |w, f| {
            let items = w.array(f)?;
            let mut out = Vec::with_capacity(items.len());
            for item in &items {
                let p = w.str(item)?;
                if !p.starts_with('/') {
                    w.reject(
                        item,
                        format!(
                            "{p:?} is not a path; write it like \"/.well-known/acme-challenge/\""
                        ),
                    );
                    return None;
                }
                out.push(p.to_string());
            }
            Some(out)
        });
        if !on {
            for key in ["https_port", "redirect_exempt"] {
                if let Some(f) = n.field(key) {
                    self.reject(&f, "only used with redirect_to_https = true; remove it");
                }
            }
            return None;
        }
        Some(PendingRedirect {
            https_port,
            exempt: exempt.unwrap_or_default(),
        })
    }

    fn proxy_protocol(&mut self, n: &Node) -> Option<ProxyProtocol> {
        let versions = self
            .opt(n, "proxy_protocol", |w, f| {
                w.choice(f, "proxy_protocol", PROXY_PROTOCOLS, false)
            })
            .flatten();
        let from = self.opt(n, "proxy_protocol_from", |w, f| {
            let set = w.ip_set(f)?;
            if set.is_empty() {
                w.reject(
                    f,
                    "an empty list refuses every connection; name the load balancers, e.g. \
                     [\"10.0.0.0/8\"]",
                );
                return None;
            }
            Some(set)
        });
        match (versions, from) {
            (Some(versions), Some(from)) => Some(ProxyProtocol { versions, from }),
            (Some(_), None) => {
                if n.field("proxy_protocol_from").is_none() {
                    self.missing(
                        n,
                        "proxy_protocol_from",
                        "name the load balancers that send PROXY headers, e.g. \
                         proxy_protocol_from = [\"10.0.0.0/8\"] (a header from anywhere else \
                         would let any client choose its address)",
                    );
                }
                None
            }
            (None, _) => {
                if let Some(f) = n.field("proxy_protocol_from") {
                    if !matches!(n.field("proxy_protocol"), Some(p) if self.str(&p) != Some("off"))
                    {
                        self.reject(
                            &f,
                            "only used with proxy_protocol = \"v1\", \"v2\" or \"any\"; remove it",
                        );
                    }
                }
                None
            }
        }
    }

    /// Two listeners cannot take the same address, nor a dual-stack `[::]` the port of an IPv4
    /// one.
    fn check_bindings(&mut self, listeners: &[Listener], ats: &[usize]) {
        for (i, l) in listeners.iter().enumerate() {
            for earlier in &listeners[..i] {
                let same = earlier.address == l.address;
                let dual = |v6: &Listener, v4: &Listener| {
                    v6.address.is_ipv6()
                        && !v6.ipv6_only
                        && v6.address.ip().is_unspecified()
                        && v4.address.is_ipv4()
                        && v6.address.port() == v4.address.port()
                };
                let reason = if same {
                    format!(
                        "{} is also the address of {}; each listener needs its own",
                        l.address, earlier.origin.key_path
                    )
                } else if dual(l, earlier) || dual(earlier, l) {
                    format!(
                        "{} and {} ({}) share port {}, and the IPv6 one also takes IPv4 \
                         clients; set ipv6_only = true on the IPv6 listener",
                        l.address,
                        earlier.address,
                        earlier.origin.key_path,
                        l.address.port()
                    )
                } else {
                    continue;
                };
                let at = ats.get(i).copied().unwrap_or(0);
                self.push(at, &format!("{}.address", l.origin.key_path), reason);
            }
        }
    }
}

//! The routing tables: `[host_routes]` and `[path_routes]`, each route's host or prefix, its
//! backend (`File` or `Proxy`) and its upstream URL.

use super::*;

impl Walker<'_> {
    pub(super) fn host_routes(&mut self, root: &Node, base: &RouteSecurity) -> Vec<HostRoute> {
        let mut out = Vec::new();
        let Some(node) = self.section(root, "host_routes") else {
            return out;
        };
        let mut seen = HashMap::new();
        for e in node.entries() {
            let host = self.host(&e, &mut seen);
            let hint = "a host route is written [host_routes.\"example.com\"]";
            let Some(table) = self.route_table(&e.field, hint) else {
                continue;
            };
            let route = self.route(&table, self.origin(&e), base);
            if let (Some(host), Some(route)) = (host, route) {
                out.push(HostRoute { host, route });
            }
        }
        out
    }

    pub(super) fn path_routes(&mut self, root: &Node, base: &RouteSecurity) -> Vec<PathRoute> {
        let mut out = Vec::new();
        let Some(node) = self.section(root, "path_routes") else {
            return out;
        };
        let hint = "a path route is written [path_routes.\"example.com\".\"/prefix/\"]";
        let mut seen_hosts = HashMap::new();
        for h in node.entries() {
            let host = self.host(&h, &mut seen_hosts);
            let Some(routes) = self.route_table(&h.field, hint) else {
                continue;
            };
            let mut seen_prefixes = HashMap::new();
            for p in routes.entries() {
                let Some(table) = self.route_table(&p.field, hint) else {
                    continue;
                };
                let prefix = self.prefix(&p, &mut seen_prefixes);
                let route = self.route(&table, self.origin(&p), base);
                if let (Some(host), Some(prefix), Some(route)) = (host.clone(), prefix, route) {
                    out.push(PathRoute {
                        host,
                        prefix,
                        written: p.key.to_string(),
                        route,
                    });
                }
            }
        }
        out
    }

    /// A host key, lower-cased; `seen` maps each host seen so far to its spelling.
    pub(super) fn host(&mut self, e: &Entry, seen: &mut HashMap<String, String>) -> Option<String> {
        let host = e.key.to_ascii_lowercase();
        let bracketed_v6 = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .is_some_and(|h| h.parse::<Ipv6Addr>().is_ok());
        let bad = host.is_empty()
            || (!bracketed_v6 && host.contains(':'))
            || host.contains('/')
            || host.chars().any(char::is_whitespace);
        if bad {
            let reason = format!(
                "invalid host {:?}: host keys are names without a port, e.g. \"example.com\"",
                e.key
            );
            self.push(e.key_at, &e.field.path, reason);
            return None;
        }
        if let Some(first) = seen.get(&host) {
            let reason = format!(
                "duplicates {first:?}: host names are case-insensitive; merge the two tables"
            );
            self.push(e.key_at, &e.field.path, reason);
            return None;
        }
        seen.insert(host.clone(), e.key.to_string());
        Some(host)
    }

    /// A path prefix without its trailing slash; `seen` maps each stored prefix to its spelling.
    pub(super) fn prefix(
        &mut self,
        e: &Entry,
        seen: &mut HashMap<String, String>,
    ) -> Option<String> {
        let raw = e.key;
        let problem = if !raw.starts_with('/') {
            Some("a path prefix starts with \"/\", e.g. \"/static/\"".to_string())
        } else if let Some(c) = raw.chars().find(|c| bad_prefix_char(*c).is_some()) {
            let why = bad_prefix_char(c).unwrap_or_default();
            Some(format!("a path prefix must not contain {c:?}: {why}"))
        } else if raw.contains("//") {
            Some("a path prefix must not contain an empty segment (\"//\")".to_string())
        } else if raw.split('/').any(|s| s == "." || s == "..") {
            Some("a path prefix must not contain a \".\" or \"..\" segment".to_string())
        } else {
            None
        };
        if let Some(problem) = problem {
            self.push(
                e.key_at,
                &e.field.path,
                format!("invalid prefix {raw:?}: {problem}"),
            );
            return None;
        }
        let prefix = match raw.strip_suffix('/') {
            Some(p) if !p.is_empty() => p.to_string(),
            _ => raw.to_string(),
        };
        if let Some(first) = seen.get(&prefix) {
            let reason = format!("duplicates {first:?}: a trailing slash does not change a route");
            self.push(e.key_at, &e.field.path, reason);
            return None;
        }
        seen.insert(prefix.clone(), raw.to_string());
        Some(prefix)
    }

    pub(super) fn origin(&self, e: &Entry) -> Origin {
        let (line, column) = line_column(self.text, e.key_at);
        Origin {
            key_path: e.field.path.clone(),
            line,
            column,
        }
    }

    pub(super) fn route(
        &mut self,
        node: &Node,
        origin: Origin,
        base: &RouteSecurity,
    ) -> Option<Route> {
        self.check_keys(node, &[ROUTE_KEYS, site::SITE_KEYS]);
        let security = match node.field("security").and_then(|f| self.node(&f)) {
            Some(table) => {
                self.check_keys(&table, &[ROUTE_SECURITY_KEYS]);
                self.route_security(&table, base)
            }
            None => base.clone(),
        };
        let kind = match node.field("type") {
            None => Some(RouteType::File),
            Some(f) => self.choice(&f, "type", ROUTE_TYPES, false),
        };
        let (backend, site) = match kind? {
            RouteType::File => {
                self.foreign_keys(node, "File");
                (self.file_backend(node), self.route_site(node, false))
            }
            RouteType::Proxy => {
                self.foreign_keys(node, "Proxy");
                (self.proxy_backend(node), self.route_site(node, true))
            }
            RouteType::Redirect => {
                self.foreign_keys(node, "Redirect");
                (self.redirect_backend(node), self.route_site(node, false))
            }
            RouteType::Respond => {
                self.foreign_keys(node, "Respond");
                (self.respond_backend(node), self.route_site(node, false))
            }
        };
        Some(Route {
            backend: backend?,
            site: site?,
            security,
            origin,
        })
    }

    pub(super) fn file_backend(&mut self, node: &Node) -> Option<Backend> {
        let mode = match node.field("mode") {
            None => named(MODES, defaults::FILE_MODE),
            Some(f) => self.choice(&f, "mode", MODES, false),
        };
        let index = match node.field("index") {
            None => Some(defaults::INDEX.to_string()),
            Some(f) => self.index(&f),
        };
        let target = match node.field("path") {
            None => {
                let hint = "a File route serves a file or directory, e.g. path = \"/var/www/site\"";
                self.missing(node, "path", hint);
                None
            }
            Some(f) => self.existing(&f),
        };
        let (path, kind) = target?;
        let site = self.file_site(node, kind == FileKind::Dir)?;
        Some(Backend::File(FileBackend {
            path,
            kind,
            mode: mode?,
            index: index?,
            site,
        }))
    }

    pub(super) fn proxy_backend(&mut self, node: &Node) -> Option<Backend> {
        let (url, group) = (node.field("url"), node.field("upstream"));
        let target = match (&url, &group) {
            (None, None) => {
                let hint =
                    "a Proxy route needs its upstream, e.g. url = \"http://127.0.0.1:8080\" \
                            or upstream = \"NAME\" of an [upstreams.NAME] group";
                self.missing(node, "url", hint);
                return None;
            }
            (Some(_), Some(g)) => {
                self.reject(g, "a route takes `url` or `upstream`, not both; remove one");
                return None;
            }
            (Some(f), None) => {
                let s = self.str(f)?;
                match upstream_url(s) {
                    Ok(url) => ProxyTarget::Url(url),
                    Err(reason) => {
                        self.reject(f, format!("{s:?}: {reason}"));
                        return None;
                    }
                }
            }
            (None, Some(f)) => ProxyTarget::Group(self.str(f)?.to_string()),
        };
        let preserve_host = match node.field("preserve_host") {
            None => Some(true),
            Some(f) => self.bool(&f),
        };
        let group_route = matches!(target, ProxyTarget::Group(_));
        for key in ["ca_file", "tls_server_name"] {
            if let (true, Some(f)) = (group_route, node.field(key)) {
                self.reject(
                    &f,
                    format!("`{key}` of a group route belongs in its [upstreams] group"),
                );
            }
        }
        let ca_file = match node.field("ca_file") {
            None => Some(None),
            Some(f) => self.readable_file(&f).map(Some),
        };
        let tls_server_name = match node.field("tls_server_name") {
            None => Some(None),
            Some(f) => self.server_name(&f).map(Some),
        };
        let base_path = match (&target, node.field("upstream_path")) {
            (ProxyTarget::Url(u), None) => u.path.clone(),
            (ProxyTarget::Url(_), Some(f)) => {
                self.reject(&f, "a `url` route carries its path in the url; upstream_path is for `upstream` routes");
                return None;
            }
            (ProxyTarget::Group(_), None) => "/".to_string(),
            (ProxyTarget::Group(_), Some(f)) => {
                let s = self.str(&f)?;
                match upstream_url(&format!("http://x{s}")) {
                    Ok(u) if s.starts_with('/') => u.path,
                    Ok(_) => {
                        self.reject(&f, format!("{s:?}: upstream_path starts with '/'"));
                        return None;
                    }
                    Err(reason) => {
                        self.reject(&f, format!("{s:?}: {reason}"));
                        return None;
                    }
                }
            }
        };
        let protocol = match (&target, node.field("upstream_protocol")) {
            (_, None) => Some(crate::config::UpstreamProtocol::Http1),
            (ProxyTarget::Group(_), Some(f)) => {
                self.reject(
                    &f,
                    "`upstream_protocol` is for `url` routes; a group's is its `protocol` in \
                     [upstreams.NAME]",
                );
                return None;
            }
            (ProxyTarget::Url(_), Some(f)) => self.upstream_protocol(&f),
        };
        Some(Backend::Proxy(ProxyBackend {
            target,
            base_path,
            preserve_host: preserve_host?,
            ca_file: ca_file?,
            tls_server_name: tls_server_name?,
            protocol: protocol?,
        }))
    }

    /// A DNS name or IP address for TLS (SNI and certificate verification).
    pub(super) fn server_name(&mut self, f: &Field) -> Option<String> {
        let s = self.str(f)?;
        let ok = s.parse::<std::net::IpAddr>().is_ok() || is_dns_name(s);
        if !ok {
            self.reject(f, format!("{s:?} is not a DNS name or IP address"));
            return None;
        }
        Some(s.to_ascii_lowercase())
    }
}

/// Why `c` may not appear in a path prefix, if it may not.
pub(super) fn bad_prefix_char(c: char) -> Option<&'static str> {
    match c {
        '?' | '#' => Some("a route matches the path only, not a query or fragment"),
        '%' => Some("write the path decoded, not percent-encoded"),
        '\\' => Some("segments are separated by \"/\""),
        c if c.is_whitespace() || c.is_control() => Some("write the path without spaces"),
        _ => None,
    }
}
/// Parses `http[s]://host[:port][/path]`. The error is the reason, for the operator.
pub(super) fn upstream_url(s: &str) -> Result<UpstreamUrl, String> {
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err("not an absolute url; expected e.g. \"http://127.0.0.1:8080/\"".into());
    };
    let (scheme, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "http" => (Scheme::Http, 80),
        "https" => (Scheme::Https, 443),
        _ => {
            return Err(format!(
                "unsupported scheme {scheme:?}; expected \"http\" or \"https\""
            ))
        }
    };
    if rest.contains(['?', '#']) {
        return Err("an upstream url takes no query or fragment".into());
    }
    if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("an upstream url must not contain whitespace; percent-encode it".into());
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        return Err("an upstream url takes no user name or password (\"user@\")".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            return Err("an IPv6 host is missing its closing \"]\"".into());
        };
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{host:?} is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(p),
                None => return Err(format!("unexpected {p:?} after the IPv6 host")),
            },
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("the url has no host; expected e.g. \"http://127.0.0.1:8080/\"".into());
    }
    let bracketed = authority.starts_with('[');
    if !bracketed && host.contains(':') {
        return Err("an IPv6 host is written in brackets, e.g. \"http://[::1]:8080/\"".into());
    }
    if !bracketed
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(format!("{host:?} is not a valid host name"));
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n >= 1 => n,
            _ => return Err(format!("port {p:?} is not a number from 1 to 65535")),
        },
    };
    Ok(UpstreamUrl {
        scheme,
        host: host.to_ascii_lowercase(),
        port,
        path: path.to_string(),
    })
}
/// Whether `s` is a DNS name: dot-separated labels of letters, digits and `-`, within DNS's
/// length limits.
pub(super) fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

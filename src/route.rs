//! The router: a host map, then each host's path routes by longest prefix through `matchit`.
//!
//! Semantics, as the spec's routing tables give them:
//! 1. `host_routes` — an exact, case-insensitive match on the host (port stripped) sends the
//!    whole request to one backend; it wins over every path route of that host.
//! 2. `path_routes."host"` — the longest prefix that matches on a path-segment boundary: route
//!    `/docs` matches `/docs` and `/docs/…`, never `/docsfoo`. A trailing slash on the route
//!    does not matter.
//!
//! Matching happens on the *normalised* path ([`crate::http::path::normalize`]): percent-decoded,
//! dot segments resolved, so `/%61dmin/` cannot slip past the policy of `/admin/`.
//!
//! What a match resolves to — a file under a directory, the file of an exact-file route, or the
//! upstream path with the prefix stripped — is pure logic here ([`Matched::target`]), shared by
//! the data path and the admin API's `explain`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{Backend, FileKind, Route};
use crate::metrics::RouteMetrics;
use crate::preload::MemoryFiles;

/// One route as the data path sees it.
#[derive(Debug)]
pub struct RouteEntry {
    /// Lower-case host.
    pub host: String,
    /// The path prefix without its trailing slash (`"/"` for the root); `None` for a host route.
    pub prefix: Option<String>,
    /// The prefix as written in the config (`"/static/"`), for the admin API.
    pub written: Option<String>,
    pub route: Route,
    /// The bytes of a `mode = "memory"` route, read when the snapshot was built.
    pub memory: Option<Arc<MemoryFiles>>,
    /// A Proxy route's upstream group.
    pub group: Option<Arc<crate::group::Group>>,
    /// The route's counters (the same ones across reloads while the route exists).
    pub metrics: Arc<RouteMetrics>,
    /// Its response rules (headers, error pages, compression), over its host's defaults.
    pub site: crate::site::Site,
}

/// Hosts to routes. Immutable once built; lives in the [`crate::snapshot::Snapshot`].
#[derive(Debug, Default)]
pub struct Router {
    hosts: HashMap<String, HostTable>,
    entries: Vec<RouteEntry>,
}

#[derive(Debug)]
enum HostTable {
    Whole(usize),
    Paths(matchit::Router<usize>),
}

/// A request matched to a route.
#[derive(Debug, Clone, Copy)]
pub struct Matched<'a> {
    pub entry: &'a RouteEntry,
    /// The entry's place in [`Router::entries`].
    pub index: usize,
    /// The request path with the route's prefix removed and no leading slash:
    /// `/static/css/a.css` under `/static` → `css/a.css`; `/static/` → `""`.
    pub relative: &'a str,
    /// Whether the request path is the route itself (`/robots.txt` for route `/robots.txt`;
    /// `/` for a host route or the root prefix).
    pub exact: bool,
}

/// What a matched request resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target<'a> {
    /// An exact-file route's file.
    File(&'a Path),
    /// A path below a directory route's root; `relative` ends in the index file name when the
    /// request named a directory (empty or trailing slash). A relative path that turns out to
    /// be a directory on disk gets the index appended by the file backend (no redirect).
    InDir { root: &'a Path, relative: String },
    /// The upstream path: the route prefix stripped, the rest joined to the URL's path.
    Upstream(String),
    /// An exact-file route asked for something below it (`/robots.txt/extra`).
    NotFound,
}

impl Router {
    /// Builds the router. Host routes shadow path routes of the same host. Fails only on a
    /// prefix that `matchit` cannot hold (the config parser keeps those out).
    pub fn new(entries: Vec<RouteEntry>) -> Result<Self, String> {
        let mut hosts: HashMap<String, HostTable> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            if e.prefix.is_none() {
                hosts.insert(e.host.clone(), HostTable::Whole(i));
            }
        }
        for (i, e) in entries.iter().enumerate() {
            let Some(prefix) = &e.prefix else { continue };
            let table = hosts
                .entry(e.host.clone())
                .or_insert_with(|| HostTable::Paths(matchit::Router::new()));
            let HostTable::Paths(paths) = table else {
                continue; // shadowed by the host route
            };
            let escaped = prefix.replace('{', "{{").replace('}', "}}");
            let patterns = if prefix == "/" {
                vec!["/".to_string(), "/{*rest}".to_string()]
            } else {
                vec![
                    escaped.clone(),
                    format!("{escaped}/"),
                    format!("{escaped}/{{*rest}}"),
                ]
            };
            for p in patterns {
                paths
                    .insert(p.as_str(), i)
                    .map_err(|err| format!("route {prefix:?} of host {:?}: {err}", e.host))?;
            }
        }
        Ok(Self { hosts, entries })
    }

    /// Finds the route for a request. `host` is lower-case without a port; `path` is
    /// normalised and starts with `/`.
    pub fn lookup<'a>(&'a self, host: &str, path: &'a str) -> Option<Matched<'a>> {
        match self.hosts.get(host)? {
            HostTable::Whole(i) => Some(Matched {
                entry: &self.entries[*i],
                index: *i,
                relative: path.strip_prefix('/').unwrap_or(path),
                exact: path == "/",
            }),
            HostTable::Paths(paths) => {
                let i = *paths.at(path).ok()?.value;
                let entry = &self.entries[i];
                let prefix = entry.prefix.as_deref().unwrap_or("/");
                let rest = if prefix == "/" {
                    path
                } else {
                    path.get(prefix.len()..).unwrap_or("")
                };
                Some(Matched {
                    entry,
                    index: i,
                    relative: rest.strip_prefix('/').unwrap_or(rest),
                    exact: path == prefix,
                })
            }
        }
    }

    /// Whether any route names `host`.
    pub fn has_host(&self, host: &str) -> bool {
        self.hosts.contains_key(host)
    }

    /// Every route, host routes and path routes, in config order.
    pub fn entries(&self) -> &[RouteEntry] {
        &self.entries
    }
}

impl<'a> Matched<'a> {
    /// What this request resolves to (see [`Target`]).
    pub fn target(&self) -> Target<'a> {
        match &self.entry.route.backend {
            Backend::File(f) => match f.kind {
                FileKind::File if self.exact => Target::File(&f.path),
                FileKind::File => Target::NotFound,
                FileKind::Dir => {
                    let mut relative = self.relative.to_string();
                    if relative.is_empty() || relative.ends_with('/') {
                        relative.push_str(&f.index);
                    }
                    Target::InDir {
                        root: &f.path,
                        relative,
                    }
                }
            },
            Backend::Proxy(p) => {
                let base = p.base_path.trim_end_matches('/');
                Target::Upstream(format!("{base}/{}", self.relative))
            }
            // They answer every request themselves.
            Backend::Redirect(_) | Backend::Respond(_) => Target::NotFound,
        }
    }
}

impl Target<'_> {
    /// The resolved file path or upstream path, for display (`explain`, logs).
    pub fn display(&self) -> Option<PathBuf> {
        match self {
            Target::File(p) => Some(p.to_path_buf()),
            Target::InDir { root, relative } => Some(root.join(relative)),
            Target::Upstream(p) => Some(PathBuf::from(p)),
            Target::NotFound => None,
        }
    }

    /// The path on disk a file target lies under: a directory route's root, an exact-file
    /// route's file.
    pub fn root(&self) -> Option<&Path> {
        match self {
            Target::File(p) | Target::InDir { root: p, .. } => Some(p),
            Target::Upstream(_) | Target::NotFound => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        FileBackend, Mode, Origin, ProxyBackend, ProxyTarget, RouteSecurity, Scheme, UpstreamUrl,
    };

    fn file(path: &str, kind: FileKind, index: &str) -> Backend {
        Backend::File(FileBackend {
            path: PathBuf::from(path),
            kind,
            mode: Mode::Sendfile,
            index: index.into(),
            site: Default::default(),
        })
    }

    fn proxy(host: &str, port: u16, path: &str) -> Backend {
        Backend::Proxy(ProxyBackend {
            target: ProxyTarget::Url(UpstreamUrl {
                scheme: Scheme::Http,
                host: host.into(),
                port,
                path: path.into(),
            }),
            base_path: path.into(),
            preserve_host: true,
            ca_file: None,
            tls_server_name: None,
            protocol: Default::default(),
        })
    }

    fn entry(host: &str, prefix: Option<&str>, backend: Backend) -> RouteEntry {
        RouteEntry {
            host: host.into(),
            prefix: prefix.map(Into::into),
            written: prefix.map(Into::into),
            route: Route {
                backend,
                site: Default::default(),
                security: RouteSecurity::default(),
                origin: Origin {
                    key_path: String::new(),
                    line: 1,
                    column: 1,
                },
            },
            memory: None,
            group: None,
            metrics: crate::metrics::Registry::new(1).route(&proxyctl::proto::RouteKey {
                host: host.into(),
                prefix: prefix.map(Into::into),
            }),
            site: Default::default(),
        }
    }

    /// The spec's full example.
    fn spec_router() -> Router {
        Router::new(vec![
            entry(
                "example.com",
                Some("/robots.txt"),
                file("/var/www/robots.txt", FileKind::File, "index.html"),
            ),
            entry(
                "example.com",
                Some("/static"),
                file("/var/www/assets/", FileKind::Dir, "index.html"),
            ),
            entry(
                "example.com",
                Some("/docs"),
                file("/var/www/docs/", FileKind::Dir, "index.html"),
            ),
            entry(
                "example.com",
                Some("/user"),
                file("/var/www/user/", FileKind::Dir, "profile.html"),
            ),
            entry(
                "example.com",
                Some("/api"),
                proxy("localhost", 8080, "/app/"),
            ),
            entry(
                "example.com",
                Some("/backend"),
                proxy("localhost", 3000, "/"),
            ),
            entry(
                "example.com",
                Some("/"),
                file("/var/www/index.html", FileKind::File, "index.html"),
            ),
            entry("api.example.com", None, proxy("localhost", 8080, "/")),
            entry(
                "files.example.com",
                None,
                file("/var/www/example", FileKind::Dir, "index.html"),
            ),
        ])
        .unwrap()
    }

    fn resolve(r: &Router, host: &str, path: &str) -> Option<String> {
        let m = r.lookup(host, path)?;
        Some(match m.target() {
            Target::NotFound => "404".into(),
            t => t.display().unwrap().to_string_lossy().into_owned(),
        })
    }

    #[test]
    fn exact_file_routes() {
        let r = spec_router();
        assert_eq!(
            resolve(&r, "example.com", "/robots.txt").unwrap(),
            "/var/www/robots.txt"
        );
        assert_eq!(
            resolve(&r, "example.com", "/robots.txt/extra").unwrap(),
            "404"
        );
        assert_eq!(resolve(&r, "example.com", "/robots.txt/").unwrap(), "404");
        assert_eq!(
            resolve(&r, "example.com", "/").unwrap(),
            "/var/www/index.html"
        );
        // The root route is an exact file: anything else under it is a 404, not the file.
        assert_eq!(resolve(&r, "example.com", "/other").unwrap(), "404");
    }

    #[test]
    fn directory_alias_rows_of_the_spec() {
        let r = spec_router();
        for (path, want) in [
            ("/static/css/style.css", "/var/www/assets/css/style.css"),
            ("/static/", "/var/www/assets/index.html"),
            ("/static", "/var/www/assets/index.html"),
            ("/docs", "/var/www/docs/index.html"),
            ("/docs/", "/var/www/docs/index.html"),
            ("/docs/guide/intro.html", "/var/www/docs/guide/intro.html"),
            ("/docs/guide/", "/var/www/docs/guide/index.html"),
        ] {
            assert_eq!(resolve(&r, "example.com", path).unwrap(), want, "{path}");
        }
    }

    #[test]
    fn custom_index() {
        let r = spec_router();
        assert_eq!(
            resolve(&r, "example.com", "/user/").unwrap(),
            "/var/www/user/profile.html"
        );
        assert_eq!(
            resolve(&r, "example.com", "/user").unwrap(),
            "/var/www/user/profile.html"
        );
        assert_eq!(
            resolve(&r, "example.com", "/user/x/").unwrap(),
            "/var/www/user/x/profile.html"
        );
    }

    #[test]
    fn proxy_rows_of_the_spec() {
        let r = spec_router();
        for (path, want) in [
            ("/api/v1/users", "/app/v1/users"),
            ("/api/", "/app/"),
            ("/api", "/app/"),
            ("/backend", "/"),
            ("/backend/", "/"),
            ("/backend/users", "/users"),
            ("/backend/users/", "/users/"),
        ] {
            assert_eq!(resolve(&r, "example.com", path).unwrap(), want, "{path}");
        }
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        let r = spec_router();
        // /docsfoo is not under /docs: it falls to the root route, an exact file → 404.
        let m = r.lookup("example.com", "/docsfoo").unwrap();
        assert_eq!(m.entry.prefix.as_deref(), Some("/"));
        assert_eq!(m.target(), Target::NotFound);
        let m = r.lookup("example.com", "/backendx").unwrap();
        assert_eq!(m.entry.prefix.as_deref(), Some("/"));
        let m = r.lookup("example.com", "/apix/y").unwrap();
        assert_eq!(m.entry.prefix.as_deref(), Some("/"));
    }

    #[test]
    fn longest_prefix_wins() {
        let r = Router::new(vec![
            entry("h", Some("/"), file("/root", FileKind::Dir, "index.html")),
            entry("h", Some("/a"), file("/a", FileKind::Dir, "index.html")),
            entry("h", Some("/a/b"), file("/ab", FileKind::Dir, "index.html")),
            entry(
                "h",
                Some("/a/b/c"),
                file("/abc", FileKind::Dir, "index.html"),
            ),
        ])
        .unwrap();
        assert_eq!(resolve(&r, "h", "/x").unwrap(), "/root/x");
        assert_eq!(resolve(&r, "h", "/a/x").unwrap(), "/a/x");
        assert_eq!(resolve(&r, "h", "/a/bx").unwrap(), "/a/bx");
        assert_eq!(resolve(&r, "h", "/a/b/x").unwrap(), "/ab/x");
        assert_eq!(resolve(&r, "h", "/a/b/c").unwrap(), "/abc/index.html");
        assert_eq!(resolve(&r, "h", "/a/b/c/d/e").unwrap(), "/abc/d/e");
    }

    #[test]
    fn host_routes_win_and_get_the_whole_path() {
        let r = Router::new(vec![
            entry("h", Some("/"), file("/paths", FileKind::Dir, "index.html")),
            entry("h", None, proxy("up", 80, "/base")),
            entry("files.h", None, file("/srv", FileKind::Dir, "index.html")),
        ])
        .unwrap();
        assert_eq!(resolve(&r, "h", "/x/y?").unwrap(), "/base/x/y?");
        assert_eq!(resolve(&r, "h", "/").unwrap(), "/base/");
        assert_eq!(resolve(&r, "files.h", "/a/b.css").unwrap(), "/srv/a/b.css");
        assert_eq!(resolve(&r, "files.h", "/").unwrap(), "/srv/index.html");
        let r = spec_router();
        assert_eq!(
            resolve(&r, "api.example.com", "/v1/users").unwrap(),
            "/v1/users"
        );
    }

    #[test]
    fn unknown_host_has_no_route() {
        let r = spec_router();
        assert!(r.lookup("other.com", "/").is_none());
        assert!(r.lookup("", "/").is_none());
        // A host with path routes but no matching prefix.
        let r = Router::new(vec![entry("h", Some("/a"), file("/a", FileKind::Dir, "i"))]).unwrap();
        assert!(r.lookup("h", "/b").is_none());
        assert!(r.lookup("h", "/").is_none());
    }

    #[test]
    fn braces_in_prefixes_are_literal() {
        let r = Router::new(vec![entry(
            "h",
            Some("/{x}"),
            file("/b", FileKind::Dir, "i"),
        )])
        .unwrap();
        assert_eq!(resolve(&r, "h", "/{x}/f").unwrap(), "/b/f");
        assert!(r.lookup("h", "/y/f").is_none());
    }
}

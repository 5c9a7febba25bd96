//! The routing table: the neutral model every front end compiles to (Ingress today;
//! Gateway API's HTTPRoute could feed the same shape). Pure data, compared as a whole so
//! the proxy swaps it only when something changed.
//!
//! Host selection first, then path: a request whose host names a virtual host is routed
//! by that host's paths alone (exact hosts before wildcards, wildcards before the rules
//! without a host), as a virtual host in nginx or Envoy is. Only when the chosen host has
//! no matching path does the default backend answer, and without one, 404.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use hyper::http::uri::Authority;
use std::sync::Arc;

use crate::path::PathMatch;

/// A Service port as an Ingress names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServicePort {
    Number(i32),
    Name(String),
}

impl std::fmt::Display for ServicePort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServicePort::Number(n) => write!(f, "{n}"),
            ServicePort::Name(n) => f.write_str(n),
        }
    }
}

/// Where a route sends requests: one Service port, with the ready endpoints behind it
/// (the proxy balances over them itself, not through the cluster IP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub namespace: String,
    pub service: String,
    pub port: ServicePort,
    /// Sorted, so two compilations of one world compare equal.
    pub endpoints: Vec<SocketAddr>,
    /// Each endpoint as a URI authority, made once here rather than per request.
    pub authorities: Vec<Authority>,
}

impl Backend {
    pub fn new(
        namespace: &str,
        service: &str,
        port: ServicePort,
        endpoints: Vec<SocketAddr>,
    ) -> Backend {
        let authorities = endpoints
            .iter()
            .filter_map(|e| Authority::try_from(e.to_string().as_str()).ok())
            .collect();
        Backend {
            namespace: namespace.to_string(),
            service: service.to_string(),
            port,
            endpoints,
            authorities,
        }
    }

    /// `namespace/service:port`, as logs and errors show it.
    pub fn name(&self) -> String {
        format!("{}/{}:{}", self.namespace, self.service, self.port)
    }
}

/// One path of one host, from one Ingress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub path: PathMatch,
    pub backend: Arc<Backend>,
    /// The object it came from, `namespace/name`, for access logs and explanations.
    pub source: String,
}

/// The routes of one host, best first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VirtualHost {
    /// Shared, so a request takes its route with a reference count, not a copy.
    routes: Vec<Arc<Route>>,
}

impl VirtualHost {
    /// Adds a route unless an earlier one already claims the same path (the oldest
    /// Ingress wins a conflict, as it does in the upstream controllers). Returns whether
    /// it was added.
    pub fn add(&mut self, route: Route) -> bool {
        if self.routes.iter().any(|r| r.path == route.path) {
            return false;
        }
        let at = self
            .routes
            .partition_point(|r| PathMatch::precedence(&r.path, &route.path).is_le());
        self.routes.insert(at, Arc::new(route));
        true
    }

    pub fn route(&self, path: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| r.path.matches(path))
    }

    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }
}

/// Which kind of host a request's host header selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostMatch {
    Exact,
    Wildcard,
    Any,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    /// Lower-case host names.
    pub hosts: BTreeMap<String, VirtualHost>,
    /// `*.foo.com` is stored under `foo.com`: the host minus its first label.
    pub wildcards: BTreeMap<String, VirtualHost>,
    /// Rules without a host.
    pub any: VirtualHost,
    pub default_backend: Option<Arc<Route>>,
}

/// What the table decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    Route(&'a Arc<Route>),
    NotFound,
}

impl RouteTable {
    /// The virtual host a `Host` value selects (port and trailing dot ignored, any case).
    pub fn virtual_host(&self, host: &str) -> Option<(HostMatch, &VirtualHost)> {
        let host = normalize_host(host);
        if let Some(v) = self.hosts.get(host.as_ref()) {
            return Some((HostMatch::Exact, v));
        }
        // A wildcard covers exactly one more label: `*.foo.com` takes `a.foo.com`, never
        // `foo.com` or `a.b.foo.com`.
        if let Some((first, rest)) = host.split_once('.') {
            if !first.is_empty() {
                if let Some(v) = self.wildcards.get(rest) {
                    return Some((HostMatch::Wildcard, v));
                }
            }
        }
        if self.any.routes.is_empty() {
            None
        } else {
            Some((HostMatch::Any, &self.any))
        }
    }

    pub fn decide(&self, host: &str, path: &str) -> Decision<'_> {
        let path = path.split(['?', '#']).next().unwrap_or("/");
        let found = self
            .virtual_host(host)
            .and_then(|(_, v)| v.route(path))
            .or(self.default_backend.as_ref());
        match found {
            Some(r) => Decision::Route(r),
            None => Decision::NotFound,
        }
    }

    /// Every backend the table uses, each once.
    pub fn backends(&self) -> Vec<Arc<Backend>> {
        let mut out: Vec<Arc<Backend>> = Vec::new();
        let all = self
            .hosts
            .values()
            .chain(self.wildcards.values())
            .chain(std::iter::once(&self.any))
            .flat_map(|v| v.routes.iter())
            .chain(self.default_backend.iter());
        for r in all {
            if !out
                .iter()
                .any(|b| Arc::ptr_eq(b, &r.backend) || **b == *r.backend)
            {
                out.push(r.backend.clone());
            }
        }
        out
    }

    pub fn route_count(&self) -> usize {
        self.hosts
            .values()
            .chain(self.wildcards.values())
            .chain(std::iter::once(&self.any))
            .map(|v| v.routes.len())
            .sum::<usize>()
            + usize::from(self.default_backend.is_some())
    }
}

/// A host header as a key: lower case, without a port or a trailing dot. IPv6 literals
/// keep their brackets. Borrowed when already so (the usual request: no copy).
pub fn normalize_host(host: &str) -> std::borrow::Cow<'_, str> {
    let host = host.trim();
    let bare = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let bare = bare.trim_end_matches('.');
    if bare.bytes().any(|b| b.is_ascii_uppercase()) {
        bare.to_ascii_lowercase().into()
    } else {
        bare.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: PathMatch, svc: &str) -> Route {
        Route {
            path,
            backend: Arc::new(Backend::new(
                "default",
                svc,
                ServicePort::Number(80),
                vec![],
            )),
            source: "default/ing".into(),
        }
    }

    fn picked<'a>(t: &'a RouteTable, host: &str, path: &str) -> Option<&'a str> {
        match t.decide(host, path) {
            Decision::Route(r) => Some(&r.backend.service),
            Decision::NotFound => None,
        }
    }

    #[test]
    fn hosts_then_paths() {
        let mut t = RouteTable::default();
        let mut foo = VirtualHost::default();
        foo.add(route(PathMatch::prefix("/"), "foo-root"));
        foo.add(route(PathMatch::prefix("/api"), "foo-api"));
        t.hosts.insert("foo.example".into(), foo);
        let mut wild = VirtualHost::default();
        wild.add(route(PathMatch::prefix("/"), "wild"));
        t.wildcards.insert("example".into(), wild);
        assert_eq!(
            picked(&t, "FOO.example:8080", "/api/v1?x=1"),
            Some("foo-api")
        );
        assert_eq!(picked(&t, "foo.example.", "/apix"), Some("foo-root"));
        assert_eq!(picked(&t, "bar.example", "/api"), Some("wild"));
        assert_eq!(picked(&t, "a.bar.example", "/"), None);
        assert_eq!(picked(&t, "example", "/"), None);
        t.default_backend = Some(Arc::new(route(PathMatch::prefix("/"), "default")));
        assert_eq!(picked(&t, "other", "/"), Some("default"));
    }

    #[test]
    fn first_route_for_a_path_wins() {
        let mut v = VirtualHost::default();
        assert!(v.add(route(PathMatch::prefix("/a"), "old")));
        assert!(!v.add(route(PathMatch::prefix("/a/"), "new")));
        assert_eq!(
            v.route("/a/b").map(|r| r.backend.service.as_str()),
            Some("old")
        );
    }

    #[test]
    fn host_keys() {
        assert_eq!(normalize_host("Foo.COM:443"), "foo.com");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(normalize_host("foo.com."), "foo.com");
    }
}

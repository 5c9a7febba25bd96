//! From the cluster's objects to the proxy's configuration: which Ingresses weft serves,
//! their routes, their certificates, and what is wrong with them. Pure: the same objects
//! give an equal result, so the proxy can tell a real change from a resync.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};

use crate::cert::{CertTable, Certificate};
use crate::class::Classes;
use crate::path::PathMatch;
use crate::table::{Backend, Route, RouteTable, ServicePort, VirtualHost};

/// The objects a compilation reads.
#[derive(Debug, Clone, Default)]
/// Shared, as a watch cache hands them out: compiling clones no object.
pub struct Cluster {
    pub ingresses: Vec<Arc<Ingress>>,
    pub classes: Vec<Arc<IngressClass>>,
    pub services: Vec<Arc<Service>>,
    pub slices: Vec<Arc<EndpointSlice>>,
    pub secrets: Vec<Arc<Secret>>,
}

/// Something in an Ingress weft cannot serve as written; the rest of it is served.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// `namespace/name` of the Ingress.
    pub ingress: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compiled {
    pub table: RouteTable,
    pub certs: CertTable,
    /// The Ingresses weft serves, `namespace/name`, sorted: the ones that get a status.
    pub served: Vec<String>,
    pub problems: Vec<Problem>,
}

pub fn compile(cluster: &Cluster) -> Compiled {
    let classes = Classes::from_objects(cluster.classes.iter().map(|c| &**c));
    let mut ours: Vec<&Ingress> = cluster
        .ingresses
        .iter()
        .map(|i| &**i)
        .filter(|i| classes.serves(i))
        .collect();
    // Oldest first: where two Ingresses claim one host and path, the older keeps it.
    ours.sort_by_key(|i| {
        (
            i.metadata.creation_timestamp.as_ref().map(|t| t.0),
            i.metadata.namespace.clone(),
            i.metadata.name.clone(),
        )
    });
    let mut c = Compiler::new(cluster);
    for ing in ours {
        c.ingress(ing);
    }
    c.out.served.sort();
    c.out.problems.sort();
    c.out
}

struct Compiler<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    secrets: HashMap<(&'a str, &'a str), &'a Secret>,
    backends: HashMap<(String, String, ServicePort), Arc<Backend>>,
    certs: HashMap<(String, String), Option<Certificate>>,
    out: Compiled,
}

fn ns_name(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (&str, &str) {
    (
        m.namespace.as_deref().unwrap_or("default"),
        m.name.as_deref().unwrap_or(""),
    )
}

impl<'a> Compiler<'a> {
    fn new(cluster: &'a Cluster) -> Compiler<'a> {
        let mut slices: HashMap<_, Vec<_>> = HashMap::new();
        for s in &cluster.slices {
            let owner = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"));
            if let Some(svc) = owner {
                let ns = s.metadata.namespace.as_deref().unwrap_or("default");
                slices.entry((ns, svc.as_str())).or_default().push(&**s);
            }
        }
        Compiler {
            services: cluster
                .services
                .iter()
                .map(|s| (ns_name(&s.metadata), &**s))
                .collect(),
            slices,
            secrets: cluster
                .secrets
                .iter()
                .map(|s| (ns_name(&s.metadata), &**s))
                .collect(),
            backends: HashMap::new(),
            certs: HashMap::new(),
            out: Compiled::default(),
        }
    }

    fn ingress(&mut self, ing: &Ingress) {
        let (ns, name) = ns_name(&ing.metadata);
        let source = format!("{ns}/{name}");
        self.out.served.push(source.clone());
        let Some(spec) = &ing.spec else { return };
        if let Some(b) = &spec.default_backend {
            if self.out.table.default_backend.is_none() {
                if let Some(backend) = self.backend(ns, &source, b) {
                    self.out.table.default_backend = Some(Arc::new(Route {
                        path: PathMatch::prefix("/"),
                        backend,
                        source: source.clone(),
                    }));
                }
            }
        }
        for rule in spec.rules.iter().flatten() {
            let Some(http) = &rule.http else { continue };
            for p in &http.paths {
                let path = p.path.as_deref().unwrap_or("/");
                let path = match p.path_type.as_str() {
                    "Exact" => PathMatch::exact(path),
                    "Prefix" | "ImplementationSpecific" => PathMatch::prefix(path),
                    other => {
                        self.problem(&source, format!("path {path}: unknown pathType {other:?}"));
                        continue;
                    }
                };
                let Some(backend) = self.backend(ns, &source, &p.backend) else {
                    continue;
                };
                let route = Route {
                    path,
                    backend,
                    source: source.clone(),
                };
                let host = rule.host.as_deref().map(str::to_ascii_lowercase);
                let vhost = self.vhost(host.as_deref());
                let described = route.path.describe();
                if !vhost.add(route) {
                    let h = host.as_deref().unwrap_or("*");
                    self.problem(
                        &source,
                        format!("{h} {described} is already routed by an older Ingress; ignored"),
                    );
                }
            }
        }
        for tls in spec.tls.iter().flatten() {
            let Some(secret) = tls.secret_name.as_deref() else {
                continue;
            };
            let Some(cert) = self.certificate(ns, secret, &source) else {
                continue;
            };
            let hosts = tls.hosts.as_deref().unwrap_or_default();
            if hosts.is_empty() && self.out.certs.fallback.is_none() {
                self.out.certs.fallback = Some(cert.clone());
            }
            for h in hosts {
                self.out.certs.insert(h, cert.clone());
            }
        }
    }

    fn vhost(&mut self, host: Option<&str>) -> &mut VirtualHost {
        let t = &mut self.out.table;
        match host {
            None | Some("") => &mut t.any,
            Some(h) => match h.strip_prefix("*.") {
                Some(rest) => t.wildcards.entry(rest.to_string()).or_default(),
                None => t.hosts.entry(h.to_string()).or_default(),
            },
        }
    }

    fn problem(&mut self, ingress: &str, message: String) {
        self.out.problems.push(Problem {
            ingress: ingress.to_string(),
            message,
        });
    }

    /// The backend an Ingress names, resolved to ready endpoints. A Service that is
    /// missing or has no such port still yields a backend (with no endpoints: requests
    /// get 503), so the route exists and the problem is reported rather than hidden.
    fn backend(&mut self, ns: &str, source: &str, b: &IngressBackend) -> Option<Arc<Backend>> {
        let Some(svc) = &b.service else {
            self.problem(
                source,
                "resource backends are not supported; only service backends".into(),
            );
            return None;
        };
        let port = match svc.port.as_ref() {
            Some(p) => match (&p.name, p.number) {
                (Some(n), _) if !n.is_empty() => ServicePort::Name(n.clone()),
                (_, Some(n)) => ServicePort::Number(n),
                _ => {
                    self.problem(
                        source,
                        format!("service {}: port has neither name nor number", svc.name),
                    );
                    return None;
                }
            },
            None => {
                self.problem(source, format!("service {}: no port", svc.name));
                return None;
            }
        };
        let key = (ns.to_string(), svc.name.clone(), port.clone());
        if let Some(b) = self.backends.get(&key) {
            return Some(b.clone());
        }
        let (endpoints, problem) = self.endpoints(ns, &svc.name, &port);
        if let Some(p) = problem {
            self.problem(source, p);
        }
        let backend = Arc::new(Backend::new(ns, &svc.name, port, endpoints));
        self.backends.insert(key, backend.clone());
        Some(backend)
    }

    fn endpoints(
        &self,
        ns: &str,
        name: &str,
        port: &ServicePort,
    ) -> (Vec<SocketAddr>, Option<String>) {
        let Some(svc) = self.services.get(&(ns, name)) else {
            return (vec![], Some(format!("service {ns}/{name} not found")));
        };
        let ports = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_deref())
            .unwrap_or_default();
        let found = ports.iter().find(|p| match port {
            ServicePort::Number(n) => p.port == *n,
            ServicePort::Name(n) => p.name.as_deref() == Some(n.as_str()),
        });
        let Some(sp) = found else {
            return (
                vec![],
                Some(format!("service {ns}/{name} has no port {port}")),
            );
        };
        let want_name = sp.name.as_deref().unwrap_or("");
        let mut out = Vec::new();
        for slice in self.slices.get(&(ns, name)).into_iter().flatten() {
            let slice_port = slice.ports.iter().flatten().find(|p| {
                p.name.as_deref().unwrap_or("") == want_name
                    && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
            });
            let Some(number) = slice_port.and_then(|p| p.port) else {
                continue;
            };
            let Ok(number) = u16::try_from(number) else {
                continue;
            };
            for ep in slice.endpoints.iter().flatten() {
                // An unset condition reads as ready, as the EndpointSlice API says.
                let ready = ep.conditions.as_ref().and_then(|c| c.ready) != Some(false);
                if !ready {
                    continue;
                }
                for a in &ep.addresses {
                    if let Ok(ip) = a.parse::<IpAddr>() {
                        out.push(SocketAddr::new(ip, number));
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        (out, None)
    }

    fn certificate(&mut self, ns: &str, secret: &str, source: &str) -> Option<Certificate> {
        let key = (ns.to_string(), secret.to_string());
        if let Some(c) = self.certs.get(&key) {
            return c.clone();
        }
        let parsed = match self.secrets.get(&(ns, secret)) {
            None => Err(format!(
                "TLS secret {ns}/{secret} not found; the default certificate answers"
            )),
            Some(s) => {
                let data: BTreeMap<_, _> = s.data.clone().unwrap_or_default();
                match (data.get("tls.crt"), data.get("tls.key")) {
                    (Some(c), Some(k)) => {
                        Certificate::from_pem(&format!("{ns}/{secret}"), &c.0, &k.0)
                            .map_err(|e| e.to_string())
                    }
                    _ => Err(format!("TLS secret {ns}/{secret} lacks tls.crt or tls.key")),
                }
            }
        };
        let cert = match parsed {
            Ok(c) => Some(c),
            Err(e) => {
                self.problem(source, e);
                None
            }
        };
        self.certs.insert(key, cert.clone());
        cert
    }
}

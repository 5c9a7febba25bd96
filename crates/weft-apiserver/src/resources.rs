//! The resource kinds this API server serves, as discovery and routing see them.

/// One served resource (a REST collection), e.g. core/v1 pods.
#[derive(Debug, PartialEq, Eq)]
pub struct Resource {
    /// API group; "" is the core (legacy) group under `/api`.
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Whether `/status` is a separate subresource (status ignored on main-resource writes).
    pub has_status: bool,
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Stable short identifier used in the on-disk log.
    pub fn id(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }

    pub fn group_version(&self) -> (&'static str, &'static str) {
        (self.group, self.version)
    }
}

#[allow(clippy::too_many_arguments)]
const fn res(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    has_status: bool,
) -> Resource {
    Resource {
        group,
        version,
        plural,
        singular,
        kind,
        namespaced,
        short_names,
        has_status,
    }
}

pub static RESOURCES: &[Resource] = &[
    res(
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        &["ns"],
        true,
    ),
    res("", "v1", "nodes", "node", "Node", false, &["no"], true),
    res("", "v1", "pods", "pod", "Pod", true, &["po"], true),
    res(
        "",
        "v1",
        "services",
        "service",
        "Service",
        true,
        &["svc"],
        true,
    ),
    res("", "v1", "secrets", "secret", "Secret", true, &[], false),
    res(
        "",
        "v1",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        &["cm"],
        false,
    ),
    res("", "v1", "events", "event", "Event", true, &["ev"], false),
    res(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "endpointslice",
        "EndpointSlice",
        true,
        &[],
        false,
    ),
    res(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "networkpolicy",
        "NetworkPolicy",
        true,
        &["netpol"],
        false,
    ),
    res(
        "networking.k8s.io",
        "v1",
        "ingresses",
        "ingress",
        "Ingress",
        true,
        &["ing"],
        true,
    ),
    res(
        "networking.k8s.io",
        "v1",
        "ingressclasses",
        "ingressclass",
        "IngressClass",
        false,
        &[],
        false,
    ),
    // v1beta1 is network-policy-api's storage version now, so it comes first (the
    // preferred version); v1alpha2 (appended below) shares its storage.
    res(
        "policy.networking.k8s.io",
        "v1beta1",
        "clusternetworkpolicies",
        "clusternetworkpolicy",
        "ClusterNetworkPolicy",
        false,
        &["cnp"],
        true,
    ),
    res(
        "events.k8s.io",
        "v1",
        "events",
        "event",
        "Event",
        true,
        &["ev"],
        false,
    ),
    res(
        "coordination.k8s.io",
        "v1",
        "leases",
        "lease",
        "Lease",
        true,
        &[],
        false,
    ),
    res(
        "apps",
        "v1",
        "deployments",
        "deployment",
        "Deployment",
        true,
        &["deploy"],
        true,
    ),
    res(
        "policy.networking.k8s.io",
        "v1alpha2",
        "clusternetworkpolicies",
        "clusternetworkpolicy",
        "ClusterNetworkPolicy",
        false,
        &["cnp"],
        true,
    ),
    // v1 Endpoints, kept by the EndpointSlice controller from the slices it writes (for
    // tools that still read them, e.g. `kubectl describe service`).
    res(
        "",
        "v1",
        "endpoints",
        "endpoints",
        "Endpoints",
        true,
        &["ep"],
        false,
    ),
];

pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

pub fn by_id(id: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.id() == id)
}

/// The (group, version) pairs served under `/apis`, in a stable order.
pub fn api_groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if !out.contains(&r.group_version()) {
            out.push(r.group_version());
        }
    }
    out
}

pub static NAMESPACES: &Resource = &RESOURCES[0];
pub static NODES: &Resource = &RESOURCES[1];
pub static PODS: &Resource = &RESOURCES[2];
pub static SERVICES: &Resource = &RESOURCES[3];
pub static ENDPOINTSLICES: &Resource = &RESOURCES[7];
pub static DEPLOYMENTS: &Resource = &RESOURCES[14];
pub static ENDPOINTS: &Resource = &RESOURCES[16];

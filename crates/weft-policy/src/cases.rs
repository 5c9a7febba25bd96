//! The truth-table case format (`tests/cases/*.yaml`), readable by the lab as well as by
//! the matcher tests: a fixed world of pods, and cases that apply objects step by step and
//! state the full reachability matrix after each step. See the crate README for the format.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::Deserialize;

use crate::cnp::ClusterNetworkPolicy;
use crate::error::{Error, Result};
use crate::model::Protocol;
use crate::selector::Labels;
use crate::view::{Cluster, ContainerPort, Namespace, Node, Pod};

/// The pods every case runs against (`tests/cases/world.yaml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct World {
    pub nodes: Vec<WorldNode>,
    pub namespaces: Vec<WorldNamespace>,
    pub pods: Vec<WorldPod>,
    /// The (protocol, port) pairs every pod serves and every grid must cover, `tcp/80`.
    pub serves: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorldNode {
    pub name: String,
    #[serde(default)]
    pub labels: Labels,
    pub ips: Vec<IpAddr>,
    #[serde(rename = "podCIDR")]
    pub pod_cidr: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorldNamespace {
    pub name: String,
    #[serde(default)]
    pub labels: Labels,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorldPod {
    /// `namespace/name`.
    pub pod: String,
    #[serde(default)]
    pub labels: Labels,
    pub node: String,
    pub ip: IpAddr,
    /// Named container ports, `{name: serve-80-tcp, port: 80, protocol: TCP}`.
    #[serde(default)]
    pub ports: Vec<WorldPort>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorldPort {
    pub name: String,
    pub port: u16,
    pub protocol: String,
}

/// A port a grid is about: `tcp/80`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Service {
    pub protocol: Protocol,
    pub port: u16,
}

impl Service {
    pub fn parse(s: &str) -> Option<Service> {
        let (proto, port) = s.split_once('/')?;
        Some(Service {
            protocol: Protocol::parse(proto)?,
            port: port.parse().ok()?,
        })
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.protocol, self.port)
    }
}

fn invalid(object: &str, field: &str, value: impl fmt::Display, problem: &str) -> Error {
    Error::Invalid {
        object: object.into(),
        field: field.into(),
        value: value.to_string(),
        problem: problem.into(),
    }
}

fn split_pod(s: &str) -> Option<(&str, &str)> {
    s.split_once('/')
}

impl World {
    pub fn load(path: &Path) -> Result<World> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(&path.display().to_string(), "", "", &e.to_string()))?;
        serde_yaml::from_str(&text)
            .map_err(|e| invalid(&path.display().to_string(), "", "", &e.to_string()))
    }

    pub fn services(&self) -> Result<Vec<Service>> {
        self.serves
            .iter()
            .map(|s| {
                Service::parse(s).ok_or_else(|| {
                    invalid("world", "serves", s, "write protocol/port, e.g. tcp/80")
                })
            })
            .collect()
    }

    /// Pod names, `ns/name`, in the world's order (the grids' order).
    pub fn pod_names(&self) -> Vec<String> {
        self.pods.iter().map(|p| p.pod.clone()).collect()
    }

    /// The world as a cluster view, before any case step.
    pub fn cluster(&self) -> Result<Cluster> {
        let mut c = Cluster::default();
        for n in &self.nodes {
            c.upsert_node(Node {
                name: n.name.clone(),
                labels: n.labels.clone(),
                ips: n.ips.clone(),
            });
        }
        for ns in &self.namespaces {
            c.upsert_namespace(namespace(&ns.name, &ns.labels));
        }
        for p in &self.pods {
            let (ns, name) = split_pod(&p.pod)
                .ok_or_else(|| invalid("world", "pods[].pod", &p.pod, "write namespace/name"))?;
            let ports = p
                .ports
                .iter()
                .map(|wp| {
                    Ok(ContainerPort {
                        name: wp.name.clone(),
                        port: wp.port,
                        protocol: Protocol::parse(&wp.protocol).ok_or_else(|| {
                            invalid(
                                "world",
                                "pods[].ports[].protocol",
                                &wp.protocol,
                                "TCP, UDP or SCTP",
                            )
                        })?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            c.upsert_pod(Pod {
                namespace: ns.into(),
                name: name.into(),
                labels: p.labels.clone(),
                ips: vec![p.ip],
                node: Some(p.node.clone()),
                host_network: false,
                ports,
            });
        }
        Ok(c)
    }

    /// Replaces `${ip:NS/POD}` and `${podCIDR:NODE}` with the world's values, so cases
    /// name addresses by pod and a lab with other addresses can substitute its own.
    pub fn substitute(&self, text: &str) -> Result<String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| invalid("case", "", &rest[start..], "unclosed ${"))?;
            let var = &after[..end];
            let value = match var.split_once(':') {
                Some(("ip", pod)) => self
                    .pods
                    .iter()
                    .find(|p| p.pod == pod)
                    .map(|p| p.ip.to_string()),
                Some(("podCIDR", node)) => self
                    .nodes
                    .iter()
                    .find(|n| n.name == node)
                    .map(|n| n.pod_cidr.clone()),
                _ => None,
            }
            .ok_or_else(|| {
                invalid(
                    "case",
                    "",
                    var,
                    "use ${ip:NS/POD} or ${podCIDR:NODE} of the world",
                )
            })?;
            out.push_str(&value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

fn namespace(name: &str, labels: &Labels) -> Namespace {
    let mut labels = labels.clone();
    labels
        .entry("kubernetes.io/metadata.name".into())
        .or_insert_with(|| name.to_owned());
    Namespace {
        name: name.to_owned(),
        labels,
    }
}

/// One file: steps applied in order, each followed by its expected matrices.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Case {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    #[serde(default)]
    pub name: Option<String>,
    /// Objects to create or replace: NetworkPolicy, ClusterNetworkPolicy.
    #[serde(default)]
    pub apply: Vec<serde_yaml::Value>,
    /// Objects to delete: `{kind, namespace?, name}`.
    #[serde(default)]
    pub delete: Vec<ObjectRef>,
    /// Pods whose labels become exactly these: `{pod: x/a, labels: {...}}`.
    #[serde(default)]
    pub label_pods: Vec<PodLabels>,
    /// Namespaces whose labels become exactly these.
    #[serde(default)]
    pub label_namespaces: Vec<NamespaceLabels>,
    pub expect: Vec<Expect>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectRef {
    pub kind: String,
    #[serde(default)]
    pub namespace: Option<String>,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodLabels {
    pub pod: String,
    pub labels: Labels,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceLabels {
    pub namespace: String,
    pub labels: Labels,
}

/// One matrix and the ports it holds for.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Expect {
    /// `[tcp/80, udp/81, ...]`.
    pub on: Vec<String>,
    /// Header `from\to` then the columns' pods; one row per client pod; `.` is allowed,
    /// `X` denied.
    pub grid: String,
}

impl Case {
    /// Reads a case, substituting the world's addresses.
    pub fn load(path: &Path, world: &World) -> Result<Case> {
        let at = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| invalid(&at, "", "", &e.to_string()))?;
        let text = world.substitute(&text)?;
        serde_yaml::from_str(&text).map_err(|e| invalid(&at, "", "", &e.to_string()))
    }
}

impl Step {
    /// Applies the step's changes to the view, in the order: deletes, labels, objects.
    pub fn apply_to(&self, c: &mut Cluster) -> Result<()> {
        for d in &self.delete {
            match (d.kind.as_str(), &d.namespace) {
                ("NetworkPolicy", Some(ns)) => c.delete_network_policy(ns, &d.name),
                ("ClusterNetworkPolicy", None) => c.delete_cluster_network_policy(&d.name),
                (k, _) => {
                    return Err(invalid(
                        "step",
                        "delete[].kind",
                        k,
                        "NetworkPolicy (with namespace) or ClusterNetworkPolicy (without)",
                    ))
                }
            }
        }
        for l in &self.label_pods {
            let pod = split_pod(&l.pod)
                .and_then(|(ns, n)| c.pods.get_mut(&(ns.to_owned(), n.to_owned())))
                .ok_or_else(|| invalid("step", "labelPods[].pod", &l.pod, "no such pod"))?;
            pod.labels = l.labels.clone();
        }
        for l in &self.label_namespaces {
            c.upsert_namespace(namespace(&l.namespace, &l.labels));
        }
        for obj in &self.apply {
            let kind = obj.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
            let bad = |e: serde_yaml::Error| invalid("step", "apply[]", kind, &e.to_string());
            match kind {
                "NetworkPolicy" => {
                    let np: NetworkPolicy = serde_yaml::from_value(obj.clone()).map_err(bad)?;
                    c.apply_network_policy(&np)?;
                }
                "ClusterNetworkPolicy" => {
                    let cnp: ClusterNetworkPolicy =
                        serde_yaml::from_value(obj.clone()).map_err(bad)?;
                    c.apply_cluster_network_policy(&cnp)?;
                }
                k => {
                    return Err(invalid(
                        "step",
                        "apply[].kind",
                        k,
                        "NetworkPolicy or ClusterNetworkPolicy",
                    ))
                }
            }
        }
        Ok(())
    }
}

/// Whether each (client, server) pair may connect.
pub type Matrix = BTreeMap<(String, String), bool>;

impl Expect {
    pub fn services(&self) -> Result<Vec<Service>> {
        self.on
            .iter()
            .map(|s| {
                Service::parse(s)
                    .ok_or_else(|| invalid("expect", "on[]", s, "write protocol/port, e.g. tcp/80"))
            })
            .collect()
    }

    pub fn matrix(&self) -> Result<Matrix> {
        parse_grid(&self.grid)
    }
}

pub fn parse_grid(grid: &str) -> Result<Matrix> {
    let mut lines = grid.lines().map(str::trim).filter(|l| !l.is_empty());
    let header = lines
        .next()
        .ok_or_else(|| invalid("grid", "", "", "empty grid"))?;
    let cols: Vec<&str> = header.split_whitespace().skip(1).collect();
    let mut m = Matrix::new();
    for line in lines {
        let mut cells = line.split_whitespace();
        let row = cells.next().unwrap_or_default();
        let cells: Vec<&str> = cells.collect();
        if cells.len() != cols.len() {
            return Err(invalid(
                "grid",
                row,
                line,
                "a row needs one cell per column",
            ));
        }
        for (col, cell) in cols.iter().zip(cells) {
            let allowed = match cell {
                "." => true,
                "X" | "x" => false,
                other => return Err(invalid("grid", row, other, "a cell is . or X")),
            };
            m.insert((row.to_owned(), (*col).to_owned()), allowed);
        }
    }
    Ok(m)
}

/// A matrix as a grid, in `pods` order (for failure messages and for writing cases).
pub fn format_grid(m: &Matrix, pods: &[String]) -> String {
    let mut s = String::from("from\\to");
    for p in pods {
        s.push_str(&format!(" {p}"));
    }
    s.push('\n');
    for r in pods {
        s.push_str(&format!("{r:7}"));
        for c in pods {
            let cell = match m.get(&(r.clone(), c.clone())) {
                Some(true) => ".",
                Some(false) => "X",
                None => "?",
            };
            s.push_str(&format!(" {cell:>3}"));
        }
        s.push('\n');
    }
    s
}

//! The one implementation of policy decisions. [`check`] answers whether a connection is
//! allowed and which rules decided it; [`crate::desired`] compiles the nf_tables data by
//! asking [`decide`] about every distinct region of (peer address, protocol, port), so the
//! kernel's table and this answer cannot disagree by construction (and tests check that
//! the encoding keeps it so).
//!
//! Per direction (egress at the client pod, ingress at the server pod):
//! 1. traffic between a pod and its own node is allowed;
//! 2. Admin-tier ClusterNetworkPolicies selecting the pod, by priority then name, rules in
//!    written order: the first matching rule decides (Accept, Deny), Pass skips the tier;
//! 3. NetworkPolicies of the pod's namespace selecting it for this direction: if any, the
//!    pod is isolated and allowed only what the union of their rules allows;
//! 4. Baseline-tier ClusterNetworkPolicies, as the Admin tier, only for pods no
//!    NetworkPolicy selected for this direction;
//! 5. otherwise allowed.
//!
//! A connection needs both directions. Replies pass by conntrack, never asked here.

use std::fmt;
use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::model::*;
use crate::view::{Cluster, Node, Owner, Pod};

/// An end of a connection, as a question names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Pod {
        namespace: String,
        name: String,
    },
    /// Any address: a pod's or node's is treated as that pod or node.
    Ip(IpAddr),
    Node(String),
}

impl Endpoint {
    pub fn pod(namespace: &str, name: &str) -> Endpoint {
        Endpoint::Pod {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// `ns/name` for a pod, an address, or `node/NAME` (the CLI's spelling).
impl std::str::FromStr for Endpoint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Endpoint> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Endpoint::Ip(ip));
        }
        match s.split_once('/') {
            Some(("node", n)) if !n.is_empty() => Ok(Endpoint::Node(n.to_owned())),
            Some((ns, n)) if !ns.is_empty() && !n.is_empty() && !n.contains('/') => {
                Ok(Endpoint::pod(ns, n))
            }
            _ => Err(Error::Invalid {
                object: "endpoint".into(),
                field: String::new(),
                value: s.to_owned(),
                problem: "write NAMESPACE/POD, an address, or node/NAME".into(),
            }),
        }
    }
}

/// `PORT/PROTO` (`80/tcp`, `53/udp`) or a protocol without ports (`icmp`), the CLI's
/// spelling of what a connection is to.
pub fn parse_port(s: &str) -> Result<(u16, Protocol)> {
    let bad = || Error::Invalid {
        object: "port".into(),
        field: String::new(),
        value: s.to_owned(),
        problem: "write PORT/PROTO such as 80/tcp, 53/udp, 9/sctp, or icmp".into(),
    };
    if s.eq_ignore_ascii_case("icmp") {
        return Ok((0, Protocol::Other(1)));
    }
    let (port, proto) = s.split_once('/').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    Ok((port, Protocol::parse(proto).ok_or_else(bad)?))
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Pod { namespace, name } => write!(f, "{namespace}/{name}"),
            Endpoint::Ip(ip) => write!(f, "{ip}"),
            Endpoint::Node(n) => write!(f, "node/{n}"),
        }
    }
}

/// An end of a connection resolved against the cluster.
#[derive(Debug, Clone, Copy, Default)]
pub struct Remote<'a> {
    pub ip: Option<IpAddr>,
    /// Set for pods that are not host-network.
    pub pod: Option<&'a Pod>,
    /// Set for node addresses and host-network pods.
    pub node: Option<&'a Node>,
}

impl Cluster {
    pub fn resolve(&self, e: &Endpoint) -> Result<Remote<'_>> {
        match e {
            Endpoint::Pod { namespace, name } => {
                let p = self.pod(namespace, name).ok_or_else(|| Error::Unknown {
                    what: "pod",
                    name: format!("{namespace}/{name}"),
                })?;
                let ip = p
                    .ips
                    .iter()
                    .find(|a| a.is_ipv4())
                    .or(p.ips.first())
                    .copied();
                if p.host_network {
                    let node = p.node.as_ref().and_then(|n| self.nodes.get(n));
                    return Ok(Remote {
                        ip,
                        pod: None,
                        node,
                    });
                }
                Ok(Remote {
                    ip,
                    pod: Some(p),
                    node: None,
                })
            }
            Endpoint::Node(n) => {
                let node = self.nodes.get(n).ok_or_else(|| Error::Unknown {
                    what: "node",
                    name: n.clone(),
                })?;
                Ok(Remote {
                    ip: node.ips.first().copied(),
                    pod: None,
                    node: Some(node),
                })
            }
            Endpoint::Ip(ip) => Ok(self.resolve_ip(*ip)),
        }
    }

    pub fn resolve_ip(&self, ip: IpAddr) -> Remote<'_> {
        let mut r = Remote {
            ip: Some(ip),
            ..Remote::default()
        };
        match self.owner(ip) {
            Some(Owner::Pod(ns, name)) => r.pod = self.pod(&ns, &name),
            Some(Owner::Node(n)) => r.node = self.nodes.get(&n),
            None => {}
        }
        r
    }
}

/// The rule that decided, for logs and `weft lab policy check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    pub policy: PolicyId,
    pub tier: Tier,
    pub priority: u32,
    pub direction: Direction,
    pub index: usize,
    pub name: Option<String>,
    pub action: Action,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.policy)?;
        if self.tier != Tier::NetworkPolicy {
            write!(
                f,
                " ({} tier, priority {})",
                self.tier.as_str(),
                self.priority
            )?;
        }
        write!(f, " {}[{}]", self.direction.as_str(), self.index)?;
        if let Some(n) = &self.name {
            write!(f, " {n:?}")?;
        }
        write!(f, ": {}", self.action.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// This end is not a pod (an outside address, a node): nothing to enforce here.
    NotAPod,
    /// Traffic between a pod and its own node is always allowed.
    OwnNode,
    /// A pod talking to itself: the packets never leave its network namespace.
    Loopback,
    /// No policy decided and none isolates the pod: allowed by default. `passed`: the
    /// Pass rules that skipped a tier on the way.
    Default { passed: Vec<RuleRef> },
    /// A rule decided.
    Rule { rule: RuleRef, passed: Vec<RuleRef> },
    /// NetworkPolicies isolate the pod for this direction and none of their rules allows
    /// the connection.
    Isolated {
        policies: Vec<PolicyId>,
        passed: Vec<RuleRef>,
    },
}

/// One direction's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub reason: Reason,
}

impl Verdict {
    fn allow(reason: Reason) -> Verdict {
        Verdict {
            allowed: true,
            reason,
        }
    }

    /// The tier whose decision this is; `None` when nothing denied.
    pub fn denying_tier(&self) -> Option<Tier> {
        match (&self.reason, self.allowed) {
            (_, true) => None,
            (Reason::Rule { rule, .. }, false) => Some(rule.tier),
            (_, false) => Some(Tier::NetworkPolicy),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.allowed { "allowed" } else { "denied" })?;
        let passed = match &self.reason {
            Reason::NotAPod => return f.write_str(": not a pod, nothing to enforce"),
            Reason::OwnNode => return f.write_str(": between a pod and its own node"),
            Reason::Loopback => return f.write_str(": a pod to itself, never leaves it"),
            Reason::Default { passed } => {
                f.write_str(": no policy decides or isolates")?;
                passed
            }
            Reason::Rule { rule, passed } => {
                write!(f, " by {rule}")?;
                passed
            }
            Reason::Isolated { policies, passed } => {
                f.write_str(": isolated by ")?;
                for (i, p) in policies.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{p}")?;
                }
                f.write_str(", no rule of theirs allows it")?;
                passed
            }
        };
        for p in passed {
            write!(f, " (after {p})")?;
        }
        Ok(())
    }
}

/// Both directions of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// At the client: its egress.
    pub egress: Verdict,
    /// At the server: its ingress.
    pub ingress: Verdict,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", if self.allowed { "ALLOWED" } else { "DENIED" })?;
        writeln!(f, "  egress at the client:  {}", self.egress)?;
        write!(f, "  ingress at the server: {}", self.ingress)
    }
}

/// Whether `src` may open a connection to `dst` on `port`/`proto`, and why.
/// `port` is ignored for protocols without ports.
pub fn check(
    cluster: &Cluster,
    src: &Endpoint,
    dst: &Endpoint,
    port: u16,
    proto: Protocol,
) -> Result<Decision> {
    let s = cluster.resolve(src)?;
    let d = cluster.resolve(dst)?;
    if let (Some(a), Some(b)) = (s.pod, d.pod) {
        if std::ptr::eq(a, b) {
            let v = Verdict::allow(Reason::Loopback);
            return Ok(Decision {
                allowed: true,
                egress: v.clone(),
                ingress: v,
            });
        }
    }
    let one = |dir: Direction, subject: Remote, remote: Remote| match subject.pod {
        Some(pod) => decide(
            cluster,
            &Applicable::new(cluster, dir, pod),
            remote,
            port,
            proto,
        ),
        None => Verdict::allow(Reason::NotAPod),
    };
    let egress = one(Direction::Egress, s, d);
    let ingress = one(Direction::Ingress, d, s);
    Ok(Decision {
        allowed: egress.allowed && ingress.allowed,
        egress,
        ingress,
    })
}

/// The policies that apply to one pod in one direction, in evaluation order. Computed
/// once per pod when many peers are asked about (the nft compiler).
#[derive(Debug, Clone)]
pub struct Applicable<'a> {
    pub direction: Direction,
    pub pod: &'a Pod,
    pub admin: Vec<&'a Policy>,
    pub netpol: Vec<&'a Policy>,
    pub baseline: Vec<&'a Policy>,
}

impl<'a> Applicable<'a> {
    pub fn new(cluster: &'a Cluster, direction: Direction, pod: &'a Pod) -> Applicable<'a> {
        let mut a = Applicable {
            direction,
            pod,
            admin: Vec::new(),
            netpol: Vec::new(),
            baseline: Vec::new(),
        };
        for p in cluster.policies.values() {
            if p.rules(direction).is_none() || !selects(cluster, &p.subject, pod) {
                continue;
            }
            match p.tier {
                Tier::Admin => a.admin.push(p),
                Tier::NetworkPolicy => a.netpol.push(p),
                Tier::Baseline => a.baseline.push(p),
            }
        }
        for v in [&mut a.admin, &mut a.netpol, &mut a.baseline] {
            v.sort_by(|x, y| x.order_key().cmp(&y.order_key()));
        }
        a
    }

    /// Whether any policy could decide anything for this pod and direction.
    pub fn is_empty(&self) -> bool {
        self.admin.is_empty() && self.netpol.is_empty() && self.baseline.is_empty()
    }

    /// All the policies, in evaluation order.
    pub fn all(&self) -> impl Iterator<Item = &'a Policy> + '_ {
        self.admin
            .iter()
            .chain(&self.netpol)
            .chain(&self.baseline)
            .copied()
    }
}

/// One direction at `a.pod` for traffic with `remote`.
pub fn decide(
    cluster: &Cluster,
    a: &Applicable,
    remote: Remote,
    port: u16,
    proto: Protocol,
) -> Verdict {
    let pod = a.pod;
    // Also covers a pod reaching itself through a Service (hairpin), which does cross the
    // node's forward hook.
    if remote.pod.is_some_and(|r| std::ptr::eq(r, pod)) {
        return Verdict::allow(Reason::Loopback);
    }
    if remote
        .node
        .is_some_and(|n| pod.node.as_deref() == Some(n.name.as_str()))
    {
        return Verdict::allow(Reason::OwnNode);
    }
    let port = if proto.has_ports() { port } else { 0 };
    let m = Match {
        cluster,
        dir: a.direction,
        pod,
        remote,
        port,
        proto,
    };
    let mut passed = Vec::new();
    if let Some(v) = m.tier(&a.admin, &mut passed) {
        return v;
    }
    if !a.netpol.is_empty() {
        for p in &a.netpol {
            for r in p.rules(a.direction).unwrap_or_default() {
                if m.rule(r) {
                    return Verdict::allow(Reason::Rule {
                        rule: m.rule_ref(p, r),
                        passed,
                    });
                }
            }
        }
        return Verdict {
            allowed: false,
            reason: Reason::Isolated {
                policies: a.netpol.iter().map(|p| p.id.clone()).collect(),
                passed,
            },
        };
    }
    if let Some(v) = m.tier(&a.baseline, &mut passed) {
        return v;
    }
    Verdict::allow(Reason::Default { passed })
}

/// Whether a policy's subject holds `pod`.
pub fn selects(cluster: &Cluster, s: &Subject, pod: &Pod) -> bool {
    !pod.host_network
        && namespace_matches(cluster, &s.namespaces, &pod.namespace)
        && s.pods.matches(&pod.labels)
}

fn namespace_matches(cluster: &Cluster, m: &NamespaceMatch, ns: &str) -> bool {
    match m {
        NamespaceMatch::Own(own) => own == ns,
        NamespaceMatch::Selected(sel) if sel.is_everything() => true,
        NamespaceMatch::Selected(sel) => match cluster.namespaces.get(ns) {
            Some(n) => sel.matches(&n.labels),
            None => sel.matches(&cluster.namespace_labels(ns)),
        },
    }
}

/// One question: the subject pod, the other end, the port.
struct Match<'a> {
    cluster: &'a Cluster,
    dir: Direction,
    pod: &'a Pod,
    remote: Remote<'a>,
    port: u16,
    proto: Protocol,
}

impl Match<'_> {
    /// A ClusterNetworkPolicy tier: `Some` when a rule decided; a Pass ends the tier.
    fn tier(&self, policies: &[&Policy], passed: &mut Vec<RuleRef>) -> Option<Verdict> {
        for p in policies {
            for r in p.rules(self.dir).unwrap_or_default() {
                if !self.rule(r) {
                    continue;
                }
                let rule = self.rule_ref(p, r);
                match r.action {
                    Action::Pass => {
                        passed.push(rule);
                        return None;
                    }
                    a => {
                        return Some(Verdict {
                            allowed: a != Action::Deny,
                            reason: Reason::Rule {
                                rule,
                                passed: std::mem::take(passed),
                            },
                        })
                    }
                }
            }
        }
        None
    }

    fn rule_ref(&self, p: &Policy, r: &Rule) -> RuleRef {
        RuleRef {
            policy: p.id.clone(),
            tier: p.tier,
            priority: p.priority,
            direction: self.dir,
            index: r.index,
            name: r.name.clone(),
            action: r.action,
        }
    }

    fn rule(&self, r: &Rule) -> bool {
        r.peers.iter().any(|p| self.peer(p, r.action)) && self.ports(r)
    }

    fn peer(&self, p: &PeerMatch, action: Action) -> bool {
        let ip_in = |net: &ipnet::IpNet| self.remote.ip.is_some_and(|ip| net.contains(&ip));
        match p {
            PeerMatch::All => true,
            PeerMatch::Pods { namespaces, pods } => self.remote.pod.is_some_and(|rp| {
                namespace_matches(self.cluster, namespaces, &rp.namespace)
                    && pods.matches(&rp.labels)
            }),
            PeerMatch::IpBlock { cidr, except } => ip_in(cidr) && !except.iter().any(ip_in),
            PeerMatch::Nodes(sel) => self.remote.node.is_some_and(|n| sel.matches(&n.labels)),
            PeerMatch::Networks(nets) => nets.iter().any(ip_in),
            PeerMatch::DomainNames(_) => false,
            PeerMatch::Unknown => action != Action::Accept,
        }
    }

    fn ports(&self, r: &Rule) -> bool {
        if r.ports.is_empty() {
            return true;
        }
        // A named port is the destination's: the subject's own for ingress, the peer's
        // for egress (and nothing when the peer is no pod).
        let target = match self.dir {
            Direction::Ingress => Some(self.pod),
            Direction::Egress => self.remote.pod,
        };
        r.ports.iter().any(|pr| {
            if pr.protocol.is_some_and(|p| p != self.proto) {
                return false;
            }
            match &pr.port {
                PortMatch::Any => true,
                PortMatch::Range(a, b) => (*a..=*b).contains(&self.port),
                PortMatch::Named(n) => target.is_some_and(|t| {
                    t.ports.iter().any(|cp| {
                        &cp.name == n && cp.protocol == self.proto && cp.port == self.port
                    })
                }),
            }
        })
    }
}

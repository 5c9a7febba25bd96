//! The normalised policy model: NetworkPolicies and ClusterNetworkPolicies compiled into
//! one shape ([`Policy`]) whose defaults are already applied, so the matcher and the nft
//! compiler never see the API's traps (empty `policyTypes`, missing `from`, protocol
//! defaults, a lone `podSelector` meaning the policy's own namespace).
//!
//! [`crate::netpol`] and [`crate::cluster_policy`] build it; [`crate::view::Cluster`] keeps
//! the policies next to the pods, namespaces and nodes they select.

use std::fmt;

use ipnet::IpNet;

use crate::selector::Selector;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// A transport protocol; `Other` covers everything without ports (ICMP, ...), which only
/// rules without ports match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
    Other(u8),
}

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
            Protocol::Other(n) => n,
        }
    }

    pub fn from_number(n: u8) -> Protocol {
        match n {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            132 => Protocol::Sctp,
            n => Protocol::Other(n),
        }
    }

    /// The API's spelling, any case (`TCP`, `tcp`).
    pub fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    pub fn has_ports(self) -> bool {
        !matches!(self, Protocol::Other(_))
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Tcp => f.write_str("tcp"),
            Protocol::Udp => f.write_str("udp"),
            Protocol::Sctp => f.write_str("sctp"),
            Protocol::Other(1) => f.write_str("icmp"),
            Protocol::Other(n) => write!(f, "proto-{n}"),
        }
    }
}

/// Evaluation order: Admin, then NetworkPolicy, then Baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    Admin,
    NetworkPolicy,
    Baseline,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Admin => "Admin",
            Tier::NetworkPolicy => "NetworkPolicy",
            Tier::Baseline => "Baseline",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// A NetworkPolicy rule: allows; the union of a pod's rules is what passes.
    Allow,
    /// ClusterNetworkPolicy: allowed, evaluation of this direction ends.
    Accept,
    Deny,
    /// Skips the rest of the tier.
    Pass,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "Allow",
            Action::Accept => "Accept",
            Action::Deny => "Deny",
            Action::Pass => "Pass",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyKind {
    NetworkPolicy,
    ClusterNetworkPolicy,
}

/// Which policy: enough to name it in a decision and to find it in the store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyId {
    pub kind: PolicyKind,
    /// `None` for cluster-scoped policies.
    pub namespace: Option<String>,
    pub name: String,
}

impl PolicyId {
    pub fn network_policy(namespace: &str, name: &str) -> PolicyId {
        PolicyId {
            kind: PolicyKind::NetworkPolicy,
            namespace: Some(namespace.into()),
            name: name.into(),
        }
    }

    pub fn cluster(name: &str) -> PolicyId {
        PolicyId {
            kind: PolicyKind::ClusterNetworkPolicy,
            namespace: None,
            name: name.into(),
        }
    }
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.kind, &self.namespace) {
            (PolicyKind::NetworkPolicy, Some(ns)) => write!(f, "NetworkPolicy {ns}/{}", self.name),
            (PolicyKind::NetworkPolicy, None) => write!(f, "NetworkPolicy {}", self.name),
            (PolicyKind::ClusterNetworkPolicy, _) => {
                write!(f, "ClusterNetworkPolicy {}", self.name)
            }
        }
    }
}

/// Which namespaces a pod selector looks in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NamespaceMatch {
    /// The policy's own namespace (a lone `podSelector` peer, a NetworkPolicy's subject).
    Own(String),
    /// Namespaces whose labels match; the empty selector is every namespace.
    Selected(Selector),
}

/// One peer of a rule, normalised.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerMatch {
    /// A missing or empty `from`/`to`: everything, inside the cluster and out.
    All,
    /// Pods matching `pods` in namespaces matching `namespaces` (both must hold).
    Pods {
        namespaces: NamespaceMatch,
        pods: Selector,
    },
    /// Addresses in `cidr` but none of `except`. weft applies it to pod addresses too.
    IpBlock { cidr: IpNet, except: Vec<IpNet> },
    /// Nodes whose labels match: their addresses.
    Nodes(Selector),
    /// Addresses in any of the CIDRs, pods' included.
    Networks(Vec<IpNet>),
    /// Experimental and not enforced: matches nothing.
    DomainNames(Vec<String>),
    /// A peer with no field weft knows (a newer API): fails closed, so it matches nothing
    /// in an Accept rule and everything in a Deny or Pass rule.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortMatch {
    /// Every port of the protocol.
    Any,
    /// Inclusive.
    Range(u16, u16),
    /// A container port's name, resolved on the destination pod.
    Named(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRule {
    /// `None` only for a ClusterNetworkPolicy's `destinationNamedPort`, which takes the
    /// protocol of the container port it names.
    pub protocol: Option<Protocol>,
    pub port: PortMatch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Position in the policy's list for its direction.
    pub index: usize,
    pub name: Option<String>,
    pub action: Action,
    /// Any of them; never empty ([`PeerMatch::All`] stands for "all peers").
    pub peers: Vec<PeerMatch>,
    /// Any of them; empty means every port of every protocol.
    pub ports: Vec<PortRule>,
}

/// The pods a policy applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub namespaces: NamespaceMatch,
    pub pods: Selector,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub id: PolicyId,
    pub tier: Tier,
    /// 0..=1000 for ClusterNetworkPolicies, lower first; 0 for NetworkPolicies.
    pub priority: u32,
    pub subject: Subject,
    /// `Some` when the policy affects ingress (a NetworkPolicy with type Ingress isolates
    /// even with no rules); `None` when it leaves ingress alone.
    pub ingress: Option<Vec<Rule>>,
    pub egress: Option<Vec<Rule>>,
}

impl Policy {
    pub fn rules(&self, dir: Direction) -> Option<&[Rule]> {
        match dir {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }

    /// Order of evaluation within a tier: priority, then name (the API leaves equal
    /// priorities to the implementation; weft makes them deterministic).
    pub fn order_key(&self) -> (Tier, u32, &PolicyId) {
        (self.tier, self.priority, &self.id)
    }
}

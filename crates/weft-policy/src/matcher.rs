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

pub use crate::decision::{Decision, Reason, RuleRef, Verdict};
pub use crate::endpoint::{parse_port, Endpoint, Remote};
use crate::error::Result;
use crate::model::*;
use crate::view::{Cluster, Pod};

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

/// Whether any of `peers` holds `remote` (a rule with `action`): the part of a rule that
/// depends on the other end and not on the subject (its ports are the other part). With
/// the loopback and own-node tests and the named ports of the destination, these answers
/// for every rule that applies to the pod are all [`decide`] reads of `remote`; the nft
/// compiler uses them to put peers into classes ([`crate::classes`]).
pub(crate) fn peers_hold(
    cluster: &Cluster,
    remote: Remote,
    peers: &[PeerMatch],
    action: Action,
) -> bool {
    peers.iter().any(|p| peer_holds(cluster, remote, p, action))
}

fn peer_holds(cluster: &Cluster, remote: Remote, p: &PeerMatch, action: Action) -> bool {
    let ip_in = |net: &ipnet::IpNet| remote.ip.is_some_and(|ip| net.contains(&ip));
    match p {
        PeerMatch::All => true,
        PeerMatch::Pods { namespaces, pods } => remote.pod.is_some_and(|rp| {
            namespace_matches(cluster, namespaces, &rp.namespace) && pods.matches(&rp.labels)
        }),
        PeerMatch::IpBlock { cidr, except } => ip_in(cidr) && !except.iter().any(ip_in),
        PeerMatch::Nodes(sel) => remote.node.is_some_and(|n| sel.matches(&n.labels)),
        PeerMatch::Networks(nets) => nets.iter().any(ip_in),
        PeerMatch::DomainNames(patterns) => remote
            .name
            .is_some_and(|n| patterns.iter().any(|p| crate::fqdn::matches(p, n))),
        PeerMatch::Unknown => action != Action::Accept,
    }
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
        peers_hold(self.cluster, self.remote, &r.peers, r.action) && self.ports(r)
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

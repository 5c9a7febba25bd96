//! ClusterNetworkPolicy `domainNames` peers on this node: the node's DNS server passes
//! each forwarded answer to [`FqdnHook`] before sending it; the policy thread, which holds
//! the view, turns it into grants (weft-policy's `fqdn::grants`: the matcher decides with
//! the address known by the answered name) and adds them to the kernel's egress-fqdn sets
//! with the records' TTLs, then lets the answer go. The answers still live are kept
//! ([`Answers`]), so after a change of policies, pods or namespaces the grants are computed
//! again and replace the kernel's in one transaction.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_dns::hook::HookFuture;
use weft_dns::{Answer, AnswerHook};
use weft_policy::fqdn::{grants, Grant};
use weft_policy::model::PeerMatch;
use weft_policy::{Cluster, Enforcer};

use super::lag::Queue;
use super::policy::Event;

/// How long an answer waits for its grants at most; past that it is sent anyway (a
/// connection to a name a policy allows may then be refused until the next answer).
const WAIT: Duration = Duration::from_secs(1);

/// The DNS server's hook: each answer to the policy thread, waited for, while some
/// policy has a `domainNames` peer (`active`, set by the policy thread); otherwise answers
/// leave as if there were no hook.
pub struct FqdnHook {
    pub events: Queue<Event>,
    pub active: Arc<AtomicBool>,
}

/// Whether any policy of the view has a `domainNames` peer.
pub fn any_domain_names(cluster: &Cluster) -> bool {
    cluster.policies.values().any(|p| {
        p.egress
            .iter()
            .flatten()
            .flat_map(|r| &r.peers)
            .any(|peer| matches!(peer, PeerMatch::DomainNames(_)))
    })
}

impl AnswerHook for FqdnHook {
    fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    fn answered(&self, answer: Answer) -> HookFuture {
        let events = self.events.clone();
        Box::pin(async move {
            let (done, granted) = tokio::sync::oneshot::channel();
            events.push(Event::Resolved { answer, done }).await;
            if tokio::time::timeout(WAIT, granted).await.is_err() {
                tracing::warn!(
                    "network policy: a DNS answer waited {WAIT:?} for its grants; sent without"
                );
            }
        })
    }
}

/// The live answers: per (pod, name, address), when its TTL ends.
#[derive(Default)]
pub struct Answers {
    live: BTreeMap<(IpAddr, String, IpAddr), Instant>,
}

impl Answers {
    /// Records an answer and grants what it allows now.
    pub fn answered(&mut self, cluster: &Cluster, node: &str, enforcer: &mut Enforcer, a: Answer) {
        let now = Instant::now();
        let mut out: BTreeMap<Grant, Duration> = BTreeMap::new();
        for (addr, ttl) in &a.addrs {
            let until = now + Duration::from_secs(u64::from(*ttl));
            let e = self
                .live
                .entry((a.client, a.name.clone(), *addr))
                .or_insert(until);
            *e = (*e).max(until);
            for g in grants(cluster, node, a.client, &a.name, *addr) {
                let left = e.saturating_duration_since(now);
                let d = out.entry(g).or_default();
                *d = (*d).max(left);
            }
        }
        if out.is_empty() {
            return;
        }
        let list: Vec<(Grant, Duration)> = out.into_iter().collect();
        if let Err(e) = enforcer.grant(&list, false) {
            tracing::warn!("network policy: granting {} for {}: {e}", a.name, a.client);
        }
    }

    /// Computes every live answer's grants again (after the view changed) and replaces
    /// the kernel's with them.
    pub fn regrant(&mut self, cluster: &Cluster, node: &str, enforcer: &mut Enforcer) {
        let now = Instant::now();
        self.live.retain(|_, until| *until > now);
        if self.live.is_empty() {
            return;
        }
        let mut out: BTreeMap<Grant, Duration> = BTreeMap::new();
        for ((client, name, addr), until) in &self.live {
            for g in grants(cluster, node, *client, name, *addr) {
                let d = out.entry(g).or_default();
                *d = (*d).max(until.saturating_duration_since(now));
            }
        }
        let list: Vec<(Grant, Duration)> = out.into_iter().collect();
        if let Err(e) = enforcer.grant(&list, true) {
            tracing::warn!("network policy: granting the live DNS answers again: {e}");
        }
    }
}

//! Cluster DNS on this node: weft-dns answers the cluster DNS address (the `kube-dns`
//! Service IP) here, on every node, so no query crosses the network or waits on another
//! node.
//!
//! How the Service IP reaches this node's server: the address sits on the node's `lo`
//! (the kernel has no dummy driver here, and `lo` needs none), so a pod's query, routed to
//! its node by its default route, is delivered locally. A raw-priority `notrack` rule keeps
//! that traffic out of conntrack altogether: no DNAT, so no conntrack insert of two UDP
//! packets from one socket can race and drop one (the A + AAAA loss of kubernetes issue
//! 56903). The `kube-dns` Service carries `service.kubernetes.io/service-proxy-name`, so
//! weft-proxy leaves the address alone.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use weft_nft::{
    Backend, BaseChain, Chain, ChainType, CmpOp, Family, Hook, Policy, Rhs, Rule, Ruleset,
    Selector, Stmt, Table, Value,
};

use super::relist::{Change, Seen};
use super::{AgentConfig, Result};

pub const TABLE: &str = "weft-dns";

/// A watch event for the DNS model.
pub enum Event {
    Service(Box<watcher::Event<Service>>),
    Slice(Box<watcher::Event<EndpointSlice>>),
    Pod(Box<watcher::Event<Pod>>),
    Namespace(Box<watcher::Event<Namespace>>),
    Node(Box<watcher::Event<Node>>),
}

/// The table that keeps the DNS address's traffic untracked, both ways and for the node's
/// own queries too.
pub fn ruleset(ip: IpAddr) -> Ruleset {
    let (family, daddr, saddr, v) = match ip {
        IpAddr::V4(a) => (
            Family::Ip,
            Selector::IpDaddr,
            Selector::IpSaddr,
            Value::Ipv4(a),
        ),
        IpAddr::V6(a) => (
            Family::Ip6,
            Selector::Ip6Daddr,
            Selector::Ip6Saddr,
            Value::Ipv6(a),
        ),
    };
    let raw = |hook| BaseChain {
        kind: ChainType::Filter,
        hook,
        priority: -300,
        policy: Policy::Accept,
    };
    let rule = |addr: &Selector, port: Selector| {
        Rule::new(vec![
            Stmt::Match {
                key: *addr,
                op: CmpOp::Eq,
                rhs: Rhs::Value(v.clone()),
            },
            Stmt::eq(port, Value::Port(53)),
            Stmt::Notrack,
        ])
    };
    let queries = || {
        [
            rule(&daddr, Selector::UdpDport),
            rule(&daddr, Selector::TcpDport),
        ]
    };
    let mut prerouting = Chain::base("prerouting", raw(Hook::Prerouting));
    for r in queries() {
        prerouting = prerouting.with_rule(r);
    }
    let mut output = Chain::base("output", raw(Hook::Output));
    for r in queries().into_iter().chain([
        rule(&saddr, Selector::UdpSport),
        rule(&saddr, Selector::TcpSport),
    ]) {
        output = output.with_rule(r);
    }
    let mut table = Table::new(family, TABLE);
    table.add_chain(prerouting);
    table.add_chain(output);
    let mut rs = Ruleset::default();
    rs.add_table(table);
    rs
}

/// Puts the DNS address on this node's `lo` (idempotent) and loads the notrack table.
pub fn own_address(ip: IpAddr) -> Result<()> {
    let mut h = weft_netlink::Handle::new()?;
    let lo = h.link_index("lo")?;
    let net = IpNet::from(ip);
    match h.add_addr(lo, net) {
        Err(e) if !e.is_exists() => return Err(e.into()),
        _ => {}
    }
    Backend::open()?.apply_full(&ruleset(ip))?;
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Service,
    Slice,
    Pod,
    Namespace,
    Node,
}

/// The node's DNS server and the model it answers from.
pub struct DnsServer {
    model: weft_dns::Model,
    seen: HashMap<Kind, Seen>,
}

impl DnsServer {
    /// Owns the address, then serves it on UDP and TCP port 53 from a task of its own.
    /// `hook` sees each forwarded answer before it is sent (network policy's grants).
    pub async fn start(
        cfg: &AgentConfig,
        ip: IpAddr,
        hook: Option<std::sync::Arc<dyn weft_dns::AnswerHook>>,
    ) -> Result<DnsServer> {
        own_address(ip)?;
        let mut zone = weft_dns::ZoneConfig::new(cfg.cluster_domain.clone());
        zone.nameserver_ips = vec![ip];
        let model = weft_dns::Model::new(zone)?;
        let server = weft_dns::ServerConfig {
            listen: vec![std::net::SocketAddr::new(ip, 53)],
            allowed: vec![cfg.cluster_cidr],
            upstreams: cfg.dns_upstreams.clone(),
            ..Default::default()
        };
        // Bound here, so an address in use is the agent's error, not a log line.
        let mut server = weft_dns::Server::bind(server, model.clone()).await?;
        if let Some(h) = hook {
            server.set_answer_hook(h);
        }
        tokio::spawn(async move {
            if let Err(e) = server.run().await {
                tracing::error!("cluster DNS stopped: {e}");
            }
        });
        tracing::info!(%ip, "serving cluster DNS");
        Ok(DnsServer {
            model,
            seen: HashMap::new(),
        })
    }

    pub fn event(&mut self, e: Event) {
        match e {
            Event::Service(e) => self.handle(Kind::Service, &e),
            Event::Slice(e) => self.handle(Kind::Slice, &e),
            Event::Pod(e) => self.handle(Kind::Pod, &e),
            Event::Namespace(e) => self.handle(Kind::Namespace, &e),
            Event::Node(e) => self.handle(Kind::Node, &e),
        }
    }

    fn handle<K: Object>(&mut self, kind: Kind, e: &watcher::Event<K>) {
        for c in self.seen.entry(kind).or_default().changes(e) {
            match c {
                Change::Upsert(o) => o.upsert(&self.model),
                Change::Delete((ns, name)) => K::delete(&self.model, &ns, &name),
            }
        }
    }
}

/// What the model does with each kind of object.
trait Object: kube::Resource {
    fn upsert(&self, m: &weft_dns::Model);
    fn delete(m: &weft_dns::Model, namespace: &str, name: &str);
}

impl Object for Service {
    fn upsert(&self, m: &weft_dns::Model) {
        m.upsert_service(self)
    }
    fn delete(m: &weft_dns::Model, namespace: &str, name: &str) {
        m.delete_service(namespace, name)
    }
}

impl Object for EndpointSlice {
    fn upsert(&self, m: &weft_dns::Model) {
        m.upsert_slice(self)
    }
    fn delete(m: &weft_dns::Model, namespace: &str, name: &str) {
        m.delete_slice(namespace, name)
    }
}

impl Object for Pod {
    fn upsert(&self, m: &weft_dns::Model) {
        m.upsert_pod(self)
    }
    fn delete(m: &weft_dns::Model, namespace: &str, name: &str) {
        m.delete_pod(namespace, name)
    }
}

impl Object for Namespace {
    fn upsert(&self, m: &weft_dns::Model) {
        m.upsert_namespace(self)
    }
    fn delete(m: &weft_dns::Model, _: &str, name: &str) {
        m.delete_namespace(name)
    }
}

impl Object for Node {
    fn upsert(&self, m: &weft_dns::Model) {
        m.upsert_node(self)
    }
    fn delete(m: &weft_dns::Model, _: &str, name: &str) {
        m.delete_node(name)
    }
}

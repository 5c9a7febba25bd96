//! `weft lab trace POD HOST:PORT`: why a pod's packet goes where it goes, read from the
//! kernel of the lab itself: the pod's route, what its node's `weft-proxy` table does with
//! the first packet (weft_proxy::trace), and the node's route to each place it may land.

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::ListParams;
use kube::Api;
use weft_netlink::{Family, Handle, Netns, Route, RT_TABLE_MAIN};
use weft_proxy::trace::{decide, Decision, Packet};

/// The main table's route for `dst` (longest prefix, then lowest metric), described with
/// device names.
fn route_to(h: &mut Handle, dst: Ipv4Addr) -> Result<Option<(Route, String)>> {
    let links = h.links()?;
    let best = h
        .routes(Family::V4)?
        .into_iter()
        .filter(|r| r.table == RT_TABLE_MAIN && r.dst.contains(&IpAddr::V4(dst)))
        .max_by_key(|r| (r.dst.prefix_len(), std::cmp::Reverse(r.metric.unwrap_or(0))));
    Ok(best.map(|r| {
        let dev = links
            .iter()
            .find(|l| Some(l.index) == r.oif)
            .map(|l| l.name.clone())
            .unwrap_or_else(|| "?".into());
        let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
        let onlink = if r.onlink { " onlink" } else { "" };
        let text = format!("{}{via} dev {dev}{onlink}", r.dst);
        (r, text)
    }))
}

struct Cluster {
    pods: Vec<Pod>,
    nodes: Vec<Node>,
}

impl Cluster {
    fn pod_at(&self, ip: Ipv4Addr) -> Option<String> {
        let ip = ip.to_string();
        self.pods
            .iter()
            .find(|p| p.status.as_ref().and_then(|s| s.pod_ip.as_deref()) == Some(ip.as_str()))
            .map(|p| {
                format!(
                    "pod {}/{} on {}",
                    p.metadata.namespace.as_deref().unwrap_or(""),
                    p.metadata.name.as_deref().unwrap_or(""),
                    p.spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_deref())
                        .unwrap_or("?")
                )
            })
    }

    fn node_with_pod_cidr(&self, ip: Ipv4Addr) -> Option<String> {
        self.nodes.iter().find_map(|n| {
            let cidr: IpNet = n.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok()?;
            cidr.contains(&IpAddr::V4(ip))
                .then(|| n.metadata.name.clone().unwrap_or_default())
        })
    }
}

/// What `node`'s weft-proxy table does with `packet`, printed; the addresses and ports it
/// may land on, or `None` when it stops there (refused or dropped).
fn on_node(
    state: &weft_lab::LabState,
    cluster: &Cluster,
    node: &weft_lab::topology::Host,
    mut packet: Packet,
    label: &str,
) -> Result<Option<Vec<(Ipv4Addr, u16)>>> {
    let name = &node.name;
    let ns = Netns::from_name(&node.netns)?;
    let mut h = Handle::in_netns(&ns)?;
    packet.dst_local |= h
        .addrs(None)?
        .iter()
        .any(|a| a.net.addr() == IpAddr::V4(packet.dst));
    let mut nft = weft_nft::Backend::open_in(&PathBuf::from(format!("/run/netns/{}", node.netns)))?;
    let sets = nft
        .read_table(weft_nft::Family::Ip, weft_proxy::TABLE)?
        .map(|t| t.sets)
        .unwrap_or_default();
    Ok(
        match decide(&sets, Some(state.spec.cluster_cidr), &packet) {
            Decision::NotAService => {
                println!("{label} on {name}: weft-proxy: not a Service address and port; routed as it is");
                Some(vec![(packet.dst, packet.dport)])
            }
            Decision::Rejected(why) => {
                println!("{label} on {name}: weft-proxy REJECTS it (the client sees 'connection refused'): {why}");
                None
            }
            Decision::Dropped(why) => {
                println!("{label} on {name}: weft-proxy DROPS it (the client times out): {why}");
                None
            }
            Decision::Balanced {
                matched,
                endpoints,
                affinity,
                masquerade,
            } => {
                let share = 100.0 / endpoints.len() as f64;
                println!(
                "{label} on {name}: weft-proxy matches {matched}; DNAT to one of {} endpoint(s), {share:.0}% each{}",
                endpoints.len(),
                if affinity { " (ClientIP affinity: a remembered client keeps its endpoint)" } else { "" }
            );
                for (ip, port) in &endpoints {
                    let who = cluster.pod_at(*ip).unwrap_or_else(|| "no pod known".into());
                    println!("      {ip}:{port}  {who}");
                }
                match masquerade {
                    Some(why) => println!("      source rewritten to the node's address: {why}"),
                    None => println!("      source kept: the endpoint sees {}", packet.src),
                }
                Some(endpoints.clone())
            }
        },
    )
}

pub fn run(lab: &str, namespace: &str, pod: &str, target: &str, udp: bool) -> Result<()> {
    let dst: SocketAddrV4 = target
        .parse()
        .with_context(|| format!("{target:?}: give the destination as IPv4:PORT"))?;
    let state = weft_lab::load(lab)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = rt.block_on(crate::kube::client(&crate::lab::kubeconfig_path(lab)))?;
    let cluster = rt.block_on(async {
        let pods = Api::<Pod>::all(client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let nodes = Api::<Node>::all(client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        anyhow::Ok(Cluster { pods, nodes })
    })?;
    let Some(src_pod) = cluster.pods.iter().find(|p| {
        p.metadata.namespace.as_deref() == Some(namespace)
            && p.metadata.name.as_deref() == Some(pod)
    }) else {
        bail!("no pod {namespace}/{pod} in lab {lab} (see `weft lab get pods -n {namespace}`)");
    };
    let src: Ipv4Addr = src_pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse().ok())
        .with_context(|| format!("pod {namespace}/{pod} has no IPv4 address yet"))?;
    let node_name = src_pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    let Some(host) = state.topology.nodes.iter().find(|n| n.name == node_name) else {
        bail!("pod {namespace}/{pod} is on {node_name:?}, which is not a node of lab {lab}");
    };
    let proto = if udp { 17 } else { 6 };
    let proto_name = if udp { "udp" } else { "tcp" };
    println!("trace {proto_name} {namespace}/{pod} ({src}, {node_name}) -> {dst}");

    // 1. Inside the pod.
    let pod_netns =
        weft_agent::netns_name(&weft_lab::Topology::pod_netns_prefix(host), namespace, pod);
    match Netns::from_name(&pod_netns) {
        Ok(ns) => {
            let mut h = Handle::in_netns(&ns)?;
            match route_to(&mut h, *dst.ip())? {
                Some((_, text)) => println!("[1] in the pod: route {text}"),
                None => println!(
                    "[1] in the pod: no route to {}: the packet never leaves",
                    dst.ip()
                ),
            }
        }
        Err(_) => println!("[1] in the pod: its namespace {pod_netns} is not found (skipped)"),
    }

    // 2. The node's Service table.
    let packet = Packet {
        src,
        dst: *dst.ip(),
        proto,
        dport: dst.port(),
        dst_local: false,
    };
    let Some(landing) = on_node(&state, &cluster, host, packet, "[2]")? else {
        return Ok(());
    };
    let node_ns = Netns::from_name(&host.netns)?;
    let mut nh = Handle::in_netns(&node_ns)?;
    // 3. From the node to wherever the packet lands.
    let mut pods_reached = Vec::new();
    for (ip, port) in landing {
        if let Some(next) = state
            .topology
            .nodes
            .iter()
            .find(|n| n.addr.addr() == ip && n.name != node_name)
        {
            println!(
                "[3] {node_name} -> {ip}: {}'s own address, reached over the LAN; leaving the cluster CIDR, the source becomes {}",
                next.name,
                host.addr.addr()
            );
            let hop = Packet {
                src: host.addr.addr(),
                dst: ip,
                proto,
                dport: dst.port(),
                dst_local: true,
            };
            on_node(&state, &cluster, next, hop, "[4]")?;
            continue;
        }
        let place = match route_to(&mut nh, ip)? {
            None => "no route: dropped".to_string(),
            Some((r, text)) => {
                let remote = cluster.node_with_pod_cidr(ip);
                let how = if state.spec.cluster_cidr.contains(&ip) {
                    match (&remote, r.onlink) {
                        (Some(n), _) if *n == node_name => "on this node's bridge".to_string(),
                        (Some(n), true) => format!("through the VXLAN overlay to {n}"),
                        (Some(n), false) => format!("routed directly (host-gw) to {n}"),
                        (None, _) => "to an address no node leases".to_string(),
                    }
                } else {
                    "out of the cluster (masqueraded to the node's address)".to_string()
                };
                format!("route {text}: {how}")
            }
        };
        println!("[3] {node_name} -> {ip}: {place}");
        if cluster.pod_at(ip).is_some() {
            pods_reached.push((ip, port));
        }
    }
    // 4. NetworkPolicy on both sides, from the same model every node's table is built from.
    for (ip, port) in pods_reached {
        let (_, why) = crate::policy::explain(
            lab,
            &format!("{namespace}/{pod}"),
            &ip.to_string(),
            &format!("{port}/{proto_name}"),
        )?;
        let mut lines = why.lines();
        println!("[policy] {}", lines.next().unwrap_or_default());
        for l in lines {
            println!("      {}", l.trim());
        }
    }
    Ok(())
}

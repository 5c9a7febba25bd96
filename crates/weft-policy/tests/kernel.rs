//! The table in a real kernel, inside network namespaces this test creates and removes
//! (never the host's): a "node" namespace routes between two "pod" namespaces over veth
//! pairs; the Enforcer loads the policy table into the node, `nft` lists it back, and TCP
//! connections between the pods go through or not as the policy says, across an update
//! (an incremental transaction) and a delete; weft-proxy's masquerade bit survives the table.

mod common;

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use weft_policy::desired::{desired, NodeContext};
use weft_policy::enforcer::Enforcer;
use weft_policy::Cluster;

use common::netns::Netns;

const A: Ipv4Addr = common::POD_A;
const B: Ipv4Addr = common::POD_B;

fn cluster() -> Cluster {
    common::two_pods()
}

fn np(yaml: &str) -> k8s_openapi::api::networking::v1::NetworkPolicy {
    serde_yaml::from_str(yaml).expect("policy YAML")
}

/// Policy `y/web`: pod b admits namespace x's pods on `ports` (a YAML list's items).
fn web_from_x(ports: &str) -> k8s_openapi::api::networking::v1::NetworkPolicy {
    np(&format!(
        "metadata: {{namespace: y, name: web}}
spec:
  podSelector: {{matchLabels: {{pod: b}}}}
  ingress:
    - from: [{{namespaceSelector: {{matchLabels: {{ns: x}}}}}}]
      ports: [{ports}]"
    ))
}

/// Whether pod a's namespace can open a TCP connection to b:port.
fn connects(pa: &Netns, port: u16) -> bool {
    pa.run_in(move || {
        TcpStream::connect_timeout(&SocketAddr::from((B, port)), Duration::from_millis(700)).is_ok()
    })
}

/// A node namespace routing between pod namespaces a (10.244.1.11) and b (10.244.2.11),
/// b serving TCP on 80 and 81.
fn wire(tag: &str) -> (Netns, Netns, Netns) {
    let node = Netns::new(&format!("{tag}node"));
    let pa = Netns::new(&format!("{tag}pa"));
    let pb = Netns::new(&format!("{tag}pb"));
    for (pod, peer_if, node_if, gw, addr) in [
        (&pa, "eth0", "va", "10.244.1.1", "10.244.1.11/24"),
        (&pb, "eth0", "vb", "10.244.2.1", "10.244.2.11/24"),
    ] {
        node.exec(&[
            "ip", "link", "add", node_if, "type", "veth", "peer", "name", peer_if,
        ]);
        node.exec(&["ip", "link", "set", peer_if, "netns", &pod.0]);
        node.exec(&["ip", "addr", "add", &format!("{gw}/24"), "dev", node_if]);
        node.exec(&["ip", "link", "set", node_if, "up"]);
        pod.exec(&["ip", "addr", "add", addr, "dev", peer_if]);
        pod.exec(&["ip", "link", "set", peer_if, "up"]);
        pod.exec(&["ip", "route", "add", "default", "via", gw]);
    }
    node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    // Servers on b:80 and b:81, accepting until the namespace goes.
    for port in [80u16, 81] {
        let l = pb.run_in(move || TcpListener::bind(("0.0.0.0", port)).expect("bind"));
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let mut s = s;
                let _ = s.read(&mut [0u8; 1]);
            }
        });
    }
    (node, pa, pb)
}

#[test]
fn policy_table_filters_real_packets() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let (node, pa, pb) = wire("");
    assert!(
        connects(&pa, 80) && connects(&pa, 81),
        "no policy: both ports open"
    );

    let mut c = cluster();
    c.apply_network_policy(&web_from_x("{port: 80}")).unwrap();
    let ctx = NodeContext {
        node_name: "n1".into(),
        log_group: Some(5),
    };
    let mut enforcer = Enforcer::open_in(&node.path()).expect("nf_tables in the node");
    enforcer.sync(&desired(&c, &ctx)).expect("first sync");
    let listed = node.exec(&["nft", "list", "table", "inet", "weft-policy"]);
    eprintln!("{listed}");
    for want in [
        "map ingress",
        "map egress",
        "flags interval",
        "goto ingress-netpol",
        "ct state established,related accept",
        "vmap @ingress",
    ] {
        assert!(listed.contains(want), "{want:?} missing from:\n{listed}");
    }
    assert!(connects(&pa, 80), "tcp/80 from x is allowed");
    assert!(!connects(&pa, 81), "tcp/81 is not");

    // An update: only elements change, in one incremental transaction.
    c.apply_network_policy(&web_from_x("{port: 81}")).unwrap();
    let sum = enforcer.sync(&desired(&c, &ctx)).expect("update");
    assert_eq!(sum.chains_added + sum.chains_replaced, 0, "{sum:?}");
    assert!(sum.elements_added > 0, "{sum:?}");
    // A restarted agent adopts the kernel's table: nothing to send when it matches.
    enforcer.resync();
    let again = enforcer.sync(&desired(&c, &ctx)).expect("adopting");
    assert!(
        again.is_empty(),
        "adopting an identical table sends nothing: {again:?}"
    );
    assert!(!connects(&pa, 80), "after the update tcp/80 is refused");
    assert!(connects(&pa, 81), "and tcp/81 allowed");
    let counters = node.exec(&[
        "nft",
        "list",
        "chain",
        "inet",
        "weft-policy",
        "ingress-netpol",
    ]);
    assert!(
        !counters.contains("packets 0 "),
        "the denial was counted:\n{counters}"
    );

    // A UDP flow allowed now keeps going as established after a policy denies it, until
    // the enforcer cuts denied flows.
    let udp_echo = |port: u16| {
        let s = pb.run_in(move || std::net::UdpSocket::bind(("0.0.0.0", port)).unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 16];
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&buf[..n], from);
            }
        });
    };
    udp_echo(5353);
    let client = pa.run_in(|| {
        let s = std::net::UdpSocket::bind(("0.0.0.0", 40000)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        s.connect((B, 5353)).unwrap();
        s
    });
    let echo = |s: &std::net::UdpSocket| s.send(b"x").is_ok() && s.recv(&mut [0u8; 4]).is_ok();
    c.delete_network_policy("y", "web");
    enforcer.sync(&desired(&c, &ctx)).unwrap();
    assert!(echo(&client), "no policy: the UDP flow is open");
    c.apply_network_policy(&np("metadata: {namespace: y, name: deny}
spec: {podSelector: {}, policyTypes: [Ingress]}"))
        .unwrap();
    enforcer.sync(&desired(&c, &ctx)).unwrap();
    assert!(echo(&client), "established flows outlive a policy change");
    assert!(enforcer.cut_denied_flows().unwrap() >= 1);
    assert!(!echo(&client), "cut: the flow is new again, and denied");
    c.delete_network_policy("y", "deny");

    c.delete_network_policy("y", "web");
    enforcer.sync(&desired(&c, &ctx)).expect("delete");
    assert!(
        connects(&pa, 80) && connects(&pa, 81),
        "deleted: both open again"
    );

    enforcer.remove().expect("remove");
    let tables = node.exec(&["nft", "list", "tables"]);
    assert!(!tables.contains("weft-policy"), "{tables}");
}

/// weft-proxy's masquerade bit (0x4000 in the packet mark, set in prerouting, read in
/// postrouting) crosses the policy table unchanged, and marked packets are decided like
/// any other. A test table imitates weft-proxy: it sets the bit on a's packets and counts
/// them in postrouting with and without it.
#[test]
fn the_masquerade_bit_survives_the_policy_table() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let (node, pa, _pb) = wire("m");
    let a = A.to_string();
    for args in [
        vec!["add", "table", "ip", "proxy"],
        vec![
            "add",
            "chain",
            "ip",
            "proxy",
            "pre",
            "{ type filter hook prerouting priority -150; }",
        ],
        vec![
            "add",
            "chain",
            "ip",
            "proxy",
            "post",
            "{ type filter hook postrouting priority 100; }",
        ],
        vec![
            "add", "rule", "ip", "proxy", "pre", "ip", "saddr", &a, "meta", "mark", "set", "meta",
            "mark", "or", "0x4000",
        ],
        vec![
            "add", "rule", "ip", "proxy", "post", "ip", "saddr", &a, "meta", "mark", "and",
            "0x4000", "==", "0x4000", "counter", "comment", "\"kept\"",
        ],
        vec![
            "add", "rule", "ip", "proxy", "post", "ip", "saddr", &a, "meta", "mark", "and",
            "0x4000", "==", "0", "counter", "comment", "\"lost\"",
        ],
    ] {
        let mut cmd = vec!["nft"];
        cmd.extend(args);
        node.exec(&cmd);
    }
    let mut c = cluster();
    // Both directions have something to decide: a's egress and b's ingress.
    c.apply_network_policy(&np("metadata: {namespace: x, name: out}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
    - to: [{namespaceSelector: {matchLabels: {ns: y}}}]
      ports: [{port: 80}, {port: 81}]"))
        .unwrap();
    c.apply_network_policy(&web_from_x("{port: 80}")).unwrap();
    let ctx = NodeContext {
        node_name: "n1".into(),
        log_group: None,
    };
    let mut enforcer = Enforcer::open_in(&node.path()).expect("nf_tables in the node");
    enforcer.sync(&desired(&c, &ctx)).expect("sync");
    assert!(connects(&pa, 80), "marked tcp/80 from x is allowed");
    assert!(!connects(&pa, 81), "marked tcp/81 is not");
    let post = node.exec(&["nft", "list", "chain", "ip", "proxy", "post"]);
    let count = |comment: &str| -> u64 {
        post.lines()
            .find(|l| l.contains(comment))
            .and_then(|l| l.split("packets ").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no counter {comment} in:\n{post}"))
    };
    assert!(
        count("\"kept\"") > 0,
        "a's packets reached postrouting:\n{post}"
    );
    assert_eq!(count("\"lost\""), 0, "none lost the bit:\n{post}");
}

/// Refused probes are logged to nflog and explained by the matcher: the counter of the
/// policy that decided goes up, and the log names the policy and the rule.
#[test]
fn denials_are_counted_per_policy_and_logged_with_the_rule() {
    use weft_policy::denials::{describe, explain, Counters};
    use weft_policy::nflog::Nflog;
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let (node, pa, _pb) = wire("d");
    let mut c = cluster();
    c.apply_network_policy(&web_from_x("{port: 80}, {port: 81}"))
        .unwrap();
    let cnp: weft_policy::cnp::ClusterNetworkPolicy = serde_yaml::from_str(
        "apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: block-81}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {matchLabels: {ns: y}}}
  ingress:
    - name: no-81
      action: Deny
      from: [{namespaces: {matchLabels: {ns: x}}}]
      protocols: [{tcp: {destinationPort: {number: 81}}}]",
    )
    .expect("ClusterNetworkPolicy YAML");
    c.apply_cluster_network_policy(&cnp).unwrap();
    let ctx = NodeContext {
        node_name: "n1".into(),
        log_group: Some(7),
    };
    let mut nflog = Nflog::open_in(&node.path(), 7).expect("nflog group 7 in the node");
    let mut enforcer = Enforcer::open_in(&node.path()).expect("nf_tables in the node");
    enforcer.sync(&desired(&c, &ctx)).expect("sync");
    // nft (1.0.6 on Debian 12) lists the table with its log statements, in text and JSON.
    let listed = node.exec(&["nft", "list", "ruleset"]);
    assert!(
        listed.contains("table inet weft-policy")
            && listed.contains("log prefix \"weft-policy ingress Admin: \" group 7 drop"),
        "{listed}"
    );
    let json = node.exec(&["nft", "-j", "list", "ruleset"]);
    assert!(
        json.contains("\"weft-policy\"") && json.contains("\"group\": 7"),
        "{json}"
    );

    assert!(connects(&pa, 80), "tcp/80 is allowed");
    assert!(
        nflog
            .next(Some(Duration::from_millis(300)))
            .unwrap()
            .is_empty(),
        "an allowed connection logs nothing"
    );
    assert!(!connects(&pa, 81), "tcp/81: the Admin Deny");
    assert!(!connects(&pa, 82), "tcp/82: isolated by y/web");

    let mut counters = Counters::default();
    let mut lines = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while counters.counts.len() < 2 && std::time::Instant::now() < deadline {
        for p in nflog.next(Some(Duration::from_millis(500))).unwrap() {
            assert_eq!((p.src, p.dst), (IpAddr::V4(A), IpAddr::V4(B)), "{p:?}");
            let (v, culprits) = explain(&c, &p);
            lines.push(describe(&p, v.as_ref()));
            counters.add(&culprits);
        }
    }
    let text = counters.to_tsv();
    eprintln!("{}\n{text}", lines.join("\n"));
    let count = |policy: &str, rule: &str| {
        counters
            .counts
            .iter()
            .filter(|(k, _)| k.policy == policy && k.rule == rule)
            .map(|(_, n)| *n)
            .sum::<u64>()
    };
    assert!(
        count("ClusterNetworkPolicy block-81", "ingress[0] \"no-81\"") >= 1,
        "{text}"
    );
    assert!(count("NetworkPolicy y/web", "isolation") >= 1, "{text}");
    assert_eq!(count("", "unexplained"), 0, "{text}");
    assert!(
        lines.iter().any(|l| l.contains("81/tcp")
            && l.contains("ClusterNetworkPolicy block-81")
            && l.contains("\"no-81\"")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("82/tcp") && l.contains("isolated by NetworkPolicy y/web")),
        "{lines:#?}"
    );
    // The kernel's own counters (per direction and tier) saw them too.
    for chain in ["ingress-admin", "ingress-netpol"] {
        let listed = node.exec(&["nft", "list", "chain", "inet", "weft-policy", chain]);
        assert!(!listed.contains("packets 0 "), "{chain}: {listed}");
    }
}

/// Without any flag the kernel counts denials per element of the row map and the
/// isolated set, and `counters::Tally` names the policy and rule through the compiled
/// rows: refused probes count against the Admin rule and the isolating NetworkPolicy,
/// an allowed one against nothing, and counts survive a policy change applied as a delta.
#[test]
fn denials_are_counted_per_policy_without_nflog() {
    use weft_policy::counters::{Reading, Tally};
    use weft_policy::desired::{Incremental, NodeContext};
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let (node, pa, _pb) = wire("k");
    let mut c = cluster();
    c.apply_network_policy(&web_from_x("{port: 80}, {port: 81}"))
        .unwrap();
    c.apply_cluster_network_policy(&block(81)).unwrap();
    let ctx = NodeContext {
        node_name: "n1".into(),
        log_group: None,
    };
    let mut compiler = Incremental::default();
    let mut enforcer = Enforcer::open_in(&node.path()).expect("nf_tables in the node");
    enforcer.apply(compiler.update(&c, &ctx)).expect("apply");
    let mut tally = Tally::default();
    tally.observe(
        Reading::read(&mut enforcer).unwrap(),
        &compiler.attribution(),
    );
    assert!(tally.counters.counts.is_empty(), "{:?}", tally.counters);

    assert!(connects(&pa, 80), "tcp/80 is allowed");
    for _ in 0..3 {
        assert!(!connects(&pa, 81), "tcp/81: the Admin Deny");
    }
    for _ in 0..2 {
        assert!(!connects(&pa, 82), "tcp/82: isolated by y/web");
    }
    let reading = Reading::read(&mut enforcer).unwrap();
    assert!(tally.observe(reading, &compiler.attribution()));
    let count = |t: &Tally, policy: &str, rule: &str| {
        t.counters
            .counts
            .iter()
            .filter(|(k, _)| k.policy == policy && k.rule == rule)
            .map(|(_, n)| *n)
            .sum::<u64>()
    };
    let text = tally.counters.to_tsv();
    // One SYN per refused probe (a 700 ms timeout is under the first 1 s retransmission);
    // allow a retransmission in case of a slow machine.
    let admin = count(
        &tally,
        "ClusterNetworkPolicy block-81",
        "ingress[0] \"no-81\"",
    );
    let isolation = count(&tally, "NetworkPolicy y/web", "isolation");
    assert!((3..=6).contains(&admin), "{text}");
    assert!((2..=4).contains(&isolation), "{text}");
    assert_eq!(tally.counters.counts.len(), 2, "{text}");

    // nft 1.0.6 lists the counting sets, in text and JSON.
    let listed = node.exec(&["nft", "list", "ruleset"]);
    assert!(
        listed.contains("set ingress-isolated")
            && listed.contains("== @ingress-isolated")
            && listed.contains(&format!("counter packets {admin} ")),
        "{listed}"
    );
    let json = node.exec(&["nft", "-j", "list", "ruleset"]);
    let j: serde_json::Value = serde_json::from_str(&json).expect("nft -j prints JSON");
    assert!(
        j["nftables"].as_array().is_some_and(|a| a.len() > 10),
        "{json}"
    );

    // A policy change (the Admin rule now on 82 instead) reaches the kernel as a delta;
    // read before it is applied, the old elements' counts are kept, and new denials count
    // against the new rule.
    c.apply_cluster_network_policy(&block(82)).unwrap();
    let update = compiler.update(&c, &ctx);
    assert!(
        matches!(update, weft_policy::desired::Update::Delta(_)),
        "a policy change is a delta"
    );
    let before = compiler.attribution();
    tally.observe(Reading::read(&mut enforcer).unwrap(), &before);
    enforcer.apply(update).expect("apply the delta");
    assert!(!connects(&pa, 82), "tcp/82: the Admin Deny now");
    assert!(connects(&pa, 81), "tcp/81: allowed by y/web now");
    tally.observe(
        Reading::read(&mut enforcer).unwrap(),
        &compiler.attribution(),
    );
    let text = tally.counters.to_tsv();
    assert_eq!(
        count(
            &tally,
            "ClusterNetworkPolicy block-81",
            "ingress[0] \"no-81\""
        ),
        admin,
        "{text}"
    );
    assert_eq!(count(&tally, "NetworkPolicy y/web", "isolation"), isolation);
    assert!(
        (1..=2).contains(&count(
            &tally,
            "ClusterNetworkPolicy block-81",
            "ingress[0] \"no-82\""
        )),
        "{text}"
    );
}

/// ClusterNetworkPolicy `block-81`: Admin, namespace y's pods refuse namespace x on
/// tcp/`port`, in a rule named `no-<port>`.
fn block(port: u16) -> weft_policy::cnp::ClusterNetworkPolicy {
    serde_yaml::from_str(&format!(
        "apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {{name: block-81}}
spec:
  tier: Admin
  priority: 5
  subject: {{namespaces: {{matchLabels: {{ns: y}}}}}}
  ingress:
    - name: no-{port}
      action: Deny
      from: [{{namespaces: {{matchLabels: {{ns: x}}}}}}]
      protocols: [{{tcp: {{destinationPort: {{number: {port}}}}}}}]"
    ))
    .expect("ClusterNetworkPolicy YAML")
}

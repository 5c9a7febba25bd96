//! `domainNames` peers: what a DNS answer grants a pod (the matcher with the address known
//! by the answered name), the API's rules for them, and the grants in a real kernel: a
//! granted address connects, another is refused, a grant ends at its timeout, and a full
//! sync leaves grants alone while a replacement removes them.

mod common;

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::netns::Netns;
use weft_policy::cnp::ClusterNetworkPolicy;
use weft_policy::desired::{desired, NodeContext};
use weft_policy::enforcer::Enforcer;
use weft_policy::fqdn::grants;
use weft_policy::Cluster;

const A: Ipv4Addr = common::POD_A;
const OUT1: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
const OUT2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 8);

fn cluster() -> Cluster {
    common::two_pods()
}

fn cnp(yaml: &str) -> ClusterNetworkPolicy {
    serde_yaml::from_str(yaml).expect("ClusterNetworkPolicy YAML")
}

/// Namespace x may reach `*.example.org` on tcp/80, and nothing else outside: the
/// upstream API's allowlist.
fn allowlist(before: &str) -> ClusterNetworkPolicy {
    cnp(&format!(
        "apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {{name: allowlist}}
spec:
  tier: Admin
  priority: 5
  subject: {{namespaces: {{matchLabels: {{ns: x}}}}}}
  egress:{before}
    - name: example
      action: Accept
      to: [{{domainNames: ['*.example.org', api.example.net]}}]
      protocols: [{{tcp: {{destinationPort: {{number: 80}}}}}}]
    - name: rest
      action: Deny
      to: [{{networks: [0.0.0.0/0]}}]"
    ))
}

fn ip(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

#[test]
fn an_answer_grants_what_the_matcher_allows_with_the_name() {
    let mut c = cluster();
    c.apply_cluster_network_policy(&allowlist("")).unwrap();
    let g = |c: &Cluster, client: Ipv4Addr, name: &str| grants(c, "n1", ip(client), name, ip(OUT1));
    let one = g(&c, A, "www.example.org");
    assert_eq!(one.len(), 1, "{one:?}");
    let text = format!("{:?}", one[0]);
    assert!(
        text.contains("Proto(6), Port(80)") && !text.contains("Port(81)"),
        "tcp/80 only: {text}"
    );
    assert_eq!(
        g(&c, A, "deep.www.Example.ORG."),
        one,
        "case, depth, final dot"
    );
    assert_eq!(g(&c, A, "api.example.net"), one);
    assert!(g(&c, A, "example.org").is_empty(), "`*.` needs a label");
    assert!(g(&c, A, "www.example.net").is_empty());
    // y/b is not a subject; a pod of another node is not this node's to grant.
    assert!(g(&c, Ipv4Addr::new(10, 244, 2, 11), "www.example.org").is_empty());
    assert!(grants(&c, "n2", ip(A), "www.example.org", ip(OUT1)).is_empty());
    // Without the name the Accept matches nothing and the Deny decides.
    let d = weft_policy::check(
        &c,
        &weft_policy::Endpoint::Ip(ip(A)),
        &weft_policy::Endpoint::Ip(ip(OUT1)),
        80,
        weft_policy::Protocol::Tcp,
    )
    .unwrap();
    assert!(!d.allowed, "{d}");

    // A rule before it that denies the address still wins: nothing is granted.
    c.apply_cluster_network_policy(&allowlist(
        "
    - name: first
      action: Deny
      to: [{networks: [192.0.2.0/24]}]",
    ))
    .unwrap();
    assert!(g(&c, A, "www.example.org").is_empty());
}

#[test]
fn domain_names_follow_the_api_rules() {
    let mut c = cluster();
    let deny = cnp("apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: bad}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {}}
  egress:
    - {action: Deny, to: [{domainNames: [example.org]}]}");
    let e = c
        .apply_cluster_network_policy(&deny)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("spec.egress[0].action") && e.contains("only allowed in Accept"),
        "{e}"
    );
    let bad = cnp("apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: bad}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {}}
  egress:
    - {action: Accept, to: [{domainNames: [ok.example.org, '*kubernetes.io']}]}");
    let e = c
        .apply_cluster_network_policy(&bad)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("spec.egress[0].to[0].domainNames[1]") && e.contains("*kubernetes.io"),
        "{e}"
    );
}

fn connects(pa: &Netns, to: Ipv4Addr, port: u16) -> bool {
    pa.run_in(move || {
        TcpStream::connect_timeout(&SocketAddr::from((to, port)), Duration::from_millis(700))
            .is_ok()
    })
}

#[test]
fn grants_in_the_kernel() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    // A node namespace routing between pod a and an "outside" namespace holding OUT1 and
    // OUT2, which serves tcp/80 and 81.
    let node = Netns::new("fnode");
    let pa = Netns::new("fpa");
    let out = Netns::new("fout");
    for (ns, node_if, gw, addrs) in [
        (&pa, "va", "10.244.1.1", vec!["10.244.1.11/24"]),
        (
            &out,
            "vo",
            "192.0.2.1",
            vec!["192.0.2.7/24", "192.0.2.8/24"],
        ),
    ] {
        node.exec(&[
            "ip", "link", "add", node_if, "type", "veth", "peer", "name", "eth0",
        ]);
        node.exec(&["ip", "link", "set", "eth0", "netns", &ns.0]);
        node.exec(&["ip", "addr", "add", &format!("{gw}/24"), "dev", node_if]);
        node.exec(&["ip", "link", "set", node_if, "up"]);
        for a in addrs {
            ns.exec(&["ip", "addr", "add", a, "dev", "eth0"]);
        }
        ns.exec(&["ip", "link", "set", "eth0", "up"]);
        ns.exec(&["ip", "route", "add", "default", "via", gw]);
    }
    node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    for port in [80u16, 81] {
        let l = out.run_in(move || TcpListener::bind(("0.0.0.0", port)).expect("bind"));
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                let _ = s.read(&mut [0u8; 1]);
            }
        });
    }
    let mut c = cluster();
    c.apply_cluster_network_policy(&allowlist("")).unwrap();
    let ctx = NodeContext {
        node_name: "n1".into(),
        log_group: None,
    };
    let mut enforcer = Enforcer::open_in(&node.path()).expect("nf_tables in the node");
    enforcer.sync(&desired(&c, &ctx)).expect("sync");
    assert!(!connects(&pa, OUT1, 80), "no answer yet: the Deny");
    assert!(!connects(&pa, OUT2, 80));

    let g = grants(&c, "n1", ip(A), "www.example.org", ip(OUT1));
    let ttl = |s| Duration::from_secs(s);
    let with = |g: &[weft_policy::fqdn::Grant], s| {
        g.iter().map(|g| (g.clone(), ttl(s))).collect::<Vec<_>>()
    };
    enforcer.grant(&with(&g, 60), false).expect("grant");
    assert!(connects(&pa, OUT1, 80), "answered address, the rule's port");
    assert!(!connects(&pa, OUT1, 81), "not the rule's port");
    assert!(!connects(&pa, OUT2, 80), "not answered");
    let listed = node.exec(&["nft", "list", "ruleset"]);
    assert!(
        listed.contains("set egress-fqdn4")
            && listed.contains("10.244.1.11 . 192.0.2.7 . tcp . 80 timeout 1m")
            && listed.contains("@egress-fqdn4 return"),
        "{listed}"
    );
    let json = node.exec(&["nft", "-j", "list", "ruleset"]);
    assert!(json.contains("\"egress-fqdn4\""), "{json}");

    // The answer changes: the new address works too, for its TTL only.
    let g2 = grants(&c, "n1", ip(A), "www.example.org", ip(OUT2));
    enforcer.grant(&with(&g2, 2), false).expect("grant");
    assert!(connects(&pa, OUT2, 80), "the new answer's address");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(!connects(&pa, OUT2, 80), "past its TTL");

    // A full sync that reads the kernel (an agent's periodic resync) keeps the grants.
    enforcer.resync();
    enforcer.sync(&desired(&c, &ctx)).expect("resync");
    assert!(connects(&pa, OUT1, 80), "grants survive a full sync");
    // Computed again after a policy change: the rule is gone, so is the grant.
    c.delete_cluster_network_policy("allowlist");
    enforcer.sync(&desired(&c, &ctx)).expect("sync");
    let again = grants(&c, "n1", ip(A), "www.example.org", ip(OUT1));
    assert!(again.is_empty());
    enforcer.grant(&with(&again, 60), true).expect("replace");
    let listed = node.exec(&["nft", "list", "set", "inet", "weft-policy", "egress-fqdn4"]);
    assert!(!listed.contains("192.0.2.7"), "{listed}");
}

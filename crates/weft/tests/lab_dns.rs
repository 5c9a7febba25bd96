//! Cluster DNS in a lab, asked with `dig` from inside pods: every record kind of the
//! Kubernetes DNS specification and its negative answers, the search path, TC and the TCP
//! retry, answers that follow the objects, forwarding with a cache, refusal of outsiders,
//! and parallel A + AAAA questions from one socket that never lose a reply.

mod dns_support;
mod lab_support;

use dns_support::*;
use lab_support::*;
use std::time::{Duration, Instant};

const WORLD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {app: client}}
spec:
  nodeName: node-1
  containers: [{name: app, image: weft/serve, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, labels: {app: web}}
spec:
  nodeName: node-2
  containers: [{name: app, image: weft/serve, ports: [{containerPort: 8080, name: http}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: echo-udp, port: 81, targetPort: 8080, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: plain}
spec:
  selector: {app: web}
  ports: [{port: 81, targetPort: 8080, protocol: UDP}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, labels: {app: db}}
spec:
  nodeName: node-1
  hostname: db-0
  subdomain: db
  containers: [{name: app, image: weft/serve, ports: [{containerPort: 5432}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, labels: {app: db}}
spec:
  nodeName: node-2
  containers: [{name: app, image: weft/serve, ports: [{containerPort: 5432}]}]
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: pg, port: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: ext}
spec: {type: ExternalName, externalName: example.org}
---
apiVersion: v1
kind: Service
metadata: {name: big}
spec:
  clusterIP: None
  ports: [{name: p, port: 9000}]
"#;

/// A hand-made EndpointSlice of `n` ready addresses for the selector-less `big`: more
/// than 512 bytes of answer.
fn big_slice(n: u32) -> String {
    let eps: String = (1..=n)
        .map(|i| format!("- addresses: [\"10.1.{}.{}\"]\n", i / 200, i % 200 + 1))
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: big-1\n  labels: {{kubernetes.io/service-name: big}}\naddressType: IPv4\nports: [{{name: p, port: 9000, protocol: TCP}}]\nendpoints:\n{eps}"
    )
}

fn world() -> (Lab, std::collections::BTreeMap<String, PodInfo>) {
    let lab = Lab::up(2, "vxlan");
    lab.apply(WORLD);
    lab.apply(&big_slice(60));
    let pods = lab.wait_running(
        &["client", "web-1", "db-0", "db-1"],
        Duration::from_secs(60),
    );
    (lab, pods)
}

/// Polls `dig` until `ok` holds (answers follow the objects within a second; the API's
/// own controllers come first).
fn dig_until(lab: &Lab, args: &[&str], ok: impl Fn(&Dig) -> bool) -> Dig {
    let mut last = Dig::default();
    for _ in 0..50 {
        last = dig(lab, "client", args);
        if ok(&last) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "dig {args:?} never satisfied the test; last reply:\n{}",
        last.raw
    );
}

#[test]
fn every_record_of_the_specification() {
    let (lab, pods) = world();
    let web_ip = cluster_ip(&lab, "default", "web");
    let (db0, db1) = (pods["db-0"].ip.clone(), pods["db-1"].ip.clone());

    // ClusterIP Service: A, case echoed, SRV per named port only, PTR.
    let a = dig(&lab, "client", &["web.default.svc.cluster.local", "A"]);
    assert_eq!(a.status, "NOERROR", "{}", a.raw);
    assert_eq!(a.data("A"), vec![web_ip.clone()], "{}", a.raw);
    assert!(
        a.flags.contains(&"aa".to_string()),
        "authoritative: {}",
        a.raw
    );
    let mixed = dig(&lab, "client", &["WeB.DeFault.SVC.cluster.LOCAL", "A"]);
    assert_eq!(mixed.data("A"), vec![web_ip.clone()], "{}", mixed.raw);
    assert!(
        mixed.answers[0].starts_with("WeB.DeFault.SVC.cluster.LOCAL."),
        "the question's case comes back: {}",
        mixed.raw
    );
    let srv = dig(
        &lab,
        "client",
        &["_http._tcp.web.default.svc.cluster.local", "SRV"],
    );
    assert_eq!(
        srv.data("SRV"),
        vec!["0 100 80 web.default.svc.cluster.local.".to_string()],
        "{}",
        srv.raw
    );
    let unnamed = dig(
        &lab,
        "client",
        &["_81._udp.plain.default.svc.cluster.local", "SRV"],
    );
    assert!(
        unnamed.answers.is_empty(),
        "no SRV for an unnamed port: {}",
        unnamed.raw
    );
    let ptr = dig(&lab, "client", &["-x", &web_ip]);
    assert_eq!(
        ptr.data("PTR"),
        vec!["web.default.svc.cluster.local.".to_string()],
        "{}",
        ptr.raw
    );

    // Headless: one A per ready endpoint, a name per endpoint, SRV per endpoint, PTR.
    let db = dig_until(&lab, &["db.default.svc.cluster.local", "A"], |d| {
        d.data("A").len() == 2
    });
    let mut got = db.data("A");
    got.sort();
    let mut want = vec![db0.clone(), db1.clone()];
    want.sort();
    assert_eq!(got, want, "{}", db.raw);
    let named = dig(&lab, "client", &["db-0.db.default.svc.cluster.local", "A"]);
    assert_eq!(
        named.data("A"),
        vec![db0.clone()],
        "hostname + subdomain: {}",
        named.raw
    );
    let dashed_name = format!("{}.db.default.svc.cluster.local", db1.replace('.', "-"));
    let dashed = dig(&lab, "client", &[&dashed_name, "A"]);
    assert_eq!(
        dashed.data("A"),
        vec![db1.clone()],
        "dashed address: {}",
        dashed.raw
    );
    let mut srv = dig(
        &lab,
        "client",
        &["_pg._tcp.db.default.svc.cluster.local", "SRV"],
    )
    .data("SRV");
    srv.sort();
    let mut want_srv = vec![
        "0 100 5432 db-0.db.default.svc.cluster.local.".to_string(),
        format!("0 100 5432 {dashed_name}."),
    ];
    want_srv.sort();
    // Weights may be shared out; the targets and port are what matter.
    let targets = |v: &[String]| -> Vec<String> {
        v.iter()
            .map(|s| s.split(' ').skip(2).collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(targets(&srv), targets(&want_srv), "{srv:?}");
    let ptr = dig(&lab, "client", &["-x", &db0]);
    assert!(
        ptr.data("PTR")
            .contains(&"db-0.db.default.svc.cluster.local.".to_string()),
        "{}",
        ptr.raw
    );

    // ExternalName, pods, the schema version.
    let ext = dig(&lab, "client", &["ext.default.svc.cluster.local", "CNAME"]);
    assert_eq!(
        ext.data("CNAME"),
        vec!["example.org.".to_string()],
        "{}",
        ext.raw
    );
    let client_ip = &pods["client"].ip;
    let pod_name = format!("{}.default.pod.cluster.local", client_ip.replace('.', "-"));
    let pod = dig(&lab, "client", &[&pod_name, "A"]);
    assert_eq!(pod.data("A"), vec![client_ip.clone()], "{}", pod.raw);
    let pod_tcp = dig(&lab, "client", &["+tcp", &pod_name, "A"]);
    assert_eq!(
        pod_tcp.data("A"),
        vec![client_ip.clone()],
        "{}",
        pod_tcp.raw
    );
    let v = dig(&lab, "client", &["dns-version.cluster.local", "TXT"]);
    assert_eq!(v.data("TXT"), vec!["\"1.1.0\"".to_string()], "{}", v.raw);

    // Negative answers: NXDOMAIN with the SOA; NODATA for a type the name lacks and for
    // an empty non-terminal.
    let nx = dig(&lab, "client", &["nope.default.svc.cluster.local", "A"]);
    assert_eq!(nx.status, "NXDOMAIN", "{}", nx.raw);
    assert!(nx.has_soa(), "NXDOMAIN carries the SOA: {}", nx.raw);
    let nodata = dig(&lab, "client", &["web.default.svc.cluster.local", "AAAA"]);
    assert_eq!(nodata.status, "NOERROR", "{}", nodata.raw);
    assert!(
        nodata.answers.is_empty() && nodata.has_soa(),
        "{}",
        nodata.raw
    );
    let ent = dig(&lab, "client", &["svc.cluster.local", "A"]);
    assert_eq!(ent.status, "NOERROR", "empty non-terminal: {}", ent.raw);
    assert!(ent.answers.is_empty() && ent.has_soa(), "{}", ent.raw);

    // The search path, as a pod's resolver walks it.
    for short in ["web", "web.default"] {
        let s = dig(&lab, "client", &["+search", short, "A"]);
        assert_eq!(s.data("A"), vec![web_ip.clone()], "{short}: {}", s.raw);
    }

    // An answer too big for 512 bytes: TC over UDP, the whole answer over TCP.
    let tc = dig(
        &lab,
        "client",
        &["+ignore", "+noedns", "big.default.svc.cluster.local", "A"],
    );
    assert!(tc.flags.contains(&"tc".to_string()), "TC set: {}", tc.raw);
    let full = dig(
        &lab,
        "client",
        &["+noedns", "big.default.svc.cluster.local", "A"],
    );
    assert_eq!(
        full.data("A").len(),
        60,
        "dig retries over TCP: {}",
        full.raw
    );
    let tcp = dig(
        &lab,
        "client",
        &["+tcp", "big.default.svc.cluster.local", "A"],
    );
    assert_eq!(tcp.data("A").len(), 60, "{}", tcp.raw);
    // A large EDNS buffer takes the whole answer over UDP.
    let edns = dig(
        &lab,
        "client",
        &[
            "+ignore",
            "+bufsize=4096",
            "big.default.svc.cluster.local",
            "A",
        ],
    );
    assert!(!edns.flags.contains(&"tc".to_string()), "{}", edns.raw);
    assert_eq!(edns.data("A").len(), 60, "{}", edns.raw);
}

#[test]
fn answers_follow_the_objects() {
    let (lab, pods) = world();
    // A Service added.
    let start = Instant::now();
    lab.apply("apiVersion: v1\nkind: Service\nmetadata: {name: late}\nspec:\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n");
    let ip = cluster_ip(&lab, "default", "late");
    dig_until(&lab, &["late.default.svc.cluster.local", "A"], |d| {
        d.data("A") == vec![ip.clone()]
    });
    let added = start.elapsed();
    // A pod deleted: the headless Service drops its address.
    let start = Instant::now();
    let out = lab.kubectl(&["delete", "pod", "db-1", "--wait=false"]);
    assert!(out.status.success(), "{}", text(&out));
    let db0 = pods["db-0"].ip.clone();
    dig_until(&lab, &["db.default.svc.cluster.local", "A"], |d| {
        d.data("A") == vec![db0.clone()]
    });
    let pod_gone = start.elapsed();
    // A Service deleted.
    let start = Instant::now();
    let out = lab.kubectl(&["delete", "svc", "late"]);
    assert!(out.status.success(), "{}", text(&out));
    dig_until(&lab, &["late.default.svc.cluster.local", "A"], |d| {
        d.status == "NXDOMAIN"
    });
    let deleted = start.elapsed();
    println!(
        "visible after: service added {added:?}, pod deleted {pod_gone:?}, service deleted {deleted:?} (dig polls every 200 ms)"
    );
}

#[test]
fn forwards_with_a_cache_and_refuses_outsiders() {
    let lab = Lab::up_file(1, "host-gw", "dnsUpstreams: [\"192.168.1.254:53\"]\n");
    let external = format!("weft-{}-external", lab.name);
    let upstream = Upstream::start(&external, "192.168.1.254:53");
    lab.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: client}\nspec:\n  nodeName: node-1\n  containers: [{name: app, image: weft/serve, ports: [{containerPort: 8080}]}]\n",
    );
    lab.wait_running(&["client"], Duration::from_secs(60));

    // Forwarded once, then answered from the cache.
    let first = dig(&lab, "client", &["www.example.org", "A"]);
    assert_eq!(
        first.data("A"),
        vec!["203.0.113.7".to_string()],
        "{}",
        first.raw
    );
    let second = dig(&lab, "client", &["www.example.org", "A"]);
    assert_eq!(
        second.data("A"),
        vec!["203.0.113.7".to_string()],
        "{}",
        second.raw
    );
    let asked = upstream.asked();
    assert_eq!(
        asked
            .iter()
            .filter(|q| q.as_str() == "www.example.org/1")
            .count(),
        1,
        "the second question came from the cache: {asked:?}"
    );
    // Negative answers are cached too.
    for _ in 0..2 {
        let nx = dig(&lab, "client", &["nx.example.org", "A"]);
        assert_eq!(nx.status, "NXDOMAIN", "{}", nx.raw);
    }
    let asked = upstream.asked();
    assert_eq!(
        asked
            .iter()
            .filter(|q| q.starts_with("nx.example.org/"))
            .count(),
        1,
        "NXDOMAIN cached: {asked:?}"
    );
    // The search list's expansions never leave the node: only the final name is asked.
    let walked = dig(
        &lab,
        "client",
        &["+search", "+ndots=5", "api.example.org", "A"],
    );
    assert_eq!(
        walked.data("A"),
        vec!["203.0.113.7".to_string()],
        "{}",
        walked.raw
    );
    let asked = upstream.asked();
    assert!(
        asked.iter().all(|q| !q.contains("cluster.local")),
        "in-zone names were forwarded: {asked:?}"
    );

    // Outside the cluster: the external host routes the DNS address to node-1 and asks.
    ip(
        &external,
        &["route", "add", "10.96.0.10/32", "via", "192.168.1.2"],
    );
    for name in ["kubernetes.default.svc.cluster.local", "www.example.org"] {
        let r = dig_in_netns(&external, &["@10.96.0.10", name, "A"]);
        assert_eq!(r.status, "REFUSED", "{name} from outside: {}", r.raw);
        assert!(r.answers.is_empty(), "{}", r.raw);
    }
    // ... while a node itself is answered.
    let node = lab.node_netns("node-1");
    let r = dig_in_netns(
        &node,
        &["@10.96.0.10", "kubernetes.default.svc.cluster.local", "A"],
    );
    assert_eq!(r.data("A"), vec!["10.96.0.1".to_string()], "{}", r.raw);
}

/// glibc asks A and AAAA in parallel from one socket; with DNAT in conntrack one of the
/// two can lose the insert race and its reply is dropped (kubernetes issue 56903). The
/// pod's resolver here gives up after one try of one second, so a lost reply would fail
/// the lookup instead of hiding in a 5 s retry.
#[test]
fn parallel_a_and_aaaa_from_one_socket_never_lose_a_reply() {
    let (lab, _) = world();
    lab.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: strict}\nspec:\n  nodeName: node-1\n  dnsConfig: {options: [{name: timeout, value: \"1\"}, {name: attempts, value: \"1\"}]}\n  containers: [{name: app, image: weft/serve, ports: [{containerPort: 8080}]}]\n",
    );
    lab.wait_running(&["strict"], Duration::from_secs(60));
    let script = "import socket\nfail = 0\nfor i in range(1000):\n    try:\n        socket.getaddrinfo('web.default.svc.cluster.local', 80, socket.AF_UNSPEC, socket.SOCK_STREAM)\n    except OSError as e:\n        fail += 1\n        print('lost', i, e)\nprint('failed', fail)\n";
    let out = lab.lab("exec", &["strict", "--", "python3", "-c", script]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("failed 0"), "lookups lost a reply: {said}");
}

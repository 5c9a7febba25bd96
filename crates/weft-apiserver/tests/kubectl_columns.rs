//! `kubectl get` against the API server prints the columns kube-apiserver's printers do
//! (the Table responses, `-o wide` included).

mod common;

use common::*;

/// Splits kubectl's aligned output into rows of (column, cell), by the header's offsets
/// (cells may be empty, column names may hold one space).
fn columns(out: &str) -> (Vec<String>, Vec<std::collections::HashMap<String, String>>) {
    let mut lines = out.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().unwrap_or_default();
    let mut starts = Vec::new();
    let mut prev = ' ';
    let mut prev2 = ' ';
    for (i, c) in header.char_indices() {
        if c != ' ' && prev == ' ' && (i == 0 || prev2 == ' ') {
            starts.push(i);
        }
        prev2 = prev;
        prev = c;
    }
    let cell = |l: &str, k: usize| -> String {
        let end = starts
            .get(k + 1)
            .copied()
            .unwrap_or(usize::MAX)
            .min(l.len());
        l.get(starts[k]..end).unwrap_or("").trim().to_string()
    };
    let names: Vec<String> = (0..starts.len()).map(|k| cell(header, k)).collect();
    let rows = lines
        .map(|l| {
            names
                .iter()
                .enumerate()
                .map(|(k, n)| (n.clone(), cell(l, k)))
                .collect()
        })
        .collect();
    (names, rows)
}

/// `kubectl get` columns are kube-apiserver's: names, `<none>`/`<unknown>` for what is
/// not set, and the wide (priority 1) ones only with `-o wide`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_columns_match_upstream_printers() {
    let s = start().await;
    let kc = s.kubeconfig();
    let run = |args: &[&str]| {
        let (ok, out) = kubectl(&kc, args).expect("kubectl is not installed");
        assert!(ok, "kubectl {args:?} failed: {out}");
        out
    };
    let file = s.dir.path().join("objs.yaml");
    std::fs::write(
        &file,
        r#"
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {node-role.kubernetes.io/control-plane: "", kubernetes.io/role: edge}}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: default}
spec:
  readinessGates: [{conditionType: example.com/gate}]
  containers: [{name: a, image: weft}, {name: b, image: weft}]
---
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: default}
spec:
  type: LoadBalancer
  selector: {app: web, tier: front}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: default}
spec: {type: ExternalName, externalName: example.com}
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: default}
spec: {clusterIP: None, selector: {app: web}, ports: [{port: 53, protocol: UDP}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: site, namespace: default}
spec:
  rules:
  - host: a.example
  - host: b.example
  - host: c.example
  - host: d.example
  tls: [{hosts: [a.example]}]
"#,
    )
    .expect("write");
    run(&["apply", "-f", &file.display().to_string()]);
    run(&[
        "patch",
        "node",
        "n1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"True"}],
            "addresses":[{"type":"InternalIP","address":"10.0.0.1"},{"type":"ExternalIP","address":"203.0.113.1"}],
            "nodeInfo":{"kubeletVersion":"v1.32.0","osImage":"Debian GNU/Linux 12 (bookworm)",
              "kernelVersion":"6.1.0-test","containerRuntimeVersion":"weft://0.1.0",
              "machineID":"","systemUUID":"","bootID":"","kubeProxyVersion":"",
              "operatingSystem":"linux","architecture":"amd64"}}}"#,
    ]);
    run(&[
        "patch",
        "pod",
        "p1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"nominatedNodeName":"n2","conditions":[{"type":"example.com/gate","status":"True"}]}}"#,
    ]);

    let (names, rows) = columns(&run(&["get", "nodes"]));
    assert_eq!(names, ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]);
    assert_eq!(rows[0]["ROLES"], "control-plane,edge");
    assert_eq!(rows[1]["STATUS"], "Unknown");
    assert_eq!(rows[1]["ROLES"], "<none>");
    let (names, rows) = columns(&run(&["get", "nodes", "-o", "wide"]));
    assert_eq!(
        names,
        [
            "NAME",
            "STATUS",
            "ROLES",
            "AGE",
            "VERSION",
            "INTERNAL-IP",
            "EXTERNAL-IP",
            "OS-IMAGE",
            "KERNEL-VERSION",
            "CONTAINER-RUNTIME"
        ]
    );
    let n1 = &rows[0];
    assert_eq!(n1["NAME"], "n1");
    assert_eq!(n1["STATUS"], "Ready");
    assert_eq!(n1["VERSION"], "v1.32.0");
    assert_eq!(n1["INTERNAL-IP"], "10.0.0.1");
    assert_eq!(n1["EXTERNAL-IP"], "203.0.113.1");
    assert_eq!(n1["OS-IMAGE"], "Debian GNU/Linux 12 (bookworm)");
    assert_eq!(n1["KERNEL-VERSION"], "6.1.0-test");
    assert_eq!(n1["CONTAINER-RUNTIME"], "weft://0.1.0");
    let n2 = &rows[1];
    assert_eq!(n2["INTERNAL-IP"], "<none>");
    assert_eq!(n2["EXTERNAL-IP"], "<none>");
    assert_eq!(n2["OS-IMAGE"], "<unknown>");
    assert_eq!(n2["KERNEL-VERSION"], "<unknown>");
    assert_eq!(n2["CONTAINER-RUNTIME"], "<unknown>");

    let (names, _) = columns(&run(&["get", "pods"]));
    assert_eq!(names, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    let (names, rows) = columns(&run(&["get", "pods", "-o", "wide"]));
    assert_eq!(
        names,
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED NODE",
            "READINESS GATES"
        ]
    );
    let p1 = &rows[0];
    assert_eq!(p1["READY"], "0/2");
    assert_eq!(p1["STATUS"], "Pending");
    assert_eq!(p1["RESTARTS"], "0");
    assert_eq!(p1["IP"], "<none>");
    // The scheduler may have bound it to the Ready node by now.
    assert!(["<none>", "n1"].contains(&p1["NODE"].as_str()), "{p1:?}");
    assert_eq!(p1["NOMINATED NODE"], "n2");
    assert_eq!(p1["READINESS GATES"], "1/1");

    let (names, _) = columns(&run(&["get", "svc"]));
    assert_eq!(
        names,
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    let (names, rows) = columns(&run(&["get", "svc", "-o", "wide"]));
    assert_eq!(
        names,
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
            "SELECTOR"
        ]
    );
    let row = |n: &str| rows.iter().find(|r| r["NAME"] == n).expect(n).clone();
    let lb = row("lb");
    assert_eq!(lb["TYPE"], "LoadBalancer");
    assert_eq!(lb["EXTERNAL-IP"], "<pending>");
    assert!(lb["PORT(S)"].starts_with("80:"), "{lb:?}");
    assert!(lb["PORT(S)"].ends_with("/TCP"), "{lb:?}");
    assert_eq!(lb["SELECTOR"], "app=web,tier=front");
    let ext = row("ext");
    assert_eq!(ext["CLUSTER-IP"], "<none>");
    assert_eq!(ext["EXTERNAL-IP"], "example.com");
    assert_eq!(ext["PORT(S)"], "<none>");
    assert_eq!(ext["SELECTOR"], "<none>");
    let headless = row("headless");
    assert_eq!(headless["CLUSTER-IP"], "None");
    assert_eq!(headless["EXTERNAL-IP"], "<none>");
    assert_eq!(headless["PORT(S)"], "53/UDP");

    let (names, rows) = columns(&run(&["get", "ingress", "-o", "wide"]));
    assert_eq!(names, ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]);
    assert_eq!(rows[0]["CLASS"], "<none>");
    assert_eq!(
        rows[0]["HOSTS"],
        "a.example,b.example,c.example + 1 more..."
    );
    assert_eq!(rows[0]["ADDRESS"], "");
    assert_eq!(rows[0]["PORTS"], "80, 443");
}

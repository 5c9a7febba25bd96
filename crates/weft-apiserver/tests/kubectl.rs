//! kubectl against the generated kubeconfig, as the lab's users will run it.

mod common;

use common::*;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::Api;

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: shop
  labels: {app: web}
spec:
  containers:
  - name: web
    image: weft
    ports:
    - {name: http, containerPort: 8080}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: shop
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
      - name: api
        image: weft
        ports: [{containerPort: 9000}]
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web-allow
  namespace: shop
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}
    ports:
    - {port: 8080}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_and_apply_work_with_the_generated_kubeconfig() {
    let s = start().await;
    let kc = s.kubeconfig();
    // kubectl is part of every machine this project supports: its absence is a failure.
    let (ok, out) = kubectl(&kc, &["get", "pods", "-A"]).expect("kubectl is not installed");
    assert!(ok, "kubectl get pods -A failed: {out}");

    let file = s.dir.path().join("shop.yaml");
    std::fs::write(&file, MANIFEST).expect("write manifest");
    let file = file.display().to_string();
    let (ok, out) = kubectl(&kc, &["apply", "-f", &file]).expect("kubectl");
    assert!(ok, "kubectl apply failed: {out}");
    for line in [
        "namespace/shop created",
        "pod/web-0 created",
        "service/web created",
        "networkpolicy.networking.k8s.io/web-allow created",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }

    let c = s.client().await;
    let pod = Api::<Pod>::namespaced(c.clone(), "shop")
        .get("web-0")
        .await
        .expect("pod stored");
    assert_eq!(
        pod.metadata
            .labels
            .unwrap_or_default()
            .get("app")
            .map(String::as_str),
        Some("web")
    );
    let svc = Api::<Service>::namespaced(c.clone(), "shop")
        .get("web")
        .await
        .expect("svc stored");
    let port = svc.spec.and_then(|s| s.ports).unwrap_or_default()[0]
        .node_port
        .unwrap_or(0);
    assert!((30000..=32767).contains(&port), "nodePort {port}");
    Api::<NetworkPolicy>::namespaced(c, "shop")
        .get("web-allow")
        .await
        .expect("policy stored");

    // Re-applying the same manifest changes nothing.
    let (ok, out) = kubectl(&kc, &["apply", "-f", &file]).expect("kubectl");
    assert!(ok, "second apply failed: {out}");
    assert!(out.contains("service/web unchanged"), "{out}");

    let (ok, out) = kubectl(&kc, &["get", "pods", "-A"]).expect("kubectl");
    assert!(
        ok && out.contains("shop") && out.contains("web-0") && out.contains("Pending"),
        "{out}"
    );
    let (ok, out) = kubectl(
        &kc,
        &["scale", "-n", "shop", "deployment/api", "--replicas=3"],
    )
    .expect("kubectl");
    assert!(ok, "kubectl scale failed: {out}");
    let pods = Api::<Pod>::namespaced(s.client().await, "shop");
    eventually("3 api pods", || async {
        let l = pods
            .list(&kube::api::ListParams::default().labels("app=api"))
            .await
            .ok()?;
        (l.items.len() == 3).then_some(())
    })
    .await;
    let (ok, out) = kubectl(&kc, &["get", "svc", "-n", "shop", "-o", "wide"]).expect("kubectl");
    assert!(ok && out.contains(&format!("80:{port}/TCP")), "{out}");

    // A bad manifest is rejected with the field named.
    let bad = s.dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: shop}\nspec:\n  ports: [{port: 70000}]\n")
        .expect("write");
    let (ok, out) = kubectl(&kc, &["apply", "-f", &bad.display().to_string()]).expect("kubectl");
    assert!(!ok && out.contains("spec.ports[0].port"), "{out}");
}

/// kubectl's imperative commands send protobuf bodies; what they create must arrive whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_commands_send_protobuf_and_are_understood() {
    let s = start().await;
    let kc = s.kubeconfig();
    let run = |args: &[&str]| {
        let (ok, out) = kubectl(&kc, args).expect("kubectl is not installed");
        assert!(ok, "kubectl {args:?} failed: {out}");
        out
    };
    let json = |args: &[&str]| -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&run(&a)).expect("kubectl -o json")
    };

    run(&["create", "namespace", "imp"]);
    assert_eq!(
        json(&["get", "namespace", "imp"])["metadata"]["name"],
        "imp"
    );

    run(&[
        "create",
        "deployment",
        "web",
        "-n",
        "imp",
        "--image=weft",
        "--replicas=3",
        "--port=8080",
    ]);
    let d = json(&["get", "deployment", "web", "-n", "imp"]);
    assert_eq!(d["spec"]["replicas"], 3, "{d}");
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web", "{d}");
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "weft", "{d}");
    assert_eq!(c["ports"][0]["containerPort"], 8080, "{d}");

    // Zero replicas is a value, not an absent field.
    run(&[
        "create",
        "deployment",
        "idle",
        "-n",
        "imp",
        "--image=weft",
        "--replicas=0",
    ]);
    assert_eq!(
        json(&["get", "deployment", "idle", "-n", "imp"])["spec"]["replicas"],
        0
    );

    run(&[
        "create",
        "service",
        "nodeport",
        "web",
        "-n",
        "imp",
        "--tcp=80:8080",
    ]);
    let svc = json(&["get", "service", "web", "-n", "imp"]);
    assert_eq!(svc["spec"]["type"], "NodePort", "{svc}");
    let port = &svc["spec"]["ports"][0];
    assert_eq!(port["port"], 80, "{svc}");
    assert_eq!(port["targetPort"], 8080, "{svc}");
    let node_port = port["nodePort"].as_i64().unwrap_or(0);
    assert!((30000..=32767).contains(&node_port), "{svc}");

    run(&[
        "expose",
        "deployment",
        "web",
        "-n",
        "imp",
        "--name=web-named",
        "--port=81",
        "--target-port=http",
    ]);
    let svc = json(&["get", "service", "web-named", "-n", "imp"]);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http", "{svc}");

    run(&[
        "create",
        "configmap",
        "cfg",
        "-n",
        "imp",
        "--from-literal=greeting=hello",
    ]);
    assert_eq!(
        json(&["get", "configmap", "cfg", "-n", "imp"])["data"]["greeting"],
        "hello"
    );
    run(&[
        "create",
        "secret",
        "generic",
        "tok",
        "-n",
        "imp",
        "--from-literal=k=v",
    ]);
    // Secret data travels as bytes and reads back base64 ("v" -> "dg==").
    assert_eq!(
        json(&["get", "secret", "tok", "-n", "imp"])["data"]["k"],
        "dg=="
    );

    run(&[
        "create",
        "ingress",
        "site",
        "-n",
        "imp",
        "--class=weft",
        "--rule=shop.example/api*=web:80",
    ]);
    let ing = json(&["get", "ingress", "site", "-n", "imp"]);
    let rule = &ing["spec"]["rules"][0];
    assert_eq!(rule["host"], "shop.example", "{ing}");
    let path = &rule["http"]["paths"][0];
    assert_eq!(path["path"], "/api", "{ing}");
    assert_eq!(path["pathType"], "Prefix", "{ing}");
    assert_eq!(path["backend"]["service"]["name"], "web", "{ing}");
    assert_eq!(path["backend"]["service"]["port"]["number"], 80, "{ing}");
}

/// `kind: List` (what `kubectl get -o yaml` writes) goes through kubectl's client-side
/// validation (`/openapi/v2`), and `fieldValidation=Strict` still refuses unknown fields,
/// in a single object and in a List item alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_and_create_of_a_list_validate_strictly() {
    let s = start().await;
    let kc = s.kubeconfig();
    let write = |name: &str, text: &str| {
        let f = s.dir.path().join(name);
        std::fs::write(&f, text).expect("write manifest");
        f.display().to_string()
    };
    let run = |args: &[&str]| kubectl(&kc, args).expect("kubectl is not installed");

    let list = write(
        "list.yaml",
        "apiVersion: v1\nkind: List\nitems:\n\
         - apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: c1, namespace: default}\n  data: {a: b}\n\
         - apiVersion: v1\n  kind: Pod\n  metadata: {name: p1, namespace: default}\n  spec:\n    containers: [{name: c, image: weft}]\n",
    );
    let (ok, out) = run(&["apply", "-f", &list]);
    assert!(ok, "apply of a List failed: {out}");
    assert!(
        out.contains("configmap/c1 created") && out.contains("pod/p1 created"),
        "{out}"
    );
    let (ok, out) = run(&["apply", "-f", &list]);
    assert!(ok && out.contains("configmap/c1 unchanged"), "{out}");

    // What `kubectl get -o yaml` writes applies back, and creates anew once deleted.
    let (ok, dump) = run(&["get", "pods,configmaps", "-n", "default", "-o", "yaml"]);
    assert!(ok && dump.contains("kind: List"), "{dump}");
    let dumped = write("dump.yaml", &dump);
    let (ok, out) = run(&["apply", "-f", &dumped]);
    assert!(ok, "apply of get -o yaml failed: {out}");
    let (ok, out) = run(&["delete", "-f", &list, "--wait=false"]);
    assert!(ok, "{out}");
    eventually("the pod gone", || async {
        let (_, out) = run(&["get", "pods", "-n", "default", "-o", "name"]);
        (!out.contains("p1")).then_some(())
    })
    .await;
    let (ok, out) = run(&["create", "-f", &list]);
    assert!(
        ok && out.contains("configmap/c1 created") && out.contains("pod/p1 created"),
        "create of a List failed: {out}"
    );

    // Unknown fields: refused under the default --validate=strict, in an object and in a
    // List item; nothing of the refused object is stored.
    let bad = write(
        "bad.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad, namespace: default}\n\
         spec:\n  containers: [{name: c, image: weft, bogusField: 3}]\n",
    );
    for verb in ["create", "apply"] {
        let (ok, out) = run(&[verb, "-f", &bad]);
        assert!(
            !ok && out.contains(
                r#"strict decoding error: unknown field "spec.containers[0].bogusField""#
            ),
            "{verb}: {out}"
        );
    }
    let bad_list = write(
        "bad-list.yaml",
        "apiVersion: v1\nkind: List\nitems:\n\
         - apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: c2, namespace: default}\n  data: {a: b}\n  bogus: 1\n",
    );
    for verb in ["create", "apply"] {
        let (ok, out) = run(&[verb, "-f", &bad_list]);
        assert!(
            !ok && out.contains(r#"unknown field "bogus""#),
            "{verb}: {out}"
        );
    }
    let (ok, _) = run(&["get", "configmap", "c2", "-n", "default"]);
    assert!(!ok, "a refused ConfigMap was stored");
    // --validate=warn stores it and says what was dropped; --validate=false drops silently.
    let (ok, out) = run(&["apply", "--validate=warn", "-f", &bad_list]);
    assert!(
        ok && out.contains(r#"Warning: unknown field "bogus""#),
        "{out}"
    );
    let (ok, out) = run(&["get", "configmap", "c2", "-n", "default", "-o", "json"]);
    assert!(ok && !out.contains("\"bogus\": 1"), "{out}");
}

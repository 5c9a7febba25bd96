//! v1 Endpoints, mirrored from the EndpointSlice controller's slices for tools that
//! still read them: GET, LIST and WATCH answer them, kubectl prints them, they follow the
//! pods and go with their Service; hand-written Endpoints of a selector-less Service stay.

mod common;

use common::*;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use std::process::Command;

fn kubectl(kc: &std::path::Path, args: &[&str]) -> String {
    let o = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kc)
        .args(args)
        .output()
        .expect("kubectl is not installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "kubectl {args:?} failed: {text}");
    text
}

async fn pod_status(pods: &Api<Pod>, name: &str, ip: &str, ready: bool) {
    let status = json!({"status": {"podIP": ip, "podIPs": [{"ip": ip}], "phase": "Running",
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("pod status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_mirror_the_slices_and_are_served() {
    let s = start().await;
    let c = s.client().await;
    let svcs: Api<Service> = Api::namespaced(c.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let eps: Api<Endpoints> = Api::namespaced(c.clone(), "default");

    // The kubernetes Service's Endpoints point at this server, as upstream's do.
    let k = eventually("kubernetes endpoints", || async {
        eps.get_opt("kubernetes").await.ok().flatten()
    })
    .await;
    let subset = &k.subsets.unwrap_or_default()[0];
    assert_eq!(
        subset.addresses.as_ref().unwrap()[0].ip,
        s.addr().ip().to_string()
    );
    assert_eq!(
        subset.ports.as_ref().unwrap()[0].port,
        i32::from(s.addr().port())
    );

    let mut watch = eps
        .watch(&WatchParams::default().fields("metadata.name=web"), "0")
        .await
        .expect("watch endpoints")
        .boxed();

    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "labels": {"team": "shop"}},
        "spec": {"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 80, "targetPort": "http"}, {"name": "admin", "port": 81, "targetPort": 9090}]}
    }))
    .expect("literal");
    svcs.create(&PostParams::default(), &svc)
        .await
        .expect("svc");
    for (name, node) in [
        ("web-a", "node-1"),
        ("web-b", "node-2"),
        ("web-c", "node-1"),
    ] {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x",
                "ports": [{"name": "http", "containerPort": 8080}]}]}
        }))
        .expect("literal");
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("pod");
    }
    pod_status(&pods, "web-a", "10.244.1.5", true).await;
    pod_status(&pods, "web-b", "10.244.2.5", false).await;
    pod_status(&pods, "web-c", "10.244.1.6", true).await;

    let ep = eventually("web endpoints with 2 ready, 1 not", || async {
        let ep = eps.get_opt("web").await.ok().flatten()?;
        let ss = ep.subsets.clone()?;
        let ready = ss[0].addresses.as_ref().map_or(0, Vec::len);
        let not_ready = ss[0].not_ready_addresses.as_ref().map_or(0, Vec::len);
        (ss.len() == 1 && ready == 2 && not_ready == 1).then_some(ep)
    })
    .await;
    let labels = ep.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("team").map(String::as_str), Some("shop"));
    let ss = &ep.subsets.unwrap()[0];
    let a = &ss.addresses.as_ref().unwrap()[0];
    assert_eq!(a.ip, "10.244.1.5");
    assert_eq!(a.node_name.as_deref(), Some("node-1"));
    let r = a.target_ref.as_ref().expect("targetRef");
    assert_eq!(
        (r.kind.as_deref(), r.name.as_deref()),
        (Some("Pod"), Some("web-a"))
    );
    assert!(r.uid.is_some());
    let nr = &ss.not_ready_addresses.as_ref().unwrap()[0];
    assert_eq!(
        (nr.ip.as_str(), nr.node_name.as_deref()),
        ("10.244.2.5", Some("node-2"))
    );
    let mut ports: Vec<(String, i32)> = ss
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.name.clone().unwrap_or_default(), p.port))
        .collect();
    ports.sort();
    assert_eq!(
        ports,
        [("admin".to_string(), 9090), ("http".to_string(), 8080)]
    );

    // kubectl: the ENDPOINTS column, and describe.
    let kc = s.kubeconfig();
    let out = kubectl(&kc, &["get", "endpoints", "web"]);
    let line = out.lines().nth(1).unwrap_or_default();
    assert!(
        line.starts_with("web") && line.contains("10.244.1.5:") && line.contains("+ 1 more..."),
        "{out}"
    );
    let out = kubectl(&kc, &["describe", "service", "web"]);
    assert!(out.contains("Endpoints:"), "{out}");
    let out = kubectl(&kc, &["get", "ep", "-A", "-o", "name"]);
    assert!(
        out.contains("endpoints/kubernetes") && out.contains("endpoints/web"),
        "{out}"
    );

    // A terminating pod leaves the Endpoints.
    pods.delete("web-c", &DeleteParams::default())
        .await
        .expect("delete pod");
    eventually("web-c gone from the endpoints", || async {
        let ep = eps.get("web").await.ok()?;
        let ss = ep.subsets?;
        let ips: Vec<String> = ss
            .iter()
            .flat_map(|s| s.addresses.clone().unwrap_or_default())
            .map(|a| a.ip)
            .collect();
        (ips == ["10.244.1.5"]).then_some(())
    })
    .await;

    // The watch saw them come.
    let added = bounded("watch event", async {
        loop {
            match watch.next().await {
                Some(Ok(WatchEvent::Added(e))) => return e,
                Some(Ok(_)) => continue,
                other => panic!("watch ended: {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(added.metadata.name.as_deref(), Some("web"));

    // Deleting the Service deletes its Endpoints.
    svcs.delete("web", &DeleteParams::default())
        .await
        .expect("delete svc");
    eventually("web endpoints gone", || async {
        eps.get_opt("web")
            .await
            .ok()
            .and_then(|e| e.is_none().then_some(()))
    })
    .await;

    // A selector-less Service's Endpoints are the user's: written and kept.
    let ext: Service = serde_json::from_value(json!({
        "metadata": {"name": "ext"}, "spec": {"ports": [{"port": 5432}]}
    }))
    .expect("literal");
    svcs.create(&PostParams::default(), &ext)
        .await
        .expect("svc");
    let mine: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "ext"},
        "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 5432}]}]
    }))
    .expect("literal");
    eps.create(&PostParams::default(), &mine)
        .await
        .expect("user endpoints");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let got = eps.get("ext").await.expect("kept");
    assert_eq!(
        got.subsets.unwrap()[0].addresses.as_ref().unwrap()[0].ip,
        "192.0.2.10"
    );
}

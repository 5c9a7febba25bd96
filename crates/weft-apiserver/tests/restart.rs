//! Durability: the server is a child process, killed with SIGKILL mid-life.

mod common;

use common::*;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Kills the child on drop, so a failing test leaves no server behind.
struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn spawn(dir: &Path) -> ServerProcess {
    let kubeconfig = dir.join("kubeconfig");
    let _ = std::fs::remove_file(&kubeconfig);
    let child = Command::new(env!("CARGO_BIN_EXE_weft-apiserver"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .arg("--kubeconfig-out")
        .arg(&kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn weft-apiserver");
    let proc = ServerProcess(child);
    eventually("kubeconfig written", || async {
        kubeconfig.exists().then_some(())
    })
    .await;
    proc
}

async fn list_rvs(api: &Api<ConfigMap>) -> BTreeMap<String, String> {
    let list = api
        .list(&ListParams::default().labels("batch=restart"))
        .await
        .expect("list");
    list.items
        .into_iter()
        .map(|c| {
            (
                c.metadata.name.unwrap_or_default(),
                c.metadata.resource_version.unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_objects_survive_sigkill_and_a_torn_log_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut proc = spawn(dir.path()).await;
    let api: Api<ConfigMap> =
        Api::namespaced(client_for(&dir.path().join("kubeconfig")).await, "default");

    // 1000 creates, 16 in flight at a time; each acknowledged write is on disk.
    let mut written: BTreeMap<String, String> = BTreeMap::new();
    let results: Vec<ConfigMap> = bounded(
        "1000 creates",
        futures_util::stream::iter(0..1000)
            .map(|i| {
                let api = api.clone();
                async move {
                    let cm: ConfigMap = serde_json::from_value(json!({
                        "metadata": {"name": format!("cm-{i:04}"), "labels": {"batch": "restart"}},
                        "data": {"i": i.to_string()}
                    }))
                    .expect("literal");
                    api.create(&PostParams::default(), &cm)
                        .await
                        .expect("create")
                }
            })
            .buffer_unordered(16)
            .collect(),
    )
    .await;
    for c in results {
        written.insert(
            c.metadata.name.unwrap_or_default(),
            c.metadata.resource_version.unwrap_or_default(),
        );
    }
    assert_eq!(written.len(), 1000);

    proc.0.kill().expect("SIGKILL");
    proc.0.wait().expect("reaped");

    // A crash in the middle of an append leaves half a record: it must be ignored.
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("store.log"))
        .expect("store log exists");
    log.write_all(
        br#"{"rv":999999,"op":"put","res":"/configmaps","key":"default/torn","obj":{"meta"#,
    )
    .expect("append torn tail");
    drop(log);

    let _proc2 = spawn(dir.path()).await;
    let api: Api<ConfigMap> =
        Api::namespaced(client_for(&dir.path().join("kubeconfig")).await, "default");
    let after = list_rvs(&api).await;
    assert_eq!(after, written, "every object back with its resourceVersion");

    // The counter carries on above every stored version.
    let max = written
        .values()
        .filter_map(|v| v.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "later"}})).expect("literal");
    let later = api
        .create(&PostParams::default(), &cm)
        .await
        .expect("create after restart");
    let rv: u64 = later
        .metadata
        .resource_version
        .unwrap_or_default()
        .parse()
        .unwrap_or(0);
    assert!(rv > max, "new rv {rv} must exceed {max}");
}

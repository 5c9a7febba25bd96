//! The store on a full disk: the server's data directory on a small tmpfs, mounted in a
//! mount namespace of the test's own thread (the server, started from that thread, sees
//! it; the host does not), filled up. A write that cannot be stored is refused with a
//! status and a message, nothing acknowledged is lost, the server keeps serving reads,
//! and writes go on once space returns, also after a restart.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use serde_json::json;

struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn spawn(data: &Path, kubeconfig: &Path) -> ServerProcess {
    let _ = std::fs::remove_file(kubeconfig);
    let child = Command::new(env!("CARGO_BIN_EXE_weft-apiserver"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .arg("--kubeconfig-out")
        .arg(kubeconfig)
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

fn fill(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("filler");
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    while f.write_all(&[0]).is_ok() {}
    let _ = f.sync_all();
    path
}

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"batch": "disk"}},
        "data": {"payload": "x".repeat(512)}
    }))
    .expect("literal")
}

async fn names(api: &Api<ConfigMap>) -> BTreeSet<String> {
    api.list(&ListParams::default().labels("batch=disk"))
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect()
}

async fn run(root: &Path) {
    let data = root.join("data");
    let kubeconfig =
        std::env::temp_dir().join(format!("weft-full-disk-{}.kubeconfig", std::process::id()));
    let proc = spawn(&data, &kubeconfig).await;
    let api: Api<ConfigMap> = Api::namespaced(client_for(&kubeconfig).await, "default");
    let pp = PostParams::default();
    let mut acked = BTreeSet::new();
    for i in 0..5 {
        api.create(&pp, &cm(&format!("before-{i}")))
            .await
            .expect("create before full");
        acked.insert(format!("before-{i}"));
    }
    let filler = fill(root);
    let mut refused = None;
    for i in 0..2000 {
        let name = format!("full-{i}");
        match api.create(&pp, &cm(&name)).await {
            Ok(_) => {
                acked.insert(name);
            }
            Err(kube::Error::Api(s)) => {
                refused = Some(s);
                break;
            }
            Err(e) => panic!("the server did not answer a write on a full disk: {e}"),
        }
    }
    let refused = refused.expect("a full disk never refused a write");
    println!(
        "refused with {} {}: {}",
        refused.code, refused.reason, refused.message
    );
    assert!(refused.code == 507 || refused.code == 500, "{refused:?}");
    assert!(
        refused.message.to_lowercase().contains("no space"),
        "the message should say why: {refused:?}"
    );
    // Reads go on, and show exactly what was acknowledged.
    assert_eq!(names(&api).await, acked);
    std::fs::remove_file(&filler).expect("free space");
    api.create(&pp, &cm("after-space"))
        .await
        .expect("a write once space returns");
    acked.insert("after-space".into());
    assert_eq!(names(&api).await, acked);
    // Nothing on disk is corrupt: a restarted server has it all.
    drop(proc);
    let _proc = spawn(&data, &kubeconfig).await;
    let api: Api<ConfigMap> = Api::namespaced(client_for(&kubeconfig).await, "default");
    assert_eq!(names(&api).await, acked);
    let _ = std::fs::remove_file(&kubeconfig);
}

#[test]
fn a_full_disk_refuses_writes_with_a_status_loses_nothing_and_recovers() {
    std::thread::scope(|s| {
        s.spawn(|| {
            unshare(CloneFlags::CLONE_NEWNS).expect("unshare a mount namespace (needs root)");
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .expect("make mounts private");
            let dir = tempfile::tempdir().expect("temp dir");
            mount(
                Some("tmpfs"),
                dir.path(),
                Some("tmpfs"),
                MsFlags::empty(),
                Some("size=2m,mode=0700"),
            )
            .expect("mount a tmpfs");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(run(dir.path()));
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    });
}

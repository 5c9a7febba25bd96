//! List and watch throughput for 10k pods, and the server's resident memory.
//!
//!     cargo run --release -p weft-apiserver --example bench [-- PODS]
//!
//! The server runs as a child process (this binary re-executed with `serve`), so its
//! memory is measured alone; the client is kube-rs, as the agent uses it.

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn pod(i: usize) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("pod-{i:05}"), "labels": {"app": format!("app-{}", i % 50), "bench": "yes"}},
        "spec": {"nodeName": format!("node-{}", 1 + i % 10), "containers": [{"name": "main", "image": "weft",
            "ports": [{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9090}]}]}
    }))
    .expect("pod literal")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        std::process::exit(i32::from(weft_apiserver::run_cli(args[2..].to_vec())));
    }
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let dir = tempfile::tempdir()?;
    let kc = dir.path().join("kubeconfig");
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--watch-history",
            "50000",
            "--data-dir",
        ])
        .arg(dir.path())
        .arg("--kubeconfig-out")
        .arg(&kc)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async move {
        for _ in 0..200 {
            if kc.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let cfg = kube::Config::from_custom_kubeconfig(Kubeconfig::read_from(&kc)?, &KubeConfigOptions::default()).await?;
        let client = kube::Client::try_from(cfg)?;
        let rss_idle = rss_kib(pid);
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "bench"}}))?)
            .await?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "bench");

        // A live watch, opened before the writes, to time event delivery.
        let start_rv = pods.list(&ListParams::default().limit(1)).await?.metadata.resource_version.unwrap_or_default();
        let live = pods.watch(&WatchParams::default(), &start_rv).await?;

        let t = Instant::now();
        let created: Vec<Result<Pod, kube::Error>> = futures_util::stream::iter(0..n)
            .map(|i| {
                let pods = pods.clone();
                async move { pods.create(&PostParams::default(), &pod(i)).await }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        let create_s = t.elapsed().as_secs_f64();
        let failed = created.iter().filter(|r| r.is_err()).count();
        if failed > 0 {
            return Err(format!("{failed} creates failed").into());
        }
        let mut live = live.boxed();
        let mut got = 0usize;
        while got < n {
            match live.try_next().await? {
                Some(WatchEvent::Added(_)) => got += 1,
                Some(_) => {}
                None => break,
            }
        }
        let live_s = t.elapsed().as_secs_f64();
        let rss_loaded = rss_kib(pid);

        // Full lists (one response) and paged lists (500 a page, as kube-rs watchers do).
        let rounds = 5;
        let t = Instant::now();
        for _ in 0..rounds {
            let l = pods.list(&ListParams::default()).await?;
            assert_eq!(l.items.len(), n);
        }
        let list_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..rounds {
            let mut lp = ListParams::default().limit(500);
            let mut count = 0;
            loop {
                let page = pods.list(&lp).await?;
                count += page.items.len();
                match page.metadata.continue_.filter(|c| !c.is_empty()) {
                    Some(c) => lp = lp.continue_token(&c),
                    None => break,
                }
            }
            assert_eq!(count, n);
        }
        let paged_s = t.elapsed().as_secs_f64();
        let rss_after_lists = rss_kib(pid);

        // Watch from "0": every pod as a synthetic ADDED event.
        let t = Instant::now();
        let mut w = pods.watch(&WatchParams::default(), "0").await?.boxed();
        let mut added = 0usize;
        while added < n {
            if let Some(WatchEvent::Added(_)) = w.try_next().await? {
                added += 1;
            }
        }
        let initial_s = t.elapsed().as_secs_f64();
        drop(w);

        // Resume from the pre-create resourceVersion: replay of n events from history.
        let t = Instant::now();
        let mut w = pods.watch(&WatchParams::default(), &start_rv).await?.boxed();
        let mut replayed = 0usize;
        while replayed < n {
            if let Some(WatchEvent::Added(_)) = w.try_next().await? {
                replayed += 1;
            }
        }
        let replay_s = t.elapsed().as_secs_f64();
        drop(w);

        // Updates: merge-patch a label on every pod while a watch counts MODIFIED events.
        let rv = pods.list(&ListParams::default().limit(1)).await?.metadata.resource_version.unwrap_or_default();
        let mut w = pods.watch(&WatchParams::default(), &rv).await?.boxed();
        let t = Instant::now();
        let patched: Vec<Result<Pod, kube::Error>> = futures_util::stream::iter(0..n)
            .map(|i| {
                let pods = pods.clone();
                async move {
                    let p = json!({"metadata": {"labels": {"round": "2"}}});
                    pods.patch(&format!("pod-{i:05}"), &PatchParams::default(), &Patch::Merge(&p)).await
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        let patch_s = t.elapsed().as_secs_f64();
        if patched.iter().any(|r| r.is_err()) {
            return Err("patches failed".into());
        }
        let mut modified = 0usize;
        while modified < n {
            if let Some(WatchEvent::Modified(_)) = w.try_next().await? {
                modified += 1;
            }
        }
        let modified_s = t.elapsed().as_secs_f64();
        let rss_end = rss_kib(pid);
        let log_bytes = std::fs::metadata(dir.path().join("store.log")).map(|m| m.len()).unwrap_or(0);

        let per = |count: usize, s: f64| (count as f64 / s).round();
        println!("pods: {n}");
        println!("create (32 in flight, group fsync): {:>9} objects/s  ({create_s:.2} s)", per(n, create_s));
        println!("live watch, creates delivered:       {:>9} objects/s  ({live_s:.2} s, bounded by create)", per(n, live_s));
        println!("list, one response ({rounds}x):            {:>9} objects/s  ({list_s:.2} s)", per(n * rounds, list_s));
        println!("list, 500 per page ({rounds}x):            {:>9} objects/s  ({paged_s:.2} s)", per(n * rounds, paged_s));
        println!("watch from rv 0 (initial ADDED):     {:>9} objects/s  ({initial_s:.2} s)", per(n, initial_s));
        println!("watch resume, replay from history:   {:>9} objects/s  ({replay_s:.2} s)", per(n, replay_s));
        println!("merge-patch (32 in flight):          {:>9} objects/s  ({patch_s:.2} s)", per(n, patch_s));
        println!("live watch, MODIFIED delivered:      {:>9} objects/s  ({modified_s:.2} s, bounded by patch)", per(n, modified_s));
        println!("server RSS: idle {} MiB, {n} pods {} MiB, after lists {} MiB, end {} MiB (history holds {} events)",
            rss_idle / 1024, rss_loaded / 1024, rss_after_lists / 1024, rss_end / 1024, 2 * n + 1);
        println!("store log: {:.1} MiB", log_bytes as f64 / 1048576.0);
        Ok::<(), Box<dyn std::error::Error>>(())
    });
    let _ = child.kill();
    let _ = child.wait();
    result
}

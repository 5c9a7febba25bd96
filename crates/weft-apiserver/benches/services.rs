//! Service creation rate as the number of Services grows (project issue 11).
//!
//!     cargo bench -p weft-apiserver --bench services
//!     WEFT_BENCH_SERVICES=30000 cargo bench -p weft-apiserver --bench services
//!
//! Starts the API server in this process (its controllers too, so the EndpointSlice
//! controller's work per Service is part of what is measured), then creates N Services
//! one after another over one kept-alive connection (one kube-rs client, one request in
//! flight), and prints the create rate of each block of 1,000. Every 20th Service is a
//! NodePort. A create costs the same at 30 Services and at 30k when the last block's
//! rate matches the first's.

use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use std::collections::HashSet;
use std::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn service(i: usize) -> Result<Service, serde_json::Error> {
    let node_port = i.is_multiple_of(20);
    serde_json::from_value(json!({
        "metadata": {"name": format!("svc-{i:05}"), "labels": {"bench": "services"}},
        "spec": {
            "type": if node_port { "NodePort" } else { "ClusterIP" },
            "selector": {"app": format!("app-{i}")},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]
        }
    }))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

async fn run(n: usize) -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let args: Vec<String> = vec![
        "--data-dir".into(),
        dir.path().display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--kubeconfig-out".into(),
        dir.path().join("kubeconfig").display().to_string(),
    ];
    let cfg = weft_apiserver::Config::from_args(&args)?;
    let server = weft_apiserver::start(cfg).await?;
    let kc = Kubeconfig::read_from(&server.kubeconfig)?;
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?,
    )?;
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "bench"}}))?,
        )
        .await?;
    let api: Api<Service> = Api::namespaced(client, "bench");

    let block = 1000.min((n / 2).max(1));
    println!("creating {n} Services, one request at a time; rate per block of {block}");
    println!("{:>12} {:>12} {:>14}", "services", "creates/s", "ms/create");
    let mut rates = Vec::new();
    let total = Instant::now();
    let mut t = Instant::now();
    for i in 0..n {
        api.create(&PostParams::default(), &service(i)?).await?;
        if (i + 1).is_multiple_of(block) {
            let secs = t.elapsed().as_secs_f64();
            let rate = block as f64 / secs;
            println!(
                "{:>12} {:>12.0} {:>14.3}",
                format!("{}-{}", i + 2 - block, i + 1),
                rate,
                1000.0 * secs / block as f64
            );
            rates.push(rate);
            t = Instant::now();
        }
    }
    let secs = total.elapsed().as_secs_f64();
    println!(
        "{n} Services in {secs:.1} s ({:.0}/s); median block {:.0}/s",
        n as f64 / secs,
        median(rates.clone())
    );
    if let (Some(first), Some(last)) = (rates.first(), rates.last()) {
        println!(
            "first block {first:.0}/s, last block {last:.0}/s: last/first = {:.2}",
            last / first
        );
    }

    // Sanity: every ClusterIP and NodePort handed out once.
    let list = api
        .list(&ListParams::default().labels("bench=services"))
        .await?;
    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    for s in &list.items {
        let spec = s.spec.as_ref().ok_or("a Service without spec")?;
        let ip = spec
            .cluster_ip
            .clone()
            .ok_or("a Service without a ClusterIP")?;
        if !ips.insert(ip.clone()) {
            return Err(format!("ClusterIP {ip} handed out twice").into());
        }
        for p in spec.ports.iter().flatten() {
            if let Some(np) = p.node_port {
                if !ports.insert(np) {
                    return Err(format!("NodePort {np} handed out twice").into());
                }
            }
        }
    }
    println!(
        "{} Services listed: {} distinct ClusterIPs, {} distinct NodePorts",
        list.items.len(),
        ips.len(),
        ports.len()
    );
    server.shutdown().await;
    Ok(())
}

fn main() -> Result<(), BoxError> {
    // `cargo bench` passes `--bench`; a number argument or the env var sets N.
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .or_else(|| {
            std::env::var("WEFT_BENCH_SERVICES")
                .ok()
                .and_then(|s| s.parse().ok())
        })
        .unwrap_or(10_000);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(n))
}

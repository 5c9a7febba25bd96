//! "Watches at this size arrive without stalling other clients": fresh clients list every
//! Service and EndpointSlice at once, as agents starting on new nodes do (pages of 500,
//! kube-rs' watcher default, each decoded into its k8s-openapi type), while another client
//! reads one small object back to back. That reader's latency with the lists running,
//! against the same reader alone just before, is the stall other clients see.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, Client};

/// Latencies of the small reads, sorted.
struct Reads(Vec<Duration>);

impl Reads {
    fn quantile(&self, q: f64) -> f64 {
        match self.0.len() {
            0 => f64::NAN,
            n => self.0[((n - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3,
        }
    }

    fn line(&self) -> String {
        format!(
            "{} reads, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.0.len(),
            self.quantile(0.5),
            self.quantile(0.99),
            self.quantile(1.0)
        )
    }
}

/// Reads namespace `default` back to back until `stop` says so (checked between reads).
async fn read_until(client: Client, stop: tokio::sync::watch::Receiver<bool>) -> Reads {
    let ns: Api<Namespace> = Api::all(client);
    let mut out = Vec::new();
    while !*stop.borrow() {
        let t = Instant::now();
        if ns.get("default").await.is_ok() {
            out.push(t.elapsed());
        }
    }
    out.sort();
    Reads(out)
}

/// Every object of a kind, in pages of 500: how many.
async fn list_all<K>(api: Api<K>) -> Result<usize, String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut lp = ListParams::default().limit(500);
    let mut n = 0;
    loop {
        let page = api.list(&lp).await.map_err(|e| format!("list: {e}"))?;
        n += page.items.len();
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp.continue_token = Some(c),
            None => return Ok(n),
        }
    }
}

/// One new agent's initial list: every Service and every EndpointSlice.
async fn initial_list(client: Client) -> Result<(usize, usize, Duration), String> {
    let t = Instant::now();
    let svcs = list_all(Api::<Service>::all(client.clone())).await?;
    let slices = list_all(Api::<EndpointSlice>::all(client)).await?;
    Ok((svcs, slices, t.elapsed()))
}

/// `listers` fresh clients list everything at once while one more reads a small object.
pub async fn measure(kubeconfig: &std::path::Path, listers: usize) -> Result<(), String> {
    let reader = crate::client(kubeconfig).await?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let alone = tokio::spawn(read_until(reader.clone(), rx));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = tx.send(true);
    let alone = alone.await.map_err(|e| format!("reader: {e}"))?;

    let mut clients = Vec::with_capacity(listers);
    for _ in 0..listers {
        clients.push(crate::client(kubeconfig).await?);
    }
    let (tx, rx) = tokio::sync::watch::channel(false);
    let during = tokio::spawn(read_until(reader, rx));
    let t = Instant::now();
    let lists = futures::future::join_all(clients.into_iter().map(initial_list)).await;
    let all = t.elapsed();
    let _ = tx.send(true);
    let during = during.await.map_err(|e| format!("reader: {e}"))?;
    for (i, l) in lists.into_iter().enumerate() {
        let (svcs, slices, took) = l?;
        println!(
            "  new client {i}: {svcs} Services and {slices} EndpointSlices listed in {:.2} s",
            took.as_secs_f64()
        );
    }
    println!(
        "== {listers} initial lists of every Service and EndpointSlice at once: {:.2} s; another client's small reads alone {} | during the lists {}; load {}",
        all.as_secs_f64(),
        alone.line(),
        during.line(),
        crate::lab::loadavg()
    );
    Ok(())
}

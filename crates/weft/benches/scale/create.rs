//! Creating objects through the API as a client would, timed per block of 1,000.

use std::time::{Duration, Instant};

use kube::api::PostParams;
use kube::Api;

pub const BLOCK: usize = 1000;

/// The rates of one creation run.
pub struct Rates {
    pub what: &'static str,
    /// Creates per second of each block of [`BLOCK`] (the last may be shorter).
    pub blocks: Vec<f64>,
    pub total: Duration,
    pub count: usize,
    /// When the last create was answered.
    pub last: Instant,
}

impl Rates {
    pub fn last_over_first(&self) -> f64 {
        match (self.blocks.first(), self.blocks.last()) {
            (Some(f), Some(l)) if *f > 0.0 => l / f,
            _ => 0.0,
        }
    }

    pub fn print(&self) {
        println!(
            "  {} {}: {:.1} s, {:.0}/s overall; last/first block {:.2}",
            self.count,
            self.what,
            self.total.as_secs_f64(),
            self.count as f64 / self.total.as_secs_f64(),
            self.last_over_first()
        );
        for (k, r) in self.blocks.iter().enumerate() {
            let end = ((k + 1) * BLOCK).min(self.count);
            println!("    {:>6}-{:<6} {:>7.0}/s", k * BLOCK + 1, end, r);
        }
    }
}

/// Creates `count` objects made by `make`, `inflight` requests at a time (in order of
/// index within each window), returning what the server answered for each.
pub async fn create<K>(
    api: &Api<K>,
    what: &'static str,
    count: usize,
    inflight: usize,
    make: impl Fn(usize) -> K,
) -> Result<(Vec<K>, Rates), String>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let pp = PostParams::default();
    let started = Instant::now();
    let mut block_start = started;
    let mut blocks = Vec::new();
    let mut out = Vec::with_capacity(count);
    let inflight = inflight.max(1);
    let mut i = 0;
    while i < count {
        let end = (i + inflight).min(count);
        let objs: Vec<K> = (i..end).map(&make).collect();
        let answers = futures::future::join_all(objs.iter().map(|o| api.create(&pp, o))).await;
        for (k, a) in answers.into_iter().enumerate() {
            out.push(a.map_err(|e| format!("create {what} #{}: {e}", i + k))?);
            if out.len() % BLOCK == 0 || out.len() == count {
                let n = out.len() - blocks.len() * BLOCK;
                let now = Instant::now();
                blocks.push(n as f64 / (now - block_start).as_secs_f64());
                block_start = now;
            }
        }
        i = end;
    }
    let last = Instant::now();
    Ok((
        out,
        Rates {
            what,
            blocks,
            total: last - started,
            count,
            last,
        },
    ))
}

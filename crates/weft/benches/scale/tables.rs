//! Reading each node's `ip weft-proxy` table from the kernel (netlink, as weft-nft reads
//! it): does it hold every Service with all its endpoints?

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use weft_nft::{Backend, Family, Value};

use crate::objects::GROUP;

const TABLE: &str = "weft-proxy";

/// What one read of a node's table found for the expected cluster IPs (port 80/TCP).
#[derive(Debug, Default, Clone)]
pub struct Found {
    /// Expected Services whose key is in the set of ten-endpoint keys.
    pub keyed: usize,
    /// Expected Services with all ten endpoints in the `backends` map (read only once
    /// every key is there: it is the big one).
    pub complete: usize,
    pub backends_elements: usize,
    /// How long this read of the kernel's sets took.
    pub read_time: Duration,
    /// When the read of the keys ended (all keys there: the time of completion, since a
    /// key and its endpoints are added in one transaction; the map read that follows only
    /// confirms it and is not counted).
    pub keys_read_at: Option<Instant>,
}

fn port80(key: &[Value]) -> Option<Ipv4Addr> {
    match key {
        [Value::Ipv4(ip), Value::Proto(6), Value::Port(80), ..] => Some(*ip),
        _ => None,
    }
}

/// One read of the node's table in namespace `netns`.
pub fn read(netns: &Path, want: &HashSet<Ipv4Addr>) -> Result<Found, String> {
    let started = Instant::now();
    let mut nft = Backend::open_in(netns).map_err(|e| format!("{}: {e}", netns.display()))?;
    let set = format!("endpoints-tcp-n{GROUP}");
    let keys = nft
        .read_set(Family::Ip, TABLE, &set)
        .map_err(|e| format!("read {set}: {e}"))?;
    let keyed = keys
        .map(|s| {
            s.elements
                .keys()
                .filter_map(|k| port80(&k.0))
                .filter(|ip| want.contains(ip))
                .count()
        })
        .unwrap_or(0);
    let mut found = Found {
        keyed,
        keys_read_at: Some(Instant::now()),
        ..Found::default()
    };
    if keyed < want.len() {
        found.read_time = started.elapsed();
        return Ok(found);
    }
    let Some(map) = nft
        .read_set(Family::Ip, TABLE, "backends")
        .map_err(|e| format!("read backends: {e}"))?
    else {
        found.read_time = started.elapsed();
        return Ok(found);
    };
    found.backends_elements = map.elements.len();
    let mut per_ip: HashMap<Ipv4Addr, usize> = HashMap::new();
    for k in map.elements.keys() {
        if let Some(ip) = port80(&k.0).filter(|ip| want.contains(ip)) {
            *per_ip.entry(ip).or_default() += 1;
        }
    }
    found.complete = per_ip.values().filter(|n| **n == GROUP).count();
    found.read_time = started.elapsed();
    Ok(found)
}

/// Polls every node until its table holds all of `want` with every endpoint; for each
/// node, when that was first seen (the end of the read of the keys that passed; None:
/// not within `limit`) and the last read.
pub fn wait_all(
    nodes: &[(String, PathBuf)],
    want: &HashSet<Ipv4Addr>,
    limit: Duration,
) -> Vec<(String, Option<Instant>, Found)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|(name, ns)| {
                s.spawn(move || {
                    let deadline = Instant::now() + limit;
                    let mut last = Found::default();
                    loop {
                        match read(ns, want) {
                            Ok(f) => {
                                let done = f.complete == want.len();
                                last = f;
                                if done {
                                    let at = last.keys_read_at.unwrap_or_else(Instant::now);
                                    return (name.clone(), Some(at), last);
                                }
                            }
                            Err(e) => eprintln!("  {name}: {e}"),
                        }
                        if Instant::now() > deadline {
                            return (name.clone(), None, last);
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| ("?".into(), None, Found::default()))
            })
            .collect()
    })
}

//! /proc: process trees and stopping them, CPU time, memory.

use std::fs;
use std::time::{Duration, Instant};

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if proc_stat(p).is_some_and(|s| s.ppid == pid) {
            out.push(p);
        }
    }
    out
}

pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

pub fn alive(pid: u32) -> bool {
    // A zombie (ours, not reaped yet) counts as gone.
    proc_stat(pid).is_some_and(|s| s.state != 'Z')
}

/// Waits up to 2 s for all of `pids` to be gone.
pub fn wait_gone(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops `pid` and its children: SIGTERM to `pid` (an nginx master then stops and reaps
/// its workers), up to 2 s, then SIGKILL to whatever of the tree is left.
pub fn stop_tree(pid: u32) {
    use nix::sys::signal::Signal;
    let mut all = children_of(pid);
    all.push(pid);
    signal(pid, Signal::SIGTERM);
    wait_gone(&all);
    for p in &all {
        if alive(*p) {
            signal(*p, Signal::SIGKILL);
        }
    }
}

struct ProcStat {
    state: char,
    ppid: u32,
    /// utime + stime, clock ticks.
    ticks: u64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        ticks: f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?,
    })
}

pub fn clk_tck() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64
}

/// A proxy's processes: weft's one, nginx's master and workers.
pub fn proxy_pids(pid: u32, nginx: bool) -> Vec<u32> {
    let mut v = vec![pid];
    if nginx {
        v.extend(children_of(pid));
    }
    v
}

pub fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| proc_stat(*p))
        .map(|s| s.ticks)
        .sum()
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Mem {
    pub rss_kib: u64,
    pub pss_kib: u64,
    pub hwm_kib: u64,
}

pub fn mem(pids: &[u32]) -> Mem {
    let field = |text: &str, key: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut m = Mem::default();
    for p in pids {
        let status = fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        let rollup = fs::read_to_string(format!("/proc/{p}/smaps_rollup")).unwrap_or_default();
        m.rss_kib += field(&status, "VmRSS:");
        m.hwm_kib += field(&status, "VmHWM:");
        m.pss_kib += field(&rollup, "Pss:");
    }
    m
}

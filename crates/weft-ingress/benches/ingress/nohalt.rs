//! Keeps the bench's CPUs from halting while it measures: one spinner per CPU at
//! `SCHED_IDLE`, which the kernel runs only when nothing else wants that CPU and preempts
//! as soon as a proxy, wrk or a backend wakes there; the same for both proxies.
//!
//! Why: on a VM whose guest idles by halting (this machine's cpuidle driver is `none`, so
//! an idle CPU executes HLT and leaves to the host), a packet for a proxy whose CPU has
//! halted waits for the host to run that virtual CPU again. The less busy proxy pays it
//! more often, so the tails measured the hypervisor: with a think time per connection
//! (TLS, a handshake per request, the same 2,400 req/s to each), weft's core was idle 58 %
//! of the time and its p99 was 2.4-3.1 ms against nginx's 2.1-2.6 (nginx's core idle
//! 30 %); with the cores kept from halting, 1.45-1.60 ms against 1.78-2.24. The spinners'
//! own CPU time is taken out of the "CPUs busy" figures.

use std::process::Child;

use crate::cleanup::{finish, register_pid, unblocked};

/// The running spinners: (CPU, pid), stopped when dropped.
pub struct Spinners {
    children: Vec<(usize, Child)>,
}

impl Spinners {
    /// One spinner on each of `cpus` ("0", "1", "0,1", "0-1").
    pub fn start(cpus: &[usize]) -> Spinners {
        let mut children = Vec::new();
        for &cpu in cpus {
            let child = unblocked("chrt")
                .args(["--idle", "0", "taskset", "-c", &cpu.to_string()])
                .args(["sh", "-c", "while :; do :; done"])
                .spawn()
                .unwrap_or_else(|e| panic!("spawning a spinner (chrt, util-linux): {e}"));
            register_pid(child.id());
            children.push((cpu, child));
        }
        Spinners { children }
    }

    /// The spinner's pid on `cpu`, if there is one.
    pub fn pid_on(&self, cpu: usize) -> Option<u32> {
        self.children
            .iter()
            .find(|(c, _)| *c == cpu)
            .map(|(_, ch)| ch.id())
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            finish(c);
        }
    }
}

/// The CPUs a taskset-style list names: "1", "0,1", "0-3", "0-1,3".
pub fn cpu_list(s: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bounds = match part.split_once('-') {
            Some((a, b)) => (a.parse::<usize>(), b.parse::<usize>()),
            None => (part.parse::<usize>(), part.parse::<usize>()),
        };
        match bounds {
            (Ok(a), Ok(b)) if a <= b => out.extend(a..=b),
            _ => panic!("not a CPU list: {s:?}"),
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

//! What the DNS tests share: `dig` run inside a pod and read back, and a fake upstream
//! resolver on the lab's external host that counts what reaches it.

#![allow(dead_code)]

use crate::lab_support::*;
use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One `dig` reply, as dig prints it.
#[derive(Debug, Default)]
pub struct Dig {
    pub status: String,
    pub flags: Vec<String>,
    /// `name ttl class type data` with single spaces.
    pub answers: Vec<String>,
    pub authority: Vec<String>,
    pub raw: String,
}

impl Dig {
    /// The data fields of the answers of type `ty` (the address of an A record, ...).
    pub fn data(&self, ty: &str) -> Vec<String> {
        self.answers
            .iter()
            .filter_map(|l| {
                let f: Vec<&str> = l.splitn(5, ' ').collect();
                (f.len() == 5 && f[3] == ty).then(|| f[4].to_string())
            })
            .collect()
    }

    pub fn has_soa(&self) -> bool {
        self.authority.iter().any(|l| l.contains(" SOA "))
    }
}

pub fn parse_dig(out: &str) -> Dig {
    let mut d = Dig {
        raw: out.to_string(),
        ..Default::default()
    };
    let mut section = "";
    for line in out.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            d.status = rest.split(',').next().unwrap_or_default().to_string();
        }
        if let Some(rest) = line.strip_prefix(";; flags: ") {
            d.flags = rest
                .split(';')
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect();
        }
        if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
            continue;
        }
        if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
            continue;
        }
        if line.trim().is_empty() || line.starts_with(';') {
            section = "";
            continue;
        }
        let norm = line.split_whitespace().collect::<Vec<_>>().join(" ");
        match section {
            "answer" => d.answers.push(norm),
            "authority" => d.authority.push(norm),
            _ => {}
        }
    }
    d
}

/// `dig ARGS` inside `pod` (its own resolv.conf, so 10.96.0.10 unless `@server` is given).
pub fn dig(lab: &Lab, pod: &str, args: &[&str]) -> Dig {
    let mut full = vec![pod, "--", "dig", "+time=2", "+tries=1"];
    full.extend_from_slice(args);
    let out = lab.lab("exec", &full);
    parse_dig(&text(&out))
}

/// `dig` from a namespace of the lab (the external host, say).
pub fn dig_in_netns(netns: &str, args: &[&str]) -> Dig {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", netns, "dig", "+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect("spawn dig");
    parse_dig(&text(&out))
}

/// A resolver for `example.org` on the lab's external host: `nx*` names do not exist
/// (NXDOMAIN with an SOA), AAAA has no data, every other name is 203.0.113.7 for 60 s.
/// It remembers every question it got.
pub struct Upstream {
    pub questions: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Upstream {
    pub fn start(netns: &str, addr: &str) -> Upstream {
        let ns = std::fs::File::open(format!("/run/netns/{netns}")).expect("open netns");
        let (tx, rx) = std::sync::mpsc::channel();
        let addr = addr.to_string();
        // The thread enters the external host's namespace; its socket lives there.
        std::thread::spawn(move || {
            let sock = nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| e.to_string())
                .and_then(|_| UdpSocket::bind(&addr).map_err(|e| e.to_string()));
            let _ = tx.send(sock);
        });
        let sock = rx
            .recv()
            .expect("upstream thread")
            .expect("bind the fake upstream");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let questions = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (q, s) = (questions.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if let Some((name, reply)) = answer(&buf[..n]) {
                    q.lock().unwrap_or_else(|e| e.into_inner()).push(name);
                    let _ = sock.send_to(&reply, peer);
                }
            }
        });
        Upstream { questions, stop }
    }

    pub fn asked(&self) -> Vec<String> {
        self.questions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The fake upstream's reply to one query, by hand: header, the question as asked, and
/// one record whose name points back at the question (0xC00C).
fn answer(q: &[u8]) -> Option<(String, Vec<u8>)> {
    if q.len() < 12 {
        return None;
    }
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let question_end = i + 4;
    let name = format!("{}/{qtype}", labels.join("."));
    let mut r = q.get(..question_end)?.to_vec();
    r[2] = 0x81; // QR, RD
    r[3] = 0x80; // RA
    r[6..12].copy_from_slice(&[0, 0, 0, 0, 0, 0]);
    let nx = labels.first().is_some_and(|l| l.starts_with("nx"));
    if nx || qtype != 1 {
        if nx {
            r[3] |= 3; // NXDOMAIN
        }
        r[9] = 1; // NSCOUNT
                  // SOA for the name itself (good enough for caching: minimum 60).
        r.extend_from_slice(&[0xC0, 0x0C, 0, 6, 0, 1, 0, 0, 0, 60]);
        let rdata: Vec<u8> = [
            &[2, b'n', b's', 0][..],
            &[4, b'r', b'o', b'o', b't', 0],
            &1u32.to_be_bytes(),
            &3600u32.to_be_bytes(),
            &600u32.to_be_bytes(),
            &86400u32.to_be_bytes(),
            &60u32.to_be_bytes(),
        ]
        .concat();
        r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        r.extend_from_slice(&rdata);
    } else {
        r[7] = 1; // ANCOUNT
        r.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 203, 0, 113, 7]);
    }
    Some((name, r))
}

/// A Service's cluster IP, from the API.
pub fn cluster_ip(lab: &Lab, ns: &str, name: &str) -> String {
    let out = lab.kubectl(&[
        "get",
        "svc",
        name,
        "-n",
        ns,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    assert!(out.status.success(), "get svc {ns}/{name}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

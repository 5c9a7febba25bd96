//! The truth-table cases as real probes: the world's nine pods live in their own network
//! namespaces behind one "node" namespace that routes between them (point-to-point veths,
//! /32 routes, as Calico does), the node's policy table is synced step after step, and
//! every pod opens TCP connections and sends UDP datagrams to every other pod on ports 80
//! and 81. What answers must be what the case's matrix says. (SCTP is left to the matcher
//! tests: its kernel module is often missing.)
//!
//! Every pod is placed on the one node here; the matrices do not depend on placement.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use weft_policy::cases::format_grid;
use weft_policy::desired::{desired, NodeContext};
use weft_policy::enforcer::Enforcer;
use weft_policy::Protocol;

const GATEWAY: &str = "169.254.1.1";
const TIMEOUT: Duration = Duration::from_millis(300);

struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("weft-t-polw-{tag}-{}", std::process::id());
        run(&["netns", "add", &name]);
        let ns = Netns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }

    fn ip(&self, args: &[&str]) {
        let mut a = vec!["-n", &self.0];
        a.extend_from_slice(args);
        run(&a);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `f` on a new thread inside the namespace at `path`.
fn spawn_in<T: Send + 'static>(
    path: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let file = File::open(path).expect("netns");
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

fn serve(path: &str) {
    for port in [80u16, 81] {
        let tcp = spawn_in(path, move || TcpListener::bind(("0.0.0.0", port)).unwrap())
            .join()
            .unwrap();
        std::thread::spawn(move || {
            for mut s in tcp.incoming().flatten() {
                let _ = s.read(&mut [0u8; 1]);
            }
        });
        let udp = spawn_in(path, move || UdpSocket::bind(("0.0.0.0", port)).unwrap())
            .join()
            .unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(&buf[..n], from);
            }
        });
    }
}

fn probe(path: &str, dst: Ipv4Addr, proto: Protocol, port: u16) -> std::thread::JoinHandle<bool> {
    spawn_in(path, move || match proto {
        Protocol::Tcp => {
            TcpStream::connect_timeout(&SocketAddr::from((dst, port)), TIMEOUT).is_ok()
        }
        _ => {
            let s = UdpSocket::bind(("0.0.0.0", 0)).unwrap();
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            // Two tries: the first datagram to a new neighbour can be lost to ARP.
            (0..2).any(|_| {
                s.send_to(b"hi", (dst, port)).is_ok() && s.recv_from(&mut [0u8; 8]).is_ok()
            })
        }
    })
}

#[test]
fn cases_hold_for_real_packets() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let world = common::world();
    let node = Netns::new("node");
    node.ip(&["addr", "add", &format!("{GATEWAY}/32"), "dev", "lo"]);
    let sysctl = Command::new("ip")
        .args([
            "netns",
            "exec",
            &node.0,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])
        .status()
        .unwrap();
    assert!(sysctl.success());
    let mut pods: BTreeMap<String, (Netns, Ipv4Addr)> = BTreeMap::new();
    for (i, p) in world.pods.iter().enumerate() {
        let std::net::IpAddr::V4(addr) = p.ip else {
            panic!("IPv4 world")
        };
        let ns = Netns::new(&format!("p{i}"));
        let host_if = format!("wp{i}");
        node.ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns.0,
        ]);
        node.ip(&["link", "set", &host_if, "up"]);
        node.ip(&["route", "add", &format!("{addr}/32"), "dev", &host_if]);
        ns.ip(&["addr", "add", &format!("{addr}/32"), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&["route", "add", GATEWAY, "dev", "eth0"]);
        ns.ip(&["route", "add", "default", "via", GATEWAY, "dev", "eth0"]);
        serve(&ns.path());
        pods.insert(p.pod.clone(), (ns, addr));
    }
    let names = world.pod_names();
    let paths: Arc<BTreeMap<String, (String, Ipv4Addr)>> = Arc::new(
        pods.iter()
            .map(|(k, (ns, a))| (k.clone(), (ns.path(), *a)))
            .collect(),
    );
    let mut enforcer = Enforcer::open_in(std::path::Path::new(&node.path())).unwrap();
    let mut conntrack = weft_nft::Backend::open_in(std::path::Path::new(&node.path())).unwrap();
    let ctx = NodeContext {
        node_name: "node-1".into(),
        log_group: None,
    };
    let mut failures = Vec::new();
    for (file, case) in common::cases(&world) {
        let mut cluster = world.cluster().unwrap();
        for (i, step) in case.steps.iter().enumerate() {
            step.apply_to(&mut cluster).unwrap();
            let mut placed = cluster.clone();
            for p in placed.pods.values_mut() {
                p.node = Some("node-1".into());
            }
            enforcer.sync(&desired(&placed, &ctx)).unwrap();
            // Flows of earlier steps stay established (policy changes do not cut them); a
            // probe reusing a source port would ride on one, so start each step clean.
            for f in conntrack.flows_v4().unwrap() {
                let _ = conntrack.delete_flow(&f.original);
            }
            let at = format!("{file} step {i}");
            // All ports at once: a denied probe costs a timeout, so wait for them together.
            let mut running = Vec::new();
            for (svc, want) in common::expectations(&world, step, &at) {
                if svc.protocol == Protocol::Sctp {
                    continue;
                }
                let mut handles = Vec::new();
                for s in &names {
                    for d in names.iter().filter(|d| *d != s) {
                        let (path, _) = &paths[s];
                        let (_, addr) = paths[d];
                        let h = probe(path, addr, svc.protocol, svc.port);
                        handles.push(((s.clone(), d.clone()), h));
                    }
                }
                running.push((svc, want, handles));
            }
            for (svc, want, handles) in running {
                let mut got = BTreeMap::new();
                for (pair, h) in handles {
                    got.insert(pair, h.join().unwrap());
                }
                for s in &names {
                    got.insert((s.clone(), s.clone()), true);
                }
                if got != want {
                    failures.push(format!(
                        "{at} on {svc}:\nwant\n{}got\n{}",
                        format_grid(&want, &names),
                        format_grid(&got, &names)
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

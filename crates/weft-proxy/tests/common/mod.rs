//! The world the traffic tests run in: a client outside the cluster, a node that runs
//! the proxy, and a pod with two addresses (two endpoints), each in its own namespace,
//! removed on drop (on panic too).
//!
//! ```text
//!  client 192.168.77.2 --- 192.168.77.1 node 10.244.1.1 --- 10.244.1.2, .3 pod
//! ```
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use weft_proxy::Proxier;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A namespace of this test's own, removed on drop (on panic too).
pub struct Netns(pub String);

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("weft-t-proxy-{tag}{n}-{}", std::process::id());
        sh("ip", &["netns", "add", &name]);
        let ns = Netns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.0))
    }

    pub fn ip(&self, args: &[&str]) {
        let mut a = vec!["netns", "exec", &self.0, "ip"];
        a.extend_from_slice(args);
        sh("ip", &a);
    }

    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = std::fs::File::open(self.path()).expect("open netns");
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("thread in namespace")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

pub fn sh(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct World {
    pub client: Netns,
    pub node: Netns,
    pub pod: Netns,
    stop: Arc<AtomicBool>,
}

pub const VIP: &str = "10.96.0.20";
pub const NODE_IP: &str = "192.168.77.1";
pub const EP1: &str = "10.244.1.2";
pub const EP2: &str = "10.244.1.3";

impl World {
    pub fn new(tag: &str) -> World {
        let (client, node, pod) = (
            Netns::new(&format!("{tag}c")),
            Netns::new(&format!("{tag}n")),
            Netns::new(&format!("{tag}p")),
        );
        for (from, ifname, peer, to) in [(&client, "c0", "n0", &node), (&pod, "p0", "n1", &node)] {
            from.ip(&[
                "link", "add", ifname, "type", "veth", "peer", "name", peer, "netns", &to.0,
            ]);
            from.ip(&["link", "set", ifname, "up"]);
            to.ip(&["link", "set", peer, "up"]);
        }
        client.ip(&["addr", "add", "192.168.77.2/24", "dev", "c0"]);
        client.ip(&["route", "add", "default", "via", NODE_IP]);
        node.ip(&["addr", "add", "192.168.77.1/24", "dev", "n0"]);
        node.ip(&["addr", "add", "10.244.1.1/24", "dev", "n1"]);
        // As on a real node: the service range is routed somewhere (here, the client).
        node.ip(&["route", "add", "default", "via", "192.168.77.2"]);
        sh(
            "ip",
            &[
                "netns",
                "exec",
                &node.0,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
        );
        pod.ip(&["addr", "add", &format!("{EP1}/24"), "dev", "p0"]);
        pod.ip(&["addr", "add", &format!("{EP2}/24"), "dev", "p0"]);
        pod.ip(&["route", "add", "default", "via", "10.244.1.1"]);
        let stop = Arc::new(AtomicBool::new(false));
        for ep in [EP1, EP2] {
            let addr: SocketAddr = format!("{ep}:8080").parse().unwrap();
            let l = pod.run_in(move || TcpListener::bind(addr).expect("bind"));
            l.set_nonblocking(true).unwrap();
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((mut s, peer)) => {
                            let _ = s.write_all(format!("{ep} {}", peer.ip()).as_bytes());
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            });
        }
        for ep in [EP1, EP2] {
            let addr: SocketAddr = format!("{ep}:8080").parse().unwrap();
            let u = pod.run_in(move || UdpSocket::bind(addr).expect("bind udp"));
            u.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((_, peer)) = u.recv_from(&mut buf) {
                        let _ = u.send_to(format!("{ep} {}", peer.ip()).as_bytes(), peer);
                    }
                }
            });
        }
        World {
            client,
            node,
            pod,
            stop,
        }
    }

    pub fn proxier(&self) -> Proxier {
        Proxier::open_in(&self.node.path()).expect("proxier")
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// (endpoint that answered, source address it saw), or the connect error.
pub fn fetch(ns: &Netns, to: &str, timeout: Duration) -> std::io::Result<(String, Ipv4Addr)> {
    let to: SocketAddr = to.parse().unwrap();
    ns.run_in(move || {
        let mut s = TcpStream::connect_timeout(&to, timeout)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        let (ep, peer) = buf.split_once(' ').expect("reply");
        Ok((ep.to_string(), peer.parse().expect("peer")))
    })
}

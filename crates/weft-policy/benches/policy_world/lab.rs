//! The bench's namespaces: a node namespace holding the table and two pod namespaces wired
//! to it by veth pairs, each removed on drop (on panic too).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::world::*;

// ---------------------------------------------------------------------------------------
// Namespaces, removed on drop.

pub struct Netns(String);

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("weft-b-pol-{tag}-{}", std::process::id());
        run("ip", &["netns", "add", &name]);
        let ns = Netns(name);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.0))
    }

    pub fn exec(&self, args: &[&str]) -> String {
        let mut a = vec!["netns", "exec", &self.0];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// Runs `f` on a new thread inside the namespace and waits for it.
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn_in(f).join().expect("netns thread")
    }

    pub fn spawn_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let file = std::fs::File::open(self.path()).expect("opening the netns");
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect("spawning");
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------------------
// One node namespace with a client and a server pod namespace.

pub struct Lab {
    pub node: Netns,
    client: Netns,
    _server: Netns,
}

pub const CLIENT: u32 = 0;
pub const SERVER: u32 = 1;

impl Lab {
    pub fn new(tag: &str) -> Lab {
        let node = Netns::new(&format!("{tag}-n"));
        let client = Netns::new(&format!("{tag}-c"));
        let server = Netns::new(&format!("{tag}-s"));
        for (pod, node_if, i) in [(&client, "vc", CLIENT), (&server, "vs", SERVER)] {
            let addr = pod_ip(i).to_string();
            node.exec(&[
                "ip", "link", "add", node_if, "type", "veth", "peer", "name", "eth0",
            ]);
            node.exec(&["ip", "link", "set", "eth0", "netns", &pod.0]);
            node.exec(&["ip", "addr", "add", "10.244.0.1/32", "dev", node_if]);
            node.exec(&["ip", "link", "set", node_if, "up"]);
            node.exec(&["ip", "route", "add", &format!("{addr}/32"), "dev", node_if]);
            pod.exec(&["ip", "addr", "add", &format!("{addr}/32"), "dev", "eth0"]);
            pod.exec(&["ip", "link", "set", "eth0", "up"]);
            pod.exec(&["ip", "route", "add", "10.244.0.1/32", "dev", "eth0"]);
            pod.exec(&["ip", "route", "add", "default", "via", "10.244.0.1"]);
        }
        node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let l = server.run_in(|| TcpListener::bind(("0.0.0.0", PORT)).expect("bind"));
        std::thread::spawn(move || {
            for s in l.incoming() {
                drop(s);
            }
        });
        Lab {
            node,
            client,
            _server: server,
        }
    }

    /// `n` connects (closed with RST, so no TIME_WAIT piles up): connections per second.
    pub fn rate(&self, n: u32) -> f64 {
        self.client.run_in(move || {
            let to = SocketAddr::from((pod_ip(SERVER), PORT));
            let t0 = Instant::now();
            for _ in 0..n {
                let s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).expect("connect");
                let rst = nix::libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                };
                nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Linger, &rst).unwrap();
            }
            f64::from(n) / t0.elapsed().as_secs_f64()
        })
    }

    pub fn connects(&self) -> bool {
        self.client.run_in(|| {
            TcpStream::connect_timeout(
                &SocketAddr::from((pod_ip(SERVER), PORT)),
                Duration::from_millis(300),
            )
            .is_ok()
        })
    }
}

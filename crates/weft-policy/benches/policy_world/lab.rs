//! The bench's namespaces: a node namespace holding the table and two pod namespaces wired
//! to it by veth pairs, each removed on drop (on panic too).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

pub use crate::netns::Netns;
use crate::world::*;

/// A bench namespace `weft-b-pol-<tag>-<pid>`, removed on drop.
fn bench_ns(tag: &str) -> Netns {
    Netns::with_prefix("weft-b-pol", tag)
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
        let node = bench_ns(&format!("{tag}-n"));
        let client = bench_ns(&format!("{tag}-c"));
        let server = bench_ns(&format!("{tag}-s"));
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

//! A small cluster in network namespaces, built with weft-netlink directly: an underlay
//! namespace with a bridge (the "LAN", 192.168.1.0/24), node namespaces with `eth0` on it,
//! IP forwarding and a `cbr0` bridge holding 10.244.K.1/24, and one pod per node on cbr0
//! (10.244.K.2). Everything is removed on drop, on failure too. Also independent checks
//! through iproute2's JSON output, TCP helpers, and a packet capture on the LAN.

#![allow(dead_code)] // each test binary uses a different subset

pub mod capture;

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use weft_netlink::{sysctl, Handle, Netns, Route};
use weft_routing::NodeInfo;

/// Bound for waits that must not hang a failing test; no assertion is made on elapsed time.
pub const WAIT: Duration = Duration::from_secs(10);

/// A named namespace `weft-t-rt-<test>-<pid>-<role>`, removed on drop.
pub struct TestNs {
    pub name: String,
    pub ns: Netns,
}

impl TestNs {
    pub fn new(test: &str, role: &str) -> TestNs {
        let name = format!("weft-t-rt-{test}-{}-{role}", std::process::id());
        // A namespace of ours left by a crashed run with the same pid would make create fail.
        Netns::delete_named(&name).expect("remove stale test namespace");
        let ns = Netns::create_named(&name).expect("create test namespace");
        TestNs { name, ns }
    }

    pub fn handle(&self) -> Handle {
        Handle::in_netns(&self.ns).expect("netlink socket in test namespace")
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        if let Err(e) = Netns::delete_named(&self.name) {
            eprintln!("cleanup of {}: {e}", self.name);
        }
    }
}

pub struct LabNode {
    pub ns: TestNs,
    pub pod: TestNs,
    pub info: NodeInfo,
}

impl LabNode {
    pub fn pod_ip(&self) -> IpAddr {
        pod_ip(self.k())
    }

    fn k(&self) -> u8 {
        self.info
            .name
            .trim_start_matches("node-")
            .parse()
            .expect("node-K")
    }
}

pub fn pod_ip(k: u8) -> IpAddr {
    IpAddr::from([10, 244, k, 2])
}

/// The underlay and its nodes. Fields drop in order: nodes (and their pods), then the LAN.
pub struct Lab {
    pub nodes: Vec<LabNode>,
    pub lan: TestNs,
}

fn up(h: &mut Handle, name: &str) -> u32 {
    let index = h.link_index(name).expect("link index");
    h.set_up(index).expect("set link up");
    index
}

impl Lab {
    pub fn new(test: &str, count: u8) -> Lab {
        let lan = TestNs::new(test, "lan");
        let mut lh = lan.handle();
        up(&mut lh, "lo");
        let br = lh.create_bridge("br0", None).expect("create LAN bridge");
        lh.set_up(br.index).expect("LAN bridge up");
        let mut nodes = Vec::new();
        for k in 1..=count {
            nodes.push(add_node(test, &mut lh, br.index, k));
        }
        Lab { nodes, lan }
    }

    pub fn infos(&self) -> Vec<NodeInfo> {
        self.nodes.iter().map(|n| n.info.clone()).collect()
    }
}

fn add_node(test: &str, lh: &mut Handle, br: u32, k: u8) -> LabNode {
    let node = TestNs::new(test, &format!("node-{k}"));
    let port = lh
        .create_veth(&format!("n{k}"), "eth0", &node.ns, None)
        .expect("create LAN veth");
    lh.set_master(port.index, br).expect("attach node to LAN");
    lh.set_up(port.index).expect("LAN port up");

    let mut h = node.handle();
    up(&mut h, "lo");
    let eth0 = h.link_index("eth0").expect("node eth0");
    let underlay: IpAddr = IpAddr::from([192, 168, 1, k + 1]);
    h.add_addr(eth0, format!("{underlay}/24").parse().unwrap())
        .expect("node address");
    h.set_up(eth0).expect("node eth0 up");
    node.ns
        .run_in(|| sysctl::set("net.ipv4.ip_forward", "1"))
        .expect("enter node")
        .expect("ip_forward");
    let cbr0 = h.create_bridge("cbr0", None).expect("create cbr0");
    h.add_addr(cbr0.index, format!("10.244.{k}.1/24").parse().unwrap())
        .expect("cbr0 address");
    h.set_up(cbr0.index).expect("cbr0 up");

    let pod = TestNs::new(test, &format!("pod-{k}"));
    let veth = h
        .create_veth(&format!("vp{k}"), "eth0", &pod.ns, None)
        .expect("create pod veth");
    h.set_master(veth.index, cbr0.index).expect("attach pod");
    h.set_up(veth.index).expect("pod veth up");
    let mut ph = pod.handle();
    up(&mut ph, "lo");
    let peth0 = ph.link_index("eth0").expect("pod eth0");
    ph.add_addr(peth0, format!("{}/24", pod_ip(k)).parse().unwrap())
        .expect("pod address");
    ph.set_up(peth0).expect("pod eth0 up");
    ph.add_route(&Route::new("0.0.0.0/0".parse().unwrap()).via(IpAddr::from([10, 244, k, 1])))
        .expect("pod default route");
    // Carrier on both veths before anything is sent, so no first packet is lost.
    h.wait_oper_up(eth0, WAIT).expect("node eth0 carrier");
    ph.wait_oper_up(peth0, WAIT).expect("pod eth0 carrier");

    LabNode {
        info: NodeInfo {
            name: format!("node-{k}"),
            underlay_ip: underlay,
            pod_cidr: Some(format!("10.244.{k}.0/24").parse().unwrap()),
            vtep_mac: None,
        },
        ns: node,
        pod,
    }
}

/// A listening socket inside `pod` (the socket stays in that namespace whatever thread
/// later accepts on it).
pub fn listen(pod: &TestNs, ip: IpAddr, port: u16) -> TcpListener {
    pod.ns
        .run_in(|| TcpListener::bind(SocketAddr::new(ip, port)))
        .expect("enter pod")
        .expect("bind listener")
}

/// Connect from inside `pod`.
pub fn connect(pod: &TestNs, ip: IpAddr, port: u16) -> io::Result<TcpStream> {
    pod.ns
        .run_in(|| TcpStream::connect_timeout(&SocketAddr::new(ip, port), WAIT))
        .expect("enter pod")
}

/// Connect from `client` to the server behind `listener`, exchange a line both ways on two
/// threads, and return the client address the server saw.
pub fn talk(client: &TestNs, listener: TcpListener, ip: IpAddr, port: u16) -> SocketAddr {
    let server = std::thread::spawn(move || -> io::Result<SocketAddr> {
        let (mut s, peer) = listener.accept()?;
        s.set_read_timeout(Some(WAIT))?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf)?;
        s.write_all(&buf)?;
        Ok(peer)
    });
    let mut c = connect(client, ip, port).expect("connect across nodes");
    c.set_read_timeout(Some(WAIT)).unwrap();
    c.write_all(b"hello").unwrap();
    let mut back = [0u8; 5];
    c.read_exact(&mut back).expect("echo from the server");
    assert_eq!(&back, b"hello");
    server
        .join()
        .expect("server thread")
        .expect("server side of the exchange")
}

/// `<tool> -j -n <ns> <args>` parsed as JSON (`tool` is "ip" or "bridge").
pub fn tool_json(tool: &str, ns: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(tool)
        .args(["-j", "-n", ns])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} -n {ns} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return serde_json::Value::Array(vec![]);
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{tool} JSON {text:?}: {e}"))
}

pub fn items(v: &serde_json::Value) -> Vec<serde_json::Value> {
    v.as_array().cloned().unwrap_or_default()
}

/// Routes into the cluster CIDR other than the node's own subnet, as `ip -j route` shows
/// them: (dst, gateway, dev, protocol, onlink).
pub fn pod_routes(ns: &str, own: &str) -> Vec<(String, String, String, String, bool)> {
    let mut out: Vec<_> = items(&tool_json("ip", ns, &["route", "show", "table", "main"]))
        .into_iter()
        .filter(|r| {
            let dst = r["dst"].as_str().unwrap_or("");
            dst.starts_with("10.244.") && dst != own
        })
        .map(|r| {
            let onlink = items(&r["flags"]).iter().any(|f| f == "onlink");
            (
                r["dst"].as_str().unwrap_or("").to_string(),
                r["gateway"].as_str().unwrap_or("").to_string(),
                r["dev"].as_str().unwrap_or("").to_string(),
                // iproute2 leaves out the protocol when it is "boot", its default.
                r["protocol"].as_str().unwrap_or("boot").to_string(),
                onlink,
            )
        })
        .collect();
    out.sort();
    out
}

/// Every neighbour on `dev`: (ip, lladdr, permanent).
pub fn neighbours(ns: &str, dev: &str) -> Vec<(String, String, bool)> {
    let mut out: Vec<_> = items(&tool_json("ip", ns, &["neigh", "show", "dev", dev]))
        .into_iter()
        .map(|n| {
            let permanent = items(&n["state"]).iter().any(|s| s == "PERMANENT");
            (
                n["dst"].as_str().unwrap_or("").to_string(),
                n["lladdr"].as_str().unwrap_or("").to_string(),
                permanent,
            )
        })
        .collect();
    out.sort();
    out
}

/// FDB entries of `dev` that point at a VTEP: (mac, dst). Panics on any other entry that is
/// not one of the device's own multicast addresses, so "nothing else" is checked too.
pub fn fdb_entries(ns: &str, dev: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in items(&tool_json("bridge", ns, &["fdb", "show", "dev", dev])) {
        let mac = e["mac"].as_str().unwrap_or("").to_string();
        match e["dst"].as_str() {
            Some(dst) => out.push((mac, dst.to_string())),
            None => {
                let first = u8::from_str_radix(mac.get(..2).unwrap_or("00"), 16).unwrap_or(0);
                assert!(first & 1 == 1, "unexpected fdb entry on {dev} in {ns}: {e}");
            }
        }
    }
    out.sort();
    out
}

//! ClusterNetworkPolicy `domainNames` in a lab: a pod resolves a name through weft's DNS
//! (forwarded to a resolver of the test's own on the lab's external host, whose answer
//! changes between questions), then connects. The answered address connects, an address
//! no answer named is refused, and after the answer changes the new address connects.

mod dns_support;
mod lab_support;

use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dns_support::dig;
use lab_support::*;

/// The addresses the resolver hands out in turn, on the external host.
const FIRST: &str = "192.168.1.250";
const SECOND: &str = "192.168.1.251";
/// Its answers' TTL: short, so weft's cache lets the next question through.
const TTL: u32 = 2;

/// A resolver answering every A question with the current address, TTL [`TTL`].
struct Changing {
    addr: Arc<Mutex<[u8; 4]>>,
    stop: Arc<AtomicBool>,
}

impl Changing {
    fn start(netns: &str, listen: &str, first: [u8; 4]) -> Changing {
        let ns = std::fs::File::open(format!("/run/netns/{netns}")).expect("open netns");
        let (tx, rx) = std::sync::mpsc::channel();
        let listen = listen.to_string();
        std::thread::spawn(move || {
            let sock = nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| e.to_string())
                .and_then(|_| UdpSocket::bind(&listen).map_err(|e| e.to_string()));
            let _ = tx.send(sock);
        });
        let sock = rx
            .recv()
            .expect("resolver thread")
            .expect("bind the resolver");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let addr = Arc::new(Mutex::new(first));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (addr.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let now = *a.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(reply) = answer(&buf[..n], now) {
                    let _ = sock.send_to(&reply, peer);
                }
            }
        });
        Changing { addr, stop }
    }

    fn set(&self, a: [u8; 4]) {
        *self.addr.lock().unwrap_or_else(|e| e.into_inner()) = a;
    }
}

impl Drop for Changing {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The reply to one question: the question as asked, and for type A one record (name
/// pointing back at the question) with `addr`; other types get no data.
fn answer(q: &[u8], addr: [u8; 4]) -> Option<Vec<u8>> {
    let mut i = 12;
    loop {
        let len = *q.get(i)? as usize;
        i += 1 + len;
        if len == 0 {
            break;
        }
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let mut r = q.get(..i + 4)?.to_vec();
    r[2] = 0x81;
    r[3] = 0x80;
    r[6..12].copy_from_slice(&[0; 6]);
    if qtype == 1 {
        r[7] = 1;
        r.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
        r.extend_from_slice(&TTL.to_be_bytes());
        r.extend_from_slice(&[0, 4]);
        r.extend_from_slice(&addr);
    }
    Some(r)
}

struct Bg(std::process::Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const POLICY: &str = r#"
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: fqdn-allowlist}
spec:
  tier: Admin
  priority: 10
  subject:
    pods:
      namespaceSelector: {}
      podSelector: {matchLabels: {app: client}}
  egress:
  - name: example
    action: Accept
    to: [{domainNames: ["*.example.org"]}]
    protocols: [{tcp: {destinationPort: {number: 9000}}}]
  - name: rest
    action: Deny
    to: [{networks: [0.0.0.0/0]}]
"#;

fn octets(a: &str) -> [u8; 4] {
    a.parse::<std::net::Ipv4Addr>().expect("address").octets()
}

fn connects(lab: &Lab, to: &str) -> (bool, String) {
    lab.exec_weft(
        "client",
        &[
            "probe",
            "tcp",
            &format!("{to}:9000"),
            "--timeout-ms",
            "1000",
        ],
    )
}

/// Polls `probe` until it gives `want` (policy and grants reach the node within a second).
fn settles(want: bool, mut probe: impl FnMut() -> (bool, String)) -> (bool, String) {
    let mut last = (!want, String::new());
    for _ in 0..10 {
        last = probe();
        if last.0 == want {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    last
}

#[test]
fn domain_names_allow_what_weft_dns_answered() {
    let lab = Lab::up_file(1, "host-gw", "dnsUpstreams: [\"192.168.1.254:53\"]\n");
    let external = format!("weft-{}-external", lab.name);
    let resolver = Changing::start(&external, "192.168.1.254:53", octets(FIRST));
    // Two more addresses on the external host, both serving tcp/9000.
    let dev = ip(&external, &["-o", "-4", "addr", "show"])
        .lines()
        .find(|l| l.contains("192.168.1.254/"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .expect("the external host's underlay link");
    for a in [FIRST, SECOND] {
        ip(&external, &["addr", "add", &format!("{a}/24"), "dev", &dev]);
    }
    let mut serve = std::process::Command::new("ip");
    serve
        .args(["netns", "exec", &external, weft(), "serve", "--tcp", "9000"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _server = Bg(serve
        .spawn()
        .expect("spawn weft serve on the external host"));
    lab.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: client, labels: {app: client}}\nspec:\n  nodeName: node-1\n  containers: [{name: app, image: weft/serve, ports: [{containerPort: 8080}]}]\n",
    );
    lab.wait_running(&["client"], Duration::from_secs(60));
    let (ok, out) = settles(true, || connects(&lab, FIRST));
    assert!(ok, "before any policy the external host answers: {out}");

    lab.apply(POLICY);
    for a in [FIRST, SECOND] {
        let (ok, out) = settles(false, || connects(&lab, a));
        assert!(!ok, "{a}: no answer named it yet, the Deny decides: {out}");
    }

    // The pod resolves the name through weft's DNS: the answered address connects, the
    // other does not.
    let d = dig(&lab, "client", &["www.example.org", "A"]);
    assert_eq!(d.data("A"), vec![FIRST.to_string()], "{}", d.raw);
    let (ok, out) = connects(&lab, FIRST);
    assert!(ok, "{FIRST} was answered: {out}");
    let (ok, out) = connects(&lab, SECOND);
    assert!(!ok, "{SECOND} was not answered: {out}");

    // The answer changes; once the cached one expired, the next question gets it.
    resolver.set(octets(SECOND));
    let d = wait_for(Duration::from_secs(10), || {
        let d = dig(&lab, "client", &["www.example.org", "A"]);
        (d.data("A") == vec![SECOND.to_string()]).then_some(d)
    })
    .expect("the changed answer reaches the pod");
    assert_eq!(d.data("A"), vec![SECOND.to_string()], "{}", d.raw);
    let (ok, out) = connects(&lab, SECOND);
    assert!(ok, "{SECOND} is answered now: {out}");
    // The first answer's TTL (2 s) has run out by now: its grant has too.
    let (ok, out) = settles(false, || connects(&lab, FIRST));
    assert!(!ok, "{FIRST}'s answer expired: {out}");

    // The agent counted the refusals against the Deny rule, without any flag.
    let out = lab
        .weft_cmd(&["lab", "policy", "counters", "--name", &lab.name])
        .output()
        .expect("spawn weft lab policy counters");
    let text = text(&out);
    assert!(
        text.contains("ClusterNetworkPolicy fqdn-allowlist egress egress[1] \"rest\""),
        "{text}"
    );
}

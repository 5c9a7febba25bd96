//! The bench's network namespace: making it (loopback up, a hosts file for the bench's
//! names, this thread inside it and pinned to the client CPUs) and spawning inside it.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::cleanup::{register_pid, unblocked};
use crate::settings::Cfg;
use crate::PROXY_IP;

/// Makes namespace `ns` (its loopback up, a hosts file naming the bench's hosts) and moves
/// this thread (and every thread it starts) into it, pinned to `client_cpus`. Its deletion
/// is `cleanup`'s, which must be armed first.
pub fn enter(ns: &str, client_cpus: &str) {
    let sh = |args: &[&str]| {
        let st = Command::new(args[0])
            .args(&args[1..])
            .status()
            .expect(args[0]);
        assert!(st.success(), "{args:?} failed");
    };
    sh(&["ip", "netns", "add", ns]);
    sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    // `ip netns exec` mounts /etc/netns/<ns>/hosts over /etc/hosts: wrk resolves the
    // bench's host names (and sends them as SNI) through it.
    let etc = Path::new("/etc/netns").join(ns);
    fs::create_dir_all(&etc).expect("/etc/netns");
    fs::write(
        etc.join("hosts"),
        format!("127.0.0.1 localhost\n{PROXY_IP} shop.bench blog.bench\n"),
    )
    .expect("hosts");
    // This thread (and every thread it starts) joins the namespace: the probes run here.
    let nsf = fs::File::open(Path::new("/run/netns").join(ns)).expect("netns file");
    nix::sched::setns(nsf, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
    let cpus: Vec<usize> = client_cpus
        .split(',')
        .filter_map(|c| c.parse().ok())
        .collect();
    let mut set = nix::sched::CpuSet::new();
    for c in &cpus {
        let _ = set.set(*c);
    }
    let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
}

/// What spawning inside the namespace needs.
pub struct Ctx {
    pub cfg: Cfg,
    pub ns: String,
    pub dir: PathBuf,
    pub exe: PathBuf,
    /// The spinners keeping the CPUs from halting (`nohalt`): (CPU, pid).
    pub spinners: Vec<(usize, u32)>,
}

impl Ctx {
    /// `ip netns exec <ns> taskset -c <cpus> <prog> <args>`: exec all the way down, so the
    /// child's pid is the program's.
    pub fn command(&self, cpus: &str, prog: &Path) -> Command {
        let mut c = unblocked("ip");
        c.args(["netns", "exec", &self.ns, "taskset", "-c", cpus])
            .arg(prog);
        c
    }

    pub fn log(&self, name: &str) -> fs::File {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(name))
            .expect("log file")
    }

    pub fn spawn(&self, mut c: Command, what: &str) -> Child {
        let child = c.spawn().unwrap_or_else(|e| panic!("spawning {what}: {e}"));
        register_pid(child.id());
        child
    }
}

pub fn wait_port(addr: &str, what: &str) {
    let a: SocketAddr = addr.parse().expect("addr");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} does not listen on {addr}");
}

/// TCP events of the bench's namespace that cost a request a retransmission timeout (a
/// SYN resent after 1 s), read from this thread's /proc view of the namespace: a latency
/// near 1 s is then these, not the proxy.
pub const TCP_EVENTS: [&str; 5] = [
    "TCPSynRetrans",
    "ListenOverflows",
    "ListenDrops",
    "PAWSPassive",
    "TCPTimeWaitOverflow",
];

pub fn tcp_events() -> [u64; 5] {
    let text = fs::read_to_string("/proc/thread-self/net/netstat").unwrap_or_default();
    let mut lines = text.lines();
    let mut out = [0; 5];
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Some(i) = TCP_EVENTS.iter().position(|e| *e == n) {
                out[i] = v.parse().unwrap_or(0);
            }
        }
    }
    out
}

/// The events between two readings, named, the zero ones left out.
pub fn tcp_events_since(before: [u64; 5]) -> String {
    let now = tcp_events();
    let s: Vec<String> = TCP_EVENTS
        .iter()
        .zip(now.iter().zip(before))
        .filter(|(_, (n, b))| **n > *b)
        .map(|(name, (n, b))| format!("{name} {}", n - b))
        .collect();
    if s.is_empty() {
        "no SYN retransmit".into()
    } else {
        s.join(", ")
    }
}

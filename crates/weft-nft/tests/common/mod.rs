//! Network namespaces for tests: created with `ip netns`, removed on drop, even on panic.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use weft_nft::Backend;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub struct Netns {
    pub name: String,
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawning a command");
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("weft-t-nft-{tag}{n}-{}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    pub fn backend(&self) -> Backend {
        Backend::open_in(&self.path()).expect("opening nf_tables in the test namespace")
    }

    pub fn exec(&self, args: &[&str]) -> Output {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        run(&mut c)
    }

    pub fn exec_status(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("spawning a command")
    }

    pub fn ip(&self, args: &[&str]) {
        let mut a = vec!["ip"];
        a.extend_from_slice(args);
        self.exec(&a);
    }

    /// `nft -j list ruleset` inside the namespace, parsed.
    pub fn nft_json(&self) -> serde_json::Value {
        let out = self.exec(&["nft", "-j", "list", "ruleset"]);
        serde_json::from_slice(&out.stdout).expect("nft -j output is JSON")
    }

    pub fn nft_text(&self) -> String {
        String::from_utf8_lossy(&self.exec(&["nft", "list", "ruleset"]).stdout).into_owned()
    }

    /// Runs `f` on a thread inside the namespace (sockets it opens stay there).
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = std::fs::File::open(self.path()).expect("opening netns");
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
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Two namespaces joined by a veth pair: `client` 10.77.0.1/24, `server` 10.77.0.2/24.
pub struct Pair {
    pub client: Netns,
    pub server: Netns,
}

impl Pair {
    pub fn new(tag: &str) -> Pair {
        let client = Netns::new(&format!("{tag}c"));
        let server = Netns::new(&format!("{tag}s"));
        client.ip(&[
            "link",
            "add",
            "veth0",
            "type",
            "veth",
            "peer",
            "name",
            "veth1",
            "netns",
            &server.name,
        ]);
        client.ip(&["addr", "add", "10.77.0.1/24", "dev", "veth0"]);
        client.ip(&["link", "set", "veth0", "up"]);
        server.ip(&["addr", "add", "10.77.0.2/24", "dev", "veth1"]);
        server.ip(&["link", "set", "veth1", "up"]);
        Pair { client, server }
    }
}

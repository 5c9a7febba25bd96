//! Network namespaces a test (or the bench, which includes this file) creates and removes
//! (never the host's).

#![allow(dead_code)] // the tests and the bench each use a part

use std::path::PathBuf;
use std::process::Command;

pub struct Netns(pub String);

impl Netns {
    pub fn new(tag: &str) -> Netns {
        Netns::with_prefix("weft-t-pol", tag)
    }

    /// `<prefix>-<tag>-<pid>`, so parallel runs never share one.
    pub fn with_prefix(prefix: &str, tag: &str) -> Netns {
        let name = format!("{prefix}-{tag}-{}", std::process::id());
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

//! The test world: network namespaces, `weft serve` processes and `weft probe` runs, each
//! cleaned up by a guard on success and on failure.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};

pub fn weft() -> &'static str {
    env!("CARGO_BIN_EXE_weft")
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A named network namespace with `lo` up, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("weft-t-probe-{tag}-{}", std::process::id());
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn ip(&self, args: &[&str]) -> String {
        run_ok(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    pub fn exec(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        run_ok(
            self.exec("sh")
                .arg("-c")
                .arg(format!("echo '{value}' > {path}")),
        );
    }

    /// Runs `f` on a thread that has joined this namespace (setns is per thread).
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file =
                    std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns {path}: {e}"));
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// `weft probe ARGS...` in this namespace: (exit code, stdout line, stderr).
    pub fn probe(&self, args: &[&str]) -> Probe {
        let out = self
            .exec(weft())
            .arg("probe")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run weft probe: {e}"));
        Probe {
            code: out.status.code().unwrap_or(-1),
            line: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `weft serve ARGS...` in this namespace, returned once it says every port is bound.
    pub fn serve(&self, args: &[&str]) -> Server {
        let mut child = self
            .exec(weft())
            .arg("serve")
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start weft serve: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let server = Server { child: Some(child) };
        let mut seen = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap_or_default();
            seen.push_str(&line);
            seen.push('\n');
            if line == "weft serve: ready" {
                return server;
            }
        }
        panic!("weft serve {args:?} ended before it was ready; it said:\n{seen}");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A running `weft serve`; killed on drop if the test did not stop it.
pub struct Server {
    pub child: Option<Child>,
}

impl Server {
    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server still running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill -TERM");
        child.wait().expect("wait for weft serve")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub struct Probe {
    pub code: i32,
    pub line: String,
    pub stderr: String,
}

impl Probe {
    pub fn verdict(&self) -> &str {
        self.line.split_whitespace().nth(2).unwrap_or("")
    }

    pub fn field(&self, key: &str) -> Option<&str> {
        self.line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    }

    pub fn expect(&self, code: i32, verdict: &str) -> &Self {
        assert_eq!(
            (self.code, self.verdict()),
            (code, verdict),
            "line {:?}, stderr {:?}",
            self.line,
            self.stderr
        );
        self
    }
}

/// Two namespaces joined by a veth pair, like two pods: client 10.20.0.1 and fd00:20::1,
/// server 10.20.0.2 and fd00:20::2, each with a second address (.3, ::3).
pub fn two_hosts(tag: &str) -> (Netns, Netns) {
    let client = Netns::new(&format!("{tag}-c"));
    let server = Netns::new(&format!("{tag}-s"));
    client.ip(&[
        "link",
        "add",
        "c0",
        "type",
        "veth",
        "peer",
        "name",
        "s0",
        "netns",
        &server.name,
    ]);
    client.ip(&["addr", "add", "10.20.0.1/24", "dev", "c0"]);
    client.ip(&["link", "set", "c0", "up"]);
    server.ip(&["addr", "add", "10.20.0.2/24", "dev", "s0"]);
    server.ip(&["addr", "add", "10.20.0.3/24", "dev", "s0"]);
    // nodad: usable at once instead of after duplicate address detection.
    client.ip(&["addr", "add", "fd00:20::1/64", "dev", "c0", "nodad"]);
    server.ip(&["addr", "add", "fd00:20::2/64", "dev", "s0", "nodad"]);
    server.ip(&["addr", "add", "fd00:20::3/64", "dev", "s0", "nodad"]);
    server.ip(&["link", "set", "s0", "up"]);
    (client, server)
}

//! A real container runtime drives `weft cni`: Podman (CNI backend, runc) starts busybox
//! containers on a network whose only plugin is weft, inside a "node" network namespace this
//! test creates, with every piece of Podman state in temporary directories.
//!
//! Isolation from the machine: Podman runs in the node's network namespace (so the bridge and
//! veths land there) and in a private mount namespace held by a sleeping process, with tmpfs
//! over `/run` (Podman's container namespaces in /run/netns, runc's state) and `/var/lib`
//! (libcni's result cache), so none of it reaches the machine even if the test is killed. `ip netns exec` is not used
//! because it remounts `/sys`, which hides the cgroup mounts runc needs. Containers live under
//! a cgroup parent of the test's own, removed at the end; Podman's locks are files in the
//! temporary directory (`lock_type = "file"`), not the machine's `/dev/shm/libpod_lock`.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const SUBNET_PREFIX: &str = "10.244.9.";
/// Two addresses only, so the third container proves that a release really frees one.
const RANGE: (&str, &str) = ("10.244.9.2", "10.244.9.3");
const MARKER: &str = "served-by-weft-podman-test";

/// Podman with its own config, storage, locks, cgroup parent and mount namespace, on a CNI
/// network `net` whose plugin is the weft binary under test.
struct Podman {
    _holder: Bg,
    holder_pid: u32,
    dir: PathBuf,
    net: String,
    cgroup_parent: String,
    // Dropped after Drop::drop: the namespace last (its guard kills what is left inside).
    _tmp: tempfile::TempDir,
    node: Netns,
}

impl Podman {
    fn new() -> Podman {
        for tool in ["podman", "runc", "conmon", "nsenter", "unshare"] {
            assert!(which(tool), "{tool} not found: run scripts/test-deps.sh");
        }
        let node = Netns::new("podman");
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let net = node.name.clone();
        for sub in ["plugins", "net", "root", "runroot", "tmp", "ipam"] {
            std::fs::create_dir_all(dir.join(sub)).expect("create podman dirs");
        }
        std::os::unix::fs::symlink(weft(), dir.join("plugins/weft")).expect("symlink weft plugin");
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0", "name": net,
            "plugins": [{
                "type": "weft", "bridge": "cbr0", "isGateway": true, "isDefaultGateway": true,
                "hairpinMode": true,
                "ipam": {"type": "weft", "subnet": format!("{SUBNET_PREFIX}0/24"),
                         "rangeStart": RANGE.0, "rangeEnd": RANGE.1,
                         "dataDir": dir.join("ipam")}
            }]
        });
        std::fs::write(
            dir.join(format!("net/{net}.conflist")),
            conflist.to_string(),
        )
        .expect("write conflist");
        let conf = format!(
            "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{d}/plugins\"]\n\
             network_config_dir = \"{d}/net\"\n\
             [engine]\ntmp_dir = \"{d}/tmp\"\nlock_type = \"file\"\nevents_logger = \"file\"\n\
             volume_path = \"{d}/root/volumes\"\n",
            d = dir.display()
        );
        std::fs::write(dir.join("containers.conf"), conf).expect("write containers.conf");
        make_rootfs(&dir.join("rootfs"));

        let mut holder = Command::new("nsenter");
        holder
            .arg(format!("--net={}", node.path().display()))
            .args(["unshare", "--mount", "--propagation", "private", "sh", "-c"])
            .arg("mount -n -t tmpfs weft-t /run && mount -n -t tmpfs weft-t /var/lib && echo ready && exec sleep infinity")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = holder.spawn().expect("spawn mount namespace holder");
        let holder_pid = child.id();
        let mut line = String::new();
        let stdout = child.stdout.take().expect("holder stdout");
        let holder = Bg(child);
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read holder");
        assert_eq!(
            line.trim(),
            "ready",
            "the mount namespace holder failed to set up"
        );
        Podman {
            _holder: holder,
            holder_pid,
            dir,
            cgroup_parent: format!("/{net}"),
            net,
            _tmp: tmp,
            node,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        let ns = format!("/proc/{}/ns", self.holder_pid);
        c.args([
            "120",
            "nsenter",
            &format!("--mount={ns}/mnt"),
            &format!("--net={ns}/net"),
            "podman",
        ])
        .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
        .arg("--root")
        .arg(self.dir.join("root"))
        .arg("--runroot")
        .arg(self.dir.join("runroot"))
        .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"])
        .args(args);
        c
    }

    fn output(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("spawn podman")
    }

    /// `podman ARGS`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&run_ok(&mut self.command(args)).stdout)
            .trim()
            .to_string()
    }

    /// `podman run` on the weft network with the test's rootfs; the raw output.
    fn run(&self, opts: &[&str], cmd: &[&str]) -> Output {
        let rootfs = self.dir.join("rootfs").display().to_string();
        let mut args = vec![
            "run",
            "--network",
            &self.net,
            "--cgroup-parent",
            &self.cgroup_parent,
        ];
        args.extend([
            "--ulimit",
            "nofile=20000:20000",
            "--ulimit",
            "nproc=4096:4096",
        ]);
        args.extend(opts);
        args.extend(["--rootfs", &rootfs]);
        args.extend(cmd);
        self.output(&args)
    }

    fn run_ok(&self, opts: &[&str], cmd: &[&str]) -> String {
        let out = self.run(opts, cmd);
        assert!(
            out.status.success(),
            "podman run {opts:?} {cmd:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The IPv4 address on eth0 as the container itself sees it.
    fn ip_inside(&self, container: &str) -> String {
        let out = self.ok(&["exec", container, "ip", "-4", "-o", "addr", "show", "eth0"]);
        inet_of(&out)
    }

    /// `(ip, containerId)` of every allocation in weft IPAM's state on disk for this network.
    fn allocations(&self) -> Vec<(String, String)> {
        let store = weft_cni::ipam::Store::open(&self.dir.join("ipam"), &self.net)
            .expect("open the IPAM store");
        let state = store.read().expect("read the IPAM state");
        let mut out: Vec<(String, String)> = state
            .allocations
            .into_iter()
            .map(|a| (a.ip.to_string(), a.container_id))
            .collect();
        out.sort();
        out
    }

    fn veths(&self) -> usize {
        self.node
            .links()
            .iter()
            .filter(|l| l.starts_with("veth"))
            .count()
    }

    /// The veth count once it reaches `n`, or what it is after 10 s: CNI DEL leaves the
    /// kernel's unregistration of the pair to finish in the background.
    fn veths_settled_at(&self, n: usize) -> usize {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let now = self.veths();
            if now == n || std::time::Instant::now() > deadline {
                return now;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.output(&["rm", "--force", "--all", "--time", "0"]);
        // Whatever survived (a hung runtime): kill it by cgroup, then remove the cgroups.
        for root in cgroup_dirs(&self.cgroup_parent) {
            kill_and_remove_cgroup(&root);
        }
    }
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A root filesystem of busybox alone: the static binary and a link per applet used.
fn make_rootfs(root: &Path) {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox not found: run scripts/test-deps.sh (busybox-static)");
    std::fs::create_dir_all(root.join("bin")).expect("rootfs/bin");
    std::fs::create_dir_all(root.join("www")).expect("rootfs/www");
    std::fs::copy(busybox, root.join("bin/busybox")).expect("copy busybox");
    for applet in ["sh", "ip", "wget", "ping", "httpd", "sleep", "cat", "true"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("applet link");
    }
    std::fs::write(root.join("www/index.html"), MARKER).expect("index.html");
}

/// The address in `ip -o addr` output: `2: eth0    inet 10.244.9.2/24 scope ...`.
fn inet_of(out: &str) -> String {
    let mut words = out.split_whitespace();
    words
        .find(|w| *w == "inet")
        .unwrap_or_else(|| panic!("no inet address in {out:?}"));
    let cidr = words
        .next()
        .unwrap_or_else(|| panic!("no address after inet in {out:?}"));
    cidr.split('/').next().unwrap_or(cidr).to_string()
}

/// `/sys/fs/cgroup/<parent>` (v2) and `/sys/fs/cgroup/<controller>/<parent>` (v1).
fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    let rel = parent.trim_start_matches('/');
    let mut dirs = vec![base.join(rel)];
    if let Ok(entries) = std::fs::read_dir(base) {
        dirs.extend(entries.flatten().map(|e| e.path().join(rel)));
    }
    dirs.into_iter().filter(|d| d.is_dir()).collect()
}

fn kill_and_remove_cgroup(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                kill_and_remove_cgroup(&e.path());
            }
        }
    }
    for _ in 0..50 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        if procs.trim().is_empty() {
            break;
        }
        for pid in procs.split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir(dir);
}

#[test]
fn podman_containers_get_weft_addresses_talk_and_release_them() {
    let p = Podman::new();
    let in_range = |ip: &str| ip == RANGE.0 || ip == RANGE.1;

    // A server container: its address comes from weft, as the container itself sees it.
    let srv_id = p.run_ok(
        &["-d", "--name", "srv"],
        &["httpd", "-f", "-p", "8080", "-h", "/www"],
    );
    let srv_ip = p.ip_inside("srv");
    assert!(
        in_range(&srv_ip),
        "srv has {srv_ip}, outside weft's range {RANGE:?}"
    );
    assert_eq!(
        p.allocations(),
        vec![(srv_ip.clone(), srv_id.clone())],
        "weft IPAM records srv's address"
    );
    // The wiring is in the node namespace: weft's bridge carries the gateway, one veth per pod.
    assert!(p
        .node
        .ip(&["-4", "-o", "addr", "show", "cbr0"])
        .contains(&format!("{SUBNET_PREFIX}1/24")));
    assert_eq!(p.veths(), 1);

    // A client container reaches the server over the bridge (HTTP and ICMP).
    let cli_id = p.run_ok(&["-d", "--name", "cli"], &["sleep", "600"]);
    let cli_ip = p.ip_inside("cli");
    assert!(
        in_range(&cli_ip) && cli_ip != srv_ip,
        "cli has {cli_ip}, srv {srv_ip}"
    );
    // httpd may still be starting when `run -d` returns: retry until it answers.
    let url = format!("http://{srv_ip}:8080/index.html");
    let fetch = || p.output(&["exec", "cli", "wget", "-q", "-O", "-", &url]);
    let mut page = fetch();
    for _ in 0..50 {
        if page.status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        page = fetch();
    }
    assert!(
        page.status.success(),
        "wget {url} from cli failed: {}",
        String::from_utf8_lossy(&page.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&page.stdout).trim(), MARKER);
    p.ok(&["exec", "cli", "ping", "-c", "1", "-W", "5", &srv_ip]);

    // The range is now exhausted: a third container cannot start, and leaves nothing behind.
    let third = p.run(&["--rm", "--name", "third"], &["true"]);
    let err = String::from_utf8_lossy(&third.stderr);
    assert!(
        !third.status.success() && err.contains("no free address"),
        "expected exhaustion: {err}"
    );
    assert_eq!(p.allocations().len(), 2);
    assert_eq!(p.veths(), 2);

    // Removing the client releases its address: gone from the state file and the node ...
    p.ok(&["rm", "--force", "--time", "0", "cli"]);
    let left = p.allocations();
    assert!(
        !left.iter().any(|(ip, id)| *ip == cli_ip || *id == cli_id),
        "cli still holds an address: {left:?}"
    );
    assert_eq!(left, vec![(srv_ip.clone(), srv_id)]);
    assert_eq!(p.veths_settled_at(1), 1);
    // ... and the next container takes exactly that address.
    let fourth = p.run_ok(
        &["--rm", "--name", "fourth"],
        &["ip", "-4", "-o", "addr", "show", "eth0"],
    );
    assert_eq!(inet_of(&fourth), cli_ip);
    // --rm released it again on exit.
    assert_eq!(p.allocations().len(), 1);
}

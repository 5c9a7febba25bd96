//! `up` builds the lab's network for real; `down` leaves nothing behind. Each test uses
//! its own lab name and state directory, so tests (and two labs) run side by side.

use std::net::{TcpListener, TcpStream};
use std::process::Command;
use weft_lab::{down, up, LabSpec};
use weft_netlink::Netns;

fn namespaces() -> Vec<String> {
    Netns::list_named().unwrap()
}

#[test]
fn two_labs_side_by_side_and_down_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("WEFT_STATE_DIR", dir.path());
    let pid = std::process::id() % 100_000;
    let (a, b) = (format!("t{pid}a"), format!("t{pid}b"));
    let mut quiet = |_: &str| {};
    let la = up(&LabSpec::new(&a, 3, "vxlan"), &mut quiet).unwrap();
    let lb = up(&LabSpec::new(&b, 2, "host-gw"), &mut quiet).unwrap();
    // A name in use is refused, and nothing of the running lab is touched.
    assert!(up(&LabSpec::new(&a, 1, "vxlan"), &mut quiet)
        .unwrap_err()
        .to_string()
        .contains("already exists"));

    // Nodes reach each other and the external host across the underlay, in both labs.
    let ns = |n: &str| Netns::from_name(n).unwrap();
    let ext = ns(&la.topology.external.netns);
    let listener = ext
        .run_in(|| TcpListener::bind("0.0.0.0:7000").unwrap())
        .unwrap();
    let node3 = ns(&la.topology.nodes[2].netns);
    let target = format!("{}:7000", la.topology.external.addr.addr());
    node3
        .run_in(|| TcpStream::connect(&target).unwrap())
        .unwrap();
    let (_, peer) = listener.accept().unwrap();
    assert_eq!(peer.ip().to_string(), "192.168.1.4");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lb.topology.nodes[0].netns,
            "sysctl",
            "-n",
            "net.ipv4.ip_forward",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");

    // Pod namespaces the agents make are removed with the lab.
    // A process left inside one (a pod's server) must not keep it alive.
    let pod = format!("{}.default.web", la.topology.nodes[0].netns);
    Netns::create_named(&pod).unwrap();
    let mut sleeper = Command::new("ip")
        .args(["netns", "exec", &pod, "sleep", "600"])
        .spawn()
        .unwrap();
    drop((listener, ext, node3));
    std::thread::sleep(std::time::Duration::from_millis(100));
    down(&a, &mut quiet).unwrap();
    down(&b, &mut quiet).unwrap();
    assert!(
        !sleeper.wait().unwrap().success(),
        "the pod's process was killed"
    );
    let left: Vec<String> = namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&format!("weft-{a}")) || n.starts_with(&format!("weft-{b}")))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(!dir.path().join("labs").join(&a).exists());
    assert!(down(&a, &mut quiet)
        .unwrap_err()
        .to_string()
        .contains("does not exist"));
}

//! The CNI plugin driven exactly as a container runtime drives it, inside namespaces
//! this test creates: a "host" namespace stands for the node, one namespace per pod.

mod common;

use common::*;
use std::process::Stdio;
use std::time::Duration;

fn wait_listening(ns: &Netns, port: u16) {
    for _ in 0..200 {
        let out = ns
            .cmd("ss")
            .args(["-Htln", &format!("sport = :{port}")])
            .output()
            .expect("ss");
        if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("nothing listens on {port} in {}", ns.name);
}

#[test]
fn two_pods_on_one_bridge_talk_without_nat() {
    let host = Netns::new("cni-pair");
    let (a, b) = (Netns::new("cni-pair-a"), Netns::new("cni-pair-b"));
    let dir = tempfile::tempdir().unwrap();
    let conf = bridge_config("1.1.0", "10.244.1.0/24", dir.path(), "");
    let ra = cni_op(&host, "ADD", "frontend", Some(&a.path()), "eth0", &conf);
    let rb = cni_op(&host, "ADD", "backend", Some(&b.path()), "eth0", &conf);
    let (ra, rb) = (ra.ok().clone(), rb.ok().clone());
    // The documents' scenario 1: frontend-pod 10.244.1.2, backend-pod 10.244.1.3.
    assert_eq!(result_ip(&ra), "10.244.1.2");
    assert_eq!(result_ip(&rb), "10.244.1.3");
    assert_eq!(ra["cniVersion"], "1.1.0");
    assert_eq!(ra["ips"][0]["gateway"], "10.244.1.1");
    assert_eq!(ra["interfaces"][2]["name"], "eth0");
    assert_eq!(
        ra["interfaces"][2]["sandbox"],
        a.path().display().to_string()
    );
    assert_eq!(ra["routes"][0]["dst"], "0.0.0.0/0");
    // hairpinMode: the host end lets a pod's packets come back to it through the bridge.
    let veth = ra["interfaces"][1]["name"].as_str().unwrap();
    assert!(host
        .ip(&["-d", "link", "show", veth])
        .contains("hairpin on"));

    let _server = Bg(b
        .cmd(weft())
        .args(["serve", "--tcp", "8080", "--udp", "8081"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap());
    wait_listening(&b, 8080);
    let out = run_ok(a.cmd(weft()).args(["probe", "tcp", "10.244.1.3:8080"]));
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.contains("client=10.244.1.2"),
        "the server must see the client's pod IP: {line}"
    );
    run_ok(a.cmd(weft()).args(["probe", "udp", "10.244.1.3:8081"]));
    // Pod -> gateway (the bridge), and the pod's default route points there.
    run_ok(a.cmd(weft()).args(["probe", "icmp", "10.244.1.1"]));
    assert!(a
        .ip(&["route", "show", "default"])
        .contains("via 10.244.1.1 dev eth0"));
    // Nothing answers on a closed port: a refusal, not a timeout.
    let refused = a
        .cmd(weft())
        .args(["probe", "tcp", "10.244.1.3:9"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
}

#[test]
fn del_is_idempotent_and_releases_even_without_netns() {
    let host = Netns::new("cni-del");
    let pod = Netns::new("cni-del-p");
    let dir = tempfile::tempdir().unwrap();
    let conf = bridge_config("1.0.0", "10.10.0.0/24", dir.path(), "");
    let r = cni_op(&host, "ADD", "c1", Some(&pod.path()), "eth0", &conf);
    let ip = result_ip(r.ok());
    let veth = r.json["interfaces"][1]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(host.has_link(&veth));
    cni_op(&host, "DEL", "c1", Some(&pod.path()), "eth0", &conf).ok();
    // The pod's interface is gone by name at once, and the host end is down (so the bridge
    // port is disabled) while the kernel finishes unregistering the pair in the background.
    assert!(!pod.has_link("eth0"));
    let links: serde_json::Value = serde_json::from_str(&host.ip(&["-j", "link", "show"])).unwrap();
    let still_up = links
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["ifname"] == veth.as_str() && l["operstate"] == "UP");
    assert!(!still_up, "host veth {veth} still up after DEL");
    cni_op(&host, "DEL", "c1", Some(&pod.path()), "eth0", &conf).ok();
    assert!(
        host.link_gone_within(&veth, Duration::from_secs(10)),
        "host veth left behind"
    );
    assert!(
        pod.links().iter().all(|l| l == "lo"),
        "pod links left behind: {:?}",
        pod.links()
    );

    // The released address can be requested again right away.
    let pod2 = Netns::new("cni-del-q");
    let again = cni(
        &host,
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c2"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", &pod2.path().display().to_string()),
            ("CNI_ARGS", &format!("IP={ip}")),
        ],
        &conf,
    );
    assert_eq!(result_ip(again.ok()), ip);

    // DEL after the runtime already deleted the namespace, and with no netns at all.
    let veth2 = again.json["interfaces"][1]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let path2 = pod2.path();
    drop(pod2);
    cni_op(&host, "DEL", "c2", Some(&path2), "eth0", &conf).ok();
    cni_op(&host, "DEL", "c2", None, "eth0", &conf).ok();
    assert!(host.link_gone_within(&veth2, Duration::from_secs(10)));
    let pod3 = Netns::new("cni-del-r");
    let third = cni(
        &host,
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c3"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", &pod3.path().display().to_string()),
            ("CNI_ARGS", &format!("IP={ip}")),
        ],
        &conf,
    );
    assert_eq!(
        result_ip(third.ok()),
        ip,
        "DEL without a netns must still release the address"
    );
}

#[test]
fn check_reports_what_is_missing() {
    let host = Netns::new("cni-check");
    let pod = Netns::new("cni-check-p");
    let dir = tempfile::tempdir().unwrap();
    let conf = bridge_config("1.0.0", "10.11.0.0/24", dir.path(), "");
    let r = cni_op(&host, "ADD", "c1", Some(&pod.path()), "eth0", &conf)
        .ok()
        .clone();
    let mut with_prev: serde_json::Value = serde_json::from_str(&conf).unwrap();
    with_prev["prevResult"] = r.clone();
    let with_prev = with_prev.to_string();
    cni_op(&host, "CHECK", "c1", Some(&pod.path()), "eth0", &with_prev).ok();

    pod.ip(&["route", "del", "default"]);
    let out = cni_op(&host, "CHECK", "c1", Some(&pod.path()), "eth0", &with_prev);
    assert_eq!(out.err_code(), 103);
    assert!(
        out.json["msg"]
            .as_str()
            .unwrap()
            .contains("route 0.0.0.0/0"),
        "{}",
        out.stdout
    );

    pod.ip(&["link", "del", "eth0"]);
    let out = cni_op(&host, "CHECK", "c1", Some(&pod.path()), "eth0", &with_prev);
    assert_eq!(out.err_code(), 103);
    assert!(
        out.json["msg"].as_str().unwrap().contains("eth0"),
        "{}",
        out.stdout
    );
    // CHECK does not exist before 0.4.0.
    let old = with_prev.replace("\"1.0.0\"", "\"0.3.1\"");
    assert_eq!(
        cni_op(&host, "CHECK", "c1", Some(&pod.path()), "eth0", &old).err_code(),
        1
    );
}

#[test]
fn failed_add_leaves_nothing_behind() {
    let host = Netns::new("cni-fail");
    let pod = Netns::new("cni-fail-p");
    let dir = tempfile::tempdir().unwrap();
    let conf = bridge_config(
        "1.1.0",
        "10.12.0.0/29",
        dir.path(),
        r#","rangeStart":"10.12.0.2","rangeEnd":"10.12.0.3""#,
    );
    // The interface already exists in the pod: refused before anything is made.
    pod.ip(&["link", "add", "eth0", "type", "bridge"]);
    assert_eq!(
        cni_op(&host, "ADD", "c1", Some(&pod.path()), "eth0", &conf).err_code(),
        102
    );
    // The bridge name is taken by a non-bridge: fails after IPAM allocated; must roll back.
    host.ip(&[
        "link", "add", "cbr0", "type", "veth", "peer", "name", "notbr",
    ]);
    let out = cni_op(&host, "ADD", "c1", Some(&pod.path()), "eth1", &conf);
    assert_eq!(out.err_code(), 7);
    assert!(
        out.json["msg"].as_str().unwrap().contains("bridge"),
        "{}",
        out.stdout
    );
    assert!(!pod.has_link("eth1"));
    assert_eq!(
        host.links()
            .iter()
            .filter(|l| l.starts_with("veth"))
            .count(),
        0
    );
    assert!(!host.links().iter().any(|l| l == "eth1"));
    host.ip(&["link", "del", "cbr0"]);
    // Both addresses are still free: two ADDs succeed, the third finds the range exhausted.
    let (p1, p2, p3) = (
        Netns::new("cni-fail-1"),
        Netns::new("cni-fail-2"),
        Netns::new("cni-fail-3"),
    );
    cni_op(&host, "ADD", "a", Some(&p1.path()), "eth0", &conf).ok();
    cni_op(&host, "ADD", "b", Some(&p2.path()), "eth0", &conf).ok();
    let out = cni_op(&host, "ADD", "c", Some(&p3.path()), "eth0", &conf);
    assert_eq!(out.err_code(), 100);
    assert!(
        out.json["msg"]
            .as_str()
            .unwrap()
            .contains("no free address"),
        "{}",
        out.stdout
    );
    assert!(!p3.has_link("eth0"));
}

#[test]
fn errors_use_the_spec_codes() {
    let host = Netns::new("cni-err");
    let pod = Netns::new("cni-err-p");
    let dir = tempfile::tempdir().unwrap();
    let good = bridge_config("1.1.0", "10.13.0.0/24", dir.path(), "");
    let p = pod.path();
    assert_eq!(
        cni_op(&host, "ADD", "c1", Some(&p), "eth0", "{oops").err_code(),
        6
    );
    let missing_netns = cni(
        &host,
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ],
        &good,
    );
    assert_eq!(missing_netns.err_code(), 4);
    assert!(missing_netns.stdout.contains("CNI_NETNS"));
    assert_eq!(
        cni_op(
            &host,
            "ADD",
            "c1",
            Some(&p),
            "eth0",
            &good.replace("1.1.0", "0.1.0")
        )
        .err_code(),
        1
    );
    let bad = cni_op(
        &host,
        "ADD",
        "c1",
        Some(&p),
        "eth0",
        &good.replace("10.13.0.0/24", "10.13.0.0/99"),
    );
    assert_eq!(bad.err_code(), 7);
    assert!(bad.stdout.contains("ipam.subnet"), "{}", bad.stdout);
    let unsupported = cni_op(
        &host,
        "ADD",
        "c1",
        Some(&p),
        "eth0",
        &good.replace("\"bridge\":", "\"vlan\":7,\"bridge\":"),
    );
    assert_eq!(unsupported.err_code(), 2);
    let gone = cni_op(
        &host,
        "ADD",
        "c1",
        Some(std::path::Path::new("/run/netns/weft-t-no-such")),
        "eth0",
        &good,
    );
    assert_eq!(gone.err_code(), 3);
    let status_old = cni(
        &host,
        &[("CNI_COMMAND", "STATUS")],
        &good.replace("1.1.0", "1.0.0"),
    );
    assert_eq!(status_old.err_code(), 1);
    // Nothing was made by any of these.
    assert!(!host.links().iter().any(|l| l == "cbr0"));
    let v = cni(
        &host,
        &[("CNI_COMMAND", "VERSION")],
        r#"{"cniVersion":"1.1.0"}"#,
    );
    assert_eq!(
        v.ok()["supportedVersions"],
        serde_json::json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
}

#[test]
fn dual_stack_pods_and_mtu() {
    let host = Netns::new("cni-ds");
    let (a, b) = (Netns::new("cni-ds-a"), Netns::new("cni-ds-b"));
    let dir = tempfile::tempdir().unwrap();
    let conf = format!(
        r#"{{"cniVersion":"1.1.0","name":"ds","type":"weft","bridge":"cbr0","isDefaultGateway":true,"mtu":1400,
            "ipam":{{"type":"weft","dataDir":"{}","ranges":[[{{"subnet":"10.16.0.0/24"}}],[{{"subnet":"fd00:16::/64"}}]]}}}}"#,
        dir.path().display()
    );
    let ra = cni_op(&host, "ADD", "a", Some(&a.path()), "eth0", &conf)
        .ok()
        .clone();
    cni_op(&host, "ADD", "b", Some(&b.path()), "eth0", &conf).ok();
    assert_eq!(ra["ips"][0]["address"], "10.16.0.2/24");
    assert_eq!(ra["ips"][1]["address"], "fd00:16::2/64");
    assert_eq!(ra["ips"][1]["gateway"], "fd00:16::1");
    assert_eq!(ra["interfaces"][2]["mtu"], 1400);
    assert!(a.ip(&["link", "show", "eth0"]).contains("mtu 1400"));
    assert!(a
        .ip(&["-6", "route", "show", "default"])
        .contains("via fd00:16::1"));
    // No DAD wait: the addresses work the moment ADD returns.
    let _server = Bg(b
        .cmd(weft())
        .args(["serve", "--tcp", "8080"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap());
    wait_listening(&b, 8080);
    let out = run_ok(a.cmd(weft()).args(["probe", "tcp", "[fd00:16::3]:8080"]));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("client=fd00:16::2"),
        "{:?}",
        out
    );
    run_ok(a.cmd(weft()).args(["probe", "icmp", "fd00:16::1"]));
    run_ok(a.cmd(weft()).args(["probe", "icmp", "10.16.0.3"]));
}

#[test]
fn ip_masq_rewrites_only_traffic_leaving_the_subnet() {
    let host = Netns::new("cni-masq");
    let outside = Netns::new("cni-masq-out");
    let (a, b) = (Netns::new("cni-masq-a"), Netns::new("cni-masq-b"));
    // The "outside world": a veth from the host namespace to another namespace.
    host.ip(&[
        "link",
        "add",
        "up0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &outside.name,
    ]);
    host.ip(&["addr", "add", "192.0.2.1/24", "dev", "up0"]);
    host.ip(&["link", "set", "up0", "up"]);
    outside.ip(&["addr", "add", "192.0.2.2/24", "dev", "eth0"]);
    outside.ip(&["link", "set", "eth0", "up"]);
    let dir = tempfile::tempdir().unwrap();
    let conf = bridge_config("1.1.0", "10.17.0.0/24", dir.path(), "")
        .replace("\"hairpinMode\"", "\"ipMasq\":true,\"hairpinMode\"");
    cni_op(&host, "ADD", "a", Some(&a.path()), "eth0", &conf).ok();
    cni_op(&host, "ADD", "b", Some(&b.path()), "eth0", &conf).ok();

    let _out = Bg(outside
        .cmd(weft())
        .args(["serve", "--tcp", "9000"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap());
    let _pod = Bg(b
        .cmd(weft())
        .args(["serve", "--tcp", "9000"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap());
    wait_listening(&outside, 9000);
    wait_listening(&b, 9000);
    let line = String::from_utf8_lossy(
        &run_ok(a.cmd(weft()).args(["probe", "tcp", "192.0.2.2:9000"])).stdout,
    )
    .into_owned();
    assert!(
        line.contains("client=192.0.2.1"),
        "leaving the subnet is masqueraded: {line}"
    );
    let line = String::from_utf8_lossy(
        &run_ok(a.cmd(weft()).args(["probe", "tcp", "10.17.0.3:9000"])).stdout,
    )
    .into_owned();
    assert!(
        line.contains("client=10.17.0.2"),
        "pod to pod is never NATed: {line}"
    );
    // Independently: the rule is in the host namespace's nf_tables, nowhere else.
    let rules = String::from_utf8_lossy(
        &run_ok(
            host.cmd("nft")
                .args(["list", "table", "inet", "weft-cni-testnet"]),
        )
        .stdout,
    )
    .into_owned();
    assert!(rules.contains("masquerade"), "{rules}");
}

/// Runtimes find the plugin by file name: a `weft-cni` link to the binary is the plugin
/// even without CNI_COMMAND's help, and answers in CNI JSON only.
#[test]
fn invoked_as_weft_cni_speaks_only_cni() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("weft-cni");
    std::os::unix::fs::symlink(weft(), &link).unwrap();
    let run = |cmd: Option<&str>| {
        let mut c = std::process::Command::new(&link);
        c.env_remove("CNI_COMMAND")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some(cmd) = cmd {
            c.env("CNI_COMMAND", cmd);
        }
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(br#"{"cniVersion":"1.0.0"}"#)
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
        )
    };
    let (code, v) = run(None);
    assert_eq!((code, v["code"].as_u64()), (Some(1), Some(4)), "{v}");
    let (code, v) = run(Some("VERSION"));
    assert_eq!(code, Some(0));
    assert_eq!(v["cniVersion"], "1.1.0");
}

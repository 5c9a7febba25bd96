//! weft IPAM driven through the plugin as a runtime drives it: STATUS, GC, parallel ADDs
//! from many processes, and delegation of other IPAM types through CNI_PATH.

mod common;

use common::*;

#[test]
fn status_follows_the_subnet_file() {
    let host = Netns::new("cni-status");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("subnet.env");
    let conf = format!(
        r#"{{"cniVersion":"1.1.0","name":"n","type":"weft","ipam":{{"type":"weft","subnetFile":"{}","dataDir":"{}"}}}}"#,
        file.display(),
        dir.path().display()
    );
    let out = cni(&host, &[("CNI_COMMAND", "STATUS")], &conf);
    assert_eq!(out.err_code(), 50);
    let pod = Netns::new("cni-status-p");
    assert_eq!(
        cni_op(&host, "ADD", "c1", Some(&pod.path()), "eth0", &conf).err_code(),
        11
    );
    std::fs::write(&file, "WEFT_SUBNET=10.244.7.0/24\n").unwrap();
    cni(&host, &[("CNI_COMMAND", "STATUS")], &conf).ok();
    let r = cni_op(&host, "ADD", "c1", Some(&pod.path()), "eth0", &conf);
    assert_eq!(result_ip(r.ok()), "10.244.7.2");
}

#[test]
fn gc_releases_everything_not_listed() {
    let host = Netns::new("cni-gc");
    let dir = tempfile::tempdir().unwrap();
    let conf = bridge_config("1.1.0", "10.14.0.0/24", dir.path(), "");
    let pods: Vec<Netns> = (0..3).map(|i| Netns::new(&format!("cni-gc-{i}"))).collect();
    let ips: Vec<String> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| {
            result_ip(
                cni_op(
                    &host,
                    "ADD",
                    &format!("c{i}"),
                    Some(&p.path()),
                    "eth0",
                    &conf,
                )
                .ok(),
            )
        })
        .collect();
    let extra = Netns::new("cni-gc-x");
    let want = |ip: &str| {
        cni(
            &host,
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "x"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_NETNS", &extra.path().display().to_string()),
                ("CNI_ARGS", &format!("IP={ip}")),
            ],
            &conf,
        )
    };
    assert_eq!(
        want(&ips[1]).err_code(),
        105,
        "address still held before GC"
    );

    let mut gc: serde_json::Value = serde_json::from_str(&conf).unwrap();
    gc["cni.dev/valid-attachments"] = serde_json::json!([{"containerID": "c0", "ifname": "eth0"}]);
    cni(
        &host,
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/nonexistent")],
        &gc.to_string(),
    )
    .ok();
    assert_eq!(result_ip(want(&ips[1]).ok()), ips[1]);
    // The attachment GC kept still holds its address.
    let pod0 = Netns::new("cni-gc-y");
    let again = cni(
        &host,
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "y"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", &pod0.path().display().to_string()),
            ("CNI_ARGS", &format!("IP={}", ips[0])),
        ],
        &conf,
    );
    assert_eq!(again.err_code(), 105);
}

#[test]
fn parallel_adds_from_many_processes_get_distinct_addresses() {
    let host = Netns::new("cni-par");
    let dir = tempfile::tempdir().unwrap();
    let conf = bridge_config("1.1.0", "10.15.0.0/24", dir.path(), "");
    let pods: Vec<Netns> = (0..200)
        .map(|i| Netns::new(&format!("cni-par-{i}")))
        .collect();
    let ips = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for w in 0..8 {
            let (pods, host, conf, ips) = (&pods, &host, &conf, &ips);
            s.spawn(move || {
                for (i, p) in pods.iter().enumerate().filter(|(i, _)| i % 8 == w) {
                    let r = cni_op(host, "ADD", &format!("c{i}"), Some(&p.path()), "eth0", conf);
                    ips.lock().unwrap().push(result_ip(r.ok()));
                }
            });
        }
    });
    let mut ips = ips.into_inner().unwrap();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 200, "every ADD got its own address");
    // No lost allocation: the state on disk holds all 200.
    let state = weft_cni::ipam::Store::open(dir.path(), "testnet")
        .and_then(|s| s.read())
        .unwrap();
    assert_eq!(state.allocations.len(), 200);
    // And the kernel agrees: each pod's eth0 carries an address of its own.
    let mut configured: Vec<String> = pods
        .iter()
        .map(|p| p.ip(&["-4", "-o", "addr", "show", "eth0"]))
        .collect();
    configured.sort();
    configured.dedup();
    assert_eq!(configured.len(), 200);
}

/// `ipam.type` other than weft is run from CNI_PATH, as the spec's delegation says: here the
/// reference host-local plugin (Debian's containernetworking-plugins).
#[test]
fn other_ipam_types_are_delegated_through_cni_path() {
    let reference = std::path::Path::new("/usr/lib/cni/host-local");
    assert!(
        reference.exists(),
        "host-local missing: run ./scripts/test-deps.sh"
    );
    let host = Netns::new("cni-deleg");
    let pod = Netns::new("cni-deleg-p");
    let dir = tempfile::tempdir().unwrap();
    let conf = format!(
        r#"{{"cniVersion":"1.0.0","name":"deleg","type":"weft","bridge":"cbr0","isDefaultGateway":true,
            "ipam":{{"type":"host-local","subnet":"10.18.0.0/24","dataDir":"{}"}}}}"#,
        dir.path().display()
    );
    let env = |op: &'static str| {
        vec![
            ("CNI_COMMAND", op.to_string()),
            ("CNI_CONTAINERID", "c1".to_string()),
            ("CNI_IFNAME", "eth0".to_string()),
            ("CNI_NETNS", pod.path().display().to_string()),
            ("CNI_PATH", "/usr/lib/cni".to_string()),
        ]
    };
    let run = |op: &'static str| {
        let e = env(op);
        let pairs: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
        cni(&host, &pairs, &conf)
    };
    let r = run("ADD");
    assert_eq!(result_ip(r.ok()), "10.18.0.2");
    assert!(pod
        .ip(&["-4", "addr", "show", "eth0"])
        .contains("10.18.0.2/24"));
    // host-local's own record of the lease, and its release by DEL through weft.
    let lease = dir.path().join("deleg/10.18.0.2");
    assert!(lease.exists(), "host-local did not record the lease");
    run("DEL").ok();
    assert!(!lease.exists(), "DEL was not delegated");
    // A missing plugin is a clear error naming it.
    let missing = cni(
        &host,
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c2"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", &pod.path().display().to_string()),
            ("CNI_PATH", "/nonexistent"),
        ],
        &conf,
    );
    assert_eq!(missing.err_code(), 104);
    assert!(missing.stdout.contains("host-local"), "{}", missing.stdout);
}

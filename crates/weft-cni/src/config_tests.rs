use super::*;

fn parse(s: &str) -> Result<NetConf> {
    NetConf::parse(s.as_bytes())
}

#[test]
fn reference_bridge_config_parses() {
    let c = parse(
        r#"{"cniVersion":"1.0.0","name":"mynet","type":"weft","bridge":"cni0",
        "isGateway":true,"ipMasq":true,"hairpinMode":true,"mtu":1400,
        "ipam":{"type":"weft","subnet":"10.22.0.0/16","routes":[{"dst":"0.0.0.0/0"}]}}"#,
    )
    .unwrap();
    assert_eq!(c.bridge, "cni0");
    assert_eq!(c.mtu, Some(1400));
    assert!(c.is_gateway && c.hairpin_mode && c.ip_masq);
    match c.ipam {
        IpamConf::Weft(w) => assert_eq!(w.routes.len(), 1),
        other => panic!("{other:?}"),
    }
}

#[test]
fn errors_carry_codes_and_fields() {
    assert_eq!(parse("{not json").unwrap_err().code, 6);
    assert_eq!(
        parse(r#"{"cniVersion":"9.9.9","name":"n","type":"weft"}"#)
            .unwrap_err()
            .code,
        1
    );
    let e = parse(r#"{"cniVersion":"1.0.0","name":"n","type":"weft","ipam":{"type":"weft","subnet":"10.0.0.0/33"}}"#).unwrap_err();
    assert_eq!(e.code, 7);
    assert!(e.msg.contains("ipam.subnet"), "{e}");
    let e = parse(r#"{"cniVersion":"1.0.0","name":"n","type":"weft","mtu":"big"}"#).unwrap_err();
    assert!(e.msg.contains("`mtu`"), "{e}");
    let e = parse(r#"{"cniVersion":"1.0.0","name":"n","type":"weft","vlan":5}"#).unwrap_err();
    assert_eq!(e.code, 2);
    let e = parse(r#"{"cniVersion":"1.0.0","name":"../x","type":"weft"}"#).unwrap_err();
    assert!(e.msg.contains("`name`"), "{e}");
    let e = parse(r#"{"cniVersion":"1.0.0","name":"n","type":"weft","ipam":{"type":"weft","ranges":[[{"subnet":"10.0.0.0/24","rangeEnd":"10.0.1.9"}]]}}"#).unwrap_err();
    assert!(e.msg.contains("ipam.ranges[0][0].rangeEnd"), "{e}");
}

#[test]
fn delegates_other_ipam_and_reads_requested_ips() {
    let c = parse(
        r#"{"cniVersion":"1.1.0","name":"n","type":"weft","ipam":{"type":"host-local"},
        "runtimeConfig":{"ips":["10.0.0.7/24"]}}"#,
    )
    .unwrap();
    assert!(matches!(c.ipam, IpamConf::Delegate(ref t) if t == "host-local"));
    assert_eq!(c.requested_ips, vec!["10.0.0.7".parse::<IpAddr>().unwrap()]);
}

#[test]
fn subnet_file_forms() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("subnet.env");
    std::fs::write(
        &p,
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\n",
    )
    .unwrap();
    let sets = read_subnet_file(&p).unwrap();
    assert_eq!(sets[0][0].subnet.to_string(), "10.244.3.0/24");
    assert_eq!(sets[0][0].gateway.to_string(), "10.244.3.1");
    std::fs::write(&p, "10.244.4.0/24\n").unwrap();
    assert_eq!(
        read_subnet_file(&p).unwrap()[0][0].gateway.to_string(),
        "10.244.4.1"
    );
    assert_eq!(
        read_subnet_file(&d.path().join("none")).unwrap_err().code,
        11
    );
}

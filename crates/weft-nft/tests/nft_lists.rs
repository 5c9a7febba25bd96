//! `nft list ruleset` and `nft -j list ruleset` (the nftables 1.0.6 of Debian 12 and
//! later) read every set and map weft writes, with their elements: the shapes weft-proxy
//! and weft-policy declare (concatenations, intervals, maps with concatenated data,
//! verdict maps, a key ending in `numgen`, marks set from maps and a masked mark in a
//! concatenated key). The metadata nft keeps in a set's userdata
//! (key and data byte order, `typeof` expressions) is byte for byte what nft writes itself
//! for the same declaration, loaded with `nft -f` from weft's rendering.

mod common;
mod shapes;

use std::collections::BTreeMap;
use std::io::Write;

use common::Netns;
use shapes::ruleset;
use weft_nft::netlink::attr::{be32, string};
use weft_nft::netlink::batch::MSG_GETSET;
use weft_nft::netlink::NftSocket;
use weft_nft::*;

fn nft(ns: &Netns, args: &[&str]) -> String {
    let mut a = vec!["nft"];
    a.extend_from_slice(args);
    let out = ns.exec_status(&a);
    assert!(
        out.status.success(),
        "`nft {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn nft_lists_every_set_weft_writes_with_its_elements() {
    let ns = Netns::new("ls");
    let rs = ruleset();
    ns.backend().apply_full(&rs).expect("apply");

    let text = nft(&ns, &["list", "ruleset"]);
    for needle in [
        "typeof ip daddr . meta l4proto . th dport . numgen random mod 1 : ip daddr . tcp dport",
        "10.96.0.1 . tcp . 80 . 0 : 10.244.1.5 . 8080",
        "10.96.0.1 . tcp . 80 . 1 : 10.244.2.7 . 8080",
        "10.96.0.10 . udp . 53 . 0 : 10.244.1.9 . 53",
        "tcp . 30080 . 0 : 10.244.1.5 . 8080",
        "dnat ip to ip daddr . meta l4proto . tcp dport . numgen random mod 2 map @backends",
        "10.96.0.1 . tcp . 80 . 192.168.0.0/16",
        "10.244.1.5 . 10.244.1.5",
        "10.244.3.3 . 10.96.0.1 . tcp . 80",
        "10.244.1.5 : 0x00010000",
        "10.0.0.0/8 : 0x00000002",
        "fd00:10:244:1::5 : 0x00010000",
        "fd00::/112 : 0x00000002",
        ". tcp . 0-79 counter packets 0 bytes 0 : goto ingress-netpol",
        "meta mark & 0xffff0000 == @ingress-isolated",
        "0x00010000 counter packets 0 bytes 0",
        "meta mark & 0x00004000 == 0x00004000 meta mark set ip daddr map @ingress-subject4 \
         meta mark set meta mark | 0x00004000 ct mark set ip saddr map @ingress-peer4 \
         meta mark & 0xffff0000 . ct mark . meta l4proto . th dport vmap @ingress",
        "meta mark & 0x00004000 == 0x00000000 meta mark set ip6 daddr map @ingress-subject6 \
         ct mark set ip6 saddr map @ingress-peer6 \
         meta mark & 0xffff0000 . ct mark . meta l4proto . th dport vmap @ingress",
        "0 : accept, 1 : drop",
        "30080 : 10.244.1.5 . 8080",
        "10.96.0.1 : 10.244.1.5",
        "\"eth0\"",
        "0x00004000",
        "sctp",
        "10.0.0.0/8",
        "1.1.1.1 . 53",
        "ip daddr . numgen random mod 2 vmap { 10.96.0.1 . 0 : accept, 10.96.0.1 . 1 : drop }",
        "ip saddr . tcp dport { 10.0.0.1 . 22 } accept",
    ] {
        assert!(text.contains(needle), "nft list lacks `{needle}`:\n{text}");
    }

    // Table by table too, as the README tells users to look.
    for (fam, name) in [
        ("ip", "weft-proxy"),
        ("inet", "weft-policy"),
        ("ip", "weft-misc"),
    ] {
        nft(&ns, &["list", "table", fam, name]);
        nft(&ns, &["-j", "list", "table", fam, name]);
    }

    let json = nft(&ns, &["-j", "list", "ruleset"]);
    let j: serde_json::Value = serde_json::from_str(&json).expect("nft -j prints JSON");
    let objects = j["nftables"].as_array().expect("nftables array");
    for t in rs.tables.values() {
        for s in t.sets.values() {
            let kind = if s.is_map() { "map" } else { "set" };
            let js = objects
                .iter()
                .filter_map(|o| o.get(kind))
                .find(|js| js["table"] == t.name.as_str() && js["name"] == s.name.as_str())
                .unwrap_or_else(|| panic!("nft -j lacks {kind} {} of {}", s.name, t.name));
            let n = js
                .get("elem")
                .and_then(|e| e.as_array())
                .map_or(0, |a| a.len());
            assert_eq!(n, s.elements.len(), "elements of {}: {js}", s.name);
            if s.flags.counter {
                let counts = ns
                    .backend()
                    .read_counters(t.family, &t.name, &s.name)
                    .expect("read counters")
                    .expect("the set exists");
                let keys: Vec<&Key> = counts.keys().collect();
                assert_eq!(keys, s.elements.keys().collect::<Vec<_>>(), "{}", s.name);
                assert!(counts.values().all(|n| *n == 0), "{counts:?}");
            }
        }
    }
    // The adopted table is the one written: the counter flag is read back.
    let back = ns
        .backend()
        .read_table(Family::Inet, "weft-policy")
        .expect("read")
        .expect("the table exists");
    assert!(back.sets["ingress-isolated"].flags.counter);
    assert!(back.sets["ingress"].flags.counter);
    assert!(!back.sets["ingress-peer4"].flags.counter);
}

/// Each named set's NFTA_SET_USERDATA, keyed by family, table and set.
fn set_userdata(ns: &Netns) -> BTreeMap<(u8, String, String), Vec<u8>> {
    let mut sock = NftSocket::open_in(&ns.path()).expect("netlink socket");
    let mut out = BTreeMap::new();
    sock.dump(
        MSG_GETSET,
        libc::NFPROTO_UNSPEC as u8,
        |_| {},
        |fam, a| {
            let flags = a.get(3).and_then(be32).unwrap_or(0);
            if flags & 1 != 0 {
                return Ok(()); // anonymous: nft numbers them its own way
            }
            let table = a.get(1).and_then(string).unwrap_or_default();
            let name = a.get(2).and_then(string).unwrap_or_default();
            out.insert((fam, table, name), a.get(13).unwrap_or_default().to_vec());
            Ok(())
        },
    )
    .expect("dumping sets");
    out
}

/// libnftnl's userdata TLVs (`type len value`), for readable failures.
fn tlvs(b: &[u8]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 2 <= b.len() {
        let (t, l) = (b[i], b[i + 1] as usize);
        let v = &b[i + 2..(i + 2 + l).min(b.len())];
        out.push(format!(
            "{t}:{}",
            v.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ));
        i += 2 + l;
    }
    out.join(" ")
}

#[test]
fn set_metadata_is_what_nft_writes_for_the_same_declaration() {
    let rs = ruleset();
    let by_weft = Netns::new("udw");
    by_weft.backend().apply_full(&rs).expect("apply");
    let by_nft = Netns::new("udn");
    let text = render::ruleset(&rs);
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(text.as_bytes()).expect("write");
    let out = by_nft.exec_status(&["nft", "-f", &f.path().display().to_string()]);
    assert!(
        out.status.success(),
        "nft -f refused weft's rendering:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );

    let weft = set_userdata(&by_weft);
    let nft = set_userdata(&by_nft);
    assert_eq!(
        weft.keys().collect::<Vec<_>>(),
        nft.keys().collect::<Vec<_>>()
    );
    let diffs: Vec<String> = weft
        .iter()
        .filter(|(k, v)| nft.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "{} {}:\n  weft {}\n  nft  {}",
                k.1,
                k.2,
                tlvs(v),
                tlvs(&nft[k])
            )
        })
        .collect();
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

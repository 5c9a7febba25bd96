//! The rendering of a ruleset is accepted by `nft -c -f`.

mod common;

use common::{fixture, Netns};
use std::io::Write;

#[test]
fn rendering_is_accepted_by_nft_check() {
    let ns = Netns::new("rn");
    let text = weft_nft::render::ruleset(&fixture::ruleset());
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(text.as_bytes()).expect("write");
    let out = ns.exec_status(&["nft", "-c", "-f", &f.path().display().to_string()]);
    assert!(
        out.status.success(),
        "nft -c refused:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        text
    );
}

/// nft loads weft's rendering; weft reads it back and compares with its own lowering.
#[test]
fn nft_builds_from_the_rendering_what_weft_would_send() {
    let ns = Netns::new("rx");
    let rs = fixture::ruleset();
    let text = weft_nft::render::ruleset(&rs);
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(text.as_bytes()).expect("write");
    ns.exec(&["nft", "-f", &f.path().display().to_string()]);
    let mut be = ns.backend();
    for t in rs.tables.values() {
        let back = be
            .read_table(t.family, &t.name)
            .expect("read")
            .expect("table");
        let want = weft_nft::netlink::decode::kernel_view(t).expect("lower");
        let mut diffs = Vec::new();
        for (name, c) in &want.chains {
            let got = back.chains.get(name);
            for (i, r) in c.rules.iter().enumerate() {
                let g = got.and_then(|g| g.rules.get(i));
                if g != Some(r) {
                    diffs.push(format!(
                        "{}/{name}#{i}:\n  weft {:?}\n  nft  {:?}",
                        t.name,
                        r.exprs,
                        g.map(|g| &g.exprs)
                    ));
                }
            }
        }
        for (name, s) in &want.sets {
            if back.sets.get(name) != Some(s) {
                diffs.push(format!(
                    "set {name}:\n  weft {s:?}\n  nft  {:?}",
                    back.sets.get(name)
                ));
            }
        }
        assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    }
}

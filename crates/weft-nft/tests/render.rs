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

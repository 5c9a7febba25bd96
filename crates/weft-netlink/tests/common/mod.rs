//! Shared by the integration tests: namespaces that clean up after themselves, and
//! independent checks through iproute2's JSON output.

#![allow(dead_code)] // each test binary uses a different subset

use std::process::Command;

use weft_netlink::{Handle, Netns};

/// A named namespace `weft-t-nl-<test>-<pid>` made with the crate's own `create_named`,
/// removed on drop (on failure too), so parallel tests never share or leak one.
pub struct TestNs {
    pub name: String,
    pub ns: Netns,
}

impl TestNs {
    pub fn new(test: &str) -> TestNs {
        let name = format!("weft-t-nl-{test}-{}", std::process::id());
        // A namespace of ours left by a crashed run with the same pid would make create fail.
        Netns::delete_named(&name).expect("remove stale test namespace");
        let ns = Netns::create_named(&name).expect("create test namespace");
        TestNs { name, ns }
    }

    pub fn handle(&self) -> Handle {
        Handle::in_netns(&self.ns).expect("netlink socket in test namespace")
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        if let Err(e) = Netns::delete_named(&self.name) {
            eprintln!("cleanup of {}: {e}", self.name);
        }
    }
}

/// `<tool> -j -n <ns> <args>` parsed as JSON (`tool` is "ip" or "bridge").
pub fn tool_json(tool: &str, ns: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(tool)
        .args(["-j", "-n", ns])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} -n {ns} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return serde_json::Value::Array(vec![]);
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{tool} JSON {text:?}: {e}"))
}

pub fn ip_json(ns: &str, args: &[&str]) -> serde_json::Value {
    tool_json("ip", ns, args)
}

/// The elements of a JSON array (empty for anything else).
pub fn items(v: &serde_json::Value) -> Vec<serde_json::Value> {
    v.as_array().cloned().unwrap_or_default()
}

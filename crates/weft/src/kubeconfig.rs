//! `weft lab kubeconfig --merge`: the lab as a context (`weft-<lab>`) in the user's own
//! kubeconfig, so `kubectl --context weft-<lab>` works next to their other clusters;
//! `weft lab down` takes it out again. The merge is pure (YAML in, YAML out) and only
//! ever touches entries named `weft-<lab>`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_yaml::{Mapping, Value};

/// Where the lab records which file it was merged into, for `lab down`.
pub fn record_path(lab_dir: &Path) -> PathBuf {
    lab_dir.join("kubeconfig.merged-into")
}

/// The name the lab's cluster, user and context get in a merged kubeconfig.
pub fn context_name(lab: &str) -> String {
    format!("weft-{lab}")
}

fn list<'a>(doc: &'a mut Mapping, key: &str) -> &'a mut Vec<Value> {
    let slot = doc
        .entry(Value::from(key))
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if !slot.is_sequence() {
        *slot = Value::Sequence(Vec::new());
    }
    match slot {
        Value::Sequence(s) => s,
        _ => unreachable!("made a sequence just above"),
    }
}

fn named(v: &Value, name: &str) -> bool {
    v.get("name").and_then(Value::as_str) == Some(name)
}

/// `target` with the lab's cluster, user and context (from `lab`, a kubeconfig with one
/// of each) under `name`, replacing any earlier ones of that name. Everything else in
/// `target`, its current context included, is kept.
pub fn merge(target: &str, lab: &str, name: &str) -> Result<String> {
    let lab: Value = serde_yaml::from_str(lab).context("the lab's kubeconfig")?;
    let first = |key: &str| -> Result<Value> {
        lab.get(key)
            .and_then(|s| s.as_sequence())
            .and_then(|s| s.first())
            .and_then(|e| e.get(key.trim_end_matches('s')))
            .cloned()
            .with_context(|| format!("the lab's kubeconfig has no {key}"))
    };
    let (cluster, user, mut context) = (first("clusters")?, first("users")?, first("contexts")?);
    if let Value::Mapping(c) = &mut context {
        c.insert("cluster".into(), name.into());
        c.insert("user".into(), name.into());
    }
    let mut doc = parse_target(target)?;
    let doc_map = doc
        .as_mapping_mut()
        .context("kubeconfig is not a mapping")?;
    doc_map.entry("apiVersion".into()).or_insert("v1".into());
    doc_map.entry("kind".into()).or_insert("Config".into());
    for (key, inner, value) in [
        ("clusters", "cluster", cluster),
        ("users", "user", user),
        ("contexts", "context", context),
    ] {
        let entries = list(doc_map, key);
        entries.retain(|e| !named(e, name));
        let mut entry = Mapping::new();
        entry.insert("name".into(), name.into());
        entry.insert(inner.into(), value);
        entries.push(Value::Mapping(entry));
    }
    serde_yaml::to_string(&doc).context("write the merged kubeconfig")
}

/// `target` without the entries named `name`; a current context of that name is unset.
pub fn remove(target: &str, name: &str) -> Result<String> {
    let mut doc = parse_target(target)?;
    if let Some(m) = doc.as_mapping_mut() {
        for key in ["clusters", "users", "contexts"] {
            if let Some(Value::Sequence(s)) = m.get_mut(key) {
                s.retain(|e| !named(e, name));
            }
        }
        if m.get("current-context").and_then(Value::as_str) == Some(name) {
            m.insert("current-context".into(), "".into());
        }
    }
    serde_yaml::to_string(&doc).context("write the kubeconfig")
}

fn parse_target(target: &str) -> Result<Value> {
    if target.trim().is_empty() {
        return Ok(Value::Mapping(Mapping::new()));
    }
    let v: Value =
        serde_yaml::from_str(target).context("the kubeconfig to merge into is not YAML")?;
    if !v.is_mapping() {
        bail!("the kubeconfig to merge into is not a mapping");
    }
    Ok(v)
}

/// The user's kubeconfig: `--file`, else the first of $KUBECONFIG, else the invoking
/// user's `~/.kube/config` (sudo's caller's, not root's).
pub fn default_target() -> Result<PathBuf> {
    if let Some(first) = std::env::var_os("KUBECONFIG")
        .as_ref()
        .and_then(|v| std::env::split_paths(v).next())
        .filter(|p| !p.as_os_str().is_empty())
    {
        return Ok(first);
    }
    let owner = weft_lab::access::Owner::invoking();
    // SAFETY: getpwuid returns a pointer into static storage or null; read at once.
    let home = unsafe {
        let pw = libc::getpwuid(owner.uid);
        if pw.is_null() || (*pw).pw_dir.is_null() {
            None
        } else {
            Some(
                std::ffi::CStr::from_ptr((*pw).pw_dir)
                    .to_string_lossy()
                    .into_owned(),
            )
        }
    };
    let home = home
        .or_else(|| std::env::var("HOME").ok())
        .context("no home directory to find ~/.kube/config in; pass --file")?;
    Ok(Path::new(&home).join(".kube").join("config"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAB: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: weft\n  cluster: {server: 'https://127.0.0.1:1', certificate-authority-data: QQ==}\nusers:\n- name: weft-admin\n  user: {token: t}\ncontexts:\n- name: weft\n  context: {cluster: weft, user: weft-admin, namespace: default}\ncurrent-context: weft\n";
    const MINE: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster: {server: 'https://prod'}\nusers:\n- name: me\n  user: {token: x}\ncontexts:\n- name: prod\n  context: {cluster: prod, user: me}\ncurrent-context: prod\n";

    #[test]
    fn merge_adds_and_remove_takes_out_only_the_lab() {
        let merged = merge(MINE, LAB, "weft-lab1").unwrap();
        let v: Value = serde_yaml::from_str(&merged).unwrap();
        assert_eq!(v["current-context"], Value::from("prod"));
        assert_eq!(v["clusters"].as_sequence().unwrap().len(), 2);
        assert_eq!(
            v["contexts"][1]["context"]["user"],
            Value::from("weft-lab1")
        );
        assert_eq!(v["users"][1]["user"]["token"], Value::from("t"));
        // Merging again replaces, never duplicates.
        let again = merge(&merged, LAB, "weft-lab1").unwrap();
        assert_eq!(again, merged);
        let back: Value = serde_yaml::from_str(&remove(&merged, "weft-lab1").unwrap()).unwrap();
        let orig: Value = serde_yaml::from_str(MINE).unwrap();
        assert_eq!(back, orig);
    }

    #[test]
    fn merge_into_nothing() {
        let v: Value = serde_yaml::from_str(&merge("", LAB, "weft-x").unwrap()).unwrap();
        assert_eq!(v["kind"], Value::from("Config"));
        assert_eq!(v["contexts"][0]["name"], Value::from("weft-x"));
        assert!(merge("- a list", LAB, "weft-x").is_err());
    }
}

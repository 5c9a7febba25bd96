//! A local user who is not root gets nothing from a lab: no credential, no store, no way
//! past the API, no pod running their command. The lab is started as if through sudo by
//! uid 4242, whose kubeconfig it then is; uid 65534 (nobody) is the attacker. The state
//! root is opened to 0755 first, as /var/lib is, so the lab's own modes are what is tested.

mod lab_support;

use lab_support::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const OWNER: u32 = 4242;
const NOBODY: u32 = 65534;

fn as_user(uid: u32, prog: &str, args: &[&str]) -> Output {
    Command::new(prog)
        .args(args)
        .uid(uid)
        .gid(uid)
        .env("HOME", "/tmp")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {prog} as uid {uid}: {e}"))
}

/// Every path under `dir` (not following symlinks), with its metadata.
fn walk(dir: &Path, out: &mut Vec<(PathBuf, std::fs::Metadata)>) {
    for e in std::fs::read_dir(dir).expect("read lab dir").flatten() {
        let path = e.path();
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue; // removed while we looked (a temporary file)
        };
        let is_dir = md.is_dir();
        out.push((path.clone(), md));
        if is_dir {
            walk(&path, out);
        }
    }
}

/// The ones of `paths` that `uid` can open (`cat` for files, `ls` for directories).
fn readable_by(uid: u32, paths: &[&PathBuf], tool: &str) -> Vec<String> {
    if paths.is_empty() {
        return Vec::new();
    }
    let script = format!(r#"for p in "$@"; do {tool} "$p" >/dev/null 2>&1 && echo "$p"; done"#);
    let mut args = vec!["-c", script.as_str(), "sh"];
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    args.extend(names.iter().map(String::as_str));
    let out = as_user(uid, "sh", &args);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn api_server(kubeconfig: &Path) -> String {
    let text = std::fs::read_to_string(kubeconfig).expect("read kubeconfig as root");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .expect("a server line")
        .to_string()
}

#[test]
fn an_unprivileged_user_cannot_read_credentials_or_run_pods() {
    let uid = OWNER.to_string();
    let lab = Lab::up_env(1, "host-gw", &[("SUDO_UID", &uid), ("SUDO_GID", &uid)]);
    std::fs::set_permissions(lab.state.path(), std::fs::Permissions::from_mode(0o755))
        .expect("open the state root as /var/lib is");
    // A pod that writes state of its own, so the node's pod records exist too.
    lab.apply(&echo_pod("web", "node-1"));
    lab.wait_running(&["web"], Duration::from_secs(60));

    let dir = lab.dir();
    let kubeconfig = lab.kubeconfig();
    let mut entries = Vec::new();
    walk(&dir, &mut entries);

    // Modes and owners, as root sees them.
    let mut wrong = Vec::new();
    let dir_mode = std::fs::metadata(&dir).expect("stat lab dir").mode() & 0o777;
    if dir_mode != 0o711 {
        wrong.push(format!("{} is {dir_mode:o}, want 711", dir.display()));
    }
    for (path, md) in &entries {
        let mode = md.mode() & 0o777;
        if md.file_type().is_symlink() {
            continue;
        }
        if path == &kubeconfig {
            if md.uid() != OWNER || mode != 0o600 {
                wrong.push(format!(
                    "kubeconfig is uid {} mode {mode:o}, want uid {OWNER} mode 600",
                    md.uid()
                ));
            }
        } else if mode & 0o077 != 0 || md.uid() != 0 {
            wrong.push(format!(
                "{} is uid {} mode {mode:o}",
                path.display(),
                md.uid()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "lab files others may read:\n{}",
        wrong.join("\n")
    );
    let names: Vec<String> = entries
        .iter()
        .map(|(p, _)| p.display().to_string())
        .collect();
    for want in [
        "lab.json",
        "kubeconfig.internal",
        "control-plane/token",
        "control-plane/pki/ca.key",
    ] {
        assert!(
            names.iter().any(|n| n.ends_with(want)),
            "the walk should have seen {want}: {names:?}"
        );
    }
    assert!(
        names.iter().any(|n| n.contains("/nodes/node-1/")),
        "the walk should have seen the node's state: {names:?}"
    );

    // What the attacker and the owner can actually open.
    let files: Vec<&PathBuf> = entries
        .iter()
        .filter(|(_, md)| md.is_file())
        .map(|(p, _)| p)
        .collect();
    let mut dirs: Vec<&PathBuf> = entries
        .iter()
        .filter(|(_, md)| md.is_dir())
        .map(|(p, _)| p)
        .collect();
    dirs.push(&dir);
    let leaked = readable_by(NOBODY, &files, "cat");
    assert!(leaked.is_empty(), "nobody reads: {leaked:?}");
    let listed = readable_by(NOBODY, &dirs, "ls");
    assert!(listed.is_empty(), "nobody lists: {listed:?}");
    let owner_reads = readable_by(OWNER, &files, "cat");
    assert_eq!(
        owner_reads,
        vec![kubeconfig.display().to_string()],
        "the lab's owner reads its kubeconfig and nothing else"
    );

    // The owner drives the lab with it, as kubectl users do.
    let kc = kubeconfig.display().to_string();
    let cache = tempfile::tempdir().expect("cache dir");
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let cache_arg = format!("--cache-dir={}", cache.path().display());
    let got = as_user(
        OWNER,
        "kubectl",
        &["--kubeconfig", &kc, &cache_arg, "get", "pods", "-o", "name"],
    );
    assert!(
        got.status.success() && text(&got).contains("pod/web"),
        "the owner's kubectl: {}",
        text(&got)
    );

    // The attacker reaches the API on the machine's loopback, with no token or a guessed one, and
    // asks for a pod that runs a command as root.
    let server = api_server(&kubeconfig);
    let marker = lab.state.path().join("pwned");
    let cmd = format!("id > {}", marker.display());
    for token in [
        "",
        "--token=0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        let mut args = vec![
            "--server",
            server.as_str(),
            "--insecure-skip-tls-verify",
            cache_arg.as_str(),
            "run",
            "pwn",
            "--image=weft",
            "--restart=Never",
            "--command",
            "--",
            "sh",
            "-c",
            cmd.as_str(),
        ];
        if !token.is_empty() {
            args.insert(0, token);
        }
        let out = as_user(NOBODY, "kubectl", &args);
        assert!(
            !out.status.success(),
            "the API let nobody in: {}",
            text(&out)
        );
        let said = text(&out).to_lowercase();
        // Without a token, kubectl answers the server's 401 by asking for a user name.
        assert!(
            said.contains("unauthorized")
                || said.contains("credentials")
                || said.contains("please enter username"),
            "refused for the wrong reason: {said}"
        );
    }
    // The lab's own commands read its state: refused to nobody as well.
    let out = Command::new(weft())
        .env("WEFT_STATE_DIR", lab.state.path())
        .args(["lab", "get", "pods", "--name", &lab.name])
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::null())
        .output()
        .expect("spawn weft as nobody");
    assert!(
        !out.status.success(),
        "weft lab get as nobody: {}",
        text(&out)
    );
    assert!(
        text(&out).to_lowercase().contains("permission denied"),
        "weft lab get as nobody: {}",
        text(&out)
    );

    std::thread::sleep(Duration::from_secs(2));
    let pods = lab.kubectl(&["get", "pods", "-o", "name"]);
    assert!(pods.status.success(), "root's kubectl: {}", text(&pods));
    assert!(
        !text(&pods).contains("pwn"),
        "a pod was created: {}",
        text(&pods)
    );
    assert!(!marker.exists(), "the attacker's command ran");
}

//! Calling the CNI plugin exactly as a container runtime does: exec the plugin with the
//! CNI_* environment and the network config on stdin, read a result or an error object
//! from stdout.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use weft_netlink::Netns;

use crate::error::{Error, Result};

/// A plugin that has not answered by then is killed: a hung plugin must not hang the
/// agent (ADD of the weft plugin takes milliseconds).
pub const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Wait for `child` and collect its output, killing it after `timeout`.
fn wait_bounded(mut child: Child, timeout: Duration) -> std::io::Result<Output> {
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {timeout:?}, killed"),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

pub struct Cni {
    /// The weft binary: the plugin for `"type": "weft"` when CNI_PATH has no `weft`.
    pub weft_bin: PathBuf,
    /// CNI_PATH: where the plugin named by the config's `type` is looked up first, as a
    /// container runtime looks it up.
    pub bin_dir: PathBuf,
    /// The node's namespace, when the runtime itself runs elsewhere (tests): the plugin is
    /// entered into it before exec. None: the plugin runs where the runtime runs.
    pub host_netns: Option<Netns>,
}

/// Which pod a call is for; also sent in CNI_ARGS the way containerd and CRI-O do.
pub struct Attachment<'a> {
    pub uid: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub netns: Option<&'a Path>,
}

impl Cni {
    /// ADD: wire the pod's namespace; returns its addresses from the result's `ips`.
    pub fn add(&self, config: &[u8], a: &Attachment) -> Result<Vec<IpAddr>> {
        let result = self.call("ADD", config, a)?;
        let who = format!("{}/{}", a.namespace, a.name);
        let ips = result
            .get("ips")
            .and_then(Value::as_array)
            .ok_or_else(|| self.err("ADD", &who, "the result has no \"ips\" list"))?;
        let mut out = Vec::new();
        for ip in ips {
            let addr = ip
                .get("address")
                .and_then(Value::as_str)
                .and_then(|s| s.split('/').next())
                .and_then(|s| s.parse::<IpAddr>().ok())
                .ok_or_else(|| self.err("ADD", &who, &format!("bad entry in \"ips\": {ip}")))?;
            out.push(addr);
        }
        if out.is_empty() {
            return Err(self.err("ADD", &who, "the result gives the pod no address"));
        }
        Ok(out)
    }

    /// DEL: undo ADD. The spec makes it idempotent, also without a namespace.
    pub fn del(&self, config: &[u8], a: &Attachment) -> Result<()> {
        self.call("DEL", config, a).map(|_| ())
    }

    /// GC: the plugin releases everything not attached to one of `valid` (pod uids).
    pub fn gc(&self, config: &[u8], valid: &[&str]) -> Result<()> {
        let mut conf: Value = serde_json::from_slice(config).map_err(|e| Error::Cni {
            command: "GC".into(),
            pod: "-".into(),
            reason: format!("network config is not JSON: {e}"),
            code: None,
        })?;
        let list: Vec<Value> = valid
            .iter()
            .map(|uid| serde_json::json!({"containerID": uid, "ifname": "eth0"}))
            .collect();
        if let Some(obj) = conf.as_object_mut() {
            obj.insert("cni.dev/valid-attachments".into(), Value::Array(list));
        }
        let bytes = serde_json::to_vec(&conf).map_err(|e| Error::Cni {
            command: "GC".into(),
            pod: "-".into(),
            reason: e.to_string(),
            code: None,
        })?;
        let none = Attachment {
            uid: "",
            namespace: "",
            name: "",
            netns: None,
        };
        self.call("GC", &bytes, &none).map(|_| ())
    }

    /// The program for `config`: `<bin_dir>/<type>` when it exists (what libcni runs), else
    /// the weft binary for type `weft`. A type that is not a plain file name is refused.
    fn plugin(&self, command: &str, config: &[u8], who: &str) -> Result<PathBuf> {
        let kind = serde_json::from_slice::<Value>(config)
            .ok()
            .and_then(|c| c.get("type").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| "weft".into());
        let plain = !kind.is_empty()
            && !kind.starts_with('.')
            && kind
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !plain {
            return Err(self.err(
                command,
                who,
                &format!("the network config's \"type\" {kind:?} is not a plugin name"),
            ));
        }
        let installed = self.bin_dir.join(&kind);
        if installed.is_file() {
            return Ok(installed);
        }
        match kind.as_str() {
            "weft" => Ok(self.weft_bin.clone()),
            _ => Err(self.err(
                command,
                who,
                &format!(
                    "no plugin {kind:?} in CNI_PATH {} (install it there)",
                    self.bin_dir.display()
                ),
            )),
        }
    }

    fn err(&self, command: &str, pod: &str, reason: &str) -> Error {
        Error::Cni {
            command: command.into(),
            pod: pod.into(),
            reason: reason.into(),
            code: None,
        }
    }

    fn call(&self, command: &str, config: &[u8], a: &Attachment) -> Result<Value> {
        let who = format!("{}/{}", a.namespace, a.name);
        let plugin = self.plugin(command, config, &who)?;
        let mut cmd = Command::new(&plugin);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", &self.bin_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if !a.uid.is_empty() {
            cmd.env("CNI_CONTAINERID", a.uid)
                .env("CNI_IFNAME", "eth0")
                .env(
                    "CNI_ARGS",
                    format!(
                        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
                        a.namespace, a.name, a.uid, a.uid
                    ),
                );
        }
        if let Some(ns) = a.netns {
            cmd.env("CNI_NETNS", ns);
        }
        if let Some(host) = &self.host_netns {
            let fd = host.fd().as_raw_fd();
            // SAFETY: setns(2) is async-signal-safe and touches only the descriptor, which
            // `self` keeps open across the spawn.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().map_err(|e| {
            self.err(
                command,
                &who,
                &format!("cannot run plugin {}: {e}", plugin.display()),
            )
        })?;
        if let Some(mut stdin) = child.stdin.take() {
            // A plugin that exits without reading its config closes the pipe: its own
            // answer below says why, so a write error here is not the story.
            let _ = stdin.write_all(config);
        }
        let out = wait_bounded(child, PLUGIN_TIMEOUT)
            .map_err(|e| self.err(command, &who, &format!("plugin {}: {e}", plugin.display())))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let answer = stdout.trim();
        let parsed = serde_json::from_str::<Value>(answer);
        if out.status.success() {
            return match parsed {
                Ok(v) => Ok(v),
                // DEL, CHECK and GC print nothing when they succeed.
                Err(_) if answer.is_empty() && command != "ADD" => Ok(Value::Null),
                // Exit 0 with an answer nobody can read is no success: for ADD the pod
                // would get no (or a made-up) address, and what the plugin did is unknown.
                Err(e) => Err(self.err(
                    command,
                    &who,
                    &format!(
                        "plugin {} exited 0 but its output is not a CNI result ({e}): {}",
                        plugin.display(),
                        excerpt(answer)
                    ),
                )),
            };
        }
        let parsed = parsed.ok();
        let code = parsed
            .as_ref()
            .and_then(|v| v.get("code"))
            .and_then(Value::as_u64);
        let reason = match parsed {
            Some(v) if v.get("code").is_some() => format!(
                "plugin error {}: {}{}",
                v["code"],
                v.get("msg").and_then(Value::as_str).unwrap_or(""),
                v.get("details")
                    .and_then(Value::as_str)
                    .filter(|d| !d.is_empty())
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
            _ => format!(
                "plugin failed ({}): {}{}",
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        };
        Err(Error::Cni {
            command: command.into(),
            pod: who,
            reason,
            code,
        })
    }
}

/// A plugin's output as an error message shows it: quoted, at most 200 characters.
fn excerpt(out: &str) -> String {
    const MAX: usize = 200;
    match out.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}... ({} bytes)", &out[..cut], out.len()),
        None if out.is_empty() => "(no output)".into(),
        None => format!("{out:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spawn(script: &str) -> Child {
        Command::new("sh")
            .args(["-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    #[test]
    fn a_hung_plugin_is_killed() {
        let e = wait_bounded(spawn("sleep 100"), Duration::from_millis(50)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        let out = wait_bounded(spawn("echo out; echo err >&2; exit 7"), PLUGIN_TIMEOUT).unwrap();
        assert_eq!(out.status.code(), Some(7));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }

    fn plugin_answering(dir: &Path, answer: &str) -> Cni {
        let script = dir.join("weft");
        std::fs::write(&script, format!("#!/bin/sh\ncat >/dev/null\n{answer}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        Cni {
            weft_bin: PathBuf::from("/nonexistent/weft"),
            bin_dir: dir.to_path_buf(),
            host_netns: None,
        }
    }

    const CONF: &[u8] = br#"{"cniVersion":"1.1.0","name":"n","type":"weft"}"#;

    fn pod() -> Attachment<'static> {
        Attachment {
            uid: "u1",
            namespace: "default",
            name: "web",
            netns: None,
        }
    }

    #[test]
    fn a_success_that_cannot_be_read_is_an_error_naming_plugin_and_output() {
        let dir = tempfile::tempdir().unwrap();
        let cni = plugin_answering(dir.path(), "echo 'IP: 10.244.1.7 (trust me)'");
        let e = cni.add(CONF, &pod()).unwrap_err().to_string();
        let script = dir.path().join("weft").display().to_string();
        assert!(e.contains(&script) && e.contains("exited 0"), "{e}");
        assert!(e.contains("IP: 10.244.1.7 (trust me)"), "{e}");
        assert!(cni.del(CONF, &pod()).is_err(), "DEL with garbage");
        // Silence is a DEL's success, never an ADD's.
        let cni = plugin_answering(dir.path(), "true");
        cni.del(CONF, &pod()).unwrap();
        let e = cni.add(CONF, &pod()).unwrap_err().to_string();
        assert!(e.contains("(no output)"), "{e}");
        // A long answer is cut.
        let cni = plugin_answering(dir.path(), "head -c 5000 /dev/zero | tr '\\0' x");
        let e = cni.add(CONF, &pod()).unwrap_err().to_string();
        assert!(e.contains("(5000 bytes)") && e.len() < 600, "{e}");
    }

    #[test]
    fn the_plugin_is_found_by_type() {
        let dir = tempfile::tempdir().unwrap();
        let cni = plugin_answering(dir.path(), "true");
        let conf = br#"{"type":"../../bin/sh"}"#;
        let e = cni.del(conf, &pod()).unwrap_err().to_string();
        assert!(e.contains("not a plugin name"), "{e}");
        let e = cni
            .del(br#"{"type":"bridge"}"#, &pod())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no plugin \"bridge\""), "{e}");
        std::fs::remove_file(dir.path().join("weft")).unwrap();
        let e = cni.del(CONF, &pod()).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/weft"), "{e}");
    }
}

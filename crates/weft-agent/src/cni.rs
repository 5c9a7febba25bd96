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
    pub plugin: PathBuf,
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
        let mut cmd = Command::new(&self.plugin);
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
                &format!("cannot run plugin {}: {e}", self.plugin.display()),
            )
        })?;
        if let Some(mut stdin) = child.stdin.take() {
            // A plugin that exits without reading its config closes the pipe: its own
            // answer below says why, so a write error here is not the story.
            let _ = stdin.write_all(config);
        }
        let out = wait_bounded(child, PLUGIN_TIMEOUT).map_err(|e| {
            self.err(
                command,
                &who,
                &format!("plugin {}: {e}", self.plugin.display()),
            )
        })?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let parsed: Option<Value> = serde_json::from_str(stdout.trim()).ok();
        if out.status.success() {
            return Ok(parsed.unwrap_or(Value::Null));
        }
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
}

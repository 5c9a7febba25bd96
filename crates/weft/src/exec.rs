//! `weft lab exec POD -- CMD`: run a command as if inside the pod: its network namespace
//! and a private mount namespace where the pod's resolv.conf and hosts are in place.

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

/// Where the pod's agent keeps the pod's files (see weft-agent's record layout).
fn pod_dir(lab: &str, node: &str, uid: &str) -> PathBuf {
    weft_lab::lab_dir(lab)
        .join("nodes")
        .join(node)
        .join("pods")
        .join("pods")
        .join(uid)
}

pub fn run(lab: &str, namespace: &str, pod: &str, argv: &[String]) -> Result<u8> {
    let (mut cmd, netns) = command(lab, namespace, pod, argv)?;
    let status = cmd
        .status()
        .with_context(|| format!("run {:?} in pod {namespace}/{pod}", argv.first()))?;
    drop(netns);
    Ok(status.code().map(|c| c as u8).unwrap_or(128))
}

/// The command, ready to spawn, and the namespace handle it enters (keep it until spawned).
pub fn command(
    lab: &str,
    namespace: &str,
    pod: &str,
    argv: &[String],
) -> Result<(std::process::Command, OwnedFd)> {
    weft_lab::load(lab)?;
    let kc = crate::lab::kubeconfig_path(lab);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let p: Pod = rt.block_on(async {
        let client = crate::kube::client(&kc).await?;
        Api::<Pod>::namespaced(client, namespace)
            .get(pod)
            .await
            .with_context(|| format!("pod {namespace}/{pod}"))
    })?;
    let uid = p.metadata.uid.clone().unwrap_or_default();
    let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else {
        bail!("pod {namespace}/{pod} is not scheduled to a node yet");
    };
    let dir = pod_dir(lab, &node, &uid);
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("record.json"))
            .with_context(|| format!("pod {namespace}/{pod} is not running on {node} yet"))?,
    )?;
    let netns_name = record["netns_name"]
        .as_str()
        .context("record has no netns_name")?;
    let netns: OwnedFd = std::fs::File::open(weft_netlink::Netns::named_path(netns_name))
        .with_context(|| format!("open the pod's namespace {netns_name}"))?
        .into();
    let cstr = |p: PathBuf| CString::new(p.display().to_string()).context("path with NUL");
    let (resolv, hosts) = (cstr(dir.join("resolv.conf"))?, cstr(dir.join("hosts"))?);
    let (etc_resolv, etc_hosts) = (
        CString::new("/etc/resolv.conf")?,
        CString::new("/etc/hosts")?,
    );
    let root = CString::new("/")?;
    let (prog, args) = argv.split_first().context("no command given")?;
    let prog = if prog == "weft" {
        std::env::current_exe()?.display().to_string()
    } else {
        prog.clone()
    };
    let fd = netns.as_raw_fd();
    let mut cmd = std::process::Command::new(&prog);
    cmd.args(args)
        .env("POD_NAME", pod)
        .env("POD_NAMESPACE", namespace);
    // SAFETY: between fork and exec only async-signal-safe syscalls run (setns, unshare,
    // mount) on data prepared above.
    unsafe {
        cmd.pre_exec(move || {
            let check = |r: libc::c_int| {
                if r == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            check(libc::setns(fd, libc::CLONE_NEWNET))?;
            check(libc::unshare(libc::CLONE_NEWNS))?;
            // Nothing mounted here may propagate back to the machine.
            check(libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            ))?;
            for (src, dst) in [(&resolv, &etc_resolv), (&hosts, &etc_hosts)] {
                // A pod without the file (no cluster DNS) keeps the machine's.
                let _ = libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                );
            }
            Ok(())
        });
    }
    Ok((cmd, netns))
}

//! Building the command for a process that runs inside a pod: its program, environment,
//! namespaces and files. Used for containers, probes and exec, and, from the records alone,
//! by processes other than the agent (`weft lab exec`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use weft_netlink::Netns;

use crate::error::{Error, Result};
use crate::process::{self, Isolation};
use crate::record::{self, Phase, PodDir};
use crate::spec::{self, EnvSource, PodPlan};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub(crate) struct Launcher {
    pub node_name: String,
    pub weft_bin: PathBuf,
    /// PATH of pod processes: `<state_dir>/bin` (with `weft`) first, then the caller's.
    pub path_var: String,
}

impl Launcher {
    pub fn new(state_dir: &Path, node_name: &str, weft_bin: &Path) -> Launcher {
        let caller = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_string());
        Launcher {
            node_name: node_name.to_string(),
            weft_bin: weft_bin.to_path_buf(),
            path_var: format!("{}:{caller}", state_dir.join("bin").display()),
        }
    }

    /// `weft` is the runtime's weft binary; other names are looked up on the pod's PATH.
    pub fn program(&self, name: &str) -> Option<PathBuf> {
        if name == "weft" {
            return Some(self.weft_bin.clone());
        }
        process::resolve_program(name, &self.path_var)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn command(
        &self,
        plan: &PodPlan,
        dir: &PodDir,
        netns: &Netns,
        ips: &[IpAddr],
        argv: &[String],
        env: &[(String, EnvSource)],
        new_session: bool,
    ) -> Result<Command> {
        let who = format!("{}/{}", plan.namespace, plan.name);
        let program = argv.first().and_then(|a| self.program(a)).ok_or_else(|| {
            Error::invalid_pod(
                &who,
                "command",
                format!(
                    "{:?} not found on PATH ({})",
                    argv.first().map(String::as_str).unwrap_or(""),
                    self.path_var
                ),
            )
        })?;
        let mut cmd = Command::new(program);
        cmd.args(&argv[1..]).env_clear();
        let first_ip = ips.first().map(|ip| ip.to_string()).unwrap_or_default();
        let all_ips = ips
            .iter()
            .map(|ip| ip.to_string())
            .collect::<Vec<_>>()
            .join(",");
        cmd.env("PATH", &self.path_var)
            .env("HOME", "/root")
            .env("HOSTNAME", &plan.hostname)
            .env("POD_NAME", &plan.name)
            .env("POD_NAMESPACE", &plan.namespace)
            .env("POD_IP", &first_ip)
            .env("NODE_NAME", &self.node_name);
        for (k, v) in env {
            let v = match v {
                EnvSource::Value(s) => s.clone(),
                EnvSource::PodIp => first_ip.clone(),
                EnvSource::PodIps => all_ips.clone(),
                EnvSource::NodeName => self.node_name.clone(),
                EnvSource::PodName => plan.name.clone(),
                EnvSource::PodNamespace => plan.namespace.clone(),
                EnvSource::PodUid => plan.uid.clone(),
            };
            cmd.env(k, v);
        }
        let mut binds = Vec::new();
        if dir.resolv_conf().exists() {
            binds.push((dir.resolv_conf(), "/etc/resolv.conf".into()));
        }
        binds.push((dir.hosts(), "/etc/hosts".into()));
        Isolation {
            netns: netns
                .try_clone()
                .map_err(|e| Error::netlink(format!("pod {who}"), e))?,
            binds,
            hostname: plan.hostname.clone(),
            new_session,
        }
        .apply(&mut cmd)?;
        Ok(cmd)
    }
}

/// A running pod found in the records under a runtime's state directory.
pub(crate) struct Recorded {
    pub dir: PodDir,
    pub rec: record::PodRecord,
    pub plan: PodPlan,
}

/// The running pod `namespace/name` recorded under `state_dir` (no lock taken, nothing
/// changed); None if no such pod runs there.
pub(crate) fn find_recorded(
    state_dir: &Path,
    namespace: &str,
    name: &str,
) -> Result<Option<Recorded>> {
    for uid in record::list(state_dir)? {
        let dir = PodDir::new(state_dir, &uid);
        let Ok(rec) = record::load(&dir.record()) else {
            continue;
        };
        let Ok(plan) = spec::plan(&rec.pod) else {
            continue;
        };
        if plan.namespace == namespace && plan.name == name && rec.phase == Phase::Running {
            return Ok(Some(Recorded { dir, rec, plan }));
        }
    }
    Ok(None)
}

/// `exec` into a pod from its records alone, for a process that is not the agent (the
/// agent holds the state directory's lock; this needs no lock and changes nothing). The
/// pod is found by namespace and name among the running pods recorded under `state_dir`.
pub fn exec_recorded(
    state_dir: &Path,
    weft_bin: &Path,
    namespace: &str,
    name: &str,
    argv: &[String],
) -> Result<Command> {
    exec_in_container(state_dir, weft_bin, namespace, name, None, argv, false)
}

/// [`exec_recorded`] with a container's environment (`None`: the first container's, as
/// `kubectl exec` without `-c`); `new_session` starts the command in a session of its own
/// (what a terminal needs to become its controlling terminal). A container the pod does
/// not have is an [`Error::InvalidPod`] naming the ones it has.
pub fn exec_in_container(
    state_dir: &Path,
    weft_bin: &Path,
    namespace: &str,
    name: &str,
    container: Option<&str>,
    argv: &[String],
    new_session: bool,
) -> Result<Command> {
    let who = format!("{namespace}/{name}");
    if argv.is_empty() {
        return Err(Error::invalid_pod(&who, "exec", "no command given"));
    }
    let Some(Recorded { dir, rec, plan }) = find_recorded(state_dir, namespace, name)? else {
        return Err(Error::UnknownPod(who));
    };
    let env = match container {
        None => plan.containers.first().map(|c| c.env.as_slice()),
        Some(c) => match plan.containers.iter().find(|p| p.name == c) {
            Some(p) => Some(p.env.as_slice()),
            None => {
                let names: Vec<&str> = plan.containers.iter().map(|c| c.name.as_str()).collect();
                return Err(Error::invalid_pod(
                    &who,
                    "container",
                    format!("container {c} is not valid for pod {name} (it has {names:?})"),
                ));
            }
        },
    }
    .unwrap_or_default();
    let netns = Netns::from_name(&rec.netns_name)
        .ok()
        .filter(|ns| rec.netns_inode.is_some() && ns.inode().ok() == rec.netns_inode)
        .ok_or_else(|| Error::invalid_pod(&who, "exec", "the pod's network namespace is gone"))?;
    let launcher = Launcher::new(state_dir, &rec.node_name, weft_bin);
    launcher.command(&plan, &dir, &netns, &rec.ips, argv, env, new_session)
}

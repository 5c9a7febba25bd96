//! The runtime: pods in, namespaces, CNI attachments and processes out, all recorded.

use std::collections::BTreeMap;
use std::fs::{self, File};

use nix::fcntl::{Flock, FlockArg};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use weft_netlink::Netns;

use crate::cni::{Attachment, Cni};
use crate::config::RuntimeConfig;
use crate::error::{Error, Result};
use crate::launch::Launcher;

/// What a `before_containers` step may fail with.
pub type HookError = Box<dyn std::error::Error + Send + Sync>;
use crate::names;
use crate::podfiles;
use crate::process::{self, Liveness};
use crate::record::{self, ContainerRecord, Phase, PodDir, PodRecord};
use crate::spec::{self, ContainerPlan, PodPlan, ProbePlan, RestartPolicy};
use crate::status::{ContainerState, PodRuntimeStatus};

pub struct Runtime {
    pub(crate) cfg: RuntimeConfig,
    pub(crate) cni: Cni,
    pub(crate) launcher: Launcher,
    pub(crate) pods: BTreeMap<String, PodState>,
    /// Held for the runtime's life: two agents on one state directory would fight over
    /// the same pods.
    _lock: Flock<File>,
}

/// A pod the runtime runs: its plan, its record (the durable truth), and what lives only
/// in memory (the namespace handle, probe schedules).
pub(crate) struct PodState {
    pub plan: PodPlan,
    pub rec: PodRecord,
    pub dir: PodDir,
    pub netns: Netns,
    pub inode: u64,
    pub probes: Vec<ProbeState>,
}

/// A container's readiness-probe bookkeeping (not recorded: after a restart probing
/// resumes at once, from the recorded readiness).
#[derive(Debug, Clone)]
pub(crate) struct ProbeState {
    pub next: Instant,
    pub successes: u32,
    pub failures: u32,
    /// The liveness probe's schedule and failures in a row.
    pub live_next: Instant,
    pub live_failures: u32,
    /// Exits in a row without a long run in between, and when a restart may happen: the
    /// crash-loop back-off.
    pub crashes: u32,
    pub restart_at: Option<Instant>,
    pub started: Instant,
}

impl ProbeState {
    /// Probing of a process started at `now`: each probe first runs after its initial
    /// delay.
    pub fn started(now: Instant, c: &ContainerPlan) -> ProbeState {
        let delay = |p: &Option<ProbePlan>| p.as_ref().map(|p| p.initial_delay).unwrap_or_default();
        ProbeState {
            live_next: now + delay(&c.liveness),
            ..ProbeState::at(now + delay(&c.readiness))
        }
    }

    /// Every probe due at `next`.
    pub fn at(next: Instant) -> ProbeState {
        ProbeState {
            next,
            successes: 0,
            failures: 0,
            live_next: next,
            live_failures: 0,
            crashes: 0,
            restart_at: None,
            started: Instant::now(),
        }
    }

    /// A new process was started: probing starts over, the crash count stays.
    pub fn restarted(&self, now: Instant, c: &ContainerPlan) -> ProbeState {
        ProbeState {
            crashes: self.crashes,
            ..ProbeState::started(now, c)
        }
    }
}

/// How long a container that ran less than this counts as crashing; also the longest
/// wait between restarts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The wait before restarting a container after its `crashes`-th exit in a row: none the
/// first time, then 1 s doubling up to [`MAX_BACKOFF`] (Kubernetes: 10 s to 5 min; the lab
/// wants quick feedback).
pub(crate) fn backoff(crashes: u32) -> Duration {
    if crashes <= 1 {
        return Duration::ZERO;
    }
    Duration::from_secs(1u64 << (crashes - 2).min(6)).min(MAX_BACKOFF)
}

impl Runtime {
    pub fn new(cfg: RuntimeConfig) -> Result<Runtime> {
        let bad = |what: &str, p: &Path, e: std::io::Error| {
            Error::Config(format!("{what} {}: {e}", p.display()))
        };
        fs::metadata(&cfg.weft_bin).map_err(|e| bad("weft_bin", &cfg.weft_bin, e))?;
        // cni_conf is read at each start, not here: a node agent may come up before its
        // network config is written (e.g. before the node has a pod subnet).
        let pods_dir = record::pods_dir(&cfg.state_dir);
        fs::create_dir_all(&pods_dir)
            .map_err(|e| Error::io(format!("create {}", pods_dir.display()), e))?;
        let lock_path = cfg.state_dir.join("lock");
        let lock = File::create(&lock_path)
            .map_err(|e| Error::io(format!("open {}", lock_path.display()), e))?;
        let _lock = Flock::lock(lock, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            Error::Config(format!(
                "state_dir {}: another runtime (a running agent?) holds {} ({e})",
                cfg.state_dir.display(),
                lock_path.display()
            ))
        })?;
        let bin = cfg.state_dir.join("bin");
        link_weft(&bin, &cfg.weft_bin)?;
        let host_netns = match &cfg.host_netns {
            Some(p) => Some(
                Netns::from_path(p)
                    .map_err(|e| Error::Config(format!("host_netns {}: {e}", p.display())))?,
            ),
            None => None,
        };
        Ok(Runtime {
            launcher: Launcher::new(&cfg.state_dir, &cfg.node_name, &cfg.weft_bin),
            cni: Cni {
                weft_bin: cfg.weft_bin.clone(),
                bin_dir: cfg.cni_bin_dir.clone(),
                host_netns,
            },
            cfg,
            pods: BTreeMap::new(),
            _lock,
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.cfg
    }

    /// The uids of the pods this runtime runs.
    pub fn pods(&self) -> Vec<String> {
        self.pods.keys().cloned().collect()
    }

    /// Create the pod's namespace, attach it with the CNI plugin, start its containers and
    /// record it all. Starting a pod that already runs returns its status. On failure
    /// everything made so far is removed again.
    pub fn start(&mut self, pod: &Pod) -> Result<PodRuntimeStatus> {
        self.start_with(pod, |_| Ok(()))
    }

    /// [`start`](Runtime::start), calling `before_containers` once the pod is wired (its
    /// namespace and addresses exist) and before any container runs: the place to make the
    /// pod's network policy effective, so that a new pod never runs unprotected. Its
    /// status then has the IPs and no containers. An error from it undoes the start.
    pub fn start_with(
        &mut self,
        pod: &Pod,
        before_containers: impl FnOnce(&PodRuntimeStatus) -> std::result::Result<(), HookError>,
    ) -> Result<PodRuntimeStatus> {
        let plan = spec::plan(pod).inspect_err(|e| {
            crate::events::warning_for(pod, "FailedCreatePodSandBox", e.to_string())
        })?;
        if self.pods.contains_key(&plan.uid) {
            return self.status(&plan.uid).ok_or(Error::UnknownPod(plan.uid));
        }
        let dir = PodDir::new(&self.cfg.state_dir, &plan.uid);
        if dir.0.exists() {
            // Recorded by an earlier agent: take the pod back if it still runs (a caller
            // that did not call adopt() first must not cost the pod its processes), else
            // clear what is left.
            if let Ok(Some(state)) = self.adopt_one(&dir) {
                self.pods.insert(plan.uid.clone(), state);
                return self.status(&plan.uid).ok_or(Error::UnknownPod(plan.uid));
            }
            // What an earlier attempt left (its DEL failed, say) must go before a new ADD;
            // the pod's events say why it cannot start yet.
            self.teardown_dir(&dir, &plan.uid).inspect_err(|e| {
                crate::events::warning(
                    &plan,
                    "FailedCreatePodSandBox",
                    format!("Failed to remove what an earlier attempt left: {e}"),
                )
            })?;
        }
        let mut rec = PodRecord {
            uid: plan.uid.clone(),
            phase: Phase::Creating,
            netns_name: names::netns_name(&self.cfg.netns_prefix, &plan.namespace, &plan.name),
            netns_inode: None,
            ips: Vec::new(),
            node_name: self.cfg.node_name.clone(),
            started_at: Some(record::unix_now()),
            containers: Vec::new(),
            pod: pod.clone(),
        };
        record::save(&dir, &rec)?;
        match self.build(&plan, &dir, &mut rec, before_containers) {
            Ok(state) => {
                let uid = plan.uid.clone();
                self.pods.insert(uid.clone(), state);
                self.status(&uid).ok_or(Error::UnknownPod(uid))
            }
            Err(e) => {
                crate::events::warning(
                    &plan,
                    "FailedCreatePodSandBox",
                    format!("Failed to create pod sandbox: {e}"),
                );
                // Nothing ran long enough to deserve a grace period.
                if let Err(undo) = self.teardown(&dir, &rec, Some(Duration::ZERO)) {
                    tracing::warn!(pod = %plan.uid, error = %undo, "cleanup after a failed start");
                }
                Err(e)
            }
        }
    }

    fn build(
        &self,
        plan: &PodPlan,
        dir: &PodDir,
        rec: &mut PodRecord,
        before_containers: impl FnOnce(&PodRuntimeStatus) -> std::result::Result<(), HookError>,
    ) -> Result<PodState> {
        let config = fs::read(&self.cfg.cni_conf).map_err(|e| {
            Error::io(
                format!(
                    "read the CNI network config {}",
                    self.cfg.cni_conf.display()
                ),
                e,
            )
        })?;
        let netns = match Netns::create_named(&rec.netns_name) {
            Err(e) if e.is_exists() => {
                // Another pod's name sanitises to the same one: make ours unique.
                rec.netns_name = names::netns_name_for_uid(&rec.netns_name, &plan.uid);
                record::save(dir, rec)?;
                Netns::create_named(&rec.netns_name)
            }
            other => other,
        }
        .map_err(|e| Error::netlink(format!("pod {}/{}", plan.namespace, plan.name), e))?;
        let inode = netns
            .inode()
            .map_err(|e| Error::netlink("read the pod's namespace", e))?;
        rec.netns_inode = Some(inode);
        record::write_durable(&dir.cni_config(), &config)?;
        record::save(dir, rec)?;

        let netns_path = Netns::named_path(&rec.netns_name);
        rec.ips = self.cni.add(
            &config,
            &Attachment {
                uid: &plan.uid,
                namespace: &plan.namespace,
                name: &plan.name,
                netns: Some(&netns_path),
            },
        )?;
        // Not saved on its own: undoing ADD takes the config and the uid, not the
        // addresses, which are saved with the first container.
        let ips: Vec<String> = rec.ips.iter().map(|ip| ip.to_string()).collect();
        crate::events::normal(
            plan,
            "AddedInterface",
            format!(
                "Add eth0 [{}] on {}'s bridge (network namespace {})",
                ips.join(", "),
                self.cfg.node_name,
                rec.netns_name
            ),
        );

        if let Some(resolv) = podfiles::resolv_conf(
            &plan.dns,
            &plan.namespace,
            self.cfg.cluster_dns,
            &self.cfg.cluster_domain,
        ) {
            write_pod_file(&dir.resolv_conf(), resolv.as_bytes())?;
        }
        let domain = self.cfg.cluster_domain.trim_matches('.');
        let fqdn = plan
            .subdomain
            .as_ref()
            .map(|sub| format!("{}.{sub}.{}.svc.{domain}", plan.hostname, plan.namespace));
        write_pod_file(
            &dir.hosts(),
            podfiles::hosts(&plan.hostname, fqdn.as_deref(), &rec.ips).as_bytes(),
        )?;

        let mut state = PodState {
            plan: plan.clone(),
            rec: rec.clone(),
            dir: dir.clone(),
            netns,
            inode,
            probes: Vec::new(),
        };
        before_containers(&status_of(&state)).map_err(|e| Error::Hook {
            pod: format!("{}/{}", plan.namespace, plan.name),
            reason: e.to_string(),
        })?;
        let now = Instant::now();
        for c in &plan.containers {
            let (pid, start_time) = self.spawn(&state, c)?;
            crate::events::normal(plan, "Started", format!("Started container {}", c.name));
            state.rec.containers.push(ContainerRecord {
                name: c.name.clone(),
                pid: Some(pid),
                start_time: Some(start_time),
                running: true,
                started_at: Some(record::unix_now()),
                ..Default::default()
            });
            // Saved after each start: a failure on the next container must still be able
            // to stop this one. The last one's save is the one that says Running.
            if state.rec.containers.len() == plan.containers.len() {
                state.rec.phase = Phase::Running;
            }
            *rec = state.rec.clone();
            record::save(dir, rec)?;
            state.probes.push(ProbeState::started(now, c));
        }
        if state.rec.phase != Phase::Running {
            state.rec.phase = Phase::Running;
            *rec = state.rec.clone();
            record::save(dir, rec)?;
        }
        Ok(state)
    }

    /// The status of every pod this runtime runs, by uid.
    pub fn statuses(&self) -> Vec<PodRuntimeStatus> {
        self.pods.values().map(status_of).collect()
    }

    /// The pod's current status; None for a pod this runtime does not run. Processes are
    /// looked at (not collected), readiness is what the last probes found.
    pub fn status(&self, uid: &str) -> Option<PodRuntimeStatus> {
        self.pods.get(uid).map(status_of)
    }
}

fn status_of(p: &PodState) -> PodRuntimeStatus {
    let containers: Vec<ContainerState> = p
        .rec
        .containers
        .iter()
        .map(|c| {
            let live = match (c.running, c.pid, c.start_time) {
                (true, Some(pid), Some(st)) => process::liveness(pid, st, p.inode, false),
                _ => Liveness::Exited(c.exit_code),
            };
            let (running, exit_code) = match live {
                Liveness::Running => (true, None),
                Liveness::Exited(code) => (false, code.or(c.exit_code)),
            };
            ContainerState {
                name: c.name.clone(),
                pid: c.pid,
                running,
                exit_code,
                ready: running && c.ready,
                restarts: c.restarts,
                started_at: c.started_at,
            }
        })
        .collect();
    PodRuntimeStatus {
        phase: phase(p.plan.restart, &containers).to_string(),
        started_at: p.rec.started_at,
        uid: p.plan.uid.clone(),
        namespace: p.plan.namespace.clone(),
        name: p.plan.name.clone(),
        ips: p.rec.ips.clone(),
        netns: Netns::named_path(&p.rec.netns_name),
        ready: !containers.is_empty() && containers.iter().all(|c| c.ready),
        containers,
    }
}

impl Runtime {
    /// Stop the pod's processes (SIGTERM, SIGKILL after the grace period), detach it with
    /// CNI DEL, remove its namespace and its record. Unknown pods are not an error.
    pub fn stop(&mut self, uid: &str) -> Result<()> {
        self.stop_all(&[uid.to_string()])
            .pop()
            .map_or(Ok(()), |(_, r)| r)
    }

    /// A command for `weft lab exec`: it runs inside the pod's network namespace, with the
    /// pod's resolv.conf, hosts and host name, and the first container's environment. `weft` as the
    /// program is the runtime's weft binary.
    pub fn exec_command(&self, uid: &str, argv: &[String]) -> Result<Command> {
        let p = self
            .pods
            .get(uid)
            .ok_or_else(|| Error::UnknownPod(uid.to_string()))?;
        if argv.is_empty() {
            return Err(Error::invalid_pod(
                format!("{}/{}", p.plan.namespace, p.plan.name),
                "exec",
                "no command given",
            ));
        }
        // As `kubectl exec` without -c: the first container's environment.
        let env = p
            .plan
            .containers
            .first()
            .map(|c| c.env.as_slice())
            .unwrap_or_default();
        self.pod_command(p, argv, env, false)
    }

    /// Where a container's stdout and stderr go (appended across restarts).
    pub fn log_path(&self, uid: &str, container: &str) -> Option<PathBuf> {
        let p = self.pods.get(uid)?;
        p.plan
            .containers
            .iter()
            .any(|c| c.name == container)
            .then(|| p.dir.log(container))
    }
}

/// The pod's phase as Kubernetes defines it from its containers and restart policy.
pub(crate) fn phase(policy: RestartPolicy, containers: &[ContainerState]) -> &'static str {
    if containers.is_empty() {
        return "Pending";
    }
    if containers.iter().any(|c| c.running) {
        return "Running";
    }
    let all_ok = containers.iter().all(|c| c.exit_code == Some(0));
    match policy {
        // Ended containers are about to be started again.
        RestartPolicy::Always => "Running",
        RestartPolicy::OnFailure if all_ok => "Succeeded",
        RestartPolicy::OnFailure => "Running",
        RestartPolicy::Never if all_ok => "Succeeded",
        RestartPolicy::Never => "Failed",
    }
}

/// A pod's resolv.conf or hosts: written at each start of the pod, read by its processes
/// through a bind mount. Not synced to disk: a machine that crashes takes the pod's
/// namespace with it, and a pod without one is never adopted, only started again, which
/// writes the file again (two fsyncs each, per pod start, for nothing).
fn write_pod_file(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).map_err(|e| Error::io(format!("write {}", path.display()), e))
}

/// `<bin>/weft` -> the weft binary, so pod scripts find `weft` on PATH.
fn link_weft(bin: &Path, weft: &Path) -> Result<()> {
    fs::create_dir_all(bin).map_err(|e| Error::io(format!("create {}", bin.display()), e))?;
    let link = bin.join("weft");
    let target = fs::canonicalize(weft).unwrap_or_else(|_| weft.to_path_buf());
    if fs::read_link(&link).ok().as_deref() == Some(target.as_path()) {
        return Ok(());
    }
    let tmp = bin.join(format!(".weft.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&target, &tmp)
        .and_then(|()| fs::rename(&tmp, &link))
        .map_err(|e| {
            Error::io(
                format!("link {} to {}", link.display(), target.display()),
                e,
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(running: bool, exit_code: Option<i32>) -> ContainerState {
        ContainerState {
            name: "c".into(),
            pid: None,
            running,
            exit_code,
            ready: false,
            restarts: 0,
            started_at: None,
        }
    }

    #[test]
    fn phases() {
        use RestartPolicy::*;
        assert_eq!(phase(Never, &[c(true, None), c(false, Some(1))]), "Running");
        assert_eq!(phase(Never, &[c(false, Some(0))]), "Succeeded");
        assert_eq!(phase(Never, &[c(false, Some(0)), c(false, None)]), "Failed");
        assert_eq!(phase(OnFailure, &[c(false, Some(0))]), "Succeeded");
        assert_eq!(phase(OnFailure, &[c(false, Some(2))]), "Running");
        assert_eq!(phase(Always, &[c(false, Some(0))]), "Running");
    }

    #[test]
    fn crash_loop_backoff_grows_to_a_limit() {
        assert_eq!(backoff(1), Duration::ZERO);
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(2));
        assert_eq!(backoff(7), Duration::from_secs(32));
        assert_eq!(backoff(8), MAX_BACKOFF);
        assert_eq!(backoff(100), MAX_BACKOFF);
    }
}

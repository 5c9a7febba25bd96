//! Ending pods, and taking them back after an agent restart: stop, the teardown shared by
//! stop, failed starts and crash remains, adopt, gc.

use std::collections::HashSet;
use std::fs;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use weft_netlink::Netns;

use crate::cni::Attachment;
use crate::error::{Error, Result};
use crate::names;
use crate::process::{self, Liveness};
use crate::record::{self, Phase, PodDir, PodRecord};
use crate::runtime::{PodState, ProbeState, Runtime};
use crate::spec;

/// How long killed processes get to disappear from the namespace before teardown goes on.
const KILL_WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(20);

/// A pod to end: its directory, its record, and its grace period (None: the pod's own).
pub(crate) struct Ending<'a> {
    pub dir: &'a PodDir,
    pub rec: &'a PodRecord,
    pub grace: Option<Duration>,
}

/// A pod whose containers were sent SIGTERM.
struct Dying {
    inode: u64,
    deadline: Instant,
    /// (pid, start time) of the containers still to end.
    live: Vec<(u32, u64)>,
    /// Every pid signalled: our own children among them are collected at the end.
    killed: Vec<u32>,
}

/// Waits for the signalled containers of every pod in `dying` to end, sending SIGKILL to
/// those still running when their pod's grace period is over; then kills whatever else
/// lives in the pods' namespaces (daemons in other sessions, exec'd commands would keep
/// the namespace, and its veth, alive) and collects our children among them.
fn end_processes(dying: &mut [Dying]) {
    let running = |inode: u64, pid: u32, st: u64| {
        process::liveness(pid, st, inode, true) == Liveness::Running
    };
    loop {
        let now = Instant::now();
        for d in dying.iter_mut() {
            let inode = d.inode;
            d.live.retain(|(pid, st)| running(inode, *pid, *st));
            if now >= d.deadline {
                for (pid, _) in d.live.drain(..) {
                    process::signal_group(pid, Signal::SIGKILL);
                }
            }
        }
        if dying.iter().all(|d| d.live.is_empty()) {
            break;
        }
        std::thread::sleep(POLL);
    }
    let deadline = Instant::now() + KILL_WAIT;
    let inodes: HashSet<u64> = dying.iter().map(|d| d.inode).collect();
    let mut rest: Vec<u32> = Vec::new();
    loop {
        let found = process::pids_in_netns(&inodes);
        if found.is_empty() || Instant::now() >= deadline {
            break;
        }
        for (_, pid) in found {
            process::signal_group(pid, Signal::SIGKILL);
            rest.push(pid);
        }
        std::thread::sleep(POLL);
    }
    // Our own children among them would stay zombies until collected.
    for pid in dying.iter().flat_map(|d| d.killed.iter()).chain(&rest) {
        process::reap_killed(*pid, deadline);
    }
}

impl Runtime {
    /// Remove everything `rec` says was made for a pod: processes (SIGTERM, then SIGKILL
    /// after `grace`; None: the pod's own grace period), the CNI attachment, the
    /// namespace, the pod's directory. The directory goes last: if a step fails, the
    /// record is still there for the next attempt.
    pub(crate) fn teardown(
        &self,
        dir: &PodDir,
        rec: &PodRecord,
        grace: Option<Duration>,
    ) -> Result<()> {
        self.teardown_many(&[Ending { dir, rec, grace }])
            .pop()
            .unwrap_or(Ok(()))
    }

    /// [`teardown`](Runtime::teardown) of several pods at once, one result per pod in
    /// order. Their processes are signalled together and waited for together, and the
    /// processes left in their namespaces are found in one pass over /proc: stopping n
    /// pods one by one waited n times for the first poll and read /proc n times (each
    /// read visiting every process of the machine, the other pods' included).
    pub(crate) fn teardown_many(&self, pods: &[Ending<'_>]) -> Vec<Result<()>> {
        let plans: Vec<Option<spec::PodPlan>> =
            pods.iter().map(|p| spec::plan(&p.rec.pod).ok()).collect();
        let owned: Vec<Option<(Netns, u64)>> =
            pods.iter().map(|p| self.owned_netns(p.rec)).collect();
        let now = Instant::now();
        let mut dying: Vec<Dying> = Vec::new();
        for ((p, plan), ns) in pods.iter().zip(&plans).zip(&owned) {
            let Some(inode) = ns.as_ref().map(|(_, i)| *i).or(p.rec.netns_inode) else {
                continue;
            };
            let grace = p
                .grace
                .or(plan.as_ref().map(|p| p.grace))
                .unwrap_or(Duration::from_secs(30));
            let live: Vec<(u32, u64)> = p
                .rec
                .containers
                .iter()
                .filter(|c| c.running)
                .filter_map(|c| Some((c.pid?, c.start_time?)))
                .filter(|(pid, st)| process::liveness(*pid, *st, inode, false) == Liveness::Running)
                .collect();
            for (pid, _) in &live {
                process::signal_group(*pid, Signal::SIGTERM);
            }
            dying.push(Dying {
                inode,
                deadline: now + grace,
                killed: live.iter().map(|(pid, _)| *pid).collect(),
                live,
            });
        }
        if !dying.is_empty() {
            end_processes(&mut dying);
        }
        pods.iter()
            .zip(&plans)
            .zip(&owned)
            .map(|((p, plan), ns)| self.detach(p, plan.as_ref(), ns.as_ref()))
            .collect()
    }

    /// What is left of a pod once its processes are gone: CNI DEL, the namespace, the
    /// directory. Every step is tried and every failure kept: a failed DEL must not leave
    /// the namespace (and its veth) behind. Only the directory waits for a clean DEL,
    /// since it holds what the next attempt needs to retry it.
    fn detach(
        &self,
        p: &Ending<'_>,
        plan: Option<&spec::PodPlan>,
        ns: Option<&(Netns, u64)>,
    ) -> Result<()> {
        let (dir, rec) = (p.dir, p.rec);
        let mut errors = Vec::new();
        // The config is saved before ADD runs: without it, ADD never ran and there is
        // nothing to DEL.
        match fs::read(dir.cni_config()) {
            Ok(config) => {
                let path = Netns::named_path(&rec.netns_name);
                let (namespace, name) = plan
                    .map(|p| (p.namespace.as_str(), p.name.as_str()))
                    .unwrap_or(("", ""));
                let attachment = Attachment {
                    uid: &rec.uid,
                    namespace,
                    name,
                    netns: ns.map(|_| path.as_path()),
                };
                if let Err(e) = self.cni.del(&config, &attachment) {
                    errors.push(e);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => errors.push(Error::io(format!("read {}", dir.cni_config().display()), e)),
        }
        let del_failed = !errors.is_empty();
        if let (true, Some((netns, _))) = (del_failed, ns) {
            // Without DEL, the pod's veth would live as long as anything holds the
            // namespace (this runtime keeps it open for the retry): take it down now.
            let gone = weft_netlink::Handle::in_netns(netns)
                .and_then(|mut h| h.delete_link_by_name("eth0"));
            if let Err(e) = gone {
                errors.push(Error::netlink(format!("pod {}: remove eth0", rec.uid), e));
            }
        }
        if ns.is_some() {
            if let Err(e) = Netns::delete_named(&rec.netns_name) {
                errors.push(Error::netlink(format!("pod {}", rec.uid), e));
            }
        }
        if !del_failed {
            match fs::remove_dir_all(&dir.0) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => errors.push(Error::io(format!("remove {}", dir.0.display()), e)),
            }
        }
        Error::all(errors)
    }

    /// The record's namespace and its inode, if it is the one the record made. A record
    /// written before the inode was known claims the name only if no other pod uses it.
    fn owned_netns(&self, rec: &PodRecord) -> Option<(Netns, u64)> {
        let ns = Netns::from_name(&rec.netns_name).ok()?;
        let inode = ns.inode().ok()?;
        match rec.netns_inode {
            Some(i) if i == inode => Some((ns, inode)),
            Some(_) => None,
            None => {
                let claimed = self
                    .pods
                    .values()
                    .any(|p| p.rec.uid != rec.uid && p.rec.netns_name == rec.netns_name);
                (!claimed).then_some((ns, inode))
            }
        }
    }

    /// [`stop`](Runtime::stop) for several pods at once (their processes end together):
    /// one result per uid, in order. A pod that fails to stop stays known, so that a retry
    /// (or gc) finishes the job.
    pub fn stop_all(&mut self, uids: &[String]) -> Vec<(String, Result<()>)> {
        let mut known: Vec<PodState> = Vec::new();
        let mut results: Vec<(String, Option<Result<()>>)> = Vec::new();
        for uid in uids {
            match self.pods.remove(uid) {
                Some(state) => {
                    for c in state.rec.containers.iter().filter(|c| c.running) {
                        crate::events::normal(
                            &state.plan,
                            "Killing",
                            format!("Stopping container {}", c.name),
                        );
                    }
                    known.push(state);
                    results.push((uid.clone(), None));
                }
                None if !names::valid_uid(uid) => results.push((uid.clone(), Some(Ok(())))),
                None => {
                    // Recorded by an earlier agent but not adopted: clear what is left.
                    let dir = PodDir::new(&self.cfg.state_dir, uid);
                    let r = if dir.0.exists() {
                        self.teardown_dir(&dir, uid)
                    } else {
                        Ok(())
                    };
                    results.push((uid.clone(), Some(r)));
                }
            }
        }
        let ending: Vec<Ending<'_>> = known
            .iter()
            .map(|s| Ending {
                dir: &s.dir,
                rec: &s.rec,
                grace: Some(s.plan.grace),
            })
            .collect();
        let mut outcomes = self.teardown_many(&ending).into_iter();
        drop(ending);
        let mut states = known.into_iter();
        results
            .into_iter()
            .map(|(uid, r)| {
                // One state and one outcome per pod that was known, in the same order.
                let r = r.unwrap_or_else(|| match (states.next(), outcomes.next()) {
                    (Some(state), Some(Err(e))) => {
                        self.pods.insert(uid.clone(), state);
                        Err(e)
                    }
                    _ => Ok(()),
                });
                (uid, r)
            })
            .collect()
    }

    /// Tear down whatever a pod directory without a live pod holds.
    pub(crate) fn teardown_dir(&self, dir: &PodDir, uid: &str) -> Result<()> {
        match record::load(&dir.record()) {
            Ok(rec) => self.teardown(dir, &rec, None),
            Err(e) => {
                // Nothing readable to undo (a crash before the first record was complete).
                tracing::warn!(pod = %uid, error = %e, "removing a pod directory without a usable record");
                fs::remove_dir_all(&dir.0)
                    .map_err(|e| Error::io(format!("remove {}", dir.0.display()), e))
            }
        }
    }

    /// After an agent restart: take back the pods recorded under the state directory whose
    /// namespace still exists. Their processes are trusted only if start time and network
    /// namespace still match the record; those that ended meanwhile are marked exited (and
    /// restarted by policy on the next `probe_all`). Remains of pods whose start never
    /// finished, or whose namespace is gone, are removed. Returns the uids adopted, including
    /// those already running here.
    pub fn adopt(&mut self) -> Result<Vec<String>> {
        let mut found = Vec::new();
        for uid in record::list(&self.cfg.state_dir)? {
            if self.pods.contains_key(&uid) {
                found.push(uid);
                continue;
            }
            let dir = PodDir::new(&self.cfg.state_dir, &uid);
            match self.adopt_one(&dir) {
                Ok(Some(state)) => {
                    self.pods.insert(uid.clone(), state);
                    found.push(uid);
                }
                Ok(None) => {
                    if let Err(e) = self.teardown_dir(&dir, &uid) {
                        tracing::warn!(pod = %uid, error = %e, "remove the remains of a pod");
                    }
                }
                Err(e) => tracing::warn!(pod = %uid, error = %e, "adopt"),
            }
        }
        Ok(found)
    }

    /// Some(state) to adopt, None for remains to remove.
    pub(crate) fn adopt_one(&self, dir: &PodDir) -> Result<Option<PodState>> {
        let Ok(mut rec) = record::load(&dir.record()) else {
            return Ok(None);
        };
        if rec.phase != Phase::Running {
            return Ok(None);
        }
        let Ok(plan) = spec::plan(&rec.pod) else {
            return Ok(None);
        };
        let Some(inode) = rec.netns_inode else {
            return Ok(None);
        };
        let Some(netns) = Netns::from_name(&rec.netns_name)
            .ok()
            .filter(|ns| ns.inode().ok() == Some(inode))
        else {
            return Ok(None);
        };
        if rec.containers.len() != plan.containers.len() {
            return Ok(None);
        }
        let mut changed = false;
        for c in rec.containers.iter_mut().filter(|c| c.running) {
            let live = match (c.pid, c.start_time) {
                (Some(pid), Some(st)) => process::liveness(pid, st, inode, true),
                _ => Liveness::Exited(None),
            };
            if let Liveness::Exited(code) = live {
                c.running = false;
                c.exit_code = code;
                c.ready = false;
                changed = true;
            }
        }
        if changed {
            record::save(dir, &rec)?;
        }
        let now = Instant::now();
        Ok(Some(PodState {
            probes: vec![ProbeState::at(now); plan.containers.len()],
            plan,
            rec,
            dir: dir.clone(),
            netns,
            inode,
        }))
    }

    /// Removes this node's pod namespaces that no known pod owns. An agent killed between
    /// creating a pod's namespace and recording the pod, or between forgetting a pod and
    /// removing its namespace, leaves one behind; nothing else ever would. Runs at start,
    /// before any pod is being set up; only pod-shaped names under the node's prefix are
    /// touched, never the node's own namespace.
    fn remove_orphan_namespaces(&self) {
        let prefix = &self.cfg.netns_prefix;
        if prefix.is_empty() {
            return;
        }
        let mut owned: HashSet<&str> = self
            .pods
            .values()
            .map(|p| p.rec.netns_name.as_str())
            .collect();
        // The node's own namespace may share the prefix (the tests' nodes do).
        let host = self
            .cfg
            .host_netns
            .as_ref()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str());
        owned.extend(host);
        // A pod's name is `<prefix><namespace>-<name>`: nothing else is touched.
        let pod_shaped = |n: &str| {
            n.strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.contains('-'))
        };
        let names = match Netns::list_named() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "list network namespaces for orphans");
                return;
            }
        };
        for name in names
            .iter()
            .filter(|n| pod_shaped(n) && !owned.contains(n.as_str()))
        {
            match Netns::delete_named(name) {
                Ok(()) => tracing::info!(netns = %name, "removed a pod namespace no pod owns"),
                Err(e) => {
                    tracing::warn!(netns = %name, error = %e, "remove an orphaned pod namespace")
                }
            }
        }
    }

    /// Adopt what is recorded (see [`adopt`](Runtime::adopt)), stop every pod not in `keep`
    /// (those no pod object owns any more), then let the CNI
    /// plugin release whatever is not attached to a remaining pod. Returns the uids stopped.
    /// A pod that fails to stop stays known (and is retried next time); every such error,
    /// and a failed CNI GC, is returned after all were tried.
    pub fn gc(&mut self, keep: &HashSet<String>) -> Result<Vec<String>> {
        // Pods recorded on disk but not yet adopted are pods too: without this, the CNI GC
        // below would release the addresses of running pods after an agent restart.
        self.adopt()?;
        let victims: Vec<String> = self
            .pods
            .keys()
            .filter(|u| !keep.contains(*u))
            .cloned()
            .collect();
        let mut stopped = Vec::new();
        let mut errors = Vec::new();
        for (uid, r) in self.stop_all(&victims) {
            match r {
                Ok(()) => stopped.push(uid),
                Err(e) => {
                    tracing::warn!(pod = %uid, error = %e, "gc: stop");
                    errors.push(e);
                }
            }
        }
        // A failed GC leaves leaked addresses held: the caller retries it (`cni_gc`).
        if let Err(e) = self.cni_gc() {
            tracing::warn!(error = %e, "CNI GC");
            errors.push(e);
        }
        self.remove_orphan_namespaces();
        Error::all(errors).map(|()| stopped)
    }

    /// The plugin's CNI GC with this runtime's pods as the valid attachments: releases
    /// whatever no running pod holds (addresses a crash leaked). Safe whenever no start
    /// is under way, which `&self` against `start`'s `&mut self` guarantees.
    pub fn cni_gc(&self) -> Result<()> {
        let valid: Vec<&str> = self.pods.keys().map(String::as_str).collect();
        let config = fs::read(&self.cfg.cni_conf).map_err(|e| {
            Error::io(
                format!(
                    "CNI GC: read the network config {}",
                    self.cfg.cni_conf.display()
                ),
                e,
            )
        })?;
        self.cni.gc(&config, &valid)
    }
}

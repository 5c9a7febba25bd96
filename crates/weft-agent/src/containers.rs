//! Starting a pod's processes, and the periodic pass over them: collect the ended ones,
//! restart by policy, run due readiness probes.

use std::process::{Command, Stdio};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::prober;
use crate::process::{self, Liveness};
use crate::record;
use crate::runtime::{backoff, PodState, Runtime, MAX_BACKOFF};
use crate::spec::{ContainerPlan, EnvSource, ProbeAction};

impl Runtime {
    /// A command that runs `argv` inside the pod. `new_session` detaches it (containers);
    /// `exec` commands stay attached to their caller.
    pub(crate) fn pod_command(
        &self,
        p: &PodState,
        argv: &[String],
        env: &[(String, EnvSource)],
        new_session: bool,
    ) -> Result<Command> {
        self.launcher.command(
            &p.plan,
            &p.dir,
            &p.netns,
            &p.rec.ips,
            argv,
            env,
            new_session,
        )
    }

    /// Start one container; returns its PID and start time.
    pub(crate) fn spawn(&self, p: &PodState, c: &ContainerPlan) -> Result<(u32, u64)> {
        let mut cmd = self.pod_command(p, &c.argv, &c.env, true)?;
        let log = p.dir.log(&c.name);
        // The last instance's log is what `kubectl logs --previous` shows.
        if log.exists() {
            let previous = p.dir.previous_log(&c.name);
            let _ = std::fs::rename(
                crate::logwriter::rotated(&log),
                crate::logwriter::rotated(&previous),
            );
            let _ = std::fs::remove_file(crate::logwriter::rotated(&log));
            let _ = std::fs::rename(&log, &previous);
        }
        let (out, err) = match process::log_writer(&self.cfg.weft_bin, &log) {
            Ok(pair) => pair,
            Err(e) => {
                // Output kept as it is written rather than lost.
                tracing::warn!(container = %c.name, error = %e, "no log writer; raw log");
                process::log_file(&log)?
            }
        };
        cmd.current_dir(c.working_dir.as_deref().unwrap_or("/"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd.spawn().map_err(|e| {
            Error::io(
                format!(
                    "start container {} of pod {}/{} ({})",
                    c.name,
                    p.plan.namespace,
                    p.plan.name,
                    c.argv.join(" ")
                ),
                e,
            )
        })?;
        let pid = child.id();
        // The Child is dropped without waiting: the process is collected by PID in
        // probe_all/stop, and outlives this agent if the agent dies first.
        drop(child);
        let start_time = process::proc_stat(pid).map(|(_, t)| t).unwrap_or(0);
        Ok((pid, start_time))
    }

    /// Collect ended containers, restart them as the pod's restartPolicy says, and run
    /// the readiness probes that are due. Call it about once a second.
    pub fn probe_all(&mut self) {
        let uids: Vec<String> = self.pods.keys().cloned().collect();
        for uid in uids {
            let Some(mut p) = self.pods.remove(&uid) else {
                continue;
            };
            if self.tend(&mut p) {
                if let Err(e) = record::save(&p.dir, &p.rec) {
                    tracing::warn!(pod = %uid, error = %e, "record container changes");
                }
            }
            self.pods.insert(uid, p);
        }
    }

    /// One pass over a pod; true if its record changed.
    fn tend(&self, p: &mut PodState) -> bool {
        let mut changed = false;
        let now = Instant::now();
        for i in 0..p.plan.containers.len() {
            let c = &mut p.rec.containers[i];
            if c.running {
                let live = match (c.pid, c.start_time) {
                    (Some(pid), Some(st)) => process::liveness(pid, st, p.inode, true),
                    _ => Liveness::Exited(None),
                };
                if let Liveness::Exited(code) = live {
                    c.running = false;
                    c.exit_code = code;
                    c.ready = false;
                    changed = true;
                    let s = &mut p.probes[i];
                    s.crashes = if now.duration_since(s.started) >= MAX_BACKOFF {
                        1
                    } else {
                        s.crashes + 1
                    };
                    s.restart_at = Some(now + backoff(s.crashes));
                    if s.crashes >= 2 && p.plan.restart.restarts(code) {
                        crate::events::warning(
                            &p.plan,
                            "BackOff",
                            format!(
                                "Back-off restarting failed container {} (exit code {})",
                                p.plan.containers[i].name,
                                code.map(|c| c.to_string()).unwrap_or("unknown".into())
                            ),
                        );
                    }
                }
            }
            let c = &p.rec.containers[i];
            let due = p.probes[i].restart_at.is_none_or(|t| now >= t);
            if !c.running && due && p.plan.restart.restarts(c.exit_code) {
                let plan = p.plan.containers[i].clone();
                match self.spawn(p, &plan) {
                    Ok((pid, st)) => {
                        let c = &mut p.rec.containers[i];
                        c.pid = Some(pid);
                        c.start_time = Some(st);
                        c.running = true;
                        c.restarts += 1;
                        c.started_at = Some(record::unix_now());
                        p.probes[i] = p.probes[i].restarted(now, &plan);
                        changed = true;
                        crate::events::normal(
                            &p.plan,
                            "Started",
                            format!("Started container {}", plan.name),
                        );
                    }
                    Err(e) => {
                        // Not every pass: a program that vanished is retried with back-off.
                        let s = &mut p.probes[i];
                        s.crashes += 1;
                        s.restart_at = Some(now + backoff(s.crashes));
                        tracing::warn!(container = %plan.name, error = %e, "restart");
                    }
                }
            }
            changed |= self.probe(p, i, now);
            self.check_liveness(p, i, now);
        }
        changed
    }

    /// Run container `i`'s liveness probe if due; after `failureThreshold` failures in a
    /// row the container is killed (SIGKILL to its group), and the next pass restarts it as
    /// the restart policy says, like any other exit.
    fn check_liveness(&self, p: &mut PodState, i: usize, now: Instant) {
        let c = &p.rec.containers[i];
        let (Some(plan), true, Some(pid)) = (&p.plan.containers[i].liveness, c.running, c.pid)
        else {
            return;
        };
        if now < p.probes[i].live_next {
            return;
        }
        let ok = prober::run(
            &plan.action,
            p.rec.ips.first().copied(),
            plan.timeout,
            &p.netns,
            |argv| self.pod_command(p, argv, &[], false).ok(),
        );
        let s = &mut p.probes[i];
        s.live_next = Instant::now() + plan.period;
        s.live_failures = if ok { 0 } else { s.live_failures + 1 };
        let name = &p.plan.containers[i].name;
        if !ok {
            crate::events::warning(
                &p.plan,
                "Unhealthy",
                format!(
                    "Liveness probe of container {name} failed ({})",
                    describe(&plan.action)
                ),
            );
        }
        if s.live_failures >= plan.failure_threshold {
            s.live_failures = 0;
            crate::events::normal(
                &p.plan,
                "Killing",
                format!("Container {name} failed liveness probe, will be restarted"),
            );
            tracing::warn!(pod = %p.plan.uid, container = %p.plan.containers[i].name, "liveness probe failed; killing the container");
            // The PID was checked to be ours in this same pass (tend), just before.
            process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// Run container `i`'s readiness probe if due; true if its readiness changed.
    fn probe(&self, p: &mut PodState, i: usize, now: Instant) -> bool {
        let was = p.rec.containers[i].ready;
        if !p.rec.containers[i].running {
            return false;
        }
        let Some(plan) = p.plan.containers[i].readiness.clone() else {
            p.rec.containers[i].ready = true;
            return !was;
        };
        if now < p.probes[i].next {
            return false;
        }
        let ok = prober::run(
            &plan.action,
            p.rec.ips.first().copied(),
            plan.timeout,
            &p.netns,
            |argv| self.pod_command(p, argv, &[], false).ok(),
        );
        if !ok {
            crate::events::warning(
                &p.plan,
                "Unhealthy",
                format!(
                    "Readiness probe of container {} failed ({})",
                    p.plan.containers[i].name,
                    describe(&plan.action)
                ),
            );
        }
        let s = &mut p.probes[i];
        s.next = Instant::now() + plan.period;
        if ok {
            s.successes += 1;
            s.failures = 0;
        } else {
            s.failures += 1;
            s.successes = 0;
        }
        let c = &mut p.rec.containers[i];
        if ok && s.successes >= plan.success_threshold {
            c.ready = true;
        } else if !ok && s.failures >= plan.failure_threshold {
            c.ready = false;
        }
        c.ready != was
    }
}

/// A probe as `kubectl describe` names it.
fn describe(a: &ProbeAction) -> String {
    match a {
        ProbeAction::Tcp { host, port } => {
            format!("tcp-socket {}:{port}", host.as_deref().unwrap_or(""))
        }
        ProbeAction::Http {
            host, port, path, ..
        } => format!(
            "http-get http://{}:{port}{path}",
            host.as_deref().unwrap_or("")
        ),
        ProbeAction::Exec { argv } => format!("exec {argv:?}"),
    }
}

//! This node's pods: start what the API wants, stop what it no longer does, and report
//! what each one is (IP, phase, readiness) in its status, as a kubelet would.

use super::retry::Backoff;
use super::AgentConfig;
use crate::Runtime;
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long one pass may spend starting pods before it hands over to the next.
const START_BUDGET: Duration = Duration::from_secs(1);

/// Whether a pass did all there was to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Done,
    /// Pods are left to start: the next pass should follow at once.
    Unfinished,
}

#[derive(Default)]
pub struct PodSync {
    running: HashSet<String>,
    /// The status last written for each pod, so unchanged pods cost no API call.
    reported: HashMap<String, serde_json::Value>,
    /// Starts that failed, by uid: retried after a back-off, reported in the pod's status.
    starts: Backoff,
    /// Stops and final deletes that failed, by uid.
    ends: Backoff,
    took_over: bool,
}

fn is_terminal(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// The runtime, or why it cannot be had. A panic in an earlier operation poisons the
/// lock: the runtime's records on disk are still the truth (every step is recorded
/// before the next), so the poison is cleared and the operation that found it fails
/// and is retried, instead of every later one being silently skipped.
fn lock(rt: &Mutex<Runtime>) -> Result<MutexGuard<'_, Runtime>, String> {
    rt.lock().map_err(|poisoned| {
        drop(poisoned);
        rt.clear_poison();
        tracing::error!("the pod runtime's lock was poisoned by a panic; cleared, retrying");
        "the pod runtime's lock was poisoned by a panic in an earlier operation (see the agent's log); retrying".to_string()
    })
}

/// Runs `f` on the runtime in a blocking thread. Err: the runtime could not be had or
/// `f` panicked (`what` says what it was doing).
async fn blocking<T: Send + 'static>(
    rt: &Arc<Mutex<Runtime>>,
    what: String,
    f: impl FnOnce(&mut Runtime) -> T + Send + 'static,
) -> Result<T, String> {
    let r = rt.clone();
    match tokio::task::spawn_blocking(move || lock(&r).map(|mut g| f(&mut g))).await {
        Ok(res) => res,
        Err(e) => {
            // The panic is reported here, on the pod it concerns: the next operation
            // must not find (and be blamed for) the poison it left.
            rt.clear_poison();
            Err(format!("the pod runtime panicked while {what}: {e}"))
        }
    }
}

impl PodSync {
    pub async fn reconcile(
        &mut self,
        client: &Client,
        rt: Arc<Mutex<Runtime>>,
        cfg: &AgentConfig,
        pods: Vec<Arc<Pod>>,
        policy: Option<&super::lag::Queue<super::policy::Event>>,
    ) -> Pass {
        let mut want: HashMap<String, Arc<Pod>> = HashMap::new();
        let mut deleting: HashMap<String, Arc<Pod>> = HashMap::new();
        for p in pods {
            let Some(uid) = p.metadata.uid.clone() else {
                continue;
            };
            if p.metadata.deletion_timestamp.is_some() {
                deleting.insert(uid, p);
            } else if !is_terminal(&p) {
                want.insert(uid, p);
            }
        }
        if !self.took_over {
            // After a restart the runtime adopted whatever was running: all of it becomes
            // ours, so pods deleted meanwhile (or being deleted) are stopped below.
            match lock(&rt) {
                Ok(r) => {
                    self.running.extend(r.pods());
                    self.took_over = true;
                }
                Err(e) => tracing::warn!("taking over the adopted pods: {e}"),
            }
        }
        self.stop_unwanted(&rt, &want, &deleting).await;
        self.remove_deleted(client, &deleting).await;
        let more = self.start_wanted(&rt, &want, policy).await;
        if let Err(e) = blocking(&rt, "probing".into(), |r| r.probe_all()).await {
            tracing::warn!("probing pods: {e}");
        }
        self.report(client, &rt, cfg, &want).await;
        let known = |u: &str| want.contains_key(u) || deleting.contains_key(u);
        self.starts.retain(known);
        let running = &self.running;
        self.ends.retain(|u| known(u) || running.contains(u));
        if more {
            Pass::Unfinished
        } else {
            Pass::Done
        }
    }

    /// Stop first: frees addresses before new pods need them.
    async fn stop_unwanted(
        &mut self,
        rt: &Arc<Mutex<Runtime>>,
        want: &HashMap<String, Arc<Pod>>,
        deleting: &HashMap<String, Arc<Pod>>,
    ) {
        let now = Instant::now();
        let stop: Vec<String> = self
            .running
            .iter()
            .filter(|u| !want.contains_key(*u) && self.ends.due(u, now))
            .cloned()
            .collect();
        if stop.is_empty() {
            return;
        }
        // One batch: the pods' processes end together (see Runtime::stop_all).
        let what = format!("stopping {} pods", stop.len());
        let results = match blocking(rt, what, move |r| r.stop_all(&stop)).await {
            Ok(results) => results,
            Err(e) => {
                tracing::warn!("stopping pods: {e}; will retry");
                return;
            }
        };
        for (uid, res) in results {
            match res {
                Ok(()) => {
                    self.running.remove(&uid);
                    self.reported.remove(&uid);
                    self.ends.succeeded(&uid);
                }
                Err(e) => {
                    let e = e.to_string();
                    let n = self.ends.failed(&uid, e.clone(), Instant::now());
                    tracing::warn!(%uid, attempt = n, "stop failed, will retry: {e}");
                    // A pod whose object is gone has nobody to tell but the log.
                    if let Some(p) = deleting.get(&uid) {
                        crate::events::warning_for(
                            p,
                            "FailedKillPod",
                            format!("error killing pod (attempt {n}, retrying): {e}"),
                        );
                    }
                }
            }
        }
    }

    /// The kubelet's last word on a deleted pod it no longer runs: remove the object for
    /// good.
    async fn remove_deleted(&mut self, client: &Client, deleting: &HashMap<String, Arc<Pod>>) {
        let now = Instant::now();
        for (uid, p) in deleting {
            if self.running.contains(uid) || !self.ends.due(uid, now) {
                continue;
            }
            let api: Api<Pod> = Api::namespaced(client.clone(), &p.namespace().unwrap_or_default());
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&p.name_any(), &dp).await {
                Ok(_) => self.ends.succeeded(uid),
                // Gone already, or a new pod of that name (the uid precondition): done.
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                    self.ends.succeeded(uid)
                }
                Err(e) => {
                    let msg = format!("removing the stopped pod's object: {e}");
                    let n = self.ends.failed(uid, msg.clone(), Instant::now());
                    tracing::warn!(pod = %p.name_any(), attempt = n, "{msg}; will retry");
                    crate::events::warning_for(
                        p,
                        "FailedDelete",
                        format!("{msg} (attempt {n}, retrying)"),
                    );
                }
            }
        }
    }

    async fn start_wanted(
        &mut self,
        rt: &Arc<Mutex<Runtime>>,
        want: &HashMap<String, Arc<Pod>>,
        policy: Option<&super::lag::Queue<super::policy::Event>>,
    ) -> bool {
        let now = Instant::now();
        let mut start: Vec<Arc<Pod>> = want
            .iter()
            .filter(|(u, _)| !self.running.contains(*u) && self.starts.due(u, now))
            .map(|(_, p)| p.clone())
            .collect();
        // Oldest first, as they were created: the order a user expects them to come up.
        start.sort_by(|a, b| {
            let key = |p: &Pod| {
                (
                    p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    p.name_any(),
                )
            };
            key(a).cmp(&key(b))
        });
        let mut more = false;
        for p in start {
            // A pass that started pods for longer than this ends here: their statuses go
            // out and deleted pods are stopped before the rest are started, instead of
            // after a thousand starts (minutes on a loaded node).
            if now.elapsed() >= START_BUDGET {
                more = true;
                break;
            }
            let uid = p.metadata.uid.clone().unwrap_or_default();
            let pod = (*p).clone();
            let policy = policy.cloned();
            let res = blocking(rt, format!("starting pod {}", p.name_any()), move |r| {
                r.start_with(&pod, |st| match &policy {
                    // The pod's policy is in the kernel before its process runs.
                    Some(tx) => super::policy::before_start(tx, &pod, st.ips.clone()),
                    None => Ok(()),
                })
                .map(|_| ())
            })
            .await;
            let err = match res {
                Ok(Ok(())) => {
                    self.running.insert(uid.clone());
                    self.starts.succeeded(&uid);
                    tracing::info!(pod = %p.name_any(), "started");
                    continue;
                }
                // The runtime has told the pod's events already.
                Ok(Err(e)) => e.to_string(),
                Err(e) => {
                    crate::events::warning_for(&p, "FailedCreatePodSandBox", e.clone());
                    e
                }
            };
            let n = self.starts.failed(&uid, err.clone(), Instant::now());
            let wait = super::retry::delay(n);
            tracing::warn!(pod = %p.name_any(), attempt = n, retry_in = ?wait, "start failed: {err}");
        }
        more
    }

    /// Writes each pod's status where it changed: what the runtime runs, or why it could
    /// not start it yet.
    async fn report(
        &mut self,
        client: &Client,
        rt: &Arc<Mutex<Runtime>>,
        cfg: &AgentConfig,
        want: &HashMap<String, Arc<Pod>>,
    ) {
        for (uid, p) in want {
            let status = {
                let r = match lock(rt) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(pod = %p.name_any(), "status: {e}");
                        continue;
                    }
                };
                match r.status(uid) {
                    Some(s) => {
                        let mut st = s.to_pod_status();
                        st.host_ip = Some(cfg.node_ip.to_string());
                        st.host_ips = Some(vec![k8s_openapi::api::core::v1::HostIP {
                            ip: cfg.node_ip.to_string(),
                        }]);
                        st
                    }
                    None => match self.starts.get(uid) {
                        Some(f) => failed_status(&format!(
                            "{} (attempt {}; retried with back-off)",
                            f.message, f.attempts
                        )),
                        None => continue,
                    },
                }
            };
            let value = match serde_json::to_value(&status) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(pod = %p.name_any(), "status cannot be serialised: {e}");
                    continue;
                }
            };
            if self.reported.get(uid) == Some(&strip_times(&value)) {
                continue;
            }
            let api: Api<Pod> = Api::namespaced(client.clone(), &p.namespace().unwrap_or_default());
            let patch = serde_json::json!({ "status": value });
            match api
                .patch_status(
                    &p.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {
                    self.reported.insert(uid.clone(), strip_times(&value));
                }
                // Not recorded as reported: the next pass writes it again.
                Err(e) => tracing::warn!(pod = %p.name_any(), "status update failed: {e}"),
            }
        }
    }
}

/// Timestamps change on every pass; compare statuses without them.
fn strip_times(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => m
            .iter()
            .filter(|(k, _)| {
                !k.ends_with("Time") && k.as_str() != "startedAt" && k.as_str() != "finishedAt"
            })
            .map(|(k, v)| (k.clone(), strip_times(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        serde_json::Value::Array(a) => a.iter().map(strip_times).collect::<Vec<_>>().into(),
        other => other.clone(),
    }
}

fn failed_status(msg: &str) -> PodStatus {
    // Pending with no IP: the pod has no network, whatever a plugin printed.
    PodStatus {
        phase: Some("Pending".to_string()),
        conditions: Some(vec![PodCondition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: Some("SandboxSetupFailed".into()),
            message: Some(msg.to_string()),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime over a temporary node directory (kept alive by the returned guard).
    fn runtime() -> (tempfile::TempDir, Arc<Mutex<Runtime>>) {
        let node = tempfile::tempdir().unwrap();
        let cfg = crate::RuntimeConfig::new(
            "n",
            node.path().join("state"),
            "/bin/true",
            node.path().join("cni.json"),
        );
        let rt = Arc::new(Mutex::new(Runtime::new(cfg).unwrap()));
        (node, rt)
    }

    #[test]
    fn a_poisoned_runtime_lock_is_an_error_once_then_usable() {
        let (_node, rt) = runtime();
        let r = rt.clone();
        let _ = std::thread::spawn(move || {
            let _g = r.lock().unwrap();
            panic!("a runtime operation panics while holding the lock");
        })
        .join();
        assert!(rt.is_poisoned());
        let e = lock(&rt).err().unwrap();
        assert!(e.contains("poisoned") && e.contains("retrying"), "{e}");
        assert!(lock(&rt).is_ok(), "the retry gets the runtime");
    }

    #[tokio::test]
    async fn a_panic_in_an_operation_is_reported_for_it_and_not_the_next() {
        let (_node, rt) = runtime();
        let e = blocking(&rt, "starting pod web".into(), |_| -> () { panic!("boom") })
            .await
            .unwrap_err();
        assert!(e.contains("starting pod web") && e.contains("boom"), "{e}");
        let pods = blocking(&rt, "listing".into(), |r| r.pods()).await.unwrap();
        assert!(pods.is_empty());
    }
}

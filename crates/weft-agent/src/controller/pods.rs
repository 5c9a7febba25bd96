//! This node's pods: start what the API wants, stop what it no longer does, and report
//! what each one is (IP, phase, readiness) in its status, as a kubelet would.

use super::AgentConfig;
use crate::Runtime;
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct PodSync {
    running: HashSet<String>,
    /// The status last written for each pod, so unchanged pods cost no API call.
    reported: HashMap<String, serde_json::Value>,
    failed: HashMap<String, String>,
    took_over: bool,
}

fn is_terminal(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

impl PodSync {
    pub async fn reconcile(
        &mut self,
        client: &Client,
        rt: Arc<Mutex<Runtime>>,
        cfg: &AgentConfig,
        pods: Vec<Arc<Pod>>,
        policy: Option<&std::sync::mpsc::Sender<super::policy::Event>>,
    ) {
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
            if let Ok(r) = rt.lock() {
                self.running.extend(r.pods());
                self.took_over = true;
            }
        }
        // Stop first: frees addresses before new pods need them.
        let stop: Vec<String> = self
            .running
            .iter()
            .filter(|u| !want.contains_key(*u))
            .cloned()
            .collect();
        for uid in stop {
            let r = rt.clone();
            let u = uid.clone();
            let res =
                tokio::task::spawn_blocking(move || r.lock().ok().map(|mut r| r.stop(&u))).await;
            match res {
                Ok(Some(Ok(()))) => {
                    self.running.remove(&uid);
                    self.reported.remove(&uid);
                }
                other => tracing::warn!(%uid, "stop failed: {other:?}"),
            }
        }
        for (uid, p) in &deleting {
            if !self.running.contains(uid) {
                // The kubelet's last word on a deleted pod: remove the object for good.
                let api: Api<Pod> =
                    Api::namespaced(client.clone(), &p.namespace().unwrap_or_default());
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                let _ = api.delete(&p.name_any(), &dp).await;
            }
        }
        let start: Vec<Arc<Pod>> = want
            .iter()
            .filter(|(u, _)| !self.running.contains(*u))
            .map(|(_, p)| p.clone())
            .collect();
        for p in start {
            let uid = p.metadata.uid.clone().unwrap_or_default();
            let r = rt.clone();
            let pod = (*p).clone();
            let policy = policy.cloned();
            let res = tokio::task::spawn_blocking(move || {
                r.lock().ok().map(|mut r| {
                    r.start_with(&pod, |st| match &policy {
                        // The pod's policy is in the kernel before its process runs.
                        Some(tx) => super::policy::before_start(tx, &pod, st.ips.clone()),
                        None => Ok(()),
                    })
                    .map(|_| ())
                })
            })
            .await;
            match res {
                Ok(Some(Ok(()))) => {
                    self.running.insert(uid.clone());
                    self.failed.remove(&uid);
                    tracing::info!(pod = %p.name_any(), "started");
                }
                Ok(Some(Err(e))) => {
                    tracing::warn!(pod = %p.name_any(), "start failed: {e}");
                    self.failed.insert(uid.clone(), e.to_string());
                }
                other => tracing::warn!(pod = %p.name_any(), "start failed: {other:?}"),
            }
        }
        {
            let r = rt.clone();
            let _ =
                tokio::task::spawn_blocking(move || r.lock().ok().map(|mut r| r.probe_all())).await;
        }
        for (uid, p) in &want {
            let status = {
                let Ok(r) = rt.lock() else { continue };
                match r.status(uid) {
                    Some(s) => {
                        let mut st = s.to_pod_status();
                        st.host_ip = Some(cfg.node_ip.to_string());
                        st.host_ips = Some(vec![k8s_openapi::api::core::v1::HostIP {
                            ip: cfg.node_ip.to_string(),
                        }]);
                        st
                    }
                    None => match self.failed.get(uid) {
                        Some(msg) => failed_status(msg),
                        None => continue,
                    },
                }
            };
            let value = serde_json::to_value(&status).unwrap_or_default();
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

//! Posts the runtime's pod events ([`crate::events`]) as core/v1 Events, as a kubelet
//! does: `source.component: kubelet`, `source.host: <node>`. A report that repeats
//! (the same pod, reason and message within ten minutes) raises the first Event's
//! `count` and `lastTimestamp` instead of making a new one, at most every five seconds.

use super::AgentConfig;
use crate::events::PodEvent;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const SAME_FOR: Duration = Duration::from_secs(600);
const PATCH_EVERY: Duration = Duration::from_secs(5);

struct Seen {
    name: String,
    count: i32,
    first: Instant,
    patched: Instant,
    pending: bool,
}

/// Installs the recorder; its task runs for the agent's life.
pub fn start(client: &Client, cfg: &AgentConfig) {
    let Some(mut rx) = crate::events::install() else {
        return;
    };
    let (client, node) = (client.clone(), cfg.node_name.clone());
    tokio::spawn(async move {
        let mut seen: HashMap<(String, &'static str, String), Seen> = HashMap::new();
        let mut tick = tokio::time::interval(PATCH_EVERY);
        loop {
            let ev = tokio::select! {
                ev = rx.recv() => match ev { Some(ev) => Some(ev), None => return },
                _ = tick.tick() => None,
            };
            seen.retain(|_, s| s.first.elapsed() < SAME_FOR);
            if let Some(ev) = ev {
                let key = (ev.uid.clone(), ev.reason, ev.message.clone());
                match seen.get_mut(&key) {
                    Some(s) => {
                        s.count += 1;
                        s.pending = true;
                    }
                    None => {
                        if let Some(name) = create(&client, &node, &ev).await {
                            let now = Instant::now();
                            seen.insert(
                                key,
                                Seen {
                                    name,
                                    count: 1,
                                    first: now,
                                    patched: now,
                                    pending: false,
                                },
                            );
                        }
                        continue;
                    }
                }
            }
            for ((_, _, _), s) in seen.iter_mut() {
                if s.pending && s.patched.elapsed() >= PATCH_EVERY {
                    s.pending = false;
                    s.patched = Instant::now();
                    let ns = s.name.split('/').next().unwrap_or_default().to_string();
                    let name = s.name.split('/').nth(1).unwrap_or_default().to_string();
                    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
                    let patch = serde_json::json!({"count": s.count, "lastTimestamp": now()});
                    if let Err(e) = api
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        tracing::debug!("event {name}: {e}");
                    }
                }
            }
        }
    });
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Creates the Event; its `namespace/name`.
async fn create(client: &Client, node: &str, ev: &PodEvent) -> Option<String> {
    let t = now();
    let nanos = t.0.as_nanosecond();
    let event = Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{:x}", ev.name, nanos)),
            namespace: Some(ev.namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(ev.namespace.clone()),
            name: Some(ev.name.clone()),
            uid: Some(ev.uid.clone()),
            ..Default::default()
        },
        reason: Some(ev.reason.to_string()),
        message: Some(ev.message.clone()),
        type_: Some(ev.type_.to_string()),
        count: Some(1),
        first_timestamp: Some(t.clone()),
        last_timestamp: Some(t),
        source: Some(EventSource {
            component: Some("kubelet".into()),
            host: Some(node.to_string()),
        }),
        reporting_component: Some("weft-agent".into()),
        reporting_instance: Some(node.to_string()),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &ev.namespace);
    match api.create(&PostParams::default(), &event).await {
        Ok(e) => Some(format!(
            "{}/{}",
            ev.namespace,
            e.metadata.name.unwrap_or_default()
        )),
        Err(e) => {
            tracing::debug!(pod = %ev.name, reason = ev.reason, "recording an event: {e}");
            None
        }
    }
}

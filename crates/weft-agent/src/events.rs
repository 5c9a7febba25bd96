//! What happens to a pod on this node, as Kubernetes Events tell it (`kubectl describe
//! pod`): the runtime reports here (network set up, container started, probe failed,
//! killed, sandbox failure); the agent's recorder ([`install`]) posts them to the API.
//! Without a recorder (tests, `weft-pod`) reports go nowhere.

use std::sync::OnceLock;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::spec::PodPlan;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEvent {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    pub reason: &'static str,
    pub message: String,
}

static SINK: OnceLock<UnboundedSender<PodEvent>> = OnceLock::new();

/// Makes this process's reports come out of the returned receiver; None if a recorder
/// was installed before.
pub fn install() -> Option<UnboundedReceiver<PodEvent>> {
    let (tx, rx) = unbounded_channel();
    SINK.set(tx).ok().map(|()| rx)
}

pub(crate) fn emit(plan: &PodPlan, type_: &'static str, reason: &'static str, message: String) {
    if let Some(tx) = SINK.get() {
        let _ = tx.send(PodEvent {
            uid: plan.uid.clone(),
            namespace: plan.namespace.clone(),
            name: plan.name.clone(),
            type_,
            reason,
            message,
        });
    }
}

pub(crate) fn normal(plan: &PodPlan, reason: &'static str, message: String) {
    emit(plan, "Normal", reason, message)
}

pub(crate) fn warning(plan: &PodPlan, reason: &'static str, message: String) {
    emit(plan, "Warning", reason, message)
}

/// A report about a pod the runtime could not even plan (its spec is refused).
pub(crate) fn warning_for(
    pod: &k8s_openapi::api::core::v1::Pod,
    reason: &'static str,
    message: String,
) {
    if let Some(tx) = SINK.get() {
        let m = &pod.metadata;
        let _ = tx.send(PodEvent {
            uid: m.uid.clone().unwrap_or_default(),
            namespace: m.namespace.clone().unwrap_or_else(|| "default".into()),
            name: m.name.clone().unwrap_or_default(),
            type_: "Warning",
            reason,
            message,
        });
    }
}

//! The runtime's view of a pod as the Kubernetes `PodStatus` a kubelet would report: phase,
//! IPs, conditions, container statuses. Pure; the caller adds what the node knows (hostIP).

use k8s_openapi::api::core::v1::{
    ContainerState as KubeContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStatus, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::status::{ContainerState, PodRuntimeStatus};

fn time(secs: Option<u64>) -> Option<Time> {
    let secs = i64::try_from(secs?).ok()?;
    Timestamp::from_second(secs).ok().map(Time)
}

fn condition(kind: &str, ok: bool) -> PodCondition {
    PodCondition {
        type_: kind.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        ..Default::default()
    }
}

impl PodRuntimeStatus {
    pub fn to_pod_status(&self) -> PodStatus {
        let containers_ready = self.ready;
        PodStatus {
            phase: Some(self.phase.clone()),
            pod_ip: self.ips.first().map(|ip| ip.to_string()),
            pod_ips: Some(
                self.ips
                    .iter()
                    .map(|ip| PodIP { ip: ip.to_string() })
                    .collect(),
            ),
            start_time: time(self.started_at),
            conditions: Some(vec![
                condition("PodReadyToStartContainers", true),
                condition("Initialized", true),
                condition("ContainersReady", containers_ready),
                condition("Ready", containers_ready),
                condition("PodScheduled", true),
            ]),
            container_statuses: Some(self.containers.iter().map(container_status).collect()),
            ..Default::default()
        }
    }
}

fn container_status(c: &ContainerState) -> ContainerStatus {
    let id = c.pid.map(|pid| format!("weft://{pid}"));
    let state = if c.running {
        KubeContainerState {
            running: Some(ContainerStateRunning {
                started_at: time(c.started_at),
            }),
            ..Default::default()
        }
    } else {
        // An exit nobody saw (the container ended while no agent was its parent) is
        // reported the way kubelet reports a lost container.
        let (code, reason) = match c.exit_code {
            Some(0) => (0, "Completed"),
            Some(n) => (n, "Error"),
            None => (137, "ContainerStatusUnknown"),
        };
        KubeContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                reason: Some(reason.to_string()),
                container_id: id.clone(),
                started_at: time(c.started_at),
                signal: (code > 128).then_some(code - 128),
                ..Default::default()
            }),
            ..Default::default()
        }
    };
    ContainerStatus {
        name: c.name.clone(),
        ready: c.ready,
        started: Some(c.running),
        restart_count: i32::try_from(c.restarts).unwrap_or(i32::MAX),
        container_id: id,
        state: Some(state),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(containers: Vec<ContainerState>, ready: bool) -> PodRuntimeStatus {
        PodRuntimeStatus {
            uid: "u".into(),
            phase: "Running".into(),
            started_at: Some(1_700_000_000),
            namespace: "default".into(),
            name: "web".into(),
            ips: vec!["10.244.1.2".parse().unwrap()],
            netns: "/run/netns/x".into(),
            containers,
            ready,
        }
    }

    fn c(running: bool, exit_code: Option<i32>, ready: bool) -> ContainerState {
        ContainerState {
            name: "c".into(),
            pid: Some(42),
            running,
            exit_code,
            ready,
            restarts: 2,
            started_at: Some(1_700_000_001),
        }
    }

    #[test]
    fn a_ready_pod() {
        let s = st(vec![c(true, None, true)], true).to_pod_status();
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.244.1.2"));
        let ready = s
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        let cs = &s.container_statuses.unwrap()[0];
        assert_eq!((cs.ready, cs.restart_count), (true, 2));
        let running = cs.state.as_ref().unwrap().running.as_ref().unwrap();
        assert_eq!(
            running.started_at.as_ref().unwrap().0.as_second(),
            1_700_000_001
        );
        let json = serde_json::to_value(&s.start_time).unwrap();
        assert_eq!(json, "2023-11-14T22:13:20Z");
    }

    #[test]
    fn ended_containers() {
        let s = st(vec![c(false, Some(3), false)], false).to_pod_status();
        let t = s.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .terminated
            .unwrap();
        assert_eq!((t.exit_code, t.reason.as_deref()), (3, Some("Error")));
        let s = st(vec![c(false, None, false)], false).to_pod_status();
        let t = s.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .terminated
            .unwrap();
        assert_eq!(t.reason.as_deref(), Some("ContainerStatusUnknown"));
    }
}

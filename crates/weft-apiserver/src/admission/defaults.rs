//! The real API server's defaults for the kinds whose defaults matter to the lab, on the
//! k8s-openapi types.

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    ClientIPConfig, ContainerPort, Namespace, NamespaceSpec, NamespaceStatus, PodSpec, Service,
    ServiceSpec, SessionAffinityConfig,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

fn default_str(field: &mut Option<String>, val: &str) {
    if field.as_deref().is_none_or(str::is_empty) {
        *field = Some(val.to_string());
    }
}

fn default_protocols(ports: Option<&mut Vec<ContainerPort>>) {
    for p in ports.into_iter().flatten() {
        default_str(&mut p.protocol, "TCP");
    }
}

pub fn namespace(ns: &mut Namespace, created: bool) {
    let name = ns.metadata.name.clone().unwrap_or_default();
    let labels = ns.metadata.labels.get_or_insert_with(Default::default);
    labels.insert("kubernetes.io/metadata.name".into(), name);
    if created {
        let spec = ns.spec.get_or_insert_with(NamespaceSpec::default);
        spec.finalizers
            .get_or_insert_with(|| vec!["kubernetes".into()]);
        ns.status = Some(NamespaceStatus {
            phase: Some("Active".into()),
            ..Default::default()
        });
    }
}

pub fn pod_spec(spec: Option<&mut PodSpec>) {
    let Some(spec) = spec else { return };
    default_str(&mut spec.restart_policy, "Always");
    default_str(&mut spec.dns_policy, "ClusterFirst");
    default_str(&mut spec.scheduler_name, "default-scheduler");
    spec.termination_grace_period_seconds.get_or_insert(30);
    for c in &mut spec.containers {
        default_protocols(c.ports.as_mut());
    }
    for c in spec.init_containers.iter_mut().flatten() {
        default_protocols(c.ports.as_mut());
    }
}

pub fn deployment(d: &mut Deployment) {
    deployment_spec(&mut d.spec);
}

fn deployment_spec(spec: &mut DeploymentSpec) {
    spec.replicas.get_or_insert(1);
    let strategy = spec
        .strategy
        .get_or_insert_with(DeploymentStrategy::default);
    default_str(&mut strategy.type_, "RollingUpdate");
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        let ru = strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateDeployment::default);
        ru.max_surge
            .get_or_insert_with(|| IntOrString::String("25%".into()));
        ru.max_unavailable
            .get_or_insert_with(|| IntOrString::String("25%".into()));
    }
    spec.revision_history_limit.get_or_insert(10);
    spec.progress_deadline_seconds.get_or_insert(600);
    pod_spec(spec.template.spec.as_mut());
}

pub fn service(svc: &mut Service) {
    let Some(spec) = svc.spec.as_mut() else {
        return;
    };
    service_spec(spec);
}

fn service_spec(spec: &mut ServiceSpec) {
    default_str(&mut spec.type_, "ClusterIP");
    let ty = spec.type_.clone().unwrap_or_default();
    if ty == "ExternalName" {
        return;
    }
    default_str(&mut spec.session_affinity, "None");
    if spec.session_affinity.as_deref() == Some("ClientIP") {
        let cfg = spec
            .session_affinity_config
            .get_or_insert_with(SessionAffinityConfig::default);
        let client = cfg.client_ip.get_or_insert_with(ClientIPConfig::default);
        client.timeout_seconds.get_or_insert(10800);
    }
    default_str(&mut spec.internal_traffic_policy, "Cluster");
    if ty == "NodePort" || ty == "LoadBalancer" {
        default_str(&mut spec.external_traffic_policy, "Cluster");
    }
    for p in spec.ports.iter_mut().flatten() {
        default_str(&mut p.protocol, "TCP");
        let unset = match &p.target_port {
            None => true,
            Some(IntOrString::Int(n)) => *n == 0,
            Some(IntOrString::String(s)) => s.is_empty(),
        };
        if unset {
            p.target_port = Some(IntOrString::Int(p.port));
        }
    }
}

/// As the real API server does when a Service stops being a NodePort/LoadBalancer:
/// node ports and the external traffic policy the user did not change are dropped; when
/// it becomes an ExternalName, so are the ClusterIPs and IP families it had (which
/// releases them).
pub fn drop_type_dependent_fields(old: &ServiceSpec, spec: &mut ServiceSpec) {
    let ty = |s: &ServiceSpec| s.type_.clone().unwrap_or_default();
    if ty(spec) == "ExternalName" && ty(old) != "ExternalName" {
        if spec.cluster_ip == old.cluster_ip {
            spec.cluster_ip = None;
        }
        if spec.cluster_ips == old.cluster_ips {
            spec.cluster_ips = None;
        }
        if spec.ip_families == old.ip_families {
            spec.ip_families = None;
        }
        if spec.ip_family_policy == old.ip_family_policy {
            spec.ip_family_policy = None;
        }
    }
    let external = |s: &ServiceSpec| matches!(ty(s).as_str(), "NodePort" | "LoadBalancer");
    if !external(old) || external(spec) {
        return;
    }
    let old_ports = old.ports.as_deref().unwrap_or_default();
    for p in spec.ports.iter_mut().flatten() {
        let unchanged = old_ports
            .iter()
            .any(|o| o.node_port == p.node_port && o.port == p.port);
        if unchanged {
            p.node_port = None;
        }
    }
    if spec.external_traffic_policy == old.external_traffic_policy {
        spec.external_traffic_policy = None;
    }
}

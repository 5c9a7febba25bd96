//! What the runtime does for a pod, derived from the Pod object alone (pure): each
//! container's program and arguments, environment, probes, and the pod's restart
//! policy and grace period. Every refusal names the field, as the API server would.

use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::names::valid_uid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    /// Whether a container that ended with `exit_code` (None: unknown, e.g. it ended while
    /// the agent was down) is started again.
    pub fn restarts(self, exit_code: Option<i32>) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != Some(0),
            RestartPolicy::Never => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PodPlan {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub hostname: String,
    /// `spec.subdomain`: the pod is also `<hostname>.<subdomain>.<namespace>.svc.<domain>`.
    pub subdomain: Option<String>,
    pub dns: DnsPlan,
    pub restart: RestartPolicy,
    pub grace: Duration,
    pub containers: Vec<ContainerPlan>,
}

/// `dnsPolicy` with `dnsConfig`, as kubelet reads them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DnsPlan {
    /// ClusterFirst (the default; ClusterFirstWithHostNet is the same for a pod with its
    /// own network), or None: only `dnsConfig`. Default: the node's resolv.conf.
    pub policy: DnsPolicy,
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    /// (name, value): `ndots:2` is ("ndots", Some("2")).
    pub options: Vec<(String, Option<String>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DnsPolicy {
    #[default]
    ClusterFirst,
    Default,
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContainerPlan {
    pub name: String,
    /// argv[0] is looked up on PATH when started; `weft` means the runtime's weft binary.
    pub argv: Vec<String>,
    pub env: Vec<(String, EnvSource)>,
    pub working_dir: Option<String>,
    pub readiness: Option<ProbePlan>,
    pub liveness: Option<ProbePlan>,
}

/// An env value: literal, or one of the downward-API fields a runtime knows at start.
#[derive(Debug, Clone, PartialEq)]
pub enum EnvSource {
    Value(String),
    PodIp,
    PodIps,
    NodeName,
    PodName,
    PodNamespace,
    PodUid,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProbePlan {
    pub action: ProbeAction,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProbeAction {
    /// `host` None means the pod's own IP.
    Tcp {
        host: Option<String>,
        port: u16,
    },
    Http {
        host: Option<String>,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    Exec {
        argv: Vec<String>,
    },
}

/// The pod's identity for messages: `namespace/name`.
pub fn pod_ref(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("?")
    )
}

pub fn plan(pod: &Pod) -> Result<PodPlan> {
    let who = pod_ref(pod);
    let bad = |field: &str, reason: &str| Error::invalid_pod(&who, field, reason);
    let name = pod
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("metadata.name", "must be set"))?;
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_string());
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if !valid_uid(&uid) {
        return Err(bad(
            "metadata.uid",
            "must be set to a plain identifier (the API server assigns one; pods written by hand need one too)",
        ));
    }
    // The API server enforces these; pods read from a file get the same checks, because the
    // names end up in namespace names, file names and CNI_ARGS.
    if !is_dns_subdomain(&name) {
        return Err(bad(
            "metadata.name",
            "must be a DNS subdomain: lower-case letters, digits, '-' and '.', at most 253",
        ));
    }
    if !is_dns_label(&namespace) {
        return Err(bad(
            "metadata.namespace",
            "must be a DNS label: lower-case letters, digits and '-', at most 63",
        ));
    }
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| bad("spec", "must be set"))?;
    let restart = match spec.restart_policy.as_deref() {
        None | Some("Always") => RestartPolicy::Always,
        Some("OnFailure") => RestartPolicy::OnFailure,
        Some("Never") => RestartPolicy::Never,
        Some(other) => {
            return Err(bad(
                "spec.restartPolicy",
                &format!("{other:?} is not one of Always, OnFailure, Never"),
            ))
        }
    };
    let grace = Duration::from_secs(
        spec.termination_grace_period_seconds
            .unwrap_or(30)
            .clamp(0, 3600) as u64,
    );
    if spec.containers.is_empty() {
        return Err(bad("spec.containers", "a pod needs at least one container"));
    }
    let mut containers: Vec<ContainerPlan> = Vec::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let at = format!("spec.containers[{i}]");
        if containers.iter().any(|p| p.name == c.name) {
            return Err(bad(
                &format!("{at}.name"),
                &format!("{:?} is used twice", c.name),
            ));
        }
        containers.push(container_plan(c, &at, &who)?);
    }
    if spec.host_network == Some(true) {
        return Err(bad(
            "spec.hostNetwork",
            "not supported: every pod gets its own network namespace here",
        ));
    }
    let dns = dns_plan(spec).map_err(|(f, r)| bad(&f, &r))?;
    let hostname = spec.hostname.clone().unwrap_or_else(|| name.clone());
    let subdomain = spec.subdomain.clone().filter(|s| !s.is_empty());
    Ok(PodPlan {
        uid,
        name,
        namespace,
        hostname,
        subdomain,
        dns,
        restart,
        grace,
        containers,
    })
}

fn container_plan(c: &Container, at: &str, who: &str) -> Result<ContainerPlan> {
    let bad =
        |field: &str, reason: String| Error::invalid_pod(who, format!("{at}.{field}"), reason);
    if !is_dns_label(&c.name) {
        return Err(bad(
            "name",
            "must be a DNS label: lower-case letters, digits and '-', at most 63".into(),
        ));
    }
    let ports = c.ports.as_deref().unwrap_or_default();
    let args = c.args.clone().unwrap_or_default();
    let argv = match c.command.as_ref().filter(|cmd| !cmd.is_empty()) {
        Some(cmd) => cmd.iter().cloned().chain(args).collect(),
        None => {
            let mut argv = serve_argv(ports).map_err(|(i, r)| bad(&format!("ports[{i}]"), r))?;
            argv.extend(args);
            argv
        }
    };
    let mut env = Vec::new();
    for (i, e) in c.env.iter().flatten().enumerate() {
        let source = match (&e.value, &e.value_from) {
            (_, Some(from)) => {
                let path = from
                    .field_ref
                    .as_ref()
                    .map(|f| f.field_path.as_str())
                    .ok_or_else(|| {
                        bad(
                            &format!("env[{i}].valueFrom"),
                            "only fieldRef is supported (no Secrets or ConfigMaps in the lab)"
                                .into(),
                        )
                    })?;
                field_source(path).ok_or_else(|| {
                    bad(
                        &format!("env[{i}].valueFrom.fieldRef.fieldPath"),
                        format!("{path:?} is not supported (metadata.name, metadata.namespace, metadata.uid, spec.nodeName, status.podIP, status.podIPs)"),
                    )
                })?
            }
            (v, None) => EnvSource::Value(v.clone().unwrap_or_default()),
        };
        env.push((e.name.clone(), source));
    }
    let readiness = c
        .readiness_probe
        .as_ref()
        .map(|p| probe_plan(p, ports).map_err(|(f, r)| bad(&format!("readinessProbe.{f}"), r)))
        .transpose()?;
    let liveness = c
        .liveness_probe
        .as_ref()
        .map(|p| probe_plan(p, ports).map_err(|(f, r)| bad(&format!("livenessProbe.{f}"), r)))
        .transpose()?;
    Ok(ContainerPlan {
        name: c.name.clone(),
        argv,
        env,
        working_dir: c.working_dir.clone().filter(|d| !d.is_empty()),
        readiness,
        liveness,
    })
}

fn dns_plan(spec: &PodSpec) -> std::result::Result<DnsPlan, (String, String)> {
    let policy = match spec.dns_policy.as_deref() {
        None | Some("ClusterFirst") | Some("ClusterFirstWithHostNet") => DnsPolicy::ClusterFirst,
        Some("Default") => DnsPolicy::Default,
        Some("None") => DnsPolicy::None,
        Some(other) => {
            return Err((
                "spec.dnsPolicy".into(),
                format!(
                    "{other:?} is not one of ClusterFirst, ClusterFirstWithHostNet, Default, None"
                ),
            ))
        }
    };
    let cfg = spec.dns_config.as_ref();
    let plan = DnsPlan {
        policy,
        nameservers: cfg.and_then(|c| c.nameservers.clone()).unwrap_or_default(),
        searches: cfg.and_then(|c| c.searches.clone()).unwrap_or_default(),
        options: cfg
            .and_then(|c| c.options.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|o| Some((o.name.clone()?, o.value.clone())))
            .collect(),
    };
    if policy == DnsPolicy::None && plan.nameservers.is_empty() {
        return Err((
            "spec.dnsConfig.nameservers".into(),
            "dnsPolicy None needs at least one nameserver in dnsConfig".into(),
        ));
    }
    Ok(plan)
}

pub use weft_cni::policy_wait::{is_label as is_dns_label, is_subdomain as is_dns_subdomain};

fn field_source(path: &str) -> Option<EnvSource> {
    Some(match path {
        "metadata.name" => EnvSource::PodName,
        "metadata.namespace" => EnvSource::PodNamespace,
        "metadata.uid" => EnvSource::PodUid,
        "spec.nodeName" => EnvSource::NodeName,
        "status.podIP" => EnvSource::PodIp,
        "status.podIPs" => EnvSource::PodIps,
        _ => return None,
    })
}

/// The built-in server for a container without a command: one listener per declared port.
/// TCP ports serve the line echo, except ports whose name starts with
/// `http`, which serve the HTTP echo; UDP and SCTP ports serve their echo.
pub fn serve_argv(ports: &[ContainerPort]) -> std::result::Result<Vec<String>, (usize, String)> {
    let mut argv = vec!["weft".to_string(), "serve".to_string()];
    for (i, p) in ports.iter().enumerate() {
        let port = u16::try_from(p.container_port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or((
                i,
                format!("containerPort {} is not in 1-65535", p.container_port),
            ))?;
        let http =
            |s: Option<&String>| s.is_some_and(|s| s.to_ascii_lowercase().starts_with("http"));
        let flag = match p.protocol.as_deref().unwrap_or("TCP") {
            "TCP" if http(p.name.as_ref()) => "--http",
            "TCP" => "--tcp",
            "UDP" => "--udp",
            "SCTP" => "--sctp",
            other => return Err((i, format!("protocol {other:?} is not TCP, UDP or SCTP"))),
        };
        argv.push(flag.to_string());
        argv.push(port.to_string());
    }
    Ok(argv)
}

fn probe_plan(
    p: &Probe,
    ports: &[ContainerPort],
) -> std::result::Result<ProbePlan, (String, String)> {
    let action = if let Some(t) = &p.tcp_socket {
        ProbeAction::Tcp {
            host: t.host.clone().filter(|h| !h.is_empty()),
            port: resolve_port(&t.port, ports).map_err(|r| ("tcpSocket.port".to_string(), r))?,
        }
    } else if let Some(h) = &p.http_get {
        if h.scheme
            .as_deref()
            .is_some_and(|s| !s.eq_ignore_ascii_case("HTTP"))
        {
            return Err((
                "httpGet.scheme".into(),
                "only HTTP is supported by this runtime's prober".into(),
            ));
        }
        ProbeAction::Http {
            host: h.host.clone().filter(|h| !h.is_empty()),
            port: resolve_port(&h.port, ports).map_err(|r| ("httpGet.port".to_string(), r))?,
            path: h
                .path
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "/".into()),
            headers: h
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
        }
    } else if let Some(e) = &p.exec {
        let argv = e.command.clone().unwrap_or_default();
        if argv.is_empty() {
            return Err(("exec.command".into(), "must not be empty".into()));
        }
        ProbeAction::Exec { argv }
    } else {
        return Err((
            "".into(),
            "needs one of tcpSocket, httpGet or exec (grpc is not supported)".into(),
        ));
    };
    let secs = |v: Option<i32>, default: i32, min: i32| {
        Duration::from_secs(v.unwrap_or(default).max(min) as u64)
    };
    Ok(ProbePlan {
        action,
        initial_delay: secs(p.initial_delay_seconds, 0, 0),
        period: secs(p.period_seconds, 10, 1),
        timeout: secs(p.timeout_seconds, 1, 1),
        success_threshold: p.success_threshold.unwrap_or(1).max(1) as u32,
        failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
    })
}

/// A probe's port: a number, or the name of one of the container's ports.
fn resolve_port(port: &IntOrString, ports: &[ContainerPort]) -> std::result::Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n)
            .ok()
            .filter(|n| *n != 0)
            .ok_or_else(|| format!("{n} is not in 1-65535")),
        IntOrString::String(s) => {
            if let Ok(n) = s.parse::<u16>() {
                return Ok(n);
            }
            ports
                .iter()
                .find(|p| p.name.as_deref() == Some(s.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("no containerPort is named {s:?}"))
        }
    }
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;

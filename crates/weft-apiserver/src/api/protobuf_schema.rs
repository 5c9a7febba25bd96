//! Field numbers of the Kubernetes protobuf messages weft decodes (from the API's
//! `generated.proto` files): the kinds kubectl's imperative commands create, and the
//! messages inside them. JSON names are the protobuf names; an empty name marks an inline
//! (embedded) struct whose fields belong to the parent in JSON.

#[derive(Debug, Clone, Copy)]
pub enum Ty {
    Str,
    Bytes,
    Bool,
    I32,
    I64,
    /// meta/v1 Time: { seconds = 1; nanos = 2 }, JSON RFC 3339.
    Time,
    /// resource.Quantity: { string = 1 }, JSON string.
    Quantity,
    /// intstr.IntOrString: { type = 1; intVal = 2; strVal = 3 }.
    IntOrString,
    Msg(&'static str),
    /// map<string, V>: repeated { key = 1; value = 2 }.
    Map(&'static Ty),
}

#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub num: u32,
    pub name: &'static str,
    pub ty: Ty,
    pub repeated: bool,
    /// A Go pointer field: sent only when set, so zero is a value to keep.
    pub pointer: bool,
}

const fn f(num: u32, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: false,
        pointer: false,
    }
}
const fn rep(num: u32, name: &'static str, ty: Ty) -> Field {
    Field {
        repeated: true,
        ..f(num, name, ty)
    }
}
const fn ptr(num: u32, name: &'static str, ty: Ty) -> Field {
    Field {
        pointer: true,
        ..f(num, name, ty)
    }
}
const fn inline(num: u32, msg: &'static str) -> Field {
    f(num, "", Ty::Msg(msg))
}

use Ty::*;
const MAP_STR: Ty = Map(&Str);
const MAP_BYTES: Ty = Map(&Bytes);
const MAP_QTY: Ty = Map(&Quantity);

const OBJECT_META: &[Field] = &[
    f(1, "name", Str),
    f(2, "generateName", Str),
    f(3, "namespace", Str),
    f(4, "selfLink", Str),
    f(5, "uid", Str),
    f(6, "resourceVersion", Str),
    f(7, "generation", I64),
    f(8, "creationTimestamp", Time),
    f(9, "deletionTimestamp", Time),
    f(10, "deletionGracePeriodSeconds", I64),
    f(11, "labels", MAP_STR),
    f(12, "annotations", MAP_STR),
    rep(13, "ownerReferences", Msg("OwnerReference")),
    rep(14, "finalizers", Str),
];
const OWNER_REFERENCE: &[Field] = &[
    f(1, "kind", Str),
    f(3, "name", Str),
    f(4, "uid", Str),
    f(5, "apiVersion", Str),
    ptr(6, "controller", Bool),
    ptr(7, "blockOwnerDeletion", Bool),
];
const LABEL_SELECTOR: &[Field] = &[
    f(1, "matchLabels", MAP_STR),
    rep(2, "matchExpressions", Msg("LabelSelectorRequirement")),
];
const LABEL_SELECTOR_REQUIREMENT: &[Field] = &[
    f(1, "key", Str),
    f(2, "operator", Str),
    rep(3, "values", Str),
];

const NAMESPACE: &[Field] = &[
    f(1, "metadata", Msg("ObjectMeta")),
    f(2, "spec", Msg("NamespaceSpec")),
    f(3, "status", Msg("NamespaceStatus")),
];
const NAMESPACE_SPEC: &[Field] = &[rep(1, "finalizers", Str)];
const NAMESPACE_STATUS: &[Field] = &[f(1, "phase", Str)];

const CONFIG_MAP: &[Field] = &[
    f(1, "metadata", Msg("ObjectMeta")),
    f(2, "data", MAP_STR),
    f(3, "binaryData", MAP_BYTES),
    ptr(4, "immutable", Bool),
];
const SECRET: &[Field] = &[
    f(1, "metadata", Msg("ObjectMeta")),
    f(2, "data", MAP_BYTES),
    f(3, "type", Str),
    f(4, "stringData", MAP_STR),
    ptr(5, "immutable", Bool),
];
const SERVICE_ACCOUNT: &[Field] = &[
    f(1, "metadata", Msg("ObjectMeta")),
    rep(2, "secrets", Msg("ObjectReference")),
    rep(3, "imagePullSecrets", Msg("LocalObjectReference")),
    ptr(4, "automountServiceAccountToken", Bool),
];
const OBJECT_REFERENCE: &[Field] = &[
    f(1, "kind", Str),
    f(2, "namespace", Str),
    f(3, "name", Str),
    f(4, "uid", Str),
    f(5, "apiVersion", Str),
    f(6, "resourceVersion", Str),
    f(7, "fieldPath", Str),
];
const LOCAL_OBJECT_REFERENCE: &[Field] = &[f(1, "name", Str)];

const SERVICE: &[Field] = &[
    f(1, "metadata", Msg("ObjectMeta")),
    f(2, "spec", Msg("ServiceSpec")),
    f(3, "status", Msg("ServiceStatus")),
];
const SERVICE_SPEC: &[Field] = &[
    rep(1, "ports", Msg("ServicePort")),
    f(2, "selector", MAP_STR),
    f(3, "clusterIP", Str),
    f(4, "type", Str),
    rep(5, "externalIPs", Str),
    f(7, "sessionAffinity", Str),
    f(8, "loadBalancerIP", Str),
    rep(9, "loadBalancerSourceRanges", Str),
    f(10, "externalName", Str),
    f(11, "externalTrafficPolicy", Str),
    f(12, "healthCheckNodePort", I32),
    f(13, "publishNotReadyAddresses", Bool),
    f(14, "sessionAffinityConfig", Msg("SessionAffinityConfig")),
    ptr(17, "ipFamilyPolicy", Str),
    rep(18, "clusterIPs", Str),
    rep(19, "ipFamilies", Str),
    ptr(20, "allocateLoadBalancerNodePorts", Bool),
    ptr(21, "loadBalancerClass", Str),
    ptr(22, "internalTrafficPolicy", Str),
    ptr(23, "trafficDistribution", Str),
];
const SERVICE_PORT: &[Field] = &[
    f(1, "name", Str),
    f(2, "protocol", Str),
    f(3, "port", I32),
    f(4, "targetPort", IntOrString),
    f(5, "nodePort", I32),
    ptr(6, "appProtocol", Str),
];
const SESSION_AFFINITY_CONFIG: &[Field] = &[f(1, "clientIP", Msg("ClientIPConfig"))];
const CLIENT_IP_CONFIG: &[Field] = &[ptr(1, "timeoutSeconds", I32)];
const SERVICE_STATUS: &[Field] = &[f(1, "loadBalancer", Msg("LoadBalancerStatus"))];
const LOAD_BALANCER_STATUS: &[Field] = &[rep(1, "ingress", Msg("LoadBalancerIngress"))];
const LOAD_BALANCER_INGRESS: &[Field] = &[
    f(1, "ip", Str),
    f(2, "hostname", Str),
    ptr(3, "ipMode", Str),
    rep(4, "ports", Msg("PortStatus")),
];
const PORT_STATUS: &[Field] = &[
    f(1, "port", I32),
    f(2, "protocol", Str),
    ptr(3, "error", Str),
];

const DEPLOYMENT: &[Field] = &[
    f(1, "metadata", Msg("ObjectMeta")),
    f(2, "spec", Msg("DeploymentSpec")),
    f(3, "status", Msg("DeploymentStatus")),
];
const DEPLOYMENT_SPEC: &[Field] = &[
    ptr(1, "replicas", I32),
    f(2, "selector", Msg("LabelSelector")),
    f(3, "template", Msg("PodTemplateSpec")),
    f(4, "strategy", Msg("DeploymentStrategy")),
    f(5, "minReadySeconds", I32),
    ptr(6, "revisionHistoryLimit", I32),
    f(7, "paused", Bool),
    ptr(9, "progressDeadlineSeconds", I32),
];
const DEPLOYMENT_STRATEGY: &[Field] = &[
    f(1, "type", Str),
    f(2, "rollingUpdate", Msg("RollingUpdateDeployment")),
];
const ROLLING_UPDATE_DEPLOYMENT: &[Field] = &[
    f(1, "maxUnavailable", IntOrString),
    f(2, "maxSurge", IntOrString),
];
const DEPLOYMENT_STATUS: &[Field] = &[
    f(1, "observedGeneration", I64),
    f(2, "replicas", I32),
    f(3, "updatedReplicas", I32),
    f(4, "availableReplicas", I32),
    f(5, "unavailableReplicas", I32),
    f(7, "readyReplicas", I32),
    ptr(8, "collisionCount", I32),
    ptr(9, "terminatingReplicas", I32),
];

const POD: &[Field] = &[
    f(1, "metadata", Msg("ObjectMeta")),
    f(2, "spec", Msg("PodSpec")),
    f(3, "status", Msg("PodStatus")),
];
const POD_TEMPLATE_SPEC: &[Field] = &[
    f(1, "metadata", Msg("ObjectMeta")),
    f(2, "spec", Msg("PodSpec")),
];
const POD_SPEC: &[Field] = &[
    rep(2, "containers", Msg("Container")),
    f(3, "restartPolicy", Str),
    ptr(4, "terminationGracePeriodSeconds", I64),
    ptr(5, "activeDeadlineSeconds", I64),
    f(6, "dnsPolicy", Str),
    f(7, "nodeSelector", MAP_STR),
    f(8, "serviceAccountName", Str),
    f(9, "serviceAccount", Str),
    f(10, "nodeName", Str),
    f(11, "hostNetwork", Bool),
    f(12, "hostPID", Bool),
    f(13, "hostIPC", Bool),
    rep(15, "imagePullSecrets", Msg("LocalObjectReference")),
    f(16, "hostname", Str),
    f(17, "subdomain", Str),
    f(19, "schedulerName", Str),
    rep(20, "initContainers", Msg("Container")),
    ptr(21, "automountServiceAccountToken", Bool),
    f(24, "priorityClassName", Str),
    ptr(25, "priority", I32),
    ptr(27, "shareProcessNamespace", Bool),
    ptr(29, "runtimeClassName", Str),
    ptr(30, "enableServiceLinks", Bool),
    ptr(31, "preemptionPolicy", Str),
    ptr(35, "setHostnameAsFQDN", Bool),
    ptr(37, "hostUsers", Bool),
];
const POD_STATUS: &[Field] = &[
    f(1, "phase", Str),
    f(3, "message", Str),
    f(4, "reason", Str),
    f(5, "hostIP", Str),
    f(6, "podIP", Str),
    f(7, "startTime", Time),
    f(9, "qosClass", Str),
    f(11, "nominatedNodeName", Str),
    f(14, "resize", Str),
    f(17, "observedGeneration", I64),
];
const CONTAINER: &[Field] = &[
    f(1, "name", Str),
    f(2, "image", Str),
    rep(3, "command", Str),
    rep(4, "args", Str),
    f(5, "workingDir", Str),
    rep(6, "ports", Msg("ContainerPort")),
    rep(7, "env", Msg("EnvVar")),
    f(8, "resources", Msg("ResourceRequirements")),
    f(10, "livenessProbe", Msg("Probe")),
    f(11, "readinessProbe", Msg("Probe")),
    f(13, "terminationMessagePath", Str),
    f(14, "imagePullPolicy", Str),
    f(16, "stdin", Bool),
    f(17, "stdinOnce", Bool),
    f(18, "tty", Bool),
    f(20, "terminationMessagePolicy", Str),
    f(22, "startupProbe", Msg("Probe")),
    ptr(24, "restartPolicy", Str),
];
const CONTAINER_PORT: &[Field] = &[
    f(1, "name", Str),
    f(2, "hostPort", I32),
    f(3, "containerPort", I32),
    f(4, "protocol", Str),
    f(5, "hostIP", Str),
];
const ENV_VAR: &[Field] = &[
    f(1, "name", Str),
    f(2, "value", Str),
    f(3, "valueFrom", Msg("EnvVarSource")),
];
const ENV_VAR_SOURCE: &[Field] = &[
    f(1, "fieldRef", Msg("ObjectFieldSelector")),
    f(3, "configMapKeyRef", Msg("KeySelector")),
    f(4, "secretKeyRef", Msg("KeySelector")),
];
const OBJECT_FIELD_SELECTOR: &[Field] = &[f(1, "apiVersion", Str), f(2, "fieldPath", Str)];
/// ConfigMapKeySelector and SecretKeySelector share their layout.
const KEY_SELECTOR: &[Field] = &[
    inline(1, "LocalObjectReference"),
    f(2, "key", Str),
    ptr(3, "optional", Bool),
];
const RESOURCE_REQUIREMENTS: &[Field] = &[f(1, "limits", MAP_QTY), f(2, "requests", MAP_QTY)];
const PROBE: &[Field] = &[
    inline(1, "ProbeHandler"),
    f(2, "initialDelaySeconds", I32),
    f(3, "timeoutSeconds", I32),
    f(4, "periodSeconds", I32),
    f(5, "successThreshold", I32),
    f(6, "failureThreshold", I32),
    ptr(7, "terminationGracePeriodSeconds", I64),
];
const PROBE_HANDLER: &[Field] = &[
    f(1, "exec", Msg("ExecAction")),
    f(2, "httpGet", Msg("HTTPGetAction")),
    f(3, "tcpSocket", Msg("TCPSocketAction")),
];
const EXEC_ACTION: &[Field] = &[rep(1, "command", Str)];
const HTTP_GET_ACTION: &[Field] = &[
    f(1, "path", Str),
    f(2, "port", IntOrString),
    f(3, "host", Str),
    f(4, "scheme", Str),
    rep(5, "httpHeaders", Msg("HTTPHeader")),
];
const HTTP_HEADER: &[Field] = &[f(1, "name", Str), f(2, "value", Str)];
const TCP_SOCKET_ACTION: &[Field] = &[f(1, "port", IntOrString), f(2, "host", Str)];

const INGRESS: &[Field] = &[
    f(1, "metadata", Msg("ObjectMeta")),
    f(2, "spec", Msg("IngressSpec")),
    f(3, "status", Msg("IngressStatus")),
];
const INGRESS_SPEC: &[Field] = &[
    f(1, "defaultBackend", Msg("IngressBackend")),
    rep(2, "tls", Msg("IngressTLS")),
    rep(3, "rules", Msg("IngressRule")),
    ptr(4, "ingressClassName", Str),
];
const INGRESS_TLS: &[Field] = &[rep(1, "hosts", Str), f(2, "secretName", Str)];
const INGRESS_RULE: &[Field] = &[f(1, "host", Str), inline(2, "IngressRuleValue")];
const INGRESS_RULE_VALUE: &[Field] = &[f(1, "http", Msg("HTTPIngressRuleValue"))];
const HTTP_INGRESS_RULE_VALUE: &[Field] = &[rep(1, "paths", Msg("HTTPIngressPath"))];
const HTTP_INGRESS_PATH: &[Field] = &[
    f(1, "path", Str),
    f(2, "backend", Msg("IngressBackend")),
    ptr(3, "pathType", Str),
];
const INGRESS_BACKEND: &[Field] = &[f(4, "service", Msg("IngressServiceBackend"))];
const INGRESS_SERVICE_BACKEND: &[Field] =
    &[f(1, "name", Str), f(2, "port", Msg("ServiceBackendPort"))];
const SERVICE_BACKEND_PORT: &[Field] = &[f(1, "name", Str), f(2, "number", I32)];
const INGRESS_STATUS: &[Field] = &[f(1, "loadBalancer", Msg("IngressLoadBalancerStatus"))];
const INGRESS_LOAD_BALANCER_STATUS: &[Field] =
    &[rep(1, "ingress", Msg("IngressLoadBalancerIngress"))];
const INGRESS_LOAD_BALANCER_INGRESS: &[Field] = &[
    f(1, "ip", Str),
    f(2, "hostname", Str),
    rep(4, "ports", Msg("PortStatus")),
];

/// The fields of message (or kind) `name`.
pub fn message(name: &str) -> Option<&'static [Field]> {
    Some(match name {
        "Namespace" => NAMESPACE,
        "NamespaceSpec" => NAMESPACE_SPEC,
        "NamespaceStatus" => NAMESPACE_STATUS,
        "ConfigMap" => CONFIG_MAP,
        "Secret" => SECRET,
        "ServiceAccount" => SERVICE_ACCOUNT,
        "ObjectReference" => OBJECT_REFERENCE,
        "LocalObjectReference" => LOCAL_OBJECT_REFERENCE,
        "Service" => SERVICE,
        "ServiceSpec" => SERVICE_SPEC,
        "ServicePort" => SERVICE_PORT,
        "SessionAffinityConfig" => SESSION_AFFINITY_CONFIG,
        "ClientIPConfig" => CLIENT_IP_CONFIG,
        "ServiceStatus" => SERVICE_STATUS,
        "LoadBalancerStatus" => LOAD_BALANCER_STATUS,
        "LoadBalancerIngress" => LOAD_BALANCER_INGRESS,
        "PortStatus" => PORT_STATUS,
        "Deployment" => DEPLOYMENT,
        "DeploymentSpec" => DEPLOYMENT_SPEC,
        "DeploymentStrategy" => DEPLOYMENT_STRATEGY,
        "RollingUpdateDeployment" => ROLLING_UPDATE_DEPLOYMENT,
        "DeploymentStatus" => DEPLOYMENT_STATUS,
        "Pod" => POD,
        "PodTemplateSpec" => POD_TEMPLATE_SPEC,
        "PodSpec" => POD_SPEC,
        "PodStatus" => POD_STATUS,
        "Container" => CONTAINER,
        "ContainerPort" => CONTAINER_PORT,
        "EnvVar" => ENV_VAR,
        "EnvVarSource" => ENV_VAR_SOURCE,
        "ObjectFieldSelector" => OBJECT_FIELD_SELECTOR,
        "KeySelector" => KEY_SELECTOR,
        "ResourceRequirements" => RESOURCE_REQUIREMENTS,
        "Probe" => PROBE,
        "ProbeHandler" => PROBE_HANDLER,
        "ExecAction" => EXEC_ACTION,
        "HTTPGetAction" => HTTP_GET_ACTION,
        "HTTPHeader" => HTTP_HEADER,
        "TCPSocketAction" => TCP_SOCKET_ACTION,
        "Ingress" => INGRESS,
        "IngressSpec" => INGRESS_SPEC,
        "IngressTLS" => INGRESS_TLS,
        "IngressRule" => INGRESS_RULE,
        "IngressRuleValue" => INGRESS_RULE_VALUE,
        "HTTPIngressRuleValue" => HTTP_INGRESS_RULE_VALUE,
        "HTTPIngressPath" => HTTP_INGRESS_PATH,
        "IngressBackend" => INGRESS_BACKEND,
        "IngressServiceBackend" => INGRESS_SERVICE_BACKEND,
        "ServiceBackendPort" => SERVICE_BACKEND_PORT,
        "IngressStatus" => INGRESS_STATUS,
        "IngressLoadBalancerStatus" => INGRESS_LOAD_BALANCER_STATUS,
        "IngressLoadBalancerIngress" => INGRESS_LOAD_BALANCER_INGRESS,
        "ObjectMeta" => OBJECT_META,
        "OwnerReference" => OWNER_REFERENCE,
        "LabelSelector" => LABEL_SELECTOR,
        "LabelSelectorRequirement" => LABEL_SELECTOR_REQUIREMENT,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every message a field names has a schema, and no message repeats a field number.
    #[test]
    fn the_table_is_closed_and_unambiguous() {
        let kinds = [
            "Namespace",
            "ConfigMap",
            "Secret",
            "ServiceAccount",
            "Service",
            "Deployment",
            "Pod",
            "Ingress",
        ];
        let mut todo: Vec<&str> = kinds.to_vec();
        let mut seen = std::collections::HashSet::new();
        while let Some(name) = todo.pop() {
            if !seen.insert(name) {
                continue;
            }
            let fields = message(name).unwrap_or_else(|| panic!("no schema for {name}"));
            let mut nums: Vec<u32> = fields.iter().map(|f| f.num).collect();
            nums.sort();
            nums.dedup();
            assert_eq!(nums.len(), fields.len(), "{name} repeats a field number");
            for f in fields {
                if let Ty::Msg(m) = f.ty {
                    todo.push(m);
                }
            }
        }
    }
}

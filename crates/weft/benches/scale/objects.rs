//! The objects the scale benchmark creates: echo pods that serve as endpoints, Services
//! selecting ten of them each, and pods no node may run.

use k8s_openapi::api::core::v1::{Pod, Service};

/// Endpoint pods per selector group: each Service selects one group.
pub const GROUP: usize = 10;
/// A node label no node has: pods that ask for it stay Pending, yet every agent lists and
/// watches them like any other pod.
pub const NOWHERE: (&str, &str) = ("weft.dev/bench", "nowhere");

fn decode<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    // The JSON is written here, not read from outside: a failure is a bug in this file.
    serde_json::from_value(v).expect("bench object")
}

/// Endpoint pod `i`: weft's echo server on 8080, in group `i / GROUP`.
pub fn endpoint_pod(i: usize) -> Pod {
    decode(serde_json::json!({
        "metadata": {"name": format!("ep-{i}"),
                     "labels": {"bench": "ep", "group": format!("g{}", i / GROUP)}},
        "spec": {"containers": [{"name": "app", "image": "weft/serve",
                                 "ports": [{"containerPort": 8080}]}]}
    }))
}

/// Service `i` over group `i % groups` (ten endpoints), port 80 to the pods' 8080.
pub fn service(i: usize, groups: usize) -> Service {
    decode(serde_json::json!({
        "metadata": {"name": format!("svc-{i}"), "labels": {"bench": "svc"}},
        "spec": {"selector": {"group": format!("g{}", i % groups.max(1))},
                 "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}
    }))
}

/// Pod `i` of those no node runs (labels no Service selects, so no slice changes).
pub fn idle_pod(i: usize) -> Pod {
    decode(serde_json::json!({
        "metadata": {"name": format!("idle-{i}"), "labels": {"bench": "idle"}},
        "spec": {"nodeSelector": {NOWHERE.0: NOWHERE.1},
                 "containers": [{"name": "app", "image": "weft/serve",
                                 "ports": [{"containerPort": 8080}]}]}
    }))
}

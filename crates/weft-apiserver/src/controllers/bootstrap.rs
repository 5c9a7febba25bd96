//! Objects every cluster starts with: the default namespaces, the `kubernetes` Service at
//! the service range's first address and its EndpointSlice pointing at this server, and
//! the `kube-dns` Service at the tenth, and the IngressClass `weft` as the default class
//! (every agent serves Ingresses of it).

use crate::api::crud;
use crate::error::ApiError;
use crate::resources::{ENDPOINTS, ENDPOINTSLICES, NAMESPACES, SERVICES};
use crate::server::AppState;
use crate::store;
use serde_json::json;

pub fn bootstrap(state: &AppState) -> Result<(), ApiError> {
    let ep = state.net.api_endpoint;
    state.store.write(|tx| {
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            if tx.get(NAMESPACES, ns).is_none() {
                let obj =
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
                crud::create_in(tx, state, NAMESPACES, obj, false)?;
            }
        }
        let svc_key = store::key(SERVICES, "default", "kubernetes");
        if tx.get(SERVICES, &svc_key).is_none() {
            let svc = json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kubernetes", "namespace": "default",
                    "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"type": "ClusterIP", "ports": [
                    {"name": "https", "port": 443, "protocol": "TCP", "targetPort": ep.port()}]}
            });
            crud::create_in(tx, state, SERVICES, svc, false)?;
        }
        // Cluster DNS at the range's tenth address, as kubeadm puts it. Every weft agent
        // answers that address on its own node (no query crosses the network), so
        // proxies leave it alone: the service-proxy-name label is how a Service opts
        // out of kube-proxy and weft-proxy alike.
        let dns_key = store::key(SERVICES, "kube-system", "kube-dns");
        if tx.get(SERVICES, &dns_key).is_none() {
            let ip = std::net::Ipv4Addr::from(u32::from(state.net.service_cidr.network()) + 10);
            let svc = json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kube-dns", "namespace": "kube-system",
                    "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS",
                        "service.kubernetes.io/service-proxy-name": "weft-dns"}},
                "spec": {"type": "ClusterIP", "clusterIP": ip.to_string(), "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]}
            });
            crud::create_in(tx, state, SERVICES, svc, false)?;
        }
        // Only into a cluster without IngressClasses: a user's own classes, or a default
        // taken away, stay as they are across restarts.
        if let Some(classes) = crate::resources::find("networking.k8s.io", "v1", "ingressclasses") {
            if tx.get(classes, "weft").is_none() && tx.list(classes, None).is_empty() {
                let class = json!({
                    "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                    "metadata": {"name": "weft", "annotations":
                        {"ingressclass.kubernetes.io/is-default-class": "true"}},
                    "spec": {"controller": "weft.dev/ingress"}
                });
                crud::create_in(tx, state, classes, class, false)?;
            }
        }
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "kubernetes",
                    "endpointslice.kubernetes.io/managed-by": "weft-apiserver"}},
            "addressType": if ep.is_ipv4() { "IPv4" } else { "IPv6" },
            "endpoints": [{"addresses": [ep.ip().to_string()], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": ep.port(), "protocol": "TCP"}]
        });
        let key = store::key(ENDPOINTSLICES, "default", "kubernetes");
        match tx.get(ENDPOINTSLICES, &key) {
            None => {
                crud::create_in(tx, state, ENDPOINTSLICES, slice, false)?;
            }
            Some(old)
                if old["endpoints"] != slice["endpoints"] || old["ports"] != slice["ports"] =>
            {
                let mut new = (*old).clone();
                new["endpoints"] = slice["endpoints"].clone();
                new["ports"] = slice["ports"].clone();
                crud::update_in(tx, state, ENDPOINTSLICES, &key, &old, new, None, false)?;
            }
            Some(_) => {}
        }
        // Its v1 Endpoints too, as kube-apiserver's endpoint reconciler keeps them.
        let subsets = json!([{"addresses": [{"ip": ep.ip().to_string()}],
            "ports": [{"name": "https", "port": ep.port(), "protocol": "TCP"}]}]);
        let key = store::key(ENDPOINTS, "default", "kubernetes");
        match tx.get(ENDPOINTS, &key) {
            None => {
                let eps = json!({
                    "apiVersion": "v1", "kind": "Endpoints",
                    "metadata": {"name": "kubernetes", "namespace": "default",
                        "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                    "subsets": subsets,
                });
                crud::create_in(tx, state, ENDPOINTS, eps, false)?;
            }
            Some(old) if old["subsets"] != subsets => {
                let mut new = (*old).clone();
                new["subsets"] = subsets;
                crud::update_in(tx, state, ENDPOINTS, &key, &old, new, None, false)?;
            }
            Some(_) => {}
        }
        Ok(())
    })?;
    Ok(())
}

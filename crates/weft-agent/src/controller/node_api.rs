//! Starts the node API (exec, logs: [`crate::nodeapi`]) and publishes where it is and
//! which certificate it presents on this node's Node object, for the API server.

use super::AgentConfig;
use crate::nodeapi::{self, NodeApiConfig, CERT_ANNOTATION, PORT};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use std::net::SocketAddr;

/// The bearer token of the kubeconfig's current user: what the API server presents when
/// it forwards a request here.
fn token(cfg: &AgentConfig) -> Option<String> {
    let path = cfg.kubeconfig.as_ref()?;
    let kc = kube::config::Kubeconfig::read_from(path).ok()?;
    let ctx_name = kc.current_context.clone()?;
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)?
        .context
        .as_ref()?;
    let user = ctx.user.as_ref()?;
    let auth = kc
        .auth_infos
        .iter()
        .find(|a| &a.name == user)?
        .auth_info
        .as_ref()?;
    use secrecy::ExposeSecret;
    auth.token.as_ref().map(|t| t.expose_secret().to_string())
}

/// Starts serving; failures are logged (the node works without exec and logs).
pub async fn start(client: &Client, cfg: &AgentConfig) {
    let Some(token) = token(cfg).filter(|t| !t.is_empty()) else {
        tracing::warn!("no bearer token in the kubeconfig: the node API (exec, logs) is off");
        return;
    };
    let api = match nodeapi::start(NodeApiConfig {
        listen: SocketAddr::new(cfg.node_ip, PORT),
        token,
        pods_state_dir: cfg.state_dir.join("pods"),
        weft_bin: cfg.weft_bin.clone(),
    })
    .await
    {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!("node API: {e}");
            return;
        }
    };
    let nodes: Api<Node> = Api::all(client.clone());
    let meta = serde_json::json!({"metadata": {"annotations": {CERT_ANNOTATION: api.cert_pem}}});
    let status = serde_json::json!({"status": {"daemonEndpoints": {"kubeletEndpoint": {"Port": api.addr.port()}}}});
    let pp = PatchParams::default();
    if let Err(e) = nodes.patch(&cfg.node_name, &pp, &Patch::Merge(&meta)).await {
        tracing::warn!("publishing the node API certificate: {e}");
    }
    if let Err(e) = nodes
        .patch_status(&cfg.node_name, &pp, &Patch::Merge(&status))
        .await
    {
        tracing::warn!("publishing the node API port: {e}");
    }
}

//! `weft agent`: parses the command line and runs weft-agent's control loop.

use weft_agent::controller::ingress::IngressConfig;
use weft_agent::controller::{run, AgentConfig};

pub fn main(a: crate::cli::AgentArgs) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let cfg = AgentConfig {
        kubeconfig: a.kubeconfig,
        node_name: a.node_name,
        node_ip: a.node_ip,
        backend: a.backend,
        underlay_if: a.underlay_if,
        state_dir: a.state_dir,
        weft_bin: std::env::current_exe()?,
        netns_prefix: a.netns_prefix,
        cluster_cidr: a.cluster_cidr,
        cluster_dns: a.cluster_dns,
        cluster_domain: a.cluster_domain,
        run_pods: !a.no_pods,
        serve_dns: a.serve_dns,
        network_policy: !a.no_network_policy,
        policy_nflog_group: a.policy_nflog_group,
        ingress: a.ingress.then_some(IngressConfig {
            http: a.ingress_http,
            https: a.ingress_https,
            workers: a
                .ingress_workers
                .unwrap_or_else(weft_ingress::proxy::default_workers),
        }),
        dns_upstreams: match a.dns_upstream.is_empty() {
            true => weft_dns::Upstreams::ResolvConf(a.dns_resolv_conf),
            false => weft_dns::Upstreams::List(a.dns_upstream),
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(cfg))?;
    Ok(())
}

//! The files a pod sees in place of the host's: `/etc/resolv.conf` pointing at the cluster
//! DNS with the Kubernetes search path, and `/etc/hosts` naming the pod. Pure renderers.

use std::net::IpAddr;

/// What kubelet writes for `dnsPolicy: ClusterFirst`. Without a cluster DNS the host's
/// resolver is kept (`None`): a pod then resolves what the node resolves.
pub fn resolv_conf(namespace: &str, cluster_dns: Option<IpAddr>, domain: &str) -> Option<String> {
    let dns = cluster_dns?;
    let domain = domain.trim_matches('.');
    Some(format!(
        "nameserver {dns}\nsearch {namespace}.svc.{domain} svc.{domain} {domain}\noptions ndots:5\n"
    ))
}

/// Loopback lines plus the pod's own addresses under its host name, as kubelet writes it.
pub fn hosts(hostname: &str, ips: &[IpAddr]) -> String {
    let mut s = String::from(
        "# Kubernetes-managed hosts file (weft).\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    for ip in ips {
        s.push_str(&format!("{ip}\t{hostname}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_has_the_kubernetes_search_path() {
        let r = resolv_conf(
            "shop",
            Some("10.96.0.10".parse().unwrap()),
            "cluster.local.",
        );
        assert_eq!(
            r.as_deref(),
            Some(
                "nameserver 10.96.0.10\n\
                 search shop.svc.cluster.local svc.cluster.local cluster.local\n\
                 options ndots:5\n"
            )
        );
        assert_eq!(resolv_conf("shop", None, "cluster.local"), None);
    }

    #[test]
    fn hosts_names_the_pod() {
        let h = hosts("web-0", &["10.244.1.2".parse().unwrap()]);
        assert!(h.contains("127.0.0.1\tlocalhost\n"));
        assert!(h.ends_with("10.244.1.2\tweb-0\n"));
    }
}

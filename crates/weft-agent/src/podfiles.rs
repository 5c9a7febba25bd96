//! The files a pod sees in place of the host's: `/etc/resolv.conf` pointing at the cluster
//! DNS with the Kubernetes search path, and `/etc/hosts` naming the pod. Pure renderers.

use std::net::IpAddr;

use crate::spec::{DnsPlan, DnsPolicy};

/// The pod's resolv.conf as kubelet writes it, or None to keep the node's (`dnsPolicy:
/// Default`, or ClusterFirst without a cluster DNS, where kubelet falls back to Default).
/// ClusterFirst: the cluster DNS, the Kubernetes search path, `ndots:5`; `dnsConfig`
/// entries are appended (options override by name). None: `dnsConfig` alone.
pub fn resolv_conf(
    dns: &DnsPlan,
    namespace: &str,
    cluster_dns: Option<IpAddr>,
    domain: &str,
) -> Option<String> {
    let domain = domain.trim_matches('.');
    let (mut servers, mut search, mut options) = match (dns.policy, cluster_dns) {
        (DnsPolicy::Default, _) | (DnsPolicy::ClusterFirst, None) => return None,
        (DnsPolicy::ClusterFirst, Some(ip)) => (
            vec![ip.to_string()],
            vec![
                format!("{namespace}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.to_string(),
            ],
            vec![("ndots".to_string(), Some("5".to_string()))],
        ),
        (DnsPolicy::None, _) => (Vec::new(), Vec::new(), Vec::new()),
    };
    for s in &dns.nameservers {
        if !servers.contains(s) {
            servers.push(s.clone());
        }
    }
    for s in &dns.searches {
        if !search.contains(s) {
            search.push(s.clone());
        }
    }
    for (k, v) in &dns.options {
        match options.iter_mut().find(|(name, _)| name == k) {
            Some(o) => o.1 = v.clone(),
            None => options.push((k.clone(), v.clone())),
        }
    }
    // The resolver reads at most three nameservers, as kubelet warns.
    servers.truncate(3);
    let mut out = String::new();
    for s in &servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !options.is_empty() {
        let words: Vec<String> = options
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}:{v}"),
                None => k.clone(),
            })
            .collect();
        out.push_str(&format!("options {}\n", words.join(" ")));
    }
    Some(out)
}

/// Loopback lines plus the pod's own addresses under its host name (and its FQDN when it
/// has a subdomain), as kubelet writes it.
pub fn hosts(hostname: &str, fqdn: Option<&str>, ips: &[IpAddr]) -> String {
    let mut s = String::from(
        "# Kubernetes-managed hosts file (weft).\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    for ip in ips {
        match fqdn {
            Some(f) => s.push_str(&format!("{ip}\t{f}\t{hostname}\n")),
            None => s.push_str(&format!("{ip}\t{hostname}\n")),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_has_the_kubernetes_search_path() {
        let dns = DnsPlan::default();
        let r = resolv_conf(
            &dns,
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
        assert_eq!(resolv_conf(&dns, "shop", None, "cluster.local"), None);
    }

    #[test]
    fn dns_config_merges_and_policy_none_stands_alone() {
        let extra = DnsPlan {
            policy: DnsPolicy::ClusterFirst,
            nameservers: vec!["1.1.1.1".into()],
            searches: vec!["example.com".into()],
            options: vec![("ndots".into(), Some("2".into())), ("edns0".into(), None)],
        };
        let dns = Some("10.96.0.10".parse().unwrap());
        assert_eq!(
            resolv_conf(&extra, "a", dns, "cluster.local").unwrap(),
            "nameserver 10.96.0.10\nnameserver 1.1.1.1\n\
             search a.svc.cluster.local svc.cluster.local cluster.local example.com\n\
             options ndots:2 edns0\n"
        );
        let none = DnsPlan {
            policy: DnsPolicy::None,
            ..extra.clone()
        };
        assert_eq!(
            resolv_conf(&none, "a", dns, "cluster.local").unwrap(),
            "nameserver 1.1.1.1\nsearch example.com\noptions ndots:2 edns0\n"
        );
        let host = DnsPlan {
            policy: DnsPolicy::Default,
            ..extra
        };
        assert_eq!(resolv_conf(&host, "a", dns, "cluster.local"), None);
    }

    #[test]
    fn hosts_names_the_pod() {
        let h = hosts("web-0", None, &["10.244.1.2".parse().unwrap()]);
        assert!(h.contains("127.0.0.1\tlocalhost\n"));
        assert!(h.ends_with("10.244.1.2\tweb-0\n"));
        let h = hosts(
            "web-0",
            Some("web-0.web.default.svc.cluster.local"),
            &["10.244.1.2".parse().unwrap()],
        );
        assert!(h.ends_with("10.244.1.2\tweb-0.web.default.svc.cluster.local\tweb-0\n"));
    }
}

use super::*;

fn pod(yaml: &str) -> Pod {
    serde_yaml::from_str(yaml).unwrap()
}

const SERVER: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, uid: u-1}
spec:
  containers:
  - name: web
    ports:
    - containerPort: 8080
    - {containerPort: 8000, name: http-alt}
    - {containerPort: 53, protocol: UDP}
    readinessProbe:
      httpGet: {port: http-alt, path: /ready}
      periodSeconds: 2
"#;

#[test]
fn a_container_without_command_serves_its_ports() {
    let p = plan(&pod(SERVER)).unwrap();
    assert_eq!(p.namespace, "shop");
    assert_eq!(p.hostname, "web");
    assert_eq!(p.restart, RestartPolicy::Always);
    assert_eq!(p.grace, Duration::from_secs(30));
    let c = &p.containers[0];
    assert_eq!(
        c.argv,
        ["weft", "serve", "--tcp", "8080", "--http", "8000", "--udp", "53"]
    );
    let r = c.readiness.as_ref().unwrap();
    assert_eq!(
        r.action,
        ProbeAction::Http {
            host: None,
            port: 8000,
            path: "/ready".into(),
            headers: vec![]
        }
    );
    assert_eq!(r.period, Duration::from_secs(2));
    assert_eq!(r.timeout, Duration::from_secs(1));
    assert_eq!(r.failure_threshold, 3);
}

#[test]
fn command_args_and_env() {
    let p = plan(&pod(r#"
metadata: {name: c, uid: u-2}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    command: [sleep]
    args: ["1000"]
    env:
    - {name: A, value: "1"}
    - name: IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
    readinessProbe:
      exec: {command: [test, -e, /tmp/x]}
"#))
    .unwrap();
    assert_eq!(p.namespace, "default");
    assert_eq!(p.restart, RestartPolicy::Never);
    assert_eq!(p.grace, Duration::from_secs(2));
    let c = &p.containers[0];
    assert_eq!(c.argv, ["sleep", "1000"]);
    assert_eq!(
        c.env,
        vec![
            ("A".to_string(), EnvSource::Value("1".into())),
            ("IP".to_string(), EnvSource::PodIp)
        ]
    );
    assert!(matches!(
        c.readiness.as_ref().unwrap().action,
        ProbeAction::Exec { .. }
    ));
}

#[test]
fn refusals_name_the_field() {
    let no_uid = plan(&pod("metadata: {name: a}\nspec: {containers: [{name: c}]}"))
        .unwrap_err()
        .to_string();
    assert!(no_uid.contains("metadata.uid"), "{no_uid}");
    let bad_port = plan(&pod(
        "metadata: {name: a, uid: u}\nspec: {containers: [{name: c, readinessProbe: {tcpSocket: {port: web}}}]}",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        bad_port.contains("spec.containers[0].readinessProbe.tcpSocket.port"),
        "{bad_port}"
    );
    let policy = plan(&pod(
        "metadata: {name: a, uid: u}\nspec: {restartPolicy: Sometimes, containers: [{name: c}]}",
    ))
    .unwrap_err()
    .to_string();
    assert!(policy.contains("spec.restartPolicy"), "{policy}");
    let secret = plan(&pod(
        "metadata: {name: a, uid: u}\nspec: {containers: [{name: c, env: [{name: X, valueFrom: {secretKeyRef: {name: s, key: k}}}]}]}",
    ))
    .unwrap_err()
    .to_string();
    assert!(secret.contains("env[0].valueFrom"), "{secret}");
}

#[test]
fn restart_policies() {
    assert!(RestartPolicy::Always.restarts(Some(0)));
    assert!(RestartPolicy::OnFailure.restarts(Some(1)));
    assert!(RestartPolicy::OnFailure.restarts(None));
    assert!(!RestartPolicy::OnFailure.restarts(Some(0)));
    assert!(!RestartPolicy::Never.restarts(Some(1)));
}

#[test]
fn dns_policy_and_config() {
    let p = plan(&pod(r#"
metadata: {name: a, uid: u}
spec:
  hostname: h0
  subdomain: web
  dnsPolicy: None
  dnsConfig:
    nameservers: [1.1.1.1]
    searches: [example.com]
    options: [{name: ndots, value: "2"}, {name: edns0}]
  containers: [{name: c}]
"#))
    .unwrap();
    assert_eq!(p.hostname, "h0");
    assert_eq!(p.subdomain.as_deref(), Some("web"));
    assert_eq!(p.dns.policy, DnsPolicy::None);
    assert_eq!(p.dns.nameservers, ["1.1.1.1"]);
    assert_eq!(
        p.dns.options,
        vec![
            ("ndots".to_string(), Some("2".to_string())),
            ("edns0".to_string(), None)
        ]
    );
    let refused = |yaml: &str, field: &str| {
        let e = plan(&pod(yaml)).unwrap_err().to_string();
        assert!(e.contains(field), "{e}");
    };
    refused(
        "metadata: {name: a, uid: u}\nspec: {dnsPolicy: None, containers: [{name: c}]}",
        "spec.dnsConfig.nameservers",
    );
    refused(
        "metadata: {name: a, uid: u}\nspec: {dnsPolicy: Sometimes, containers: [{name: c}]}",
        "spec.dnsPolicy",
    );
    refused(
        "metadata: {name: a, uid: u}\nspec: {hostNetwork: true, containers: [{name: c}]}",
        "spec.hostNetwork",
    );
}

#[test]
fn names_that_end_up_in_paths_are_checked() {
    for (yaml, field) in [
        (
            "metadata: {name: ../x, uid: u}\nspec: {containers: [{name: c}]}",
            "metadata.name",
        ),
        (
            "metadata: {name: a, namespace: 'a;b', uid: u}\nspec: {containers: [{name: c}]}",
            "metadata.namespace",
        ),
        (
            "metadata: {name: a, uid: u}\nspec: {containers: [{name: ../c}]}",
            "spec.containers[0].name",
        ),
        (
            "metadata: {name: a, uid: u}\nspec: {containers: [{name: c}, {name: c}]}",
            "spec.containers[1].name",
        ),
    ] {
        let e = plan(&pod(yaml)).unwrap_err().to_string();
        assert!(e.contains(field), "{yaml}: {e}");
    }
    assert!(is_dns_subdomain("web-0.example"));
    assert!(!is_dns_label("Web"));
}

//! The routing case format (`tests/cases/*.yaml`), read by the pure tests here and by the
//! lab test, which sends the same requests through a real proxy from the lab's external
//! host. A case names the echo Services it needs, the objects it applies (Ingresses,
//! IngressClasses), the TLS Secrets to generate, and requests with what must answer.

use std::path::Path;

use k8s_openapi::ByteString;
use serde::Deserialize;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Case {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Echo Services, `name` or `namespace/name`: each serves port `http` (80) from
    /// container port 8080 (`web`) and port `alt` (8081) from container port 9090
    /// (`web2`), so a request that reaches the wrong one shows in its endpoint's port.
    pub services: Vec<String>,
    /// Replicas per echo Service in the lab (1 unless the case says); pod `NAME-i` is
    /// replica i, from 1.
    #[serde(default)]
    pub replicas: Option<u32>,
    /// A replica whose process is killed outright while the first request is sent
    /// without pause: no request may fail, and the replica is not chosen afterwards.
    #[serde(default)]
    pub kill: Option<Kill>,
    /// Kubernetes objects, a YAML stream.
    pub objects: String,
    /// Secrets of type `kubernetes.io/tls`, self-signed for their hosts, made by the
    /// harness.
    #[serde(default)]
    pub tls_secrets: Vec<TlsSecret>,
    pub requests: Vec<Request>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsSecret {
    /// `namespace/name`.
    pub name: String,
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Request {
    /// `http://host/path` or `https://host/path`; the host goes in `Host` (and SNI).
    pub url: String,
    #[serde(default = "get")]
    pub method: String,
    /// The echo Service that must answer (`name` or `namespace/name`), or an HTTP status
    /// weft itself must answer with (404, 503).
    pub expect: Expect,
    /// For https: the Secret whose certificate must be presented (`namespace/name`), or
    /// `default` for weft's own.
    #[serde(default)]
    pub certificate: Option<String>,
    /// Repeat the request until every replica of the expected Service has answered it.
    #[serde(default)]
    pub every_replica: bool,
    /// The container port of the endpoint the request must reach (a Service port's
    /// `targetPort`, which the answer alone does not show).
    #[serde(default)]
    pub endpoint_port: Option<u16>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Kill {
    /// The replica, `NAME-i` or `namespace/NAME-i`, of a Service of the case.
    pub pod: String,
    /// At least this many requests are sent after the kill.
    pub during: u32,
}

fn get() -> String {
    "GET".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Expect {
    Status(u16),
    Service(String),
}

impl Request {
    /// Scheme, host and path of the URL.
    pub fn parts(&self) -> Result<(&str, &str, &str)> {
        let bad = || {
            Error::invalid(
                format!("request url {:?}", self.url),
                "want http(s)://host/path",
            )
        };
        let (scheme, rest) = self.url.split_once("://").ok_or_else(bad)?;
        if scheme != "http" && scheme != "https" {
            return Err(bad());
        }
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok((scheme, host, path))
    }
}

/// `namespace/name` with `default` filled in.
pub fn qualified(name: &str) -> (String, String) {
    match name.split_once('/') {
        Some((ns, n)) => (ns.to_string(), n.to_string()),
        None => ("default".to_string(), name.to_string()),
    }
}

impl Case {
    pub fn load(path: &Path) -> Result<Case> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Read {
            path: path.display().to_string(),
            source: e,
        })?;
        Case::parse(&text).map_err(|problem| Error::Case {
            path: path.display().to_string(),
            problem,
        })
    }

    /// A case from its YAML, checked; the error says what is wrong.
    pub fn parse(text: &str) -> std::result::Result<Case, String> {
        let case: Case = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        case.validate()?;
        Ok(case)
    }

    /// Replicas per Service.
    pub fn replica_count(&self) -> u32 {
        self.replicas.unwrap_or(1)
    }

    /// The killed replica as (namespace, Service, pod name).
    pub fn kill_target(&self) -> Option<(String, String, String)> {
        let k = self.kill.as_ref()?;
        let (ns, pod) = qualified(&k.pod);
        let svc = pod.rsplit_once('-')?.0.to_string();
        Some((ns, svc, pod))
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.replicas == Some(0) {
            return Err("replicas: must be at least 1".into());
        }
        for (i, r) in self.requests.iter().enumerate() {
            r.parts().map_err(|e| format!("requests[{i}]: {e}"))?;
            let to_service = matches!(r.expect, Expect::Service(_));
            if (r.every_replica || r.endpoint_port.is_some()) && !to_service {
                return Err(format!(
                    "requests[{i}]: everyReplica and endpointPort need `expect` to be a Service"
                ));
            }
            if r.every_replica && !r.url.starts_with("http://") {
                return Err(format!("requests[{i}]: everyReplica is for http:// URLs"));
            }
        }
        if self.kill.is_some() {
            self.validate_kill()?;
        }
        Ok(())
    }

    fn validate_kill(&self) -> std::result::Result<(), String> {
        let Some(k) = &self.kill else {
            return Ok(());
        };
        let bad = |why: String| format!("kill: pod {:?}: {why}", k.pod);
        let (ns, pod) = qualified(&k.pod);
        let (svc, index) = pod
            .rsplit_once('-')
            .ok_or_else(|| bad("want NAME-i, a replica of a Service of the case".into()))?;
        let known = self
            .services
            .iter()
            .any(|s| qualified(s) == (ns.clone(), svc.into()));
        if !known {
            return Err(bad(format!("{ns}/{svc} is not in `services`")));
        }
        let replicas = self.replica_count();
        match index.parse::<u32>() {
            Ok(i) if (1..=replicas).contains(&i) => {}
            _ => return Err(bad(format!("replicas are {svc}-1 to {svc}-{replicas}"))),
        }
        if replicas < 2 {
            return Err(bad("the Service needs another replica to take over".into()));
        }
        if k.during == 0 {
            return Err("kill: during must be at least 1".into());
        }
        let first = self
            .requests
            .first()
            .ok_or_else(|| bad("the first request carries the load; there is none".into()))?;
        let want = if ns == "default" {
            svc.to_string()
        } else {
            format!("{ns}/{svc}")
        };
        if first.expect != Expect::Service(want.clone()) {
            return Err(bad(format!("the first request must expect {want}")));
        }
        if !first.url.starts_with("http://") || !matches!(first.method.as_str(), "GET" | "HEAD") {
            return Err(bad(
                "the first request must be an http:// GET or HEAD".into()
            ));
        }
        Ok(())
    }

    /// Every case in a directory, by file name.
    pub fn load_dir(dir: &Path) -> Result<Vec<(String, Case)>> {
        let read = |e| Error::Read {
            path: dir.display().to_string(),
            source: e,
        };
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(read)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|p| {
                let name = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                Case::load(&p).map(|c| (name, c))
            })
            .collect()
    }

    /// The objects as JSON values, one per YAML document.
    pub fn object_values(&self) -> Result<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&self.objects) {
            let v = serde_json::Value::deserialize(doc).map_err(|e| {
                Error::invalid(format!("case {:?} objects", self.name), e.to_string())
            })?;
            if !v.is_null() {
                out.push(v);
            }
        }
        Ok(out)
    }
}

/// A generated TLS Secret: the object to apply and its certificate (PEM), which a client
/// trusts to check the server's name.
#[derive(Debug, Clone)]
pub struct GeneratedSecret {
    pub object: serde_json::Value,
    pub cert_pem: String,
}

impl TlsSecret {
    /// A self-signed certificate for the hosts, as a `kubernetes.io/tls` Secret.
    pub fn generate(&self) -> Result<GeneratedSecret> {
        let (ns, name) = qualified(&self.name);
        let ck = rcgen::generate_simple_self_signed(self.hosts.clone()).map_err(|e| {
            Error::Certificate {
                source_name: self.name.clone(),
                problem: e.to_string(),
            }
        })?;
        let cert_pem = ck.cert.pem();
        let key_pem = ck.signing_key.serialize_pem();
        // Built as the typed object so `data` gets its base64 from k8s-openapi.
        let secret = k8s_openapi::api::core::v1::Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name),
                namespace: Some(ns),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(
                [
                    (
                        "tls.crt".to_string(),
                        ByteString(cert_pem.clone().into_bytes()),
                    ),
                    ("tls.key".to_string(), ByteString(key_pem.into_bytes())),
                ]
                .into(),
            ),
            ..Default::default()
        };
        let mut object = serde_json::to_value(&secret)
            .map_err(|e| Error::invalid(format!("secret {}", self.name), e.to_string()))?;
        object["apiVersion"] = "v1".into();
        object["kind"] = "Secret".into();
        Ok(GeneratedSecret { object, cert_pem })
    }
}

/// The IngressClass the lab makes weft's default, and the cases assume.
pub fn default_class() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {
            "name": "weft",
            "annotations": {crate::class::DEFAULT_CLASS_ANNOTATION: "true"},
        },
        "spec": {"controller": crate::class::CONTROLLER},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(yaml: &str) -> String {
        Case::parse(yaml).err().unwrap_or_default()
    }

    const HEAD: &str = "name: k\nservices: [ten]\nreplicas: 3\nobjects: \"\"\n";

    #[test]
    fn a_kill_names_a_replica_the_first_request_reaches() {
        let req = "requests: [{url: \"http://a.example/\", expect: ten}]\n";
        let ok = format!("{HEAD}kill: {{pod: ten-3, during: 10}}\n{req}");
        assert_eq!(problem(&ok), "");
        for (kill, want) in [
            ("{pod: ten-4, during: 10}", "replicas are ten-1 to ten-3"),
            (
                "{pod: other-1, during: 10}",
                "default/other is not in `services`",
            ),
            ("{pod: ten-1, during: 0}", "during must be at least 1"),
            ("{pod: ten-1, during: 1, after: 2}", "unknown field `after`"),
        ] {
            let got = problem(&format!("{HEAD}kill: {kill}\n{req}"));
            assert!(got.contains(want), "{kill}: {got}");
        }
        let other = format!(
            "{HEAD}kill: {{pod: ten-1, during: 5}}\nrequests: [{{url: \"http://a.example/\", expect: 404}}]\n"
        );
        assert!(
            problem(&other).contains("must expect ten"),
            "{}",
            problem(&other)
        );
    }

    #[test]
    fn every_replica_and_endpoint_port_need_a_service() {
        let got = problem(&format!(
            "{HEAD}requests: [{{url: \"http://a.example/\", expect: 404, everyReplica: true}}]\n"
        ));
        assert!(got.contains("need `expect` to be a Service"), "{got}");
        let got = problem(&format!(
            "{HEAD}requests: [{{url: \"https://a.example/\", expect: ten, everyReplica: true}}]\n"
        ));
        assert!(got.contains("everyReplica is for http://"), "{got}");
        let got = problem(&format!("{HEAD}replicas: 0\nrequests: []\n"));
        assert!(
            !got.is_empty(),
            "a repeated key or zero replicas must not load"
        );
    }
}

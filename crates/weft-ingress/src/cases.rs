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
    /// Echo Services, `name` or `namespace/name`: each serves ports `http` (80) and `alt`
    /// (8081), both to container port 8080 named `web`.
    pub services: Vec<String>,
    /// Replicas per echo Service in the lab (1 unless the case says).
    #[serde(default)]
    pub replicas: Option<u32>,
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
        let case: Case = serde_yaml::from_str(&text).map_err(|e| Error::Case {
            path: path.display().to_string(),
            problem: e.to_string(),
        })?;
        for r in &case.requests {
            r.parts().map_err(|e| Error::Case {
                path: path.display().to_string(),
                problem: e.to_string(),
            })?;
        }
        Ok(case)
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

//! First-start credentials: a CA, a serving certificate signed by it, a bearer token, and a
//! kubeconfig that carries all three for clients. Reused on later starts.

use crate::error::Error;
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub struct Credentials {
    pub token: String,
    pub ca_pem: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
}

fn write_private(path: &Path, content: &str) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
    f.write_all(content.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Creates `dir` (and its parents) and makes it the owner's alone (0700), also when it was
/// there before: it holds the CA key, the admin token and the store (Secrets included).
pub(crate) fn private_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(format!("making {} private (0700)", dir.display()), e))
}

/// Loads the credentials under `dir`, generating whatever is missing. `ips` are the
/// addresses the serving certificate must be valid for (besides 127.0.0.1).
pub fn ensure(dir: &Path, ips: &[IpAddr]) -> Result<Credentials, Error> {
    let pki = dir.join("pki");
    private_dir(&pki)?;
    let ca_crt = pki.join("ca.crt");
    let cert_path = pki.join("apiserver.crt");
    let key_path = pki.join("apiserver.key");
    let token_path = dir.join("token");
    let wanted = serving_ips(ips);
    if !(ca_crt.exists() && cert_path.exists() && key_path.exists()) {
        generate(&pki, &wanted)?;
    } else {
        // Started on another address than before: re-issue the serving certificate from
        // the same CA, so existing kubeconfigs stay valid.
        let have = std::fs::read_to_string(pki.join("apiserver.sans")).unwrap_or_default();
        let have: Vec<IpAddr> = have.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if !wanted.iter().all(|ip| have.contains(ip)) {
            let mut all = have;
            for ip in &wanted {
                if !all.contains(ip) {
                    all.push(*ip);
                }
            }
            let ca_key = KeyPair::from_pem(&read(&pki.join("ca.key"))?).map_err(cert_err)?;
            issue_serving(&pki, &Issuer::new(ca_params()?, ca_key), &all)?;
        }
    }
    if !token_path.exists() {
        let token: String = crate::meta::random_bytes::<24>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        write_private(&token_path, &token)?;
    }
    Ok(Credentials {
        token: read(&token_path)?.trim().to_string(),
        ca_pem: read(&ca_crt)?,
        cert_path,
        key_path,
    })
}

fn cert_err(e: rcgen::Error) -> Error {
    Error::Cert(e.to_string())
}

fn serving_ips(ips: &[IpAddr]) -> Vec<IpAddr> {
    let mut all: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1])];
    for ip in ips.iter().copied().filter(|ip| !ip.is_unspecified()) {
        if !all.contains(&ip) {
            all.push(ip);
        }
    }
    all
}

fn ca_params() -> Result<CertificateParams, Error> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "weft-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_after = rcgen::date_time_ymd(2099, 1, 1);
    Ok(ca_params)
}

fn generate(pki: &Path, ips: &[IpAddr]) -> Result<(), Error> {
    let ca_key = KeyPair::generate().map_err(cert_err)?;
    let params = ca_params()?;
    let ca_cert = params.self_signed(&ca_key).map_err(cert_err)?;
    let issuer = Issuer::new(params, ca_key);
    write_private(&pki.join("ca.key"), &issuer.key().serialize_pem())?;
    issue_serving(pki, &issuer, ips)?;
    // The CA certificate is written last: its presence marks a complete set.
    write_private(&pki.join("ca.crt"), &ca_cert.pem())?;
    Ok(())
}

fn issue_serving(pki: &Path, issuer: &Issuer<'_, KeyPair>, ips: &[IpAddr]) -> Result<(), Error> {
    let dns = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ];
    let mut params = CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .map_err(cert_err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "weft-apiserver");
    for ip in ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_after = rcgen::date_time_ymd(2099, 1, 1);
    let key = KeyPair::generate().map_err(cert_err)?;
    let cert = params.signed_by(&key, issuer).map_err(cert_err)?;
    write_private(&pki.join("apiserver.key"), &key.serialize_pem())?;
    write_private(&pki.join("apiserver.crt"), &cert.pem())?;
    let sans: Vec<String> = ips.iter().map(|ip| ip.to_string()).collect();
    write_private(&pki.join("apiserver.sans"), &(sans.join("\n") + "\n"))
}

/// Writes a kubeconfig for `server` (https://host:port) with the CA and token.
pub fn write_kubeconfig(path: &Path, server: &str, creds: &Credentials) -> Result<(), Error> {
    let ca = base64::engine::general_purpose::STANDARD.encode(creds.ca_pem.as_bytes());
    let doc = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: weft
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: weft-admin
  user:
    token: {token}
contexts:
- name: weft
  context:
    cluster: weft
    user: weft-admin
    namespace: default
current-context: weft
preferences: {{}}
",
        token = creds.token
    );
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            // A directory of the caller's choosing: created private when missing, left as
            // it is when it exists (the file itself is 0600 either way).
            if !parent.exists() {
                private_dir(parent)?;
            }
        }
    }
    // Written to a temporary name and renamed, so a reader never sees half a file.
    let tmp = path.with_extension("tmp");
    write_private(&tmp, &doc)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("renaming {}", tmp.display()), e))
}

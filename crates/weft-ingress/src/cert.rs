//! Certificates: `kubernetes.io/tls` Secrets parsed into rustls keys, chosen by SNI, with
//! a self-signed default for names nothing else covers.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::error::{Error, Result};

/// One parsed certificate and key. Equal when it comes from the same Secret with the
/// same bytes, so an unchanged Secret does not count as a change.
#[derive(Clone)]
pub struct Certificate {
    /// `namespace/secret`.
    pub source: String,
    digest: u64,
    pub key: Arc<CertifiedKey>,
}

impl PartialEq for Certificate {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.digest == other.digest
    }
}
impl Eq for Certificate {}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Certificate({})", self.source)
    }
}

impl Certificate {
    /// Parses a PEM chain and its PEM key (PKCS#8, PKCS#1 or SEC1), refusing a key that
    /// does not belong to the certificate.
    pub fn from_pem(source: &str, chain: &[u8], key: &[u8]) -> Result<Certificate> {
        let bad = |problem: String| Error::Certificate {
            source_name: source.to_string(),
            problem,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| bad(format!("tls.crt is not PEM: {e}")))?;
        if certs.is_empty() {
            return Err(bad("tls.crt holds no certificate".into()));
        }
        let der = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| bad(format!("tls.key is not a PEM private key: {e}")))?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&der)
            .map_err(|e| bad(format!("tls.key: {e}")))?;
        let ck = CertifiedKey::new(certs, signer);
        ck.keys_match()
            .map_err(|e| bad(format!("tls.key does not match tls.crt: {e}")))?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        chain.hash(&mut h);
        key.hash(&mut h);
        Ok(Certificate {
            source: source.to_string(),
            digest: h.finish(),
            key: Arc::new(ck),
        })
    }

    /// A self-signed certificate for `names`: the default when no Secret covers a name.
    pub fn self_signed(names: &[&str]) -> Result<Certificate> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let ck = rcgen::generate_simple_self_signed(names).map_err(|e| Error::Certificate {
            source_name: "self-signed default".into(),
            problem: e.to_string(),
        })?;
        Certificate::from_pem(
            "(weft default)",
            ck.cert.pem().as_bytes(),
            ck.signing_key.serialize_pem().as_bytes(),
        )
    }
}

/// Certificates by the names they serve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertTable {
    pub hosts: BTreeMap<String, Certificate>,
    /// `*.foo.com` under `foo.com`.
    pub wildcards: BTreeMap<String, Certificate>,
    /// A TLS entry without hosts: used for any name nothing else covers.
    pub fallback: Option<Certificate>,
}

impl CertTable {
    pub fn insert(&mut self, host: &str, cert: Certificate) {
        let host = host.to_ascii_lowercase();
        let map = match host.strip_prefix("*.") {
            Some(rest) => self.wildcards.entry(rest.to_string()),
            None => self.hosts.entry(host),
        };
        // The oldest Ingress claiming a name keeps it.
        map.or_insert(cert);
    }

    /// The certificate for a client's SNI name (none: the fallback).
    pub fn find(&self, sni: Option<&str>) -> Option<&Certificate> {
        let exact = sni.and_then(|sni| {
            let sni = sni.trim_end_matches('.').to_ascii_lowercase();
            self.hosts.get(&sni).or_else(|| {
                sni.split_once('.')
                    .and_then(|(_, rest)| self.wildcards.get(rest))
            })
        });
        exact.or(self.fallback.as_ref())
    }
}

/// The rustls resolver: reads the current table on every handshake, so a new or changed
/// Secret takes effect for the next connection without a restart.
#[derive(Debug)]
pub struct SniResolver {
    table: RwLock<Arc<CertTable>>,
    default: Certificate,
}

impl SniResolver {
    pub fn new(default: Certificate) -> SniResolver {
        SniResolver {
            table: RwLock::new(Arc::default()),
            default,
        }
    }

    pub fn swap(&self, table: Arc<CertTable>) {
        // A poisoned lock only means a panic elsewhere mid-swap; the Arc inside is whole.
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = table;
    }

    pub fn current(&self) -> Arc<CertTable> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let table = self.current();
        let found = table.find(hello.server_name());
        Some(found.unwrap_or(&self.default).key.clone())
    }
}

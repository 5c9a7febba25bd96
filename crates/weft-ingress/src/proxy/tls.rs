//! The TLS settings the proxy terminates with: certificates by SNI, HTTP/2 or HTTP/1.1 by
//! ALPN, and the cipher suite chosen by the server's preference.
//!
//! The preference puts AES-128-GCM with SHA-256 first. Every TLS 1.3 client supports it
//! (RFC 8446 9.1 makes it mandatory), and its key schedule runs on SHA-256, which *ring*
//! computes with the CPU's SHA instructions where there are some (x86-64 since Zen and Ice
//! Lake, ARMv8), while SHA-384 (AES-256-GCM's suite) has no such path: in a profile of full
//! handshakes, SHA-512 blocks took 13 % of the proxy's CPU when clients (OpenSSL's
//! default order) picked AES-256-GCM. Left to the client's order, most pick AES-256-GCM.
//!
//! Session tickets are stateless: the session is sealed into the ticket under a key the
//! process draws at random and rotates (rustls' `Ticketer`: ChaCha20-Poly1305, tickets
//! live 12 hours), as nginx's tickets are by default. rustls' default instead hands out
//! tickets that name an entry of a 256-session memory cache behind one lock for every
//! worker: at a few thousand handshakes a second the cache turns over in well under a
//! second, so a client that came back later got a full handshake (a signature for the
//! proxy, a verification for the client) where nginx resumed it. Resumption still runs a
//! fresh X25519 exchange (rustls offers only PSK with (EC)DHE), so a stolen ticket key
//! does not open past traffic.

use std::sync::Arc;

use rustls::crypto::ring as provider;
use rustls::crypto::CryptoProvider;
use rustls::server::ResolvesServerCert;
use rustls::SupportedCipherSuite;

use crate::error::{Error, Result};

/// The ring provider's suites, in the server's order of preference.
fn suites() -> Vec<SupportedCipherSuite> {
    use provider::cipher_suite as s;
    vec![
        s::TLS13_AES_128_GCM_SHA256,
        s::TLS13_AES_256_GCM_SHA384,
        s::TLS13_CHACHA20_POLY1305_SHA256,
        s::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        s::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        s::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        s::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        s::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        s::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ]
}

/// The server side of TLS, certificates from `certs`.
pub fn server_config(certs: Arc<dyn ResolvesServerCert>) -> Result<rustls::ServerConfig> {
    let provider = CryptoProvider {
        cipher_suites: suites(),
        ..provider::default_provider()
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::invalid("TLS settings", e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    cfg.ignore_client_order = true;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    cfg.ticketer = provider::Ticketer::new()
        .map_err(|e| Error::invalid("TLS session tickets", e.to_string()))?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_suite_of_the_provider_is_offered_once() {
        let mut ours: Vec<_> = suites().iter().map(|s| s.suite()).collect();
        let mut all: Vec<_> = provider::ALL_CIPHER_SUITES
            .iter()
            .map(|s| s.suite())
            .collect();
        ours.sort_by_key(|s| u16::from(*s));
        all.sort_by_key(|s| u16::from(*s));
        assert_eq!(ours, all);
    }
}

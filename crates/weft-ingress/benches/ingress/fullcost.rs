//! The full cost of a request on a new connection, as its user waits for it: from before
//! the TCP connect until the whole response has been read, with the TLS handshake in
//! between. wrk cannot give this: it starts a request's clock only once its connection is
//! up and, over TLS, once `SSL_connect` has finished (`socket_connected` calls
//! `sock.connect` and only then arms `socket_writeable`, which sets `c->start`; src/wrk.c
//! at a211dd5), so with a handshake per request its latency leaves the handshake out and
//! counts the time a request waits behind other connections' handshakes instead.
//!
//! The client is ours and the same for both proxies: a thread of the driver (already in
//! the namespace and pinned to the client CPUs, as wrk is) running a current-thread tokio
//! runtime, `conns` connections in a closed loop as wrk's, each request a fresh TCP
//! connection (over TLS a TLS 1.3 handshake with rustls, no ALPN, as wrk offers none),
//! `Connection: close`, the response read to the end.
//!
//! Over TLS it runs twice (`Kind`). `Resumed` is what wrk does: wrk keeps each
//! connection's `SSL` object and only `SSL_clear`s it on reconnecting (src/ssl.c), which
//! keeps the session, so every handshake after a connection's first resumes with the
//! ticket the last one got (a PSK with a fresh X25519 exchange; seen on the wire against
//! both proxies). Each of our connections therefore keeps its own session store. `Full`
//! takes no ticket: a new visitor's handshake, with the proxy's signature and the
//! client's verification.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::procs::{clk_tck, cpu_ticks};
use crate::report::quantile;
use crate::wrk::WrkOut;
use crate::{PROXY_IP, TARGET_PATH};

/// One request may take this long before it counts as an error (wrk's `--timeout 5s`).
const TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts the bench's self-signed certificate without a chain, but checks the handshake's
/// signature as any client must, so the client's work per handshake is a real client's.
#[derive(Debug)]
struct SelfSigned(Arc<CryptoProvider>);

impl ServerCertVerifier for SelfSigned {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Which client a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Plain,
    /// TLS, each connection resuming its previous connection's session, as wrk.
    Resumed,
    /// TLS, a full handshake every time.
    Full,
}

impl Kind {
    /// The runs a mode gets: plain, or both kinds of TLS handshake.
    pub fn for_tls(tls: bool) -> &'static [Kind] {
        if tls {
            &[Kind::Resumed, Kind::Full]
        } else {
            &[Kind::Plain]
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Kind::Plain => "",
            Kind::Resumed => ", session resumed (as wrk)",
            Kind::Full => ", full handshake (no resumption)",
        }
    }
}

fn connector(resume: bool) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SelfSigned(provider)))
        .with_no_client_auth();
    cfg.resumption = if resume {
        // One connection's own store: it holds the tickets its last handshake got.
        rustls::client::Resumption::in_memory_sessions(4)
    } else {
        rustls::client::Resumption::disabled()
    };
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// Reads `s` to its end; a TLS peer that closes without close_notify still ends it.
async fn read_all<S: AsyncReadExt + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> std::io::Result<()> {
    match s.read_to_end(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => Ok(()),
        Err(e) => Err(e),
    }
}

/// One request on a new connection; its time in µs, or why it failed.
async fn one(port: u16, tls: Option<&tokio_rustls::TlsConnector>) -> Result<u64, String> {
    let req =
        format!("GET {TARGET_PATH} HTTP/1.1\r\nHost: shop.bench\r\nConnection: close\r\n\r\n");
    let mut buf = Vec::with_capacity(512);
    let t0 = Instant::now();
    let tcp = tokio::net::TcpStream::connect((PROXY_IP, port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    match tls {
        Some(c) => {
            let name = ServerName::try_from("shop.bench").expect("name");
            let mut s = c
                .connect(name, tcp)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            s.write_all(req.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            read_all(&mut s, &mut buf)
                .await
                .map_err(|e| e.to_string())?;
        }
        None => {
            let mut s = tcp;
            s.write_all(req.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            read_all(&mut s, &mut buf)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    let us = t0.elapsed().as_micros() as u64;
    if buf.starts_with(b"HTTP/1.1 200") {
        Ok(us)
    } else {
        Err(format!(
            "answer {:?}",
            String::from_utf8_lossy(&buf[..buf.len().min(40)])
        ))
    }
}

/// `q` (0..1) of `v` (microseconds), in ms.
fn pct(v: &[u64], q: f64) -> f64 {
    let ms: Vec<f64> = v.iter().map(|&us| us as f64 / 1000.0).collect();
    quantile(&ms, q)
}

/// `conns` connections in a closed loop for `secs` against `port` (TLS or not), measuring
/// `proxy`'s CPU time over it. The result in wrk's terms: requests/s, p50/p99 of the full
/// cost, errors, the proxy's cores.
pub fn run(port: u16, kind: Kind, conns: usize, secs: u64, proxy: &[u32]) -> WrkOut {
    let t0 = cpu_ticks(proxy);
    let start = Instant::now();
    // A thread of its own: it inherits this thread's namespace and CPUs.
    let (lat, errors) = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("client runtime");
        rt.block_on(async move {
            let shared = (kind == Kind::Full).then(|| connector(false));
            let until = tokio::time::Instant::now() + Duration::from_secs(secs);
            let mut tasks = Vec::with_capacity(conns);
            for _ in 0..conns {
                let conn = match kind {
                    Kind::Plain => None,
                    Kind::Resumed => Some(connector(true)),
                    Kind::Full => shared.clone(),
                };
                tasks.push(tokio::spawn(async move {
                    let (mut lat, mut errors) = (Vec::new(), 0u64);
                    while tokio::time::Instant::now() < until {
                        match tokio::time::timeout(TIMEOUT, one(port, conn.as_ref())).await {
                            Ok(Ok(us)) => lat.push(us),
                            _ => errors += 1,
                        }
                    }
                    (lat, errors)
                }));
            }
            let (mut lat, mut errors) = (Vec::new(), 0);
            for t in tasks {
                let (l, e) = t.await.expect("client task");
                lat.extend(l);
                errors += e;
            }
            (lat, errors)
        })
    })
    .join()
    .expect("client thread");
    let wall = start.elapsed().as_secs_f64();
    let t1 = cpu_ticks(proxy);
    let mut lat = lat;
    lat.sort_unstable();
    WrkOut {
        rps: lat.len() as f64 / wall,
        p50_ms: pct(&lat, 0.50),
        p99_ms: pct(&lat, 0.99),
        requests: lat.len() as u64,
        errors,
        cores: t1.saturating_sub(t0) as f64 / clk_tck() / wall,
        ..WrkOut::default()
    }
}

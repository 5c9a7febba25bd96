//! Start-up: credentials, store, controllers, and the HTTPS accept loop.

use crate::allocator::Allocators;
use crate::config::Config;
use crate::credentials;
use crate::error::Error;
use crate::limits::{Limits, Peer};
use crate::store::Store;
use axum::http::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use ipnet::{Ipv4Net, Ipv6Net};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::ServiceExt;

/// What request handlers and controllers share.
pub struct AppState {
    pub store: Arc<Store>,
    pub token: String,
    pub net: NetConfig,
    pub limits: Arc<Limits>,
}

#[derive(Debug, Clone)]
pub struct NetConfig {
    pub service_cidr: Ipv4Net,
    /// The IPv6 service range of a dual-stack cluster.
    pub service_cidr_v6: Option<Ipv6Net>,
    pub cluster_cidr: Ipv4Net,
    pub node_cidr_size: u8,
    pub node_port_range: (u16, u16),
    pub load_balancer_cidr: Option<Ipv4Net>,
    /// Where the `kubernetes` Service's endpoints point.
    pub api_endpoint: SocketAddr,
}

pub struct Server {
    pub addr: SocketAddr,
    pub kubeconfig: PathBuf,
    pub token: String,
    pub state: Arc<AppState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Stops accepting connections and the controllers; waits for the accept loop.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Runs until the process is killed.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

pub async fn start(cfg: Config) -> Result<Server, Error> {
    cfg.check()?;
    credentials::private_dir(&cfg.data_dir)?;
    let creds = credentials::ensure(&cfg.data_dir, &[cfg.listen.ip()])?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| Error::io(format!("listening on {}", cfg.listen), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("reading the listening address", e))?;
    let mut listeners = vec![listener];
    for &fd in &cfg.listen_fds {
        listeners.push(inherited_listener(fd)?);
    }
    let client_ip = if addr.ip().is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        addr.ip()
    };
    let kubeconfig = cfg
        .kubeconfig_out
        .clone()
        .unwrap_or_else(|| cfg.data_dir.join("kubeconfig"));
    let server_url = format!("https://{}", SocketAddr::new(client_ip, addr.port()));
    credentials::write_kubeconfig(&kubeconfig, &server_url, &creds)?;

    let net = NetConfig {
        service_cidr: cfg.service_cidr.v4,
        service_cidr_v6: cfg.service_cidr.v6,
        cluster_cidr: cfg.cluster_cidr,
        node_cidr_size: cfg.node_cidr_size,
        node_port_range: cfg.node_port_range()?,
        load_balancer_cidr: cfg.load_balancer_cidr,
        api_endpoint: SocketAddr::new(client_ip, addr.port()),
    };
    // The allocators are rebuilt from the stored Services as the store opens.
    let store = Store::open(
        &cfg.data_dir,
        cfg.watch_history.max(100),
        Allocators::new(&net),
    )?;
    let state = Arc::new(AppState {
        store,
        token: creds.token.clone(),
        net,
        limits: Limits::new(&cfg),
    });
    let header_timeout = state.limits.header_read_timeout;
    crate::controllers::bootstrap(&state).map_err(|e| Error::Config(e.message))?;
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    crate::controllers::spawn_all(state.clone(), stop_rx.clone());

    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(&creds)?));
    let app = crate::api::router(state.clone());
    let conn_stop_rx = stop_rx.clone();
    let task = tokio::spawn(async move {
        let mut loops = tokio::task::JoinSet::new();
        for l in listeners {
            loops.spawn(accept_loop(
                l,
                acceptor.clone(),
                app.clone(),
                header_timeout,
                conn_stop_rx.clone(),
            ));
        }
        // Stop asked for, or the Server dropped without asking.
        let _ = shutdown_rx.await;
        // Wait until every loop is gone, listener dropped: a caller that restarts the
        // server on the same address right after `shutdown` must find it free.
        loops.shutdown().await;
        let _ = stop_tx.send(true);
    });
    tracing::info!(
        "serving the Kubernetes API on {server_url}; kubeconfig at {}",
        kubeconfig.display()
    );
    Ok(Server {
        addr,
        kubeconfig,
        token: creds.token,
        state,
        shutdown: Some(shutdown_tx),
        task,
    })
}

/// Accepts connections on one listener and serves each (TLS, then HTTP/1.1 or HTTP/2 by
/// ALPN) until the task is aborted.
async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: axum::Router,
    header_timeout: Duration,
    conn_stop_rx: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let accepted = listener.accept().await;
        let (tcp, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: back off rather than spin.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let mut conn_stop = conn_stop_rx.clone();
        tokio::spawn(async move {
            // A client that trickles its TLS handshake is cut off like one that
            // trickles its request headers.
            let Ok(Ok(tls)) = tokio::time::timeout(header_timeout, acceptor.accept(tcp)).await
            else {
                return;
            };
            // ALPN decides the protocol, so hyper never waits (without a timeout) for
            // the first bytes to guess it.
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let svc = TowerToHyperService::new(app.map_request(move |mut req: Request<_>| {
                req.extensions_mut().insert(Peer(peer));
                req
            }));
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(Duration::from_secs(30)));
            let builder = if h2 {
                builder.http2_only()
            } else {
                builder.http1_only()
            };
            // hyper's header timer starts at a request's first byte; a connection that
            // never sends one is closed by this deadline instead.
            let io = FirstByteDeadline::new(tls, header_timeout);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
            // On shutdown open connections (long watches above all) are dropped, as
            // a stopped process would drop them.
            tokio::select! {
                _ = conn => {}
                _ = conn_stop.changed() => {}
            }
        });
    }
}

/// Takes over an inherited descriptor that must be a listening TCP socket (`--listen-fd`).
fn inherited_listener(fd: i32) -> Result<TcpListener, Error> {
    use nix::sys::socket::{getsockopt, sockopt, SockType};
    use std::os::fd::{BorrowedFd, FromRawFd};
    let bad = |why: String| Error::Config(format!("--listen-fd {fd}: {why}"));
    if fd < 3 {
        return Err(bad(
            "descriptors 0-2 are standard input, output and error".into()
        ));
    }
    // SAFETY: only borrowed for the checks; ownership is taken below once they pass.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    match getsockopt(&borrowed, sockopt::SockType) {
        Ok(SockType::Stream) => {}
        Ok(t) => return Err(bad(format!("a {t:?} socket, not TCP"))),
        Err(e) => return Err(bad(format!("not an open socket ({e})"))),
    }
    match getsockopt(&borrowed, sockopt::AcceptConn) {
        Ok(true) => {}
        Ok(false) => return Err(bad("the socket is not listening".into())),
        Err(e) => return Err(bad(e.to_string())),
    }
    // SAFETY: a listening stream socket this process was handed and nothing else owns.
    let std = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    std.set_nonblocking(true)
        .map_err(|e| Error::io(format!("--listen-fd {fd}: non-blocking"), e))?;
    TcpListener::from_std(std).map_err(|e| Error::io(format!("--listen-fd {fd}: serving"), e))
}

fn tls_config(creds: &credentials::Credentials) -> Result<rustls::ServerConfig, Error> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&creds.cert_path)
        .and_then(|it| it.collect())
        .map_err(|e| Error::Tls(format!("reading {}: {e}", creds.cert_path.display())))?;
    let key = PrivateKeyDer::from_pem_file(&creds.key_path)
        .map_err(|e| Error::Tls(format!("reading {}: {e}", creds.key_path.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A connection that must deliver its first byte before a deadline: reads after it fail
/// with `TimedOut` until one arrives. Once a byte has arrived it is a plain stream.
struct FirstByteDeadline<S> {
    inner: S,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> FirstByteDeadline<S> {
    fn new(inner: S, within: Duration) -> Self {
        FirstByteDeadline {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstByteDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if expired {
                    let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "no request");
                    return Poll::Ready(Err(e));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstByteDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

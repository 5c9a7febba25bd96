//! Start-up: credentials, store, controllers, and the HTTPS accept loop.

use crate::config::Config;
use crate::credentials;
use crate::error::Error;
use crate::store::Store;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use ipnet::Ipv4Net;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// What request handlers and controllers share.
pub struct AppState {
    pub store: Arc<Store>,
    pub token: String,
    pub net: NetConfig,
}

#[derive(Debug, Clone)]
pub struct NetConfig {
    pub service_cidr: Ipv4Net,
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
    let store = Store::open(&cfg.data_dir, cfg.watch_history.max(100))?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| Error::io(format!("listening on {}", cfg.listen), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("reading the listening address", e))?;
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

    let state = Arc::new(AppState {
        store,
        token: creds.token.clone(),
        net: NetConfig {
            service_cidr: cfg.service_cidr,
            cluster_cidr: cfg.cluster_cidr,
            node_cidr_size: cfg.node_cidr_size,
            node_port_range: cfg.node_port_range()?,
            load_balancer_cidr: cfg.load_balancer_cidr,
            api_endpoint: SocketAddr::new(client_ip, addr.port()),
        },
    });
    crate::controllers::bootstrap(&state).map_err(|e| Error::Config(e.message))?;
    let (shutdown_tx, mut shutdown_rx) = oneshot::channel::<()>();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    crate::controllers::spawn_all(state.clone(), stop_rx.clone());

    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(&creds)?));
    let app = crate::api::router(state.clone());
    let conn_stop_rx = stop_rx.clone();
    let task = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = &mut shutdown_rx => break,
            };
            let (tcp, _) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let app = app.clone();
            let mut conn_stop = conn_stop_rx.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = TowerToHyperService::new(app);
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
                // On shutdown open connections (long watches above all) are dropped, as
                // a stopped process would drop them.
                tokio::select! {
                    _ = conn => {}
                    _ = conn_stop.changed() => {}
                }
            });
        }
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

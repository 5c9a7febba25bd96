//! Test harness: an API server on 127.0.0.1 with an ephemeral port and a temporary data
//! directory, and kube-rs clients for it.
#![allow(dead_code)]

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use weft_apiserver::Server;

pub struct TestServer {
    pub server: Option<Server>,
    pub dir: tempfile::TempDir,
}

pub fn config(dir: &Path, listen: &str, history: usize) -> weft_apiserver::Config {
    let mut args: Vec<String> = vec![
        "--data-dir".into(),
        dir.display().to_string(),
        "--listen".into(),
        listen.into(),
        "--watch-history".into(),
        history.to_string(),
    ];
    args.extend([
        "--kubeconfig-out".into(),
        dir.join("kubeconfig").display().to_string(),
    ]);
    weft_apiserver::Config::from_args(&args).expect("test arguments parse")
}

pub async fn start() -> TestServer {
    start_with_history(20_000).await
}

pub async fn start_with_history(history: usize) -> TestServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = weft_apiserver::start(config(dir.path(), "127.0.0.1:0", history))
        .await
        .expect("server starts");
    TestServer {
        server: Some(server),
        dir,
    }
}

/// A server on 127.0.0.1 with extra `weft control-plane` arguments (e.g. tighter limits).
pub async fn start_with_args(extra: &[&str]) -> TestServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut args: Vec<String> = vec![
        "--data-dir".into(),
        dir.path().display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--kubeconfig-out".into(),
        dir.path().join("kubeconfig").display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let cfg = weft_apiserver::Config::from_args(&args).expect("test arguments parse");
    let server = weft_apiserver::start(cfg).await.expect("server starts");
    TestServer {
        server: Some(server),
        dir,
    }
}

impl TestServer {
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }
    pub async fn client(&self) -> Client {
        client_for(&self.kubeconfig()).await
    }
    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.as_ref().expect("running").addr
    }
    /// Stops the server (dropping its connections), then starts it again on `addr` with
    /// the same data directory and the given watch history size.
    pub async fn restart_on(&mut self, addr: std::net::SocketAddr, history: usize) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        let s = weft_apiserver::start(config(self.dir.path(), &addr.to_string(), history))
            .await
            .expect("server restarts");
        self.server = Some(s);
    }
    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
    /// Starts the server on a fresh port, keeping the data directory.
    pub async fn start_elsewhere(&mut self) {
        self.stop().await;
        let s = weft_apiserver::start(config(self.dir.path(), "127.0.0.1:0", 20_000))
            .await
            .expect("server starts");
        self.server = Some(s);
    }
}

pub async fn client_for(kubeconfig: &Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("kubeconfig readable");
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig valid");
    Client::try_from(cfg).expect("client")
}

/// Bounds a test step so a bug shows up as a failure rather than a hung test. The bound
/// is generous: it guards against hangs, it does not measure speed.
pub async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(120), f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: did not finish"),
    }
}

/// Polls `check` until it returns Some; bounded like `bounded`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    bounded(what, async {
        loop {
            if let Some(v) = check().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

pub fn api_status(e: &kube::Error) -> Option<&kube::core::Status> {
    match e {
        kube::Error::Api(s) => Some(s),
        _ => None,
    }
}

/// Runs kubectl; None when kubectl is not installed on this machine.
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> Option<(bool, String)> {
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output();
    match out {
        Ok(o) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            Some((o.status.success(), text))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("running kubectl: {e}"),
    }
}

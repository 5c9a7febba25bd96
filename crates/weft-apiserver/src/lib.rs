//! weft-apiserver: the lab's Kubernetes-compatible API server and controllers.
//!
//! Objects are kept as JSON in an embedded, fsynced append-only log ([`store`]); the REST
//! API ([`api`]) validates them with the same rules the real API server applies
//! ([`validation`]) after defaulting and allocating addresses ([`admission`]); controllers
//! ([`controllers`]) do what kube-controller-manager and the scheduler would.

pub mod admission;
pub mod allocator;
pub mod api;
pub mod config;
pub mod controllers;
pub mod credentials;
pub mod error;
pub mod limits;
pub mod meta;
pub mod resources;
pub mod server;
pub mod store;
pub mod typed;
pub mod validation;

pub use config::Config;
pub use server::{start, Server};

/// `weft control-plane ARGS...`: returns the process exit code.
pub fn run_cli(args: Vec<String>) -> u8 {
    let cfg = match Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft control-plane: cannot start the async runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        match start(cfg).await {
            Ok(server) => {
                println!("listening on https://{}", server.addr);
                println!("kubeconfig {}", server.kubeconfig.display());
                server.wait().await;
                0
            }
            Err(e) => {
                eprintln!("weft control-plane: {e}");
                1
            }
        }
    })
}

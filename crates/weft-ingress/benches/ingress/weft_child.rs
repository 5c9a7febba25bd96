//! weft's proxy as a child process: the driver's handle on it (`Weft`), and the role the
//! bench binary takes when re-executed with `WEFT_INGRESS_BENCH_ROLE=weft` (`serve`): a
//! fixed number of the proxy's workers (`Proxy::start_workers`, as the agent runs them),
//! applying the changes the driver sends on stdin as the agent applies a watch event.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::time::Instant;

use crate::cleanup::finish;
use crate::cluster::{changed_index, many_cluster, many_ingress, small_cluster};
use crate::netns::Ctx;
use crate::procs::proxy_pids;
use crate::settings::env_or;
use crate::{PROXY_IP, ROLE};

/// The driver's handle on a weft child: started with one cluster, changed by commands on
/// its stdin (`change <k>`), one answer line each on its stdout.
pub struct Weft {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Weft {
    /// Starts weft on `cluster` ("small", or "many:<n>"), listening on `http` (and
    /// `https`); returns it with its ready line.
    pub fn start(ctx: &Ctx, cluster: &str, http: u16, https: Option<u16>) -> (Weft, String) {
        let mut c = ctx.command(&ctx.cfg.proxy_cpus, &ctx.exe);
        c.env(ROLE, "weft")
            .env("WEFT_INGRESS_BENCH_DIR", &ctx.dir)
            .env("WEFT_INGRESS_BENCH_CLUSTER", cluster)
            .env("WEFT_INGRESS_BENCH_THREADS", ctx.cfg.threads.to_string())
            .env("WEFT_INGRESS_BENCH_HTTP1", &ctx.cfg.http1)
            .env(
                "WEFT_INGRESS_BENCH_ACCESS_LOG",
                u8::from(ctx.cfg.access_log).to_string(),
            )
            .env("WEFT_INGRESS_BENCH_LISTEN", format!("{PROXY_IP}:{http}"))
            .env(
                "WEFT_INGRESS_BENCH_LISTEN_TLS",
                https.map_or(String::new(), |p| format!("{PROXY_IP}:{p}")),
            )
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(ctx.log(&format!("weft-{cluster}.log")));
        let mut child = ctx.spawn(c, "weft");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("weft ready line");
        assert!(line.starts_with("ready"), "weft child: {line:?}");
        (
            Weft {
                child,
                stdin,
                stdout,
            },
            line.trim().to_string(),
        )
    }

    /// Sends a command, returns the child's answer.
    pub fn ask(&mut self, cmd: &str) -> String {
        writeln!(self.stdin, "{cmd}").expect("to weft");
        self.stdin.flush().expect("flush");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("from weft");
        line.trim().to_string()
    }

    /// The proxy's process (one: weft's threads are in it).
    pub fn pids(&self) -> Vec<u32> {
        proxy_pids(self.child.id(), false)
    }

    /// How many threads the proxy's process has.
    pub fn threads(&self) -> usize {
        fs::read_dir(format!("/proc/{}/task", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Closes its stdin, stops it, reaps it.
    pub fn stop(self) {
        let Weft {
            mut child, stdin, ..
        } = self;
        drop(stdin);
        finish(&mut child);
    }
}

/// The child's side, run when re-executed with `WEFT_INGRESS_BENCH_ROLE=weft`.
pub fn serve() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    use weft_ingress::proxy::{Limits, Proxy};
    let dir = PathBuf::from(std::env::var("WEFT_INGRESS_BENCH_DIR").expect("dir"));
    let cluster = std::env::var("WEFT_INGRESS_BENCH_CLUSTER").expect("cluster");
    let threads: usize = env_or("THREADS", 1);
    if env_or("ACCESS_LOG", 1u8) == 1 {
        // As the agent sets it up (crates/weft/src/agent.rs): fmt at info, to stderr.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let listen: std::net::SocketAddr = std::env::var("WEFT_INGRESS_BENCH_LISTEN")
        .expect("listen")
        .parse()
        .expect("listen address");
    let listen_tls: Option<std::net::SocketAddr> = std::env::var("WEFT_INGRESS_BENCH_LISTEN_TLS")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("TLS listen address"));
    // The agent's way: `threads` workers, each its own current-thread runtime and
    // listeners. `multi` serves as the agent did before, every listener on one
    // multi-thread runtime with `threads` workers, to compare the two.
    let multi = std::env::var("WEFT_INGRESS_BENCH_FLAVOUR").as_deref() == Ok("multi");
    // Changes are compiled on this runtime's thread (the agent compiles off the proxy's
    // workers too); with `multi` it is also the proxy's.
    let rt = match multi {
        true => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build(),
        false => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    }
    .expect("runtime");
    rt.block_on(async move {
        let (mut world, n) = match cluster.strip_prefix("many:") {
            Some(n) => {
                let n: usize = n.parse().expect("n");
                (many_cluster(&dir, n), n)
            }
            None => (small_cluster(&dir), 0),
        };
        let http1: weft_ingress::proxy::Http1 = env_or("HTTP1", "native".to_string())
            .parse()
            .expect("WEFT_INGRESS_BENCH_HTTP1");
        let proxy = Proxy::new(Limits::default(), &["bench-node"])
            .expect("proxy")
            .with_http1(http1);
        let t = Instant::now();
        let compiled = weft_ingress::compile(&world);
        let compile_ms = t.elapsed().as_secs_f64() * 1e3;
        assert!(compiled.problems.is_empty(), "{:?}", compiled.problems);
        proxy.update(compiled);
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        let _workers = if multi {
            let l = tokio::net::TcpListener::bind(listen).await.expect("bind");
            tokio::spawn(proxy.clone().serve(l, false, stop.clone()));
            if let Some(addr) = listen_tls {
                let l = tokio::net::TcpListener::bind(addr).await.expect("bind");
                tokio::spawn(proxy.clone().serve(l, true, stop.clone()));
            }
            None
        } else {
            let n = std::num::NonZeroUsize::new(threads).expect("WEFT_INGRESS_BENCH_THREADS > 0");
            Some(
                proxy
                    .start_workers(n, listen, listen_tls, stop.clone())
                    .expect("workers"),
            )
        };
        let mut out = tokio::io::stdout();
        let _ = out
            .write_all(
                format!(
                    "ready: {} Ingresses compiled in {compile_ms:.1} ms, {} routes\n",
                    world.ingresses.len(),
                    proxy.table().route_count()
                )
                .as_bytes(),
            )
            .await;
        let _ = out.flush().await;
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut changes: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        while let Ok(Some(line)) = lines.next_line().await {
            let Some(k) = line.strip_prefix("change ").and_then(|k| k.parse().ok()) else {
                break;
            };
            // What the agent does with a watch event: the changed object into the cluster
            // view, compile, swap.
            let idx = changed_index(k, n.max(1));
            changes.entry(idx).or_default().push(k);
            world.ingresses[idx] = many_ingress(idx, &changes[&idx]);
            let w = world.clone();
            let p = proxy.clone();
            let reply = tokio::spawn(async move {
                let t = Instant::now();
                let compiled = weft_ingress::compile(&w);
                let c = t.elapsed();
                let changed = p.update(compiled);
                let u = t.elapsed() - c;
                format!(
                    "compile {:.2} ms + update {:.2} ms (changed: {changed})",
                    c.as_secs_f64() * 1e3,
                    u.as_secs_f64() * 1e3
                )
            })
            .await
            .expect("change task");
            let _ = out.write_all(format!("{reply}\n").as_bytes()).await;
            let _ = out.flush().await;
        }
    });
}

//! Ingress proxy benchmark: weft's `Proxy` (the code the agent runs on a node's :80/:443)
//! against Debian's nginx, configured here for the same routes and the same backends, both
//! loaded by Debian's `wrk` in the same run; then the time for one change to take effect
//! with 5000 Ingresses (weft: compile + `Proxy::update`; nginx: rewrite + `nginx -s reload`)
//! while clients keep sending requests, counting the requests that fail.
//!
//! Run as root: `cargo bench -p weft-ingress --bench ingress` (or `scripts/bench-ingress.sh`,
//! which installs nginx and wrk first). Everything runs inside one network namespace made
//! here (`weft-bench-<pid>-ingress`) and deleted on exit, on a panic and on Ctrl-C; only its
//! loopback is used.
//!
//! Processes: the bench binary re-executes itself to become each backend
//! (`WEFT_INGRESS_BENCH_ROLE=backend`) and weft's proxy (`...=weft`: a tokio runtime with a
//! fixed number of worker threads serving `Proxy::serve` on a plain and a TLS listener),
//! so the proxy's RSS and CPU time are its own, as nginx's are.
//!
//! Knobs (environment): WEFT_INGRESS_BENCH_ROUNDS (5), _SECONDS (10, per wrk run), _CONNS
//! (64, wrk -c), _THREADS (1: weft's worker threads = nginx's worker_processes), _PROXY_CPUS
//! ("1"), _CLIENT_CPUS ("0": wrk, the backends and this driver), _INGRESSES (5000), _RELOADS
//! (5), _ACCESS_LOG (1: weft logs at info as the agent does, nginx writes its access log),
//! _MODES (http-ka,http-close,https-ka,https-close), _KEEP=1 keeps the work directory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::ByteString;
use serde_json::json;

const ROLE: &str = "WEFT_INGRESS_BENCH_ROLE";
/// Where the proxies listen (inside the namespace): one address, a port pair each, so one
/// host name (and SNI) reaches either.
const PROXY_IP: &str = "127.0.0.1";
const WEFT_HTTP: u16 = 10080;
const WEFT_HTTPS: u16 = 10443;
const NGINX_HTTP: u16 = 20080;
const NGINX_HTTPS: u16 = 20443;
/// The 5000-Ingress instances of the reconfiguration test.
const WEFT_MANY: u16 = 11080;
const NGINX_MANY: u16 = 21080;
/// Two backend processes; each serves Service a on 8081 and Service b on 8082.
const BACKENDS: [&str; 2] = ["127.0.1.1", "127.0.1.2"];
const PORT_A: u16 = 8081;
const PORT_B: u16 = 8082;
/// The throughput runs' target: shop.bench's `/api` prefix, Service b.
const TARGET_PATH: &str = "/api/items";

// ---------------------------------------------------------------------------------------
// Settings

#[derive(Debug, Clone)]
struct Cfg {
    rounds: usize,
    secs: u64,
    conns: usize,
    threads: usize,
    proxy_cpus: String,
    client_cpus: String,
    ingresses: usize,
    reloads: usize,
    access_log: bool,
    modes: Vec<Mode>,
    keep: bool,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(format!("WEFT_INGRESS_BENCH_{name}"))
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Cfg {
    fn from_env() -> Cfg {
        let modes: String = env_or("MODES", "http-ka,http-close,https-ka,https-close".into());
        Cfg {
            rounds: env_or("ROUNDS", 5),
            secs: env_or("SECONDS", 10),
            conns: env_or("CONNS", 64),
            threads: env_or("THREADS", 1),
            proxy_cpus: env_or("PROXY_CPUS", "1".to_string()),
            client_cpus: env_or("CLIENT_CPUS", "0".to_string()),
            ingresses: env_or("INGRESSES", 5000),
            reloads: env_or("RELOADS", 5),
            access_log: env_or("ACCESS_LOG", 1u8) == 1,
            modes: modes
                .split(',')
                .map(|m| Mode::parse(m.trim()).unwrap_or_else(|| panic!("unknown mode {m}")))
                .collect(),
            keep: env_or("KEEP", 0u8) == 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    HttpKa,
    HttpClose,
    HttpsKa,
    HttpsClose,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "http-ka" => Mode::HttpKa,
            "http-close" => Mode::HttpClose,
            "https-ka" => Mode::HttpsKa,
            "https-close" => Mode::HttpsClose,
            _ => return None,
        })
    }
    fn label(self) -> &'static str {
        match self {
            Mode::HttpKa => "HTTP, keep-alive",
            Mode::HttpClose => "HTTP, new connection per request",
            Mode::HttpsKa => "HTTPS, keep-alive",
            Mode::HttpsClose => "HTTPS, new connection (full TLS handshake) per request",
        }
    }
    fn short(self) -> &'static str {
        match self {
            Mode::HttpKa => "http keep-alive",
            Mode::HttpClose => "http new connection",
            Mode::HttpsKa => "https keep-alive",
            Mode::HttpsClose => "https new connection",
        }
    }
    fn tls(self) -> bool {
        matches!(self, Mode::HttpsKa | Mode::HttpsClose)
    }
    fn close(self) -> bool {
        matches!(self, Mode::HttpClose | Mode::HttpsClose)
    }
}

// ---------------------------------------------------------------------------------------
// The cluster both proxies serve

fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Arc<T> {
    Arc::new(serde_json::from_value(v).expect("object"))
}

fn service(name: &str) -> Arc<Service> {
    obj(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80}]}
    }))
}

fn slice(name: &str, port: u16) -> Arc<EndpointSlice> {
    obj(json!({
        "metadata": {"name": format!("{name}-1"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port}],
        "endpoints": BACKENDS.iter().map(|a| json!({"addresses": [a], "conditions": {"ready": true}})).collect::<Vec<_>>(),
    }))
}

fn path(p: &str, svc: &str) -> serde_json::Value {
    json!({"path": p, "pathType": "Prefix",
           "backend": {"service": {"name": svc, "port": {"number": 80}}}})
}

fn ingress(
    name: &str,
    host: &str,
    paths: Vec<serde_json::Value>,
    tls: Option<serde_json::Value>,
    second: usize,
) -> Arc<Ingress> {
    let mut spec = json!({
        "ingressClassName": "weft",
        "rules": [{"host": host, "http": {"paths": paths}}],
    });
    if let Some(t) = tls {
        spec["tls"] = t;
    }
    obj(json!({
        "metadata": {"name": name, "namespace": "default",
                     "creationTimestamp": format!("2026-01-01T{:02}:{:02}:{:02}Z", second / 3600, second / 60 % 60, second % 60)},
        "spec": spec,
    }))
}

fn base_cluster(dir: &Path) -> weft_ingress::Cluster {
    let mut c = weft_ingress::Cluster::default();
    c.classes
        .push(obj::<IngressClass>(weft_ingress::cases::default_class()));
    c.services.push(service("svc-a"));
    c.services.push(service("svc-b"));
    c.slices.push(slice("svc-a", PORT_A));
    c.slices.push(slice("svc-b", PORT_B));
    let crt = fs::read(dir.join("tls.crt")).expect("tls.crt");
    let key = fs::read(dir.join("tls.key")).expect("tls.key");
    let mut s = Secret::default();
    s.metadata.name = Some("bench-tls".into());
    s.metadata.namespace = Some("default".into());
    s.type_ = Some("kubernetes.io/tls".into());
    s.data = Some(BTreeMap::from([
        ("tls.crt".to_string(), ByteString(crt)),
        ("tls.key".to_string(), ByteString(key)),
    ]));
    c.secrets.push(Arc::new(s));
    c
}

/// The throughput runs' routes: shop.bench `/` -> a, `/api` -> b; blog.bench `/` -> b;
/// TLS for both names with the bench's certificate.
fn small_cluster(dir: &Path) -> weft_ingress::Cluster {
    let mut c = base_cluster(dir);
    let tls = json!([{"hosts": ["shop.bench", "blog.bench"], "secretName": "bench-tls"}]);
    c.ingresses.push(ingress(
        "shop",
        "shop.bench",
        vec![path("/", "svc-a"), path("/api", "svc-b")],
        Some(tls),
        0,
    ));
    c.ingresses.push(ingress(
        "blog",
        "blog.bench",
        vec![path("/", "svc-b")],
        None,
        1,
    ));
    c
}

fn many_host(i: usize) -> String {
    format!("h-{i:05}.bench")
}

/// Ingress `i` of the reconfiguration test: its host's `/` to a, plus `/v<k>` to b for
/// each change `k` made to it.
fn many_ingress(i: usize, changes: &[usize]) -> Arc<Ingress> {
    let mut paths = vec![path("/", "svc-a")];
    paths.extend(changes.iter().map(|k| path(&format!("/v{k}"), "svc-b")));
    ingress(&format!("ing-{i:05}"), &many_host(i), paths, None, i)
}

/// Which Ingress change `k` (1-based) edits.
fn changed_index(k: usize, n: usize) -> usize {
    (k * 997 + 13) % n
}

fn many_cluster(dir: &Path, n: usize) -> weft_ingress::Cluster {
    let mut c = base_cluster(dir);
    c.ingresses = (0..n).map(|i| many_ingress(i, &[])).collect();
    c
}

// ---------------------------------------------------------------------------------------
// nginx's configuration for the same routes

struct NginxSite {
    host: String,
    /// (Prefix path, upstream)
    paths: Vec<(String, &'static str)>,
}

fn nginx_location(out: &mut String, prefix: &str, upstream: &str) {
    // An Ingress Prefix matches whole path elements: /api and /api/..., never /apix.
    if prefix == "/" {
        let _ = writeln!(out, "    location / {{ proxy_pass http://{upstream}; }}");
    } else {
        let p = prefix.trim_end_matches('/');
        let _ = writeln!(
            out,
            "    location = {p} {{ proxy_pass http://{upstream}; }}"
        );
        let _ = writeln!(out, "    location {p}/ {{ proxy_pass http://{upstream}; }}");
    }
}

fn nginx_conf(
    cfg: &Cfg,
    dir: &Path,
    tag: &str,
    http: u16,
    https: Option<u16>,
    sites: &[NginxSite],
) -> String {
    let d = dir.display();
    let mut o = String::new();
    let access = if cfg.access_log {
        format!("{d}/{tag}-access.log")
    } else {
        "off".into()
    };
    let _ = write!(
        o,
        "worker_processes {threads};
pid {d}/{tag}.pid;
error_log {d}/{tag}-error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
  access_log {access};
  client_body_temp_path {d}/{tag}-tmp/body;
  proxy_temp_path {d}/{tag}-tmp/proxy;
  fastcgi_temp_path {d}/{tag}-tmp/fastcgi;
  uwsgi_temp_path {d}/{tag}-tmp/uwsgi;
  scgi_temp_path {d}/{tag}-tmp/scgi;
  keepalive_timeout 75s;
  keepalive_requests 1000000;
  server_names_hash_max_size 32768;
  server_names_hash_bucket_size 128;
  proxy_http_version 1.1;
  proxy_set_header Connection \"\";
  proxy_set_header Host $host;
  proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
  proxy_set_header X-Forwarded-Proto $scheme;
  proxy_set_header X-Forwarded-Host $host;
  proxy_set_header Forwarded \"for=$remote_addr;host=\\\"$host\\\";proto=$scheme\";
",
        threads = cfg.threads
    );
    for (name, port) in [("svc_a", PORT_A), ("svc_b", PORT_B)] {
        let _ = writeln!(o, "  upstream {name} {{");
        for b in BACKENDS {
            let _ = writeln!(o, "    server {b}:{port};");
        }
        // weft's pool: up to 256 idle connections per endpoint, 60 s idle timeout.
        let _ = writeln!(
            o,
            "    keepalive 256;\n    keepalive_requests 1000000;\n    keepalive_timeout 60s;\n  }}"
        );
    }
    if https.is_some() {
        // Only where TLS is served: nginx loads the certificate for every server block
        // that inherits it, TLS listener or not.
        let _ = writeln!(
            o,
            "  ssl_certificate {d}/tls.crt;\n  ssl_certificate_key {d}/tls.key;"
        );
    }
    let listen = |o: &mut String, default: &str| {
        let _ = writeln!(o, "    listen {PROXY_IP}:{http}{default};");
        if let Some(s) = https {
            let _ = writeln!(o, "    listen {PROXY_IP}:{s} ssl{default};");
        }
    };
    // A host no rule names: 404, as weft answers it.
    o.push_str("  server {\n");
    listen(&mut o, " default_server");
    o.push_str("    return 404;\n  }\n");
    for s in sites {
        o.push_str("  server {\n");
        listen(&mut o, "");
        let _ = writeln!(o, "    server_name {};", s.host);
        for (p, u) in &s.paths {
            nginx_location(&mut o, p, u);
        }
        o.push_str("  }\n");
    }
    o.push_str("}\n");
    o
}

fn small_sites() -> Vec<NginxSite> {
    vec![
        NginxSite {
            host: "shop.bench".into(),
            paths: vec![("/".into(), "svc_a"), ("/api".into(), "svc_b")],
        },
        NginxSite {
            host: "blog.bench".into(),
            paths: vec![("/".into(), "svc_b")],
        },
    ]
}

fn many_sites(n: usize, changes: &BTreeMap<usize, Vec<usize>>) -> Vec<NginxSite> {
    (0..n)
        .map(|i| {
            let mut paths = vec![("/".to_string(), "svc_a")];
            for k in changes.get(&i).into_iter().flatten() {
                paths.push((format!("/v{k}"), "svc_b"));
            }
            NginxSite {
                host: many_host(i),
                paths,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Cleanup: the namespace, its hosts file, the processes, the work directory; on success,
// on a panic (Drop) and on SIGINT/SIGTERM/SIGHUP (a thread waiting for them).

#[derive(Default)]
struct Cleanup {
    netns: Option<String>,
    dir: Option<PathBuf>,
    keep_dir: bool,
    /// Processes to stop, newest last. nginx masters get their workers stopped too.
    pids: Vec<u32>,
}

static CLEANUP: Mutex<Option<Cleanup>> = Mutex::new(None);

/// Records a child to stop at the end; one started after the cleanup ran (a signal came
/// while it was being spawned) is stopped at once.
fn register_pid(pid: u32) {
    let mut state = CLEANUP.lock().unwrap_or_else(|p| p.into_inner());
    match state.as_mut() {
        Some(c) => c.pids.push(pid),
        None => {
            drop(state);
            stop_tree(pid);
        }
    }
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if proc_stat(p).is_some_and(|s| s.ppid == pid) {
            out.push(p);
        }
    }
    out
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

fn alive(pid: u32) -> bool {
    // A zombie (ours, not reaped yet) counts as gone.
    proc_stat(pid).is_some_and(|s| s.state != 'Z')
}

/// Stops `pid` and its children: SIGTERM to `pid` (an nginx master then stops and reaps
/// its workers), up to 2 s, then SIGKILL to whatever of the tree is left.
fn stop_tree(pid: u32) {
    use nix::sys::signal::Signal;
    let mut all = children_of(pid);
    all.push(pid);
    signal(pid, Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    while all.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in &all {
        if alive(*p) {
            signal(*p, Signal::SIGKILL);
        }
    }
}

/// Forgets a child that was waited for: its pid may be reused by someone else's process.
fn unregister_pid(pid: u32) {
    if let Some(c) = CLEANUP.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
        c.pids.retain(|p| *p != pid);
    }
}

/// Stops a child of ours and its children, reaps it, forgets it.
fn finish(child: &mut Child) {
    stop_tree(child.id());
    let _ = child.wait();
    unregister_pid(child.id());
}

/// Idempotent; the lock is held throughout, so a second caller (the main thread
/// unwinding while the signal thread cleans up) waits until everything is gone.
fn cleanup() {
    let mut state = CLEANUP.lock().unwrap_or_else(|p| p.into_inner());
    let Some(c) = state.take() else {
        return;
    };
    for pid in c.pids.iter().rev() {
        if alive(*pid) {
            stop_tree(*pid);
        }
    }
    if let Some(ns) = &c.netns {
        // Whatever still runs in the namespace was started by this bench (an nginx worker
        // whose master died, say): stop it, or the namespace outlives its name.
        let in_ns = || -> Vec<u32> {
            Command::new("ip")
                .args(["netns", "pids", ns])
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .filter_map(|p| p.parse().ok())
                        .filter(|p| *p != std::process::id())
                        .collect()
                })
                .unwrap_or_default()
        };
        for sig in [
            nix::sys::signal::Signal::SIGTERM,
            nix::sys::signal::Signal::SIGKILL,
        ] {
            let left = in_ns();
            for p in &left {
                signal(*p, sig);
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            while left.iter().any(|p| alive(*p)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let ok = Command::new("ip")
            .args(["netns", "del", ns])
            .status()
            .is_ok_and(|s| s.success());
        let _ = fs::remove_dir_all(Path::new("/etc/netns").join(ns));
        if !ok {
            eprintln!("bench: could not delete netns {ns}");
        }
    }
    if let Some(d) = &c.dir {
        if c.keep_dir {
            eprintln!("bench: kept {}", d.display());
        } else {
            let _ = fs::remove_dir_all(d);
        }
    }
}

struct Guard;
impl Drop for Guard {
    fn drop(&mut self) {
        cleanup();
    }
}

/// A command whose process starts with no signal blocked: this process blocks SIGINT,
/// SIGTERM and SIGHUP in every thread (see `install_signal_thread`), and a child inherits
/// the mask across exec.
fn unblocked(prog: &str) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(prog);
    // SAFETY: pthread_sigmask is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        c.pre_exec(|| {
            nix::sys::signal::pthread_sigmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&nix::sys::signal::SigSet::empty()),
                None,
            )
            .map_err(std::io::Error::from)
        });
    }
    c
}

fn install_signal_thread() {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    // Blocked here, before any other thread exists, so every thread inherits it and only
    // the waiting thread takes them. Children are started unblocked (`unblocked`).
    set.thread_block().expect("block signals");
    std::thread::spawn(move || {
        if let Ok(sig) = set.wait() {
            eprintln!("\nbench: {sig:?}: cleaning up");
            cleanup();
            std::process::exit(130);
        }
    });
}

// ---------------------------------------------------------------------------------------
// /proc

struct ProcStat {
    state: char,
    ppid: u32,
    /// utime + stime, clock ticks.
    ticks: u64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        ticks: f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?,
    })
}

fn clk_tck() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64
}

/// A proxy's processes: weft's one, nginx's master and workers.
fn proxy_pids(pid: u32, nginx: bool) -> Vec<u32> {
    let mut v = vec![pid];
    if nginx {
        v.extend(children_of(pid));
    }
    v
}

fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| proc_stat(*p))
        .map(|s| s.ticks)
        .sum()
}

#[derive(Debug, Default, Clone, Copy)]
struct Mem {
    rss_kib: u64,
    pss_kib: u64,
    hwm_kib: u64,
}

fn mem(pids: &[u32]) -> Mem {
    let field = |text: &str, key: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut m = Mem::default();
    for p in pids {
        let status = fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        let rollup = fs::read_to_string(format!("/proc/{p}/smaps_rollup")).unwrap_or_default();
        m.rss_kib += field(&status, "VmRSS:");
        m.hwm_kib += field(&status, "VmHWM:");
        m.pss_kib += field(&rollup, "Pss:");
    }
    m
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

// ---------------------------------------------------------------------------------------
// Spawning inside the namespace

struct Ctx {
    cfg: Cfg,
    ns: String,
    dir: PathBuf,
    exe: PathBuf,
}

impl Ctx {
    /// `ip netns exec <ns> taskset -c <cpus> <prog> <args>`: exec all the way down, so the
    /// child's pid is the program's.
    fn command(&self, cpus: &str, prog: &Path) -> Command {
        let mut c = unblocked("ip");
        c.args(["netns", "exec", &self.ns, "taskset", "-c", cpus])
            .arg(prog);
        c
    }

    fn log(&self, name: &str) -> fs::File {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(name))
            .expect("log file")
    }

    fn spawn(&self, mut c: Command, what: &str) -> Child {
        let child = c.spawn().unwrap_or_else(|e| panic!("spawning {what}: {e}"));
        register_pid(child.id());
        child
    }
}

fn wait_port(addr: &str, what: &str) {
    let a: SocketAddr = addr.parse().expect("addr");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} does not listen on {addr}");
}

struct Weft {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Weft {
    fn start(ctx: &Ctx, cluster: &str, http: u16, https: Option<u16>) -> (Weft, String) {
        let mut c = ctx.command(&ctx.cfg.proxy_cpus, &ctx.exe);
        c.env(ROLE, "weft")
            .env("WEFT_INGRESS_BENCH_DIR", &ctx.dir)
            .env("WEFT_INGRESS_BENCH_CLUSTER", cluster)
            .env("WEFT_INGRESS_BENCH_THREADS", ctx.cfg.threads.to_string())
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
    fn ask(&mut self, cmd: &str) -> String {
        writeln!(self.stdin, "{cmd}").expect("to weft");
        self.stdin.flush().expect("flush");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("from weft");
        line.trim().to_string()
    }
}

struct Nginx {
    child: Child,
    conf: PathBuf,
    tag: String,
}

impl Nginx {
    fn start(ctx: &Ctx, tag: &str, text: &str, port: u16) -> (Nginx, Duration) {
        let conf = ctx.dir.join(format!("{tag}.conf"));
        fs::write(&conf, text).expect("nginx conf");
        fs::create_dir_all(ctx.dir.join(format!("{tag}-tmp"))).expect("tmp");
        let t = Instant::now();
        let mut c = ctx.command(&ctx.cfg.proxy_cpus, Path::new("nginx"));
        c.args(nginx_args(&ctx.dir, &conf))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(ctx.log(&format!("{tag}-stdout.log")))
            .stderr(ctx.log(&format!("{tag}-stdout.log")));
        let child = ctx.spawn(c, "nginx");
        wait_port(&format!("{PROXY_IP}:{port}"), "nginx");
        (
            Nginx {
                child,
                conf,
                tag: tag.to_string(),
            },
            t.elapsed(),
        )
    }

    fn pids(&self) -> Vec<u32> {
        proxy_pids(self.child.id(), true)
    }

    fn stop(mut self) {
        finish(&mut self.child);
    }
}

fn nginx_args(dir: &Path, conf: &Path) -> Vec<String> {
    vec![
        "-p".into(),
        dir.display().to_string(),
        "-e".into(),
        dir.join("nginx-stderr.log").display().to_string(),
        "-c".into(),
        conf.display().to_string(),
    ]
}

// ---------------------------------------------------------------------------------------
// A small HTTP/1.1 client (route checks, reconfiguration probes)

#[derive(Debug)]
struct Resp {
    status: u16,
    body: Vec<u8>,
    close: bool,
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn request(s: &mut TcpStream, host: &str, path: &str, close: bool) -> Result<Resp, String> {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{}\r\n",
        if close { "Connection: close\r\n" } else { "" }
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("write: {}", e.kind()))?;
    let mut buf = Vec::with_capacity(512);
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = s
            .read(&mut tmp)
            .map_err(|e| format!("read: {}", e.kind()))?;
        if n == 0 {
            return Err(if buf.is_empty() {
                "closed before the response".into()
            } else {
                "closed mid-response".into()
            });
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    let mut len = 0usize;
    let mut conn_close = false;
    for line in head.lines().skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().map_err(|_| "bad content-length")?;
            } else if k.eq_ignore_ascii_case("connection") {
                conn_close = v.trim().eq_ignore_ascii_case("close");
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                return Err("chunked response (not expected here)".into());
            }
        }
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = s
            .read(&mut tmp)
            .map_err(|e| format!("read body: {}", e.kind()))?;
        if n == 0 {
            return Err("closed mid-body".into());
        }
        body.extend_from_slice(&tmp[..n]);
    }
    body.truncate(len);
    Ok(Resp {
        status,
        body,
        close: conn_close || close,
    })
}

fn connect(port: u16) -> Result<TcpStream, String> {
    let a: SocketAddr = format!("{PROXY_IP}:{port}").parse().expect("addr");
    let s = TcpStream::connect_timeout(&a, Duration::from_secs(2))
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let _ = s.set_nodelay(true);
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

fn get_once(port: u16, host: &str, path: &str) -> Result<Resp, String> {
    let mut s = connect(port)?;
    request(&mut s, host, path, true)
}

/// What a route answered: "a", "b" (the backend's Service), or the status.
fn answer(port: u16, host: &str, path: &str) -> String {
    match get_once(port, host, path) {
        Ok(r) if r.status == 200 => String::from_utf8_lossy(&r.body).trim().to_string(),
        Ok(r) => r.status.to_string(),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------------
// wrk

#[derive(Debug, Default, Clone)]
struct WrkOut {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    errors: u64,
    bytes_per_req: f64,
    /// The proxy's CPU use over the run, in cores.
    cores: f64,
    /// The backends' CPU use over the run, in cores.
    backend_cores: f64,
    /// How busy each CPU of the machine was over the run (anyone's work), 0..1.
    busy: Vec<f64>,
}

/// Per CPU: (busy, total) jiffies from /proc/stat.
fn cpu_times() -> Vec<(u64, u64)> {
    let text = fs::read_to_string("/proc/stat").unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            (total - idle, total)
        })
        .collect()
}

fn parse_dur_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = if let Some(v) = s.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1000.0)
    } else if let Some(v) = s.strip_suffix('m') {
        (v, 60_000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|n| n * mult)
}

fn parse_size(s: &str) -> f64 {
    let s = s.trim();
    for (suf, m) in [
        ("GB", 1e9f64),
        ("MB", 1048576.0),
        ("KB", 1024.0),
        ("B", 1.0),
    ] {
        if let Some(v) = s.strip_suffix(suf) {
            return v.parse::<f64>().unwrap_or(0.0) * m;
        }
    }
    0.0
}

fn parse_wrk(out: &str) -> WrkOut {
    let mut w = WrkOut::default();
    let mut transfer = 0.0;
    for line in out.lines() {
        let t = line.trim();
        let f: Vec<&str> = t.split_whitespace().collect();
        match f.as_slice() {
            ["50%", v] => w.p50_ms = parse_dur_ms(v).unwrap_or(f64::NAN),
            ["99%", v] => w.p99_ms = parse_dur_ms(v).unwrap_or(f64::NAN),
            ["Requests/sec:", v] => w.rps = v.parse().unwrap_or(0.0),
            ["Transfer/sec:", v] => transfer = parse_size(v),
            [n, "requests", "in", ..] => w.requests = n.parse().unwrap_or(0),
            ["Non-2xx", "or", "3xx", "responses:", n] => w.errors += n.parse::<u64>().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                w.errors += rest
                    .iter()
                    .filter_map(|x| x.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>()
            }
            _ => {}
        }
    }
    if w.rps > 0.0 {
        w.bytes_per_req = transfer / w.rps;
    }
    w
}

fn run_wrk(
    ctx: &Ctx,
    url: &str,
    close: bool,
    secs: u64,
    proxy: &[u32],
    backends: &[u32],
) -> (WrkOut, String) {
    let mut c = ctx.command(&ctx.cfg.client_cpus, Path::new("wrk"));
    c.args([
        "-t1".to_string(),
        format!("-c{}", ctx.cfg.conns),
        format!("-d{secs}s"),
        "--timeout".into(),
        "5s".into(),
        "--latency".into(),
    ]);
    if close {
        c.args(["-H", "Connection: close"]);
    }
    c.arg(url).stdin(Stdio::null()).stderr(Stdio::piped());
    let (t0, b0, c0) = (cpu_ticks(proxy), cpu_ticks(backends), cpu_times());
    let start = Instant::now();
    c.stdout(Stdio::piped());
    let child = c.spawn().expect("wrk");
    register_pid(child.id());
    let pid = child.id();
    let out = child.wait_with_output().expect("wrk");
    unregister_pid(pid);
    let wall = start.elapsed().as_secs_f64();
    let (t1, b1, c1) = (cpu_ticks(proxy), cpu_ticks(backends), cpu_times());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "wrk failed: {text}");
    let mut w = parse_wrk(&text);
    w.cores = (t1.saturating_sub(t0)) as f64 / clk_tck() / wall;
    w.backend_cores = (b1.saturating_sub(b0)) as f64 / clk_tck() / wall;
    w.busy = c0
        .iter()
        .zip(&c1)
        .map(|(a, b)| (b.0 - a.0) as f64 / ((b.1 - a.1).max(1)) as f64)
        .collect();
    (w, text)
}

// ---------------------------------------------------------------------------------------
// Statistics

fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n.is_multiple_of(2) {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    } else {
        s[n / 2]
    }
}

fn list(v: &[f64], prec: usize) -> String {
    v.iter()
        .map(|x| format!("{x:.prec$}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

// ---------------------------------------------------------------------------------------
// Reconfiguration under load

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    failed: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    fn fail(&self, why: String) {
        *self
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(why)
            .or_default() += 1;
    }
    fn failures(&self) -> u64 {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum()
    }
}

/// One client loop: requests back to back until `stop`, on one kept-alive connection
/// (reconnecting when the proxy closes it) or a new connection each. Every request must be
/// a 200 from Service a or b; the first answer from b is recorded in `seen`.
fn client_loop(
    port: u16,
    keepalive: bool,
    target: impl Fn(u64) -> (String, String),
    stop: &AtomicBool,
    tally: &Tally,
    seen: &OnceLock<Instant>,
) {
    let mut conn: Option<(TcpStream, u64)> = None;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let (host, path) = target(i);
        let (s, used) = match conn.as_mut() {
            Some(c) => c,
            None => match connect(port) {
                Ok(s) => conn.insert((s, 0)),
                Err(e) => {
                    tally.sent.fetch_add(1, Ordering::Relaxed);
                    tally.fail(e);
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
            },
        };
        tally.sent.fetch_add(1, Ordering::Relaxed);
        *used += 1;
        let reused = *used > 1;
        match request(s, &host, &path, !keepalive) {
            Ok(r) if r.status == 200 && (r.body == b"a\n" || r.body == b"b\n") => {
                if r.body == b"b\n" {
                    let _ = seen.set(Instant::now());
                }
                if r.close {
                    conn = None;
                }
            }
            Ok(r) => {
                tally.fail(format!("status {}", r.status));
                conn = None;
            }
            Err(e) => {
                tally.fail(if reused {
                    format!("{e} (on a kept-alive connection)")
                } else {
                    e
                });
                conn = None;
            }
        }
    }
}

#[derive(Debug, Default)]
struct Trial {
    apply_ms: f64,
    detail: String,
    seen_new_ms: f64,
    seen_ka_ms: f64,
    sent: u64,
    failed: u64,
    reasons: BTreeMap<String, u64>,
}

/// One change under load: two probes poll the changed host's new path (one new connection
/// per request, one kept-alive connection) while two background clients request the other
/// hosts (one of each kind). `apply` makes the change; the times are from its start.
fn trial(port: u16, n: usize, k: usize, apply: impl FnOnce() -> String) -> Trial {
    let idx = changed_index(k, n);
    let host = many_host(idx);
    let p = format!("/v{k}/x");
    let stop = AtomicBool::new(false);
    let tally = Tally::default();
    let (seen_new, seen_ka) = (OnceLock::new(), OnceLock::new());
    let mut t = Trial::default();
    std::thread::scope(|sc| {
        let mut clients = Vec::new();
        for (keepalive, seen) in [(false, &seen_new), (true, &seen_ka)] {
            let (host, p, stop, tally) = (host.clone(), p.clone(), &stop, &tally);
            clients.push(sc.spawn(move || {
                let target = move |_| (host.clone(), p.clone());
                client_loop(port, keepalive, target, stop, tally, seen)
            }));
        }
        for (keepalive, seed) in [(true, 1u64), (false, 7)] {
            let (stop, tally) = (&stop, &tally);
            clients.push(sc.spawn(move || {
                let target = move |i: u64| {
                    let j = i.wrapping_mul(2654435761).wrapping_add(seed) % n as u64;
                    (many_host(j as usize), "/".to_string())
                };
                client_loop(port, keepalive, target, stop, tally, &OnceLock::new())
            }));
        }
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            seen_new.get().is_none() && seen_ka.get().is_none(),
            "{host}{p} answered by b before the change"
        );
        let start = Instant::now();
        t.detail = apply();
        t.apply_ms = start.elapsed().as_secs_f64() * 1e3;
        // Both probes must see the change; then a second more of load (old nginx workers
        // finish their connections in it).
        let deadline = start + Duration::from_secs(15);
        while (seen_new.get().is_none() || seen_ka.get().is_none()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(1000));
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().expect("client");
        }
        let ms = |o: Option<&Instant>| {
            o.map_or(f64::NAN, |i| i.duration_since(start).as_secs_f64() * 1e3)
        };
        t.seen_new_ms = ms(seen_new.get());
        t.seen_ka_ms = ms(seen_ka.get());
    });
    t.sent = tally.sent.load(Ordering::Relaxed);
    t.failed = tally.failures();
    t.reasons = tally.failed.into_inner().unwrap_or_default();
    t
}

// ---------------------------------------------------------------------------------------
// The driver

fn driver() {
    let cfg = Cfg::from_env();
    assert!(
        nix::unistd::geteuid().is_root(),
        "run as root (network namespaces): sudo scripts/bench-ingress.sh"
    );
    for tool in ["nginx", "wrk", "ip", "taskset"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "{tool} not found: scripts/bench-ingress.sh installs nginx and wrk"
        );
    }
    // Before this thread is pinned to the client CPUs.
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    install_signal_thread();
    let pid = std::process::id();
    let ns = format!("weft-bench-{pid}-ingress");
    let dir = std::env::temp_dir().join(format!("weft-bench-ingress-{pid}"));
    fs::create_dir_all(&dir).expect("work dir");
    *CLEANUP.lock().unwrap_or_else(|p| p.into_inner()) = Some(Cleanup {
        netns: Some(ns.clone()),
        dir: Some(dir.clone()),
        keep_dir: cfg.keep,
        pids: vec![],
    });
    let _guard = Guard;
    // nginx's workers (user nobody) read nothing from here, but keep it traversable.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");

    let sh = |args: &[&str]| {
        let st = Command::new(args[0])
            .args(&args[1..])
            .status()
            .expect(args[0]);
        assert!(st.success(), "{args:?} failed");
    };
    sh(&["ip", "netns", "add", &ns]);
    sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
    // `ip netns exec` mounts /etc/netns/<ns>/hosts over /etc/hosts: wrk resolves the
    // bench's host names (and sends them as SNI) through it.
    let etc = Path::new("/etc/netns").join(&ns);
    fs::create_dir_all(&etc).expect("/etc/netns");
    fs::write(
        etc.join("hosts"),
        format!("127.0.0.1 localhost\n{PROXY_IP} shop.bench blog.bench\n"),
    )
    .expect("hosts");
    // This thread (and every thread it starts) joins the namespace: the probes run here.
    let nsf = fs::File::open(Path::new("/run/netns").join(&ns)).expect("netns file");
    nix::sched::setns(nsf, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
    let cpus: Vec<usize> = cfg
        .client_cpus
        .split(',')
        .filter_map(|c| c.parse().ok())
        .collect();
    let mut set = nix::sched::CpuSet::new();
    for c in &cpus {
        let _ = set.set(*c);
    }
    let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);

    // The certificate both proxies present (rcgen, ECDSA P-256, self-signed).
    let ck = rcgen::generate_simple_self_signed(vec![
        "shop.bench".to_string(),
        "blog.bench".to_string(),
    ])
    .expect("certificate");
    fs::write(dir.join("tls.crt"), ck.cert.pem()).expect("crt");
    fs::write(dir.join("tls.key"), ck.signing_key.serialize_pem()).expect("key");

    let ctx = Ctx {
        cfg: cfg.clone(),
        ns: ns.clone(),
        dir: dir.clone(),
        exe: std::env::current_exe().expect("exe"),
    };
    let load_start = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let nginx_version = Command::new("nginx")
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_default();
    let wrk_version = Command::new("sh")
        .args(["-c", "dpkg-query -W -f '${Package} ${Version}, ' wrk nginx"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();

    println!(
        "== backends, weft and nginx in netns {ns}; work dir {}",
        dir.display()
    );
    let mut backends = Vec::new();
    for b in BACKENDS {
        let mut c = ctx.command(&cfg.client_cpus, &ctx.exe);
        c.env(ROLE, "backend")
            .env(
                "WEFT_INGRESS_BENCH_ADDRS",
                format!("{b}:{PORT_A}=a,{b}:{PORT_B}=b"),
            )
            .stdin(Stdio::null())
            .stderr(ctx.log("backends.log"));
        backends.push(ctx.spawn(c, "backend"));
        wait_port(&format!("{b}:{PORT_A}"), "backend");
        wait_port(&format!("{b}:{PORT_B}"), "backend");
    }
    let backend_pids: Vec<u32> = backends.iter().map(|b| b.id()).collect();

    let (weft, ready) = Weft::start(&ctx, "small", WEFT_HTTP, Some(WEFT_HTTPS));
    println!("   weft: {ready}");
    let (nginx, _) = Nginx::start(
        &ctx,
        "nginx-small",
        &nginx_conf(
            &cfg,
            &dir,
            "nginx-small",
            NGINX_HTTP,
            Some(NGINX_HTTPS),
            &small_sites(),
        ),
        NGINX_HTTP,
    );
    wait_port(&format!("{PROXY_IP}:{NGINX_HTTPS}"), "nginx");

    // The same routes: every check answered the same by both.
    let checks = [
        ("shop.bench", "/", "a"),
        ("shop.bench", "/api", "b"),
        ("shop.bench", TARGET_PATH, "b"),
        ("shop.bench", "/apix", "a"),
        ("SHOP.bench", "/api/", "b"),
        ("blog.bench", "/x", "b"),
        ("nowhere.bench", "/", "404"),
    ];
    for (host, p, want) in checks {
        let w = answer(WEFT_HTTP, host, p);
        let n = answer(NGINX_HTTP, host, p);
        assert!(
            w == want && n == want,
            "route check {host}{p}: want {want}, weft {w}, nginx {n}"
        );
    }
    // Over TLS, through the same name resolution and SNI wrk uses.
    for port in [WEFT_HTTPS, NGINX_HTTPS] {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, "sh", "-c"])
            .arg(format!(
                "curl -sk --max-time 5 https://shop.bench:{port}{TARGET_PATH} -w ' %{{http_code}} %{{ssl_verify_result}}' 2>&1 || true"
            ))
            .output()
            .expect("curl");
        let got = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            got.starts_with("b\n 200") || got.contains("not found"),
            "TLS check on :{port}: {got:?}"
        );
    }
    println!(
        "   route checks: weft and nginx agree on {} requests (+ TLS)",
        checks.len()
    );

    let weft_pids = proxy_pids(weft.child.id(), false);
    let truncate = |name: &str| {
        if let Ok(f) = fs::OpenOptions::new().write(true).open(dir.join(name)) {
            let _ = f.set_len(0);
        }
    };
    let url = |mode: Mode, weft: bool| {
        let (scheme, port) = match (mode.tls(), weft) {
            (false, true) => ("http", WEFT_HTTP),
            (true, true) => ("https", WEFT_HTTPS),
            (false, false) => ("http", NGINX_HTTP),
            (true, false) => ("https", NGINX_HTTPS),
        };
        format!("{scheme}://shop.bench:{port}{TARGET_PATH}")
    };

    println!("== warm-up: 2 s per proxy and mode");
    for &mode in &cfg.modes {
        for is_weft in [true, false] {
            let pids = if is_weft {
                weft_pids.clone()
            } else {
                nginx.pids()
            };
            run_wrk(
                &ctx,
                &url(mode, is_weft),
                mode.close(),
                2,
                &pids,
                &backend_pids,
            );
        }
    }
    truncate("weft-small.log");
    truncate("nginx-small-access.log");

    println!(
        "== {} rounds x {} s per proxy and mode, wrk -t1 -c{} (alternating which proxy goes first)",
        cfg.rounds, cfg.secs, cfg.conns
    );
    // results[mode][0 = weft, 1 = nginx]
    let mut results: Vec<[Vec<WrkOut>; 2]> = cfg.modes.iter().map(|_| [vec![], vec![]]).collect();
    for round in 1..=cfg.rounds {
        for (mi, &mode) in cfg.modes.iter().enumerate() {
            let order = if round.is_multiple_of(2) {
                [false, true]
            } else {
                [true, false]
            };
            for is_weft in order {
                let pids = if is_weft {
                    weft_pids.clone()
                } else {
                    nginx.pids()
                };
                let (w, text) = run_wrk(
                    &ctx,
                    &url(mode, is_weft),
                    mode.close(),
                    cfg.secs,
                    &pids,
                    &backend_pids,
                );
                let name = if is_weft { "weft" } else { "nginx" };
                fs::write(dir.join(format!("wrk-{name}-{mi}-{round}.txt")), &text)
                    .expect("wrk out");
                println!(
                    "   round {round} {:<22} {name:<5} {:>9.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  errors {:>5}  proxy cores {:.2}  backend cores {:.2}  CPUs busy {}",
                    mode.short(),
                    w.rps,
                    w.p50_ms,
                    w.p99_ms,
                    w.errors,
                    w.cores,
                    w.backend_cores,
                    list(&w.busy, 2)
                );
                results[mi][usize::from(!is_weft)].push(w);
                truncate("weft-small.log");
                truncate("nginx-small-access.log");
            }
        }
    }
    let weft_mem = mem(&weft_pids);
    let nginx_mem = mem(&nginx.pids());
    let nginx_procs = nginx.pids().len();
    let weft_threads = fs::read_dir(format!("/proc/{}/task", weft.child.id()))
        .map(|d| d.count())
        .unwrap_or(0);
    // The small instances are done: free their core for the reconfiguration test.
    let Weft {
        mut child, stdin, ..
    } = weft;
    drop(stdin);
    finish(&mut child);
    nginx.stop();

    // --- reconfiguration with N Ingresses ----------------------------------------------
    let n = cfg.ingresses;
    println!(
        "== reconfiguration: {n} Ingresses, {} changes per proxy",
        cfg.reloads
    );
    let t = Instant::now();
    let (mut weft_many, ready) = Weft::start(&ctx, &format!("many:{n}"), WEFT_MANY, None);
    let weft_start = t.elapsed();
    println!(
        "   weft: {ready} (started in {:.0} ms)",
        weft_start.as_secs_f64() * 1e3
    );
    let mut changes: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let many_tag = "nginx-many";
    let (nginx_many, nginx_start) = Nginx::start(
        &ctx,
        many_tag,
        &nginx_conf(
            &cfg,
            &dir,
            many_tag,
            NGINX_MANY,
            None,
            &many_sites(n, &changes),
        ),
        NGINX_MANY,
    );
    // Listening is not serving every host yet: wait for the last one.
    let t = Instant::now();
    while answer(NGINX_MANY, &many_host(n - 1), "/") != "a" && t.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let nginx_start = nginx_start + t.elapsed();
    println!(
        "   nginx: {n} server blocks, started in {:.0} ms",
        nginx_start.as_secs_f64() * 1e3
    );
    for i in [0, n / 2, n - 1] {
        assert_eq!(answer(WEFT_MANY, &many_host(i), "/v1/x"), "a");
        assert_eq!(answer(NGINX_MANY, &many_host(i), "/v1/x"), "a");
    }
    let mut trials: [Vec<Trial>; 2] = [vec![], vec![]];
    for k in 1..=cfg.reloads {
        let idx = changed_index(k, n);
        changes.entry(idx).or_default().push(k);
        let text = nginx_conf(
            &cfg,
            &dir,
            many_tag,
            NGINX_MANY,
            None,
            &many_sites(n, &changes),
        );
        let order = if k.is_multiple_of(2) {
            [false, true]
        } else {
            [true, false]
        };
        for is_weft in order {
            let tr = if is_weft {
                trial(WEFT_MANY, n, k, || weft_many.ask(&format!("change {k}")))
            } else {
                let conf = nginx_many.conf.clone();
                let tag = nginx_many.tag.clone();
                let (ctx, text) = (&ctx, &text);
                trial(NGINX_MANY, n, k, move || {
                    fs::write(&conf, text).expect("conf");
                    let mut c = ctx.command(&ctx.cfg.proxy_cpus, Path::new("nginx"));
                    let st = c
                        .args(nginx_args(&ctx.dir, &conf))
                        .args(["-s", "reload"])
                        .stderr(ctx.log(&format!("{tag}-stdout.log")))
                        .status()
                        .expect("nginx -s reload");
                    assert!(st.success(), "nginx -s reload failed");
                    "nginx -s reload".into()
                })
            };
            let name = if is_weft { "weft" } else { "nginx" };
            println!(
                "   change {k} ({}): {name:<5} apply {:>8.2} ms; seen by a new connection after {:>8.2} ms, by a kept-alive one after {:>8.2} ms; {} requests, {} failed {:?} [{}]",
                many_host(idx),
                tr.apply_ms,
                tr.seen_new_ms,
                tr.seen_ka_ms,
                tr.sent,
                tr.failed,
                tr.reasons,
                tr.detail
            );
            trials[usize::from(!is_weft)].push(tr);
        }
    }
    let weft_many_mem = mem(&proxy_pids(weft_many.child.id(), false));
    let nginx_many_mem = mem(&nginx_many.pids());
    let Weft {
        mut child, stdin, ..
    } = weft_many;
    drop(stdin);
    finish(&mut child);
    nginx_many.stop();
    for mut b in backends {
        finish(&mut b);
    }

    // --- report ----------------------------------------------------------------------------
    let load_end = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut r = String::new();
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "Machine: nproc {}, {}, kernel {}; {}; {nginx_version}; wrk and nginx packages {wrk_version}",
        nproc,
        fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or("?".into(), |(_, v)| v.trim().to_string()),
        fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default(),
    );
    let _ = writeln!(
        r,
        "Load average at start: {}; at end: {}",
        load_start
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        load_end
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let _ = writeln!(
        r,
        "Settings: {} rounds x {} s per proxy and mode (alternating which goes first), wrk -t1 -c{} --latency on CPU {}; \
         proxies on CPU {} (weft: {} tokio worker thread(s), {} threads in all; nginx: worker_processes {}, {} processes); \
         backends (2 processes) and the bench driver on CPU {}; access log {}",
        cfg.rounds,
        cfg.secs,
        cfg.conns,
        cfg.client_cpus,
        cfg.proxy_cpus,
        cfg.threads,
        weft_threads,
        cfg.threads,
        nginx_procs,
        cfg.client_cpus,
        if cfg.access_log { "on for both (weft: tracing at info to a file, as the agent logs; nginx: access_log to a file)" } else { "off for both" }
    );
    let _ = writeln!(r);
    let _ = writeln!(r, "| mode | weft req/s | nginx req/s | weft/nginx req/s | weft p50 | nginx p50 | weft p99 | nginx p99 | weft/nginx p99 | weft proxy cores | nginx proxy cores | weft req per proxy CPU-s | nginx req per proxy CPU-s | errors weft / nginx |");
    let _ = writeln!(r, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut per_run = String::new();
    let first_cpu = |s: &str| {
        s.split([',', '-'])
            .next()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    };
    let (proxy_cpu, cc): (usize, usize) = (first_cpu(&cfg.proxy_cpus), first_cpu(&cfg.client_cpus));
    for (mi, &mode) in cfg.modes.iter().enumerate() {
        let col = |side: usize, f: fn(&WrkOut) -> f64| -> Vec<f64> {
            results[mi][side].iter().map(f).collect()
        };
        let rps = [col(0, |w| w.rps), col(1, |w| w.rps)];
        let p50 = [col(0, |w| w.p50_ms), col(1, |w| w.p50_ms)];
        let p99 = [col(0, |w| w.p99_ms), col(1, |w| w.p99_ms)];
        let cores = [col(0, |w| w.cores), col(1, |w| w.cores)];
        let eff = [
            col(0, |w| {
                if w.cores > 0.0 {
                    w.rps / w.cores
                } else {
                    f64::NAN
                }
            }),
            col(1, |w| {
                if w.cores > 0.0 {
                    w.rps / w.cores
                } else {
                    f64::NAN
                }
            }),
        ];
        let errs = [col(0, |w| w.errors as f64), col(1, |w| w.errors as f64)];
        let m = |v: &Vec<f64>| median(v);
        let _ = writeln!(
            r,
            "| {} | {:.0} | {:.0} | **{:.2}** | {:.2} | {:.2} | {:.2} | {:.2} | **{:.2}** | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} / {:.0} |",
            mode.label(),
            m(&rps[0]),
            m(&rps[1]),
            m(&rps[0]) / m(&rps[1]),
            m(&p50[0]),
            m(&p50[1]),
            m(&p99[0]),
            m(&p99[1]),
            m(&p99[0]) / m(&p99[1]),
            m(&cores[0]),
            m(&cores[1]),
            m(&eff[0]),
            m(&eff[1]),
            errs[0].iter().sum::<f64>(),
            errs[1].iter().sum::<f64>(),
        );
        let bpr = [col(0, |w| w.bytes_per_req), col(1, |w| w.bytes_per_req)];
        let pc = proxy_cpu;
        let busy = |side: usize, cpu: usize| -> Vec<f64> {
            results[mi][side]
                .iter()
                .map(|w| w.busy.get(cpu).copied().unwrap_or(f64::NAN))
                .collect()
        };
        let _ = writeln!(
            per_run,
            "- {}: req/s weft {} | nginx {}; p99 ms weft {} | nginx {}; weft cores {} | nginx cores {}; \
             CPU {pc} (the proxies') busy, anyone's work: weft runs {} | nginx runs {}; \
             CPU {cc} busy: weft runs {} | nginx runs {}; backends' cores (median) weft runs {:.2}, nginx runs {:.2}; \
             response bytes (wrk) weft {:.0}, nginx {:.0}",
            mode.label(),
            list(&rps[0], 0),
            list(&rps[1], 0),
            list(&p99[0], 2),
            list(&p99[1], 2),
            list(&cores[0], 2),
            list(&cores[1], 2),
            list(&busy(0, pc), 2),
            list(&busy(1, pc), 2),
            list(&busy(0, cc), 2),
            list(&busy(1, cc), 2),
            m(&col(0, |w| w.backend_cores)),
            m(&col(1, |w| w.backend_cores)),
            m(&bpr[0]),
            m(&bpr[1]),
        );
    }
    let _ = writeln!(r);
    let _ = writeln!(r, "(latencies in ms, from wrk --latency at full load; medians over the rounds; errors summed over the rounds)");
    let _ = writeln!(r);
    let _ = writeln!(r, "Per round:");
    r.push_str(&per_run);
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "| proxy process(es) | RSS after the runs (MiB) | PSS (MiB) | peak RSS (MiB) |"
    );
    let _ = writeln!(r, "| --- | ---: | ---: | ---: |");
    let _ = writeln!(
        r,
        "| weft (one process), 2 Ingresses | {} | {} | {} |",
        mib(weft_mem.rss_kib),
        mib(weft_mem.pss_kib),
        mib(weft_mem.hwm_kib)
    );
    let _ = writeln!(
        r,
        "| nginx (master + {} worker(s), summed), 2 server blocks | {} | {} | {} |",
        nginx_procs - 1,
        mib(nginx_mem.rss_kib),
        mib(nginx_mem.pss_kib),
        mib(nginx_mem.hwm_kib)
    );
    let _ = writeln!(
        r,
        "| weft, {n} Ingresses, after the changes | {} | {} | {} |",
        mib(weft_many_mem.rss_kib),
        mib(weft_many_mem.pss_kib),
        mib(weft_many_mem.hwm_kib)
    );
    let _ = writeln!(
        r,
        "| nginx, {n} server blocks, after the reloads | {} | {} | {} |",
        mib(nginx_many_mem.rss_kib),
        mib(nginx_many_mem.pss_kib),
        mib(nginx_many_mem.hwm_kib)
    );
    let _ = writeln!(r);
    let tv =
        |side: usize, f: fn(&Trial) -> f64| -> Vec<f64> { trials[side].iter().map(f).collect() };
    let _ = writeln!(r, "Reconfiguration with {n} Ingresses ({} changes each, one new `/v<k>` path on one Ingress to the other Service; times from the start of the change):", cfg.reloads);
    let _ = writeln!(r);
    let _ = writeln!(r, "| | weft | nginx |");
    let _ = writeln!(r, "| --- | ---: | ---: |");
    let row = |r: &mut String, label: &str, f: fn(&Trial) -> f64| {
        let (a, b) = (tv(0, f), tv(1, f));
        let _ = writeln!(
            r,
            "| {label} | {:.1} ({}) | {:.1} ({}) |",
            median(&a),
            list(&a, 1),
            median(&b),
            list(&b, 1)
        );
    };
    row(
        &mut r,
        "seen by a new connection (ms), median (each)",
        |t| t.seen_new_ms,
    );
    row(&mut r, "seen on a kept-alive connection (ms)", |t| {
        t.seen_ka_ms
    });
    row(
        &mut r,
        "change applied (ms): weft compile + update; nginx write + `nginx -s reload` returns",
        |t| t.apply_ms,
    );
    let sum = |side: usize, f: fn(&Trial) -> u64| trials[side].iter().map(f).sum::<u64>();
    let _ = writeln!(
        r,
        "| requests during the trials | {} | {} |",
        sum(0, |t| t.sent),
        sum(1, |t| t.sent)
    );
    let _ = writeln!(
        r,
        "| failed requests | {} | {} |",
        sum(0, |t| t.failed),
        sum(1, |t| t.failed)
    );
    let _ = writeln!(
        r,
        "| start with {n} (to serving the last host, ms) | {:.0} | {:.0} |",
        weft_start.as_secs_f64() * 1e3,
        nginx_start.as_secs_f64() * 1e3
    );
    let reasons = |side: usize| {
        let mut all: BTreeMap<String, u64> = BTreeMap::new();
        for t in &trials[side] {
            for (k, v) in &t.reasons {
                *all.entry(k.clone()).or_default() += v;
            }
        }
        format!("{all:?}")
    };
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "Failures by kind: weft {}; nginx {}",
        reasons(0),
        reasons(1)
    );
    let _ = writeln!(
        r,
        "weft's own figures per change: {}",
        trials[0]
            .iter()
            .map(|t| t.detail.clone())
            .collect::<Vec<_>>()
            .join("; ")
    );
    println!("{r}");
    fs::write(dir.join("summary.md"), &r).expect("summary");
}

// ---------------------------------------------------------------------------------------
// Roles: a backend, weft's proxy

fn backend() {
    use http_body_util::Full;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let addrs = std::env::var("WEFT_INGRESS_BENCH_ADDRS").expect("addrs");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut tasks = Vec::new();
        for spec in addrs.split(',') {
            let (addr, name) = spec.split_once('=').expect("addr=name");
            let body: &'static [u8] = if name == "a" { b"a\n" } else { b"b\n" };
            let l = tokio::net::TcpListener::bind(addr).await.expect("bind");
            tasks.push(tokio::spawn(async move {
                loop {
                    let Ok((s, _)) = l.accept().await else {
                        continue;
                    };
                    let _ = s.set_nodelay(true);
                    tokio::spawn(async move {
                        let svc = service_fn(move |_req| async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                bytes::Bytes::from_static(body),
                            )))
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(s), svc)
                            .await;
                    });
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

fn weft_proxy() {
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
    let listen = std::env::var("WEFT_INGRESS_BENCH_LISTEN").expect("listen");
    let listen_tls = std::env::var("WEFT_INGRESS_BENCH_LISTEN_TLS").unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let (mut world, n) = match cluster.strip_prefix("many:") {
            Some(n) => {
                let n: usize = n.parse().expect("n");
                (many_cluster(&dir, n), n)
            }
            None => (small_cluster(&dir), 0),
        };
        let proxy = Proxy::new(Limits::default(), &["bench-node"]).expect("proxy");
        let t = Instant::now();
        let compiled = weft_ingress::compile(&world);
        let compile_ms = t.elapsed().as_secs_f64() * 1e3;
        assert!(compiled.problems.is_empty(), "{:?}", compiled.problems);
        proxy.update(compiled);
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        let l = tokio::net::TcpListener::bind(&listen).await.expect("bind");
        tokio::spawn(proxy.clone().serve(l, false, stop.clone()));
        if !listen_tls.is_empty() {
            let l = tokio::net::TcpListener::bind(&listen_tls)
                .await
                .expect("bind");
            tokio::spawn(proxy.clone().serve(l, true, stop.clone()));
        }
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
            // view, compile, swap; on a runtime worker, as the agent's task runs.
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

fn main() {
    // `cargo bench` passes --bench; nothing else is taken.
    match std::env::var(ROLE).as_deref() {
        Ok("backend") => backend(),
        Ok("weft") => weft_proxy(),
        _ => driver(),
    }
}

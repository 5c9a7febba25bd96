//! The driver: checks, the namespace and work directory (cleaned up whatever happens),
//! the certificate, the backends, then the throughput runs, the reconfiguration test and
//! the summary (printed, and written to the work directory's summary.md).

use std::fs;
use std::process::{Command, Stdio};

use crate::cleanup::{self, Cleanup};
use crate::netns::{self, Ctx};
use crate::report::{self, Machine};
use crate::settings::Cfg;
use crate::{backend, nohalt, reconfig, throughput};

pub fn run() {
    let cfg = Cfg::from_env();
    assert!(
        nix::unistd::geteuid().is_root(),
        "run as root (network namespaces): sudo scripts/bench-ingress.sh"
    );
    let wire = cfg.wire.then_some("tcpdump");
    for tool in ["nginx", "wrk", "ip", "taskset", "chrt"]
        .into_iter()
        .chain(wire)
    {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "{tool} not found: scripts/bench-ingress.sh installs nginx, wrk and tcpdump (WEFT_INGRESS_BENCH_WIRE=0 runs without tcpdump)"
        );
    }
    // Before this thread is pinned to the client CPUs.
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    cleanup::install_signal_thread();
    let pid = std::process::id();
    let ns = format!("weft-bench-{pid}-ingress");
    let dir = std::env::temp_dir().join(format!("weft-bench-ingress-{pid}"));
    fs::create_dir_all(&dir).expect("work dir");
    let _guard = cleanup::arm(Cleanup {
        netns: Some(ns.clone()),
        dir: Some(dir.clone()),
        keep_dir: cfg.keep,
        pids: vec![],
    });
    // nginx's workers (user nobody) read nothing from here, but keep it traversable.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    netns::enter(&ns, &cfg.client_cpus);

    // The certificate both proxies present (rcgen, ECDSA P-256, self-signed).
    let ck = rcgen::generate_simple_self_signed(vec![
        "shop.bench".to_string(),
        "blog.bench".to_string(),
    ])
    .expect("certificate");
    fs::write(dir.join("tls.crt"), ck.cert.pem()).expect("crt");
    fs::write(dir.join("tls.key"), ck.signing_key.serialize_pem()).expect("key");

    // Every CPU the bench uses, kept from halting for the whole run (`nohalt`).
    let cpus = nohalt::cpu_list(&format!("{},{}", cfg.proxy_cpus, cfg.client_cpus));
    let spinners = cfg.no_halt.then(|| nohalt::Spinners::start(&cpus));
    let ctx = Ctx {
        cfg: cfg.clone(),
        ns: ns.clone(),
        dir: dir.clone(),
        exe: std::env::current_exe().expect("exe"),
        spinners: spinners
            .as_ref()
            .map(|s| {
                cpus.iter()
                    .filter_map(|&c| s.pid_on(c).map(|p| (c, p)))
                    .collect()
            })
            .unwrap_or_default(),
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
    let backends = backend::start(&ctx);
    let backend_pids: Vec<u32> = backends.iter().map(|b| b.id()).collect();

    let tp = throughput::run(&ctx, &backend_pids);
    let rc = reconfig::run(&ctx);
    for mut b in backends {
        cleanup::finish(&mut b);
    }

    let machine = Machine {
        nproc,
        nginx_version,
        wrk_version,
        load_start,
    };
    let r = report::write(&cfg, &machine, &tp, &rc);
    println!("{r}");
    fs::write(dir.join("summary.md"), &r).expect("summary");
}

//! Throughput: weft and nginx serving the same two Ingresses (and TLS for them), checked
//! to route alike, then loaded by wrk in each mode, the rounds alternating which proxy
//! goes first.

use std::fs;
use std::process::Command;

use crate::fullcost;
use crate::http_client::answer;
use crate::netns::{tcp_events, tcp_events_since, wait_port, Ctx};
use crate::nginx::{nginx_conf, small_sites, Nginx};
use crate::procs::{mem, Mem};
use crate::report::{list, quantile};
use crate::settings::Mode;
use crate::weft_child::Weft;
use crate::wire::{self, WireOut, WireRun};
use crate::wrk::{run_wrk, WrkOut};
use crate::{alternate, NGINX_HTTP, NGINX_HTTPS, PROXY_IP, TARGET_PATH, WEFT_HTTP, WEFT_HTTPS};

/// One mode's runs by our own client, of one kind: `runs[0 = weft, 1 = nginx]`, one per
/// round.
pub struct FullRuns {
    pub mode: Mode,
    pub kind: fullcost::Kind,
    pub runs: [Vec<WrkOut>; 2],
}

/// What the throughput runs measured.
pub struct Throughput {
    /// `results[mode][0 = weft, 1 = nginx]`, one per round.
    pub results: Vec<[Vec<WrkOut>; 2]>,
    /// Beside wrk, for the new-connection modes at full load: the full cost of a request
    /// (connect, handshake, request, response) by our own client (`fullcost`); none for
    /// the other modes and with `FULL=0`.
    pub full: Vec<FullRuns>,
    /// The proxies' memory after the runs.
    pub weft_mem: Mem,
    pub nginx_mem: Mem,
    /// nginx's processes (master and workers).
    pub nginx_procs: usize,
    /// weft's process's threads.
    pub weft_threads: usize,
    /// Each new-connection mode timed on the wire (`wire`), after the rounds.
    pub wire: Vec<WireRun>,
}

/// Starts weft and nginx on the small cluster, checks their routes, runs the warm-up and
/// the rounds against `backend_pids`' backends, stops both.
pub fn run(ctx: &Ctx, backend_pids: &[u32]) -> Throughput {
    let (cfg, dir) = (&ctx.cfg, &ctx.dir);
    let (weft, ready) = Weft::start(ctx, "small", WEFT_HTTP, Some(WEFT_HTTPS));
    println!("   weft: {ready}");
    let (nginx, _) = Nginx::start(
        ctx,
        "nginx-small",
        &nginx_conf(
            cfg,
            dir,
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
            .args(["netns", "exec", &ctx.ns, "sh", "-c"])
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
    // The protocol, suite and key exchange each negotiates with an OpenSSL client (wrk's
    // library, its default order). Both send two TLS 1.3 session tickets after a full
    // handshake (rustls' `send_tls13_tickets` and OpenSSL's `num_tickets` default); wrk
    // resumes with them (`fullcost` says how), and so does the full-cost client's
    // `Resumed` run.
    let suite = |port: u16| {
        let out = Command::new("ip")
            .args(["netns", "exec", &ctx.ns, "sh", "-c"])
            .arg(format!(
                "openssl s_client -connect {PROXY_IP}:{port} -servername shop.bench </dev/null 2>/dev/null | grep -E '^(New,|Server Temp Key|Peer Temp Key)' | tr '\\n' ' ' || true"
            ))
            .output()
            .expect("openssl");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let (ws, ns) = (suite(WEFT_HTTPS), suite(NGINX_HTTPS));
    assert_eq!(ws, ns, "weft and nginx negotiate different TLS");
    println!(
        "   route checks: weft and nginx agree on {} requests (+ TLS: {ws})",
        checks.len()
    );

    let weft_pids = weft.pids();
    let truncate = |name: &str| {
        if let Ok(f) = fs::OpenOptions::new().write(true).open(dir.join(name)) {
            let _ = f.set_len(0);
        }
    };
    let pids = |is_weft: bool| {
        if is_weft {
            weft_pids.clone()
        } else {
            nginx.pids()
        }
    };
    let url = |mode: Mode, weft: bool| {
        let scheme = if mode.tls() { "https" } else { "http" };
        format!(
            "{scheme}://shop.bench:{}{TARGET_PATH}",
            url_port(mode, weft)
        )
    };

    println!("== warm-up: 2 s per proxy and mode");
    for &mode in &cfg.modes {
        for is_weft in [true, false] {
            run_wrk(
                ctx,
                &url(mode, is_weft),
                mode.close(),
                mode.paced().then_some(cfg.think_ms),
                2,
                &pids(is_weft),
                backend_pids,
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
    let mut full: Vec<FullRuns> = cfg
        .modes
        .iter()
        .filter(|m| cfg.full && m.close() && !m.paced())
        .flat_map(|&mode| {
            fullcost::Kind::for_tls(mode.tls())
                .iter()
                .map(move |&kind| FullRuns {
                    mode,
                    kind,
                    runs: [vec![], vec![]],
                })
        })
        .collect();
    for round in 1..=cfg.rounds {
        for (mi, &mode) in cfg.modes.iter().enumerate() {
            for is_weft in alternate(round) {
                let tcp0 = tcp_events();
                let (w, text) = run_wrk(
                    ctx,
                    &url(mode, is_weft),
                    mode.close(),
                    mode.paced().then_some(cfg.think_ms),
                    cfg.secs,
                    &pids(is_weft),
                    backend_pids,
                );
                let name = if is_weft { "weft" } else { "nginx" };
                fs::write(dir.join(format!("wrk-{name}-{mi}-{round}.txt")), &text)
                    .expect("wrk out");
                println!(
                    "   round {round} {:<22} {name:<5} {:>9.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  errors {:>5}  proxy cores {:.2}  backend cores {:.2}  wrk cores {:.2}  CPUs busy {}  ({})",
                    mode.short(),
                    w.rps,
                    w.p50_ms,
                    w.p99_ms,
                    w.errors,
                    w.cores,
                    w.backend_cores,
                    w.client_cores,
                    list(&w.busy, 2),
                    tcp_events_since(tcp0)
                );
                results[mi][usize::from(!is_weft)].push(w);
                truncate("weft-small.log");
                truncate("nginx-small-access.log");
                for slot in full.iter_mut().filter(|f| f.mode == mode) {
                    let kind = slot.kind;
                    let port = url_port(mode, is_weft);
                    let tcp0 = tcp_events();
                    let f = fullcost::run(port, kind, cfg.conns, cfg.secs, &pids(is_weft));
                    println!(
                        "   round {round} {:<22} {name:<5} {:>9.0} req/s  full cost{} p50 {:>7.3} ms  p99 {:>7.3} ms  errors {:>5}  proxy cores {:.2}  ({})",
                        mode.short(),
                        f.rps,
                        kind.label(),
                        f.p50_ms,
                        f.p99_ms,
                        f.errors,
                        f.cores,
                        tcp_events_since(tcp0)
                    );
                    slot.runs[usize::from(!is_weft)].push(f);
                    truncate("weft-small.log");
                    truncate("nginx-small-access.log");
                }
            }
        }
    }
    let mut wire = Vec::new();
    let wired = cfg
        .modes
        .iter()
        .filter(|m| cfg.wire && m.close() && !m.paced());
    for &mode in wired {
        println!(
            "== on the wire: {} (4 s of wrk per proxy, 1 s captured)",
            mode.short()
        );
        let mut sides: [WireOut; 2] = Default::default();
        for is_weft in [true, false] {
            let name = if is_weft { "weft" } else { "nginx" };
            let port = url_port(mode, is_weft);
            let w = wire::measure(
                ctx,
                &url(mode, is_weft),
                port,
                mode.tls(),
                4,
                1,
                &pids(is_weft),
                backend_pids,
                name,
            );
            println!(
                "   {name:<5} {} connections; first answer p50 {:.0} us p99 {:.0} us; request to response p50 {:.0} us p99 {:.0} us",
                w.first.len(),
                quantile(&w.first, 0.5),
                quantile(&w.first, 0.99),
                quantile(&w.request, 0.5),
                quantile(&w.request, 0.99),
            );
            sides[usize::from(!is_weft)] = w;
        }
        truncate("weft-small.log");
        truncate("nginx-small-access.log");
        wire.push(WireRun { mode, sides });
    }
    let weft_mem = mem(&weft_pids);
    let nginx_mem = mem(&nginx.pids());
    let nginx_procs = nginx.pids().len();
    let weft_threads = weft.threads();
    // The small instances are done: free their core for the reconfiguration test.
    weft.stop();
    nginx.stop();
    Throughput {
        results,
        full,
        weft_mem,
        nginx_mem,
        nginx_procs,
        weft_threads,
        wire,
    }
}

/// The port a proxy serves `mode` on.
fn url_port(mode: Mode, weft: bool) -> u16 {
    match (mode.tls(), weft) {
        (false, true) => WEFT_HTTP,
        (true, true) => WEFT_HTTPS,
        (false, false) => NGINX_HTTP,
        (true, false) => NGINX_HTTPS,
    }
}

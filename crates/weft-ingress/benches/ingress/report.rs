//! The summary: the machine and settings, the throughput table (medians over the rounds)
//! and each round, the proxies' memory, the reconfiguration table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::process::Command;

use crate::reconfig::{Reconfig, Trial};
use crate::settings::Cfg;
use crate::throughput::{FullRuns, Throughput};
use crate::wire::WireRun;
use crate::wrk::WrkOut;

/// What the report says of the machine, taken at the start of the run.
pub struct Machine {
    pub nproc: usize,
    pub nginx_version: String,
    pub wrk_version: String,
    /// /proc/loadavg at the start.
    pub load_start: String,
}

/// The median of the finite values; NaN if there are none.
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

/// The `q` quantile (0..1) of the finite values by nearest rank (the smallest value with at
/// least `q` of them at or below it); NaN if there are none. Every percentile the bench
/// reports comes from here.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let i = ((s.len() as f64 * q).ceil() as usize).clamp(1, s.len()) - 1;
    s[i]
}

/// The values, " / " between them.
pub fn list(v: &[f64], prec: usize) -> String {
    v.iter()
        .map(|x| format!("{x:.prec$}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// The first three fields of /proc/loadavg.
fn three(loadavg: &str) -> String {
    loadavg
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Requests per proxy CPU-second of one run.
fn per_core(w: &WrkOut) -> f64 {
    if w.cores > 0.0 {
        w.rps / w.cores
    } else {
        f64::NAN
    }
}

/// The whole summary, markdown.
pub fn write(cfg: &Cfg, m: &Machine, tp: &Throughput, rc: &Reconfig) -> String {
    let load_end = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut r = String::new();
    header(&mut r, cfg, m, tp, &load_end);
    throughput(&mut r, cfg, &tp.results);
    full_cost(&mut r, cfg, &tp.full);
    on_the_wire(&mut r, &tp.wire);
    memory(&mut r, tp, rc);
    reconfig(&mut r, cfg, rc);
    r
}

fn header(r: &mut String, cfg: &Cfg, m: &Machine, tp: &Throughput, load_end: &str) {
    let Machine {
        nproc,
        nginx_version,
        wrk_version,
        load_start,
    } = m;
    let Throughput {
        nginx_procs,
        weft_threads,
        ..
    } = tp;
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
        three(load_start),
        three(load_end)
    );
    let _ = writeln!(
        r,
        "Settings: {} rounds x {} s per proxy and mode (alternating which goes first), wrk -t1 -c{} --latency on CPU {}; \
         proxies on CPU {} (weft: HTTP/1.1 path {}, {} {}, {} threads in all; nginx: worker_processes {}, {} processes); \
         backends (2 processes) and the bench driver on CPU {}; access log {}; CPUs kept from halting: {}",
        cfg.rounds,
        cfg.secs,
        cfg.conns,
        cfg.client_cpus,
        cfg.proxy_cpus,
        cfg.http1,
        cfg.threads,
        if cfg.multi {
            "worker thread(s) of one multi-thread runtime"
        } else {
            "worker(s), each its own runtime and listeners"
        },
        weft_threads,
        cfg.threads,
        nginx_procs,
        cfg.client_cpus,
        match (cfg.access_log, cfg.nginx_log_buffer) {
            (false, _) => "off for both",
            (true, true) => "on for both, to a file, buffered (weft: its access-log thread writes every 100 ms or at 64 KiB; nginx: access_log buffer=64k flush=100ms)",
            (true, false) => "on for both, to a file (weft: buffered, every 100 ms or at 64 KiB; nginx: one write per request)",
        },
        if cfg.no_halt {
            "yes, a SCHED_IDLE spinner on each CPU used (its time not counted as busy)"
        } else {
            "no"
        }
    );
}

fn throughput(r: &mut String, cfg: &Cfg, results: &[[Vec<WrkOut>; 2]]) {
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
        let eff = [col(0, per_core), col(1, per_core)];
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
             CPU {cc} busy: weft runs {} | nginx runs {}; backends' cores (median) weft runs {:.2}, nginx runs {:.2}; wrk's cores (median) weft runs {:.2}, nginx runs {:.2}; \
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
            m(&col(0, |w| w.client_cores)),
            m(&col(1, |w| w.client_cores)),
            m(&bpr[0]),
            m(&bpr[1]),
        );
    }
    let _ = writeln!(r);
    let _ = writeln!(r, "(latencies in ms, from wrk --latency, at full load except in the paced mode; medians over the rounds; errors summed over the rounds)");
    paired(r, cfg, results);
    let _ = writeln!(r);
    let _ = writeln!(r, "Per round:");
    r.push_str(&per_run);
    let _ = writeln!(r);
}

/// The same runs paired by round: each round's two runs are back to back, so a ratio
/// within a round is not moved by the host getting slower or faster over the minutes
/// of a bench, as a ratio of medians taken over all rounds can be.
fn paired(r: &mut String, cfg: &Cfg, results: &[[Vec<WrkOut>; 2]]) {
    let _ = writeln!(r);
    let _ = writeln!(r, "Paired by round (weft/nginx within each round; median [lowest, highest]; rounds weft did better in):");
    let _ = writeln!(r);
    let _ = writeln!(r, "| mode | req/s ratio | rounds weft served more | p99 ratio | rounds weft's p99 lower | req per proxy CPU-s ratio |");
    let _ = writeln!(r, "| --- | ---: | ---: | ---: | ---: | ---: |");
    for (mi, &mode) in cfg.modes.iter().enumerate() {
        let [w, n] = &results[mi];
        let ratios = |f: fn(&WrkOut) -> f64| -> Vec<f64> {
            w.iter().zip(n).map(|(a, b)| f(a) / f(b)).collect()
        };
        let spread = |v: &[f64]| {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("{:.2} [{lo:.2}, {hi:.2}]", median(v))
        };
        let (rps, p99, eff) = (ratios(|o| o.rps), ratios(|o| o.p99_ms), ratios(per_core));
        let _ = writeln!(
            r,
            "| {} | {} | {} of {} | {} | {} of {} | {} |",
            mode.label(),
            spread(&rps),
            rps.iter().filter(|x| **x > 1.0).count(),
            rps.len(),
            spread(&p99),
            p99.iter().filter(|x| **x < 1.0).count(),
            p99.len(),
            spread(&eff),
        );
    }
}

/// The new-connection modes timed from the capture (`wire`).
fn on_the_wire(r: &mut String, runs: &[WireRun]) {
    if runs.is_empty() {
        return;
    }
    let _ = writeln!(r, "On the wire (tcpdump on the bench's loopback, 1 s in the middle of a 4 s wrk run per proxy after the rounds, whole connections only; microseconds):");
    let _ = writeln!(r);
    let _ = writeln!(r, "| mode | connections weft / nginx | first answer p50 weft / nginx | first answer p99 weft / nginx | weft/nginx p99 | request to response p50 weft / nginx | request to response p99 weft / nginx | weft/nginx p99 |");
    let _ = writeln!(
        r,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for run in runs {
        let [w, n] = &run.sides;
        let q = |v: &[f64], p: f64| quantile(v, p);
        // On plain HTTP the first answer is the response: shown once.
        let first = if run.mode.tls() {
            format!(
                "{:.0} / {:.0} | {:.0} / {:.0} | **{:.2}**",
                q(&w.first, 0.5),
                q(&n.first, 0.5),
                q(&w.first, 0.99),
                q(&n.first, 0.99),
                q(&w.first, 0.99) / q(&n.first, 0.99),
            )
        } else {
            "- | - | -".to_string()
        };
        let _ = writeln!(
            r,
            "| {} | {} / {} | {first} | {:.0} / {:.0} | {:.0} / {:.0} | **{:.2}** |",
            run.mode.label(),
            w.request.len(),
            n.request.len(),
            q(&w.request, 0.5),
            q(&n.request, 0.5),
            q(&w.request, 0.99),
            q(&n.request, 0.99),
            q(&w.request, 0.99) / q(&n.request, 0.99),
        );
    }
    let _ = writeln!(r);
    let _ = writeln!(r, "(first answer, TLS only: the client's ClientHello to the proxy's first flight. Request to response: the client's last segment with data before the proxy's response, to the response; a TLS close_notify is neither.)");
    let _ = writeln!(r);
}

/// The new-connection modes timed by our own client: connect + handshake + request +
/// response, what a user of a new connection waits for (`fullcost`).
fn full_cost(r: &mut String, cfg: &Cfg, full: &[FullRuns]) {
    if full.is_empty() {
        return;
    }
    let _ = writeln!(r, "Full cost of a request on a new connection (our client: connect + TLS handshake + request + response, closed loop, {} connections; medians over the rounds):", cfg.conns);
    let _ = writeln!(r);
    let _ = writeln!(r, "| mode | weft req/s | nginx req/s | weft/nginx req/s | weft p50 | nginx p50 | weft p99 | nginx p99 | weft/nginx p99 | weft req per proxy CPU-s | nginx req per proxy CPU-s | errors weft / nginx |");
    let _ = writeln!(
        r,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let mut per_run = String::new();
    for f in full {
        let label = format!("{}{}", f.mode.label(), f.kind.label());
        let col = |side: usize, g: fn(&WrkOut) -> f64| -> Vec<f64> {
            f.runs[side].iter().map(g).collect()
        };
        let rps = [col(0, |w| w.rps), col(1, |w| w.rps)];
        let p50 = [col(0, |w| w.p50_ms), col(1, |w| w.p50_ms)];
        let p99 = [col(0, |w| w.p99_ms), col(1, |w| w.p99_ms)];
        let eff = [col(0, per_core), col(1, per_core)];
        let errs = [col(0, |w| w.errors as f64), col(1, |w| w.errors as f64)];
        let _ = writeln!(
            r,
            "| {} | {:.0} | {:.0} | **{:.2}** | {:.2} | {:.2} | {:.2} | {:.2} | **{:.2}** | {:.0} | {:.0} | {:.0} / {:.0} |",
            label,
            median(&rps[0]),
            median(&rps[1]),
            median(&rps[0]) / median(&rps[1]),
            median(&p50[0]),
            median(&p50[1]),
            median(&p99[0]),
            median(&p99[1]),
            median(&p99[0]) / median(&p99[1]),
            median(&eff[0]),
            median(&eff[1]),
            errs[0].iter().sum::<f64>(),
            errs[1].iter().sum::<f64>(),
        );
        let _ = writeln!(
            per_run,
            "- {} (full cost): req/s weft {} | nginx {}; p50 ms weft {} | nginx {}; p99 ms weft {} | nginx {}; weft cores {} | nginx cores {}",
            label,
            list(&rps[0], 0),
            list(&rps[1], 0),
            list(&p50[0], 2),
            list(&p50[1], 2),
            list(&p99[0], 2),
            list(&p99[1], 2),
            list(&col(0, |w| w.cores), 2),
            list(&col(1, |w| w.cores), 2),
        );
    }
    let _ = writeln!(r);
    let _ = writeln!(r, "Per round:");
    r.push_str(&per_run);
    let _ = writeln!(r);
}

fn memory(r: &mut String, tp: &Throughput, rc: &Reconfig) {
    let _ = writeln!(
        r,
        "| proxy process(es) | RSS after the runs (MiB) | PSS (MiB) | peak RSS (MiB) |"
    );
    let _ = writeln!(r, "| --- | ---: | ---: | ---: |");
    let _ = writeln!(
        r,
        "| weft (one process), 2 Ingresses | {} | {} | {} |",
        mib(tp.weft_mem.rss_kib),
        mib(tp.weft_mem.pss_kib),
        mib(tp.weft_mem.hwm_kib)
    );
    let _ = writeln!(
        r,
        "| nginx (master + {} worker(s), summed), 2 server blocks | {} | {} | {} |",
        tp.nginx_procs - 1,
        mib(tp.nginx_mem.rss_kib),
        mib(tp.nginx_mem.pss_kib),
        mib(tp.nginx_mem.hwm_kib)
    );
    let _ = writeln!(
        r,
        "| weft, {} Ingresses, after the changes | {} | {} | {} |",
        rc.n,
        mib(rc.weft_mem.rss_kib),
        mib(rc.weft_mem.pss_kib),
        mib(rc.weft_mem.hwm_kib)
    );
    let _ = writeln!(
        r,
        "| nginx, {} server blocks, after the reloads | {} | {} | {} |",
        rc.n,
        mib(rc.nginx_mem.rss_kib),
        mib(rc.nginx_mem.pss_kib),
        mib(rc.nginx_mem.hwm_kib)
    );
}

fn reconfig(r: &mut String, cfg: &Cfg, rc: &Reconfig) {
    let Reconfig {
        n,
        trials,
        weft_start,
        nginx_start,
        ..
    } = rc;
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
    row(r, "seen by a new connection (ms), median (each)", |t| {
        t.seen_new_ms
    });
    row(r, "seen on a kept-alive connection (ms)", |t| t.seen_ka_ms);
    row(
        r,
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
}

//! wrk: one run against a proxy, its output parsed, and the CPU time the proxy, the
//! backends and each CPU of the machine spent over it.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::cleanup::unregister_pid;
use crate::netns::Ctx;
use crate::procs::{clk_tck, cpu_ticks};

#[derive(Debug, Default, Clone)]
pub struct WrkOut {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    pub errors: u64,
    pub bytes_per_req: f64,
    /// The proxy's CPU use over the run, in cores.
    pub cores: f64,
    /// The backends' CPU use over the run, in cores.
    pub backend_cores: f64,
    /// wrk's own CPU use, in cores, read 0.5 s before its end (a finished process has no
    /// /proc entry left to read): with the backends, what the client CPU spent.
    pub client_cores: f64,
    /// How busy each CPU of the machine was over the run (anyone's work), 0..1.
    pub busy: Vec<f64>,
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

/// One wrk run (-t1, the configured connections, `secs` seconds) on the client CPUs,
/// measuring `proxy`'s and `backends`' CPU time over it; returns it parsed, and its output.
/// With `think_ms`, each connection waits that long before each request (wrk's `delay`
/// hook; over TLS after its handshake), so the offered load is set by the bench rather
/// than by how fast wrk's one core can spin.
pub fn run_wrk(
    ctx: &Ctx,
    url: &str,
    close: bool,
    think_ms: Option<u64>,
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
    if let Some(ms) = think_ms {
        let script = ctx.dir.join(format!("think-{ms}ms.lua"));
        fs::write(&script, format!("function delay() return {ms} end\n")).expect("wrk script");
        c.arg("-s").arg(&script);
    }
    c.arg(url).stdin(Stdio::null()).stderr(Stdio::piped());
    let spin = |ctx: &Ctx| -> Vec<(usize, u64)> {
        ctx.spinners
            .iter()
            .map(|&(cpu, pid)| (cpu, cpu_ticks(&[pid])))
            .collect()
    };
    let (t0, b0, c0, s0) = (
        cpu_ticks(proxy),
        cpu_ticks(backends),
        cpu_times(),
        spin(ctx),
    );
    let start = Instant::now();
    c.stdout(Stdio::piped());
    let child = ctx.spawn(c, "wrk");
    let pid = child.id();
    std::thread::sleep(Duration::from_secs_f64((secs as f64 - 0.5).max(0.0)));
    let client_cores = cpu_ticks(&[pid]) as f64 / clk_tck() / start.elapsed().as_secs_f64();
    let out = child.wait_with_output().expect("wrk");
    unregister_pid(pid);
    let wall = start.elapsed().as_secs_f64();
    let (t1, b1, c1, s1) = (
        cpu_ticks(proxy),
        cpu_ticks(backends),
        cpu_times(),
        spin(ctx),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "wrk failed: {text}");
    let mut w = parse_wrk(&text);
    w.cores = (t1.saturating_sub(t0)) as f64 / clk_tck() / wall;
    w.backend_cores = (b1.saturating_sub(b0)) as f64 / clk_tck() / wall;
    w.client_cores = client_cores;
    // Without the spinners' time: what the CPU did for anyone else.
    let spun = |cpu: usize| -> u64 {
        let at = |v: &[(usize, u64)]| v.iter().find(|(c, _)| *c == cpu).map_or(0, |x| x.1);
        at(&s1).saturating_sub(at(&s0))
    };
    w.busy = c0
        .iter()
        .zip(&c1)
        .enumerate()
        .map(|(cpu, (a, b))| {
            (b.0 - a.0).saturating_sub(spun(cpu)) as f64 / ((b.1 - a.1).max(1)) as f64
        })
        .collect();
    (w, text)
}

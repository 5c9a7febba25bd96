//! Reconfiguration under load: one change to one of many Ingresses while clients keep
//! sending requests, timing when the change is seen and counting the requests that fail.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::cluster::{changed_index, many_host};
use crate::http_client::{answer, connect, request};
use crate::netns::Ctx;
use crate::nginx::{many_sites, nginx_conf, Nginx};
use crate::procs::{mem, Mem};
use crate::weft_child::Weft;
use crate::{alternate, NGINX_MANY, WEFT_MANY};

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
pub struct Trial {
    pub apply_ms: f64,
    pub detail: String,
    pub seen_new_ms: f64,
    pub seen_ka_ms: f64,
    pub sent: u64,
    pub failed: u64,
    pub reasons: BTreeMap<String, u64>,
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

/// What the reconfiguration test measured.
pub struct Reconfig {
    /// How many Ingresses (and nginx server blocks).
    pub n: usize,
    /// `trials[0 = weft, 1 = nginx]`, one per change.
    pub trials: [Vec<Trial>; 2],
    /// The proxies' memory after the changes.
    pub weft_mem: Mem,
    pub nginx_mem: Mem,
    /// From the start to serving (weft: its ready line; nginx: the last host answering).
    pub weft_start: Duration,
    pub nginx_start: Duration,
}

/// Starts weft and nginx with `cfg.ingresses` Ingresses, makes `cfg.reloads` changes to
/// each under load (alternating which goes first), stops both.
pub fn run(ctx: &Ctx) -> Reconfig {
    let (cfg, dir) = (&ctx.cfg, &ctx.dir);
    let n = cfg.ingresses;
    println!(
        "== reconfiguration: {n} Ingresses, {} changes per proxy",
        cfg.reloads
    );
    let t = Instant::now();
    let (mut weft_many, ready) = Weft::start(ctx, &format!("many:{n}"), WEFT_MANY, None);
    let weft_start = t.elapsed();
    println!(
        "   weft: {ready} (started in {:.0} ms)",
        weft_start.as_secs_f64() * 1e3
    );
    let mut changes: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let many_tag = "nginx-many";
    let conf = |changes: &BTreeMap<usize, Vec<usize>>| {
        nginx_conf(
            cfg,
            dir,
            many_tag,
            NGINX_MANY,
            None,
            &many_sites(n, changes),
        )
    };
    let (nginx_many, nginx_start) = Nginx::start(ctx, many_tag, &conf(&changes), NGINX_MANY);
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
        let text = conf(&changes);
        for is_weft in alternate(k) {
            let tr = if is_weft {
                trial(WEFT_MANY, n, k, || weft_many.ask(&format!("change {k}")))
            } else {
                trial(NGINX_MANY, n, k, || nginx_many.reload(ctx, &text))
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
    let weft_mem = mem(&weft_many.pids());
    let nginx_mem = mem(&nginx_many.pids());
    weft_many.stop();
    nginx_many.stop();
    Reconfig {
        n,
        trials,
        weft_mem,
        nginx_mem,
        weft_start,
        nginx_start,
    }
}

//! CPU time of the full apply, user and system, for both tools: the kernel's share is the
//! same ruleset built by the same kernel code, so it bounds what any loader can gain.

use std::time::Duration;

use super::ms;

/// CPU time (user, system) of `who` so far: `RUSAGE_THREAD` for weft's own work,
/// `RUSAGE_CHILDREN` for the `nft` processes.
pub fn cpu_times(who: libc::c_int) -> (Duration, Duration) {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage into the pointer it is given.
    unsafe { libc::getrusage(who, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

pub fn cpu_since(who: libc::c_int, before: (Duration, Duration)) -> (Duration, Duration) {
    let now = cpu_times(who);
    (now.0 - before.0, now.1 - before.1)
}

pub type CpuRow = (
    usize,
    Duration,
    Vec<(Duration, Duration)>,
    Option<Duration>,
    Vec<(Duration, Duration)>,
);

/// Where the full apply's time goes: the kernel's share is the same ruleset built by the
/// same kernel code for either tool, so `nft -f`'s wall time over weft's system time is
/// the most any loader could gain over `nft -f` on this machine.
pub fn print_cpu_split(rows: &[CpuRow]) {
    println!();
    println!("| N | (a) weft full: wall / user / system | (b) nft -f full: wall / user / system | b wall / a system (ceiling for b/a) |");
    println!("|---|---|---|---|");
    let first = |v: &[(Duration, Duration)]| v.first().copied();
    for (n, a, wc, b, nc) in rows {
        let (Some(w), Some(b)) = (first(wc), *b) else {
            continue;
        };
        let nft = first(nc)
            .map(|(u, s)| format!("{} / {} / {}", ms(b), ms(u), ms(s)))
            .unwrap_or_else(|| "-".into());
        println!(
            "| {n} | {} / {} / {} | {nft} | {:.1}x |",
            ms(*a),
            ms(w.0),
            ms(w.1),
            b.as_secs_f64() / w.1.as_secs_f64().max(1e-9)
        );
    }
}

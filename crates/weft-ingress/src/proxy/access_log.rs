//! The access log: one line per request on stderr, where the agent's own log goes, in the
//! layout of its tracing lines (`<UTC time>  INFO weft::ingress::access: ...`).
//!
//! Written through tracing, each line cost an event, a formatting pass and a `write(2)` on
//! the runtime's worker, about 8 % of the proxy's CPU in the profile. Here a request appends
//! its line to a shared buffer, and a thread of its own writes the buffer out every 100 ms,
//! or as soon as it holds 64 KiB. nginx's access log is buffered the same way when given
//! `buffer=` and `flush=`. Whether lines are written still follows the tracing filter
//! (`RUST_LOG=weft::ingress::access=off` turns them off).
//!
//! A line costs one clock read: its wall time is derived from the monotonic reading that
//! also times the request, against a pair of readings taken once a second. Numbers and
//! addresses are written by hand (`push_*`): through `fmt`, they were about a tenth of the
//! proxy's own user time per request on a connection per request.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const FLUSH_EVERY: Duration = Duration::from_millis(100);
const FLUSH_AT: usize = 64 << 10;
/// When stderr stops taking lines (a stuck reader), lines past this are dropped and
/// counted rather than held in memory or allowed to stall requests.
const CAP: usize = 4 << 20;

#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    dropped: u64,
    /// The second the lines are being written in, and its text up to the fraction's dot
    /// (`2026-12-05T00:50:03.`): formatted once a second, not once a line.
    second: Option<(u64, String)>,
    /// A monotonic and a wall-clock reading taken together, renewed once a second (so a
    /// wall-clock step shows within a second).
    anchor: Option<(Instant, SystemTime)>,
}

impl Buffer {
    /// The wall time at the monotonic reading `at`.
    fn wall(&mut self, at: Instant) -> SystemTime {
        match self.anchor {
            Some((i, w)) if at >= i && at - i < Duration::from_secs(1) => w + (at - i),
            _ => {
                let w = SystemTime::now();
                self.anchor = Some((at, w));
                w
            }
        }
    }

    /// Appends `<time>  INFO weft::ingress::access: `, as `Utc` writes the time.
    fn prefix(&mut self, now: SystemTime) {
        let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs();
        let text = match &self.second {
            Some((s, text)) if *s == secs => text,
            _ => {
                let full = Utc(UNIX_EPOCH + Duration::from_secs(secs)).to_string();
                let upto_dot = full.len().saturating_sub(7);
                &self.second.insert((secs, full[..upto_dot].to_string())).1
            }
        };
        self.bytes.extend_from_slice(text.as_bytes());
        let micros = d.subsec_micros();
        let mut digits = [b'0'; 6];
        let mut m = micros;
        for slot in digits.iter_mut().rev() {
            *slot = b'0' + (m % 10) as u8;
            m /= 10;
        }
        self.bytes.extend_from_slice(&digits);
        self.bytes
            .extend_from_slice(b"Z  INFO weft::ingress::access: ");
    }
}

struct Sink {
    buf: Mutex<Buffer>,
    full: Condvar,
}

static SINK: OnceLock<&'static Sink> = OnceLock::new();

fn sink() -> &'static Sink {
    SINK.get_or_init(|| {
        let s: &'static Sink = Box::leak(Box::new(Sink {
            buf: Mutex::default(),
            full: Condvar::new(),
        }));
        let spawned = std::thread::Builder::new()
            .name("ingress-log".into())
            .spawn(move || loop {
                s.write_out(true);
            });
        if let Err(e) = spawned {
            // Without the thread, lines wait for `flush`, and past CAP are counted as
            // dropped: requests are still served.
            tracing::warn!("ingress: access-log thread: {e}");
        }
        s
    })
}

impl Sink {
    /// Takes what is buffered (after waiting for a reason to, when `wait`) and writes it.
    fn write_out(&self, wait: bool) {
        let (bytes, dropped) = {
            let mut b = self.buf.lock().unwrap_or_else(|p| p.into_inner());
            if wait {
                b = self
                    .full
                    .wait_timeout_while(b, FLUSH_EVERY, |b| b.bytes.len() < FLUSH_AT)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            // The next lines go into a buffer already as large as a flush's worth, so
            // appending never copies what is there to grow it.
            let fresh = Vec::with_capacity(FLUSH_AT + (FLUSH_AT >> 3));
            (
                std::mem::replace(&mut b.bytes, fresh),
                std::mem::take(&mut b.dropped),
            )
        };
        let mut err = std::io::stderr().lock();
        if !bytes.is_empty() {
            let _ = err.write_all(&bytes);
        }
        if dropped > 0 {
            let _ = writeln!(
                err,
                "{}  WARN weft::ingress::access: {dropped} access-log lines dropped (stderr was not keeping up)",
                Utc(SystemTime::now())
            );
        }
    }
}

/// Appends one line for a request that started at `start` and ended at `end`; `body`
/// writes what follows the prefix, given the request's duration.
pub fn line(start: Instant, end: Instant, body: impl FnOnce(&mut Vec<u8>, Duration)) {
    let s = sink();
    let mut b = s.buf.lock().unwrap_or_else(|p| p.into_inner());
    if b.bytes.len() >= CAP {
        b.dropped += 1;
        return;
    }
    let wall = b.wall(end);
    b.prefix(wall);
    body(&mut b.bytes, end.saturating_duration_since(start));
    b.bytes.push(b'\n');
    if b.bytes.len() >= FLUSH_AT {
        s.full.notify_one();
    }
}

/// Appends `n` in decimal.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends an address as `Display` writes it (IPv4 by hand, IPv6 through `fmt`: rare on
/// this path and long to write by hand).
pub fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(o));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends `ip:port` (`[ip]:port` for IPv6), as `SocketAddr`'s `Display`.
pub fn push_socket(out: &mut Vec<u8>, a: SocketAddr) {
    match a.ip() {
        IpAddr::V4(_) => push_ip(out, a.ip()),
        IpAddr::V6(_) => {
            out.push(b'[');
            push_ip(out, a.ip());
            out.push(b']');
        }
    }
    out.push(b':');
    push_u64(out, u64::from(a.port()));
}

/// Appends a duration in milliseconds with one decimal (`0.4`, `12.0`), rounded half up.
pub fn push_ms(out: &mut Vec<u8>, d: Duration) {
    let tenths = (d.as_micros() + 50) / 100;
    push_u64(out, u64::try_from(tenths / 10).unwrap_or(u64::MAX));
    out.push(b'.');
    out.push(b'0' + (tenths % 10) as u8);
}

/// Writes out what is buffered now (a drain's end calls this, so a stopping proxy's last
/// lines are not left in memory).
pub fn flush() {
    if let Some(s) = SINK.get() {
        s.write_out(false);
    }
}

/// A time as RFC 3339 UTC with microseconds, as the agent's tracing lines show it.
struct Utc(SystemTime);

impl std::fmt::Display for Utc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs();
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, dd) = civil(i64::try_from(days).unwrap_or(0));
        write!(
            f,
            "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:06}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60,
            d.subsec_micros()
        )
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian: the days are
/// counted in 400-year eras that start on March 1st, so the leap day ends a year.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        let at = |s: u64| Utc(UNIX_EPOCH + Duration::from_secs(s)).to_string();
        assert_eq!(at(0), "1970-01-01T00:00:00.000000Z");
        // 2000-02-29 (a leap day in a century year) and the day after.
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00.000000Z");
        assert_eq!(at(951_868_800 + 3661), "2000-03-01T01:01:01.000000Z");
        assert_eq!(at(1_796_428_800), "2026-12-05T00:00:00.000000Z");
    }

    #[test]
    fn line_prefix_as_utc_writes_it() {
        let mut b = Buffer::default();
        for t in [
            UNIX_EPOCH + Duration::new(951_782_400, 5_000),
            UNIX_EPOCH + Duration::new(951_782_400, 999_999_999),
            UNIX_EPOCH + Duration::new(951_868_800 + 3661, 123_456_000),
        ] {
            b.bytes.clear();
            b.prefix(t);
            let want = format!("{}  INFO weft::ingress::access: ", Utc(t));
            assert_eq!(String::from_utf8_lossy(&b.bytes), want);
        }
    }

    #[test]
    fn hand_formatting_matches_display() {
        let mut out = Vec::new();
        for n in [0u64, 7, 10, 404, 65_535, u64::MAX] {
            out.clear();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        for a in [
            "10.244.1.5:8080",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[fd00::1]:80",
        ] {
            let a: SocketAddr = a.parse().expect("addr");
            out.clear();
            push_socket(&mut out, a);
            assert_eq!(out, a.to_string().as_bytes());
            out.clear();
            push_ip(&mut out, a.ip());
            assert_eq!(out, a.ip().to_string().as_bytes());
        }
        for (us, want) in [
            (0, "0.0"),
            (49, "0.0"),
            (50, "0.1"),
            (1_234, "1.2"),
            (99_960, "100.0"),
        ] {
            out.clear();
            push_ms(&mut out, Duration::from_micros(us));
            assert_eq!(String::from_utf8_lossy(&out), want);
        }
    }

    #[test]
    fn wall_time_follows_the_monotonic_reading() {
        let mut b = Buffer::default();
        let t0 = Instant::now();
        let w0 = b.wall(t0);
        let later = t0 + Duration::from_millis(300);
        assert_eq!(b.wall(later), w0 + Duration::from_millis(300));
        // Past a second the anchor is taken again, from the wall clock.
        let much_later = t0 + Duration::from_secs(2);
        let w = b.wall(much_later);
        assert!(w >= w0, "{w:?} before {w0:?}");
    }
}

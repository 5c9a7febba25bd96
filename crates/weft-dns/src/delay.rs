//! How long each UDP reply took inside the server: from the kernel's receive timestamp
//! of the query (`SO_TIMESTAMPNS`, taken when the datagram reached the socket) to the
//! moment its batch is handed to `sendmmsg`. That span holds the wait for the serving
//! thread to be woken and get a core, the wait behind the rest of its batch, and the
//! answering itself; it leaves out the client and the wire, which a benchmark client's
//! own latency mixes in.
//!
//! A log-linear histogram of counters: 125 ns steps up to 2 µs, then 8 buckets per
//! doubling up to about 2 s (a relative error of at most 1/8), so the serving thread
//! adds one relaxed increment per reply and nothing allocates.

use std::sync::atomic::{AtomicU64, Ordering};

/// Width of the linear buckets, in ns.
const STEP: u64 = 125;
const LINEAR: usize = 16;
const SUB: usize = 8;
const DOUBLINGS: usize = 21;
pub const BUCKETS: usize = LINEAR + SUB * DOUBLINGS;

pub struct ReplyDelays {
    counts: [AtomicU64; BUCKETS],
}

impl Default for ReplyDelays {
    fn default() -> Self {
        ReplyDelays {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl std::fmt::Debug for ReplyDelays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self.counts();
        write!(
            f,
            "ReplyDelays {{ replies: {}, p99: {} ns }}",
            c.iter().sum::<u64>(),
            percentile(&c, 99.0)
        )
    }
}

impl ReplyDelays {
    pub(crate) fn record(&self, ns: u64) {
        self.counts[bucket_of(ns)].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts per bucket so far; subtract two snapshots for an interval.
    pub fn counts(&self) -> [u64; BUCKETS] {
        std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed))
    }
}

pub fn bucket_of(ns: u64) -> usize {
    let steps = ns / STEP;
    if steps < LINEAR as u64 {
        return steps as usize;
    }
    // steps >= 16: its top bit e >= 4; the 3 bits below it pick the sub-bucket.
    let e = 63 - steps.leading_zeros() as usize;
    let sub = ((steps >> (e - 3)) & 7) as usize;
    (LINEAR + (e - 4) * SUB + sub).min(BUCKETS - 1)
}

/// The largest delay (ns) bucket `i` holds.
pub fn upper_bound(i: usize) -> u64 {
    if i < LINEAR {
        return (i as u64 + 1) * STEP - 1;
    }
    let e = (i - LINEAR) / SUB + 4;
    let sub = ((i - LINEAR) % SUB) as u64;
    ((9 + sub) << (e - 3)) * STEP - 1
}

/// Nearest-rank percentile `p` (0-100] of a histogram, as its bucket's upper bound in ns;
/// 0 for an empty one.
pub fn percentile(counts: &[u64; BUCKETS], p: f64) -> u64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0;
    }
    let rank = ((total as f64 * p / 100.0).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, &c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return upper_bound(i);
        }
    }
    upper_bound(BUCKETS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_delay_falls_in_the_bucket_whose_bounds_hold_it() {
        let mut v = 0u64;
        while v < 1_500_000_000 {
            let i = bucket_of(v);
            assert!(v <= upper_bound(i), "{v} above bucket {i}");
            assert!(
                i == 0 || v > upper_bound(i - 1),
                "{v} not above bucket {}",
                i - 1
            );
            // Within 1/8 of the value past the linear range.
            if v >= 2_000 {
                assert!(
                    upper_bound(i) - v <= v / 8 + STEP,
                    "{v}: bucket {i} too wide"
                );
            }
            v = v * 9 / 8 + 7;
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let h = ReplyDelays::default();
        for _ in 0..990 {
            h.record(10_000);
        }
        for _ in 0..10 {
            h.record(1_000_000);
        }
        let c = h.counts();
        assert_eq!(c.iter().sum::<u64>(), 1000);
        let p99 = percentile(&c, 99.0);
        assert!((10_000..11_300).contains(&p99), "p99 {p99}");
        let p999 = percentile(&c, 99.9);
        assert!((1_000_000..1_130_000).contains(&p999), "p99.9 {p999}");
        assert_eq!(percentile(&[0; BUCKETS], 99.0), 0);
    }
}

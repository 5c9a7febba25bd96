//! Back-off for work on one object that keeps failing (a pod that cannot start, stop or
//! be removed): the next attempt waits 0.5 s, then twice as long each time up to 30 s,
//! so a broken plugin costs the node little and a fixed one is picked up soon.

use std::collections::HashMap;
use std::time::{Duration, Instant};

const FIRST: Duration = Duration::from_millis(500);
pub const MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Failure {
    pub attempts: u32,
    pub next: Instant,
    pub message: String,
}

/// The wait after the `attempts`-th failure in a row.
pub fn delay(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    FIRST.saturating_mul(1 << doublings).min(MAX)
}

#[derive(Default)]
pub struct Backoff {
    failures: HashMap<String, Failure>,
}

impl Backoff {
    /// Whether an attempt on `key` may run now.
    pub fn due(&self, key: &str, now: Instant) -> bool {
        self.failures.get(key).is_none_or(|f| now >= f.next)
    }

    /// Records a failure; returns how many there have been in a row.
    pub fn failed(&mut self, key: &str, message: String, now: Instant) -> u32 {
        let f = self.failures.entry(key.to_string()).or_insert(Failure {
            attempts: 0,
            next: now,
            message: String::new(),
        });
        f.attempts += 1;
        f.next = now + delay(f.attempts);
        f.message = message;
        f.attempts
    }

    pub fn succeeded(&mut self, key: &str) {
        self.failures.remove(key);
    }

    pub fn get(&self, key: &str) -> Option<&Failure> {
        self.failures.get(key)
    }

    /// Forgets every key `keep` refuses (objects that are gone).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.failures.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_limit_and_a_success_resets() {
        assert_eq!(delay(1), Duration::from_millis(500));
        assert_eq!(delay(2), Duration::from_secs(1));
        assert_eq!(delay(4), Duration::from_secs(4));
        assert_eq!(delay(7), MAX);
        assert_eq!(delay(u32::MAX), MAX);
        let mut b = Backoff::default();
        let t = Instant::now();
        assert!(b.due("p", t));
        assert_eq!(b.failed("p", "no".into(), t), 1);
        assert!(!b.due("p", t + Duration::from_millis(499)));
        assert!(b.due("p", t + Duration::from_millis(500)));
        assert_eq!(b.failed("p", "still no".into(), t), 2);
        assert!(!b.due("p", t + Duration::from_millis(999)));
        assert_eq!(b.get("p").map(|f| f.message.as_str()), Some("still no"));
        b.succeeded("p");
        assert!(b.due("p", t));
        b.failed("q", "x".into(), t);
        b.retain(|k| k != "q");
        assert!(b.get("q").is_none());
    }
}

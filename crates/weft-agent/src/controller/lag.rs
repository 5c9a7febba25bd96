//! Each component's lag behind what it has seen, published for `weft lab status`
//! ([`crate::sync_status`]) and told in the log when it passes [`BEHIND`] and when the
//! component catches up.
//!
//! A component calls [`Lag::seen`] for each change that reaches it, [`Lag::taken`] when
//! it starts applying what it has, and [`Lag::applied`] once that is in force. Changes
//! that arrive while an apply runs stay pending for the next one.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::sync_status::{self, ComponentSync, NodeSync};

/// Behind by more than this is worth a line in the log.
pub const BEHIND: Duration = Duration::from_secs(1);
/// How often the report is written.
const PUBLISH: Duration = Duration::from_millis(500);

#[derive(Default)]
struct State {
    /// When each pending change was seen, oldest first. Bounded by what the component
    /// has not applied yet: its queue's capacity, or the changes of one pass.
    pending: VecDeque<Instant>,
    /// How many of the oldest pending changes the apply under way carries.
    in_flight: usize,
    changes: u64,
    transactions: u64,
    peak_behind: Duration,
    peak_pending: u64,
    peak_at_ms: u64,
    /// Since when the log says this component is behind (None: it says in sync).
    said_behind: Option<Instant>,
    /// Changes and transactions when it fell behind, for the catch-up line.
    at_fall: (u64, u64),
    worst: (Duration, u64),
    /// Changes and transactions at the last report.
    last_report: (u64, u64),
    /// The longest any change applied since the last report had waited.
    late: Duration,
}

pub struct Lag {
    name: &'static str,
    state: Mutex<State>,
}

impl Lag {
    fn new(name: &'static str) -> Lag {
        Lag {
            name,
            state: Mutex::default(),
        }
    }

    /// Counters only: a panic elsewhere while holding this lock leaves nothing
    /// inconsistent worth stopping the component for.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| {
            self.state.clear_poison();
            p.into_inner()
        })
    }

    /// A change reached the component (before it is queued, if it is).
    pub fn seen(&self) {
        let mut s = self.state();
        s.pending.push_back(Instant::now());
        s.changes += 1;
        if s.said_behind.is_some() {
            s.worst.1 = s.worst.1.max(s.pending.len() as u64);
        }
        if s.pending.len() as u64 > s.peak_pending {
            s.peak_pending = s.pending.len() as u64;
            s.peak_at_ms = sync_status::unix_ms();
        }
    }

    /// An apply starts from everything seen so far (a component that reads a cache the
    /// watch has already updated).
    pub fn taken(&self) {
        let mut s = self.state();
        s.in_flight = s.pending.len();
    }

    /// An apply takes the next `n` changes off its queue.
    pub fn taken_n(&self, n: usize) {
        let mut s = self.state();
        s.in_flight = (s.in_flight + n).min(s.pending.len());
    }

    /// What was taken is in force. How long its oldest change waited is the lag this
    /// apply ended: measured here, not only when the report is written, so a short
    /// stall between two reports is not missed.
    pub fn applied(&self) {
        let mut s = self.state();
        let n = s.in_flight;
        if n > 0 {
            s.transactions += 1;
            let waited = s.pending.front().map(|t| t.elapsed()).unwrap_or_default();
            if waited > s.peak_behind {
                s.peak_behind = waited;
                s.peak_at_ms = sync_status::unix_ms();
            }
            s.late = s.late.max(waited);
        }
        s.pending.drain(..n);
        s.in_flight = 0;
    }

    /// (pending, age of the oldest pending change).
    fn pending(s: &State, now: Instant) -> (u64, Duration) {
        let age = s
            .pending
            .front()
            .map(|t| now.saturating_duration_since(*t))
            .unwrap_or_default();
        (s.pending.len() as u64, age)
    }

    /// The component's line in the report; logs its falling behind and catching up.
    fn report(&self, now: Instant, now_ms: u64) -> ComponentSync {
        let mut s = self.state();
        let (pending, behind) = Self::pending(&s, now);
        if behind > s.peak_behind {
            s.peak_behind = behind;
            s.peak_at_ms = now_ms;
        }
        // The worst wait since the last report: still pending, or applied meanwhile.
        let waited = behind.max(std::mem::take(&mut s.late));
        if s.said_behind.is_none() && waited > BEHIND {
            tracing::warn!(
                component = self.name,
                pending,
                behind = ?waited,
                "falling behind: a change seen waited {:.1}s to be applied",
                waited.as_secs_f64()
            );
            s.said_behind = Some(now - waited);
            s.at_fall = s.last_report;
            s.worst = (Duration::ZERO, 0);
        }
        if let Some(since) = s.said_behind {
            s.worst = (s.worst.0.max(waited), s.worst.1.max(pending));
            if pending == 0 {
                tracing::info!(
                    component = self.name,
                    changes = s.changes - s.at_fall.0,
                    transactions = s.transactions - s.at_fall.1,
                    took = ?(now - since),
                    "caught up; at worst {:.1}s behind with {} pending",
                    s.worst.0.as_secs_f64(),
                    s.worst.1
                );
                s.said_behind = None;
            }
        }
        s.last_report = (s.changes, s.transactions);
        ComponentSync {
            name: self.name.to_string(),
            pending,
            behind_ms: behind.as_millis() as u64,
            changes: s.changes,
            transactions: s.transactions,
            peak_behind_ms: s.peak_behind.as_millis() as u64,
            peak_pending: s.peak_pending,
            peak_at_ms: s.peak_at_ms,
        }
    }
}

/// A bounded queue into a component: a full one holds the sender (the watch) back
/// rather than growing, and every change on it counts as pending until applied.
pub struct Queue<T> {
    tx: tokio::sync::mpsc::Sender<T>,
    lag: Arc<Lag>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            tx: self.tx.clone(),
            lag: self.lag.clone(),
        }
    }
}

impl<T> Queue<T> {
    /// Waits for room. A consumer that has stopped loses the change, which then stays
    /// pending in the report: the component shows as stuck.
    pub async fn push(&self, v: T) {
        self.lag.seen();
        if self.tx.send(v).await.is_err() {
            tracing::error!(
                component = self.lag.name,
                "the component has stopped; a change is lost"
            );
        }
    }
}

impl<T> Queue<T> {
    /// [`Queue::push`] from a thread outside the runtime (the pod start hook): blocks
    /// that thread while the queue is full. `false` when the consumer has stopped.
    pub fn push_blocking(&self, v: T) -> bool {
        self.lag.seen();
        self.tx.blocking_send(v).is_ok()
    }
}

/// A queue of `capacity` changes for `lag`'s component.
pub fn queue<T>(lag: Arc<Lag>, capacity: usize) -> (Queue<T>, tokio::sync::mpsc::Receiver<T>) {
    let (tx, rx) = tokio::sync::mpsc::channel(capacity);
    (Queue { tx, lag }, rx)
}

/// Takes what `rx` holds now, at most `max`; how many it took.
pub fn drain<T>(
    rx: &mut tokio::sync::mpsc::Receiver<T>,
    max: usize,
    mut f: impl FnMut(T),
) -> usize {
    let mut n = 0;
    while n < max {
        match rx.try_recv() {
            Ok(v) => {
                f(v);
                n += 1;
            }
            Err(_) => break,
        }
    }
    n
}

/// The node's components, in the order the report lists them.
#[derive(Clone, Default)]
pub struct Registry {
    lags: Arc<Mutex<Vec<Arc<Lag>>>>,
}

impl Registry {
    pub fn component(&self, name: &'static str) -> Arc<Lag> {
        let lag = Arc::new(Lag::new(name));
        self.lags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(lag.clone());
        lag
    }

    fn report(&self, node: &str) -> NodeSync {
        let (now, now_ms) = (Instant::now(), sync_status::unix_ms());
        let lags = self.lags.lock().unwrap_or_else(|p| p.into_inner()).clone();
        NodeSync {
            node: node.to_string(),
            written_at_ms: now_ms,
            components: lags.iter().map(|l| l.report(now, now_ms)).collect(),
        }
    }

    /// Writes the report every [`PUBLISH`] for the agent's life.
    pub fn publish(&self, node: String, state_dir: PathBuf) {
        let reg = self.clone();
        tokio::spawn(async move {
            let path = sync_status::path(&state_dir);
            let mut said_failure = false;
            loop {
                tokio::time::sleep(PUBLISH).await;
                let report = reg.report(&node);
                let res = serde_json::to_vec_pretty(&report)
                    .map_err(std::io::Error::other)
                    .and_then(|b| write_replace(&path, &b));
                match res {
                    Ok(()) => said_failure = false,
                    Err(e) if !said_failure => {
                        tracing::warn!("writing {}: {e}", path.display());
                        said_failure = true;
                    }
                    Err(_) => {}
                }
            }
        });
    }
}

/// A reader sees the old report or the new one, never half of one. Not synced to disk:
/// it describes the running agent, and a crash makes it stale anyway.
fn write_replace(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_during_an_apply_stay_pending_and_the_peak_is_kept() {
        let reg = Registry::default();
        let lag = reg.component("services");
        let t0 = Instant::now();
        assert_eq!(lag.report(t0, 1).state(), "in sync");
        for _ in 0..3 {
            lag.seen();
        }
        lag.taken();
        lag.seen();
        let r = lag.report(Instant::now(), 2);
        assert_eq!((r.pending, r.changes), (4, 4));
        lag.applied();
        let r = lag.report(Instant::now(), 3);
        assert_eq!((r.pending, r.transactions), (1, 1), "the late one waits");
        lag.taken();
        lag.applied();
        // An apply with nothing in it is not a transaction.
        lag.taken();
        lag.applied();
        let r = lag.report(Instant::now(), 4);
        assert_eq!((r.pending, r.behind_ms, r.transactions), (0, 0, 2));
        assert_eq!(r.peak_pending, 4);
        assert!(r.peak_at_ms >= 2, "{r:?}");
        let node = reg.report("node-1");
        assert_eq!(node.components, vec![lag.report(Instant::now(), 5)]);
    }

    #[test]
    fn a_stall_between_two_reports_is_not_missed() {
        let lag = Lag::new("services");
        lag.seen();
        lag.taken();
        std::thread::sleep(BEHIND + Duration::from_millis(100));
        lag.applied();
        let r = lag.report(Instant::now(), 0);
        assert_eq!(r.pending, 0);
        assert!(r.peak_behind_ms > 1000, "{r:?}");
        let s = lag.state();
        assert!(s.said_behind.is_none(), "told and caught up in one report");
        assert_eq!(s.late, Duration::ZERO);
    }

    #[test]
    fn the_oldest_pending_change_sets_the_lag() {
        let lag = Lag::new("pods");
        lag.seen();
        lag.seen();
        let later = Instant::now() + Duration::from_secs(3);
        // A queue consumer applied the first change it took; the second waits.
        lag.taken_n(1);
        lag.applied();
        lag.seen();
        let r = lag.report(later, 0);
        assert_eq!(r.pending, 2);
        assert!(r.behind_ms >= 3000, "{r:?}");
        assert!(r.state().starts_with("behind by 3."), "{}", r.state());
    }
}

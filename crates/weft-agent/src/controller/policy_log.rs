//! Denied packets, per policy.
//!
//! Always: the node's policy table counts denials in the kernel per element of its row
//! maps and isolated sets; [`DenialCounts`] reads them (before each change the policy
//! thread applies, and at least once a second), names the policy and rule each element
//! stands for through the compiled rows (weft-policy's `counters`), and writes the sums
//! to `STATE_DIR/policy-denials.tsv` (what `weft policy counters` and `weft lab policy
//! counters` print).
//!
//! With `--policy-nflog-group N` the table also logs every packet it drops to nflog
//! group N; a thread reads them, and the policy thread, which holds the cluster view,
//! puts each to weft-policy's matcher to name the policy and rule in a log line, at most
//! [`LINES_PER_SECOND`] a second.

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, TrySendError};
use std::time::{Duration, Instant};

use weft_policy::counters::{Attribution, Reading, Tally};
use weft_policy::denials::{describe, explain};
use weft_policy::nflog::{Logged, Nflog};
use weft_policy::{Cluster, Enforcer};

/// How often the kernel's counters are read when nothing changes.
pub const READ_EVERY: Duration = Duration::from_secs(1);

/// The kernel's denial counters, per policy and rule, into the counters file.
pub struct DenialCounts {
    tally: Tally,
    file: PathBuf,
    dirty: bool,
    pub last_read: Instant,
}

impl DenialCounts {
    pub fn new(file: PathBuf) -> DenialCounts {
        DenialCounts {
            tally: Tally::default(),
            file,
            dirty: true,
            last_read: Instant::now(),
        }
    }

    /// Reads the table's counters, attributed by `attr` (the table the kernel holds:
    /// call before applying a change), and writes the file when a count changed.
    pub fn read(&mut self, enforcer: &mut Enforcer, attr: &Attribution) {
        self.last_read = Instant::now();
        match Reading::read(enforcer) {
            Ok(r) => self.dirty |= self.tally.observe(r, attr),
            Err(e) => tracing::warn!("network policy: reading the denial counters: {e}"),
        }
        if self.dirty {
            // A reader never sees a half-written file.
            let tmp = self.file.with_extension("tsv.tmp");
            let res = std::fs::write(&tmp, self.tally.counters.to_tsv())
                .and_then(|_| std::fs::rename(&tmp, &self.file));
            match res {
                Ok(()) => self.dirty = false,
                Err(e) => tracing::warn!("network policy: writing {}: {e}", self.file.display()),
            }
        }
    }
}

/// Log lines a second; beyond, denials are still counted, and the number left out said.
const LINES_PER_SECOND: u32 = 20;
/// Denials waiting for the policy thread; beyond, the reader drops and counts them.
const BACKLOG: usize = 10_000;

pub struct DenialLog {
    rx: Receiver<Logged>,
    window: Instant,
    lines: u32,
    quiet: u64,
}

impl DenialLog {
    /// Subscribes to `group` in this thread's namespace (the node's) and starts reading.
    pub fn start(group: u16) -> super::Result<DenialLog> {
        let mut nflog = Nflog::open(group)?;
        let (tx, rx) = sync_channel(BACKLOG);
        let spawned = std::thread::Builder::new()
            .name("policy-nflog".into())
            .spawn(move || {
                let mut dropped: u64 = 0;
                loop {
                    let got = match nflog.next(None) {
                        Ok(got) => got,
                        Err(e) => {
                            tracing::warn!("network policy: reading nflog: {e}");
                            std::thread::sleep(Duration::from_secs(1));
                            continue;
                        }
                    };
                    for p in got {
                        match tx.try_send(p) {
                            Ok(()) => {}
                            Err(TrySendError::Full(_)) => {
                                dropped += 1;
                                if dropped.is_power_of_two() {
                                    tracing::warn!(dropped, "network policy: denials arrive faster than they are explained; some are not counted");
                                }
                            }
                            Err(TrySendError::Disconnected(_)) => return,
                        }
                    }
                }
            });
        spawned.map_err(|source| super::AgentError::Io {
            op: "start the policy nflog thread".into(),
            source,
        })?;
        Ok(DenialLog {
            rx,
            window: Instant::now(),
            lines: 0,
            quiet: 0,
        })
    }

    /// Explains what arrived, against the current view, in log lines (the kernel's
    /// counters count them).
    pub fn drain(&mut self, cluster: &Cluster) {
        while let Ok(p) = self.rx.try_recv() {
            let (verdict, _) = explain(cluster, &p);
            if self.window.elapsed() >= Duration::from_secs(1) {
                if self.quiet > 0 {
                    tracing::info!(
                        "network policy: {} more denials in the last second (counted, not logged)",
                        self.quiet
                    );
                }
                self.window = Instant::now();
                self.lines = 0;
                self.quiet = 0;
            }
            if self.lines < LINES_PER_SECOND {
                self.lines += 1;
                tracing::info!("network policy denied {}", describe(&p, verdict.as_ref()));
            } else {
                self.quiet += 1;
            }
        }
    }
}

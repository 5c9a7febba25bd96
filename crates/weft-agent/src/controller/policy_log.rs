//! Denied packets, per policy: with `--policy-nflog-group N` the node's policy table logs
//! every packet it drops to nflog group N; a thread reads them, and the policy thread,
//! which holds the cluster view, puts each to weft-policy's matcher (the model the table
//! was compiled from) to name the policy and rule that decided. It counts them per
//! policy and rule into `STATE_DIR/policy-denials.tsv` (what `weft lab policy counters`
//! prints) and logs one line per denial, at most [`LINES_PER_SECOND`] a second.

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, TrySendError};
use std::time::{Duration, Instant};

use weft_policy::denials::{describe, explain, Counters};
use weft_policy::nflog::{Logged, Nflog};
use weft_policy::Cluster;

/// Log lines a second; beyond, denials are still counted, and the number left out said.
const LINES_PER_SECOND: u32 = 20;
/// Denials waiting for the policy thread; beyond, the reader drops and counts them.
const BACKLOG: usize = 10_000;

pub struct DenialLog {
    rx: Receiver<Logged>,
    counters: Counters,
    file: PathBuf,
    dirty: bool,
    window: Instant,
    lines: u32,
    quiet: u64,
}

impl DenialLog {
    /// Subscribes to `group` in this thread's namespace (the node's) and starts reading.
    pub fn start(group: u16, file: PathBuf) -> super::Result<DenialLog> {
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
            counters: Counters::default(),
            file,
            dirty: true,
            window: Instant::now(),
            lines: 0,
            quiet: 0,
        })
    }

    /// Explains and counts what arrived, against the current view, and writes the
    /// counters when they changed.
    pub fn drain(&mut self, cluster: &Cluster) {
        while let Ok(p) = self.rx.try_recv() {
            let (verdict, culprits) = explain(cluster, &p);
            self.counters.add(&culprits);
            self.dirty = true;
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
        if self.dirty {
            // A reader never sees a half-written file.
            let tmp = self.file.with_extension("tsv.tmp");
            let res = std::fs::write(&tmp, self.counters.to_tsv())
                .and_then(|_| std::fs::rename(&tmp, &self.file));
            match res {
                Ok(()) => self.dirty = false,
                Err(e) => tracing::warn!("network policy: writing {}: {e}", self.file.display()),
            }
        }
    }
}

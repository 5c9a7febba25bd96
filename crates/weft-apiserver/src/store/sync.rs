//! Group commit: one thread fsyncs the log for every append made since its last fsync,
//! then publishes the durable resourceVersion. Writers append under the store lock and
//! wait for that publication, so concurrent writes share one fsync.

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use tokio::sync::watch;

struct Shared {
    /// (highest appended rv, stop requested)
    appended: Mutex<(u64, bool)>,
    wake: Condvar,
    durable: watch::Sender<u64>,
}

pub struct Syncer {
    shared: Arc<Shared>,
}

impl Syncer {
    pub fn start(file: File, rv: u64, path: PathBuf) -> Syncer {
        let (durable, _) = watch::channel(rv);
        let shared = Arc::new(Shared {
            appended: Mutex::new((rv, false)),
            wake: Condvar::new(),
            durable,
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name("weft-store-sync".into())
            .spawn(move || run(s, file, path))
            .map(|_| ())
            .unwrap_or_else(|e| {
                // Without the thread nothing would ever be acknowledged: fail loudly.
                eprintln!("weft control-plane: cannot start the store sync thread: {e}");
                std::process::exit(1);
            });
        Syncer { shared }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, bool)> {
        self.shared
            .appended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn appended_up_to(&self, rv: u64) {
        let mut g = self.lock();
        if rv > g.0 {
            g.0 = rv;
        }
        self.shared.wake.notify_one();
    }

    pub fn appended(&self) -> u64 {
        self.lock().0
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.durable.subscribe()
    }

    pub fn durable(&self) -> u64 {
        *self.shared.durable.borrow()
    }

    pub fn stop(&self) {
        self.lock().1 = true;
        self.shared.wake.notify_one();
    }
}

fn run(s: Arc<Shared>, file: File, path: PathBuf) {
    let mut durable = *s.durable.borrow();
    loop {
        let target = {
            let mut g = s.appended.lock().unwrap_or_else(|p| p.into_inner());
            while g.0 <= durable && !g.1 {
                g = s.wake.wait(g).unwrap_or_else(|p| p.into_inner());
            }
            if g.1 && g.0 <= durable {
                return;
            }
            g.0
        };
        if let Err(e) = file.sync_data() {
            // The kernel may have dropped the dirty pages: what is in memory can no longer
            // be promised to be on disk. Exit; a restart recovers from the log.
            eprintln!(
                "weft control-plane: fsync of {} failed: {e}; exiting so that a restart recovers from the log",
                path.display()
            );
            std::process::exit(1);
        }
        durable = target;
        s.durable.send_replace(durable);
    }
}

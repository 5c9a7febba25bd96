//! A cap on concurrent connections. Acceptors wait for a free slot before accepting, so a
//! flood queues in the kernel's listen backlog instead of spawning unbounded threads.

use std::sync::{Arc, Condvar, Mutex, PoisonError};

pub struct Slots {
    max: usize,
    used: Mutex<usize>,
    freed: Condvar,
}

/// Holds one slot; dropping it (when the connection's thread ends) frees the slot.
pub struct Slot(Arc<Slots>);

impl Slots {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Slots {
            max: max.max(1),
            used: Mutex::new(0),
            freed: Condvar::new(),
        })
    }

    pub fn acquire(self: &Arc<Self>) -> Slot {
        // A poisoned lock only means a connection thread panicked; the count is still valid.
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        while *used >= self.max {
            used = self
                .freed
                .wait(used)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *used += 1;
        Slot(Arc::clone(self))
    }

    #[cfg(test)]
    fn in_use(&self) -> usize {
        *self.used.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut used = self.0.used.lock().unwrap_or_else(PoisonError::into_inner);
        *used = used.saturating_sub(1);
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_full_pool_blocks_until_a_slot_is_dropped() {
        let slots = Slots::new(2);
        let a = slots.acquire();
        let _b = slots.acquire();
        assert_eq!(slots.in_use(), 2);
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let slots = Arc::clone(&slots);
            std::thread::spawn(move || {
                let c = slots.acquire();
                tx.send(()).ok();
                drop(c);
            })
        };
        // The waiter cannot have a slot while two are held.
        assert!(rx.try_recv().is_err());
        drop(a);
        rx.recv().unwrap();
        waiter.join().unwrap();
        assert_eq!(slots.in_use(), 1);
    }
}

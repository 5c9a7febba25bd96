//! In-process controllers: what kube-controller-manager and kube-scheduler would do for
//! the objects networking depends on. Each reacts to store events and writes through the
//! same admission and validation path as the API.

mod bootstrap;
mod decoded;
pub mod deployment;
pub mod endpointslice;
pub mod events;
mod lifecycle;
pub mod scheduler;

use crate::server::AppState;
use crate::store::Event;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub use bootstrap::bootstrap;

pub fn spawn_all(state: Arc<AppState>, stop: watch::Receiver<bool>) {
    tokio::spawn(run(
        state.clone(),
        stop.clone(),
        None,
        endpointslice::Controller::default(),
    ));
    tokio::spawn(run(
        state.clone(),
        stop.clone(),
        None,
        scheduler::Controller::default(),
    ));
    tokio::spawn(run(
        state.clone(),
        stop.clone(),
        None,
        deployment::Controller,
    ));
    tokio::spawn(run(
        state.clone(),
        stop.clone(),
        Some(Duration::from_secs(30)),
        events::Controller,
    ));
    tokio::spawn(run(
        state,
        stop,
        Some(Duration::from_secs(1)),
        lifecycle::Controller::default(),
    ));
}

/// A controller sees batches of store events; `None` asks for a full resync (at start,
/// after falling out of the event ring, or on its periodic tick).
pub trait Reconcile: Send + 'static {
    fn reconcile(&mut self, state: &AppState, events: Option<&[Arc<Event>]>);
}

async fn run<C: Reconcile>(
    state: Arc<AppState>,
    mut stop: watch::Receiver<bool>,
    period: Option<Duration>,
    mut c: C,
) {
    let mut notify = state.store.subscribe();
    let mut last = state.store.read().rv();
    c.reconcile(&state, None);
    let mut tick = tokio::time::interval(period.unwrap_or(Duration::from_secs(3600)));
    tick.tick().await;
    loop {
        let periodic = tokio::select! {
            r = notify.changed() => { if r.is_err() { return; } false }
            _ = tick.tick() => period.is_some(),
            _ = stop.changed() => return,
        };
        if *stop.borrow() {
            return;
        }
        // Let a burst of writes land so one pass handles them together.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let batch = {
            let st = state.store.read();
            st.events_since(last, st.rv()).map(|evs| (evs, st.rv()))
        };
        match batch {
            Ok((events, rv)) => {
                last = rv;
                if periodic {
                    c.reconcile(&state, None);
                } else if !events.is_empty() {
                    c.reconcile(&state, Some(&events));
                }
            }
            Err(_) => {
                last = state.store.read().rv();
                c.reconcile(&state, None);
            }
        }
    }
}

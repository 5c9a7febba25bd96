//! `?watch=1`: newline-delimited watch events from the store's event ring.

use super::selector::Filter;
use super::{is_true, Query, Target};
use crate::error::ApiError;
use crate::limits::WatchSlot;
use crate::resources::Resource;
use crate::server::AppState;
use crate::store::{Event, EventType};
use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const BOOKMARK_EVERY: Duration = Duration::from_secs(10);
/// Events are batched into chunks of about this size for throughput.
const CHUNK: usize = 64 * 1024;

struct Scope {
    res: &'static Resource,
    namespace: Option<String>,
    filter: Filter,
    /// `Some(includeObject)` when the client asked for Table-wrapped objects.
    table: Option<String>,
}

impl Scope {
    fn matches(&self, obj: &Value) -> bool {
        let ns_ok = match &self.namespace {
            Some(ns) => obj["metadata"]["namespace"].as_str() == Some(ns.as_str()),
            None => true,
        };
        ns_ok && self.filter.matches(obj)
    }

    /// How a store event looks through this watch's selectors (a MODIFIED event that
    /// moves an object into or out of the selection becomes ADDED or DELETED).
    fn translate<'a>(&self, ev: &'a Event) -> Option<(EventType, &'a Value)> {
        // Every served version of a kind sees its events (they share one storage slot).
        if ev.res.group != self.res.group || ev.res.plural != self.res.plural {
            return None;
        }
        let now = self.matches(&ev.object);
        let before = ev.prev.as_deref().is_some_and(|p| self.matches(p));
        match ev.ty {
            EventType::Added if now => Some((EventType::Added, &ev.object)),
            EventType::Modified if now && before => Some((EventType::Modified, &ev.object)),
            EventType::Modified if now => Some((EventType::Added, &ev.object)),
            EventType::Modified if before => Some((EventType::Deleted, &ev.object)),
            EventType::Deleted if before || now => Some((EventType::Deleted, &ev.object)),
            _ => None,
        }
    }
}

impl Scope {
    fn line(&self, buf: &mut Vec<u8>, ty: &str, obj: &Value) {
        match &self.table {
            Some(include) => {
                let md = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
                line(buf, ty, &super::table::table(self.res, &[obj], md, include));
            }
            None => line(buf, ty, obj),
        }
    }
}

fn line(buf: &mut Vec<u8>, ty: &str, obj: &Value) {
    buf.extend_from_slice(b"{\"type\":\"");
    buf.extend_from_slice(ty.as_bytes());
    buf.extend_from_slice(b"\",\"object\":");
    if serde_json::to_writer(&mut *buf, obj).is_err() {
        buf.extend_from_slice(b"{}");
    }
    buf.extend_from_slice(b"}\n");
}

fn bookmark(res: &Resource, rv: u64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": meta})
}

pub fn watch(
    state: Arc<AppState>,
    t: &Target,
    q: &Query,
    headers: &axum::http::HeaderMap,
    slot: WatchSlot,
) -> Result<Response, ApiError> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let scope = Scope {
        res: t.res,
        namespace: t.namespace.clone(),
        filter: Filter::from_query(q)?,
        table: super::table::wants_table(accept)
            .then(|| q.get("includeObject").cloned().unwrap_or_default()),
    };
    let bookmarks = is_true(q, "allowWatchBookmarks");
    let send_initial = q.get("sendInitialEvents").map(String::as_str) == Some("true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(1800);
    let requested: Option<u64> = match q.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(s) => Some(s.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "invalid resource version {s:?}: expected an integer"
            ))
        })?),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let store = state.store.clone();
    tokio::spawn(async move {
        // The client's watch slot is held while this stream runs.
        let _slot = slot;
        let mut notify = store.subscribe();
        let mut buf = Vec::with_capacity(CHUNK);
        // Where the event stream starts, and the synthetic ADDED events before it.
        let (mut last, initial) = {
            let st = store.read();
            match requested {
                Some(rv) if !send_initial => (rv, Vec::new()),
                _ => {
                    let ns = scope.namespace.as_deref();
                    let items: Vec<_> = st
                        .list(scope.res, ns)
                        .into_iter()
                        .filter(|o| scope.matches(o))
                        .collect();
                    (st.rv(), items)
                }
            }
        };
        // Nothing is shown before it is on disk.
        store.wait_durable().await;
        for obj in &initial {
            scope.line(&mut buf, "ADDED", obj);
            if buf.len() >= CHUNK
                && tx
                    .send(Bytes::from(std::mem::take(&mut buf)))
                    .await
                    .is_err()
            {
                return;
            }
        }
        drop(initial);
        if send_initial && bookmarks {
            line(&mut buf, "BOOKMARK", &bookmark(scope.res, last, true));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        let mut tick = tokio::time::interval(BOOKMARK_EVERY);
        tick.tick().await;
        loop {
            let durable = store.durable_rv();
            let batch = {
                let st = store.read();
                st.events_since(last, durable).map(|evs| (evs, durable))
            };
            match batch {
                Err(gone) => {
                    line(&mut buf, "ERROR", &gone.to_status());
                    let _ = tx.send(Bytes::from(std::mem::take(&mut buf))).await;
                    return;
                }
                Ok((events, rv)) => {
                    for ev in &events {
                        if let Some((ty, obj)) = scope.translate(ev) {
                            scope.line(&mut buf, ty.as_str(), obj);
                            if buf.len() >= CHUNK
                                && tx
                                    .send(Bytes::from(std::mem::take(&mut buf)))
                                    .await
                                    .is_err()
                            {
                                return;
                            }
                        }
                    }
                    last = last.max(rv);
                }
            }
            if !buf.is_empty()
                && tx
                    .send(Bytes::from(std::mem::take(&mut buf)))
                    .await
                    .is_err()
            {
                return;
            }
            tokio::select! {
                changed = notify.changed() => if changed.is_err() { return },
                _ = tick.tick() => if bookmarks {
                    line(&mut buf, "BOOKMARK", &bookmark(scope.res, last, false));
                },
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<Bytes, std::convert::Infallible>(b), rx))
    });
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache, private"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

//! Stored objects decoded once: a controller that reads the same objects pass after pass
//! (the EndpointSlice controller reads every pod a Service selects each time the Service
//! is recomputed) keeps each object's typed form until the store replaces the object.
//!
//! The store hands out its objects as shared `Arc`s and replaces an object's `Arc` when it
//! is written, so an object is known by its allocation: holding a `Weak` to it keeps the
//! address from being reused, and a dead `Weak` marks an entry whose object is gone.

use crate::typed;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

pub struct Decoded<T> {
    by_object: HashMap<usize, (Weak<Value>, Arc<T>)>,
    /// Entries kept at the last pruning: prune again when the cache has doubled.
    kept: usize,
}

impl<T> Default for Decoded<T> {
    fn default() -> Self {
        Decoded {
            by_object: HashMap::new(),
            kept: 0,
        }
    }
}

impl<T: DeserializeOwned> Decoded<T> {
    /// The object as its type ([`typed::view`]), decoded only the first time it is asked.
    pub fn get(&mut self, obj: &Arc<Value>) -> Option<Arc<T>> {
        let addr = Arc::as_ptr(obj) as usize;
        if let Some((_, t)) = self.by_object.get(&addr) {
            return Some(t.clone());
        }
        let t = Arc::new(typed::view::<T>(obj)?);
        self.by_object
            .insert(addr, (Arc::downgrade(obj), t.clone()));
        if self.by_object.len() > 1024.max(2 * self.kept) {
            self.by_object.retain(|_, (w, _)| w.strong_count() > 0);
            self.kept = self.by_object.len();
        }
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    #[test]
    fn an_object_is_decoded_until_it_is_replaced() {
        let mut cache: Decoded<Pod> = Decoded::default();
        let v1 = Arc::new(json!({"metadata": {"name": "a"}}));
        let first = cache.get(&v1).expect("decodes");
        let again = cache.get(&v1).expect("cached");
        assert!(Arc::ptr_eq(&first, &again));
        // The store writes a new version: a new Arc, decoded afresh.
        let v2 = Arc::new(json!({"metadata": {"name": "b"}}));
        let second = cache.get(&v2).expect("decodes");
        assert_eq!(second.metadata.name.as_deref(), Some("b"));
        drop(v1);
        // Many objects come and go: the dead entries are pruned.
        for i in 0..3000 {
            let v = Arc::new(json!({"metadata": {"name": format!("p{i}")}}));
            cache.get(&v);
        }
        assert!(cache.by_object.len() <= 2048, "{}", cache.by_object.len());
    }
}

//! What one watch has handed a consumer, so that a relist can drop the objects it no
//! longer names (deleted while the watch was down): a relist is a new world, not an
//! addition to the old one. Shared by the consumers that keep their own model of the
//! cluster (DNS, NetworkPolicy).

use std::collections::HashSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher;
use kube::Resource;

/// (namespace, name); the namespace is empty for cluster-scoped objects.
pub type Key = (String, String);

pub fn key(meta: &ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// What a consumer does with one watch's objects.
pub enum Change<'a, K> {
    Upsert(&'a K),
    Delete(Key),
}

#[derive(Default)]
pub struct Seen {
    known: HashSet<Key>,
    relist: Option<HashSet<Key>>,
    /// The first complete list arrived: until then the consumer's view is partial.
    listed: bool,
}

impl Seen {
    pub fn listed(&self) -> bool {
        self.listed
    }

    /// Turns a watch event into the changes it implies, in order.
    pub fn changes<'a, K: Resource>(&mut self, e: &'a watcher::Event<K>) -> Vec<Change<'a, K>> {
        use watcher::Event as W;
        match e {
            W::Apply(o) | W::InitApply(o) => {
                let k = key(o.meta());
                if let Some(r) = &mut self.relist {
                    r.insert(k.clone());
                }
                self.known.insert(k);
                vec![Change::Upsert(o)]
            }
            W::Delete(o) => {
                let k = key(o.meta());
                self.known.remove(&k);
                vec![Change::Delete(k)]
            }
            W::Init => {
                self.relist = Some(HashSet::new());
                Vec::new()
            }
            W::InitDone => {
                self.listed = true;
                let listed = self.relist.take().unwrap_or_default();
                let gone: Vec<Key> = self.known.difference(&listed).cloned().collect();
                for k in &gone {
                    self.known.remove(k);
                }
                gone.into_iter().map(Change::Delete).collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    fn pod(name: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = Some("ns".into());
        p.metadata.name = Some(name.into());
        p
    }

    fn deleted(c: Vec<Change<'_, Pod>>) -> Vec<String> {
        c.into_iter()
            .filter_map(|c| match c {
                Change::Delete(k) => Some(k.1),
                Change::Upsert(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_relist_drops_what_it_no_longer_names() {
        use watcher::Event as W;
        let mut s = Seen::default();
        for e in [W::Init, W::InitApply(pod("a")), W::InitApply(pod("b"))] {
            s.changes(&e);
        }
        assert!(!s.listed(), "not listed before InitDone");
        assert!(deleted(s.changes(&W::<Pod>::InitDone)).is_empty());
        assert!(s.listed());
        // The watch restarts; b was deleted meanwhile.
        s.changes(&W::<Pod>::Init);
        s.changes(&W::InitApply(pod("a")));
        assert_eq!(
            deleted(s.changes(&W::<Pod>::InitDone)),
            vec!["b".to_string()]
        );
        // Apply and Delete pass through.
        assert_eq!(s.changes(&W::Apply(pod("c"))).len(), 1);
        assert_eq!(
            deleted(s.changes(&W::Delete(pod("c")))),
            vec!["c".to_string()]
        );
    }
}

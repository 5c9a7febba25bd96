//! Which Ingresses are weft's: by `spec.ingressClassName` naming an IngressClass whose
//! `controller` is weft's, by the legacy `kubernetes.io/ingress.class` annotation, or,
//! with neither set, when one of weft's classes is marked the cluster default.
//! Ingresses of another class are left alone: no route, no status.

use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

/// The `controller` value an IngressClass names to be served by weft.
pub const CONTROLLER: &str = "weft.dev/ingress";
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// The classes weft serves, read from the cluster's IngressClasses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Classes {
    ours: Vec<String>,
    ours_is_default: bool,
    /// Some class of another controller is the default: class-less Ingresses are its.
    other_is_default: bool,
}

impl Classes {
    pub fn from_objects<'a>(classes: impl IntoIterator<Item = &'a IngressClass>) -> Classes {
        let mut c = Classes::default();
        for class in classes {
            let Some(name) = class.metadata.name.clone() else {
                continue;
            };
            let is_default = class
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true");
            let ours =
                class.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(CONTROLLER);
            if ours {
                c.ours.push(name);
                c.ours_is_default |= is_default;
            } else {
                c.other_is_default |= is_default;
            }
        }
        c.ours.sort();
        c
    }

    /// Whether weft serves this Ingress.
    pub fn serves(&self, ing: &Ingress) -> bool {
        if let Some(name) = ing
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref())
        {
            return self.ours.iter().any(|c| c == name);
        }
        let legacy = ing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION));
        if let Some(name) = legacy {
            return self.ours.iter().any(|c| c == name);
        }
        // Two defaults is a cluster misconfiguration the API server should refuse; weft
        // then stays out rather than race another controller for the same Ingress.
        self.ours_is_default && !self.other_is_default
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, controller: &str, default: bool) -> IngressClass {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "annotations": if default {
                serde_json::json!({DEFAULT_CLASS_ANNOTATION: "true"})
            } else { serde_json::json!({}) }},
            "spec": {"controller": controller}
        }))
        .expect("class")
    }

    fn ingress(class: Option<&str>, legacy: Option<&str>) -> Ingress {
        let mut v = serde_json::json!({"metadata": {"name": "i"}, "spec": {}});
        if let Some(c) = class {
            v["spec"]["ingressClassName"] = c.into();
        }
        if let Some(l) = legacy {
            v["metadata"]["annotations"] = serde_json::json!({LEGACY_CLASS_ANNOTATION: l});
        }
        serde_json::from_value(v).expect("ingress")
    }

    #[test]
    fn selection() {
        let weft = class("weft", CONTROLLER, false);
        let nginx = class("nginx", "k8s.io/ingress-nginx", false);
        let c = Classes::from_objects([&weft, &nginx]);
        assert!(c.serves(&ingress(Some("weft"), None)));
        assert!(!c.serves(&ingress(Some("nginx"), None)));
        assert!(!c.serves(&ingress(Some("missing"), None)));
        assert!(c.serves(&ingress(None, Some("weft"))));
        assert!(!c.serves(&ingress(None, Some("nginx"))));
        assert!(!c.serves(&ingress(None, None)), "no default class");
        let weft_default = class("weft", CONTROLLER, true);
        let c = Classes::from_objects([&weft_default, &nginx]);
        assert!(c.serves(&ingress(None, None)));
        // The class name wins over the legacy annotation.
        assert!(!c.serves(&ingress(Some("nginx"), Some("weft"))));
    }
}

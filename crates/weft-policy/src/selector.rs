//! Label selectors, normalised: matchLabels become `In` requirements, and an empty
//! selector selects everything (the API's rule for pod, namespace and node selectors).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::error::{Ctx, Result};

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Requirement {
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            // As Kubernetes does: a missing key satisfies NotIn.
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// All requirements must hold; none at all selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

impl Selector {
    /// The selector that selects everything (`{}`).
    pub fn everything() -> Selector {
        Selector::default()
    }

    pub fn labels(pairs: &[(&str, &str)]) -> Selector {
        Selector {
            requirements: pairs
                .iter()
                .map(|(k, v)| Requirement::In((*k).into(), [(*v).to_owned()].into()))
                .collect(),
        }
    }

    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Reads an API selector; `field` is its path for error messages.
    pub(crate) fn from_api(s: &LabelSelector, ctx: &Ctx, field: &str) -> Result<Selector> {
        let mut requirements = Vec::new();
        for (k, v) in s.match_labels.iter().flatten() {
            requirements.push(Requirement::In(k.clone(), [v.clone()].into()));
        }
        for (i, e) in s.match_expressions.iter().flatten().enumerate() {
            let at = format!("{field}.matchExpressions[{i}]");
            let values: BTreeSet<String> = e.values.iter().flatten().cloned().collect();
            let key = e.key.clone();
            let r = match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(ctx.err(
                        &format!("{at}.values"),
                        "[]",
                        "In and NotIn need at least one value",
                    ))
                }
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(ctx.err(
                        &format!("{at}.values"),
                        format!("{values:?}"),
                        "Exists and DoesNotExist take no values",
                    ))
                }
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                other => {
                    return Err(ctx.err(
                        &format!("{at}.operator"),
                        other,
                        "must be In, NotIn, Exists or DoesNotExist",
                    ))
                }
            };
            requirements.push(r);
        }
        Ok(Selector { requirements })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(p: &[(&str, &str)]) -> Labels {
        p.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).into()).collect()),
        }
    }

    fn sel(exprs: Vec<LabelSelectorRequirement>) -> Selector {
        let s = LabelSelector {
            match_expressions: Some(exprs),
            match_labels: None,
        };
        Selector::from_api(&s, &Ctx::new("test"), "sel").unwrap()
    }

    #[test]
    fn empty_selects_everything() {
        assert!(Selector::everything().matches(&labels(&[])));
        assert!(Selector::everything().matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn operators() {
        let l = labels(&[("pod", "a"), ("tier", "web")]);
        assert!(sel(vec![expr("pod", "In", &["a", "b"])]).matches(&l));
        assert!(!sel(vec![expr("pod", "In", &["b"])]).matches(&l));
        assert!(sel(vec![expr("pod", "NotIn", &["b"])]).matches(&l));
        assert!(!sel(vec![expr("pod", "NotIn", &["a"])]).matches(&l));
        assert!(sel(vec![expr("missing", "NotIn", &["a"])]).matches(&l));
        assert!(sel(vec![expr("tier", "Exists", &[])]).matches(&l));
        assert!(!sel(vec![expr("tier", "DoesNotExist", &[])]).matches(&l));
        assert!(sel(vec![expr("x", "DoesNotExist", &[])]).matches(&l));
        // All requirements AND together.
        assert!(!sel(vec![expr("pod", "In", &["a"]), expr("x", "Exists", &[])]).matches(&l));
    }

    #[test]
    fn bad_operator_names_the_field() {
        let s = LabelSelector {
            match_expressions: Some(vec![expr("pod", "Equals", &["a"])]),
            match_labels: None,
        };
        let e = Selector::from_api(&s, &Ctx::new("NetworkPolicy x/p"), "spec.podSelector")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("spec.podSelector.matchExpressions[0].operator"),
            "{e}"
        );
        assert!(e.contains("Equals"), "{e}");
    }
}

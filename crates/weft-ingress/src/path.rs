//! Ingress path matching: `Exact` compares the whole path, `Prefix` compares
//! `/`-separated elements, so `/foo/bar` covers `/foo/bar/baz` but not `/foo/barbaz`.
//! A trailing slash, in the rule or in the request, is ignored by `Prefix`.

use std::cmp::Ordering;

/// A rule's path as the standard reads it. `ImplementationSpecific` is read as `Prefix`
/// (the element-wise kind, not a regular expression): the choice that surprises least.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathMatch {
    Exact(String),
    /// The path's elements, without empty ones: `/` is no element at all.
    Prefix(Vec<String>),
}

impl PathMatch {
    pub fn exact(path: &str) -> PathMatch {
        PathMatch::Exact(path.to_string())
    }

    pub fn prefix(path: &str) -> PathMatch {
        PathMatch::Prefix(elements(path).map(String::from).collect())
    }

    /// Whether a request path (no query) is covered.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => p == path,
            PathMatch::Prefix(want) => {
                let mut got = elements(path);
                want.iter().all(|w| got.next() == Some(w.as_str()))
            }
        }
    }

    /// The length a match is ranked by: longer wins. An exact match covers the request's
    /// whole path, so it can never lose to a prefix; on equal length Exact ranks higher.
    fn rank(&self) -> (usize, bool) {
        match self {
            PathMatch::Exact(p) => (p.len(), true),
            PathMatch::Prefix(e) => (e.iter().map(|s| s.len() + 1).sum(), false),
        }
    }

    /// Orders candidates best first.
    pub fn precedence(a: &PathMatch, b: &PathMatch) -> Ordering {
        b.rank().cmp(&a.rank())
    }

    pub fn describe(&self) -> String {
        match self {
            PathMatch::Exact(p) => format!("{p} (Exact)"),
            PathMatch::Prefix(e) => format!("/{} (Prefix)", e.join("/")),
        }
    }
}

/// A path's non-empty elements: `/a//b/` gives `a`, `b`.
fn elements(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_compares_elements() {
        let p = PathMatch::prefix("/foo/bar");
        assert!(p.matches("/foo/bar"));
        assert!(p.matches("/foo/bar/"));
        assert!(p.matches("/foo/bar/baz"));
        assert!(!p.matches("/foo/barbaz"));
        assert!(!p.matches("/foo"));
        assert!(PathMatch::prefix("/foo/bar/").matches("/foo/bar"));
        assert!(PathMatch::prefix("/").matches("/anything/at/all"));
        assert!(PathMatch::prefix("/").matches("/"));
    }

    #[test]
    fn exact_is_the_whole_path_and_case_sensitive() {
        let p = PathMatch::exact("/foo");
        assert!(p.matches("/foo"));
        assert!(!p.matches("/foo/"));
        assert!(!p.matches("/FOO"));
        assert!(!PathMatch::prefix("/foo").matches("/FOO"));
    }

    #[test]
    fn longer_first_exact_wins_ties() {
        let mut v = [
            PathMatch::prefix("/"),
            PathMatch::prefix("/foo"),
            PathMatch::exact("/foo"),
            PathMatch::prefix("/foo/bar"),
        ];
        v.sort_by(PathMatch::precedence);
        assert_eq!(v[0], PathMatch::prefix("/foo/bar"));
        assert_eq!(v[1], PathMatch::exact("/foo"));
        assert_eq!(v[2], PathMatch::prefix("/foo"));
        assert_eq!(v[3], PathMatch::prefix("/"));
    }
}

//! CNI versions: which ones weft speaks, and comparisons between them.

use crate::error::{code, Error, Result};

pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
pub const LATEST: &str = "1.1.0";

/// A parsed `major.minor.patch` version, ordered numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        let mut it = s.split('.').map(|p| p.parse::<u32>().ok());
        let v = Version(it.next()??, it.next()??, it.next().unwrap_or(Some(0))?);
        it.next().is_none().then_some(v)
    }
}

/// Checks that `v` is one weft speaks; the error is the spec's code 1.
pub fn require_supported(v: &str) -> Result<Version> {
    if !SUPPORTED.contains(&v) {
        return Err(Error::new(
            code::INCOMPATIBLE_VERSION,
            format!("incompatible CNI version {v:?}"),
        )
        .with_details(format!("weft supports {}", SUPPORTED.join(", "))));
    }
    Version::parse(v).ok_or_else(|| Error::new(code::INCOMPATIBLE_VERSION, "unparsable version"))
}

/// STATUS and GC exist only from 1.1.0 on.
pub fn at_least_1_1(v: Version) -> bool {
    v >= Version(1, 1, 0)
}

/// Results before 1.0.0 carry `version` on each IP.
pub fn result_has_ip_version(v: Version) -> bool {
    v < Version(1, 0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_numerically() {
        assert!(Version::parse("0.10.0") > Version::parse("0.4.0"));
        assert!(at_least_1_1(Version::parse("1.1.0").unwrap()));
        assert!(!at_least_1_1(Version::parse("1.0.0").unwrap()));
        assert_eq!(Version::parse("1.x"), None);
        assert_eq!(require_supported("0.2.0").unwrap_err().code, 1);
    }
}

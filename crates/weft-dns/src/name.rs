//! Names as the zone stores them: lowercase wire format (length-prefixed labels ending in
//! the root's 0), so a question's name, once lowercased, is looked up as bytes.

use std::net::IpAddr;

/// `a.b.c` (trailing dot optional) to lowercase wire format; `None` when it is not a name
/// DNS can carry (an empty or over-long label, over 255 bytes in all).
pub fn to_wire(dotted: &str) -> Option<Vec<u8>> {
    let dotted = dotted.strip_suffix('.').unwrap_or(dotted);
    let mut out = Vec::with_capacity(dotted.len() + 2);
    if !dotted.is_empty() {
        for label in dotted.split('.') {
            if label.is_empty() || label.len() > 63 {
                return None;
            }
            out.push(label.len() as u8);
            out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
        }
    }
    out.push(0);
    (out.len() <= 255).then_some(out)
}

/// Wire format back to `a.b.c` (no trailing dot), for logs and tests.
pub fn to_dotted(wire: &[u8]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while let Some(&len) = wire.get(i) {
        if len == 0 || len & 0xC0 != 0 {
            break;
        }
        let label = wire.get(i + 1..i + 1 + len as usize).unwrap_or(&[]);
        if !out.is_empty() {
            out.push('.');
        }
        out.extend(label.iter().map(|&b| b as char));
        i += 1 + len as usize;
    }
    out
}

/// The parent of a wire name (`None` for the root).
pub fn parent(wire: &[u8]) -> Option<&[u8]> {
    match wire.first() {
        Some(&len) if len > 0 => wire.get(1 + len as usize..),
        _ => None,
    }
}

/// Whether `name` is `zone` or below it, both lowercase wire format. Compared at label
/// boundaries only, so `xcluster.local` is not in `cluster.local`.
pub fn in_zone(name: &[u8], zone: &[u8]) -> bool {
    let mut n = name;
    loop {
        if n.len() < zone.len() {
            return false;
        }
        if n == zone {
            return true;
        }
        match parent(n) {
            Some(p) => n = p,
            None => return false,
        }
    }
}

/// The address as one label: `10-244-1-3`, or for IPv6 the compressed text with `-` for
/// `:` (`fd00--1`), the forms the pod and headless-endpoint names use.
pub fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// The PTR owner of an address: `3.1.244.10.in-addr.arpa` or the nibble form under
/// `ip6.arpa`.
pub fn reverse(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for b in v6.octets().iter().rev() {
                for nibble in [b & 0xF, b >> 4] {
                    s.push(char::from_digit(nibble as u32, 16).unwrap_or('0'));
                    s.push('.');
                }
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

/// A Kubernetes object name that is also a valid DNS label, lowercased. Names that fail
/// are not published (the API server validates them, so this only guards the wire).
pub fn label(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| s.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip() {
        let w = to_wire("My-Svc.default.svc.cluster.local.").unwrap();
        assert_eq!(w[0], 6);
        assert_eq!(to_dotted(&w), "my-svc.default.svc.cluster.local");
        assert_eq!(to_wire(""), Some(vec![0]));
        assert_eq!(to_wire("a..b"), None);
        assert_eq!(to_wire(&"a".repeat(64)), None);
    }

    #[test]
    fn zone_membership_is_by_label() {
        let zone = to_wire("cluster.local").unwrap();
        assert!(in_zone(&to_wire("a.svc.cluster.local").unwrap(), &zone));
        assert!(in_zone(&zone, &zone));
        assert!(!in_zone(&to_wire("xcluster.local").unwrap(), &zone));
        assert!(!in_zone(&to_wire("local").unwrap(), &zone));
    }

    #[test]
    fn address_forms() {
        assert_eq!(dashed("10.244.1.3".parse().unwrap()), "10-244-1-3");
        assert_eq!(dashed("fd00::1".parse().unwrap()), "fd00--1");
        assert_eq!(
            reverse("10.96.0.10".parse().unwrap()),
            "10.0.96.10.in-addr.arpa"
        );
        assert!(reverse("fd00::1".parse().unwrap()).starts_with("1.0.0.0.0.0.0.0."));
        assert!(reverse("fd00::1".parse().unwrap()).ends_with("0.0.d.f.ip6.arpa"));
    }
}

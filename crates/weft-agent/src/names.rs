//! Names the runtime derives from a pod: its network namespace name and the file name of
//! its record. Both come from the API, so both are sanitised before they touch the kernel
//! or the file system.

/// Longest namespace name we create: /run/netns entries are file names (255 bytes), and
/// leaving room keeps `ip netns list` output readable.
pub const NETNS_NAME_MAX: usize = 200;

/// `<prefix><namespace>-<name>`, restricted to `[a-z0-9.-]` (anything else becomes `-`);
/// over `NETNS_NAME_MAX` (200) bytes it is cut and ends in a hash of the full name, so distinct pods
/// keep distinct names.
pub fn netns_name(prefix: &str, namespace: &str, name: &str) -> String {
    let raw = format!("{prefix}{namespace}-{name}");
    let clean: String = raw
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '.' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    if clean.len() <= NETNS_NAME_MAX && clean == raw {
        return clean;
    }
    // Sanitising can merge names ("a_b" and "a-b"), so the hash is also added then.
    let tag = format!("-{:016x}", fnv1a(raw.as_bytes()));
    let keep = clean.len().min(NETNS_NAME_MAX - tag.len());
    format!("{}{tag}", &clean[..keep])
}

/// The fallback when [`netns_name`] is taken by another pod (`ns "a-b"` + `"c"` and
/// `ns "a"` + `"b-c"` give the same name): the same name made unique by the pod's uid.
pub fn netns_name_for_uid(base: &str, uid: &str) -> String {
    let tag = format!("-{:08x}", fnv1a(uid.as_bytes()) as u32);
    let keep = base.len().min(NETNS_NAME_MAX - tag.len());
    format!("{}{tag}", &base[..keep])
}

/// A pod uid as the API server makes them is a UUID; anything that is not a plain file
/// name made of `[A-Za-z0-9._-]` is refused because the uid names the pod's directory.
pub fn valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 128
        && uid != "."
        && uid != ".."
        && uid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// FNV-1a, 64 bit: stable across builds and platforms (std's hasher is not).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_kept() {
        assert_eq!(
            netns_name("weft-lab1-node-1-", "default", "web-0"),
            "weft-lab1-node-1-default-web-0"
        );
    }

    #[test]
    fn odd_characters_are_replaced_and_hashed() {
        let a = netns_name("p-", "default", "a_b");
        let b = netns_name("p-", "default", "a-b");
        assert!(a.starts_with("p-default-a-b-"), "{a}");
        assert_ne!(a, b);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-'));
    }

    #[test]
    fn long_names_are_cut_with_a_hash() {
        let long = "x".repeat(300);
        let a = netns_name("p-", "ns", &long);
        let b = netns_name("p-", "ns", &format!("{long}y"));
        assert_eq!(a.len(), NETNS_NAME_MAX);
        assert_ne!(a, b);
        let u = netns_name_for_uid(&a, "uid-1");
        assert!(u.len() <= NETNS_NAME_MAX);
        assert_ne!(u, netns_name_for_uid(&a, "uid-2"));
    }

    #[test]
    fn uids_must_be_file_names() {
        assert!(valid_uid("0b7e6f0c-3f5a-4c9e-9d55-1a2b3c4d5e6f"));
        for bad in ["", ".", "..", "a/b", "a b", "x\0"] {
            assert!(!valid_uid(bad), "{bad:?}");
        }
    }
}

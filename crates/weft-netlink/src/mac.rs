//! MAC address text form, as CNI results and `ip link` print it.

use crate::error::{Error, Result};

/// "aa:bb:cc:dd:ee:ff", lower case.
pub fn mac_to_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parse "aa:bb:cc:dd:ee:ff" (or with '-' separators, any case).
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let invalid = || {
        Error::invalid(
            format!("MAC address {s:?}"),
            "expected six hex octets like aa:bb:cc:dd:ee:ff",
        )
    };
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(invalid());
    }
    let mut mac = [0u8; 6];
    for (slot, part) in mac.iter_mut().zip(parts) {
        if part.len() != 2 {
            return Err(invalid());
        }
        *slot = u8::from_str_radix(part, 16).map_err(|_| invalid())?;
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mac = [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0xff];
        assert_eq!(mac_to_string(&mac), "0a:58:0a:f4:01:ff");
        assert_eq!(parse_mac("0A:58:0a:f4:01:FF").unwrap(), mac);
        assert_eq!(parse_mac("0a-58-0a-f4-01-ff").unwrap(), mac);
        for bad in [
            "",
            "0a:58:0a:f4:01",
            "0a:58:0a:f4:01:ff:00",
            "0a:58:0a:f4:01:fg",
            "a:58:0a:f4:01:ff0",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad:?} accepted");
        }
    }
}

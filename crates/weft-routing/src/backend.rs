//! How pod traffic crosses nodes: plain routes through the underlay (host-gw), or a VXLAN
//! overlay. Both follow flannel's backends of the same names.

use std::fmt;

use crate::error::{Error, Result};

/// VXLAN network identifier weft uses by default (flannel's too).
pub const DEFAULT_VNI: u32 = 1;
/// UDP port of the overlay: the Linux kernel's historical default, which flannel uses; not
/// IANA's 4789, so weft coexists with other VXLAN users on that port.
pub const DEFAULT_VXLAN_PORT: u16 = 8472;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A route to each remote pod subnet via the remote node's underlay IP. Needs every node
    /// on one L2 segment.
    HostGw,
    /// Device `weft.<vni>`; per remote node one route, one neighbour and one FDB entry.
    Vxlan { vni: u32, port: u16 },
}

impl Backend {
    /// "host-gw", or "vxlan" with VNI 1 and UDP port 8472.
    pub fn parse(s: &str) -> Result<Backend> {
        match s {
            "host-gw" => Ok(Backend::HostGw),
            "vxlan" => Ok(Backend::Vxlan {
                vni: DEFAULT_VNI,
                port: DEFAULT_VXLAN_PORT,
            }),
            other => Err(Error::UnknownBackend(other.to_string())),
        }
    }

    /// The overlay device: `weft.<vni>`; None for host-gw, which makes no device.
    pub fn device_name(&self) -> Option<String> {
        match self {
            Backend::HostGw => None,
            Backend::Vxlan { vni, .. } => Some(format!("weft.{vni}")),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::HostGw => "host-gw",
            Backend::Vxlan { .. } => "vxlan",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Backend> {
        Backend::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_backends_and_names_the_choices() {
        assert_eq!(Backend::parse("host-gw").unwrap(), Backend::HostGw);
        assert_eq!(
            Backend::parse("vxlan").unwrap(),
            Backend::Vxlan { vni: 1, port: 8472 }
        );
        let e = Backend::parse("udp").unwrap_err();
        assert!(e.to_string().contains("\"host-gw\" or \"vxlan\""), "{e}");
        assert_eq!(Backend::parse("vxlan").unwrap().to_string(), "vxlan");
    }
}

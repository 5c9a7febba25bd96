//! A packet capture on one link of the LAN (AF_PACKET), to see what really crosses the
//! underlay: plain pod packets (host-gw) or pod packets inside VXLAN over UDP.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{TestNs, WAIT};

/// A TCP packet between pods as seen on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Routed as is: the pod addresses are the outer addresses.
    Plain { src: IpAddr, dst: IpAddr },
    /// Encapsulated: outer UDP between VTEPs, inner packet between pods.
    Vxlan {
        outer_src: IpAddr,
        outer_dst: IpAddr,
        port: u16,
        vni: u32,
        inner_src: IpAddr,
        inner_dst: IpAddr,
    },
}

pub struct Capture {
    fd: OwnedFd,
}

impl Capture {
    /// Capture every frame on link `ifname` in `ns`, from now on.
    pub fn start(ns: &TestNs, ifname: &str) -> Capture {
        let index = ns.handle().link_index(ifname).expect("capture link index");
        let proto = (libc::ETH_P_ALL as u16).to_be();
        let fd = ns
            .ns
            .run_in(move || {
                // SAFETY: plain socket(2); the result is checked before being owned.
                let raw =
                    unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
                assert!(
                    raw >= 0,
                    "AF_PACKET socket: {}",
                    std::io::Error::last_os_error()
                );
                // SAFETY: raw is a fresh descriptor that nothing else owns.
                let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                // SAFETY: sockaddr_ll is plain data; zero is a valid starting value.
                let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_protocol = proto;
                sll.sll_ifindex = index as i32;
                // SAFETY: sll is a valid sockaddr_ll of the size passed.
                let rc = unsafe {
                    libc::bind(
                        fd.as_raw_fd(),
                        &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    )
                };
                assert_eq!(rc, 0, "bind capture: {}", std::io::Error::last_os_error());
                let tv = libc::timeval {
                    tv_sec: WAIT.as_secs() as libc::time_t,
                    tv_usec: 0,
                };
                // SAFETY: tv is a valid timeval of the size passed.
                let rc = unsafe {
                    libc::setsockopt(
                        fd.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_RCVTIMEO,
                        &tv as *const libc::timeval as *const libc::c_void,
                        std::mem::size_of::<libc::timeval>() as u32,
                    )
                };
                assert_eq!(
                    rc,
                    0,
                    "capture timeout: {}",
                    std::io::Error::last_os_error()
                );
                fd
            })
            .expect("enter namespace for capture");
        Capture { fd }
    }

    /// The first captured TCP packet from `src` to `dst` (pod addresses), plain or inside
    /// VXLAN; None if none arrived before the receive timeout.
    pub fn find_tcp(&self, src: IpAddr, dst: IpAddr) -> Option<Seen> {
        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: buf is valid for writes of its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                )
            };
            if n <= 0 {
                return None;
            }
            if let Some(seen) = parse(&buf[..n as usize]) {
                let (s, d) = match &seen {
                    Seen::Plain { src, dst } => (*src, *dst),
                    Seen::Vxlan {
                        inner_src,
                        inner_dst,
                        ..
                    } => (*inner_src, *inner_dst),
                };
                if s == src && d == dst {
                    return Some(seen);
                }
            }
        }
    }
}

/// (protocol, src, dst, payload) of an IPv4 packet.
fn ipv4(p: &[u8]) -> Option<(u8, IpAddr, IpAddr, &[u8])> {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let src = IpAddr::V4(Ipv4Addr::new(p[12], p[13], p[14], p[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(p[16], p[17], p[18], p[19]));
    Some((p[9], src, dst, p.get(ihl..)?))
}

/// An Ethernet frame carrying IPv4: the IP packet.
fn ether_ipv4(f: &[u8]) -> Option<&[u8]> {
    if f.len() < 14 || f[12..14] != [0x08, 0x00] {
        return None;
    }
    Some(&f[14..])
}

fn parse(frame: &[u8]) -> Option<Seen> {
    let (proto, src, dst, payload) = ipv4(ether_ipv4(frame)?)?;
    match proto {
        6 => Some(Seen::Plain { src, dst }),
        17 if payload.len() >= 16 => {
            let port = u16::from_be_bytes([payload[2], payload[3]]);
            let vx = &payload[8..];
            // VXLAN header: flags with the I bit, 3 reserved, 24-bit VNI, 1 reserved.
            if vx[0] & 0x08 == 0 {
                return None;
            }
            let vni = u32::from_be_bytes([0, vx[4], vx[5], vx[6]]);
            let (iproto, inner_src, inner_dst, _) = ipv4(ether_ipv4(&vx[8..])?)?;
            (iproto == 6).then_some(Seen::Vxlan {
                outer_src: src,
                outer_dst: dst,
                port,
                vni,
                inner_src,
                inner_dst,
            })
        }
        _ => None,
    }
}

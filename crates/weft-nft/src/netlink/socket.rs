//! The NETLINK_NETFILTER socket: sending a transaction and collecting its verdict, and
//! dumping objects for read-back.

use std::os::fd::AsRawFd;
use std::path::Path;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};

use super::attr::{
    Attrs, Msgs, Writer, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use super::batch::{nft_type, FinishedBatch};
use crate::error::{Error, Failure, Result};

const SOL_NETLINK: libc::c_int = 270;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLM_F_ACK_TLVS: u16 = 0x200;
const RECV_BUF: usize = 256 * 1024;

pub struct NftSocket {
    sock: Socket,
    seq: u32,
    sndbuf: usize,
    buf: Vec<u8>,
}

fn setsockopt_int(fd: i32, level: i32, name: i32, val: i32) -> std::io::Result<()> {
    // SAFETY: `val` outlives the call and its size is passed alongside it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &val as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl NftSocket {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Self> {
        let mut sock = Socket::new(NETLINK_NETFILTER)
            .map_err(|e| Error::io("socket(NETLINK_NETFILTER)", e))?;
        sock.bind_auto().map_err(|e| Error::io("bind", e))?;
        let fd = sock.as_raw_fd();
        setsockopt_int(fd, SOL_NETLINK, NETLINK_CAP_ACK, 1)
            .map_err(|e| Error::io("NETLINK_CAP_ACK", e))?;
        // Extended acks are a bonus (messages from the kernel); older kernels lack them.
        let _ = setsockopt_int(fd, SOL_NETLINK, NETLINK_EXT_ACK, 1);
        let rcv = 8 * 1024 * 1024;
        if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, rcv).is_err() {
            let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, rcv);
        }
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(NftSocket {
            sock,
            seq,
            sndbuf: 0,
            buf: vec![0; RECV_BUF],
        })
    }

    /// Opens a socket inside the network namespace at `netns` (e.g. /run/netns/NAME); the
    /// socket stays bound to that namespace. The calling thread's namespace is untouched.
    pub fn open_in(netns: &Path) -> Result<Self> {
        let file = std::fs::File::open(netns)
            .map_err(|e| Error::io(format!("opening {}", netns.display()), e))?;
        let path = netns.display().to_string();
        std::thread::spawn(move || -> Result<Self> {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::io(format!("setns into {path}"), e.into()))?;
            NftSocket::open()
        })
        .join()
        .map_err(|_| Error::Invalid("namespace thread panicked".into()))?
    }

    /// A fresh range of sequence numbers for a batch of `n` messages.
    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1 << 24);
        self.seq
    }

    fn ensure_sndbuf(&mut self, len: usize) -> Result<()> {
        // The kernel refuses datagrams over sndbuf - 32 and the whole batch must be one.
        let need = len + 64 * 1024;
        if need > self.sndbuf {
            let want = need.min(i32::MAX as usize) as i32;
            let fd = self.sock.as_raw_fd();
            setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, want)
                .or_else(|_| setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, want))
                .map_err(|e| Error::io("raising SO_SNDBUF for the batch", e))?;
            self.sndbuf = need;
        }
        Ok(())
    }

    /// Sends a whole transaction and waits for the kernel's verdict. On failure nothing
    /// was committed and every refused object is named.
    pub fn transact(&mut self, batch: FinishedBatch) -> Result<()> {
        let Some(ack_seq) = batch.ack_seq else {
            return Ok(());
        };
        if batch.batch.w.overflow {
            return Err(Error::Invalid(
                "an object does not fit in a netlink attribute (64 KiB): a rule or element is too large".into(),
            ));
        }
        let bytes = batch.bytes();
        self.ensure_sndbuf(bytes.len())?;
        let sent = self
            .sock
            .send(bytes, 0)
            .map_err(|e| Error::io("sending the nf_tables batch", e))?;
        if sent != bytes.len() {
            return Err(Error::io(
                "sending the nf_tables batch",
                std::io::Error::other("short send"),
            ));
        }
        // The kernel processes the batch inside sendmsg, so every reply is already queued;
        // block only for the first one, then drain what is left without waiting.
        let mut failures = Vec::new();
        let mut acked = false;
        let mut flags = 0;
        loop {
            let n = match recv(&self.sock, &mut self.buf, flags) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    failures.push(Failure {
                        object: "the transaction".into(),
                        errno: libc::ENOBUFS,
                        message: Some("more errors than the socket could queue".into()),
                    });
                    flags = libc::MSG_DONTWAIT;
                    continue;
                }
                Err(e) => return Err(Error::io("receiving the batch verdict", e)),
            };
            flags = libc::MSG_DONTWAIT;
            for msg in Msgs(&self.buf[..n]) {
                if msg.ty != NLMSG_ERROR {
                    continue;
                }
                let (errno, orig_seq, message) = parse_error(msg.payload, msg.flags);
                if errno == 0 {
                    acked |= orig_seq == ack_seq;
                    continue;
                }
                failures.push(Failure {
                    object: batch.batch.describe(orig_seq),
                    errno,
                    message,
                });
            }
        }
        if !failures.is_empty() {
            return Err(Error::Rejected(failures));
        }
        if !acked {
            return Err(Error::Decode(
                "the kernel did not acknowledge the batch".into(),
            ));
        }
        Ok(())
    }

    /// Dumps objects of one message type; `attrs` filters (e.g. by table or set).
    pub fn dump(
        &mut self,
        msg: u16,
        family: u8,
        attrs: impl FnOnce(&mut Writer),
        each: impl FnMut(u8, Attrs) -> Result<()>,
    ) -> Result<()> {
        self.dump_typed(nft_type(msg), family, attrs, each)
    }

    /// One request that is not part of a transaction (other nfnetlink subsystems, such as
    /// conntrack), waiting for its acknowledgement.
    pub fn request(&mut self, ty: u16, family: u8, attrs: impl FnOnce(&mut Writer)) -> Result<()> {
        let seq = self.next_seq();
        let mut w = Writer::default();
        let m = w.begin_msg(ty, NLM_F_REQUEST | NLM_F_ACK, seq, family, 0);
        attrs(&mut w);
        w.end_msg(m);
        self.sock
            .send(&w.buf, 0)
            .map_err(|e| Error::io("sending a request", e))?;
        loop {
            let n = recv(&self.sock, &mut self.buf, 0)
                .map_err(|e| Error::io("receiving an acknowledgement", e))?;
            for m in Msgs(&self.buf[..n]) {
                if m.seq != seq || m.ty != NLMSG_ERROR {
                    continue;
                }
                let (errno, _, message) = parse_error(m.payload, m.flags);
                if errno == 0 {
                    return Ok(());
                }
                return Err(Error::Rejected(vec![Failure {
                    object: format!("nfnetlink request (message type {ty:#x})"),
                    errno,
                    message,
                }]));
            }
        }
    }

    /// A dump of any nfnetlink message type (`subsystem << 8 | message`).
    pub fn dump_typed(
        &mut self,
        ty: u16,
        family: u8,
        attrs: impl FnOnce(&mut Writer),
        mut each: impl FnMut(u8, Attrs) -> Result<()>,
    ) -> Result<()> {
        let msg = ty & 0xff;
        let seq = self.next_seq();
        let mut w = Writer::default();
        let m = w.begin_msg(ty, NLM_F_REQUEST | NLM_F_DUMP, seq, family, 0);
        attrs(&mut w);
        w.end_msg(m);
        self.sock
            .send(&w.buf, 0)
            .map_err(|e| Error::io("sending a dump request", e))?;
        loop {
            let n =
                recv(&self.sock, &mut self.buf, 0).map_err(|e| Error::io("receiving a dump", e))?;
            for m in Msgs(&self.buf[..n]) {
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let (errno, _, message) = parse_error(m.payload, m.flags);
                        if errno == 0 {
                            return Ok(());
                        }
                        return Err(Error::Rejected(vec![Failure {
                            object: format!("dumping nf_tables objects (message {msg})"),
                            errno,
                            message,
                        }]));
                    }
                    _ => {
                        if let Some((fam, a)) = m.nfgen() {
                            each(fam, a)?;
                        }
                    }
                }
            }
        }
    }
}

fn recv(sock: &Socket, buf: &mut [u8], flags: i32) -> std::io::Result<usize> {
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    let n = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            flags,
        )
    };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// (positive errno, sequence of the message it answers, extended-ack text).
fn parse_error(payload: &[u8], flags: u16) -> (i32, u32, Option<String>) {
    let code = payload
        .get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0);
    let seq = payload
        .get(12..16)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0);
    let mut message = None;
    if flags & NLM_F_ACK_TLVS != 0 {
        // With NETLINK_CAP_ACK the echoed request is only its 16-byte header.
        let orig_len = payload
            .get(4..8)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .unwrap_or(16);
        let echoed = if flags & 0x100 != 0 {
            16
        } else {
            super::attr::align4(orig_len)
        };
        if let Some(tlvs) = payload.get(4 + echoed..) {
            message = Attrs(tlvs)
                .get(NLMSGERR_ATTR_MSG)
                .and_then(super::attr::string);
        }
    }
    (-code, seq, message)
}

//! UDP serving: one OS thread per socket, blocked in `recvmmsg` until queries arrive.
//!
//! Why not a tokio task: on the task, a reply waited for the runtime to notice readiness
//! (epoll, then a wake-up of the worker, then the task's turn), and under load those
//! waits came in bursts of a scheduler tick; a thread parked in the receive call itself
//! is woken by the packet. Zone and cache answers are written on this thread without
//! allocating; only a question for an upstream goes to the runtime as a task, which sends
//! its reply on the same socket when the upstream has answered.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;

use crate::answer::{respond, truncate_to, Decision};
use crate::cache;
use crate::hook;
use crate::mmsg::{now_ns, send_one, stamp_arrivals, Batch, BATCH};
use crate::server::{bump, forwarded, too_busy, Shared};

/// A serving thread; dropping it stops the thread and waits for it.
pub(crate) struct UdpThread {
    sock: Arc<UdpSocket>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpThread {
    pub(crate) fn start(sock: Arc<UdpSocket>, sh: Arc<Shared>, rt: Handle) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new().name("dns-udp".into()).spawn({
            let (sock, stop) = (sock.clone(), stop.clone());
            move || serve(&sock, &sh, &rt, &stop)
        })?;
        Ok(UdpThread {
            sock,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for UdpThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the thread out of its receive call. On a socket that never connected the
        // call reports ENOTCONN but still marks the socket shut and wakes its readers.
        // SAFETY: the descriptor is open for as long as `self.sock` lives.
        unsafe { libc::shutdown(self.sock.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(sock: &Arc<UdpSocket>, sh: &Arc<Shared>, rt: &Handle, stop: &AtomicBool) {
    let fd = sock.as_raw_fd();
    if let Err(e) = stamp_arrivals(fd) {
        // Only the reply-delay histogram goes without.
        tracing::debug!("udp receive timestamps: {e}");
    }
    let mut batch = Batch::default();
    let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(1500)).collect();
    let mut lower = [0u8; 255];
    let mut ready = Vec::with_capacity(BATCH);
    loop {
        let received = batch.recv(fd, true);
        if stop.load(Ordering::Acquire) {
            return;
        }
        let n = match received {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Out of memory for socket buffers and the like: back off, do not spin.
                tracing::debug!("udp receive: {e}");
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        ready.clear();
        for (i, out) in outs.iter_mut().enumerate().take(n) {
            bump(&sh.stats.queries);
            let Some((msg, src)) = batch.get(i) else {
                bump(&sh.stats.dropped);
                continue;
            };
            if datagram(sock, sh, rt, msg, src, out, &mut lower) {
                ready.push(i);
            }
        }
        if !ready.is_empty() {
            let now = now_ns();
            for &i in &ready {
                if let Some(t) = batch.arrived(i) {
                    sh.stats.reply_delay.record(now.saturating_sub(t));
                }
            }
        }
        let mut done = 0;
        while done < ready.len() {
            match batch.send(fd, &ready[done..], &mut outs, true) {
                Ok(0) => break,
                Ok(k) => done += k,
                Err(e) => {
                    // One reply the kernel refused (an unreachable sender, say): the rest
                    // still go.
                    tracing::debug!("udp send: {e}");
                    done += 1;
                }
            }
        }
    }
}

/// Handle one datagram: `true` when `out` holds the reply to send now (the zone's or the
/// cache's); a question for upstream is answered later from a task of its own.
fn datagram(
    sock: &Arc<UdpSocket>,
    sh: &Arc<Shared>,
    rt: &Handle,
    msg: &[u8],
    src: SocketAddr,
    out: &mut Vec<u8>,
    lower: &mut [u8; 255],
) -> bool {
    match respond(&sh.model, &sh.acl, src.ip(), msg, true, out, lower) {
        Decision::Reply => true,
        Decision::Drop => {
            bump(&sh.stats.dropped);
            false
        }
        Decision::Forward(q) => {
            let key = cache::key(&lower[..q.qname_len], q.qtype, q.qclass);
            // With an active answer hook, cached answers take the task path too.
            if let Some(e) = sh.fwd.cached(&key).filter(|_| !hook::active(&sh.hook)) {
                bump(&sh.stats.cache_hits);
                e.write_reply(out, &q, Instant::now());
                truncate_to(out, q.question.len(), q.edns, q.udp_limit());
                true
            } else if spawn_upstream(sock, sh, rt, msg, None, src) {
                false
            } else {
                too_busy(sh, &q, out);
                true
            }
        }
        Decision::Chase(q, target, ttl) => {
            if spawn_upstream(sock, sh, rt, msg, Some((target, ttl)), src) {
                return false;
            }
            too_busy(sh, &q, out);
            true
        }
    }
}

/// Answer over UDP from a task of its own once the upstream has replied; `false` when
/// `max_forwards` questions are already waiting.
fn spawn_upstream(
    sock: &Arc<UdpSocket>,
    sh: &Arc<Shared>,
    rt: &Handle,
    msg: &[u8],
    alias: Option<(Vec<u8>, u32)>,
    src: SocketAddr,
) -> bool {
    let Ok(permit) = sh.forwards.clone().try_acquire_owned() else {
        return false;
    };
    let (sock, sh, msg) = (sock.clone(), sh.clone(), msg.to_vec());
    rt.spawn(async move {
        let _permit = permit;
        let mut out = Vec::new();
        forwarded(&sh, &msg, alias, true, &mut out).await;
        hook::before_send(&sh.hook, src.ip(), &out).await;
        if !out.is_empty() {
            if let Err(e) = send_one(sock.as_raw_fd(), &out, src) {
                tracing::debug!("udp send to {src}: {e}");
            }
        }
    });
    true
}

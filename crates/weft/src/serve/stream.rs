//! Connection-oriented servers (TCP, SCTP, HTTP): an accept loop per listening socket and a
//! thread per connection, under a shared cap.

use super::greeting::{canonical, Identity};
use super::http::{self, Sniff};
use super::slots::Slots;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// Idle connections are closed after this, so forgotten clients do not pin slots forever.
pub const IDLE: Duration = Duration::from_secs(300);
const STACK: usize = 256 * 1024;

pub type Handler = fn(TcpStream, &Identity) -> io::Result<()>;

/// Accepts forever, handing each connection to `handler` on its own thread.
pub fn accept_loop(
    listener: TcpListener,
    slots: Arc<Slots>,
    identity: Arc<Identity>,
    handler: Handler,
) {
    loop {
        let slot = slots.acquire();
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            // ECONNABORTED and friends concern one client; EMFILE passes once others close.
            Err(e) => {
                note!("weft serve: accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let identity = Arc::clone(&identity);
        let spawned = std::thread::Builder::new()
            .name("weft-serve-conn".into())
            .stack_size(STACK)
            .spawn(move || {
                let _slot = slot;
                if let Err(e) = stream
                    .set_read_timeout(Some(IDLE))
                    .and_then(|()| stream.set_write_timeout(Some(IDLE)))
                {
                    note!("weft serve: socket timeouts: {e}");
                    return;
                }
                // Errors here are a client going away mid-exchange: nothing to report.
                let _ = handler(stream, &identity);
            });
        if let Err(e) = spawned {
            note!("weft serve: cannot start a connection thread: {e}");
        }
    }
}

/// A client that says nothing for this long (a person with `nc`) gets the greeting anyway.
const SNIFF_WAIT: Duration = Duration::from_secs(1);

/// TCP: what the client sends first decides. A request line gets the HTTP echo, so one
/// declared containerPort answers both HTTP clients and `weft probe tcp`; anything else,
/// or silence, gets the greeting line and then every byte back as it arrives.
pub fn tcp(mut stream: TcpStream, identity: &Identity) -> io::Result<()> {
    let mut first = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    stream.set_read_timeout(Some(SNIFF_WAIT))?;
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => return Err(e),
        };
        first.extend_from_slice(&buf[..n]);
        match http::sniff(&first) {
            Sniff::Http => {
                stream.set_read_timeout(Some(IDLE))?;
                return http::serve_after(stream, identity, first);
            }
            Sniff::NotHttp => break,
            Sniff::Undecided => {}
        }
    }
    stream.set_read_timeout(Some(IDLE))?;
    echo(stream, identity, "tcp", &first)
}

/// SCTP echo: the greeting, then the echo, over an association.
pub fn sctp(stream: TcpStream, identity: &Identity) -> io::Result<()> {
    echo(stream, identity, "sctp", &[])
}

fn echo(mut stream: TcpStream, identity: &Identity, proto: &str, first: &[u8]) -> io::Result<()> {
    let peer = canonical(stream.peer_addr()?);
    // An echo answers at once: no waiting for the ACK of the previous small write (Nagle).
    // SCTP has no such option at the TCP level; that failure is expected and harmless.
    let _ = stream.set_nodelay(true);
    let mut reply = identity.greeting(proto, peer).into_bytes();
    reply.extend_from_slice(first);
    stream.write_all(&reply)?;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n])?;
    }
}

//! Lets kubectl on the machine reach the lab's API server without adding anything to the
//! machine's network: a listener on the machine's loopback whose connections are relayed to
//! the control plane through sockets opened inside the lab's root namespace.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use weft_netlink::Netns;

/// Relays every connection accepted on `listener` to `target` inside `ns`, until the
/// process exits. Runs on its own thread.
pub fn spawn(listener: TcpListener, ns: Netns, target: SocketAddr) -> io::Result<()> {
    std::thread::Builder::new()
        .name("api-forward".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                // The socket is created inside the lab's namespace and stays there.
                let upstream = match ns.run_in(move || TcpStream::connect(target)) {
                    Ok(Ok(s)) => s,
                    _ => {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    }
                };
                let _ = relay(client, upstream);
            }
        })
        .map(|_| ())
}

fn relay(a: TcpStream, b: TcpStream) -> io::Result<()> {
    // A relay must not hold back a request's last segment for an ACK: with Nagle on, a
    // POST whose body follows its headers waited on delayed ACKs (~40 ms each).
    a.set_nodelay(true)?;
    b.set_nodelay(true)?;
    let (a2, b2) = (a.try_clone()?, b.try_clone()?);
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        }
    };
    std::thread::spawn(pipe(a, b));
    std::thread::spawn(pipe(b2, a2));
    Ok(())
}

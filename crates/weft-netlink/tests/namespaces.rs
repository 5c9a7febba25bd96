//! Named namespaces, running code inside them, per-namespace sysctls, and a real TCP
//! connection across a veth pair between two namespaces.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::thread;
use std::time::Duration;

use common::{ip_json, TestNs};
use weft_netlink::{sysctl, Handle, IpNet, Netns};

#[test]
fn named_namespace_lifecycle() {
    let name = format!("weft-t-nl-life-{}", std::process::id());
    let _ = Netns::delete_named(&name);
    let guard = TestNs {
        name: name.clone(),
        ns: Netns::create_named(&name).unwrap(),
    };
    assert_eq!(guard.ns.path(), Path::new("/run/netns").join(&name));

    assert!(Netns::list_named().unwrap().contains(&name));
    let err = Netns::create_named(&name).unwrap_err();
    assert!(err.is_exists(), "{err}");

    // iproute2 sees it and can use it; it is a fresh namespace with only lo.
    let links = ip_json(&name, &["link", "show"]);
    assert_eq!(links.as_array().map(Vec::len), Some(1), "{links}");
    assert_eq!(links[0]["ifname"], "lo");

    // Two handles on it agree; the test thread's own namespace is a different one.
    let again = Netns::from_name(&name).unwrap();
    assert_eq!(again.inode().unwrap(), guard.ns.inode().unwrap());
    assert_ne!(
        Netns::current().unwrap().inode().unwrap(),
        guard.ns.inode().unwrap()
    );
    drop(again);

    Netns::delete_named(&name).unwrap();
    assert!(!Path::new("/run/netns").join(&name).exists());
    assert!(!Netns::list_named().unwrap().contains(&name));
    Netns::delete_named(&name).unwrap(); // absent is fine
    assert!(Netns::from_name(&name).is_err());

    // The handle still pins the (now unnamed) namespace.
    assert!(guard.ns.inode().is_ok());

    for bad in ["", "..", "a/b"] {
        assert!(Netns::create_named(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn run_in_enters_the_namespace_on_a_helper_thread_only() {
    let t = TestNs::new("runin");
    let before = Netns::current().unwrap().inode().unwrap();
    let inside =
        t.ns.run_in(|| Netns::current().unwrap().inode().unwrap())
            .unwrap();
    assert_eq!(inside, t.ns.inode().unwrap());
    assert_eq!(Netns::current().unwrap().inode().unwrap(), before);

    // Handle::new follows the calling thread: inside, it sees only the new namespace's lo.
    let names: Vec<String> =
        t.ns.run_in(|| Handle::new().and_then(|mut h| h.links()))
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
    assert_eq!(names, vec!["lo".to_string()]);
}

#[test]
fn sysctl_in_a_namespace_leaves_the_host_alone() {
    let t = TestNs::new("sysctl");
    let host_before = sysctl::get("net.ipv4.ip_forward").unwrap();

    // A new namespace starts with forwarding off; flip it on and back inside only.
    t.ns.run_in(|| -> weft_netlink::Result<()> {
        assert_eq!(sysctl::get("net.ipv4.ip_forward")?, "0");
        sysctl::set("net.ipv4.ip_forward", "1")?;
        assert_eq!(sysctl::get("net.ipv4.ip_forward")?, "1");
        sysctl::set("net/ipv4/conf/lo/rp_filter", "2")?;
        assert_eq!(sysctl::get("net.ipv4.conf.lo.rp_filter")?, "2");
        Ok(())
    })
    .unwrap()
    .unwrap();
    let seen_again = t.ns.run_in(|| sysctl::get("net.ipv4.ip_forward")).unwrap();
    assert_eq!(seen_again.unwrap(), "1");
    assert_eq!(sysctl::get("net.ipv4.ip_forward").unwrap(), host_before);

    let err = sysctl::get("net.ipv4.no_such_knob").unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains("net.ipv4.no_such_knob"), "{err}");
}

#[test]
fn tcp_connects_across_a_veth_pair_between_namespaces() {
    let a = TestNs::new("tcp-a");
    let b = TestNs::new("tcp-b");
    let mut ha = a.handle();
    let mut hb = b.handle();

    // Both ends are called eth0, each in its own namespace, like two pods.
    let va = ha.create_veth("eth0", "eth0", &b.ns, None).unwrap();
    let vb = hb.link_by_name("eth0").unwrap().expect("peer in b");
    let addr_a: IpNet = "10.77.0.1/24".parse().unwrap();
    let addr_b: IpNet = "10.77.0.2/24".parse().unwrap();
    ha.add_addr(va.index, addr_a).unwrap();
    hb.add_addr(vb.index, addr_b).unwrap();
    ha.set_up(va.index).unwrap();
    hb.set_up(vb.index).unwrap();
    ha.wait_oper_up(va.index, Duration::from_secs(10)).unwrap();

    // A socket belongs to the namespace it was created in, whichever thread uses it later.
    let listen_on = SocketAddr::new(addr_b.addr(), 0);
    let listener =
        b.ns.run_in(|| TcpListener::bind(listen_on))
            .unwrap()
            .unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (mut conn, peer) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).unwrap();
        conn.write_all(&buf).unwrap();
        peer.ip()
    });

    let target = SocketAddr::new(addr_b.addr(), port);
    let mut client = a.ns.run_in(|| TcpStream::connect(target)).unwrap().unwrap();
    client.write_all(b"hello").unwrap();
    let mut echoed = [0u8; 5];
    client.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"hello");
    let seen_from: IpAddr = server.join().unwrap();
    assert_eq!(seen_from, addr_a.addr());

    // Independently: namespace a routes the peer's address out of its own eth0.
    let host_route = ip_json(&a.name, &["route", "get", "10.77.0.2"]);
    assert_eq!(host_route[0]["dev"], "eth0");
}

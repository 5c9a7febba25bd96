//! Test scaffolding: a private network namespace per test, and a fake upstream resolver.

#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

/// Run `f` on a current-thread runtime in a thread of its own network namespace with `lo`
/// up (and `extra` addresses on it): nothing here touches the host's network.
pub fn in_netns<F, Fut>(extra: &[&str], f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    weft_netlink::Netns::run_in_new(move || {
        let mut h = weft_netlink::Handle::new().expect("netlink in the new netns");
        let lo = h.link_index("lo").expect("lo");
        for a in &extra {
            h.add_addr(lo, a.parse().expect("address"))
                .expect("address on lo");
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(f());
    })
    .expect("a network namespace of its own: the tests need root");
}

/// A blocking call (the probe client) off the runtime's only thread.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// An upstream resolver of the test's own, on UDP and TCP of one address, counting the
/// queries it gets per (name, transport). Names:
/// - `nx.<anything>` NXDOMAIN with an SOA (TTL 300, minimum 60);
/// - `big.<anything>` 100 A records; over UDP only the TC bit;
/// - `slow.<anything>` answered after 300 ms;
/// - `fail.<anything>` SERVFAIL;
/// - anything else one A record 192.0.2.1 with TTL 300.
#[derive(Clone, Default)]
pub struct Upstream {
    pub counts: Arc<Mutex<HashMap<(String, &'static str), usize>>>,
}

impl Upstream {
    pub fn count(&self, name: &str, transport: &'static str) -> usize {
        let c = self.counts.lock().unwrap();
        c.get(&(name.to_string(), transport)).copied().unwrap_or(0)
    }

    pub fn total(&self) -> usize {
        self.counts.lock().unwrap().values().sum()
    }

    pub async fn start(addr: SocketAddr) -> (Upstream, SocketAddr) {
        let up = Upstream::default();
        let udp = Arc::new(UdpSocket::bind(addr).await.unwrap());
        let at = udp.local_addr().unwrap();
        let tcp = TcpListener::bind(at).await.unwrap();
        let u = up.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65535];
            loop {
                let Ok((n, src)) = udp.recv_from(&mut buf).await else {
                    return;
                };
                let (u, udp, msg) = (u.clone(), udp.clone(), buf[..n].to_vec());
                tokio::spawn(async move {
                    if let Some(reply) = u.reply(&msg, "udp").await {
                        let _ = udp.send_to(&reply, src).await;
                    }
                });
            }
        });
        let u = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = tcp.accept().await else {
                    return;
                };
                let u = u.clone();
                tokio::spawn(async move {
                    while let Ok(len) = s.read_u16().await {
                        let mut msg = vec![0u8; len as usize];
                        if s.read_exact(&mut msg).await.is_err() {
                            return;
                        }
                        let Some(reply) = u.reply(&msg, "tcp").await else {
                            return;
                        };
                        let mut frame = (reply.len() as u16).to_be_bytes().to_vec();
                        frame.extend(reply);
                        if s.write_all(&frame).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (up, at)
    }

    async fn reply(&self, msg: &[u8], transport: &'static str) -> Option<Vec<u8>> {
        let q = Message::from_vec(msg).ok()?;
        let query = q.queries.first()?.clone();
        let name = query.name().to_ascii().to_ascii_lowercase();
        *self
            .counts
            .lock()
            .unwrap()
            .entry((name.clone(), transport))
            .or_insert(0) += 1;
        let mut r = Message::new(q.metadata.id, MessageType::Response, q.metadata.op_code);
        r.metadata.recursion_desired = q.metadata.recursion_desired;
        r.metadata.recursion_available = true;
        r.add_query(query.clone());
        let first = name.split('.').next().unwrap_or("");
        let a = |ip: [u8; 4]| {
            Record::from_rdata(
                query.name().clone(),
                300,
                RData::A(A::from(std::net::Ipv4Addr::from(ip))),
            )
        };
        match first {
            "nx" => {
                r.metadata.response_code = ResponseCode::NXDomain;
                let soa = SOA::new(
                    Name::from_str("ns.example.").unwrap(),
                    Name::from_str("hostmaster.example.").unwrap(),
                    1,
                    7200,
                    900,
                    86400,
                    60,
                );
                r.add_authority(Record::from_rdata(
                    Name::from_str("example.").unwrap(),
                    300,
                    RData::SOA(soa),
                ));
            }
            "big" if transport == "udp" => r.metadata.truncation = true,
            "big" => {
                for i in 0..100u8 {
                    r.add_answer(a([198, 51, 100, i]));
                }
            }
            "slow" => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                r.add_answer(a([192, 0, 2, 3]));
            }
            "fail" => r.metadata.response_code = ResponseCode::ServFail,
            _ => {
                r.add_answer(a([192, 0, 2, 1]));
            }
        }
        r.to_vec().ok()
    }
}

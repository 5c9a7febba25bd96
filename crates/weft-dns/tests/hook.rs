//! The answer hook over real sockets: every forwarded answer with addresses, from the
//! upstream or from the cache, over UDP and TCP, goes to the hook and leaves only once the
//! hook's future has completed; the zone's own names do not go to it.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{blocking, in_netns, Upstream};
use weft_dns::fixtures::service;
use weft_dns::hook::HookFuture;
use weft_dns::{query, Answer, AnswerHook, Model, Server, ServerConfig, Upstreams, ZoneConfig};

const T: Duration = Duration::from_secs(3);

/// Records each answer, and marks it done only after a pause: an answer the client
/// received before the hook finished would find `done` false.
#[derive(Default)]
struct Slow {
    seen: Mutex<Vec<Answer>>,
    done: Arc<AtomicBool>,
    /// Set: the hook says it is not needed (no policy names domains).
    idle: bool,
}

impl AnswerHook for Slow {
    fn active(&self) -> bool {
        !self.idle
    }

    fn answered(&self, a: Answer) -> HookFuture {
        self.seen.lock().unwrap().push(a);
        self.done.store(false, Ordering::SeqCst);
        let done = self.done.clone();
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            done.store(true, Ordering::SeqCst);
        })
    }
}

#[test]
fn forwarded_answers_wait_for_the_hook() {
    in_netns(&[], || async {
        let (_up, up_addr) = Upstream::start("127.0.0.2:0".parse().unwrap()).await;
        let md = Model::new(ZoneConfig::default()).unwrap();
        md.upsert_service(&service(
            "default",
            "web",
            &["10.96.0.20"],
            &[("http", 80, "TCP")],
        ));
        let cfg = ServerConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            upstreams: Upstreams::List(vec![up_addr]),
            upstream_timeout: Duration::from_millis(500),
            ..ServerConfig::default()
        };
        let mut server = Server::bind(cfg, md).await.unwrap();
        let hook = Arc::new(Slow::default());
        assert!(server.set_answer_hook(hook.clone()));
        let addr: SocketAddr = server.local_addrs()[0];
        tokio::spawn(server.run());

        // Upstream, then the cache, over UDP; then TCP.
        for tcp in [false, false, true] {
            let r = blocking(move || query(addr, "WWW.example.com", "A", tcp, T))
                .await
                .unwrap();
            assert_eq!(r.answers.len(), 1, "{r:?}");
            assert!(
                hook.done.load(Ordering::SeqCst),
                "the answer left before the hook finished (tcp {tcp})"
            );
        }
        let seen = hook.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3, "{seen:?}");
        let client: IpAddr = "127.0.0.1".parse().unwrap();
        for a in &seen {
            assert_eq!(a.client, client);
            assert_eq!(a.name, "www.example.com");
            // The cache ages the TTL as it serves.
            let [(ip, ttl)] = a.addrs.as_slice() else {
                panic!("{a:?}")
            };
            assert_eq!(*ip, "192.0.2.1".parse::<IpAddr>().unwrap());
            assert!((298..=300).contains(ttl), "{a:?}");
        }
        // The zone's names are not passed on; neither are answers without addresses.
        let r = blocking(move || query(addr, "web.default.svc.cluster.local", "A", false, T))
            .await
            .unwrap();
        assert_eq!(r.answers.len(), 1);
        let r = blocking(move || query(addr, "nx.example.com", "A", false, T))
            .await
            .unwrap();
        assert_eq!(r.rcode, "NXDOMAIN");
        assert_eq!(hook.seen.lock().unwrap().len(), 3);
    });
}

#[test]
fn an_inactive_hook_sees_nothing() {
    in_netns(&[], || async {
        let (up, up_addr) = Upstream::start("127.0.0.2:0".parse().unwrap()).await;
        let cfg = ServerConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            upstreams: Upstreams::List(vec![up_addr]),
            upstream_timeout: Duration::from_millis(500),
            ..ServerConfig::default()
        };
        let mut server = Server::bind(cfg, Model::new(ZoneConfig::default()).unwrap())
            .await
            .unwrap();
        let hook = Arc::new(Slow {
            idle: true,
            ..Slow::default()
        });
        assert!(server.set_answer_hook(hook.clone()));
        let addr: SocketAddr = server.local_addrs()[0];
        tokio::spawn(server.run());
        for tcp in [false, false, true] {
            let r = blocking(move || query(addr, "www.example.com", "A", tcp, T))
                .await
                .unwrap();
            assert_eq!(r.answers.len(), 1, "{r:?}");
        }
        assert!(hook.seen.lock().unwrap().is_empty());
        assert_eq!(up.count("www.example.com.", "udp"), 1, "the cache answered");
    });
}

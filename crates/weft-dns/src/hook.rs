//! A hook on forwarded answers, called before the answer leaves: for network policy's
//! `domainNames` peers, whose addresses must be in the asking pod's egress allow set
//! before the pod can use them.
//!
//! With a hook installed ([`crate::Server::set_answer_hook`]) and active, every name
//! outside the zone is answered from a task (the UDP thread's cache fast path is skipped),
//! which awaits [`AnswerHook::answered`] and then sends. The zone's own names are not
//! passed on.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use hickory_proto::op::Message;
use hickory_proto::rr::RData;

/// One forwarded answer with addresses, as the client will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Who asked.
    pub client: IpAddr,
    /// The question's name, lower case, without the final dot.
    pub name: String,
    /// The A and AAAA records of the answer section (the end of a CNAME chain the
    /// upstream followed included), each with its TTL in seconds.
    pub addrs: Vec<(IpAddr, u32)>,
}

pub type HookFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Called with every forwarded answer that holds addresses, before it is sent; the
/// answer leaves when the future completes (the implementation bounds its own wait).
pub trait AnswerHook: Send + Sync {
    fn answered(&self, answer: Answer) -> HookFuture;

    /// Whether answers need the hook now; while `false` they are sent as without one
    /// (cached answers straight from the UDP thread). Called per answer: keep it cheap.
    fn active(&self) -> bool {
        true
    }
}

/// Whether `hook` wants the answers now.
pub(crate) fn active(hook: &Option<Arc<dyn AnswerHook>>) -> bool {
    hook.as_ref().is_some_and(|h| h.active())
}

/// The addresses of a reply, `None` when it is not a parseable answer with any.
pub fn answer_of(client: IpAddr, reply: &[u8]) -> Option<Answer> {
    let m = Message::from_vec(reply).ok()?;
    let q = m.queries.first()?;
    let name = q
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let addrs: Vec<(IpAddr, u32)> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some((IpAddr::V4(a.0), r.ttl)),
            RData::AAAA(a) => Some((IpAddr::V6(a.0), r.ttl)),
            _ => None,
        })
        .collect();
    (!addrs.is_empty()).then_some(Answer {
        client,
        name,
        addrs,
    })
}

/// Runs the hook, if any, on a reply about to be sent to `client`.
pub(crate) async fn before_send(hook: &Option<Arc<dyn AnswerHook>>, client: IpAddr, reply: &[u8]) {
    if let Some(h) = hook.as_ref().filter(|h| h.active()) {
        if let Some(a) = answer_of(client, reply) {
            h.answered(a).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, MessageType, Query};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    #[test]
    fn answers_give_the_question_name_and_every_address_with_its_ttl() {
        let name = Name::from_ascii("WWW.Example.org.").unwrap();
        let target = Name::from_ascii("cdn.example.net.").unwrap();
        let mut m = Message::new(7, MessageType::Response, hickory_proto::op::OpCode::Query);
        m.add_query(Query::query(name.clone(), RecordType::A));
        m.add_answer(Record::from_rdata(
            name,
            300,
            RData::CNAME(hickory_proto::rr::rdata::CNAME(target.clone())),
        ));
        m.add_answer(Record::from_rdata(
            target.clone(),
            30,
            RData::A("192.0.2.7".parse::<std::net::Ipv4Addr>().unwrap().into()),
        ));
        m.add_answer(Record::from_rdata(
            target,
            20,
            RData::AAAA("2001:db8::7".parse::<std::net::Ipv6Addr>().unwrap().into()),
        ));
        let client: IpAddr = "10.244.1.5".parse().unwrap();
        let a = answer_of(client, &m.to_vec().unwrap()).expect("an answer");
        assert_eq!(a.name, "www.example.org");
        assert_eq!(
            a.addrs,
            vec![
                ("192.0.2.7".parse().unwrap(), 30),
                ("2001:db8::7".parse().unwrap(), 20)
            ]
        );
        let mut empty = Message::new(8, MessageType::Response, hickory_proto::op::OpCode::Query);
        empty.add_query(Query::query(
            Name::from_ascii("x.org.").unwrap(),
            RecordType::A,
        ));
        assert_eq!(answer_of(client, &empty.to_vec().unwrap()), None);
        assert_eq!(answer_of(client, b"junk"), None);
    }
}

//! The router in cluster mode, with a [`MemoryBroker`] standing in for Redis: what it
//! tells the other nodes, what it subscribes to, and what it does with their messages.
//! [`Node::pump`] plays Redis's part for numbered streams: it numbers what was handed
//! on, hands it back on the channels the node wants, and answers reads.

use std::collections::HashMap;
use std::sync::Arc;

use bytestring::ByteString;

use serde_json::{json, Value};

use super::{Answer, Ask, MemoryBroker, Route};
use crate::auth::Grant;
use crate::history::Position;
use crate::outbox::Outbox;
use crate::policy::Policies;
use crate::pool::SessionId;
use crate::router::{Post, Router, Sender};

struct Node {
    router: Router,
    broker: MemoryBroker,
    boxes: Vec<(SessionId, Arc<Outbox>)>,
    /// Redis's streams, by channel: the frames numbered so far (offset = index + 1).
    streams: HashMap<String, Vec<ByteString>>,
    /// Numbered frames not handed back yet: (route, frame, offset).
    echoes: Vec<(Route<Box<str>>, ByteString, u64)>,
}

impl Node {
    fn new() -> Node {
        let broker = MemoryBroker::new("wx");
        Node {
            router: Router::new(10, Policies::standard(), [Arc::from("stock")])
                .with_broker(Box::new(broker.clone())),
            broker,
            boxes: Vec::new(),
            streams: HashMap::new(),
            echoes: Vec::new(),
        }
    }

    /// Plays Redis: numbers what was handed on (held back until [`Node::echo`]) and
    /// answers the reads asked so far, as of now.
    fn pump(&mut self) {
        self.number();
        let reads = std::mem::take(&mut self.broker.record().reads);
        for read in reads {
            let channel = super::Channels::new("wx").name(read.route.as_deref());
            let frames = self.streams.get(&channel).cloned().unwrap_or_default();
            let top = frames.len() as u64;
            let (recovered, frames) = match read.ask {
                Ask::Position => (None, vec![]),
                Ask::Since(p, _) if &*p.epoch == "e1" && p.offset <= top => {
                    (Some(true), frames[p.offset as usize..].to_vec())
                }
                Ask::Since(..) => (Some(false), vec![]),
                Ask::Latest(n) => (None, frames[frames.len().saturating_sub(n)..].to_vec()),
            };
            let answer = Answer {
                position: Position {
                    epoch: "e1".into(),
                    offset: top,
                },
                recovered,
                frames,
            };
            self.router.caught(read.ticket, Ok(answer));
        }
    }

    /// Numbers what was handed on since the last call.
    fn number(&mut self) {
        let numbered = std::mem::take(&mut self.broker.record().numbered);
        for (channel, template, _) in numbered {
            let stream = self.streams.entry(channel.clone()).or_default();
            let offset = stream.len() as u64 + 1;
            let frame = template.numbered(offset);
            stream.push(frame.clone());
            let route = super::Channels::new("wx")
                .route(&channel)
                .unwrap()
                .to_owned();
            self.echoes.push((route, frame, offset));
        }
    }

    /// Hands the numbered frames back, on the channels this node wants.
    fn echo(&mut self) {
        self.number();
        let wanted = self.broker.record().wanted.clone();
        for (route, frame, offset) in std::mem::take(&mut self.echoes) {
            let channel = super::Channels::new("wx").name(route.as_deref());
            if wanted.contains(&channel) {
                self.router
                    .deliver_remote(route.as_deref(), &frame, Some(offset));
            }
        }
    }

    fn joined(&mut self, id: SessionId, name: &str) {
        let outbox = Arc::new(Outbox::new(1 << 20));
        self.router.connect(id, outbox.clone());
        self.boxes.push((id, outbox));
        self.router
            .join(id, name, Grant::all(), false, None, None)
            .unwrap();
        assert!(self.events(id).is_empty(), "held until Redis answers");
        self.pump();
        let joined = self.events(id);
        assert_eq!(joined[0]["type"], "joined", "{joined:?}");
        assert_eq!(joined[0]["epoch"], "e1", "{joined:?}");
    }

    fn events(&self, id: SessionId) -> Vec<Value> {
        let (_, outbox) = self.boxes.iter().find(|(s, _)| *s == id).unwrap();
        outbox
            .drain()
            .0
            .iter()
            .map(|f| serde_json::from_str(f).unwrap())
            .collect()
    }

    fn wanted(&self) -> Vec<String> {
        let mut wanted: Vec<String> = self.broker.record().wanted.iter().cloned().collect();
        wanted.sort();
        wanted
    }

    fn published(&self) -> Vec<(String, Value)> {
        self.broker
            .record()
            .published
            .iter()
            .map(|(c, f)| (c.clone(), serde_json::from_str(f).unwrap()))
            .collect()
    }
}

fn post(v: Value) -> Post<'static> {
    let body = serde_json::value::RawValue::from_string(v.to_string()).unwrap();
    Post::from(&*Box::leak(body))
}

#[test]
fn interest_follows_the_first_and_last_local_session() {
    let mut n = Node::new();
    assert!(n.wanted().is_empty());
    n.joined(1, "alice");
    assert_eq!(n.wanted(), ["wx:all", "wx:u:alice"]);
    n.joined(2, "alice");
    n.joined(3, "bob");
    n.router.subscribe(1, "room", false, None, None).unwrap();
    n.router.subscribe(3, "room", false, None, None).unwrap();
    n.pump();
    assert_eq!(
        n.wanted(),
        ["wx:all", "wx:g:room", "wx:u:alice", "wx:u:bob"]
    );
    n.router.unsubscribe(1, "room", None).unwrap();
    n.router.leave(3);
    assert_eq!(n.wanted(), ["wx:all", "wx:u:alice"]);
    n.router.leave(1);
    assert_eq!(
        n.wanted(),
        ["wx:all", "wx:u:alice"],
        "alice has a session left"
    );
    n.router.leave(2);
    assert!(n.wanted().is_empty());
    // Each change told once (the memory broker asserts no repeats).
    assert_eq!(n.broker.record().changes.len(), 8);
}

#[test]
fn group_and_direct_messages_go_to_redis_for_a_number_and_broadcasts_as_they_are() {
    let mut n = Node::new();
    n.joined(1, "alice");
    n.joined(2, "bob");
    n.router.subscribe(2, "room", false, None, None).unwrap();
    n.pump();
    n.events(2);
    let alice = Sender::Session(1);

    let out = n.router.publish(&alice, "room", post(json!(1))).unwrap();
    assert!(
        out.cluster && out.delivered == 1,
        "bob, when Redis hands it back: {out:?}"
    );
    assert!(n.events(2).is_empty(), "not before Redis numbered it");
    let out = n.router.send(&alice, "carol", post(json!(2))).unwrap();
    assert!(
        out.cluster && out.delivered == 0 && !out.stored,
        "nobody here: {out:?}"
    );
    let out = n.router.broadcast(&alice, post(json!(3))).unwrap();
    assert!(out.cluster && out.delivered == 1, "{out:?}");
    // A group with no member here still goes to the others.
    let out = n
        .router
        .publish(&Sender::Server("system".into()), "empty", post(json!(4)))
        .unwrap();
    assert!(out.cluster && out.delivered == 0, "{out:?}");

    // The broadcast went as it is, and bob has it at once.
    let published = n.published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].0, "wx:all");
    assert!(published[0].1.get("offset").is_none());
    assert_eq!(n.events(2), [published[0].1.clone()]);
    let channels: Vec<String> = n
        .broker
        .record()
        .numbered
        .iter()
        .map(|(c, ..)| c.clone())
        .collect();
    assert_eq!(channels, ["wx:g:room", "wx:u:carol", "wx:g:empty"]);

    // Redis numbers them and hands back what this node hears: bob gets room's #1.
    n.echo();
    let got = n.events(2);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0]["body"].clone(), got[0]["offset"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(
        n.router.stats().delivered.group,
        1,
        "counted once, when delivered"
    );
}

#[test]
fn while_redis_is_down_messages_reach_this_nodes_sessions_unnumbered() {
    let mut n = Node::new();
    n.joined(1, "alice");
    n.joined(2, "bob");
    n.router.subscribe(2, "room", false, None, None).unwrap();
    n.pump();
    n.events(2);
    n.broker.record().down = true;
    let out = n
        .router
        .publish(&Sender::Session(1), "room", post(json!("x")))
        .unwrap();
    assert!(!out.cluster && out.delivered == 1, "{out:?}");
    let got = n.events(2);
    assert_eq!(got[0]["body"], "x");
    assert!(got[0].get("offset").is_none(), "{got:?}");
    assert!(n.broker.record().numbered.is_empty());
}

#[test]
fn a_recovering_subscriber_gets_the_replay_then_the_reply_then_what_is_new_once() {
    let mut n = Node::new();
    n.joined(1, "alice");
    n.joined(2, "bob");
    n.router.subscribe(1, "room", false, None, None).unwrap();
    n.pump();
    n.events(1);
    let alice = Sender::Session(1);
    for i in 1..=3 {
        n.router.publish(&alice, "room", post(json!(i))).unwrap();
    }
    n.echo();
    assert_eq!(n.events(1).len(), 3);
    // bob saw up to 1, and subscribes while 4 and 5 are published: 4 is numbered before
    // Redis answers bob's read (so in the replay, and handed back while bob is held), 5
    // after it.
    let since = Position {
        epoch: "e1".into(),
        offset: 1,
    };
    n.router
        .subscribe(2, "room", false, None, Some(&since))
        .unwrap();
    n.router.publish(&alice, "room", post(json!(4))).unwrap();
    n.number();
    assert!(n.events(2).is_empty(), "held");
    n.echo(); // 4 reaches bob's node before the answer: held
    n.pump(); // the answer: 2, 3, 4, then subscribed; the held 4 is dropped
    n.router.publish(&alice, "room", post(json!(5))).unwrap();
    n.echo();
    let got = n.events(2);
    let seen: Vec<String> = got
        .iter()
        .map(|e| match e["type"].as_str() {
            Some("message") => format!("m{}", e["offset"]),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(seen, ["m2", "m3", "m4", "Some(\"subscribed\")", "m5"]);
    let subscribed = &got[3];
    assert_eq!(
        (
            subscribed["recovered"].clone(),
            subscribed["offset"].clone()
        ),
        (json!(true), json!(4))
    );
    // A position of another epoch is not recovered, and says where the stream is.
    n.router.unsubscribe(2, "room", None).unwrap();
    let other = Position {
        epoch: "old".into(),
        offset: 1,
    };
    n.router
        .subscribe(2, "room", false, None, Some(&other))
        .unwrap();
    n.pump();
    let got = n.events(2);
    let subscribed = got.iter().find(|e| e["type"] == "subscribed").unwrap();
    assert_eq!(subscribed["recovered"], false, "{subscribed}");
    assert_eq!(subscribed["offset"], 5, "{subscribed}");
}

#[test]
fn a_failed_read_answers_without_a_position_and_a_reload_reads_redis() {
    let mut n = Node::new();
    n.joined(1, "alice");
    n.router
        .subscribe(
            1,
            "room",
            false,
            Some(&crate::protocol::RequestId::UInt(9)),
            None,
        )
        .unwrap();
    let ticket = n.broker.record().reads.last().unwrap().ticket;
    n.broker.record().reads.clear();
    n.router.caught(ticket, Err("Redis is unreachable"));
    let got = n.events(1);
    assert_eq!(got[0]["type"], "subscribed", "{got:?}");
    assert!(got[0].get("epoch").is_none(), "{got:?}");
    for i in 1..=3 {
        n.router
            .publish(&Sender::Server("s".into()), "room", post(json!(i)))
            .unwrap();
    }
    n.echo();
    n.events(1);
    n.router.group_history(1, "room", 2, None).unwrap();
    n.pump();
    let got = n.events(1);
    assert_eq!(got[0]["type"], "history", "{got:?}");
    let bodies: Vec<Value> = got[0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].clone())
        .collect();
    assert_eq!(bodies, [json!(2), json!(3)]);
}

#[test]
fn messages_from_other_nodes_reach_local_sessions_only_on_their_route() {
    let mut n = Node::new();
    n.joined(1, "alice");
    n.joined(2, "bob");
    n.router.subscribe(2, "room", false, None, None).unwrap();
    n.pump();
    n.events(2);
    let frame = bytestring::ByteString::from_static(r#"{"type":"message","body":1}"#);
    assert_eq!(
        n.router
            .deliver_remote(Route::Group("room"), &frame, None)
            .delivered,
        1
    );
    assert_eq!(
        n.router
            .deliver_remote(Route::User("alice"), &frame, None)
            .delivered,
        1
    );
    assert_eq!(
        n.router
            .deliver_remote(Route::User("nobody"), &frame, None)
            .delivered,
        0
    );
    assert_eq!(
        n.router
            .deliver_remote(Route::Group("other"), &frame, None)
            .delivered,
        0
    );
    assert_eq!(
        n.router
            .deliver_remote(Route::Everyone, &frame, None)
            .delivered,
        2
    );
    assert_eq!(n.events(1).len(), 2);
    assert_eq!(n.events(2).len(), 2);
    assert!(n.published().is_empty(), "never handed on again");
    let stats = n.router.stats();
    assert_eq!(
        (
            stats.delivered.group,
            stats.delivered.direct,
            stats.delivered.broadcast
        ),
        (1, 1, 2)
    );
}

#[test]
fn a_read_follows_the_subscription_it_depends_on() {
    let mut n = Node::new();
    n.joined(1, "alice");
    n.broker.record().order.clear();
    n.router.subscribe(1, "room", false, None, None).unwrap();
    assert_eq!(n.broker.record().order, ["+wx:g:room", "read wx:g:room"]);
    n.pump();
    // A join: the user's channel, then the read of its stream.
    let outbox = Arc::new(Outbox::new(1 << 20));
    n.router.connect(2, outbox.clone());
    n.boxes.push((2, outbox));
    n.broker.record().order.clear();
    n.router
        .join(2, "bob", Grant::all(), false, None, None)
        .unwrap();
    assert_eq!(n.broker.record().order, ["+wx:u:bob", "read wx:u:bob"]);
}

#[test]
fn a_member_subscribing_again_loses_nothing_that_arrives_meanwhile() {
    let mut n = Node::new();
    n.joined(1, "alice");
    n.joined(2, "bob");
    n.router.subscribe(2, "room", false, None, None).unwrap();
    n.pump();
    n.events(2);
    // bob asks again (say, for presence); #1 is numbered and handed back before Redis
    // answers his read, which sees it (top 1): he still gets it, after the reply.
    n.router.subscribe(2, "room", true, None, None).unwrap();
    n.router
        .publish(&Sender::Session(1), "room", post(json!("one")))
        .unwrap();
    n.echo();
    n.pump();
    let got = n.events(2);
    let kinds: Vec<&str> = got.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["subscribed", "message"], "{got:?}");
    assert_eq!(got[0]["offset"], 1);
    assert_eq!(got[1]["body"], "one");
}

//! The router in cluster mode, with a [`MemoryBroker`] standing in for Redis: what it
//! tells the other nodes, what it subscribes to, and what it does with their messages.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{MemoryBroker, Route};
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
}

impl Node {
    fn new() -> Node {
        let broker = MemoryBroker::new("wx");
        Node {
            router: Router::new(10, Policies::standard(), [Arc::from("stock")])
                .with_broker(Box::new(broker.clone())),
            broker,
            boxes: Vec::new(),
        }
    }

    fn joined(&mut self, id: SessionId, name: &str) {
        let outbox = Arc::new(Outbox::new(1 << 20));
        self.router.connect(id, outbox.clone());
        self.boxes.push((id, outbox));
        self.router
            .join(id, name, Grant::all(), false, None, None)
            .unwrap();
        self.events(id);
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
fn every_message_is_handed_on_once_unnumbered() {
    let mut n = Node::new();
    n.joined(1, "alice");
    n.joined(2, "bob");
    n.router.subscribe(2, "room", false, None, None).unwrap();
    n.events(2);
    let alice = Sender::Session(1);

    let out = n.router.publish(&alice, "room", post(json!(1))).unwrap();
    assert!(out.cluster && out.delivered == 1, "{out:?}");
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

    let published = n.published();
    let channels: Vec<&str> = published.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        channels,
        ["wx:g:room", "wx:u:carol", "wx:all", "wx:g:empty"]
    );
    for (i, (_, frame)) in published.iter().enumerate() {
        assert_eq!(frame["body"], json!(i + 1));
        assert!(frame.get("offset").is_none(), "{frame}");
    }
    // What bob got locally is the frame the others got.
    let got = n.events(2);
    assert_eq!(got[0], published[0].1);
    assert_eq!(got[1], published[2].1);
}

#[test]
fn messages_from_other_nodes_reach_local_sessions_only_on_their_route() {
    let mut n = Node::new();
    n.joined(1, "alice");
    n.joined(2, "bob");
    n.router.subscribe(2, "room", false, None, None).unwrap();
    n.events(2);
    let frame = bytestring::ByteString::from_static(r#"{"type":"message","body":1}"#);
    assert_eq!(
        n.router
            .deliver_remote(Route::Group("room"), &frame)
            .delivered,
        1
    );
    assert_eq!(
        n.router
            .deliver_remote(Route::User("alice"), &frame)
            .delivered,
        1
    );
    assert_eq!(
        n.router
            .deliver_remote(Route::User("nobody"), &frame)
            .delivered,
        0
    );
    assert_eq!(
        n.router
            .deliver_remote(Route::Group("other"), &frame)
            .delivered,
        0
    );
    assert_eq!(
        n.router.deliver_remote(Route::Everyone, &frame).delivered,
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
fn recovery_is_refused_while_history_is_per_node() {
    let mut n = Node::new();
    n.joined(1, "alice");
    let since = Position {
        epoch: "whatever".into(),
        offset: 0,
    };
    n.router
        .subscribe(1, "room", false, None, Some(&since))
        .unwrap();
    let subscribed = &n.events(1)[0];
    assert_eq!(subscribed["recovered"], false, "{subscribed}");
    assert_eq!(
        subscribed["offset"], 0,
        "the local stream's position: {subscribed}"
    );
}

//! History and recovery through the router: offsets on messages, positions in replies,
//! the replay before `subscribed`, stored direct messages, all on a clock the test sets.

use std::cell::Cell;
use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::*;

thread_local! {
    static NOW: Cell<u64> = const { Cell::new(1_000_000) };
}

fn clock() -> u64 {
    NOW.with(|n| n.get())
}

fn advance(ms: u64) {
    NOW.with(|n| n.set(n.get() + ms));
}

struct Rig {
    router: Router,
    boxes: HashMap<SessionId, Arc<Outbox>>,
}

const KEEP: Retention = Retention {
    size: 5,
    ttl: Duration::from_secs(60),
};

impl Rig {
    fn new() -> Rig {
        Rig::with_replay_budget(1 << 20)
    }

    fn with_replay_budget(max_replay_bytes: usize) -> Rig {
        let policies = Policies::standard().with_default_retention(KEEP);
        let recall = Recall {
            history: Box::new(MemoryHistory::new(usize::MAX, KEEP.ttl)),
            users: KEEP,
            max_replay_bytes,
            clock,
        };
        Rig {
            router: Router::new(10, policies, [Arc::from("stock")]).with_recall(recall),
            boxes: HashMap::new(),
        }
    }

    fn connect(&mut self, id: SessionId) {
        let outbox = Arc::new(Outbox::new(1 << 20));
        self.router.connect(id, outbox.clone());
        self.boxes.insert(id, outbox);
    }

    fn join(&mut self, id: SessionId, name: &str, since: Option<&Position>) -> Vec<Value> {
        self.connect(id);
        self.router
            .join(id, name, Grant::all(), false, None, since)
            .expect("joins");
        self.events(id)
    }

    fn subscribe(&mut self, id: SessionId, group: &str, since: Option<&Position>) -> Vec<Value> {
        self.router
            .subscribe(id, group, false, None, since)
            .expect("subscribes");
        self.events(id)
    }

    fn publish(&mut self, id: SessionId, group: &str, text: &str) {
        let body = body(json!(text));
        self.router
            .publish(&Sender::Session(id), group, Post::from(&*body))
            .expect("publishes");
    }

    fn events(&self, id: SessionId) -> Vec<Value> {
        self.boxes[&id]
            .drain()
            .0
            .iter()
            .map(|f| serde_json::from_str(f).unwrap())
            .collect()
    }
}

fn body(v: Value) -> Box<RawValue> {
    RawValue::from_string(v.to_string()).unwrap()
}

/// The position a `joined` or `subscribed` reply gives.
fn position(reply: &Value) -> Position {
    Position {
        epoch: reply["epoch"].as_str().expect("an epoch").into(),
        offset: reply["offset"].as_u64().expect("an offset"),
    }
}

fn bodies(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .filter(|e| e["type"] == "message")
        .map(|e| e["body"].as_str().unwrap_or("?"))
        .collect()
}

#[test]
fn a_subscriber_back_with_its_position_gets_what_it_missed_then_subscribed_then_live() {
    let mut r = Rig::new();
    r.join(1, "alice", None);
    r.join(2, "bob", None);
    let sub = r.subscribe(2, "room", None);
    let at = position(&sub[0]);
    assert_eq!(at.offset, 0);
    r.publish(1, "room", "one");
    let live = r.events(2);
    assert_eq!(
        (live[0]["offset"].as_u64(), bodies(&live)),
        (Some(1), vec!["one"])
    );
    let seen = Position { offset: 1, ..at };
    // Bob's connection drops; alice goes on.
    r.router.leave(2);
    r.publish(1, "room", "two");
    r.publish(1, "room", "three");
    r.join(3, "bob", None);
    let back = r.subscribe(3, "room", Some(&seen));
    assert_eq!(bodies(&back), ["two", "three"]);
    let offsets: Vec<_> = back.iter().filter_map(|e| e["offset"].as_u64()).collect();
    assert_eq!(
        offsets,
        [2, 3, 3],
        "the replay's, then `subscribed`'s position"
    );
    let reply = back.last().unwrap();
    assert_eq!(
        (reply["type"].as_str(), reply["recovered"].as_bool()),
        (Some("subscribed"), Some(true))
    );
    r.publish(1, "room", "four");
    assert_eq!(r.events(3)[0]["offset"], 4, "then live, without a gap");
}

#[test]
fn recovery_that_cannot_be_complete_says_so_and_replays_nothing() {
    let mut r = Rig::new();
    r.join(1, "alice", None);
    let at = position(&r.subscribe(1, "room", None)[0]);
    for i in 0..8 {
        r.publish(1, "room", &format!("m{i}")); // keeps the last 5
    }
    r.events(1);
    let cases = [
        Position {
            offset: 1,
            ..at.clone()
        }, // fell out of the window
        Position {
            offset: 9,
            ..at.clone()
        }, // in the future
        Position {
            epoch: "other".into(),
            offset: 8,
        }, // another epoch
    ];
    for (i, since) in cases.iter().enumerate() {
        let id = 10 + i as SessionId;
        r.join(id, &format!("u{i}"), None);
        let got = r.subscribe(id, "room", Some(since));
        assert_eq!(got.len(), 1, "{since:?}: {got:?}");
        assert_eq!(got[0]["recovered"], false);
        assert_eq!(
            position(&got[0]),
            Position {
                offset: 8,
                ..at.clone()
            }
        );
    }
    // The newest held are what a client that could not recover reloads.
    r.router.group_history(10, "room", 3, None).unwrap();
    let page = r.events(10);
    assert_eq!(page[0]["offset"], 8);
    let held: Vec<_> = page[0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].clone())
        .collect();
    assert_eq!(held, [json!("m5"), json!("m6"), json!("m7")]);
    // Past the ttl nothing is held any more: an old position cannot recover.
    advance(60_001);
    r.join(20, "late", None);
    let got = r.subscribe(20, "room", Some(&Position { offset: 7, ..at }));
    assert_eq!(got[0]["recovered"], false);
}

#[test]
fn a_replay_bigger_than_the_budget_is_refused_rather_than_closing_the_session() {
    let mut r = Rig::with_replay_budget(300);
    r.join(1, "alice", None);
    let at = position(&r.subscribe(1, "room", None)[0]);
    r.router.leave(1);
    r.join(2, "bob", None);
    for _ in 0..3 {
        r.publish(2, "room", &"x".repeat(120));
    }
    r.join(3, "alice", None);
    let got = r.subscribe(3, "room", Some(&at));
    assert_eq!((got.len(), &got[0]["recovered"]), (1, &json!(false)));
}

#[test]
fn direct_messages_are_numbered_per_recipient_and_kept_while_it_is_away() {
    let mut r = Rig::new();
    r.join(1, "alice", None);
    let joined = r.join(2, "bob", None);
    let at = position(&joined[0]);
    let send = |r: &mut Rig, text: &str| {
        let body = body(json!(text));
        r.router
            .send(&Sender::Session(1), "bob", Post::from(&*body))
    };
    let out = send(&mut r, "hi").unwrap();
    assert_eq!((out.delivered, out.stored), (1, false));
    assert_eq!(r.events(2)[0]["offset"], 1);
    r.router.leave(2);
    // Away, but seen within the window: kept, and the ack says so.
    let out = send(&mut r, "are you there").unwrap();
    assert_eq!((out.delivered, out.stored), (0, true));
    advance(30_000);
    send(&mut r, "still?").unwrap();
    // Back with the position of the last one seen: the two missed, then `joined`.
    let back = r.join(
        3,
        "bob",
        Some(&Position {
            offset: 1,
            ..at.clone()
        }),
    );
    assert_eq!(bodies(&back), ["are you there", "still?"]);
    let reply = back.last().unwrap();
    assert_eq!(
        (
            reply["type"].as_str(),
            reply["recovered"].as_bool(),
            reply["offset"].as_u64()
        ),
        (Some("joined"), Some(true), Some(3))
    );
    // Not seen for longer than the window: not found, as before.
    r.router.leave(3);
    advance(60_001);
    let e = send(&mut r, "gone").unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
    // A name never seen: not found.
    let body = body(json!(1));
    let e = r
        .router
        .send(&Sender::Session(1), "nobody", Post::from(&*body))
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
}

#[test]
fn a_group_with_no_member_now_keeps_messages_for_those_away() {
    let mut r = Rig::new();
    r.join(1, "alice", None);
    let at = position(&r.subscribe(1, "room", None)[0]);
    r.router.leave(1); // the room is now empty
    r.join(2, "bob", None);
    r.publish(2, "room", "while you were out");
    r.join(3, "alice", None);
    assert_eq!(
        bodies(&r.subscribe(3, "room", Some(&at))),
        ["while you were out"]
    );
}

#[test]
fn market_groups_have_no_stream() {
    let mut r = Rig::new();
    r.connect(1);
    let since = Position {
        epoch: "e".into(),
        offset: 3,
    };
    let got = r.subscribe(1, "stock", Some(&since));
    assert!(
        got[0].get("epoch").is_none() && got[0].get("recovered").is_none(),
        "{got:?}"
    );
    let e = r.router.group_history(1, "stock", 10, None).unwrap_err();
    assert_eq!(e.code, ErrorCode::BadRequest);
}

#[test]
fn the_sweep_keeps_the_streams_of_live_groups_and_users() {
    let mut r = Rig::new();
    r.join(1, "alice", None);
    let at = position(&r.subscribe(1, "room", None)[0]);
    advance(3_600_000);
    r.router.sweep_history();
    assert_eq!(
        r.router.stats().history.streams,
        2,
        "room and alice, both live"
    );
    r.router.leave(1);
    advance(3_600_000);
    r.router.sweep_history();
    assert_eq!(r.router.stats().history.streams, 0);
    r.join(2, "alice", None);
    let got = r.subscribe(2, "room", Some(&at));
    assert_eq!(got[0]["recovered"], false, "forgotten: a new epoch");
}

#[test]
fn publishing_to_ever_new_groups_keeps_a_bounded_number_of_streams() {
    let mut r = Rig::new();
    r.join(1, "alice", None);
    // A small limit: 1 MiB of messages, so at most 1024 dormant streams.
    r.router.recall.history = Box::new(MemoryHistory::new(1 << 20, KEEP.ttl));
    for g in 0..5000 {
        r.publish(1, &format!("spam.{g}"), "x");
        advance(1);
    }
    let streams = r.router.stats().history.streams;
    assert!(streams <= 1024 + 1, "{streams} streams");
    // A group whose member left is dormant too, and goes after the newer ones arrive.
    r.subscribe(1, "room", None);
    r.publish(1, "room", "kept a while");
    r.router.unsubscribe(1, "room", None).unwrap();
    for g in 0..2000 {
        r.publish(1, &format!("more.{g}"), "x");
        advance(1);
    }
    let (_, pos) = r.router.recall.history.since(
        &StreamKey::group("room"),
        &Position {
            epoch: "x".into(),
            offset: 0,
        },
        10,
        clock(),
    );
    assert_eq!(pos.offset, 0, "forgotten (it was at 1), made afresh");
}

#[test]
fn a_reload_keeps_the_newest_that_fit_an_outbox() {
    let mut r = Rig::with_replay_budget(800);
    r.join(1, "alice", None);
    r.subscribe(1, "room", None);
    for i in 0..3 {
        r.publish(1, "room", &format!("{i}{}", "x".repeat(200)));
    }
    r.events(1);
    r.router.group_history(1, "room", 100, None).unwrap();
    let page = r.events(1);
    let held: Vec<_> = page[0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap().chars().next().unwrap())
        .collect();
    assert_eq!(
        held,
        ['1', '2'],
        "two frames of ~330 bytes fit 800, the newest"
    );
    // The server API's reading is cut the same way.
    let crate::router::Later::Now(frame) = r.router.group_messages("room", 100) else {
        panic!("a single node answers at once");
    };
    let frame = frame.unwrap();
    let page: Value = serde_json::from_str(&frame).unwrap();
    assert_eq!(page["messages"].as_array().unwrap().len(), 2);
}

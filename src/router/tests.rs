//! The routing rules, called directly: stand-in outboxes, no actors, no System.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::*;
use crate::policy::{GroupPolicy, Pattern, CHAT, MARKET};
use crate::protocol::MAX_PAGE;

/// A router and the outboxes of its sessions.
struct Rig {
    router: Router,
    boxes: HashMap<SessionId, Arc<Outbox>>,
}

impl Rig {
    fn new() -> Rig {
        Rig::with(
            Policies::standard(),
            ["stock", "stock.600519", CLASSIC_FEED],
        )
    }

    fn with<const N: usize>(policies: Policies, feeds: [&str; N]) -> Rig {
        Rig {
            router: Router::new(10, policies, feeds.map(Arc::from)),
            boxes: HashMap::new(),
        }
    }

    fn connect_with_limit(&mut self, id: SessionId, limit: usize) {
        let outbox = Arc::new(Outbox::new(limit));
        self.router.connect(id, outbox.clone());
        self.boxes.insert(id, outbox);
    }

    fn connect(&mut self, id: SessionId) {
        self.connect_with_limit(id, 1 << 20);
    }

    /// A session joined as `name` with every group allowed, its `joined` taken.
    fn joined(&mut self, id: SessionId, name: &str) {
        self.connect(id);
        self.router
            .join(id, name, Grant::all(), false, None, None)
            .expect("joins");
        self.events(id);
    }

    /// Everything queued for a session, decoded.
    fn events(&self, id: SessionId) -> Vec<Value> {
        self.boxes[&id]
            .drain()
            .0
            .iter()
            .map(|f| serde_json::from_str(f).unwrap())
            .collect()
    }

    fn subscribe(
        &mut self,
        id: SessionId,
        group: &str,
        presence: bool,
    ) -> Result<Outcome, ErrorCode> {
        self.router
            .subscribe(id, group, presence, None, None)
            .map_err(|e| e.code)
    }
}

fn body(v: Value) -> Box<RawValue> {
    RawValue::from_string(v.to_string()).unwrap()
}

/// A posted message with no `mid`; leaked, which a unit test can afford, so that it
/// outlives the statement.
fn post(v: Value) -> Post<'static> {
    Post::from(&*Box::leak(body(v)))
}

fn server() -> Sender {
    Sender::Server("system".into())
}

#[test]
fn join_confirms_once_and_checks_the_name() {
    let mut r = Rig::new();
    r.connect(1);
    let id = RequestId::Int(5);
    r.router
        .join(1, "alice", Grant::all(), false, Some(&id), None)
        .unwrap();
    let mut joined = r.events(1);
    // The position of the user's stream of direct messages: a new one, empty.
    let epoch = joined[0]["epoch"].take();
    assert!(epoch.as_str().is_some_and(|e| e.len() == 8), "{epoch}");
    assert_eq!(
        joined,
        [json!({"type":"joined","id":5,"name":"alice","session":1,"epoch":null,"offset":0})]
    );
    let again = r.router.join(1, "alice", Grant::all(), false, None, None);
    assert_eq!(again.unwrap_err().code, ErrorCode::AlreadyJoined);
    r.connect(2);
    let bad = r.router.join(2, " x", Grant::all(), false, None, None);
    assert_eq!(bad.unwrap_err().code, ErrorCode::InvalidName);
    assert!(r.events(2).is_empty(), "an error is the caller's to send");
}

#[test]
fn a_publish_reaches_every_member_session_and_counts_them() {
    let mut r = Rig::new();
    r.joined(1, "alice");
    r.joined(2, "bob");
    r.joined(3, "bob");
    r.joined(4, "carol");
    for id in [1, 2, 3] {
        r.subscribe(id, "room", false).unwrap();
        r.events(id);
    }
    let out = r
        .router
        .publish(&Sender::Session(4), "room", post(json!({"t":"hi"})))
        .unwrap();
    assert_eq!(out.delivered, 3, "a sender need not be a member");
    let got = r.events(2);
    assert_eq!(got.len(), 1);
    assert_eq!(
        (
            &got[0]["kind"],
            &got[0]["from"],
            &got[0]["group"],
            &got[0]["body"]
        ),
        (
            &json!("group"),
            &json!("carol"),
            &json!("room"),
            &json!({"t":"hi"})
        )
    );
    assert!(r.events(4).is_empty());
    r.events(1);
    r.events(3);
    // From the server, under its own name, with no session at all.
    let out = r.router.publish(&server(), "room", post(json!(1))).unwrap();
    assert_eq!(out.delivered, 3);
    for id in [1, 2, 3] {
        let got = r.events(id);
        assert_eq!((got.len(), &got[0]["from"]), (1, &json!("system")));
    }
    // Nobody in the group, or no such group: nothing delivered, no error.
    assert_eq!(
        r.router
            .publish(&server(), "empty", post(json!(1)))
            .unwrap()
            .delivered,
        0
    );
    // A session must have joined; names are checked before anything else.
    r.connect(9);
    let e = r
        .router
        .publish(&Sender::Session(9), "room", post(json!(1)));
    assert_eq!(e.unwrap_err().code, ErrorCode::NotJoined);
    let e = r.router.publish(&server(), "a b", post(json!(1)));
    assert_eq!(e.unwrap_err().code, ErrorCode::InvalidGroup);
}

#[test]
fn the_senders_message_id_reaches_every_recipient() {
    let mut r = Rig::new();
    r.joined(1, "alice");
    r.joined(2, "bob");
    r.router.subscribe(2, "room", false, None, None).unwrap();
    let raw = body(json!({"text":"hi"}));
    let mid = Some("k3x9-17");
    r.router
        .send(&Sender::Session(1), "bob", Post::new(&raw, mid))
        .unwrap();
    r.router
        .broadcast(&Sender::Session(1), Post::new(&raw, mid))
        .unwrap();
    r.router
        .publish(&Sender::Session(1), "room", Post::new(&raw, mid))
        .unwrap();
    r.router.publish(&server(), "room", post(json!(1))).unwrap();
    let events = r.events(2);
    let mids: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "message")
        .map(|e| e.get("mid").cloned())
        .collect();
    assert_eq!(
        mids,
        [
            Some(json!("k3x9-17")),
            Some(json!("k3x9-17")),
            Some(json!("k3x9-17")),
            None
        ],
        "{events:?}"
    );
}

#[test]
fn a_direct_message_reaches_every_session_of_the_user() {
    let mut r = Rig::new();
    r.joined(1, "alice");
    r.joined(2, "bob");
    r.joined(3, "bob");
    let out = r
        .router
        .send(&Sender::Session(1), "bob", post(json!("hi")))
        .unwrap();
    assert_eq!(out.delivered, 2);
    for id in [2, 3] {
        let e = &r.events(id)[0];
        assert_eq!(
            (&e["from"], &e["to"], &e["kind"]),
            (&json!("alice"), &json!("bob"), &json!("direct"))
        );
    }
    // To oneself: the user's other session counts, the sending one does not.
    let me = r
        .router
        .send(&Sender::Session(2), "bob", post(json!(1)))
        .unwrap();
    assert_eq!(me.delivered, 1);
    assert_eq!((r.events(2).len(), r.events(3).len()), (1, 1));
    let e = r
        .router
        .send(&server(), "nobody", post(json!(1)))
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
    // A `to` that is no name is refused without being echoed.
    let huge = "x".repeat(10_000);
    let e = r.router.send(&server(), &huge, post(json!(1))).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidName);
    assert!(e.message.len() < 300);
}

#[test]
fn a_broadcast_reaches_joined_sessions_only() {
    let mut r = Rig::new();
    r.joined(1, "alice");
    r.joined(2, "bob");
    r.connect(3);
    let out = r
        .router
        .broadcast(&Sender::Session(2), post(json!(1)))
        .unwrap();
    assert_eq!(out.delivered, 1, "the sender's own copy is not counted");
    assert_eq!(r.events(1)[0]["kind"], "broadcast");
    assert_eq!(r.events(2)[0]["kind"], "broadcast", "but it arrives");
    assert!(r.events(3).is_empty());
    let out = r.router.broadcast(&server(), post(json!(2))).unwrap();
    assert_eq!(out.delivered, 2);
}

#[test]
fn market_groups_are_fed_by_the_server_and_watched_anonymously() {
    let mut r = Rig::new();
    r.connect(1);
    // Anyone may watch, without joining; the snapshot follows the confirmation.
    let frame = ByteString::from_static(r#"{"type":"quote","n":1}"#);
    r.router.publish_frame(&Arc::from("stock.600519"), &frame);
    assert_eq!(r.subscribe(1, "stock.600519", false).unwrap().members, 1);
    let events = r.events(1);
    assert_eq!(events[0]["type"], "subscribed");
    assert_eq!(events[1], json!({"type":"quote","n":1}));
    // A name under the market's rule that the server does not feed does not exist.
    assert_eq!(
        r.subscribe(1, "stock.NOPE", false),
        Err(ErrorCode::NotFound)
    );
    // Only the server publishes; nobody gets presence; names are not listed.
    r.joined(2, "bob");
    let e = r
        .router
        .publish(&Sender::Session(2), "stock", post(json!(1)));
    assert_eq!(e.unwrap_err().code, ErrorCode::Forbidden);
    assert_eq!(r.subscribe(2, "stock", true), Err(ErrorCode::Forbidden));
    r.subscribe(2, "stock", false).unwrap();
    let users = r
        .router
        .users(
            2,
            Some("stock"),
            &UsersPage {
                limit: 10,
                after: None,
            },
            None,
        )
        .unwrap();
    let users: Value = serde_json::from_str(&users).unwrap();
    assert_eq!((&users["users"], &users["count"]), (&json!([]), &json!(1)));
    // A token limited to other groups may still watch.
    r.connect(3);
    let limited: Grant = crate::auth::Verifier::new("s")
        .verify(
            Some(
                &crate::auth::mint(
                    "s",
                    "c",
                    std::time::Duration::from_secs(60),
                    Some(vec!["sales".into()]),
                )
                .unwrap(),
            ),
            "c",
        )
        .unwrap();
    r.router.join(3, "c", limited, false, None, None).unwrap();
    assert!(r.subscribe(3, "stock", false).is_ok());
    assert_eq!(r.subscribe(3, "hr", false), Err(ErrorCode::Forbidden));
}

#[test]
fn fed_groups_signal_demand_on_their_first_and_last_session() {
    let mut r = Rig::new();
    r.connect(1);
    r.connect(2);
    r.subscribe(1, "stock", false).unwrap();
    r.subscribe(2, "stock", false).unwrap();
    r.joined(3, "c");
    r.subscribe(3, "room", false).unwrap();
    let demand: Vec<Demand> = r.router.take_demand().collect();
    assert_eq!(
        demand,
        [Demand {
            group: "stock".into(),
            watched: true
        }]
    );
    assert_eq!(r.router.watched_feeds(), [Arc::<str>::from("stock")]);
    r.router.leave(1);
    assert_eq!(r.router.take_demand().count(), 0);
    r.router.unsubscribe(2, "stock", None).unwrap();
    let demand: Vec<Demand> = r.router.take_demand().collect();
    assert_eq!(
        demand,
        [Demand {
            group: "stock".into(),
            watched: false
        }]
    );
}

#[test]
fn the_classic_feed_and_classic_logins() {
    let mut r = Rig::new();
    r.connect(1);
    r.router.subscribe_classic_feed(1).unwrap();
    assert_eq!(
        r.router
            .pool()
            .group(CLASSIC_FEED)
            .map(|g| g.member_count()),
        Some(1)
    );
    // A classic name's groups, except those only the server publishes in.
    r.connect(2);
    r.router
        .join(2, "sales,stock,vip_dave", Grant::all(), true, None, None)
        .unwrap();
    assert!(r.router.pool().group("sales").is_some());
    assert!(r.router.pool().group("vip").is_some());
    assert_eq!(
        r.router.pool().group("stock").map(|g| g.member_count()),
        None
    );
}

#[test]
fn presence_fires_on_a_users_first_and_last_session() {
    let mut r = Rig::new();
    r.joined(1, "w");
    r.subscribe(1, "room", true).unwrap();
    assert_eq!(
        r.events(1)[1],
        json!({"type":"presence","group":"room","event":"join","name":"w"})
    );
    r.joined(2, "bob");
    r.joined(3, "bob");
    r.subscribe(2, "room", false).unwrap();
    r.subscribe(3, "room", false).unwrap();
    let arrivals: Vec<Value> = r.events(1);
    assert_eq!(
        arrivals,
        [json!({"type":"presence","group":"room","event":"join","name":"bob"})]
    );
    assert_eq!(r.router.leave(2).announced, 0, "bob is still there");
    assert_eq!(r.router.leave(3).announced, 1);
    assert_eq!(r.events(1)[0]["event"], "leave");
}

#[test]
fn a_late_join_is_announced_where_anonymous_sessions_may_watch_with_presence() {
    // A policy no standard group has, to show the pool's rule: an anonymous member that
    // joins later arrives then, and leaves once.
    let open_room = GroupPolicy {
        needs_join: false,
        ..CHAT
    };
    let policies = Policies::new(CHAT).with(Pattern::Prefix("open.".into()), open_room);
    let mut r = Rig::with(policies, []);
    r.joined(1, "w");
    r.subscribe(1, "open.1", true).unwrap();
    r.events(1);
    r.connect(2);
    assert_eq!(
        r.subscribe(2, "open.1", true),
        Err(ErrorCode::NotJoined),
        "presence names users"
    );
    r.subscribe(2, "open.1", false).unwrap();
    assert!(r.events(1).is_empty(), "an anonymous arrival has no name");
    r.router
        .join(2, "late", Grant::all(), false, None, None)
        .unwrap();
    assert_eq!(
        r.events(1),
        [json!({"type":"presence","group":"open.1","event":"join","name":"late"})]
    );
    r.router.leave(2);
    assert_eq!(r.events(1)[0]["event"], "leave");
}

#[test]
fn a_slow_consumer_is_cut_off_and_its_departure_announced() {
    let mut r = Rig::new();
    r.joined(1, "w");
    r.subscribe(1, "room", true).unwrap();
    r.connect_with_limit(2, 300);
    r.router
        .join(2, "slow", Grant::all(), false, None, None)
        .unwrap();
    r.subscribe(2, "room", false).unwrap();
    r.events(1);
    let mut refused = 0;
    for _ in 0..10 {
        refused += r
            .router
            .publish(&server(), "room", post(json!("x".repeat(60))))
            .unwrap()
            .refused;
    }
    assert_eq!(refused, 1);
    assert_eq!(r.boxes[&2].close_reason(), Some(CloseReason::SlowConsumer));
    assert!(r
        .events(1)
        .contains(&json!({"type":"presence","group":"room","event":"leave","name":"slow"})));
    assert_eq!(r.router.stats().slow_consumers, 1);
    assert_eq!(r.router.stats().sessions, 1);
}

#[test]
fn users_are_paged_and_limited_tokens_see_only_their_groups() {
    let mut r = Rig::new();
    for i in 0..25 {
        r.joined(i, &format!("u{i:02}"));
    }
    let page = |after: Option<&str>, limit| UsersPage {
        limit,
        after: after.map(Into::into),
    };
    let first: Value =
        serde_json::from_str(&r.router.users(0, None, &page(None, 10), None).unwrap()).unwrap();
    assert_eq!(
        (&first["count"], &first["next"]),
        (&json!(25), &json!("u09"))
    );
    let last: Value = serde_json::from_str(
        &r.router
            .users(0, None, &page(Some("u19"), MAX_PAGE), None)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["users"].as_array().unwrap().len(), 5);
    assert!(last.get("next").is_none());
    // A limited token: per group only, and only its groups.
    r.connect(99);
    let grant = crate::auth::Verifier::new("s")
        .verify(
            Some(
                &crate::auth::mint(
                    "s",
                    "ltd",
                    std::time::Duration::from_secs(60),
                    Some(vec!["sales".into()]),
                )
                .unwrap(),
            ),
            "ltd",
        )
        .unwrap();
    r.router.join(99, "ltd", grant, false, None, None).unwrap();
    let e = r.router.users(99, None, &page(None, 10), None).unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden);
    let e = r
        .router
        .users(99, Some("hr"), &page(None, 10), None)
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden);
    assert!(r
        .router
        .users(99, Some("sales"), &page(None, 10), None)
        .is_ok());
}

#[test]
fn each_beat_visits_one_set_of_sessions() {
    let mut r = Rig::new();
    for id in 0..32 {
        r.connect(id);
    }
    let beaten = |r: &Rig| -> Vec<SessionId> {
        let mut ids: Vec<SessionId> = r
            .boxes
            .iter()
            .filter(|(_, ob)| ob.drain_into(&mut Default::default()).beat)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    };
    for set in 0..crate::pool::SESSION_SETS {
        r.router.beat(set);
        let expected: Vec<SessionId> = (0..32).filter(|id| (id % 8) as usize == set).collect();
        assert_eq!(beaten(&r), expected, "set {set}");
    }
}

#[test]
fn kick_closes_every_session_of_a_user_and_nobody_else() {
    let mut r = Rig::new();
    r.joined(1, "bob");
    r.joined(2, "bob");
    r.joined(3, "alice");
    assert_eq!(r.router.kick("bob", CloseReason::Unauthorized), 2);
    assert_eq!(r.boxes[&1].close_reason(), Some(CloseReason::Unauthorized));
    assert_eq!(r.boxes[&2].close_reason(), Some(CloseReason::Unauthorized));
    assert_eq!(r.boxes[&3].close_reason(), None);
    assert_eq!(r.router.stats().users, 1);
    assert_eq!(r.router.kick("nobody", CloseReason::Unauthorized), 0);
}

#[test]
fn the_market_policy_is_what_the_standard_table_gives_stock() {
    assert_eq!(Policies::standard().of("stock.600519"), MARKET);
}

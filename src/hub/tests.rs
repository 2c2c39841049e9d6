//! Actor-level tests of the hub: stand-in sessions are bare outboxes whose wake-ups go
//! to a sink, and each test reads what the hub queued for them. No network.

use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::*;
use crate::auth::Grant;
use crate::market::{default_symbols, ModelConfig};
use crate::outbox::Outbox;
use crate::outbox::Wake;
use crate::policy::Policies;
use crate::pool::SessionId;
use crate::protocol::{Body, RequestId, UsersPage, MAX_PAGE};
use crate::testkit::paused_system;
use crate::ticker::{Advance, IsRunning, Market, Ticker};

/// A message body, as a session would pass it on.
fn body(v: Value) -> Body {
    RawValue::from_string(v.to_string()).unwrap()
}

/// Stands in for a session's actor: takes wake-ups and does nothing.
struct Sink;
impl Actor for Sink {
    type Context = Context<Self>;
}
impl Handler<Wake> for Sink {
    type Result = ();
    fn handle(&mut self, _: Wake, _: &mut Context<Self>) {}
}

/// A stand-in session.
struct Client {
    id: SessionId,
    outbox: Arc<Outbox>,
    hub: Addr<Hub>,
    /// Events read from the outbox but not yet looked at.
    unread: std::cell::RefCell<std::collections::VecDeque<Value>>,
}

impl Client {
    fn caller(&self, id: Option<i64>) -> Caller {
        Caller::new(self.id, id.map(RequestId::Int))
    }

    /// Everything the hub queued for this session so far, decoded.
    async fn take(&self) -> Vec<Value> {
        settle(&self.hub).await;
        let mut unread = self.unread.borrow_mut();
        unread.extend(
            self.outbox
                .drain()
                .0
                .iter()
                .map(|f| serde_json::from_str::<Value>(f).unwrap()),
        );
        unread.drain(..).collect()
    }

    /// The oldest event not yet looked at; later ones stay unread.
    async fn next(&self) -> Value {
        let mut events = self.take().await;
        assert!(!events.is_empty(), "expected an event");
        let first = events.remove(0);
        self.unread.borrow_mut().extend(events);
        first
    }

    /// The one event queued for this session.
    async fn one(&self) -> Value {
        let mut events = self.take().await;
        assert_eq!(events.len(), 1, "expected one event, got {events:?}");
        events.remove(0)
    }

    /// Sends a join (typed, or the classic `{"name":...}` login) without waiting.
    fn send_join(&self, id: Option<i64>, name: &str, classic: bool) {
        self.hub.do_send(Join {
            caller: self.caller(id),
            name: name.into(),
            classic,
            grant: Grant::all(),
            since: None,
        });
    }

    async fn join(&self, name: &str) -> Value {
        self.send_join(None, name, false);
        self.one().await
    }

    async fn subscribe(&self, group: &str, presence: bool) -> Value {
        self.hub.do_send(Subscribe {
            caller: self.caller(None),
            group: group.into(),
            presence,
            since: None,
        });
        self.next().await
    }

    async fn unsubscribe(&self, group: &str) -> Value {
        self.hub.do_send(Unsubscribe {
            caller: self.caller(None),
            group: group.into(),
        });
        self.next().await
    }

    fn publish(&self, group: &str, payload: Value) {
        self.hub.do_send(Publish {
            caller: self.caller(Some(1)),
            group: group.into(),
            body: body(payload),
            mid: None,
        });
    }

    fn disconnect(&self) {
        self.hub.do_send(Disconnect { session: self.id });
    }
}

/// Waits until the hub has handled everything sent to it so far (its mailbox is FIFO).
async fn settle(hub: &Addr<Hub>) -> Stats {
    hub.send(GetStats).await.unwrap()
}

fn config(max_groups: usize, feeds: Vec<Arc<str>>) -> HubConfig {
    HubConfig {
        max_groups,
        policies: Policies::standard(),
        feeds,
        heartbeat: None,
        mailbox: DEFAULT_MAILBOX,
        recall: Default::default(),
    }
}

fn hub_with(max_groups: usize) -> Addr<Hub> {
    Hub::new(config(max_groups, Vec::new())).start()
}

fn hub() -> Addr<Hub> {
    hub_with(100)
}

/// A hub fed by a ticker, wired as the server wires them.
async fn hub_and_ticker() -> (Addr<Hub>, Addr<Ticker>) {
    let market = market();
    let hub = Hub::new(config(100, market.groups())).start();
    let ticker = Ticker::new(market, hub.clone().recipient()).start();
    hub.do_send(AttachFeed {
        demand: ticker.clone().recipient(),
    });
    // The ticker's opening frames, then the attachment, have reached the hub.
    ticker.send(IsRunning).await.unwrap();
    settle(&hub).await;
    (hub, ticker)
}

fn page(after: Option<&str>, limit: usize) -> UsersPage {
    UsersPage {
        limit,
        after: after.map(str::to_owned),
    }
}

fn market() -> Market {
    Market {
        model: ModelConfig {
            symbols: default_symbols(),
            seed: Some(1),
            history: 10,
            daily_limit: Some(0.1),
        },
        // Long enough that only `Advance` moves the market during a test.
        tick: Duration::from_secs(3600),
    }
}

async fn client_with_limit(hub: &Addr<Hub>, id: SessionId, limit: usize) -> Client {
    let outbox = Arc::new(Outbox::with_recipient(Sink.start().recipient(), limit));
    hub.do_send(Connect {
        session: id,
        outbox: outbox.clone(),
    });
    Client {
        id,
        outbox,
        hub: hub.clone(),
        unread: Default::default(),
    }
}

async fn client(hub: &Addr<Hub>, id: SessionId) -> Client {
    client_with_limit(hub, id, 1 << 20).await
}

/// A client that has joined as `name` (its `joined` reply taken).
async fn joined(hub: &Addr<Hub>, id: SessionId, name: &str) -> Client {
    let c = client(hub, id).await;
    c.join(name).await;
    c
}

fn code(event: &Value) -> &str {
    assert_eq!(event["type"], "error", "{event}");
    event["code"].as_str().unwrap()
}

#[actix::test]
async fn join_replies_and_refuses_twice_and_bad_names() {
    let hub = hub();
    let a = client(&hub, 1).await;
    a.send_join(Some(5), "alice", false);
    let mut joined = a.one().await;
    assert!(joined["epoch"].take().is_string());
    assert_eq!(
        joined,
        json!({"type":"joined","id":5,"name":"alice","session":1,"epoch":null,"offset":0})
    );
    assert_eq!(code(&a.join("alice").await), "already_joined");
    let b = client(&hub, 2).await;
    assert_eq!(code(&b.join(" bob").await), "invalid_name");
    assert_eq!(code(&b.join("").await), "invalid_name");
    assert_eq!(code(&b.join(&"x".repeat(65)).await), "invalid_name");
    assert_eq!(b.join("bob").await["type"], "joined");
}

#[actix::test]
async fn commands_before_join_answer_not_joined() {
    let hub = hub();
    let a = client(&hub, 1).await;
    hub.do_send(SendDirect {
        caller: a.caller(Some(1)),
        to: "x".into(),
        body: body(json!(1)),
        mid: None,
    });
    hub.do_send(Broadcast {
        caller: a.caller(Some(2)),
        body: body(json!(1)),
        mid: None,
    });
    hub.do_send(Subscribe {
        caller: a.caller(Some(3)),
        group: "room".into(),
        presence: false,
        since: None,
    });
    hub.do_send(Publish {
        caller: a.caller(Some(4)),
        group: "room".into(),
        body: body(json!(1)),
        mid: None,
    });
    hub.do_send(ListUsers {
        caller: a.caller(Some(5)),
        group: None,
        page: page(None, 100),
    });
    let events = a.take().await;
    assert_eq!(events.len(), 5);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(code(e), "not_joined");
        assert_eq!(e["id"], json!(i + 1));
    }
}

#[actix::test]
async fn direct_reaches_every_session_of_the_user() {
    let hub = hub();
    let alice = client(&hub, 1).await;
    let bob_phone = client(&hub, 2).await;
    let bob_web = client(&hub, 3).await;
    alice.join("alice").await;
    bob_phone.join("bob").await;
    bob_web.join("bob").await;
    hub.do_send(SendDirect {
        caller: alice.caller(Some(9)),
        to: "bob".into(),
        body: body(json!({"text":"hi"})),
        mid: None,
    });
    assert_eq!(
        alice.one().await,
        json!({"type":"ack","id":9,"delivered":2})
    );
    for bob in [&bob_phone, &bob_web] {
        let m = bob.one().await;
        assert_eq!(m["type"], "message");
        assert_eq!(m["kind"], "direct");
        assert_eq!(m["from"], "alice");
        assert_eq!(m["to"], "bob");
        assert_eq!(m["body"], json!({"text":"hi"}));
        assert!(m["ts"].as_u64().unwrap() > 1_600_000_000_000);
    }
    hub.do_send(SendDirect {
        caller: alice.caller(Some(10)),
        to: "carol".into(),
        body: body(json!(1)),
        mid: None,
    });
    assert_eq!(code(&alice.one().await), "not_found");
    // One of bob's sessions leaves: the other still gets his messages.
    bob_web.disconnect();
    hub.do_send(SendDirect {
        caller: alice.caller(None),
        to: "bob".into(),
        body: body(json!(2)),
        mid: None,
    });
    assert_eq!(alice.one().await["delivered"], 1);
    assert_eq!(bob_phone.one().await["body"], 2);
}

#[actix::test]
async fn broadcast_reaches_joined_sessions_only() {
    let hub = hub();
    let a = client(&hub, 1).await;
    let b = client(&hub, 2).await;
    let anonymous = client(&hub, 3).await;
    a.join("a").await;
    b.join("b").await;
    hub.do_send(Broadcast {
        caller: a.caller(Some(1)),
        body: body(json!("all")),
        mid: None,
    });
    let to_a = a.take().await;
    assert_eq!(to_a.len(), 2, "{to_a:?}");
    // The sender gets its own copy, and `delivered` counts the others (b).
    assert!(to_a.contains(&json!({"type":"ack","id":1,"delivered":1})));
    assert!(to_a
        .iter()
        .any(|e| e["kind"] == "broadcast" && e["body"] == "all"));
    assert_eq!(b.one().await["from"], "a");
    assert!(anonymous.take().await.is_empty());
}

#[actix::test]
async fn group_messages_reach_members_and_count_deliveries() {
    let hub = hub();
    let a = client(&hub, 1).await;
    let b = client(&hub, 2).await;
    let outsider = client(&hub, 3).await;
    a.join("a").await;
    b.join("b").await;
    outsider.join("o").await;
    let mut subscribed = a.subscribe("room", false).await;
    assert!(subscribed["epoch"].take().is_string());
    assert_eq!(
        subscribed,
        json!({"type":"subscribed","group":"room","members":1,"epoch":null,"offset":0})
    );
    assert_eq!(b.subscribe("room", false).await["members"], 2);
    // Subscribing again is idempotent.
    assert_eq!(b.subscribe("room", false).await["members"], 2);
    // The sender need not be a member.
    outsider.publish("room", json!({"t":1}));
    assert_eq!(
        outsider.one().await,
        json!({"type":"ack","id":1,"delivered":2})
    );
    for m in [a.one().await, b.one().await] {
        assert_eq!(m["kind"], "group");
        assert_eq!(m["group"], "room");
        assert_eq!(m["from"], "o");
        assert_eq!(m["body"], json!({"t":1}));
    }
    outsider.publish("empty", json!(1));
    assert_eq!(outsider.one().await["delivered"], 0);
    outsider.publish("bad group", json!(1));
    assert_eq!(code(&outsider.one().await), "invalid_group");
    outsider.publish("stock", json!(1));
    assert_eq!(code(&outsider.one().await), "forbidden");
    hub.do_send(Unsubscribe {
        caller: b.caller(Some(3)),
        group: "room".into(),
    });
    assert_eq!(
        b.one().await,
        json!({"type":"unsubscribed","id":3,"group":"room"})
    );
    // Alone in the room: its own copy arrives, and it was delivered to nobody else.
    a.publish("room", json!(2));
    let to_a = a.take().await;
    assert!(to_a.contains(&json!({"type":"ack","id":1,"delivered":0})));
    assert!(to_a.iter().any(|e| e["body"] == 2));
    assert!(b.take().await.is_empty());
}

#[actix::test]
async fn users_lists_online_users_and_group_members() {
    let hub = hub();
    let a = joined(&hub, 1, "zed").await;
    let b1 = joined(&hub, 2, "bob").await;
    let b2 = joined(&hub, 3, "bob").await;
    b1.subscribe("room", false).await;
    b2.subscribe("room", false).await;
    hub.do_send(ListUsers {
        caller: a.caller(Some(1)),
        group: None,
        page: page(None, 100),
    });
    assert_eq!(
        a.one().await,
        json!({"type":"users","id":1,"users":["bob","zed"],"count":2})
    );
    hub.do_send(ListUsers {
        caller: a.caller(None),
        group: Some("room".into()),
        page: page(None, 100),
    });
    assert_eq!(
        a.one().await,
        json!({"type":"users","group":"room","users":["bob"],"count":1})
    );
}

#[actix::test]
async fn presence_is_opt_in_and_fires_on_first_and_last_session() {
    let hub = hub();
    let watcher = client(&hub, 1).await;
    let quiet = client(&hub, 2).await;
    let bob1 = client(&hub, 3).await;
    let bob2 = client(&hub, 4).await;
    watcher.join("w").await;
    quiet.join("q").await;
    bob1.join("bob").await;
    bob2.join("bob").await;
    watcher.subscribe("room", true).await;
    // The watcher's own arrival is announced to it too; nothing else is queued.
    assert_eq!(
        watcher.one().await,
        json!({"type":"presence","group":"room","event":"join","name":"w"})
    );
    quiet.subscribe("room", false).await;
    assert_eq!(watcher.one().await["name"], "q");
    bob1.subscribe("room", false).await;
    assert_eq!(
        watcher.one().await,
        json!({"type":"presence","group":"room","event":"join","name":"bob"})
    );
    // bob's second device: no new arrival.
    bob2.subscribe("room", false).await;
    assert!(watcher.take().await.is_empty());
    bob1.disconnect();
    assert!(watcher.take().await.is_empty());
    bob2.disconnect();
    assert_eq!(
        watcher.one().await,
        json!({"type":"presence","group":"room","event":"leave","name":"bob"})
    );
    assert!(quiet.take().await.is_empty(), "presence is opt-in");
}

#[actix::test]
async fn presence_follows_the_latest_subscribe_and_ends_with_the_membership() {
    let hub = hub();
    let a = joined(&hub, 1, "a").await;
    let b = joined(&hub, 2, "b").await;
    let c = joined(&hub, 3, "c").await;
    a.subscribe("room", true).await;
    b.subscribe("room", false).await;
    assert_eq!(a.take().await.len(), 2, "a hears itself and b arrive");
    // Subscribing again switches presence off for a and on for b.
    a.subscribe("room", false).await;
    b.subscribe("room", true).await;
    assert!(a.take().await.is_empty() && b.take().await.is_empty());
    c.subscribe("room", false).await;
    assert!(a.take().await.is_empty(), "a switched presence off");
    assert_eq!(b.one().await["name"], "c");
    // A watcher that leaves the group hears nothing more of it; one that comes back
    // without presence neither.
    b.unsubscribe("room").await;
    assert!(b.take().await.is_empty());
    c.disconnect();
    settle(&hub).await;
    assert!(b.take().await.is_empty(), "b left the room");
    b.subscribe("room", false).await;
    let d = joined(&hub, 4, "d").await;
    d.subscribe("room", false).await;
    assert!(b.take().await.is_empty(), "b came back without presence");
}

#[actix::test]
async fn disconnect_leaves_nothing_behind() {
    let hub = hub();
    let mut clients = Vec::new();
    for id in 1..=6 {
        let c = client(&hub, id).await;
        c.join(&format!("user{}", id % 3)).await;
        c.subscribe("room", id % 2 == 0).await;
        c.subscribe(&format!("solo{id}"), false).await;
        clients.push(c);
    }
    let stats = settle(&hub).await;
    assert_eq!((stats.sessions, stats.users, stats.groups), (6, 3, 7));
    for c in &clients {
        c.disconnect();
    }
    let stats = settle(&hub).await;
    assert_eq!((stats.sessions, stats.users, stats.groups), (0, 0, 0));
}

#[actix::test]
async fn classic_login_subscribes_the_groups_in_the_name() {
    let hub = hub();
    let classic = client(&hub, 1).await;
    let sender = client(&hub, 2).await;
    sender.join("boss").await;
    classic.send_join(None, "sales,vip_alice", true);
    assert_eq!(classic.one().await["name"], "sales,vip_alice");
    for group in ["sales", "vip"] {
        sender.publish(group, json!(group));
        assert_eq!(sender.one().await["delivered"], 1);
        assert_eq!(classic.one().await["group"], group);
    }
    // A typed join never reads groups from the name.
    let typed = client(&hub, 3).await;
    typed.join("ops_bob").await;
    sender.publish("ops", json!(1));
    assert_eq!(sender.one().await["delivered"], 0);
}

#[actix::test]
async fn groups_per_session_are_bounded() {
    let hub = hub_with(2);
    let a = client(&hub, 1).await;
    a.join("a").await;
    a.subscribe("g1", false).await;
    a.subscribe("g2", false).await;
    assert_eq!(code(&a.subscribe("g3", false).await), "too_many_groups");
    assert_eq!(a.subscribe("g2", true).await["type"], "subscribed");
    assert_eq!(
        code(&a.subscribe("no spaces", false).await),
        "invalid_group"
    );
    assert_eq!(settle(&hub).await.groups, 2);
}

#[actix::test]
async fn a_slow_consumer_is_dropped_and_the_others_get_everything() {
    let hub = hub();
    let sender = client(&hub, 1).await;
    let fast = client(&hub, 2).await;
    // Room for a few messages only, and nobody drains it.
    let slow = client_with_limit(&hub, 3, 600).await;
    sender.join("s").await;
    fast.join("f").await;
    slow.join("slow").await;
    slow.outbox.drain();
    fast.subscribe("room", false).await;
    slow.subscribe("room", false).await;
    slow.outbox.drain();
    let mut received = 0;
    for i in 0..50 {
        sender.publish("room", json!({"n": i, "pad": "x".repeat(50)}));
        received += fast.take().await.len();
    }
    assert_eq!(received, 50);
    let stats = settle(&hub).await;
    assert_eq!(stats.slow_consumers, 1);
    assert_eq!(stats.sessions, 2, "the slow session left the pool");
    assert_eq!(slow.outbox.drain().1, Some(CloseReason::SlowConsumer));
    // Every ack after the drop counts one delivery: the fast member alone.
    let acks = sender.take().await;
    assert_eq!(acks.last().unwrap()["delivered"], 1);
}

/// The sessions the hub has asked for a heartbeat check since this was last called,
/// once the hub has handled everything so far (its due timer included: an actor polls
/// its timers with its mailbox).
async fn beaten(hub: &Addr<Hub>, clients: &[Client]) -> Vec<SessionId> {
    settle(hub).await;
    clients
        .iter()
        .filter(|c| c.outbox.drain_into(&mut Default::default()).beat)
        .map(|c| c.id)
        .collect()
}

/// One timer paces every session's heartbeat: each `heartbeat / 8` the hub asks one of
/// the pool's eight sets of sessions (ids modulo 8) to check, in turn, so each session,
/// joined or not, is asked exactly once per heartbeat, an eighth of them at a time.
/// Time is tokio's paused clock, moved by hand (actix's timers are tokio's): which
/// session is asked after each step is exact.
#[test]
fn the_hub_paces_every_sessions_heartbeat() {
    paused_system().block_on(paces_every_sessions_heartbeat());
}

async fn paces_every_sessions_heartbeat() {
    let phases = HEARTBEAT_PHASES as u32;
    let step = Duration::from_millis(10);
    let hub = Hub::new(HubConfig {
        heartbeat: Some(step * phases),
        ..config(10, Vec::new())
    })
    .start();
    // One session in each set, every other one joined.
    let mut clients = Vec::new();
    for id in 1..=HEARTBEAT_PHASES as SessionId {
        let c = client(&hub, id).await;
        if id % 2 == 0 {
            c.join(&format!("user{id}")).await;
        }
        clients.push(c);
    }
    tokio::time::advance(step - Duration::from_millis(1)).await;
    let nobody: [SessionId; 0] = [];
    assert_eq!(
        beaten(&hub, &clients).await,
        nobody,
        "not before the first step"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    // Two heartbeats: beat `k` (from 0) asks set `k % 8`, i.e. the session whose id is
    // `k` modulo 8 (8 for set 0).
    for k in 0..2 * phases {
        if k > 0 {
            tokio::time::advance(step).await;
        }
        let set = (k % phases) as SessionId;
        let expected = if set == 0 { phases as SessionId } else { set };
        assert_eq!(beaten(&hub, &clients).await, [expected], "beat {k}");
    }
    // Half a step more: nobody is asked.
    tokio::time::advance(step / 2).await;
    assert_eq!(beaten(&hub, &clients).await, nobody);
}

#[actix::test]
async fn stock_groups_need_no_join_and_get_a_snapshot_then_ticks() {
    let (hub, ticker) = hub_and_ticker().await;
    assert!(
        !ticker.send(IsRunning).await.unwrap(),
        "idle without subscribers"
    );
    let page = client(&hub, 1).await;
    let subscribed = page.subscribe("stock.600519", false).await;
    assert_eq!(subscribed["members"], 1);
    assert!(ticker.send(IsRunning).await.unwrap());
    // The snapshot comes from the ticker, right after the reply.
    ticker.send(IsRunning).await.unwrap();
    let snapshot = page.one().await;
    assert_eq!(snapshot["type"], "quote");
    assert_eq!(snapshot["quote"]["symbol"], "600519");
    ticker.send(Advance).await.unwrap();
    let tick = page.one().await;
    assert_eq!(tick["type"], "quote");
    assert_ne!(tick["quote"]["ts"], Value::Null);

    let all = client(&hub, 2).await;
    all.subscribe("stock", false).await;
    ticker.send(IsRunning).await.unwrap();
    assert_eq!(all.one().await["quotes"].as_array().unwrap().len(), 6);
    ticker.send(Advance).await.unwrap();
    let tick = all.one().await;
    assert_eq!(tick["type"], "tick");
    assert_eq!(tick["quotes"].as_array().unwrap().len(), 6);
    assert_eq!(page.take().await.len(), 1);

    assert_eq!(
        code(&page.subscribe("stock.NOPE", false).await),
        "not_found"
    );
    page.disconnect();
    all.disconnect();
    settle(&hub).await;
    assert!(!ticker.send(IsRunning).await.unwrap(), "idle again");
}

#[actix::test]
async fn classic_feed_sends_six_numbers_at_once_and_per_tick() {
    let (hub, ticker) = hub_and_ticker().await;
    let classic = client(&hub, 1).await;
    hub.do_send(SubscribeClassicFeed { session: 1 });
    settle(&hub).await;
    ticker.send(Advance).await.unwrap();
    let events = classic.take().await;
    assert_eq!(events.len(), 2, "snapshot and one tick: {events:?}");
    for e in events {
        let six = e.as_array().unwrap();
        assert_eq!(six.len(), 6);
        for v in six {
            let v = v.as_f64().unwrap();
            assert!((0.01..=1.0).contains(&v));
            assert_eq!((v * 100.0).round() / 100.0, v);
        }
    }
}

#[actix::test]
async fn ping_is_answered_in_order() {
    let hub = hub();
    let a = client(&hub, 1).await;
    a.send_join(Some(1), "a", false);
    hub.do_send(Ping {
        caller: a.caller(Some(2)),
    });
    let events = a.take().await;
    assert_eq!(events[0]["type"], "joined");
    assert_eq!(events[1], json!({"type":"pong","id":2}));
}

#[actix::test]
async fn subscribing_twice_then_leaving_once_leaves() {
    let hub = hub();
    let watcher = client(&hub, 1).await;
    let a = client(&hub, 2).await;
    watcher.join("w").await;
    a.join("a").await;
    watcher.subscribe("room", true).await;
    a.subscribe("room", false).await;
    a.subscribe("room", false).await;
    let arrivals = watcher.take().await;
    assert_eq!(arrivals.len(), 2, "w and a arrive once each: {arrivals:?}");
    hub.do_send(Unsubscribe {
        caller: a.caller(None),
        group: "room".into(),
    });
    assert_eq!(watcher.one().await["event"], "leave");
    hub.do_send(ListUsers {
        caller: watcher.caller(None),
        group: Some("room".into()),
        page: page(None, 100),
    });
    assert_eq!(watcher.one().await["users"], json!(["w"]));
}

#[actix::test]
async fn a_slow_consumer_leaves_with_a_presence_event() {
    let hub = hub();
    let watcher = client(&hub, 1).await;
    let slow = client_with_limit(&hub, 2, 300).await;
    watcher.join("w").await;
    slow.join("slow").await;
    slow.subscribe("room", false).await;
    watcher.subscribe("room", true).await;
    watcher.take().await;
    for _ in 0..10 {
        watcher.publish("room", json!("x".repeat(60)));
    }
    let events = watcher.take().await;
    assert!(
        events.contains(&json!({"type":"presence","group":"room","event":"leave","name":"slow"})),
        "{events:?}"
    );
    assert_eq!(settle(&hub).await.slow_consumers, 1);
}

#[actix::test]
async fn users_pages_through_every_name_once_and_counts_all() {
    let hub = hub();
    let mut clients = Vec::new();
    let total = MAX_PAGE as u64 + 5;
    for id in 0..total {
        let c = client(&hub, id + 1).await;
        c.send_join(None, &format!("u{id:05}"), false);
        clients.push(c);
    }
    let asker = &clients[0];
    asker.take().await;
    let mut after: Option<String> = None;
    let mut seen = Vec::new();
    loop {
        hub.do_send(ListUsers {
            caller: asker.caller(None),
            group: None,
            page: page(after.as_deref(), 300),
        });
        let users = asker.one().await;
        assert_eq!(users["count"], total);
        let names = users["users"].as_array().unwrap();
        assert!(names.len() <= 300);
        seen.extend(names.iter().map(|n| n.as_str().unwrap().to_owned()));
        match users.get("next") {
            Some(next) => {
                assert_eq!(next, names.last().unwrap(), "next is the page's last name");
                after = Some(next.as_str().unwrap().to_owned());
            }
            None => break,
        }
    }
    let expected: Vec<String> = (0..total).map(|id| format!("u{id:05}")).collect();
    assert_eq!(seen, expected, "every name once, in order");
}

#[actix::test]
async fn shutdown_closes_everyone_and_refuses_newcomers() {
    let (hub, ticker) = hub_and_ticker().await;
    let a = client(&hub, 1).await;
    a.join("a").await;
    a.subscribe("stock", false).await;
    hub.send(Shutdown).await.unwrap();
    assert_eq!(a.outbox.close_reason(), Some(CloseReason::Shutdown));
    let late = client(&hub, 2).await;
    let stats = settle(&hub).await;
    assert_eq!((stats.sessions, stats.users, stats.groups), (0, 0, 0));
    assert_eq!(late.outbox.close_reason(), Some(CloseReason::Shutdown));
    // The ticker was told nobody watches any more.
    assert!(!ticker.send(IsRunning).await.unwrap());
}

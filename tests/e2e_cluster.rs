//! Cluster mode (`--redis`), for real: a `redis-server` of the test's own and two hub
//! processes sharing it, with WebSocket clients on both.
//!
//! "Exactly once" is checked without waiting for silence: after a message, a marker is
//! sent from the other node once every client has the message; Redis hands a subscriber
//! messages in the order it took the PUBLISHes, so a second copy of the message would
//! come before the marker. Each node subscribes asynchronously, so a test waits for
//! `PUBSUB NUMSUB` before it counts on a node hearing a channel.

mod common;
#[path = "common/process.rs"]
mod process;
#[path = "common/redis.rs"]
mod redis_server;

use process::HubProcess;

use common::{http, Client};
use redis_server::RedisServer;
use serde_json::{json, Value};

const API_KEY: &str = "cluster-test-key-0123456789";

/// The routes' channels (`all`, `g:`, `u:`), not the ones every node hears: presence
/// events (`p:events`), the market (`ticker:quotes`), its own probe (`probe:`).
const ROUTES: &str = "wxhub:[agu]*";

/// A hub process in cluster mode on a free port; killed when dropped.
type Node = HubProcess;

impl Node {
    fn start(redis: &RedisServer, name: &str) -> Node {
        Node::start_with_url(&redis.url(), name)
    }

    fn start_with_url(url: &str, name: &str) -> Node {
        let mut cmd = HubProcess::command();
        cmd.args(["--node-name", name, "--redis", url])
            .env("WXHUB_API_KEY", API_KEY);
        let mut node = HubProcess::spawn(cmd);
        node.wait_log(&format!("cluster mode: node {name}/"));
        node
    }

    async fn client(&self) -> Client {
        Client::connect(&format!("ws://{}/ws", self.addr)).await
    }

    /// A client joined as `name`, in `groups`.
    async fn joined(&self, name: &str, groups: &[&str]) -> Client {
        let mut c = self.client().await;
        let joined = c.request(json!({"type":"join","name":name})).await;
        assert_eq!(joined["type"], "joined", "{joined}");
        for group in groups {
            let subscribed = c.request(json!({"type":"subscribe","group":group})).await;
            assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
        }
        c
    }

    /// A server API call; its JSON answer.
    async fn api(&self, path: &str, body: Value) -> Value {
        let auth = format!("Authorization: Bearer {API_KEY}");
        let reply = http(
            self.addr,
            "POST",
            path,
            &[&auth, "Content-Type: application/json"],
            body.to_string().as_bytes(),
        )
        .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        reply.json()
    }
}

/// The next event is a message with this body.
async fn expect_message(c: &mut Client, body: &Value) -> Value {
    let m = c.recv_json().await;
    assert_eq!(m["type"], "message", "{m}");
    assert_eq!(&m["body"], body, "{m}");
    m
}

#[tokio::test]
async fn group_messages_reach_members_on_every_node_once() {
    let redis = RedisServer::start();
    let (a, b) = (Node::start(&redis, "a"), Node::start(&redis, "b"));
    let mut a1 = a.joined("a1", &["room"]).await;
    let mut b1 = b.joined("b1", &["room"]).await;
    let mut b2 = b.joined("b2", &["room"]).await;
    redis.wait_subscribers("wxhub:g:room", 2).await;

    let hello = json!({"text":"hello from a"});
    a1.send_json(json!({"type":"publish","group":"room","body":hello,"id":1}))
        .await;
    // Acknowledged when handed to Redis; a1's own copy comes as Redis numbered it.
    assert_eq!(
        a1.recv_json().await,
        json!({"type":"ack","id":1,"delivered":0,"cluster":true}),
        "delivered counts this node's sessions; the other nodes were told"
    );
    let own = expect_message(&mut a1, &hello).await;
    assert_eq!(
        (
            own["kind"].as_str(),
            own["from"].as_str(),
            own["offset"].as_u64()
        ),
        (Some("group"), Some("a1"), Some(1))
    );
    for c in [&mut b1, &mut b2] {
        let m = expect_message(c, &hello).await;
        assert_eq!(
            (
                m["group"].as_str(),
                m["from"].as_str(),
                m["offset"].as_u64()
            ),
            (Some("room"), Some("a1"), Some(1)),
            "the same offset on every node"
        );
    }

    // The marker from b: a second copy of `hello` anywhere would come before it.
    let marker = json!("marker");
    b1.send_json(json!({"type":"publish","group":"room","body":marker,"id":2}))
        .await;
    assert_eq!(
        b1.recv_json().await,
        json!({"type":"ack","id":2,"delivered":1,"cluster":true})
    );
    assert_eq!(expect_message(&mut b1, &marker).await["offset"], 2);
    expect_message(&mut b2, &marker).await;
    expect_message(&mut a1, &marker).await;

    // A group's order is the same on every node.
    // Two publishers on two nodes at once: every member sees one order, numbered
    // without gaps, the same on both nodes.
    for i in 0..50 {
        a1.send_json(json!({"type":"publish","group":"room","body":i}))
            .await;
        b2.send_json(json!({"type":"publish","group":"room","body":100 + i}))
            .await;
    }
    let mut orders = Vec::new();
    for c in [&mut a1, &mut b1, &mut b2] {
        let mut got = Vec::new();
        while got.len() < 100 {
            let e = c.recv_json().await;
            if e["type"] == "message" {
                got.push((e["offset"].as_u64().unwrap(), e["body"].as_i64().unwrap()));
            }
        }
        let offsets: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, (3..103).collect::<Vec<_>>());
        let from_a: Vec<i64> = got.iter().map(|(_, b)| *b).filter(|b| *b < 100).collect();
        assert_eq!(
            from_a,
            (0..50).collect::<Vec<_>>(),
            "each sender's order kept"
        );
        orders.push(got);
    }
    assert!(
        orders.windows(2).all(|w| w[0] == w[1]),
        "one order on every node"
    );
}

#[tokio::test]
async fn a_direct_message_reaches_each_session_of_the_user_once_on_every_node() {
    let redis = RedisServer::start();
    let (a, b) = (Node::start(&redis, "a"), Node::start(&redis, "b"));
    let mut on_a = a.joined("alice", &[]).await;
    let mut on_b1 = b.joined("alice", &[]).await;
    let mut on_b2 = b.joined("alice", &[]).await;
    let mut bob = b.joined("bob", &[]).await;
    let mut carol = a.joined("carol", &[]).await;
    redis.wait_subscribers("wxhub:u:alice", 2).await;

    let hi = json!("hi alice");
    bob.send_json(json!({"type":"direct","to":"alice","body":hi,"id":1}))
        .await;
    assert_eq!(
        bob.recv_json().await,
        json!({"type":"ack","id":1,"delivered":2,"cluster":true}),
        "bob's node has two of alice's sessions"
    );
    for c in [&mut on_a, &mut on_b1, &mut on_b2] {
        let m = expect_message(c, &hi).await;
        assert_eq!(
            (m["kind"].as_str(), m["from"].as_str(), m["offset"].as_u64()),
            (Some("direct"), Some("bob"), Some(1)),
            "alice's stream numbers it once for all her sessions"
        );
    }
    // The marker from the other node.
    let marker = json!("marker");
    carol
        .send_json(json!({"type":"direct","to":"alice","body":marker,"id":2}))
        .await;
    assert_eq!(
        carol.recv_json().await,
        json!({"type":"ack","id":2,"delivered":1,"cluster":true})
    );
    for c in [&mut on_a, &mut on_b1, &mut on_b2] {
        expect_message(c, &marker).await;
    }

    // A user no node knows: no node can tell, so no `not_found`.
    assert_eq!(
        carol
            .request(json!({"type":"direct","to":"nobody","body":1,"id":3}))
            .await,
        json!({"type":"ack","id":3,"delivered":0,"cluster":true})
    );
}

#[tokio::test]
async fn broadcasts_and_the_server_api_reach_every_node() {
    let redis = RedisServer::start();
    let (a, b) = (Node::start(&redis, "a"), Node::start(&redis, "b"));
    let mut a1 = a.joined("a1", &[]).await;
    let mut b1 = b.joined("b1", &["news"]).await;
    redis.wait_subscribers("wxhub:all", 2).await;
    redis.wait_subscribers("wxhub:u:b1", 1).await;
    redis.wait_subscribers("wxhub:g:news", 1).await;

    let all = json!({"text":"to everyone"});
    a1.send_json(json!({"type":"broadcast","body":all,"id":1}))
        .await;
    expect_message(&mut a1, &all).await;
    assert_eq!(
        a1.recv_json().await,
        json!({"type":"ack","id":1,"delivered":0,"cluster":true})
    );
    let m = expect_message(&mut b1, &all).await;
    assert_eq!(m["kind"], "broadcast");

    // The server API on node a: b's sessions get it.
    let news = json!({"headline":"cluster mode"});
    let answer = a
        .api("/api/publish", json!({"group":"news","body":news}))
        .await;
    assert_eq!(answer, json!({"delivered":0,"cluster":true}));
    let m = expect_message(&mut b1, &news).await;
    assert_eq!(
        (m["group"].as_str(), m["from"].as_str()),
        (Some("news"), Some("system"))
    );
    let direct = json!("from the backend");
    let answer = a.api("/api/send", json!({"to":"b1","body":direct})).await;
    assert_eq!(answer, json!({"delivered":0,"cluster":true}));
    expect_message(&mut b1, &direct).await;
    let everyone = json!("everyone, from the backend");
    let answer = b.api("/api/broadcast", json!({"body":everyone})).await;
    assert_eq!(answer, json!({"delivered":1,"cluster":true}));
    expect_message(&mut a1, &everyone).await;
    expect_message(&mut b1, &everyone).await;

    // The marker from b: nothing came twice.
    let marker = json!("marker");
    b1.send_json(json!({"type":"broadcast","body":marker}))
        .await;
    expect_message(&mut b1, &marker).await;
    expect_message(&mut a1, &marker).await;
}

#[tokio::test]
async fn a_node_subscribes_only_to_what_its_sessions_need() {
    let redis = RedisServer::start();
    let (a, b) = (Node::start(&redis, "a"), Node::start(&redis, "b"));
    assert_eq!(
        redis.channels(ROUTES),
        Vec::<String>::new(),
        "idle nodes hear nothing"
    );

    let a1 = a.joined("a1", &["room1"]).await;
    let mut b1 = b.joined("b1", &[]).await;
    redis.wait_subscribers("wxhub:u:b1", 1).await;
    redis.wait_subscribers("wxhub:all", 2).await;
    assert_eq!(
        redis.channels(ROUTES),
        ["wxhub:all", "wxhub:g:room1", "wxhub:u:a1", "wxhub:u:b1"]
    );
    // b has no member of room1: room1's messages do not reach it.
    assert_eq!(redis.subscribers("wxhub:g:room1"), 1);

    // A member on b: b subscribes; the last one leaving: b unsubscribes.
    let subscribed = b1
        .request(json!({"type":"subscribe","group":"room1"}))
        .await;
    assert_eq!(subscribed["type"], "subscribed");
    redis.wait_subscribers("wxhub:g:room1", 2).await;
    let left = b1
        .request(json!({"type":"unsubscribe","group":"room1"}))
        .await;
    assert_eq!(left["type"], "unsubscribed");
    redis.wait_subscribers("wxhub:g:room1", 1).await;

    // A second session of a1's user on a: a stays subscribed once; both gone: unsubscribed.
    let mut a1_again = a.joined("a1", &[]).await;
    assert_eq!(redis.subscribers("wxhub:u:a1"), 1);
    a1.close().await;
    redis.wait_subscribers("wxhub:g:room1", 0).await;
    assert_eq!(redis.subscribers("wxhub:u:a1"), 1, "a1 has a session left");
    a1_again.send_json(json!({"type":"ping","id":0})).await;
    assert_eq!(a1_again.recv_json().await["type"], "pong");
    a1_again.close().await;
    redis.wait_subscribers("wxhub:u:a1", 0).await;
    redis.wait_subscribers("wxhub:all", 1).await;
    b1.close().await;
    redis.wait_subscribers("wxhub:all", 0).await;
    assert_eq!(redis.channels(ROUTES), Vec::<String>::new());
}

#[tokio::test]
async fn malformed_messages_on_redis_are_dropped_and_a_foreign_position_is_not_recovered() {
    let redis = RedisServer::start();
    let mut a = Node::start(&redis, "a");
    let mut a1 = a.joined("a1", &["room"]).await;
    redis.wait_subscribers("wxhub:g:room", 1).await;

    // Garbage on a channel the node hears: dropped, logged, and nothing breaks.
    for payload in [
        &b""[..],
        b"no origin line",
        b"x\n\xff\xfe not UTF-8",
        b"x\nnot json",
        b"x\n[1,2]",
        b"x\n{\"type\":",
    ] {
        assert_eq!(redis.publish("wxhub:g:room", payload), 1);
    }
    redis.publish("wxhub:g:room", &vec![b'x'; 1 << 20]);
    // What another node would publish still arrives, after the garbage.
    let fine =
        json!({"type":"message","kind":"group","from":"z","group":"room","body":"ok","ts":1});
    redis.publish("wxhub:g:room", format!("other/node\n{fine}").as_bytes());
    assert_eq!(a1.recv_json().await, fine);
    a.wait_log("dropped a malformed message on Redis channel \"wxhub:g:room\": no origin line");
    a.wait_log("not a JSON object (6 so far)");
    a.wait_log("more than the limit (7 so far)");

    // A numbered message without an offset is no message of ours either.
    redis.publish("wxhub:g:room", b"#\n{\"type\":\"message\"}");
    a.wait_log("a numbered frame without an offset (8 so far)");

    // A position of an epoch the stream never had: not recovered, and told where it is.
    let answer = a1
        .request(json!({"type":"subscribe","group":"room2","since":{"epoch":"e","offset":0}}))
        .await;
    assert_eq!(
        (
            answer["type"].as_str(),
            answer["recovered"].as_bool(),
            answer["offset"].as_u64()
        ),
        (Some("subscribed"), Some(false), Some(0)),
        "{answer}"
    );
    assert!(
        answer["epoch"].as_str().is_some_and(|e| e != "e"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_client_recovers_on_another_node_what_it_missed() {
    let redis = RedisServer::start();
    let (a, b) = (Node::start(&redis, "a"), Node::start(&redis, "b"));
    let mut pub_b = b.joined("publisher", &["room"]).await;
    let mut reader = a.joined("reader", &["room"]).await;
    redis.wait_subscribers("wxhub:g:room", 2).await;
    for i in 1..=3 {
        pub_b
            .send_json(json!({"type":"publish","group":"room","body":i}))
            .await;
    }
    let mut last = None;
    while last != Some(3) {
        let m = reader.recv_json().await;
        if m["type"] == "message" {
            last = m["offset"].as_u64();
        }
    }
    let epoch = {
        let s = reader
            .request(json!({"type":"subscribe","group":"room","id":"again"}))
            .await;
        assert_eq!(s["offset"], 3, "{s}");
        s["epoch"].as_str().unwrap().to_owned()
    };
    reader.close().await;

    // While it is away: two directs to it, three more in the group (from node b).
    for text in ["psst", "still there?"] {
        let ack = pub_b
            .request(json!({"type":"direct","to":"reader","body":text,"id":text}))
            .await;
        assert_eq!(ack["cluster"], true, "{ack}");
    }
    for i in 4..=6 {
        pub_b
            .send_json(json!({"type":"publish","group":"room","body":i}))
            .await;
    }
    // An ack means handed to Redis, not done there: the publisher's own copy of 6 comes
    // once Redis ran everything its node sent before (one connection, in order).
    pub_b
        .expect(|e| e["type"] == "message" && e["offset"] == 6)
        .await;

    // It comes back on node b: the join recovers the directs, the subscribe the group.
    let mut back = b.client().await;
    let joined = back
        .request(json!({"type":"join","name":"reader","since":{"epoch":"unknown","offset":0}}))
        .await;
    assert_eq!(joined["recovered"], false, "another epoch: {joined}");
    let user_epoch = joined["epoch"].as_str().unwrap().to_owned();
    assert_eq!(joined["offset"], 2, "{joined}");
    back.close().await;
    let mut back = b.client().await;
    back.send_json(
        json!({"type":"join","name":"reader","id":1,"since":{"epoch":user_epoch,"offset":0}}),
    )
    .await;
    let mut directs = Vec::new();
    loop {
        let e = back.recv_json().await;
        match e["type"].as_str() {
            Some("message") => directs.push(e["body"].clone()),
            Some("joined") => {
                assert_eq!(
                    (e["recovered"].as_bool(), e["offset"].as_u64()),
                    (Some(true), Some(2)),
                    "{e}"
                );
                break;
            }
            _ => panic!("{e}"),
        }
    }
    assert_eq!(directs, [json!("psst"), json!("still there?")]);
    back.send_json(
        json!({"type":"subscribe","group":"room","id":2,"since":{"epoch":epoch,"offset":3}}),
    )
    .await;
    let mut missed = Vec::new();
    loop {
        let e = back.recv_json().await;
        match e["type"].as_str() {
            Some("message") => missed.push((e["offset"].as_u64().unwrap(), e["body"].clone())),
            Some("subscribed") => {
                assert_eq!(
                    (e["recovered"].as_bool(), e["offset"].as_u64()),
                    (Some(true), Some(6)),
                    "{e}"
                );
                break;
            }
            _ => panic!("{e}"),
        }
    }
    assert_eq!(missed, [(4, json!(4)), (5, json!(5)), (6, json!(6))]);
    // Live again, right after: the next one is 7, once.
    redis.wait_subscribers("wxhub:g:room", 1).await;
    pub_b
        .send_json(json!({"type":"publish","group":"room","body":7}))
        .await;
    let next = back.expect(|e| e["type"] == "message").await;
    assert_eq!(
        (next["offset"].as_u64(), next["body"].clone()),
        (Some(7), json!(7))
    );
    // The reload: the newest kept messages, from any node.
    let history = back
        .request(json!({"type":"history","group":"room","limit":3,"id":9}))
        .await;
    let bodies: Vec<Value> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].clone())
        .collect();
    assert_eq!(bodies, [json!(5), json!(6), json!(7)], "{history}");
    // And the server API on the other node reads the same stream.
    let auth = format!("Authorization: Bearer {API_KEY}");
    let reply = http(
        a.addr,
        "GET",
        "/api/groups/room/messages?limit=2",
        &[&auth],
        b"",
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let page = reply.json();
    let offsets: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(
        (offsets, page["offset"].as_u64()),
        (vec![6, 7], Some(7)),
        "{page}"
    );
}

/// `/readyz`'s status and `wxhub_redis_up` on node `n`.
async fn readiness(n: &Node) -> (u16, Option<String>) {
    let ready = http(n.addr, "GET", "/readyz", &[], b"").await.status;
    let metrics = http(
        n.addr,
        "GET",
        "/metrics",
        &[&format!("Authorization: Bearer {API_KEY}")],
        b"",
    )
    .await;
    let up = metrics
        .body
        .lines()
        .find(|l| l.starts_with("wxhub_redis_up "))
        .map(|l| l["wxhub_redis_up ".len()..].to_owned());
    (ready, up)
}

#[tokio::test]
async fn a_node_without_its_redis_still_routes_locally() {
    let redis = RedisServer::start();
    let url = redis.url();
    let port = redis.port;
    drop(redis); // nothing listens there now
    let mut a = Node::start_with_url(&url, "lonely");
    let mut a1 = a.joined("a1", &["room"]).await;
    let mut a2 = a.joined("a2", &["room"]).await;
    a1.send_json(json!({"type":"publish","group":"room","body":"still here","id":1}))
        .await;
    let m = expect_message(&mut a1, &json!("still here")).await;
    assert!(m.get("offset").is_none(), "not numbered without Redis: {m}");
    assert_eq!(
        a1.recv_json().await,
        json!({"type":"ack","id":1,"delivered":1}),
        "no `cluster`: no other node was told"
    );
    expect_message(&mut a2, &json!("still here")).await;
    a.wait_log("cluster: cannot subscribe on Redis");
    assert_eq!(
        a1.request(json!({"type":"ping","id":2})).await["type"],
        "pong"
    );
    // Not ready without Redis, and the metric says why.
    assert_eq!(readiness(&a).await, (503, Some("0".to_owned())));

    // Redis comes (back): the node subscribes again, becomes ready, and messages cross.
    let redis = RedisServer::start_on(port).expect("redis-server on the same port");
    a.wait_log("cluster: subscribed on Redis again");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while readiness(&a).await != (200, Some("1".to_owned())) {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            readiness(&a).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let b = Node::start(&redis, "late");
    let mut b1 = b.joined("b1", &["room"]).await;
    redis.wait_subscribers("wxhub:g:room", 2).await;
    b1.send_json(json!({"type":"publish","group":"room","body":"across again"}))
        .await;
    expect_message(&mut a1, &json!("across again")).await;
    expect_message(&mut a2, &json!("across again")).await;
    // And the other way: the node that was cut off publishes to Redis again at once.
    assert_eq!(b1.recv_json().await["type"], "ack");
    expect_message(&mut b1, &json!("across again")).await; // b1's own copy
    a1.send_json(json!({"type":"publish","group":"room","body":"from a again"}))
        .await;
    expect_message(&mut b1, &json!("from a again")).await;
}

/// A TCP proxy to Redis that can make the connections it carries go silent without
/// closing them (what a failover or a NAT can do): their replies and messages are
/// swallowed from then on, while new connections pass.
struct SilencingProxy {
    port: u16,
    /// Connections numbered below this are silent.
    silent_below: std::sync::Arc<std::sync::atomic::AtomicU64>,
    next: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl SilencingProxy {
    /// Runs on a thread of its own (the test's thread blocks on log lines).
    fn start(to: u16) -> SilencingProxy {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let silent_below = Arc::new(AtomicU64::new(0));
        let next = Arc::new(AtomicU64::new(0));
        let (silent, counter) = (silent_below.clone(), next.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        std::thread::spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while let Ok((client, _)) = listener.accept().await {
                    let id = counter.fetch_add(1, Ordering::SeqCst);
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else {
                        continue;
                    };
                    let (mut client_rx, mut client_tx) = client.into_split();
                    let (mut server_rx, mut server_tx) = server.into_split();
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut client_rx, &mut server_tx).await;
                    });
                    let silent = silent.clone();
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 << 10];
                        while let Ok(n) = server_rx.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            if id >= silent.load(Ordering::SeqCst)
                                && client_tx.write_all(&buf[..n]).await.is_err()
                            {
                                break;
                            }
                        }
                    });
                }
            })
        });
        SilencingProxy {
            port,
            silent_below,
            next,
        }
    }

    /// Every connection open now goes silent.
    fn silence_open_connections(&self) {
        use std::sync::atomic::Ordering;
        let now = self.next.load(Ordering::SeqCst);
        self.silent_below.store(now, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_pubsub_connection_gone_silent_is_found_by_the_probe_and_replaced() {
    let redis = RedisServer::start();
    let proxy = SilencingProxy::start(redis.port);
    let mut cmd = HubProcess::command();
    cmd.args([
        "--node-name",
        "behind-proxy",
        "--redis",
        &format!("redis://127.0.0.1:{}/0", proxy.port),
        "--redis-probe",
        "500ms",
    ]);
    let mut a = HubProcess::spawn(cmd);
    a.wait_log("cluster mode: node behind-proxy/");
    let b = Node::start(&redis, "direct");
    let mut a1 = a.joined("a1", &["room"]).await;
    let mut b1 = b.joined("b1", &["room"]).await;
    redis.wait_subscribers("wxhub:g:room", 2).await;
    b1.send_json(json!({"type":"publish","group":"room","body":"before"}))
        .await;
    expect_message(&mut a1, &json!("before")).await;

    // Node a's connections to Redis stay open but nothing comes back on them any more.
    proxy.silence_open_connections();
    a.wait_log("cluster: Redis PUB/SUB went silent");
    a.wait_log("cluster: subscribed on Redis again");
    // Through a fresh connection: what b publishes reaches a1 again. (What was published
    // while a was deaf is lost for a's sessions; recovery is how clients learn it.)
    redis.wait_subscribers("wxhub:g:room", 2).await;
    b1.send_json(json!({"type":"publish","group":"room","body":"after"}))
        .await;
    a1.expect(|e| e["type"] == "message" && e["body"] == "after")
        .await;
    assert_eq!(
        a1.request(json!({"type":"ping","id":1})).await["type"],
        "pong",
        "the session lived through it"
    );
}

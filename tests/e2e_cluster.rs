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

/// The next event is a message with this body (and, across nodes, no offset).
async fn expect_message(c: &mut Client, body: &Value) -> Value {
    let m = c.recv_json().await;
    assert_eq!(m["type"], "message", "{m}");
    assert_eq!(&m["body"], body, "{m}");
    assert!(
        m.get("offset").is_none(),
        "no node-local offset in cluster mode: {m}"
    );
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
    let own = expect_message(&mut a1, &hello).await;
    assert_eq!(
        (own["kind"].as_str(), own["from"].as_str()),
        (Some("group"), Some("a1"))
    );
    assert_eq!(
        a1.recv_json().await,
        json!({"type":"ack","id":1,"delivered":0,"cluster":true}),
        "delivered counts this node's sessions; the other nodes were told"
    );
    for c in [&mut b1, &mut b2] {
        let m = expect_message(c, &hello).await;
        assert_eq!(
            (m["group"].as_str(), m["from"].as_str()),
            (Some("room"), Some("a1"))
        );
    }

    // The marker from b: a second copy of `hello` anywhere would come before it.
    let marker = json!("marker");
    b1.send_json(json!({"type":"publish","group":"room","body":marker,"id":2}))
        .await;
    expect_message(&mut b1, &marker).await;
    assert_eq!(
        b1.recv_json().await,
        json!({"type":"ack","id":2,"delivered":1,"cluster":true})
    );
    expect_message(&mut b2, &marker).await;
    expect_message(&mut a1, &marker).await;

    // A group's order is the same on every node.
    for i in 0..50 {
        a1.send_json(json!({"type":"publish","group":"room","body":i}))
            .await;
    }
    for c in [&mut a1, &mut b1, &mut b2] {
        let mut got = Vec::new();
        while got.len() < 50 {
            let e = c.recv_json().await;
            if e["type"] == "message" {
                got.push(e["body"].as_i64().unwrap());
            }
        }
        assert_eq!(got, (0..50).collect::<Vec<_>>());
    }
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
            (m["kind"].as_str(), m["from"].as_str()),
            (Some("direct"), Some("bob"))
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

/// The channels of routes (`g:`, `u:`, `all`); every node also hears the market's
/// `wxhub:ticker:quotes` (tests/e2e_cluster_ticker.rs).
const ROUTES: &str = "wxhub:[gua]*";

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
async fn malformed_messages_on_redis_are_dropped_and_recovery_says_not_recovered() {
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

    // No history in cluster mode yet: recovery honestly fails.
    let answer = a1
        .request(json!({"type":"subscribe","group":"room2","since":{"epoch":"e","offset":0}}))
        .await;
    assert_eq!(
        (answer["type"].as_str(), answer["recovered"].as_bool()),
        (Some("subscribed"), Some(false)),
        "{answer}"
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
    expect_message(&mut a1, &json!("still here")).await;
    assert_eq!(
        a1.recv_json().await,
        json!({"type":"ack","id":1,"delivered":1,"cluster":true})
    );
    expect_message(&mut a2, &json!("still here")).await;
    a.wait_log("cluster: cannot subscribe on Redis");
    a.wait_log("cluster: cannot publish to Redis");
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
    expect_message(&mut b1, &json!("across again")).await; // b1's own copy
    assert_eq!(b1.recv_json().await["type"], "ack");
    a1.send_json(json!({"type":"publish","group":"room","body":"from a again"}))
        .await;
    expect_message(&mut b1, &json!("from a again")).await;
}

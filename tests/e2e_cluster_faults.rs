//! Cluster mode when Redis goes away mid-traffic and comes back (#22): two hub processes
//! on a `redis-server` of the test's own, clients on both exchanging group and direct
//! messages. While Redis is down each node keeps serving its own sessions and `/readyz`
//! answers 503; once Redis is back on the same port both nodes are ready again, messages
//! cross both ways, every client is still connected and answers a ping, and no node
//! panicked.
//!
//! Two clients keep a stream of traffic going the whole time (a task of their own each),
//! so that Redis dies while the nodes are publishing to it. Nothing is asserted about
//! timing: each step waits for its event with a timeout, and what was on the way to the
//! other node when Redis stopped may or may not arrive (the steps skip it).

mod common;
#[path = "common/process.rs"]
mod process;
#[path = "common/redis.rs"]
mod redis_server;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use process::HubProcess;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use common::{http, Client, Got};
use redis_server::RedisServer;

/// How long a node may take to notice Redis gone, or back.
const WAIT: Duration = Duration::from_secs(20);

type Node = HubProcess;

impl Node {
    fn start(redis_url: &str, name: &str) -> Node {
        let mut cmd = HubProcess::command();
        // The traffic clients send hundreds of commands a second.
        cmd.args(["--node-name", name, "--redis", redis_url])
            .env("WXHUB_RATE_LIMIT", "100000")
            .env("WXHUB_RATE_BURST", "100000");
        let mut node = HubProcess::spawn(cmd);
        node.wait_log(&format!("cluster mode: node {name}/"));
        node
    }

    /// A client joined as `name`, in `groups`.
    async fn joined(&self, name: &str, groups: &[&str]) -> Client {
        let mut c = Client::connect(&format!("ws://{}/ws", self.addr)).await;
        let joined = c.request(json!({"type":"join","name":name})).await;
        assert_eq!(joined["type"], "joined", "{joined}");
        for group in groups {
            let subscribed = c.request(json!({"type":"subscribe","group":group})).await;
            assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
        }
        c
    }

    /// Waits until `/readyz` answers `status`.
    async fn wait_readyz(&self, status: u16) {
        let deadline = Instant::now() + WAIT;
        loop {
            let now = http(self.addr, "GET", "/readyz", &[], b"").await.status;
            if now == status {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz on {} answers {now}, never {status}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The node is still running and never logged a panic.
    fn assert_no_panic(&mut self) {
        assert!(
            matches!(self.child.try_wait(), Ok(None)),
            "the node on {} exited",
            self.addr
        );
        self.drain_log();
        let panics: Vec<&String> = self
            .seen
            .iter()
            .filter(|l| l.contains("panicked"))
            .collect();
        assert!(panics.is_empty(), "{panics:?}");
    }
}

/// Skips events until the message with this body (any other message, ack or leftover
/// from before is passed over); fails if none comes in time.
async fn expect_body(c: &mut Client, body: &Value) -> Value {
    c.expect(|v| v["type"] == "message" && v["body"] == *body)
        .await
}

/// Every client still answers a ping.
async fn all_answer(clients: &mut [&mut Client]) {
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_json(json!({"type":"ping","id":900 + i})).await;
        c.expect(|v| v["type"] == "pong" && v["id"] == 900 + i)
            .await;
    }
}

/// Keeps `me` publishing to `stream` and sending direct messages to `peer` every few
/// milliseconds, reading all the while, until `stop` says so; then hands the client back.
/// Each body is `[epoch, n]`, the epoch read from `epoch` when sent; `heard` counts the
/// messages from `peer` of the current epoch (so what was on the way before is not
/// counted after).
fn traffic(
    mut me: Client,
    peer: &'static str,
    epoch: watch::Receiver<u64>,
    heard: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<Client> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        let mut n = 0u64;
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = tick.tick() => {
                    n += 1;
                    let body = json!([*epoch.borrow(), n]);
                    me.send_json(json!({"type":"publish","group":"stream","body":body})).await;
                    me.send_json(json!({"type":"direct","to":peer,"body":body})).await;
                }
                got = me.next() => match got {
                    Got::Text(t) => {
                        let v: Value = serde_json::from_str(&t).unwrap_or_else(|e| panic!("{e}: {t}"));
                        if v["type"] == "message" && v["from"] == peer && v["body"][0] == *epoch.borrow() {
                            heard.fetch_add(1, Relaxed);
                        }
                    }
                    other => panic!("a traffic client lost its connection: {other:?}"),
                },
            }
        }
        me
    })
}

/// Waits until `heard` counts at least one message.
async fn wait_heard(heard: &AtomicU64, who: &str) {
    let deadline = Instant::now() + WAIT;
    while heard.load(Relaxed) == 0 {
        assert!(Instant::now() < deadline, "{who} never heard its peer");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_redis_outage_mid_traffic_keeps_local_routing_and_cross_node_routing_resumes() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut a = Node::start(&url, "a");
    let mut b = Node::start(&url, "b");
    let mut a1 = a.joined("a1", &["room"]).await;
    let mut a2 = a.joined("a2", &["room"]).await;
    let mut b1 = b.joined("b1", &["room"]).await;
    let mut b2 = b.joined("b2", &["room"]).await;
    let ta = a.joined("ta", &["stream"]).await;
    let tb = b.joined("tb", &["stream"]).await;
    for channel in ["wxhub:g:room", "wxhub:g:stream"] {
        redis.wait_subscribers(channel, 2).await;
    }
    for user in ["a1", "a2", "b1", "b2", "ta", "tb"] {
        redis.wait_subscribers(&format!("wxhub:u:{user}"), 1).await;
    }
    a.wait_readyz(200).await;
    b.wait_readyz(200).await;

    // Traffic across the nodes, all the time from here on.
    let (stop, stopped) = watch::channel(false);
    let (epoch, epoch_rx) = watch::channel(1u64);
    let heard = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let traffic_a = traffic(
        ta,
        "tb",
        epoch_rx.clone(),
        heard[0].clone(),
        stopped.clone(),
    );
    let traffic_b = traffic(tb, "ta", epoch_rx, heard[1].clone(), stopped);
    wait_heard(&heard[0], "ta").await;
    wait_heard(&heard[1], "tb").await;

    // Before: group and direct messages cross both ways.
    let before = json!("before, from a1");
    a1.send_json(json!({"type":"publish","group":"room","body":before}))
        .await;
    for c in [&mut a2, &mut b1, &mut b2] {
        expect_body(c, &before).await;
    }
    let before = json!("before, from b1");
    b1.send_json(json!({"type":"publish","group":"room","body":before}))
        .await;
    for c in [&mut a1, &mut a2, &mut b2] {
        expect_body(c, &before).await;
    }
    let direct = json!("before, a1 to b2");
    a1.send_json(json!({"type":"direct","to":"b2","body":direct}))
        .await;
    expect_body(&mut b2, &direct).await;
    let direct = json!("before, b1 to a2");
    b1.send_json(json!({"type":"direct","to":"a2","body":direct}))
        .await;
    expect_body(&mut a2, &direct).await;

    // A burst of group messages from both sides, and Redis stops in the middle of it.
    for i in 0..50 {
        a1.send_json(json!({"type":"publish","group":"room","body":["burst a", i]}))
            .await;
        b1.send_json(json!({"type":"publish","group":"room","body":["burst b", i]}))
            .await;
    }
    let port = redis.stop();

    // Meanwhile: neither node is ready, and each still routes among its own sessions.
    a.wait_readyz(503).await;
    b.wait_readyz(503).await;
    for round in 0..3 {
        let local = json!(["during, from a1", round]);
        a1.send_json(json!({"type":"publish","group":"room","body":local}))
            .await;
        expect_body(&mut a2, &local).await;
        let local = json!(["during, from b2", round]);
        b2.send_json(json!({"type":"publish","group":"room","body":local}))
            .await;
        expect_body(&mut b1, &local).await;
        let direct = json!(["during, a2 to a1", round]);
        a2.send_json(json!({"type":"direct","to":"a1","body":direct}))
            .await;
        expect_body(&mut a1, &direct).await;
        let direct = json!(["during, b1 to b2", round]);
        b1.send_json(json!({"type":"direct","to":"b2","body":direct}))
            .await;
        expect_body(&mut b2, &direct).await;
    }
    all_answer(&mut [&mut a1, &mut a2, &mut b1, &mut b2]).await;

    // Redis is back on the same port: both nodes subscribe again and are ready.
    let redis = RedisServer::start_on(port).expect("redis-server on the same port again");
    a.wait_log("cluster: subscribed on Redis again");
    b.wait_log("cluster: subscribed on Redis again");
    a.wait_readyz(200).await;
    b.wait_readyz(200).await;
    for channel in ["wxhub:g:room", "wxhub:g:stream"] {
        redis.wait_subscribers(channel, 2).await;
    }
    for user in ["a1", "a2", "b1", "b2", "ta", "tb"] {
        redis.wait_subscribers(&format!("wxhub:u:{user}"), 1).await;
    }

    // After: group and direct messages cross both ways again.
    let after = json!("after, from a2");
    a2.send_json(json!({"type":"publish","group":"room","body":after}))
        .await;
    for c in [&mut a1, &mut b1, &mut b2] {
        expect_body(c, &after).await;
    }
    let after = json!("after, from b2");
    b2.send_json(json!({"type":"publish","group":"room","body":after}))
        .await;
    for c in [&mut a1, &mut a2, &mut b1] {
        expect_body(c, &after).await;
    }
    let direct = json!("after, a1 to b1");
    a1.send_json(json!({"type":"direct","to":"b1","body":direct}))
        .await;
    expect_body(&mut b1, &direct).await;
    let direct = json!("after, b2 to a2");
    b2.send_json(json!({"type":"direct","to":"a2","body":direct}))
        .await;
    expect_body(&mut a2, &direct).await;

    // The traffic clients hear each other again too (messages sent from now on), and
    // are still connected.
    let _ = epoch.send(2);
    for h in &heard {
        h.store(0, Relaxed);
    }
    wait_heard(&heard[0], "ta").await;
    wait_heard(&heard[1], "tb").await;
    let _ = stop.send(true);
    let mut ta = traffic_a.await.expect("traffic on a");
    let mut tb = traffic_b.await.expect("traffic on b");
    all_answer(&mut [&mut a1, &mut a2, &mut b1, &mut b2, &mut ta, &mut tb]).await;
    a.assert_no_panic();
    b.assert_no_panic();
}

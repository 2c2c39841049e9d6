//! Presence across nodes (cluster mode), for real: a `redis-server` of the test's own and
//! two hub processes sharing it. `users`, the server API's listings and presence events
//! answer for the whole cluster; a node killed with SIGKILL leaves presence within
//! `--presence-ttl`, with `leave` for its users.
//!
//! Presence is written asynchronously (each node's presence task), so a test waits for
//! what the API reports before it counts on it. "Once" is checked with a later event:
//! every presence event crosses one Redis channel in the order Redis decided them, so a
//! duplicate or a stray event would come before the event that follows it.

mod common;
#[path = "common/process.rs"]
mod process;
#[path = "common/redis.rs"]
mod redis_server;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{http, Client};
use process::HubProcess;
use redis_server::RedisServer;
use serde_json::{json, Value};

const API_KEY: &str = "cluster-test-key-0123456789";

/// `--presence-ttl` of the nodes here: short, so that a killed node goes soon.
const TTL: Duration = Duration::from_secs(2);

type Node = HubProcess;

fn node(redis: &RedisServer, name: &str) -> Node {
    let mut cmd = HubProcess::command();
    cmd.args(["--node-name", name, "--redis", &redis.url()])
        .args(["--presence-ttl", &format!("{}ms", TTL.as_millis())])
        .env("WXHUB_API_KEY", API_KEY);
    let mut node = HubProcess::spawn(cmd);
    node.wait_log(&format!("cluster presence: node {name}/"));
    node
}

/// A client of `node` joined as `name`, in `groups` (watching presence in those that
/// start with `+`).
async fn joined(node: &Node, name: &str, groups: &[&str]) -> Client {
    let mut c = Client::connect(&format!("ws://{}/ws", node.addr)).await;
    let joined = c.request(json!({"type":"join","name":name})).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    for group in groups {
        let (group, presence) = match group.strip_prefix('+') {
            Some(g) => (g, true),
            None => (*group, false),
        };
        let subscribed = c
            .request(json!({"type":"subscribe","group":group,"presence":presence}))
            .await;
        assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    }
    c
}

/// `GET path` on the server API of `node`: status and JSON.
async fn get(node: &Node, path: &str) -> (u16, Value) {
    let auth = format!("Authorization: Bearer {API_KEY}");
    let reply = http(node.addr, "GET", path, &[&auth], b"").await;
    let body = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
    (reply.status, body)
}

/// Asks `path` until its answer satisfies `done` (presence is written asynchronously).
async fn until(node: &Node, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(node, path).await;
        if status == 200 && done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{path} never got there: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next event is a presence event; (event, name).
async fn presence(c: &mut Client, group: &str) -> (String, String) {
    let e = c.recv_json().await;
    assert_eq!(
        (e["type"].as_str(), e["group"].as_str()),
        (Some("presence"), Some(group)),
        "{e}"
    );
    (
        e["event"].as_str().unwrap().to_owned(),
        e["name"].as_str().unwrap().to_owned(),
    )
}

fn names(v: &Value, key: &str) -> Vec<(String, u64)> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {v}"))
        .iter()
        .map(|e| {
            let name = e.get("name").or_else(|| e.get("group")).unwrap();
            let n = e.get("sessions").or_else(|| e.get("members")).unwrap();
            (name.as_str().unwrap().to_owned(), n.as_u64().unwrap())
        })
        .collect()
}

fn entries(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(n, c)| (n.to_string(), *c)).collect()
}

#[tokio::test]
async fn users_and_the_api_list_the_whole_cluster() {
    let redis = RedisServer::start();
    // Garbage where the users are kept: skipped, never listed, nothing breaks.
    let _: () = ::redis::cmd("ZADD")
        .arg("wxhub:p:users")
        .arg(0)
        .arg(&b"bad\xff"[..])
        .query(&mut redis.connect())
        .unwrap();
    let (mut a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut alice = joined(&a, "alice", &["room"]).await;
    let _bob = joined(&b, "bob", &["room"]).await;
    let _carol = joined(&b, "carol", &["other"]).await;
    until(&a, "/api/users", |v| {
        v["users"].as_array().is_some_and(|u| u.len() == 3)
    })
    .await;

    let (_, users) = get(&a, "/api/users").await;
    assert_eq!(
        names(&users, "users"),
        entries(&[("alice", 1), ("bob", 1), ("carol", 1)])
    );
    a.wait_log("skipped a name or group in Redis presence that is malformed");
    let reply = alice.request(json!({"type":"users","id":1})).await;
    assert_eq!(
        (&reply["users"], &reply["next"]),
        (&json!(["alice", "bob", "carol"]), &Value::Null),
        "{reply}"
    );
    let reply = alice
        .request(json!({"type":"users","limit":1,"after":"alice","id":2}))
        .await;
    assert_eq!(
        reply,
        json!({"type":"users","id":2,"users":["bob"],"count":3,"next":"bob"}),
        "the garbage was taken out when first read"
    );
    let reply = alice
        .request(json!({"type":"users","group":"room","id":3}))
        .await;
    assert_eq!(
        reply,
        json!({"type":"users","id":3,"group":"room","users":["alice","bob"],"count":2})
    );
    let (status, room) = get(&b, "/api/groups/room").await;
    assert_eq!(status, 200, "{room}");
    assert_eq!(
        names(&room, "members"),
        entries(&[("alice", 1), ("bob", 1)])
    );
    assert_eq!(room["count"], 2);
    let (_, groups) = get(&b, "/api/groups").await;
    assert_eq!(
        names(&groups, "groups"),
        entries(&[("other", 1), ("room", 2)])
    );
    let (_, top) = get(&b, "/api/groups?order=members&limit=1").await;
    assert_eq!(names(&top, "groups"), entries(&[("room", 2)]));
    let (_, found) = get(&a, "/api/users?prefix=c").await;
    assert_eq!(names(&found, "users"), entries(&[("carol", 1)]));
    let (status, bob) = get(&a, "/api/users/bob").await;
    assert_eq!(
        (status, &bob),
        (200, &json!({"name":"bob","sessions":1,"groups":["room"]}))
    );
    assert_eq!(get(&a, "/api/users/nobody").await.0, 404);
    assert_eq!(get(&a, "/api/groups/empty").await.0, 404);

    // A second session of alice, on the other node: one user, two sessions.
    let _alice_on_b = joined(&b, "alice", &["room"]).await;
    let alice_now = until(&a, "/api/users/alice", |v| v["sessions"] == 2).await;
    assert_eq!(alice_now["groups"], json!(["room"]));
    let room = until(&a, "/api/groups/room", |v| v["members"][0]["sessions"] == 2).await;
    assert_eq!(room["count"], 2, "alice counts once: {room}");
}

#[tokio::test]
async fn a_watcher_sees_join_and_leave_of_users_on_other_nodes_once() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut watcher = joined(&a, "w", &["+room"]).await;
    assert_eq!(
        presence(&mut watcher, "room").await,
        ("join".into(), "w".into())
    );

    let bob = joined(&b, "bob", &["room"]).await;
    assert_eq!(
        presence(&mut watcher, "room").await,
        ("join".into(), "bob".into())
    );
    // bob's second session, on a, and then his first one going: no event either time.
    let bob_on_a = joined(&a, "bob", &["room"]).await;
    until(&a, "/api/users/bob", |v| v["sessions"] == 2).await;
    bob.close().await;
    until(&a, "/api/users/bob", |v| v["sessions"] == 1).await;
    // A marker: anything about bob since his join would come before it.
    let carol = joined(&b, "carol", &["room"]).await;
    assert_eq!(
        presence(&mut watcher, "room").await,
        ("join".into(), "carol".into())
    );
    // His last session anywhere: leave, once (carol's leave comes right after).
    bob_on_a.close().await;
    assert_eq!(
        presence(&mut watcher, "room").await,
        ("leave".into(), "bob".into())
    );
    carol.close().await;
    assert_eq!(
        presence(&mut watcher, "room").await,
        ("leave".into(), "carol".into())
    );
}

#[tokio::test]
async fn a_killed_node_leaves_presence_within_the_ttl() {
    let redis = RedisServer::start();
    let (mut a, mut b) = (node(&redis, "a"), node(&redis, "b"));
    let mut watcher = joined(&a, "w", &["+room"]).await;
    assert_eq!(
        presence(&mut watcher, "room").await,
        ("join".into(), "w".into())
    );
    let mut alice = joined(&a, "alice", &["room"]).await;
    let _on_b = [
        joined(&b, "bob", &["room"]).await,
        joined(&b, "dave", &["room"]).await,
        joined(&b, "alice", &["room"]).await,
    ];
    let mut arrived = BTreeSet::new();
    while arrived.len() < 3 {
        let (event, name) = presence(&mut watcher, "room").await;
        assert_eq!(event, "join");
        arrived.insert(name);
    }
    assert_eq!(
        arrived,
        BTreeSet::from(["alice".into(), "bob".into(), "dave".into()])
    );
    until(&a, "/api/users", |v| v["count"] == 4).await;

    b.kill();
    let killed = Instant::now();
    let mut left = BTreeSet::new();
    while left.len() < 2 {
        let (event, name) = presence(&mut watcher, "room").await;
        assert_eq!(event, "leave");
        left.insert(name);
    }
    let took = killed.elapsed();
    assert_eq!(
        left,
        BTreeSet::from(["bob".into(), "dave".into()]),
        "alice is still on a"
    );
    assert!(
        took <= TTL + Duration::from_millis(1500),
        "leave came after {took:?}"
    );
    a.wait_log("cluster: node \"b/");

    let (_, users) = get(&a, "/api/users").await;
    assert_eq!(names(&users, "users"), entries(&[("alice", 1), ("w", 1)]));
    let (_, room) = get(&a, "/api/groups/room").await;
    assert_eq!(names(&room, "members"), entries(&[("alice", 1), ("w", 1)]));
    // A marker: a stray leave for alice would have come before hers now.
    let left = alice
        .request(json!({"type":"unsubscribe","group":"room"}))
        .await;
    assert_eq!(left["type"], "unsubscribed");
    assert_eq!(
        presence(&mut watcher, "room").await,
        ("leave".into(), "alice".into())
    );
}

#[tokio::test]
async fn without_redis_users_answers_an_error_and_the_session_goes_on() {
    let redis = RedisServer::start();
    let url = redis.url();
    drop(redis); // nothing listens there now
    let mut cmd = HubProcess::command();
    cmd.args(["--node-name", "lonely", "--redis", &url])
        .env("WXHUB_API_KEY", API_KEY);
    let lonely = HubProcess::spawn(cmd);
    let mut c = joined(&lonely, "alice", &["room"]).await;
    let reply = c.request(json!({"type":"users","id":1})).await;
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_str()),
        (Some("error"), Some("overloaded")),
        "{reply}"
    );
    assert_eq!(
        c.request(json!({"type":"ping","id":2})).await["type"],
        "pong"
    );
    let (status, body) = get(&lonely, "/api/users").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("overloaded")),
        "{body}"
    );
}

#[tokio::test]
async fn after_redis_comes_back_empty_the_nodes_write_their_presence_again() {
    let redis = RedisServer::start();
    let port = redis.port;
    let (mut a, b) = (node(&redis, "a"), node(&redis, "b"));
    let _alice = joined(&a, "alice", &["room"]).await;
    let _bob = joined(&b, "bob", &["room"]).await;
    until(&a, "/api/groups/room", |v| v["count"] == 2).await;

    // Redis restarts with nothing (no persistence): every node's registration lapsed.
    drop(redis);
    let (status, _) = get(&a, "/api/users").await;
    assert_eq!(status, 503, "no Redis, no cluster listing");
    let _redis = RedisServer::start_on(port).expect("redis-server on the same port");
    a.wait_log("this node's presence had lapsed; writing its");
    let room = until(&a, "/api/groups/room", |v| v["count"] == 2).await;
    assert_eq!(
        names(&room, "members"),
        entries(&[("alice", 1), ("bob", 1)])
    );
}

#[tokio::test]
async fn a_node_that_shuts_down_leaves_presence_at_once() {
    let redis = RedisServer::start();
    let a = node(&redis, "a");
    // A ttl far longer than the wait for `leave`: only the node's own removal explains it.
    let mut cmd = HubProcess::command();
    cmd.args(["--node-name", "b", "--redis", &redis.url()])
        .args(["--presence-ttl", "60s"]);
    let mut b = HubProcess::spawn(cmd);
    b.wait_log("cluster presence: node b/");
    let mut watcher = joined(&a, "w", &["+room"]).await;
    assert_eq!(
        presence(&mut watcher, "room").await,
        ("join".into(), "w".into())
    );
    let _bob = joined(&b, "bob", &["room"]).await;
    assert_eq!(
        presence(&mut watcher, "room").await,
        ("join".into(), "bob".into())
    );

    // SAFETY: signals our own child process.
    assert_eq!(unsafe { libc::kill(b.child.id() as i32, libc::SIGTERM) }, 0);
    assert_eq!(
        presence(&mut watcher, "room").await,
        ("leave".into(), "bob".into())
    );
    b.wait_log("cluster: left presence");
}

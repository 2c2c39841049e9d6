//! Cluster mode's one market (`--redis`): a `redis-server` of the test's own and two or
//! three hub processes sharing it. Only the node holding the lease ticks; every node's subscribers
//! see its ticks; when it dies another node takes over within the lease and continues
//! from the last prices.

mod common;
#[path = "common/process.rs"]
mod process;
#[path = "common/redis.rs"]
mod redis_server;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Client;
use process::HubProcess;
use redis_server::RedisServer;
use serde_json::{json, Value};

const TICK: Duration = Duration::from_millis(300);
const LEASE: Duration = Duration::from_secs(1);

const LEADER_KEY: &str = "wxhub:ticker:leader";
const STATE_KEY: &str = "wxhub:ticker:state";
const QUOTES: &str = "wxhub:ticker:quotes";

/// A hub process in cluster mode, ticking every [`TICK`] while it holds a [`LEASE`].
fn node(redis: &RedisServer, name: &str) -> HubProcess {
    node_with_lease(redis, name, LEASE)
}

fn node_with_lease(redis: &RedisServer, name: &str, lease: Duration) -> HubProcess {
    let mut cmd = HubProcess::command();
    cmd.args(["--node-name", name, "--redis", &redis.url()])
        .args(["--tick-ms", &TICK.as_millis().to_string()])
        .args(["--ticker-lease", &format!("{}ms", lease.as_millis())]);
    let mut node = HubProcess::spawn(cmd);
    node.wait_log(&format!("ticker: node {name}/"));
    node
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The name of the node holding the lease (`name/suffix` in Redis), once one does.
async fn leader(redis: &RedisServer) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let holder: Option<String> = redis::cmd("GET")
            .arg(LEADER_KEY)
            .query(&mut redis.connect())
            .unwrap();
        if let Some(holder) = holder {
            return holder.split('/').next().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no node ever took the lease");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A client subscribed to `group`, its `subscribed` read (the snapshot comes next).
async fn subscriber(node: &HubProcess, group: &str) -> Client {
    let mut c = Client::connect(&format!("ws://{}/ws", node.addr)).await;
    let joined = c.request(json!({"type":"join","name":"viewer"})).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    let subscribed = c.request(json!({"type":"subscribe","group":group})).await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    c
}

/// The next market event (`tick` or `quote`) and its `ts`.
async fn next_market(c: &mut Client) -> (u64, Value) {
    let v = c
        .expect(|v| v["type"] == "tick" || v["type"] == "quote")
        .await;
    let ts = v["ts"]
        .as_u64()
        .or_else(|| v["quote"]["ts"].as_u64())
        .unwrap_or_else(|| panic!("no ts in {v}"));
    (ts, v)
}

/// Market events until one at or after `ts`.
async fn until_ts(c: &mut Client, ts: u64) -> Vec<(u64, Value)> {
    let mut seen = Vec::new();
    loop {
        let event = next_market(c).await;
        let done = event.0 >= ts;
        seen.push(event);
        if done {
            return seen;
        }
    }
}

/// The events of `a` and of `b` in the span of time both saw: the same, in the same
/// order; returns how many.
fn same_in_common_span(a: &[(u64, Value)], b: &[(u64, Value)]) -> usize {
    let from = a[0].0.max(b[0].0);
    let to = a.last().unwrap().0.min(b.last().unwrap().0);
    let span = |events: &[(u64, Value)]| -> Vec<(u64, Value)> {
        events
            .iter()
            .filter(|(ts, _)| (from..=to).contains(ts))
            .cloned()
            .collect()
    };
    let (a, b) = (span(a), span(b));
    assert_eq!(a, b, "the two nodes' subscribers saw different ticks");
    a.len()
}

fn quotes(tick: &Value) -> &Vec<Value> {
    tick["quotes"].as_array().expect("a tick has quotes")
}

fn num(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

#[tokio::test]
async fn every_node_shows_the_leaders_ticks_and_a_dead_leaders_market_goes_on() {
    let redis = RedisServer::start();
    let mut a = node(&redis, "a");
    a.wait_log("ticker: this node leads the market now");
    let mut b = node(&redis, "b");
    let mut c = node(&redis, "c");
    assert_eq!(leader(&redis).await, "a");

    let mut a_all = subscriber(&a, "stock").await;
    let mut a_one = subscriber(&a, "stock.600519").await;
    let mut b_all = subscriber(&b, "stock").await;
    let mut b_one = subscriber(&b, "stock.600519").await;
    let mut c_all = subscriber(&c, "stock").await;

    // Same ticks, same order, on both nodes: six of a's, and b's up to the last of them.
    let mut seen_a = Vec::new();
    for _ in 0..6 {
        seen_a.push(next_market(&mut a_all).await);
    }
    let last = seen_a.last().unwrap().0;
    let seen_b = until_ts(&mut b_all, last).await;
    assert!(
        same_in_common_span(&seen_a, &seen_b) >= 4,
        "{seen_a:?} {seen_b:?}"
    );
    let (one_a, one_b) = (
        until_ts(&mut a_one, last).await,
        until_ts(&mut b_one, last).await,
    );
    assert!(
        same_in_common_span(&one_a, &one_b) >= 4,
        "{one_a:?} {one_b:?}"
    );
    // A symbol's page shows the same quote as the whole market's tick.
    let (ts, tick) = &seen_b[seen_b.len() - 1];
    let (one_ts, one) = &one_b[one_b.len() - 1];
    assert_eq!(ts, one_ts);
    assert_eq!(quotes(tick)[0], one["quote"]);

    // b and c follow: they never tick, they only pass a's ticks on.
    for follower in [&mut b, &mut c] {
        follower.drain_log();
        assert!(!follower
            .seen
            .iter()
            .any(|l| l.contains("leads the market now")));
    }

    // The leader dies (no shutdown: its lease stays in Redis until it runs out).
    let mut before = b_all.expect(|v| v["type"] == "tick").await;
    a.kill();
    let (killed_at, killed_ms) = (Instant::now(), now_ms());
    // Ticks already on their way from a may still come: the last of them is the market
    // before the failover.
    let after = loop {
        let (ts, tick) = next_market(&mut b_all).await;
        if ts > killed_ms {
            break tick;
        }
        before = tick;
    };
    let took = killed_at.elapsed();
    eprintln!("quotes resumed {took:?} after the leader died");
    assert!(
        took <= LEASE + TICK,
        "quotes resumed {took:?} after the leader died, more than the lease ({LEASE:?}) and a tick ({TICK:?})"
    );
    // One of b and c took over, and only one: both show its ticks, the same.
    let winner = leader(&redis).await;
    let (new_leader, other) = match winner.as_str() {
        "b" => (&mut b, &mut c),
        "c" => (&mut c, &mut b),
        _ => panic!("{winner} leads"),
    };
    new_leader.wait_log("ticker: this node leads the market now");
    let mut seen_b = vec![(after["ts"].as_u64().unwrap(), after.clone())];
    for _ in 0..3 {
        seen_b.push(next_market(&mut b_all).await);
    }
    let seen_c = until_ts(&mut c_all, seen_b.last().unwrap().0).await;
    assert!(
        same_in_common_span(&seen_b, &seen_c) >= 4,
        "{seen_b:?} {seen_c:?}"
    );
    other.drain_log();
    assert!(!other
        .seen
        .iter()
        .any(|l| l.contains("leads the market now")));

    // The market goes on from where it was: the same open, the price a tick's move from
    // the last, the day's high, low and turnover carried over (no jump back to the open).
    for (old, new) in quotes(&before).iter().zip(quotes(&after)) {
        assert_eq!(old["symbol"], new["symbol"]);
        assert_eq!(old["open"], new["open"], "{old} {new}");
        let (p0, p1) = (num(old, "price"), num(new, "price"));
        assert!((p1 / p0 - 1.0).abs() < 0.02, "{p0} -> {p1}: {old} {new}");
        assert!(num(new, "high") >= num(old, "high"), "{old} {new}");
        assert!(num(new, "low") <= num(old, "low"), "{old} {new}");
        assert!(num(new, "turnover") > num(old, "turnover"), "{old} {new}");
    }
    // The symbol's page goes on too.
    let (ts, _) = loop {
        let event = next_market(&mut b_one).await;
        if event.0 > killed_ms {
            break event;
        }
    };
    assert!(ts >= after["ts"].as_u64().unwrap());

    // A new subscriber on b gets the current market as its snapshot, not the opening.
    let mut late = subscriber(&b, "stock").await;
    let (ts, snapshot) = next_market(&mut late).await;
    assert!(ts > killed_ms, "{snapshot}");
    assert!(num(&quotes(&snapshot)[0], "turnover") > 0.0, "{snapshot}");

    // `history` on b holds the ticks of both leaders, in order.
    b_one
        .send_json(json!({"type":"history","symbol":"600519","limit":100,"id":"h"}))
        .await;
    let history = b_one.expect(|v| v["type"] == "history").await;
    let ts: Vec<u64> = history["quotes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["ts"].as_u64().unwrap())
        .collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "{ts:?}");
    assert!(
        ts.iter().any(|&t| t <= killed_ms) && ts.iter().any(|&t| t > killed_ms),
        "{ts:?}"
    );
}

/// A leader shut down (SIGTERM) gives its lease back: another node takes the market
/// over at once, not when the lease would have run out.
#[tokio::test]
async fn a_leader_shut_down_hands_the_market_over_at_once() {
    let redis = RedisServer::start();
    let lease = Duration::from_secs(5);
    let mut a = node_with_lease(&redis, "a", lease);
    a.wait_log("ticker: this node leads the market now");
    let mut b = node_with_lease(&redis, "b", lease);
    let mut b_all = subscriber(&b, "stock").await;
    next_market(&mut b_all).await; // the snapshot
    let (_, before) = next_market(&mut b_all).await;
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(a.child.id() as i32, libc::SIGTERM) };
    let (stopped_at, stopped_ms) = (Instant::now(), now_ms());
    a.wait_log("ticker: node a/");
    a.wait_log("gave the lead back");
    let after = loop {
        let (ts, tick) = next_market(&mut b_all).await;
        if ts > stopped_ms {
            break tick;
        }
    };
    let took = stopped_at.elapsed();
    eprintln!("quotes resumed {took:?} after the leader stopped");
    assert!(
        took < lease / 2,
        "quotes resumed {took:?} after the leader stopped"
    );
    b.wait_log("ticker: this node leads the market now");
    assert_eq!(leader(&redis).await, "b");
    for (old, new) in quotes(&before).iter().zip(quotes(&after)) {
        assert!(num(new, "turnover") > num(old, "turnover"), "{old} {new}");
    }
}

/// A leader that loses Redis stops ticking on its own (it cannot tell whether another
/// node took the lease), and leads again, from its last prices, once Redis is back.
#[tokio::test]
async fn a_leader_cut_off_from_redis_stops_ticking_until_it_is_back() {
    let redis = RedisServer::start();
    let port = redis.port;
    let mut a = node(&redis, "a");
    a.wait_log("ticker: this node leads the market now");
    let mut watcher = subscriber(&a, "stock").await;
    next_market(&mut watcher).await; // the snapshot
    let (_, before) = next_market(&mut watcher).await;

    drop(redis);
    let cut = Instant::now();
    a.wait_log("ticker: node a/");
    a.wait_log("lost the lead of the market");
    let lost_ms = now_ms();
    assert!(
        cut.elapsed() <= LEASE,
        "still leading {:?} after",
        cut.elapsed()
    );
    // Ticks made before may still be on their way; none after.
    let mut last = before;
    while let Ok((ts, tick)) = tokio::time::timeout(TICK * 3, next_market(&mut watcher)).await {
        assert!(ts <= lost_ms, "a tick after the lead was lost: {tick}");
        last = tick;
    }

    a.drain_log();
    a.seen.clear();
    let _redis = RedisServer::start_on(port).expect("redis-server again on its port");
    a.wait_log("ticker: this node leads the market now");
    let (_, tick) = next_market(&mut watcher).await;
    for (old, new) in quotes(&last).iter().zip(quotes(&tick)) {
        assert_eq!(old["open"], new["open"]);
        assert!(num(new, "turnover") > num(old, "turnover"), "{old} {new}");
    }
}

/// What is in Redis is input too: a saved state that is not this market's is ignored
/// (the leader starts from the open), and what else the quotes channel carries is dropped
/// by the followers, whose subscribers go on getting the leader's ticks.
#[tokio::test]
async fn hostile_state_and_ticks_in_redis_are_ignored() {
    let redis = RedisServer::start();
    let open: f64 = 1688.0; // 600519's
    let foreign = json!({"ts": 1, "symbols": [{"code":"600519","open":open,"price":open * 10.0,"exact":open * 10.0,
        "high":open * 10.0,"low":open,"volume":100,"turnover":1e9,"drift":0.0,"vol":0.001}]});
    let _: () = redis::cmd("SET")
        .arg(STATE_KEY)
        .arg(foreign.to_string())
        .query(&mut redis.connect())
        .unwrap();
    let mut a = node(&redis, "a");
    a.wait_log("ticker: ignored the market state saved in Redis");
    a.wait_log("ticker: this node leads the market now");
    let mut b = node(&redis, "b");
    let mut b_all = subscriber(&b, "stock").await;
    let (_, tick) = next_market(&mut b_all).await;
    let first = &quotes(&tick)[0];
    assert_eq!(num(first, "open"), open);
    assert!((num(first, "price") / open - 1.0).abs() < 0.05, "{first}");
    assert!(num(first, "turnover") < 1e9, "{first}");

    redis.wait_subscribers(QUOTES, 2).await;
    let bad_state = json!({"ts": 2, "symbols": []}).to_string();
    for payload in [
        b"no newline".to_vec(),
        b"x/1\nnot json".to_vec(),
        format!("x/1\n{bad_state}").into_bytes(),
    ] {
        assert_eq!(redis.publish(QUOTES, &payload), 2);
    }
    b.wait_log("ticker: dropped a malformed tick from Redis: no origin line");
    b.wait_log("ticker: dropped a malformed tick from Redis: the frame is not a JSON object");
    b.wait_log("ticker: ignored a market state published on Redis: it lists other symbols");
    // Still the leader's market, still moving.
    let (t0, _) = next_market(&mut b_all).await;
    let (t1, tick) = next_market(&mut b_all).await;
    assert!(t1 > t0);
    assert_eq!(quotes(&tick).len(), 6);

    // A saved state far too long for a market is not even read whole.
    let other = RedisServer::start();
    let _: () = redis::cmd("SET")
        .arg(STATE_KEY)
        .arg(format!("{{\"ts\":1,\"pad\":\"{}\"}}", "x".repeat(1 << 20)))
        .query(&mut other.connect())
        .unwrap();
    let mut d = node(&other, "d");
    d.wait_log("ticker: the saved market state is longer than");
    d.wait_log("ticker: this node leads the market now");
}

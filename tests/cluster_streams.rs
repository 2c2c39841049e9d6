//! The Lua scripts of cluster mode's history (`wxhub::cluster::streams`) against a real
//! `redis-server`: numbering, retention by size and age, a lost epoch, and what a read
//! refuses to pass on.

#[path = "common/redis.rs"]
mod redis_server;

use std::time::Duration;

use bytestring::ByteString;
use redis::aio::MultiplexedConnection;
use wxhub::cluster::streams::{self, Keys, PUBLISH_SCRIPT, READ_SCRIPT};
use wxhub::cluster::{Answer, Ask, Channels, Read, Route};
use wxhub::history::Position;

struct Redis {
    _server: redis_server::RedisServer,
    conn: MultiplexedConnection,
    keys: Keys,
    channels: Channels,
}

impl Redis {
    async fn start() -> Redis {
        let server = redis_server::RedisServer::start();
        let client = redis::Client::open(server.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        for script in [PUBLISH_SCRIPT, READ_SCRIPT] {
            let _: String = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(script)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        Redis {
            _server: server,
            conn,
            keys: Keys::new("t"),
            channels: Channels::new("t"),
        }
    }

    /// Publishes body `n` in `group`, keeping `keep` for `ttl`; its offset.
    async fn publish(&mut self, group: &str, n: u64, keep: usize, ttl: Duration) -> u64 {
        let head = format!(r#"{{"type":"message","group":"{group}","offset":"#);
        let tail = format!(r#","body":{n}}}"#);
        let cmd = streams::publish_cmd(
            &streams::sha(PUBLISH_SCRIPT),
            &self.keys,
            &self.channels,
            Route::Group(group),
            &head,
            &tail,
            keep,
            ttl.as_millis() as u64,
        )
        .unwrap();
        cmd.query_async(&mut self.conn).await.unwrap()
    }

    async fn read(&mut self, group: &str, ask: Ask, ttl: Duration) -> Answer {
        self.read_within(group, ask, ttl, 1 << 20).await
    }

    async fn read_within(
        &mut self,
        group: &str,
        ask: Ask,
        ttl: Duration,
        max_bytes: usize,
    ) -> Answer {
        let read = Read {
            ticket: 1,
            route: Route::Group(group.into()),
            ask,
            ttl_ms: ttl.as_millis() as u64,
            max_bytes,
        };
        let cmd = streams::read_cmd(&streams::sha(READ_SCRIPT), &self.keys, &read).unwrap();
        let value: redis::Value = cmd.query_async(&mut self.conn).await.unwrap();
        streams::answer(value).unwrap()
    }
}

fn bodies(frames: &[ByteString]) -> Vec<(u64, u64)> {
    frames
        .iter()
        .map(|f| {
            let v: serde_json::Value = serde_json::from_str(f).unwrap();
            (v["offset"].as_u64().unwrap(), v["body"].as_u64().unwrap())
        })
        .collect()
}

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn offsets_count_without_gaps_and_a_read_returns_exactly_what_came_after() {
    let mut r = Redis::start().await;
    let start = r.read("g", Ask::Position, MINUTE).await;
    assert_eq!((start.position.offset, start.recovered), (0, None));
    // A read of a stream nobody wrote to leaves its position for the stream's ttl only.
    let pttl: i64 = redis::cmd("PTTL")
        .arg("t:m:g:g")
        .query_async(&mut r.conn)
        .await
        .unwrap();
    assert!((1..=60_000).contains(&pttl), "{pttl}");
    for n in 1..=5 {
        assert_eq!(r.publish("g", n * 10, 3, MINUTE).await, n);
    }
    let epoch = start.position.epoch.clone();
    let since = |offset| {
        Ask::Since(
            Position {
                epoch: epoch.clone(),
                offset,
            },
            100,
        )
    };
    // The last three are kept: from 2 on, everything is there.
    let a = r.read("g", since(2), MINUTE).await;
    assert_eq!((a.recovered, a.position.offset), (Some(true), 5));
    assert_eq!(bodies(&a.frames), [(3, 30), (4, 40), (5, 50)]);
    let a = r.read("g", since(5), MINUTE).await;
    assert_eq!(
        (a.recovered, a.frames.len()),
        (Some(true), 0),
        "missed none"
    );
    // 2 was trimmed: from 1 on cannot be recovered.
    let a = r.read("g", since(1), MINUTE).await;
    assert_eq!((a.recovered, a.frames.len()), (Some(false), 0));
    // Ahead of the stream, another epoch, more than the caller takes: not recovered.
    assert_eq!(r.read("g", since(6), MINUTE).await.recovered, Some(false));
    let other = Ask::Since(
        Position {
            epoch: "other".into(),
            offset: 4,
        },
        100,
    );
    assert_eq!(r.read("g", other, MINUTE).await.recovered, Some(false));
    let few = Ask::Since(
        Position {
            epoch: epoch.clone(),
            offset: 2,
        },
        2,
    );
    assert_eq!(r.read("g", few, MINUTE).await.recovered, Some(false));
    // The newest two, oldest first.
    let a = r.read("g", Ask::Latest(2), MINUTE).await;
    assert_eq!(bodies(&a.frames), [(4, 40), (5, 50)]);
    assert_eq!(
        a.position,
        Position {
            epoch: epoch.clone(),
            offset: 5
        }
    );
    // Another group has its own stream.
    assert_eq!(r.publish("h", 1, 3, MINUTE).await, 1);
    // A byte budget: one frame here is 70 bytes. Two fit in 150: a recovery of three is
    // refused rather than cut, the newest two are what a reload gets.
    let newest = r.read("g", Ask::Latest(1), MINUTE).await;
    let frame: serde_json::Value = serde_json::from_str(&newest.frames[0]).unwrap();
    assert_eq!(
        frame["epoch"].as_str(),
        Some(&*newest.position.epoch),
        "{frame}"
    );
    let frame_len = newest.frames[0].len();
    assert_eq!(frame_len, 70);
    let a = r.read_within("g", since(2), MINUTE, 150).await;
    assert_eq!((a.recovered, a.frames.len()), (Some(false), 0));
    let a = r.read_within("g", since(3), MINUTE, 150).await;
    assert_eq!(bodies(&a.frames), [(4, 40), (5, 50)], "two fit");
    let a = r.read_within("g", Ask::Latest(3), MINUTE, 150).await;
    assert_eq!(bodies(&a.frames), [(4, 40), (5, 50)]);
}

#[tokio::test]
async fn old_messages_are_not_replayed_and_a_lost_epoch_starts_again() {
    let mut r = Redis::start().await;
    let ttl = Duration::from_millis(300);
    r.publish("g", 1, 10, ttl).await;
    let epoch = r.read("g", Ask::Position, ttl).await.position.epoch;
    tokio::time::sleep(Duration::from_millis(400)).await; // Redis's clock must move on
    r.publish("g", 2, 10, ttl).await;
    let since0 = Ask::Since(
        Position {
            epoch: epoch.clone(),
            offset: 0,
        },
        100,
    );
    let a = r.read("g", since0, ttl).await;
    assert_eq!(a.recovered, Some(false), "message 1 is older than the ttl");
    let since1 = Ask::Since(
        Position {
            epoch: epoch.clone(),
            offset: 1,
        },
        100,
    );
    assert_eq!(bodies(&r.read("g", since1, ttl).await.frames), [(2, 2)]);
    let latest = r.read("g", Ask::Latest(10), ttl).await;
    assert_eq!(bodies(&latest.frames), [(2, 2)], "the reload skips it too");

    // The meta record is lost (eviction, a restart without persistence): a new epoch,
    // offsets from 1 again, and the old position cannot be recovered.
    let _: () = redis::cmd("DEL")
        .arg("t:m:g:g")
        .query_async(&mut r.conn)
        .await
        .unwrap();
    assert_eq!(r.publish("g", 3, 10, MINUTE).await, 1);
    let a = r
        .read(
            "g",
            Ask::Since(
                Position {
                    epoch: epoch.clone(),
                    offset: 2,
                },
                100,
            ),
            MINUTE,
        )
        .await;
    assert_eq!(a.recovered, Some(false));
    assert_ne!(a.position.epoch, epoch);
    assert_eq!(
        bodies(&r.read("g", Ask::Latest(10), MINUTE).await.frames),
        [(1, 3)],
        "the old stream went with it"
    );
}

#[tokio::test]
async fn a_stream_entry_that_is_no_frame_fails_the_read_instead_of_reaching_a_client() {
    let mut r = Redis::start().await;
    r.publish("g", 1, 10, MINUTE).await;
    let _: String = redis::cmd("XADD")
        .arg("t:h:g:g")
        .arg("2-0")
        .arg("t")
        .arg(i64::MAX)
        .arg("f")
        .arg(&b"\xff not UTF-8"[..])
        .query_async(&mut r.conn)
        .await
        .unwrap();
    let read = Read {
        ticket: 1,
        route: Route::Group("g".into()),
        ask: Ask::Latest(10),
        ttl_ms: 60_000,
        max_bytes: 1 << 20,
    };
    let cmd = streams::read_cmd(&streams::sha(READ_SCRIPT), &r.keys, &read).unwrap();
    let value: redis::Value = cmd.query_async(&mut r.conn).await.unwrap();
    assert!(streams::answer(value).is_err());
    // Nor is an answer of another shape taken.
    assert!(streams::answer(redis::Value::Int(1)).is_err());
    assert!(streams::answer(redis::Value::Array(vec![])).is_err());
}

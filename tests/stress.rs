//! Hundreds of misbehaving clients at once while a well-behaved pair chats: the pair
//! loses nothing, nobody panics, and the user pool ends empty.

mod common;

use common::*;
use serde_json::json;
use tokio::io::AsyncWriteExt;

const CHAOS_CLIENTS: usize = 300;
const PAIR_MESSAGES: u64 = 200;

async fn chaos(addr: std::net::SocketAddr, i: usize) {
    let mut c = RawClient::handshake(addr, "/ws").await;
    let name = format!(r#"{{"type":"join","name":"chaos{i}"}}"#);
    match i % 8 {
        // Garbage text and unknown commands.
        0 => {
            for _ in 0..5 {
                c.write_frame(0x81, b"{not json").await;
                c.write_frame(0x81, br#"{"type":"launch"}"#).await;
            }
        }
        // An oversize frame.
        1 => c.write_frame(0x81, &vec![b'x'; 4096]).await,
        // Valid commands, then an abrupt disconnect in the middle of a frame.
        2 => {
            c.write_frame(0x81, name.as_bytes()).await;
            c.write_frame(
                0x81,
                br#"{"type":"subscribe","group":"chaos","presence":true}"#,
            )
            .await;
            c.write_frame(0x81, br#"{"type":"publish","group":"chaos","body":"boo"}"#)
                .await;
            let _ = c.stream.write_all(&[0x81, 0xfe, 0x00]).await;
        }
        // Invalid UTF-8.
        3 => c.write_frame(0x81, &[0xff, 0xfe]).await,
        // A flood of pings past the rate limit.
        4 => {
            for _ in 0..300 {
                c.write_frame(0x81, br#"{"type":"ping"}"#).await;
            }
        }
        // Binary garbage and an orphan continuation.
        5 => {
            c.write_frame(0x82, &[0, 159, 146, 150]).await;
            c.write_frame(0x80, b"orphan").await;
        }
        // Joins, broadcasts to everyone (the pair included), then leaves cleanly.
        6 => {
            c.write_frame(0x81, name.as_bytes()).await;
            c.write_frame(0x81, br#"{"type":"broadcast","body":"noise"}"#)
                .await;
            c.write_frame(0x88, &1000u16.to_be_bytes()).await;
        }
        // Joins and vanishes without a close.
        _ => c.write_frame(0x81, name.as_bytes()).await,
    }
    // Drain whatever the hub says until it closes or we give up; then drop the socket.
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), c.read_until_close()).await;
}

#[actix_web::test]
async fn chaos_around_a_chatting_pair() {
    let hub = TestHub::start(Config {
        max_message_bytes: 1024,
        // The pair chats faster than the default 50/s; the flooders still pass the burst.
        rate_limit: 2000,
        ..config()
    });
    let mut alice = hub.joined("alice").await;
    let mut bob = hub.joined("bob").await;

    let chaos_tasks: Vec<_> = (0..CHAOS_CLIENTS)
        .map(|i| actix_web::rt::spawn(chaos(hub.addr, i)))
        .collect();

    // The pair: alice sends numbered messages; bob answers each.
    let mut from_alice = Vec::new();
    let mut from_bob = Vec::new();
    for n in 0..PAIR_MESSAGES {
        alice
            .send_json(json!({"type":"direct","to":"bob","body":{"n":n}}))
            .await;
        let m = bob.expect(|v| v["kind"] == "direct").await;
        from_alice.push(m["body"]["n"].as_u64().unwrap());
        bob.send_json(json!({"type":"direct","to":"alice","body":{"n":n}}))
            .await;
        let m = alice.expect(|v| v["kind"] == "direct").await;
        from_bob.push(m["body"]["n"].as_u64().unwrap());
    }
    let expected: Vec<u64> = (0..PAIR_MESSAGES).collect();
    assert_eq!(from_alice, expected);
    assert_eq!(from_bob, expected);

    for t in chaos_tasks {
        t.await.unwrap();
    }
    alice.close().await;
    bob.close().await;
    let stats = hub
        .wait_stats(|s| s.sessions == 0 && s.users == 0 && s.groups == 0)
        .await;
    assert_eq!(stats.queued_bytes, 0);
    hub.stop().await;
}

#[actix_web::test]
async fn acks_count_exactly_the_sessions_that_received() {
    const RECEIVERS: usize = 40;
    const PUBLISHERS: usize = 4;
    const EACH: usize = 25;
    let hub = TestHub::start(config());
    let mut receivers = Vec::new();
    for i in 0..RECEIVERS {
        // Every fourth receiver is a second session of the same user.
        let name = if i % 4 == 3 {
            format!("r{}", i - 1)
        } else {
            format!("r{i}")
        };
        let mut c = hub.joined(&name).await;
        c.request(json!({"type":"subscribe","group":"count"})).await;
        receivers.push(c);
    }
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        publishers.push(hub.joined(&format!("p{p}")).await);
    }
    // Publishers publish concurrently; receivers count what they get.
    let publishing: Vec<_> = publishers
        .into_iter()
        .map(|mut p| {
            actix_web::rt::spawn(async move {
                let mut delivered = 0;
                for n in 0..EACH {
                    p.send_json(json!({"type":"publish","group":"count","body":n}))
                        .await;
                    delivered += p.expect(|v| v["type"] == "ack").await["delivered"]
                        .as_u64()
                        .unwrap();
                }
                (delivered, p)
            })
        })
        .collect();
    let receiving: Vec<_> = receivers
        .into_iter()
        .map(|mut r| {
            actix_web::rt::spawn(async move {
                for _ in 0..PUBLISHERS * EACH {
                    r.expect(|v| v["kind"] == "group").await;
                }
                r
            })
        })
        .collect();
    let mut acked = 0;
    for p in publishing {
        acked += p.await.unwrap().0;
    }
    for r in receiving {
        r.await.unwrap();
    }
    // Each receiver got every message (or `expect` would have timed out), so the acks
    // must add up to exactly receivers x messages.
    assert_eq!(acked, (RECEIVERS * PUBLISHERS * EACH) as u64);
    hub.stop().await;
}

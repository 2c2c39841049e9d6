//! History and recovery over real WebSockets: a client that comes back with its positions
//! gets exactly what it missed, in order, then what is live; one that cannot is told so.

mod common;

use common::*;
use serde_json::{json, Value};

/// `{"epoch","offset"}` of a `joined` or `subscribed` reply.
fn position(reply: &Value) -> Value {
    json!({"epoch": reply["epoch"], "offset": reply["offset"]})
}

/// Reads events until the reply of type `until`; returns them all, the reply last.
async fn until(c: &mut Client, until: &str) -> Vec<Value> {
    let mut got = Vec::new();
    loop {
        let e = c.recv_json().await;
        let done = e["type"] == until;
        got.push(e);
        if done {
            return got;
        }
    }
}

fn bodies(events: &[Value]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["type"] == "message")
        .map(|e| e["body"].clone())
        .collect()
}

#[actix_web::test]
async fn a_client_back_with_its_positions_gets_the_13_it_missed_in_order_then_live() {
    let hub = TestHub::start(config());
    let mut alice = hub.joined("alice").await;
    let mut bob = hub.client().await;
    let joined = bob.request(json!({"type":"join","name":"bob"})).await;
    let subscribed = bob
        .request(json!({"type":"subscribe","group":"room"}))
        .await;
    let (me, room) = (position(&joined), position(&subscribed));
    bob.close().await;
    hub.wait_stats(|s| s.users == 1).await;

    for i in 0..10 {
        let ack = alice
            .request(json!({"type":"publish","group":"room","body":i}))
            .await;
        assert_eq!(ack["delivered"], 0, "{ack}");
    }
    for i in 0..3 {
        let ack = alice
            .request(json!({"type":"direct","to":"bob","body":format!("d{i}")}))
            .await;
        assert_eq!(ack, json!({"type":"ack","delivered":0,"stored":true}));
    }

    let mut bob = hub.client().await;
    bob.send_json(json!({"type":"join","name":"bob","since":me}))
        .await;
    let first = until(&mut bob, "joined").await;
    assert_eq!(bodies(&first), [json!("d0"), json!("d1"), json!("d2")]);
    let offsets: Vec<_> = first
        .iter()
        .map(|e| e["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [1, 2, 3, 3]);
    assert_eq!(first[3]["recovered"], true);
    bob.send_json(json!({"type":"subscribe","group":"room","since":room}))
        .await;
    let second = until(&mut bob, "subscribed").await;
    assert_eq!(
        bodies(&second),
        (0..10).map(|i| json!(i)).collect::<Vec<_>>()
    );
    assert_eq!(second[10]["recovered"], true);
    assert_eq!(second[10]["offset"], 10);
    for (i, e) in second[..10].iter().enumerate() {
        assert_eq!(
            (e["offset"].as_u64(), &e["from"]),
            (Some(i as u64 + 1), &json!("alice"))
        );
    }
    alice
        .request(json!({"type":"publish","group":"room","body":"live"}))
        .await;
    let live = bob.recv_json().await;
    assert_eq!(
        (live["body"].as_str(), live["offset"].as_u64()),
        (Some("live"), Some(11))
    );
    hub.stop().await;
}

#[actix_web::test]
async fn the_handshake_recovers_in_the_first_round_trip() {
    let hub = TestHub::start(config());
    let mut alice = hub.joined("alice").await;
    let mut bob = Client::connect(&hub.url("/ws?name=bob&subscribe=room")).await;
    let (joined, subscribed) = (bob.recv_json().await, bob.recv_json().await);
    bob.close().await;
    hub.wait_stats(|s| s.users == 1).await;
    alice
        .request(json!({"type":"direct","to":"bob","body":"psst"}))
        .await;
    alice
        .request(json!({"type":"publish","group":"room","body":"hello room"}))
        .await;
    let path = format!(
        "/ws?name=bob&since={}:{}&subscribe=room&since.room={}:{}",
        joined["epoch"].as_str().unwrap(),
        joined["offset"],
        subscribed["epoch"].as_str().unwrap(),
        subscribed["offset"],
    );
    let mut bob = Client::connect(&hub.url(&path)).await;
    let first = until(&mut bob, "joined").await;
    assert_eq!(
        (bodies(&first), &first[1]["recovered"]),
        (vec![json!("psst")], &json!(true))
    );
    let second = until(&mut bob, "subscribed").await;
    assert_eq!(
        (bodies(&second), &second[1]["recovered"]),
        (vec![json!("hello room")], &json!(true))
    );
    // A malformed position in the handshake is refused before the upgrade.
    match tokio_tungstenite::connect_async(hub.url("/ws?name=bob&since=nonsense")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned();
            assert_eq!(response.status(), 400, "{body}");
            assert!(body.contains("EPOCH:OFFSET"), "{body}");
        }
        other => panic!("not refused: {:?}", other.map(|_| ())),
    }
    hub.stop().await;
}

#[actix_web::test]
async fn positions_that_cannot_be_recovered_from_are_answered_as_documented() {
    let hub = TestHub::start(Config {
        history_size: 3,
        ..config()
    });
    let mut alice = hub.joined("alice").await;
    let at = position(
        &alice
            .request(json!({"type":"subscribe","group":"room"}))
            .await,
    );
    for i in 0..5 {
        alice
            .request(json!({"type":"publish","group":"room","body":i}))
            .await;
        alice.expect(|e| e["type"] == "ack").await;
    }
    let epoch = at["epoch"].clone();
    let mut bob = hub.joined("bob").await;
    let cases = [
        (json!({"epoch":"another","offset":5}), "another epoch"),
        (
            json!({"epoch":epoch,"offset":1}),
            "older than the window (3 kept of 5)",
        ),
        (json!({"epoch":epoch,"offset":6}), "in the future"),
    ];
    for (since, why) in cases {
        let reply = bob
            .request(json!({"type":"subscribe","group":"room","since":since}))
            .await;
        assert_eq!(reply["type"], "subscribed", "{why}: {reply}");
        assert_eq!(
            (&reply["recovered"], &reply["epoch"], &reply["offset"]),
            (&json!(false), &epoch, &json!(5)),
            "{why}"
        );
    }
    // The newest the hub still holds, to reload with.
    let page = bob
        .request(json!({"type":"history","group":"room","limit":10,"id":1}))
        .await;
    let held: Vec<_> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].clone())
        .collect();
    assert_eq!(
        (held, &page["offset"]),
        (vec![json!(2), json!(3), json!(4)], &json!(5))
    );
    // A malformed `since` is a bad request; the session carries on.
    for bad in [
        json!("e:1"),
        json!({"epoch":"e"}),
        json!({"epoch":"e","offset":-1}),
        json!({"epoch":"","offset":0}),
    ] {
        let reply = bob
            .request(json!({"type":"subscribe","group":"room","since":bad,"id":2}))
            .await;
        assert_eq!(
            (&reply["type"], &reply["code"], &reply["id"]),
            (&json!("error"), &json!("bad_request"), &json!(2)),
            "{reply}"
        );
    }
    let pong = bob.request(json!({"type":"ping"})).await;
    assert_eq!(pong["type"], "pong");
    hub.stop().await;
}

#[actix_web::test]
async fn after_a_restart_positions_do_not_recover() {
    let first = TestHub::start(config());
    let mut alice = first.joined("alice").await;
    let at = position(
        &alice
            .request(json!({"type":"subscribe","group":"room"}))
            .await,
    );
    first.stop().await;
    let second = TestHub::start(config());
    let mut alice = second.joined("alice").await;
    let reply = alice
        .request(json!({"type":"subscribe","group":"room","since":at}))
        .await;
    assert_eq!(reply["recovered"], false);
    assert_ne!(reply["epoch"], at["epoch"], "a new process, a new epoch");
    second.stop().await;
}

/// Four publishers at full speed while a subscriber drops and comes back with its
/// position, 200 times: the offsets it sees, replay and live together, are 1..N in order,
/// no gap, no duplicate.
#[actix_web::test]
async fn recovery_racing_four_publishers_has_no_gap_and_no_duplicate() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    const PUBLISHERS: usize = 4;
    const RECONNECTS: usize = 200;
    let hub = TestHub::start(Config {
        history_size: 100_000,
        // Room to replay all of it at once: the subscriber may fall far behind.
        max_queued_bytes: 16 << 20,
        rate_limit: 100_000,
        rate_burst: 100_000,
        ..config()
    });
    let mut sub = hub.joined("sub").await;
    let mut at = position(
        &sub.request(json!({"type":"subscribe","group":"race"}))
            .await,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let mut c = hub.joined(&format!("pub{p}")).await;
        let stop = stop.clone();
        tasks.push(actix_web::rt::spawn(async move {
            // Publish until told to stop, each after the previous one's ack.
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                c.send_json(json!({"type":"publish","group":"race","body":[p, sent]}))
                    .await;
                c.expect(|e| e["type"] == "ack").await;
                sent += 1;
            }
            sent
        }));
    }
    let mut seen: Vec<u64> = Vec::new();
    for cycle in 0..RECONNECTS {
        // Read a few live ones, then drop the connection and come back with the position.
        for _ in 0..(cycle % 7) {
            let e = sub.expect(|e| e["type"] == "message").await;
            seen.push(e["offset"].as_u64().unwrap());
        }
        if let Some(&last) = seen.last() {
            at["offset"] = json!(last);
        }
        sub.close().await;
        sub = hub.joined("sub").await;
        sub.send_json(json!({"type":"subscribe","group":"race","since":at}))
            .await;
        loop {
            let e = sub.recv_json().await;
            match e["type"].as_str() {
                Some("message") => seen.push(e["offset"].as_u64().unwrap()),
                Some("subscribed") => {
                    assert_eq!(e["recovered"], true, "cycle {cycle}: {e}");
                    break;
                }
                _ => {}
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    // The rest, live.
    while seen.last() != Some(&total) {
        let e = sub.expect(|e| e["type"] == "message").await;
        seen.push(e["offset"].as_u64().unwrap());
    }
    assert!(total > 1000, "too little published to race with: {total}");
    assert_eq!(seen, (1..=total).collect::<Vec<_>>());
    hub.stop().await;
}

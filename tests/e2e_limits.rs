//! The holes found by attacking the hub from outside, each over a real socket: names
//! that look like someone else, what a group-limited token may see, failed joins, the
//! cost and size of listings, floods of control frames, replies owed at a flood's close,
//! the hub's bounded mailbox, and error replies that stay short.

mod common;

use common::*;
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const TEXT: u8 = 0x1;
const CONTINUATION: u8 = 0x0;
const PONG: u8 = 0xA;
const FIN: u8 = 0x80;

fn code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or("")
}

#[actix_web::test]
async fn names_that_look_like_someone_else_are_refused_everywhere() {
    let hub = TestHub::start(config());
    let mut c = hub.client().await;
    for bad in [
        "alice\u{200b}",
        "\u{200b}",
        "\u{202e}ecila",
        "\u{feff}alice",
        "ali\u{2028}ce",
        "a\u{00a0}b",
    ] {
        let v = c.request(json!({"type":"join","name":bad,"id":1})).await;
        assert_eq!(code(&v), "invalid_name", "typed join of {bad:?}: {v}");
        // The classic login too.
        c.send_text(&json!({ "name": bad }).to_string()).await;
        assert_eq!(
            code(&c.recv_json().await),
            "invalid_name",
            "classic {bad:?}"
        );
        // And the handshake: refused before the upgrade.
        let query: String = url_encode(bad);
        let head = raw_handshake_head(&hub, &format!("/ws?name={query}")).await;
        assert!(head.starts_with("HTTP/1.1 400"), "{bad:?}: {head}");
    }
    // NFC: the same name typed two ways is one user.
    let joined = c.request(json!({"type":"join","name":"Jose\u{301}"})).await;
    assert_eq!(joined["name"], "Jos\u{e9}");
    let mut other = hub.joined("bob").await;
    let ack = other
        .request(json!({"type":"direct","to":"Jos\u{e9}","body":1,"id":2}))
        .await;
    assert_eq!(ack["delivered"], 1, "{ack}");
    hub.stop().await;
}

fn url_encode(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// Sends a handshake for `path` and returns the response head.
async fn raw_handshake_head(hub: &TestHub, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    s.write_all(handshake_request(hub.addr, path).as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[actix_web::test]
async fn a_group_limited_token_sees_names_only_in_its_groups() {
    let hub = TestHub::start(with_auth());
    let mut outsider = hub.client().await;
    outsider
        .request(json!({"type":"join","name":"zoe","token":token("zoe", None)}))
        .await;
    outsider
        .request(json!({"type":"subscribe","group":"stock"}))
        .await;
    outsider
        .request(json!({"type":"subscribe","group":"hr"}))
        .await;
    let mut colleague = hub.client().await;
    colleague
        .request(json!({"type":"join","name":"bob","token":token("bob", Some(vec!["sales"]))}))
        .await;
    colleague
        .request(json!({"type":"subscribe","group":"sales"}))
        .await;
    let mut a = hub.client().await;
    a.request(json!({"type":"join","name":"a","token":token("a", Some(vec!["sales"]))}))
        .await;
    // No list of the whole hub.
    assert_eq!(code(&a.request(json!({"type":"users"})).await), "forbidden");
    // Its own group, in full.
    let sales = a.request(json!({"type":"users","group":"sales"})).await;
    assert_eq!(sales["users"], json!(["bob"]));
    // A group outside its claim: refused, as before.
    assert_eq!(
        code(&a.request(json!({"type":"users","group":"hr"})).await),
        "forbidden"
    );
    // A stock group is open to it, but shows a count, no names...
    let stock = a.request(json!({"type":"users","group":"stock"})).await;
    assert_eq!((&stock["users"], &stock["count"]), (&json!([]), &json!(1)));
    // ...and no presence.
    assert_eq!(
        code(
            &a.request(json!({"type":"subscribe","group":"stock","presence":true}))
                .await
        ),
        "forbidden"
    );
    // An unlimited token still sees everything.
    // (Its `stock` subscription brings quotes, so wait for the listing by its type.)
    let is_users = |v: &Value| v["type"] == "users";
    outsider.send_json(json!({"type":"users"})).await;
    let all = outsider.expect(is_users).await;
    assert_eq!(all["users"], json!(["a", "bob", "zoe"]));
    outsider
        .send_json(json!({"type":"users","group":"stock"}))
        .await;
    // A market data group lists no names to anyone (its policy), only the count.
    let stock = outsider.expect(is_users).await;
    assert_eq!((&stock["users"], &stock["count"]), (&json!([]), &json!(1)));
    hub.stop().await;
}

#[actix_web::test]
async fn three_bad_tokens_close_a_connection_even_with_a_success_between() {
    let hub = TestHub::start(with_auth());
    let mut c = hub.client().await;
    let bad = |id: u32| json!({"type":"join","name":"carol","token":"garbage","id":id});
    assert_eq!(code(&c.request(bad(1)).await), "unauthorized");
    assert_eq!(code(&c.request(bad(2)).await), "unauthorized");
    let ok = c
        .request(json!({"type":"join","name":"carol","token":token("carol", None),"id":3}))
        .await;
    assert_eq!(ok["type"], "joined");
    // The success does not forgive the two failures: the third closes.
    let last = c.request(bad(4)).await;
    assert_eq!((code(&last), &last["id"]), ("unauthorized", &json!(4)));
    assert_eq!(c.expect_close().await, Some(4500));
    // A name that breaks the rules is no guess at a token, and is not counted.
    let mut d = hub.client().await;
    for id in 0..5 {
        let v = d
            .request(json!({"type":"join","name":"\u{200b}","token":"x","id":id}))
            .await;
        assert_eq!(code(&v), "invalid_name");
    }
    assert_eq!(d.request(json!({"type":"ping"})).await["type"], "pong");
    hub.stop().await;
}

#[actix_web::test]
async fn listings_are_paged_and_cost_by_their_size() {
    let hub = TestHub::start(Config {
        rate_limit: 1,
        rate_burst: 20,
        ..config()
    });
    let mut clients = Vec::new();
    for i in 0..25 {
        clients.push(hub.joined(&format!("u{i:02}")).await);
    }
    let c = &mut clients[0];
    let first = c.request(json!({"type":"users","limit":10,"id":1})).await;
    assert_eq!(first["users"].as_array().unwrap().len(), 10);
    assert_eq!(
        (&first["count"], &first["next"]),
        (&json!(25), &json!("u09"))
    );
    let second = c
        .request(json!({"type":"users","limit":10,"after":"u09"}))
        .await;
    assert_eq!(second["users"][0], "u10");
    let last = c
        .request(json!({"type":"users","limit":10,"after":"u19"}))
        .await;
    assert_eq!(last["users"].as_array().unwrap().len(), 5);
    assert!(last.get("next").is_none(), "{last}");
    // A page of 1000 costs 11 tokens: with 17 left, the second is refused.
    let big = c.request(json!({"type":"users","limit":1000})).await;
    assert_eq!(big["type"], "users");
    let refused = c.request(json!({"type":"users","limit":1000})).await;
    assert_eq!(code(&refused), "rate_limited");
    // Quotes: at most one page, and pages back by `before`.
    let mut q = hub.client().await;
    let h = q
        .request(json!({"type":"history","symbol":"600519","limit":1000000}))
        .await;
    assert_eq!(h["type"], "history", "{h}");
    let quotes = h["quotes"].as_array().unwrap();
    assert!(!quotes.is_empty() && quotes.len() <= 1000);
    let first_ts = quotes[0]["ts"].as_u64().unwrap();
    let older = q
        .request(json!({"type":"history","symbol":"600519","limit":100,"before":first_ts}))
        .await;
    assert!(older["quotes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|q| q["ts"].as_u64().unwrap() < first_ts));
    hub.stop().await;
}

#[actix_web::test]
async fn a_flood_closes_only_after_every_owed_reply() {
    let hub = TestHub::start(Config {
        rate_limit: 1,
        rate_burst: 50,
        ..config()
    });
    let mut raw = RawClient::handshake(hub.addr, "/ws").await;
    // One write: 50 pings that pass, then 60 past the bucket (the 51st refusal closes).
    let mut frames = Vec::new();
    for i in 0..110 {
        frames.push(format!(r#"{{"type":"ping","id":{i}}}"#));
    }
    for f in &frames {
        raw.write_frame(FIN | TEXT, f.as_bytes()).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    let code = loop {
        let (op, payload) = raw.read_frame().await.expect("a close frame");
        match op {
            0x1 => {
                let v: Value = serde_json::from_slice(&payload).unwrap();
                match v["type"].as_str() {
                    Some("pong") => pongs += 1,
                    _ if v["code"] == "rate_limited" => limited += 1,
                    _ => panic!("{v}"),
                }
            }
            0x8 => break u16::from_be_bytes([payload[0], payload[1]]),
            0x9 => {}
            other => panic!("opcode {other}"),
        }
    };
    assert_eq!(code, 4002);
    // Every ping that was let through was answered before the close (a token or two may
    // refill while the frames are read).
    assert!((50..=52).contains(&pongs), "{pongs} pongs");
    assert!(limited >= 50, "{limited} refusals");
    hub.stop().await;
}

#[actix_web::test]
async fn pongs_and_empty_continuations_count_against_the_rate_limit() {
    let hub = TestHub::start(Config {
        rate_limit: 1,
        rate_burst: 10,
        ..config()
    });
    let mut raw = RawClient::handshake(hub.addr, "/ws").await;
    for _ in 0..40 {
        raw.write_frame(FIN | PONG, b"").await;
    }
    let (code, _) = raw.read_until_close().await;
    assert_eq!(code, Some(4002));

    let mut raw = RawClient::handshake(hub.addr, "/ws").await;
    raw.write_frame(TEXT, b"").await;
    for _ in 0..40 {
        raw.write_frame(CONTINUATION, b"").await;
    }
    let (code, _) = raw.read_until_close().await;
    assert_eq!(code, Some(4002));
    hub.stop().await;
}

#[actix_web::test]
async fn a_full_hub_mailbox_sheds_commands_with_an_error_and_keeps_everyone() {
    let hub = TestHub::start(Config {
        hub_mailbox: 16,
        rate_limit: 100_000,
        rate_burst: 100_000,
        ..config()
    });
    const CLIENTS: usize = 20;
    const PINGS: usize = 300;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(hub.client().await);
    }
    // Every client pipelines its pings at once, faster than one hub thread answers.
    for c in &mut clients {
        for i in 0..PINGS {
            c.ws.feed(WsMessage::Text(format!(r#"{{"type":"ping","id":{i}}}"#)))
                .await
                .unwrap();
        }
        c.ws.flush().await.unwrap();
    }
    let mut shed = 0;
    for c in &mut clients {
        let mut answered = vec![0u8; PINGS];
        for _ in 0..PINGS {
            let v = c.recv_json().await;
            let id = v["id"].as_u64().expect("every reply has its id") as usize;
            answered[id] += 1;
            match v["type"].as_str() {
                Some("pong") => {}
                _ if code(&v) == "overloaded" => shed += 1,
                _ => panic!("{v}"),
            }
        }
        assert!(answered.iter().all(|&n| n == 1), "each ping answered once");
        // The session is still served.
        assert_eq!(
            c.request(json!({"type":"ping","id":"after"})).await["id"],
            "after"
        );
    }
    // With room for 16 messages, the hub cannot have taken 6,000 pings at once.
    assert!(shed > 0 && shed < CLIENTS * PINGS, "{shed} shed");
    hub.stop().await;
}

#[actix_web::test]
async fn errors_stay_short_and_name_checks_come_first() {
    let hub = TestHub::start(config());
    let mut c = hub.joined("alice").await;
    let huge = "x".repeat(60_000);
    let v = c.request(json!({"type":"direct","to":huge,"body":1})).await;
    assert_eq!(code(&v), "invalid_name");
    assert!(v.to_string().len() < 400, "{v}");
    // A malformed stock group is an invalid group, not an unknown symbol, and says so in
    // the same words as any other invalid group.
    let bad_stock = c
        .request(json!({"type":"subscribe","group":"stock.6 0"}))
        .await;
    let bad_room = c
        .request(json!({"type":"publish","group":"a b","body":1}))
        .await;
    assert_eq!(code(&bad_stock), "invalid_group");
    assert_eq!(bad_stock["message"], bad_room["message"]);
    let unknown = c
        .request(json!({"type":"subscribe","group":"stock.999999"}))
        .await;
    assert_eq!(code(&unknown), "not_found");
    hub.stop().await;
}
